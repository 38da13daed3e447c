// The Pulumi program under Pulumi's mocks: the resource graph for a minimal
// and a full stack config, secrets, idempotence, and config errors.
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import * as pulumi from '@pulumi/pulumi';
import bcrypt from 'bcryptjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { loadConfigText } from '../../server/src/config/load.ts';
import { rawFromStackFile } from '../../infra/config.ts';
import { serverImageName } from '../../infra/image.ts';
import { GENERATED, HOST_KEY, isSecretValue, MIR_ORIGIN, type ProgramRun, robotSecret, ROOT, runProgram } from './pulumi-harness.ts';
import { shellcheck } from './shell.ts';

const MINIMAL = { domain: 'example.com', vps: { host: '203.0.113.10', hostKey: HOST_KEY }, users: { alice: 'alice-password-1' } };
const FAKE_KEY = '-----BEGIN OPENSSH PRIVATE KEY-----\nnot-a-real-key\n-----END OPENSSH PRIVATE KEY-----\n';

function fullConfig(): Record<string, unknown> {
  const { raw } = rawFromStackFile(parseYaml(readFileSync(path.join(ROOT, 'infra/examples/full.yaml'), 'utf8')));
  return { ...raw, sshPrivateKey: FAKE_KEY };
}

const SECRET_KEYS = ['users', 'sshPrivateKey', 'upstreamCredentials', 'alertWebhook'];

/** The content an install script (sent on a remote command's stdin) writes to `file`. */
function installed(script: string, file: string): string {
  const start = script.indexOf(`# ${file}\n`);
  expect(start, `script installs ${file}`).toBeGreaterThanOrEqual(0);
  const body = script.slice(script.indexOf("<<'REGISTRY_STACK_EOF'\n", start) + "<<'REGISTRY_STACK_EOF'\n".length);
  return body.slice(0, body.indexOf('REGISTRY_STACK_EOF\n'));
}

const upload = (r: ProgramRun, container: string, file: string) => {
  const c = r.byName(container);
  const i = (c.inputs.uploads as Array<{ file: string; content: string }>).findIndex((u) => u.file === file);
  expect(i, `${container} uploads ${file}`).toBeGreaterThanOrEqual(0);
  return { content: c.inputs.uploads[i].content as string, secret: isSecretValue(c.raw.uploads) || isSecretValue(c.raw.uploads[i]?.content) };
};

describe('minimal stack config', () => {
  let run: ProgramRun;
  beforeAll(async () => {
    run = await runProgram(MINIMAL, { secretKeys: ['users'] });
    if (run.error) throw run.error;
  });

  it('looks the zone up by name and makes dcr DNS-only and mir proxied', () => {
    expect(run.invokes).toEqual([expect.objectContaining({ token: 'cloudflare:index/getZone:getZone', inputs: { filter: { name: 'example.com' } } })]);
    const records = run.ofType('cloudflare:index/dnsRecord:DnsRecord').map((r) => r.inputs);
    expect(records).toHaveLength(2);
    expect(records).toContainEqual(
      expect.objectContaining({ name: 'dcr.example.com', type: 'A', content: '203.0.113.10', proxied: false, ttl: 300, zoneId: 'f'.repeat(32) }),
    );
    expect(records).toContainEqual(expect.objectContaining({ name: 'mir.example.com', type: 'A', content: '203.0.113.10', proxied: true, ttl: 1 }));
    for (const r of records) expect(r.comment.length, r.comment).toBeLessThanOrEqual(100); // the free plan's limit
  });

  it('caches blobs and manifests by digest long, manifests by tag not at the edge, on mir only', () => {
    const cache = run.byName('edge-cache').inputs;
    expect(cache).toMatchObject({ kind: 'zone', phase: 'http_request_cache_settings' });
    const [blobs, byDigest, byTag] = cache.rules;
    expect(blobs.expression).toBe(
      '(http.host eq "mir.example.com" and starts_with(http.request.uri.path, "/v2/") and http.request.uri.path contains "/blobs/sha256:")',
    );
    expect(blobs.actionParameters).toMatchObject({ cache: true, edgeTtl: { mode: 'override_origin', default: 31_536_000 } });
    expect(blobs.actionParameters.edgeTtl.statusCodeTtls).toEqual([{ statusCodeRange: { from: 400, to: 599 }, value: -1 }]);
    expect(byDigest.expression).toContain('"/manifests/sha256:"');
    expect(byDigest.actionParameters.edgeTtl.default).toBe(31_536_000);
    expect(byTag.expression).toContain('not http.request.uri.path contains "/manifests/sha256:"');
    expect(byTag.actionParameters).toEqual({ cache: false });
    for (const rule of cache.rules) expect(rule.expression).toContain('http.host eq "mir.example.com"');
  });

  it('lets only reads of /v2/ (and the health endpoints) through the WAF and skips challenges for them', () => {
    const waf = run.byName('edge-waf').inputs;
    expect(waf.phase).toBe('http_request_firewall_custom');
    const skip = waf.rules.find((r: any) => r.action === 'skip');
    const block = waf.rules.find((r: any) => r.action === 'block');
    expect(skip.expression).toContain('http.request.method in {"GET" "HEAD" "OPTIONS"}');
    expect(skip.actionParameters.products).toEqual(expect.arrayContaining(['bic', 'securityLevel', 'uaBlock']));
    expect(skip.actionParameters.phases).toEqual(['http_request_sbfm']);
    expect(block.expression).toBe(
      '(http.host eq "mir.example.com" and not (http.request.method in {"GET" "HEAD" "OPTIONS"} and (http.request.uri.path in {"/v2" "/healthz" "/readyz"} or starts_with(http.request.uri.path, "/v2/"))))',
    );
  });

  it('adds the origin header with a transform rule, as a secret, and Caddy requires the same value', () => {
    const t = run.byName('edge-origin-header');
    expect(t.inputs.phase).toBe('http_request_late_transform');
    expect(isSecretValue(t.raw.rules)).toBe(true);
    const [rule] = t.inputs.rules;
    expect(rule).toMatchObject({ action: 'rewrite', expression: '(http.host eq "mir.example.com")' });
    expect(rule.actionParameters.headers).toEqual({ 'X-Origin-Secret': { operation: 'set', value: GENERATED.origin } });
    const caddyfile = upload(run, 'vps-caddy', '/etc/caddy/Caddyfile');
    expect(caddyfile.secret).toBe(true);
    expect(caddyfile.content).toContain(`@direct not header X-Origin-Secret "${GENERATED.origin}"`);
    expect(run.byName('edge-config').inputs.rules[0]).toMatchObject({ action: 'set_config', actionParameters: { ssl: 'strict' } });
    expect(run.ofType('cloudflare:index/r2Bucket:R2Bucket')).toHaveLength(0);
  });

  it('serves mir with its Origin CA certificate: the Caddyfile names the files Caddy gets, both uploaded as secrets', () => {
    const caddyfile = upload(run, 'vps-caddy', '/etc/caddy/Caddyfile').content;
    const mirSite = caddyfile.slice(caddyfile.indexOf('mir.example.com {'));
    const dcrSite = caddyfile.slice(caddyfile.indexOf('dcr.example.com {'), caddyfile.indexOf('mir.example.com {'));
    expect(mirSite).toContain('\ttls /etc/caddy/origin/mir.crt /etc/caddy/origin/mir.key\n');
    expect(dcrSite).not.toMatch(/\ttls /); // dcr keeps its ACME certificate
    const caddy = run.byName('vps-caddy');
    expect(caddy.inputs.uploads.map((u: any) => [u.file, u.permissions])).toEqual([
      ['/etc/caddy/Caddyfile', '0644'],
      ['/etc/caddy/origin/mir.crt', '0644'],
      ['/etc/caddy/origin/mir.key', '0600'],
    ]);
    expect(upload(run, 'vps-caddy', '/etc/caddy/origin/mir.crt')).toEqual({ content: MIR_ORIGIN.cert, secret: true });
    expect(upload(run, 'vps-caddy', '/etc/caddy/origin/mir.key')).toEqual({ content: MIR_ORIGIN.key, secret: true });
    const plainInputs = JSON.stringify(caddy.raw, (_k, v) => (isSecretValue(v) ? '(secret)' : v));
    expect(plainInputs).not.toContain('mir-origin-key');
  });

  it('builds the server image from server/Dockerfile with a content tag, and runs three containers on proxy_net', () => {
    const image = run.byName('vps-server-image').inputs;
    expect(image.imageName).toMatch(/^localhost\/registry-stack\/server:[0-9a-f]{16}$/);
    expect(image).toMatchObject({
      skipPush: true,
      build: { context: ROOT, dockerfile: path.join(ROOT, 'server/Dockerfile') },
    });
    expect(run.byName('vps-network').inputs).toMatchObject({ name: 'proxy_net', driver: 'bridge', ipamConfigs: [{ subnet: '172.30.0.0/24' }] });
    expect(run.ofType('docker:index/volume:Volume').map((v) => v.inputs.name).sort()).toEqual([
      'caddy_admin',
      'caddy_config',
      'caddy_data',
      'registry_cache_data',
      'registry_data',
    ]);
    const containers = run.ofType('docker:index/container:Container');
    expect(containers.map((c) => c.inputs.name).sort()).toEqual(['caddy', 'registry', 'registry-cache']);
    const provider = run.byName('vps-docker');
    expect(provider.inputs.host).toBe('ssh://root@203.0.113.10:22');
    for (const c of containers) {
      expect(c.provider).toContain('vps-docker');
      expect(c.inputs).toMatchObject({
        restart: 'unless-stopped',
        logDriver: 'json-file',
        logOpts: { 'max-size': '10m', 'max-file': '3' },
        networksAdvanced: [{ name: 'proxy_net', aliases: [c.inputs.name] }],
      });
      expect(c.inputs.healthcheck.tests[0]).toBe('CMD');
      expect(c.inputs.memory).toBeGreaterThan(0);
    }
  });

  it('publishes only Caddy, on 80 and 443, with its certificates on a volume', () => {
    const caddy = run.byName('vps-caddy').inputs;
    expect(caddy.image).toBe(`sha256:${'c'.repeat(64)}`);
    expect(run.byName('vps-caddy-image').inputs.name).toBe('caddy:2.10.2-alpine');
    expect(caddy.ports).toEqual([
      { internal: 80, external: 80 },
      { internal: 443, external: 443 },
      { internal: 443, external: 443, protocol: 'udp' },
    ]);
    expect(caddy.volumes).toContainEqual({ volumeName: 'caddy_data', containerPath: '/data' });
    expect(caddy.volumes).toContainEqual({ volumeName: 'caddy_admin', containerPath: '/run/caddy' });
    expect(caddy.healthcheck.tests).toEqual(['CMD', 'wget', '-q', '-O', '/dev/null', 'http://127.0.0.1:2020/']);
    expect(caddy.memory).toBe(256);
    expect(run.byName('vps-registry').inputs.ports).toBeUndefined();
    expect(run.byName('vps-registry-cache').inputs.ports).toBeUndefined();
  });

  it('gives each registry its rendered config (valid for our loader), its volume and secret env', () => {
    const priv = run.byName('vps-registry');
    expect(priv.inputs.image).toBe(run.byName('vps-server-image').inputs.imageName);
    expect(run.byName('vps-registry-cache').inputs.image).toBe(priv.inputs.image);
    for (const name of ['vps-registry', 'vps-registry-cache']) expect(run.byName(name).inputs.user, name).toBe('1000:1000');
    expect(priv.inputs.volumes).toEqual([
      { volumeName: 'registry_data', containerPath: '/var/lib/registry' },
      { hostPath: '/opt/registry-stack/auth', containerPath: '/etc/registry/auth', readOnly: true },
    ]);
    expect(priv.inputs.uploads).toHaveLength(1);
    expect(isSecretValue(priv.raw.envs)).toBe(true);
    expect(priv.inputs.envs).toEqual([`REGISTRY_ADMIN_TOKEN=${GENERATED.admin}`]);
    expect(priv.inputs.healthcheck.tests.join(' ')).toContain('http://127.0.0.1:5000/healthz');
    expect(upload(run, 'vps-registry', '/etc/registry/config.yml').secret).toBe(false);
    const privConfig = loadConfigText(upload(run, 'vps-registry', '/etc/registry/config.yml').content, {}).config;
    expect(privConfig.proxy).toBeUndefined();
    expect(privConfig.auth?.htpasswd?.path).toBe('/etc/registry/auth/htpasswd');
    expect(privConfig.http.host).toBe('https://dcr.example.com');

    // the htpasswd goes to the host (secret), readable by the containers' user, and is re-read on change
    const auth = run.byName('host-auth');
    expect(isSecretValue(auth.raw.stdin)).toBe(true);
    expect(auth.inputs.stdin).toContain("chgrp 1000 '/opt/registry-stack/auth/htpasswd'");
    const htpasswd = { content: installed(auth.inputs.stdin, '/opt/registry-stack/auth/htpasswd') };
    const [user, hash] = htpasswd.content.trim().split(':');
    expect(user).toBe('alice');
    expect(hash).toMatch(/^\$2y\$10\$/);
    expect(bcrypt.compareSync('alice-password-1', hash.replace('$2y$', '$2b$'))).toBe(true);
    expect(htpasswd.content).not.toContain('alice-password-1');

    const cache = run.byName('vps-registry-cache');
    expect(cache.inputs.volumes).toEqual([{ volumeName: 'registry_cache_data', containerPath: '/var/lib/registry' }]);
    const mirConfig = loadConfigText(upload(run, 'vps-registry-cache', '/etc/registry/config.yml').content, {}).config;
    expect(mirConfig.proxy?.upstreams).toEqual([{ host: 'docker.io', url: 'https://registry-1.docker.io' }]);
    expect(mirConfig.proxy?.ttl).toBe(168 * 3_600_000);
    expect(mirConfig.auth).toBeUndefined();
    expect((cache.inputs.uploads as unknown[]).length).toBe(1);
  });

  it('sets the host up with remote commands whose scripts pass shellcheck', () => {
    const cmds = run.ofType('command:remote:Command');
    expect(cmds.map((c) => c.name).sort()).toEqual(['host-auth', 'host-docker-daemon', 'host-firewall', 'host-image-cleanup', 'host-ops', 'host-prepare', 'host-sysctl']);
    for (const c of cmds) {
      expect(c.inputs.connection).toMatchObject({ host: '203.0.113.10', port: 22, user: 'root', hostKey: HOST_KEY.split(' ').slice(1).join(' ') });
      expect(c.inputs.create).toBe('sh -s');
      expect(shellcheck(c.inputs.stdin), c.name).toBe('');
    }
    // files without secrets stay plain, so a preview shows their diffs
    for (const step of ['host-prepare', 'host-sysctl', 'host-docker-daemon', 'host-firewall']) {
      expect(isSecretValue(run.byName(step).raw.stdin), step).toBe(false);
    }
    expect(run.byName('host-firewall').inputs.stdin).toContain('ufw allow 22/tcp');
    expect(run.byName('host-sysctl').inputs.stdin).toContain('net.ipv4.tcp_congestion_control = bbr');
    expect(run.byName('host-docker-daemon').inputs.stdin).toContain('"max-size": "10m"');
    const ops = run.byName('host-ops');
    expect(isSecretValue(ops.raw.stdin)).toBe(true);
    for (const job of ['monitor', 'gc', 'prune', 'renew-cert']) {
      expect(ops.inputs.stdin).toContain(`node --enable-source-maps /opt/registry-stack/dist/scripts/${job}.js`);
    }
    expect(ops.inputs.stdin).toContain(`REGISTRY_ADMIN_TOKEN=${GENERATED.admin}`);
    expect(run.ofType('command:remote:CopyToRemote')).toHaveLength(0);
  });

  it('outputs the URLs and client snippets, and no secret', () => {
    expect(run.outputs).toMatchObject({ dcrUrl: 'https://dcr.example.com', mirUrl: 'https://mir.example.com', zoneId: 'f'.repeat(32) });
    const snippets = run.outputs.clientSnippets as Record<string, any>;
    expect(JSON.parse(snippets.dockerDaemonJson)).toEqual({ 'registry-mirrors': ['https://mir.example.com'] });
    expect(Object.keys(snippets.containerdHosts)).toEqual(['docker.io']);
    expect(snippets.k3sRegistriesYaml).toContain('https://mir.example.com');
    const text = JSON.stringify(run.outputs);
    for (const secret of ['alice-password-1', GENERATED.origin, GENERATED.admin, GENERATED.seed]) expect(text).not.toContain(secret);
  });
});

describe('full stack config (infra/examples/full.yaml)', () => {
  let run: ProgramRun;
  let keyDir: string;
  const savedTmp = process.env.TMPDIR;
  beforeAll(async () => {
    keyDir = mkdtempSync(path.join(tmpdir(), 'rs-infra-key-'));
    process.env.TMPDIR = keyDir;
    run = await runProgram(fullConfig(), { secretKeys: SECRET_KEYS });
    if (run.error) throw run.error;
  });
  afterAll(() => {
    if (savedTmp === undefined) delete process.env.TMPDIR;
    else process.env.TMPDIR = savedTmp;
    rmSync(keyDir, { recursive: true, force: true });
  });

  it('uses the zone id as given and adds AAAA records', () => {
    expect(run.invokes).toEqual([]);
    const records = run.ofType('cloudflare:index/dnsRecord:DnsRecord').map((r) => r.inputs);
    expect(records.map((r) => `${r.type} ${r.name} ${r.proxied} ${r.ttl}`).sort()).toEqual([
      'A dcr.example.com false 600',
      'A mir.example.com true 1',
      'AAAA dcr.example.com false 600',
      'AAAA mir.example.com true 1',
    ]);
    for (const r of records) expect(r.zoneId).toBe('0123456789abcdef0123456789abcdef');
  });

  it('creates the R2 bucket and applies the configured TTLs and header name', () => {
    expect(run.byName('edge-r2').inputs).toEqual({ accountId: '00112233445566778899aabbccddeeff', name: 'registry-stack-blobs', location: 'weur' });
    const [blobs, , byTag] = run.byName('edge-cache').inputs.rules;
    expect(blobs.actionParameters.edgeTtl.default).toBe(2_592_000);
    expect(byTag.actionParameters).toEqual({ cache: false });
    expect(Object.keys(run.byName('edge-origin-header').inputs.rules[0].actionParameters.headers)).toEqual(['X-Origin-Auth']);
    expect(upload(run, 'vps-caddy', '/etc/caddy/Caddyfile').content).toContain('@direct not header X-Origin-Auth');
  });

  it('connects as the configured user with the private key, kept secret', () => {
    for (const c of run.ofType('command:remote:Command')) {
      expect(c.inputs.connection).toMatchObject({ host: 'vps.example.net', port: 2222, user: 'deploy', privateKey: FAKE_KEY });
      expect(c.inputs.create).toBe('sudo -n sh -s');
      expect(isSecretValue(c.raw.connection)).toBe(true);
    }
    expect(run.byName('host-firewall').inputs.stdin).toContain('ufw allow 2222/tcp');
    const provider = run.byName('vps-docker');
    expect(provider.inputs.host).toBe('ssh://deploy@vps.example.net:2222');
    expect(isSecretValue(provider.raw.sshOpts) || typeof provider.raw.sshOpts === 'string').toBe(true);
    const opts: string[] = JSON.parse(typeof provider.inputs.sshOpts === 'string' ? provider.inputs.sshOpts : JSON.stringify(provider.inputs.sshOpts));
    const keyFile = opts[opts.indexOf('-i') + 1];
    expect(keyFile.startsWith(keyDir)).toBe(true);
    expect(readFileSync(keyFile, 'utf8')).toBe(FAKE_KEY);
    expect(statSync(keyFile).mode & 0o777).toBe(0o600);
  });

  it('hashes both users and passes upstream credentials to the mirror as secret env', () => {
    const htpasswd = installed(run.byName('host-auth').inputs.stdin, '/opt/registry-stack/auth/htpasswd');
    expect(htpasswd.trim().split('\n').map((l) => l.split(':')[0])).toEqual(['alice', 'ci-bot']);
    const cache = run.byName('vps-registry-cache');
    expect(isSecretValue(cache.raw.envs)).toBe(true);
    expect(cache.inputs.envs).toEqual(
      expect.arrayContaining(['REGISTRY_PROXY_DOCKER_IO_USERNAME=hubuser', 'REGISTRY_PROXY_DOCKER_IO_PASSWORD=hub-token-value']),
    );
    const mir = loadConfigText(upload(run, 'vps-registry-cache', '/etc/registry/config.yml').content, {}).config;
    expect(mir.proxy?.upstreams?.map((u) => u.host)).toEqual(['docker.io', 'ghcr.io', 'quay.io', 'registry.k8s.io']);
    expect(mir.proxy?.tagfreshness).toBe(5 * 60_000);
    expect(mir.cache).toMatchObject({ maxsize: 200e9, interval: 6 * 3_600_000 });
    expect(JSON.stringify(mir)).not.toContain('hub-token-value');
    const priv = loadConfigText(upload(run, 'vps-registry', '/etc/registry/config.yml').content, {}).config;
    expect(priv.ratelimit).toMatchObject({ enabled: true, perip: { rate: 50, burst: 200 }, trustedproxies: ['172.31.0.0/24'] });
    expect(priv.gc).toMatchObject({ interval: 24 * 3_600_000, deleteuntagged: true });
    expect(run.byName('vps-registry').inputs.memory).toBe(2048);
  });

  it('installs the configured schedules and the alert webhook (secret) for the ops scripts', () => {
    const ops = run.byName('host-ops').inputs.stdin as string;
    expect(ops).toContain('*/2 * * * * root flock -n /run/lock/registry-stack-monitor.lock');
    expect(ops).toContain('@daily root flock -n /run/lock/registry-stack-renew-cert.lock');
    expect(ops).toContain('ALERT_WEBHOOK=https://hooks.example.com/registry-stack');
    expect(ops).toContain('MONITOR_DISK_THRESHOLD=80');
    expect(ops).toContain('RENEW_CERT_DAYS=21');
  });

  it('outputs snippets for every upstream and leaks no secret', () => {
    const snippets = run.outputs.clientSnippets as Record<string, any>;
    expect(Object.keys(snippets.containerdHosts)).toEqual(['docker.io', 'ghcr.io', 'quay.io', 'registry.k8s.io']);
    expect(run.outputs.r2Bucket).toBe('registry-stack-blobs');
    const text = JSON.stringify(run.outputs);
    for (const s of ['change-me-please', 'another-long-password', 'hub-token-value', 'not-a-real-key', GENERATED.origin, GENERATED.admin]) {
      expect(text).not.toContain(s);
    }
  });
});

describe('access control (full.yaml: a policy and a CI robot)', () => {
  let run: ProgramRun;
  beforeAll(async () => {
    run = await runProgram(fullConfig(), { secretKeys: SECRET_KEYS });
    if (run.error) throw run.error;
  });

  it('installs the policy beside the htpasswd, and points dcr (only) at it', () => {
    const policy = installed(run.byName('host-auth').inputs.stdin, '/opt/registry-stack/auth/access.yaml');
    expect(policy).toMatch(/^ {2}team\/\*\*:$/m);
    expect(policy.indexOf('team/**:')).toBeLessThan(policy.indexOf('public/**:'));
    expect(run.byName('host-auth').inputs.stdin).toContain("chgrp 1000 '/opt/registry-stack/auth/access.yaml'");
    const priv = loadConfigText(upload(run, 'vps-registry', '/etc/registry/config.yml').content, {}).config;
    expect(priv.auth?.access).toBe('/etc/registry/auth/access.yaml');
    expect(loadConfigText(upload(run, 'vps-registry-cache', '/etc/registry/config.yml').content, {}).config.auth?.access).toBeUndefined();
  });

  it('makes each robot with a remote command after the containers, its secret a secret output', () => {
    const robot = run.byName('robots-ci');
    expect(robot.type).toBe('command:remote:Command');
    expect(robot.inputs.create).toBe('sudo -n sh -s');
    expect(robot.inputs.stdin).toContain("robot 'create' 'ci' '--scope' 'repository:team/**:pull,push' '--ttl' '90d'");
    expect(robot.inputs.delete).toMatch(/^sudo -n sh -c 'docker exec .* robot .*revoke.* .*ci.* -c \/etc\/registry\/config\.yml/);
    expect(robot.inputs.triggers).toEqual(['repository:team/**:pull,push', '90d', 'CI pushes team images', '1']);
    expect(robot.inputs.logging).toBe('stderr');
    expect(shellcheck(robot.inputs.stdin)).toBe('');
    expect(run.outputs.robotSecrets).toEqual({ ci: robotSecret('ci') });
    expect(run.secretOutputs).toContain('robotSecrets');
  });

  it('a stack without robots has neither their commands nor the output', async () => {
    const bare = await runProgram(MINIMAL, { secretKeys: ['users'] });
    expect(bare.resources.filter((r) => r.name.startsWith('robots'))).toEqual([]);
    expect(bare.outputs.robotSecrets).toBeUndefined();
  });
});

describe('idempotence and change scope', () => {
  // One image name for every run here: the content tag is tested above, and a
  // checkout being edited while the tests run must not look like a config change.
  const imageName = serverImageName(ROOT);
  const run = (config: Record<string, unknown>) => runProgram(config, { secretKeys: ['users'], imageName });
  const inputsByName = (r: ProgramRun) => new Map(r.resources.map((x) => [`${x.type}::${x.name}`, JSON.stringify(x.inputs)]));

  it('a second run with the same config and state sends identical inputs (no update, htpasswd included)', async () => {
    const a = inputsByName(await run(MINIMAL));
    const b = inputsByName(await run(MINIMAL));
    expect([...b.keys()].sort()).toEqual([...a.keys()].sort());
    for (const [k, v] of a) expect(b.get(k), k).toBe(v);
  });

  it('changing a mirror setting changes only the mirror container (tag manifests are not edge-cached, so not the cache rules)', async () => {
    const a = inputsByName(await run(MINIMAL));
    const b = inputsByName(await run({ ...MINIMAL, mirror: { tagMaxAge: '5m' } }));
    const changed = [...a.keys()].filter((k) => a.get(k) !== b.get(k));
    expect(changed.sort()).toEqual(['docker:index/container:Container::vps-registry-cache']);
  });

  it('changing the access policy changes only the host\'s auth step (the registry re-reads the file); a robot\'s generation only its command', async () => {
    const withPolicy = (rule: Record<string, unknown>, generation = 1) => ({
      ...MINIMAL,
      access: { groups: { ci: ['robot$ci'] }, repositories: [{ pattern: 'team/**', ...rule }] },
      robots: { ci: { scopes: ['repository:team/**:push'], generation } },
    });
    const a = inputsByName(await run(withPolicy({ users: { alice: ['pull'] } })));
    const b = inputsByName(await run(withPolicy({ users: { alice: ['pull', 'push'] } })));
    expect([...a.keys()].filter((k) => a.get(k) !== b.get(k))).toEqual(['command:remote:Command::host-auth']);
    const c = inputsByName(await run(withPolicy({ users: { alice: ['pull'] } }, 2)));
    expect([...a.keys()].filter((k) => a.get(k) !== c.get(k))).toEqual(['command:remote:Command::robots-ci']);
  });

  it('changing a password changes only the htpasswd on the host (the registry re-reads it, no restart)', async () => {
    const a = inputsByName(await run(MINIMAL));
    const b = inputsByName(await run({ ...MINIMAL, users: { alice: 'a-new-password-2' } }));
    const changed = [...a.keys()].filter((k) => a.get(k) !== b.get(k));
    expect(changed).toEqual(['command:remote:Command::host-auth']);
  });
});

describe('invalid config', () => {
  it('fails before creating anything, naming the key', async () => {
    const r = await runProgram({ ...MINIMAL, vps: { host: '203.0.113.10', port: 'ssh' } });
    expect(pulumi.RunError.isInstance(r.error)).toBe(true);
    expect(r.error?.message).toContain('registry-stack:vps.port');
    expect(r.resources).toEqual([]);
  });

  it('refuses a VPS whose SSH host key neither vps.hostKey nor known_hosts has, before creating anything', async () => {
    // 198.51.100.77 (TEST-NET-2): in nobody's known_hosts
    const r = await runProgram({ ...MINIMAL, vps: { host: '198.51.100.77' } });
    expect(pulumi.RunError.isInstance(r.error)).toBe(true);
    expect(r.error?.message).toContain('registry-stack:vps.hostKey: no SSH host key for 198.51.100.77');
    expect(r.error?.message).toContain('`ssh-keyscan -t ed25519 198.51.100.77`');
    expect(r.resources).toEqual([]);
  });

  it('names each bad key, including ones inside lists and unknown ones', async () => {
    const r = await runProgram({
      domain: 'example.com',
      vps: { host: 'vps.example.net' },
      users: {},
      mirror: { upstreams: [{ host: 'ghcr.io', url: 'ghcr.io' }] },
      cron: { gc: '61 * * * *' },
      colour: 'blue',
    });
    const msg = r.error?.message ?? '';
    expect(msg).toContain('registry-stack:users: at least one user is required');
    expect(msg).toContain('registry-stack:mirror.upstreams[0].url');
    expect(msg).toContain('registry-stack:cron.gc');
    expect(msg).toContain('registry-stack:colour: unknown key');
  });

  it('checks cross-key rules: public IP needed for a host name, credentials for known upstreams only', async () => {
    const r = await runProgram({ ...MINIMAL, vps: { host: 'vps.example.net' }, upstreamCredentials: { 'quay.io': { username: 'u', password: 'p' } } });
    expect(r.error?.message).toContain('registry-stack:vps.publicIp: required when vps.host is not an IPv4 address');
    expect(r.error?.message).toContain('registry-stack:upstreamCredentials.quay.io: quay.io is not one of mirror.upstreams');
  });

  it('validates extraConfig with the server\'s own loader', async () => {
    const r = await runProgram({ ...MINIMAL, private: { extraConfig: { storage: { filesystem: { rootdir: '/x' } } } } });
    expect(r.error?.message).toContain('registry-stack:private.extraConfig');
    expect(r.error?.message).toContain('unknown key "storage.filesystem.rootdir"');
  });
});

describe('the entry point (Pulumi.yaml → infra/index.ts)', () => {
  it('Pulumi.yaml runs infra/ with Node and tsx', () => {
    const project = parseYaml(readFileSync(path.join(ROOT, 'Pulumi.yaml'), 'utf8'));
    expect(project).toMatchObject({
      name: 'registry-stack',
      main: 'infra/',
      runtime: { name: 'nodejs', options: { typescript: false, nodeargs: '--import tsx' } },
    });
  });

  it('exports the stack outputs', async () => {
    // runProgram sets the mocks and config; the module then runs the program on import, as `pulumi up` does.
    await runProgram(MINIMAL, { secretKeys: ['users'] });
    const index = await import('../../infra/index.ts');
    expect(index.dcrUrl).toBe('https://dcr.example.com');
    expect(index.mirUrl).toBe('https://mir.example.com');
    expect(index.containers).toEqual(['caddy', 'registry', 'registry-cache']);
    expect(Object.keys(index.clientSnippets)).toEqual(expect.arrayContaining(['dockerDaemonJson', 'containerdHosts', 'k3sRegistriesYaml']));
  });
});
