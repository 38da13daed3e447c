// The renderers, checked by the real tools that will read their output:
// caddy validate, shellcheck, the server's own config loader, a cron parser,
// TOML and YAML parsers, Apache's htpasswd.
import { spawn, spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { CronExpressionParser } from 'cron-parser';
import { Redis } from 'ioredis';
import { parse as parseToml } from 'smol-toml';
import { afterAll, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { loadConfigText } from '../../server/src/config/load.ts';
import { isCronSchedule, parseStackConfig, rawFromStackFile, type StackConfig, StackConfigError } from '../../infra/config.ts';
import { contextFiles, contextHash, IMAGE_CONTEXT } from '../../infra/image.ts';
import { freePort } from '../../infra/local/stack.ts';
import { loadBalancingLines, renderCaddyfile } from '../../infra/render/caddyfile.ts';
import { renderClientSnippets } from '../../infra/render/clients.ts';
import { renderInstallScript, renderPrepareScript } from '../../infra/render/host.ts';
import { deterministicSalt, renderHtpasswd } from '../../infra/render/htpasswd.ts';
import { renderStack } from '../../infra/render/index.ts';
import { renderRedisConf } from '../../infra/render/redis.ts';
import { runScriptRaw } from '../scripts/helpers.ts';
import { ROOT } from './pulumi-harness.ts';
import { caddyValidate, shellcheck, withTempDir } from './shell.ts';

const SECRETS = { originSecret: 'origin-secret-0123456789abcdef', adminToken: 'admin-token-0123456789abcdef', htpasswdSeed: 'seed' };
const IMAGE = 'registry-stack/server:0123456789abcdef';

function example(name: 'minimal' | 'full'): StackConfig {
  const { raw } = rawFromStackFile(parseYaml(readFileSync(path.join(ROOT, `infra/examples/${name}.yaml`), 'utf8')));
  return parseStackConfig(raw);
}

const configs = { minimal: example('minimal'), full: example('full') };

describe.each(Object.entries(configs))('rendered %s stack', (_name, cfg) => {
  const { files, privateEnv, mirrorEnv } = renderStack(cfg, SECRETS, { image: IMAGE });

  it('Caddyfile passes caddy validate, and adapts to the routes we mean', () => {
    const { ok, output, json } = caddyValidate(files.Caddyfile.content);
    expect(ok, output).toBe(true);
    const servers = Object.values(json.apps.http.servers) as any[];
    const hosts = servers.flatMap((s) => (s.routes ?? []).map((r: any) => r.match?.[0]?.host?.[0]));
    expect(hosts.sort()).toEqual(['127.0.0.1', cfg.derived.dcrHost, cfg.derived.mirHost].sort());
    // the healthcheck site listens on loopback only; the admin API is a unix socket
    expect(servers.find((s) => s.listen.some((l: string) => l.endsWith(':2020'))).listen).toEqual(['127.0.0.1:2020']);
    expect(json.admin.listen).toBe('unix//run/caddy/admin.sock');
    const text = JSON.stringify(json);
    // no request body limit anywhere (pushes of any size on dcr)
    expect(text).not.toContain('max_size');
    expect(text).toContain(`"dial":"registry:5000"`);
    expect(text).toContain(`"dial":"registry-cache:5000"`);
    expect(text).toContain(SECRETS.originSecret);
    expect(text).toContain('"status_code":403');
    expect(text).toContain('"status_code":405');
  });

  it('registry configs load with the server\'s loader, without secrets in them', () => {
    const priv = loadConfigText(files['registry/config.yml'].content, {}).config;
    const mir = loadConfigText(files['registry-cache/config.yml'].content, {}).config;
    expect(priv.proxy).toBeUndefined();
    expect(priv.http.addr).toBe(':5000');
    expect(priv.storage.filesystem?.rootdirectory).toBe('/var/lib/registry');
    expect(priv.admin?.addr).toBe('0.0.0.0:5001');
    expect(mir.proxy?.upstreams?.length).toBe(cfg.mirror.upstreams.length);
    expect(mir.proxy?.defaulthost).toBe('docker.io');
    for (const text of [files['registry/config.yml'].content, files['registry-cache/config.yml'].content]) {
      expect(text).not.toContain(SECRETS.adminToken);
      for (const pw of Object.values(cfg.users)) expect(text).not.toContain(pw);
    }
    // the secrets arrive as REGISTRY_* env, which the loader applies on top
    const withEnv = loadConfigText(files['registry/config.yml'].content, privateEnv).config;
    expect(withEnv.admin?.token).toBe(SECRETS.adminToken);
    expect(loadConfigText(files['registry-cache/config.yml'].content, mirrorEnv).config.admin?.token).toBe(SECRETS.adminToken);
  });

  it('shell scripts pass shellcheck', () => {
    for (const name of ['host/firewall.sh', 'host/registry-stack-ops']) {
      expect(shellcheck(files[name].content), name).toBe('');
    }
    const install = renderInstallScript(
      Object.values(files)
        .filter((f) => f.target.startsWith('/'))
        .map((f) => ({ path: f.target, content: f.content, mode: f.mode, onChange: 'echo changed', backup: true })),
    );
    expect(shellcheck(install)).toBe('');
    expect(shellcheck(renderPrepareScript({ dirs: ['/opt/registry-stack/bin'], obsolete: ['/opt/registry-stack/scripts'] }))).toBe('');
  });

  it('crontab lines parse with cron-parser and call each ops script', () => {
    const lines = files['host/registry-stack.cron'].content.split('\n').filter((l) => l && !l.startsWith('#') && !/^[A-Z]+=/.test(l));
    expect(lines).toHaveLength(4);
    for (const line of lines) {
      const fields = line.split(/\s+/);
      const schedule = fields[0].startsWith('@') ? fields[0] : fields.slice(0, 5).join(' ');
      expect(() => CronExpressionParser.parse(schedule), schedule).not.toThrow();
      const rest = fields.slice(fields[0].startsWith('@') ? 1 : 5);
      expect(rest[0]).toBe('root');
    }
    for (const job of ['monitor', 'gc', 'prune', 'renew-cert']) {
      expect(lines.some((l) => l.includes(`/opt/registry-stack/bin/registry-stack-ops node --enable-source-maps /opt/registry-stack/dist/scripts/${job}.js`))).toBe(true);
    }
  });

  it('sysctl, daemon.json, env file and client snippets parse', () => {
    for (const line of files['host/99-registry-stack.conf'].content.split('\n')) {
      if (!line || line.startsWith('#')) continue;
      const [key] = line.split(' = ');
      expect(line).toMatch(/^[a-z0-9_.-]+ = \S.*$/);
      // every key is a real kernel setting (a container's own network namespace hides the host-wide net.core ones)
      if (key.startsWith('net.core.') && !existsSync('/proc/sys/net/core/rmem_max')) continue;
      expect(existsSync(path.join('/proc/sys', key.replace(/\./g, '/'))), key).toBe(true);
    }
    const daemon = JSON.parse(files['host/daemon.json'].content);
    expect(daemon['log-opts']).toEqual({ 'max-size': cfg.docker.logMaxSize, 'max-file': String(cfg.docker.logMaxFile) });
    expect(daemon['live-restore']).toBe(true);
    const env = files['host/ops.env'].content.split('\n').filter((l) => l && !l.startsWith('#'));
    for (const line of env) expect(line).toMatch(/^[A-Z][A-Z_]+=\S+$/);
    expect(files['host/ops.env'].secret).toBe(true);

    for (const u of cfg.mirror.upstreams) {
      const toml = parseToml(files[`clients/containerd/certs.d/${u.host}/hosts.toml`].content) as any;
      expect(toml.server).toBe(u.url);
      expect(toml.host[`https://${cfg.derived.mirHost}`].capabilities).toEqual(['pull', 'resolve']);
    }
    const k3s = parseYaml(files['clients/registries.yaml'].content);
    expect(Object.keys(k3s.mirrors)).toEqual(cfg.mirror.upstreams.map((u) => u.host));
    for (const m of Object.values(k3s.mirrors) as any[]) expect(m.endpoint).toEqual([`https://${cfg.derived.mirHost}`]);
    expect(k3s.configs[cfg.derived.dcrHost].auth.password).toBe('<password>');
    expect(JSON.parse(files['clients/docker-daemon.json'].content)).toEqual({ 'registry-mirrors': [`https://${cfg.derived.mirHost}`] });
  });
});

describe('Caddyfile for the local twin', () => {
  it('uses tls internal, high ports, no admin, and validates', () => {
    const text = renderCaddyfile({
      dcrHost: 'dcr.localhost',
      mirHost: 'mir.localhost',
      privateUpstream: '127.0.0.1:40001',
      mirrorUpstream: '127.0.0.1:40002',
      originHeader: 'X-Origin-Secret',
      originSecret: 'abc123abc123abc123',
      behindCloudflare: false,
      admin: 'off',
      local: { httpPort: 48080, httpsPort: 48443 },
      accessLog: false,
    });
    expect(text).toContain('\thttp_port 48080\n\thttps_port 48443\n');
    expect(text.match(/\ttls internal/g)).toHaveLength(2);
    const { ok, output, json } = caddyValidate(text);
    expect(ok, output).toBe(true);
    expect(json.admin.disabled).toBe(true);
    expect(json.apps.http.https_port).toBe(48443);
  });

  it('refuses values that would break out of a Caddyfile token', () => {
    const base = {
      dcrHost: 'dcr.example.com',
      mirHost: 'mir.example.com',
      privateUpstream: 'registry:5000',
      mirrorUpstream: 'registry-cache:5000',
      originHeader: 'X-Origin-Secret',
      behindCloudflare: true,
      accessLog: true,
    };
    expect(() => renderCaddyfile({ ...base, originSecret: 'a" }\n:80 {' })).toThrow(/originSecret/);
  });
});

describe('htpasswd', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'rs-htpasswd-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const users = { alice: 'alice-password-1', bob: 'bob-password-22' };

  it('is accepted by Apache\'s htpasswd -v and never holds a password', () => {
    const text = renderHtpasswd(users, { seed: 'k', cost: 5 });
    const file = path.join(dir, 'htpasswd');
    writeFileSync(file, text);
    for (const [u, p] of Object.entries(users)) {
      const ok = spawnSync('htpasswd', ['-vb', file, u, p], { encoding: 'utf8' });
      expect(ok.status, ok.stderr).toBe(0);
      const bad = spawnSync('htpasswd', ['-vb', file, u, `${p}x`], { encoding: 'utf8' });
      expect(bad.status).not.toBe(0);
      expect(text).not.toContain(p);
    }
    expect(text).toMatch(/^alice:\$2y\$05\$/);
  });

  it('is the same on every render, changes only the changed user, and differs with the seed', () => {
    const a = renderHtpasswd(users, { seed: 'k', cost: 5 });
    expect(renderHtpasswd(users, { seed: 'k', cost: 5 })).toBe(a);
    const b = renderHtpasswd({ ...users, bob: 'bob-new-password' }, { seed: 'k', cost: 5 });
    expect(b.split('\n')[0]).toBe(a.split('\n')[0]);
    expect(b.split('\n')[1]).not.toBe(a.split('\n')[1]);
    expect(renderHtpasswd(users, { seed: 'other', cost: 5 })).not.toBe(a);
    expect(deterministicSalt('k', 'alice', 'x', 5)).toMatch(/^\$2b\$05\$[./A-Za-z0-9]{22}$/);
  });

  it('keeps a hash from an earlier file (e.g. made by htpasswd -B) while it still matches', () => {
    const file = path.join(dir, 'apache');
    const made = spawnSync('htpasswd', ['-cbB', '-C', '5', file, 'alice', users.alice], { encoding: 'utf8' });
    expect(made.status, made.stderr).toBe(0);
    const previous = readFileSync(file, 'utf8');
    const kept = renderHtpasswd(users, { seed: 'k', cost: 5, previous });
    expect(kept.split('\n')[0]).toBe(previous.trim());
    const replaced = renderHtpasswd({ ...users, alice: 'changed-password' }, { seed: 'k', cost: 5, previous });
    expect(replaced.split('\n')[0]).not.toBe(previous.trim());
  });
});

describe('stack config', () => {
  it('accepts every schedule cron-parser accepts among these, and refuses the rest', () => {
    for (const s of ['*/5 * * * *', '30 3 * * 0', '0 0 1 jan *', '0-30/10 2,14 * * mon-fri', '@daily', '@hourly']) {
      expect(isCronSchedule(s), s).toBe(true);
      expect(() => CronExpressionParser.parse(s), s).not.toThrow();
    }
    for (const s of ['61 * * * *', '* 24 * * *', '* * 0 * *', 'every day', '* * * *']) {
      expect(isCronSchedule(s), s).toBe(false);
    }
  });

  it('reads Pulumi stack files: namespaced keys, other namespaces ignored, encrypted values reported', () => {
    const { raw, encrypted } = rawFromStackFile({
      config: {
        'cloudflare:apiToken': { secure: 'v1:abc' },
        'registry-stack:domain': 'example.org',
        'registry-stack:users': { alice: { secure: 'v1:xyz' } },
      },
    });
    expect(raw).toEqual({ domain: 'example.org', users: {} });
    expect(encrypted).toEqual(['users.alice']);
  });

  it('has defaults for everything but domain, vps.host and users', () => {
    const cfg = configs.minimal;
    expect(cfg.derived).toEqual({
      dcrHost: 'dcr.example.com',
      mirHost: 'mir.example.com',
      zone: 'example.com',
      publicIp: '203.0.113.10',
      mirrorDefaultHost: 'docker.io',
      storage: { private: 'filesystem', mirror: 'filesystem' },
      redis: false,
    });
    expect(cfg.replicas).toEqual({ private: 1, mirror: 1 });
    expect(cfg.storage).toEqual({ backend: 'filesystem', forcePathStyle: true, chunkSize: 10 * 1024 * 1024, redirect: true });
    expect(cfg.cron).toEqual({ monitor: '*/5 * * * *', gc: '30 3 * * 0', prune: '0 4 * * *', renewCert: '15 5 * * *' });
    expect(() => parseStackConfig({ domain: 'example.com' })).toThrow(StackConfigError);
  });

  it('with requireAuth, the mirror gets the htpasswd and the clients a login placeholder', () => {
    const cfg = parseStackConfig({ domain: 'example.com', vps: { host: '203.0.113.10' }, users: { alice: 'alice-password-1' }, mirror: { requireAuth: true } });
    const { files } = renderStack(cfg, SECRETS, { image: IMAGE });
    expect(files.htpasswd.target).toBe('/opt/registry-stack/auth/htpasswd');
    const mir = loadConfigText(files['registry-cache/config.yml'].content, {}).config;
    expect(mir.auth).toMatchObject({ htpasswd: { path: '/etc/registry/auth/htpasswd' }, anonymouspull: false });
    const snippets = renderClientSnippets(cfg);
    expect((parseToml(snippets.containerdHosts['docker.io']) as any).host['https://mir.example.com'].header.Authorization).toContain('alice');
  });
});

describe('server image', () => {
  it('Dockerfile is multi-stage, runs as non-root, has a healthcheck and copies what the content tag hashes', () => {
    const df = readFileSync(path.join(ROOT, 'server/Dockerfile'), 'utf8');
    expect(df.match(/^FROM /gm)?.length).toBeGreaterThanOrEqual(2);
    expect(df).toMatch(/^USER node$/m);
    expect(df).toMatch(/^HEALTHCHECK /m);
    expect(df).toMatch(/^COPY package\.json package-lock\.json \.\/$/m);
    // the build stage compiles what the content tag hashes (server/, scripts/, tsconfig.json) to dist/
    for (const entry of ['tsconfig.json ./', 'server ./server', 'scripts ./scripts']) expect(df).toContain(`\nCOPY ${entry}\n`);
    expect(df).toMatch(/^COPY --from=build \/opt\/registry-stack\/dist \.\/dist$/m);
    expect(df).toMatch(/^CMD \["node", (?:"--[^"]+", )*"server\/bin\/registry\.mjs", "serve", "\/etc\/registry\/config\.yml"\]$/m);
    // the context is exactly what the content tag hashes: everything else is ignored
    const ignore = readFileSync(path.join(ROOT, '.dockerignore'), 'utf8').split('\n').filter((l) => l && !l.startsWith('#'));
    expect(ignore[0]).toBe('**');
    expect(ignore.filter((l) => l.startsWith('!') && !l.endsWith('/**')).map((l) => l.slice(1)).sort()).toEqual([...IMAGE_CONTEXT].sort());
  });

  it('content tag changes with the server code and not with files the image does not hold', () =>
    withTempDir((dir) => {
      for (const entry of ['package.json', 'tsconfig.json', 'server/src/config', 'server/bin']) {
        cpSync(path.join(ROOT, entry), path.join(dir, entry), { recursive: true });
      }
      mkdirSync(path.join(dir, 'test'));
      const before = contextHash(dir);
      writeFileSync(path.join(dir, 'test', 'x.test.ts'), 'x');
      writeFileSync(path.join(dir, 'README.md'), 'x');
      expect(contextHash(dir)).toBe(before);
      writeFileSync(path.join(dir, 'server/src/config/units.ts'), '// changed\n', { flag: 'a' });
      expect(contextHash(dir)).not.toBe(before);
      expect(contextFiles(dir).every((f) => IMAGE_CONTEXT.some((e) => f === e || f.startsWith(`${e}/`)))).toBe(true);
    }));
});

describe('npm run render', () => {
  const out = mkdtempSync(path.join(tmpdir(), 'rs-render-'));
  afterAll(() => rmSync(out, { recursive: true, force: true }));
  const cli = (args: string[]) =>
    spawnSync(process.execPath, ['--import', 'tsx', path.join(ROOT, 'infra/render-cli.ts'), ...args], { cwd: ROOT, encoding: 'utf8' });

  it('writes every file, secrets 0600, and says where each goes', () => {
    const r = cli([out, path.join(ROOT, 'infra/examples/full.yaml')]);
    expect(r.status, r.stderr).toBe(0);
    for (const f of ['Caddyfile', 'registry/config.yml', 'registry-cache/config.yml', 'htpasswd', 'host/firewall.sh', 'host/registry-stack.cron', 'clients/registries.yaml', 'INDEX.txt']) {
      expect(existsSync(path.join(out, f)), f).toBe(true);
    }
    expect(statSync(path.join(out, 'htpasswd')).mode & 0o777).toBe(0o600);
    expect(statSync(path.join(out, 'host/ops.env')).mode & 0o777).toBe(0o600);
    expect(readFileSync(path.join(out, 'INDEX.txt'), 'utf8')).toContain('/etc/cron.d/registry-stack');
    const first = readFileSync(path.join(out, 'htpasswd'), 'utf8');
    expect(cli([out, path.join(ROOT, 'infra/examples/full.yaml')]).status).toBe(0);
    expect(readFileSync(path.join(out, 'htpasswd'), 'utf8')).toBe(first);
  });

  it('exits 2 naming the key when the stack file is invalid', () => {
    const bad = path.join(out, 'bad.yaml');
    writeFileSync(bad, 'config:\n  registry-stack:domain: example.com\n  registry-stack:vps:\n    host: 203.0.113.1\n    port: 70000\n  registry-stack:users:\n    alice: long-enough-pw\n');
    const r = cli([path.join(out, 'bad-out'), bad]);
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('registry-stack:vps.port');
  });

  it('renders encrypted values as placeholders and says so', () => {
    const enc = path.join(out, 'enc.yaml');
    writeFileSync(enc, 'config:\n  registry-stack:domain: example.com\n  registry-stack:vps:\n    host: 203.0.113.1\n  registry-stack:users:\n    alice:\n      secure: v1:AAAA\n');
    const r = cli([path.join(out, 'enc-out'), enc]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toContain('registry-stack:users.alice is encrypted');
    expect(readFileSync(path.join(out, 'enc-out', 'htpasswd'), 'utf8')).toMatch(/^alice:\$2y\$/);
  });
});

describe('ops jobs contract', () => {
  const cfg = configs.full;
  const { files } = renderStack(cfg, SECRETS, { image: IMAGE });
  const env = Object.fromEntries(
    files['host/ops.env'].content
      .split('\n')
      .filter((l) => l && !l.startsWith('#'))
      .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
  );

  it.runIf(['monitor', 'gc', 'prune', 'renew-cert'].every((j) => existsSync(path.join(ROOT, 'scripts', `${j}.ts`))))(
    'every variable in ops.env is one the scripts read (per their --help)',
    async () => {
      // The jobs as the crontab runs them (dist/scripts/<job>.js).
      const runs: string[] = [];
      for (const job of ['monitor', 'gc', 'prune', 'renew-cert']) {
        const r = await runScriptRaw(job, ['--help']);
        expect(r.code, `${job} --help: ${r.stderr}`).toBe(0);
        runs.push(r.stdout);
      }
      const help = runs.join('\n');
      for (const name of Object.keys(env)) expect(help, name).toContain(name);
    },
  );

  it('points the jobs at the containers and Caddy\'s admin socket, which the wrapper mounts', () => {
    expect(env.GC_ADMIN_URLS).toBe('private=http://registry:5001,mirror=http://registry-cache:5001');
    expect(env.PRUNE_ADMIN_URLS).toBe('mirror=http://registry-cache:5001');
    expect(env.CADDY_ADMIN).toBe('unix//run/caddy/admin.sock');
    const wrapper = files['host/registry-stack-ops'].content;
    expect(wrapper).toContain('-v caddy_admin:/run/caddy');
    for (const p of env.MONITOR_PATHS.split(',')) expect(wrapper).toMatch(new RegExp(`-v \\w+:${p}:ro`));
    expect(wrapper).toContain('--network proxy_net');
    expect(wrapper).toContain(`${IMAGE} "$@"`);
  });
});

describe('scale-out rendering (infra/examples/scale-out.yaml: R2, 3 + 2 replicas, Redis)', () => {
  const { raw } = rawFromStackFile(parseYaml(readFileSync(path.join(ROOT, 'infra/examples/scale-out.yaml'), 'utf8')));
  const cfg = parseStackConfig(raw);
  const secrets = { ...SECRETS, redisPassword: 'redis-password-0123456789abcdef', r2AccessKeyId: 'r2-key-id', r2SecretAccessKey: 'r2-secret-key-0123' };
  const rendered = renderStack(cfg, secrets, { image: IMAGE });
  const { files } = rendered;

  it('derives R2 storage for both registries, the endpoint and Redis', () => {
    expect(cfg.derived).toMatchObject({
      storage: { private: 'r2', mirror: 'r2' },
      r2Endpoint: 'https://00112233445566778899aabbccddeeff.r2.cloudflarestorage.com',
      redis: true,
    });
    expect(files['registry/config.yml'].target).toBe('registry-1,registry-2,registry-3:/etc/registry/config.yml');
    expect(files['registry-cache/config.yml'].target).toBe('registry-cache-1,registry-cache-2:/etc/registry/config.yml');
    expect(files['redis/redis.conf']).toMatchObject({ target: 'redis:/usr/local/etc/redis/redis.conf', secret: true });
  });

  it('registry configs (S3 + redis) load with the server\'s loader, secrets only from the environment', () => {
    const privText = files['registry/config.yml'].content;
    const mirText = files['registry-cache/config.yml'].content;
    for (const text of [privText, mirText]) {
      for (const secret of [secrets.redisPassword, secrets.r2AccessKeyId, secrets.r2SecretAccessKey, secrets.adminToken]) expect(text).not.toContain(secret);
    }
    const bare = loadConfigText(privText, {}).config;
    expect(bare.storage.s3).toMatchObject({ bucket: 'registry-stack-blobs', region: 'auto', chunksize: 16 * 1024 * 1024, rootdirectory: '/private' });
    expect(bare.storage.s3?.accesskey).toBeUndefined();
    expect(bare.redis).toMatchObject({ addr: 'redis:6379', db: 0 });
    expect(bare.redis?.password).toBeUndefined();

    const priv = loadConfigText(privText, rendered.privateEnv);
    expect(priv.ignoredEnv).toEqual([]);
    expect(priv.config.storage.s3).toMatchObject({ accesskey: 'r2-key-id', secretkey: 'r2-secret-key-0123', forcepathstyle: true });
    expect(priv.config.redis?.password).toBe(secrets.redisPassword);
    expect(priv.config.storage.cache?.blobdescriptor).toBe('redis');
    expect(priv.config.storage.redirect?.disable).toBe(false);
    const mir = loadConfigText(mirText, rendered.mirrorEnv);
    expect(mir.ignoredEnv).toEqual([]);
    expect(mir.config.storage.s3).toMatchObject({ rootdirectory: '/mirror', secretkey: 'r2-secret-key-0123' });
    expect(mir.config.storage.redirect?.disable).toBe(true);
    expect(mir.config.redis).toMatchObject({ addr: 'redis:6379', db: 1, password: secrets.redisPassword });
    expect(rendered.redisEnv).toEqual({ REDISCLI_AUTH: secrets.redisPassword });
  });

  it('the load-balancing Caddyfile passes caddy validate and adapts to every replica with health checks', () => {
    const text = files.Caddyfile.content;
    const { ok, output, json } = caddyValidate(text);
    expect(ok, output).toBe(true);
    const adapted = JSON.stringify(json);
    for (const n of ['registry-1', 'registry-2', 'registry-3', 'registry-cache-1', 'registry-cache-2']) expect(adapted).toContain(`"dial":"${n}:5000"`);
    expect(adapted).not.toContain('"dial":"registry:5000"');
    expect(adapted.match(/"uri":"\/healthz"/g)).toHaveLength(2);
    expect(adapted.match(/"selection_policy":\{"policy":"least_conn"\}/g)).toHaveLength(2);
    expect(adapted).not.toContain('max_size');
    expect(adapted).toContain(SECRETS.originSecret);
  });

  it('host scripts pass shellcheck; the crontab is unchanged; ops settings name every replica', () => {
    expect(shellcheck(files['host/registry-stack-ops'].content)).toBe('');
    expect(files['host/registry-stack.cron'].content).toBe(renderStack(configs.minimal, SECRETS, { image: IMAGE }).files['host/registry-stack.cron'].content);
    const env = files['host/ops.env'].content;
    expect(env).toContain('GC_ADMIN_URLS=private=http://registry-1:5001,mirror=http://registry-cache-1:5001\n');
    expect(env).toContain('MONITOR_CONTAINERS=caddy,registry-1,registry-2,registry-3,registry-cache-1,registry-cache-2,redis\n');
  });

  it('redis.conf runs the real redis-server: password required, no snapshots, no AOF, noeviction under the limit', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'rs-redis-'));
    const port = await freePort();
    const password = 'redis-password-0123456789abcdef';
    const conf = renderRedisConf({ password, port, memoryLimit: 256 * 1024 ** 2, persistence: false, dir, bind: '127.0.0.1' });
    // the deployed file differs only in where it listens and keeps data
    const deployed = files['redis/redis.conf'].content;
    const strip = (t: string) => t.split('\n').filter((l) => !/^(bind|port|dir) /.test(l)).join('\n');
    expect(strip(conf)).toBe(strip(deployed));
    expect(deployed).toContain('bind * -::*\nport 6379\n');
    writeFileSync(path.join(dir, 'redis.conf'), conf);
    const proc = spawn('redis-server', [path.join(dir, 'redis.conf')], { stdio: ['ignore', 'pipe', 'pipe'] });
    let log = '';
    proc.stdout?.on('data', (d) => (log += d));
    proc.stderr?.on('data', (d) => (log += d));
    const clients: Redis[] = [];
    const client = (pw?: string) => {
      const c = new Redis({ host: '127.0.0.1', port, password: pw, lazyConnect: true, protocol: 2, maxRetriesPerRequest: 0, retryStrategy: () => null });
      c.on('error', () => {});
      clients.push(c);
      return c;
    };
    try {
      const deadline = Date.now() + 10_000;
      for (;;) {
        if (proc.exitCode !== null) throw new Error(`redis-server exited: ${log}`);
        const c = client(password);
        const up = await c.connect().then(() => c.ping(), () => undefined);
        c.disconnect();
        if (up === 'PONG') break;
        if (Date.now() > deadline) throw new Error(`redis-server did not come up: ${log}`);
        await new Promise((r) => setTimeout(r, 100));
      }
      // the container's healthcheck command, with the password from REDISCLI_AUTH as in the container's env
      const health = (auth: string | undefined) =>
        spawnSync('sh', ['-c', `redis-cli -p ${port} ping | grep -q PONG`], { env: { ...process.env, REDISCLI_AUTH: auth ?? '' }, encoding: 'utf8' }).status;
      expect(health(password)).toBe(0);
      expect(health('not-the-password-at-all')).not.toBe(0);
      const anon = spawnSync('redis-cli', ['-p', String(port), 'get', 'x'], { env: { ...process.env, REDISCLI_AUTH: '' }, encoding: 'utf8' });
      expect(anon.stdout + anon.stderr).toMatch(/NOAUTH/);
      const c = client(password);
      await c.connect();
      expect(await c.config('GET', 'save')).toEqual(['save', '']);
      expect(await c.config('GET', 'appendonly')).toEqual(['appendonly', 'no']);
      expect(await c.config('GET', 'maxmemory-policy')).toEqual(['maxmemory-policy', 'noeviction']);
      expect(Number(((await c.config('GET', 'maxmemory')) as string[])[1])).toBe(Math.floor(256 * 1024 ** 2 * 0.75));
      expect(await c.select(1)).toBe('OK');
    } finally {
      for (const c of clients) c.disconnect();
      proc.kill('SIGTERM');
      await new Promise((r) => (proc.exitCode !== null ? r(undefined) : proc.once('exit', r)));
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses bad load-balancing options and an empty upstream list', () => {
    const lb = { policy: 'least_conn', healthUri: '/healthz', healthInterval: '10s', healthTimeout: '5s', failDuration: '30s', tryDuration: '10s', tryInterval: '250ms' };
    expect(loadBalancingLines(lb, 1)).toEqual([]);
    expect(loadBalancingLines(lb, 2)).toContain('health_uri /healthz');
    expect(() => loadBalancingLines({ ...lb, failDuration: '30s }' }, 2)).toThrow(/failDuration/);
    expect(() => loadBalancingLines(undefined, 2)).toThrow(/loadBalancing/);
    const base = { dcrHost: 'dcr.example.com', mirHost: 'mir.example.com', originHeader: 'X-Origin-Secret', originSecret: 'abcabcabcabcabcabc', behindCloudflare: true, accessLog: false };
    expect(() => renderCaddyfile({ ...base, privateUpstream: [], mirrorUpstream: 'registry-cache:5000' })).toThrow(/at least one upstream/);
  });

  it('npm run render writes redis.conf (0600) and lists every container\'s environment', () => {
    const out = mkdtempSync(path.join(tmpdir(), 'rs-render-scale-'));
    try {
      const r = spawnSync(process.execPath, ['--import', 'tsx', path.join(ROOT, 'infra/render-cli.ts'), out, path.join(ROOT, 'infra/examples/scale-out.yaml')], {
        cwd: ROOT,
        encoding: 'utf8',
      });
      expect(r.status, r.stderr).toBe(0);
      expect(r.stderr).toContain('the R2 credentials come from an API token created at deploy');
      expect(statSync(path.join(out, 'redis/redis.conf')).mode & 0o777).toBe(0o600);
      expect(readFileSync(path.join(out, 'redis/redis.conf'), 'utf8')).toContain('requirepass REDIS-PASSWORD-GENERATED-AT-DEPLOY');
      const index = readFileSync(path.join(out, 'INDEX.txt'), 'utf8');
      expect(index).toContain('registry-1,registry-2,registry-3:\n  REGISTRY_ADMIN_TOKEN=(secret)\n  REGISTRY_STORAGE_S3_ACCESSKEY=(secret)\n  REGISTRY_STORAGE_S3_SECRETKEY=(secret)\n  REGISTRY_REDIS_PASSWORD=(secret)');
      expect(index).toContain('redis:\n  REDISCLI_AUTH=(secret)');
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  });
});
