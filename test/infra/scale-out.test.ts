// Scale-out under Pulumi's mocks: R2 storage, replicas behind Caddy's load
// balancer, and the Redis they share. Checked with the real tools that read
// the output: caddy validate on the Caddyfile, the server's loader on the
// registry configs (with their environment), shellcheck on the host scripts.
import { createHash } from 'node:crypto';
import * as path from 'node:path';
import * as pulumi from '@pulumi/pulumi';
import { beforeAll, describe, expect, it } from 'vitest';
import { loadConfigText } from '../../server/src/config/load.ts';
import { serverImageName } from '../../infra/image.ts';
import { CADDY_ORIGIN_CERT } from '../../infra/render/layout.ts';
import { makeTestCa } from '../scripts/helpers.ts';
import { GENERATED, HOST_KEY, isSecretValue, PERMISSION_GROUPS, type ProgramRun, ROOT, runProgram, TOKEN_VALUE } from './pulumi-harness.ts';
import { caddyValidate, shellcheck, withTempDir } from './shell.ts';

const MINIMAL = { domain: 'example.com', vps: { host: '203.0.113.10', hostKey: HOST_KEY }, users: { alice: 'alice-password-1' } };
const ACCOUNT = '00112233445566778899aabbccddeeff';
const R2 = { r2: { accountId: ACCOUNT, bucket: 'registry-blobs' } };
/** Three private replicas and two mirror replicas on R2, credentials created by the program. */
const REPLICATED = { ...MINIMAL, cloudflare: R2, storage: { backend: 'r2' }, replicas: { private: 3, mirror: '2' } };
const CREDENTIALS = { accessKeyId: 'r2-access-key-id-given', secretAccessKey: 'r2-secret-access-key-given-0123456789' };

const DERIVED_SECRET = createHash('sha256').update(TOKEN_VALUE).digest('hex');

const upload = (r: ProgramRun, resource: string, file: string) => {
  const c = r.byName(resource);
  const i = (c.inputs.uploads as Array<{ file: string; content: string }>).findIndex((u) => u.file === file);
  expect(i, `${resource} uploads ${file}`).toBeGreaterThanOrEqual(0);
  return { content: c.inputs.uploads[i].content as string, secret: isSecretValue(c.raw.uploads) || isSecretValue(c.raw.uploads[i]?.content) };
};

const envOf = (r: ProgramRun, resource: string): Record<string, string> =>
  Object.fromEntries((r.byName(resource).inputs.envs as string[]).map((e) => [e.slice(0, e.indexOf('=')), e.slice(e.indexOf('=') + 1)]));

/** The content an install script writes to `file`. */
function installed(script: string, file: string): string {
  const start = script.indexOf(`# ${file}\n`);
  expect(start, `script installs ${file}`).toBeGreaterThanOrEqual(0);
  const body = script.slice(script.indexOf("<<'REGISTRY_STACK_EOF'\n", start) + "<<'REGISTRY_STACK_EOF'\n".length);
  return body.slice(0, body.indexOf('REGISTRY_STACK_EOF\n'));
}

describe('replicated stack on R2 (3 private, 2 mirror replicas, credentials created by the program)', () => {
  let run: ProgramRun;
  beforeAll(async () => {
    run = await runProgram(REPLICATED, { secretKeys: ['users'] });
    if (run.error) throw run.error;
  });

  it('creates the bucket (protected) and a token scoped to it with object read and write only', () => {
    expect(run.byName('edge-r2').inputs).toEqual({ accountId: ACCOUNT, name: 'registry-blobs' });
    const lookup = run.invokes.find((i) => i.token.includes('getAccountApiTokenPermissionGroupsList'));
    expect(lookup?.inputs).toEqual({ accountId: ACCOUNT });
    const token = run.byName('edge-r2-token').inputs;
    expect(token.accountId).toBe(ACCOUNT);
    expect(token.policies).toHaveLength(1);
    const [policy] = token.policies;
    expect(policy.effect).toBe('allow');
    expect(policy.permissionGroups).toEqual([{ id: 'pg-r2-read' }, { id: 'pg-r2-write' }]);
    expect(JSON.parse(policy.resources)).toEqual({ [`com.cloudflare.edge.r2.bucket.${ACCOUNT}_default_registry-blobs`]: '*' });
    expect(PERMISSION_GROUPS.some((g) => g.id === 'pg-dns-edit' && !policy.permissionGroups.some((p: any) => p.id === g.id))).toBe(true);
  });

  it('runs caddy, three registry-<i>, two registry-cache-<i> and redis, with no data volumes for R2', () => {
    const containers = run.ofType('docker:index/container:Container');
    expect(containers.map((c) => c.inputs.name).sort()).toEqual([
      'caddy',
      'redis',
      'registry-1',
      'registry-2',
      'registry-3',
      'registry-cache-1',
      'registry-cache-2',
    ]);
    expect(containers.map((c) => c.name).sort()).toEqual(containers.map((c) => `vps-${c.inputs.name}`).sort());
    expect(run.ofType('docker:index/volume:Volume').map((v) => v.inputs.name).sort()).toEqual(['caddy_admin', 'caddy_config', 'caddy_data']);
    for (const c of containers) {
      expect(c.provider).toContain('vps-docker');
      expect(c.inputs).toMatchObject({
        restart: 'unless-stopped',
        logDriver: 'json-file',
        logOpts: { 'max-size': '10m', 'max-file': '3' },
        networksAdvanced: [{ name: 'proxy_net', aliases: [c.inputs.name] }],
      });
      expect(c.inputs.memory).toBeGreaterThan(0);
      expect(c.inputs.healthcheck.tests.length).toBeGreaterThan(1);
      if (c.inputs.name !== 'caddy') expect(c.inputs.ports, c.inputs.name).toBeUndefined();
    }
    for (const name of ['registry-1', 'registry-2', 'registry-3']) {
      const c = run.byName(`vps-${name}`).inputs;
      expect(c.volumes).toEqual([{ hostPath: '/opt/registry-stack/auth', containerPath: '/etc/registry/auth', readOnly: true }]);
      expect(c.memory).toBe(1024);
      expect(c.healthcheck.tests.join(' ')).toContain('http://127.0.0.1:5000/healthz');
    }
    for (const name of ['registry-cache-1', 'registry-cache-2']) expect(run.byName(`vps-${name}`).inputs.volumes).toEqual([]);
  });

  it('runs Redis from its own image with the rendered redis.conf (secret), no port, a PING healthcheck', () => {
    const redis = run.byName('vps-redis');
    expect(run.byName('vps-redis-image').inputs.name).toBe('redis:7.4-alpine');
    expect(redis.inputs.image).toBe(`sha256:d${'c'.repeat(63)}`);
    expect(redis.inputs.command).toEqual(['redis-server', '/usr/local/etc/redis/redis.conf']);
    expect(redis.inputs.ports).toBeUndefined();
    expect(redis.inputs.volumes).toBeUndefined();
    expect(redis.inputs.memory).toBe(256);
    expect(redis.inputs.healthcheck.tests).toEqual(['CMD-SHELL', 'redis-cli ping | grep -q PONG']);
    const conf = upload(run, 'vps-redis', '/usr/local/etc/redis/redis.conf');
    expect(conf.secret).toBe(true);
    expect(conf.content).toContain(`requirepass ${GENERATED.redis}\n`);
    expect(conf.content).toContain('save ""\n');
    expect(conf.content).toContain('appendonly no\n');
    expect(isSecretValue(redis.raw.envs)).toBe(true);
    expect(redis.inputs.envs).toEqual([`REDISCLI_AUTH=${GENERATED.redis}`]);
    // generated once, by a command of its own (the first one's output is unchanged)
    expect(run.ofType('command:local:Command').map((c) => c.name).sort()).toEqual(['secrets-generate', 'secrets-redis']);
  });

  it('gives every replica the same config (S3 on the bucket, Redis) and its secrets only as secret env', () => {
    const first = upload(run, 'vps-registry-1', '/etc/registry/config.yml');
    expect(first.secret).toBe(false);
    for (const name of ['registry-2', 'registry-3']) expect(upload(run, `vps-${name}`, '/etc/registry/config.yml').content).toBe(first.content);
    for (const name of ['registry-1', 'registry-2', 'registry-3', 'registry-cache-1', 'registry-cache-2']) {
      const c = run.byName(`vps-${name}`);
      expect(isSecretValue(c.raw.envs), name).toBe(true);
      expect(envOf(run, `vps-${name}`)).toEqual({
        REGISTRY_ADMIN_TOKEN: GENERATED.admin,
        REGISTRY_STORAGE_S3_ACCESSKEY: 'edge-r2-token-id',
        REGISTRY_STORAGE_S3_SECRETKEY: DERIVED_SECRET,
        REGISTRY_REDIS_PASSWORD: GENERATED.redis,
      });
      const text = upload(run, `vps-${name}`, '/etc/registry/config.yml').content;
      for (const secret of [GENERATED.redis, GENERATED.admin, DERIVED_SECRET, TOKEN_VALUE, 'edge-r2-token-id']) expect(text).not.toContain(secret);
    }
    const env = envOf(run, 'vps-registry-1');
    const loaded = loadConfigText(first.content, env);
    expect(loaded.ignoredEnv).toEqual([]);
    const priv = loaded.config;
    expect(priv.storage.filesystem).toBeUndefined();
    expect(priv.storage.s3).toMatchObject({
      bucket: 'registry-blobs',
      region: 'auto',
      regionendpoint: `https://${ACCOUNT}.r2.cloudflarestorage.com`,
      forcepathstyle: true,
      chunksize: 10 * 1024 * 1024,
      rootdirectory: '/private',
      accesskey: 'edge-r2-token-id',
      secretkey: DERIVED_SECRET,
    });
    expect(priv.storage.redirect).toEqual({ disable: false });
    expect(priv.storage.cache?.blobdescriptor).toBe('redis');
    expect(priv.redis).toMatchObject({ addr: 'redis:6379', db: 0, password: GENERATED.redis });

    const mir = loadConfigText(upload(run, 'vps-registry-cache-2', '/etc/registry/config.yml').content, envOf(run, 'vps-registry-cache-2')).config;
    expect(mir.storage.s3).toMatchObject({ bucket: 'registry-blobs', rootdirectory: '/mirror', secretkey: DERIVED_SECRET });
    // Cloudflare caches the mirror's blob answers: never a redirect to a presigned URL
    expect(mir.storage.redirect).toEqual({ disable: true });
    expect(mir.redis).toMatchObject({ addr: 'redis:6379', db: 1 });
  });

  it('load-balances each host over its replicas with health checks, and the Caddyfile validates', () => {
    const caddyfile = upload(run, 'vps-caddy', '/etc/caddy/Caddyfile');
    expect(caddyfile.secret).toBe(true);
    expect(caddyfile.content).toContain('reverse_proxy registry-1:5000 registry-2:5000 registry-3:5000 {');
    expect(caddyfile.content).toContain('reverse_proxy registry-cache-1:5000 registry-cache-2:5000 {');
    // Caddy's container has mir's Origin CA certificate at CADDY_ORIGIN_CERT; here a test CA's stands in for it.
    const { ok, output, json } = withTempDir((dir) => {
      const mir = makeTestCa(dir).issue('mir.example.com', 30, path.join(dir, 'mir'));
      return caddyValidate(caddyfile.content.replace(CADDY_ORIGIN_CERT.cert, mir.certFile).replace(CADDY_ORIGIN_CERT.key, mir.keyFile));
    });
    expect(ok, output).toBe(true);
    const proxies: any[] = [];
    const walk = (v: any) => {
      if (Array.isArray(v)) v.forEach(walk);
      else if (v && typeof v === 'object') {
        if (v.handler === 'reverse_proxy') proxies.push(v);
        Object.values(v).forEach(walk);
      }
    };
    walk(json);
    expect(proxies.map((p) => p.upstreams.map((u: any) => u.dial))).toEqual([
      ['registry-1:5000', 'registry-2:5000', 'registry-3:5000'],
      ['registry-cache-1:5000', 'registry-cache-2:5000'],
    ]);
    for (const p of proxies) {
      expect(p.load_balancing).toMatchObject({ selection_policy: { policy: 'least_conn' }, try_duration: 10e9, try_interval: 250e6 });
      expect(p.health_checks.active).toMatchObject({ uri: '/healthz', interval: 10e9, timeout: 5e9, expect_status: 2 });
      expect(p.health_checks.passive).toMatchObject({ fail_duration: 30e9, max_fails: 1 });
      expect(p.health_checks.passive.unhealthy_status).toBeUndefined();
      expect(p.flush_interval).toBe(-1);
    }
  });

  it('points GC and prune at one replica, and the monitor at every container', () => {
    const ops = run.byName('host-ops');
    expect(isSecretValue(ops.raw.stdin)).toBe(true);
    const env = installed(ops.inputs.stdin, '/opt/registry-stack/ops.env');
    expect(env).toContain('GC_ADMIN_URLS=private=http://registry-1:5001,mirror=http://registry-cache-1:5001\n');
    expect(env).toContain('PRUNE_ADMIN_URLS=mirror=http://registry-cache-1:5001\n');
    expect(env).toContain('MONITOR_CONTAINERS=caddy,registry-1,registry-2,registry-3,registry-cache-1,registry-cache-2,redis\n');
    expect(env).toContain('MONITOR_MEMORY_CONTAINERS=registry-1,registry-2,registry-3,registry-cache-1,registry-cache-2\n');
    // nothing on local volumes but Caddy's: the disk check watches the disk Docker's volumes are on
    expect(env).toContain('MONITOR_PATHS=/data/caddy\n');
    const wrapper = installed(ops.inputs.stdin, '/opt/registry-stack/bin/registry-stack-ops');
    expect(wrapper).toContain('  -v caddy_data:/data/caddy:ro \\\n');
    expect(wrapper).not.toContain('registry_data');
    expect(shellcheck(wrapper)).toBe('');
    expect(shellcheck(ops.inputs.stdin)).toBe('');
  });

  it('outputs the containers, replicas, bucket and endpoint, and no secret', () => {
    expect(run.outputs).toMatchObject({
      containers: ['caddy', 'registry-1', 'registry-2', 'registry-3', 'registry-cache-1', 'registry-cache-2', 'redis'],
      replicas: { private: 3, mirror: 2 },
      r2Bucket: 'registry-blobs',
      r2Endpoint: `https://${ACCOUNT}.r2.cloudflarestorage.com`,
    });
    const text = JSON.stringify(run.outputs);
    for (const secret of ['alice-password-1', GENERATED.origin, GENERATED.admin, GENERATED.redis, TOKEN_VALUE, DERIVED_SECRET]) {
      expect(text).not.toContain(secret);
    }
  });
});

describe('R2 with credentials from the stack config', () => {
  let run: ProgramRun;
  beforeAll(async () => {
    run = await runProgram(
      { ...MINIMAL, cloudflare: { r2: { ...R2.r2, jurisdiction: 'eu' } }, storage: { backend: 'r2', chunkSize: '64MiB', redirect: false }, r2Credentials: CREDENTIALS },
      { secretKeys: ['users', 'r2Credentials'] },
    );
    if (run.error) throw run.error;
  });

  it('creates no token, uses the given keys (secret) and the jurisdiction\'s endpoint', () => {
    expect(run.ofType('cloudflare:index/accountToken:AccountToken')).toHaveLength(0);
    expect(run.invokes.some((i) => i.token.includes('PermissionGroups'))).toBe(false);
    expect(run.byName('edge-r2').inputs).toEqual({ accountId: ACCOUNT, name: 'registry-blobs', jurisdiction: 'eu' });
    // one replica each: the plain names (and resource names) of a single-replica stack
    expect(run.ofType('docker:index/container:Container').map((c) => c.name).sort()).toEqual(['vps-caddy', 'vps-redis', 'vps-registry', 'vps-registry-cache']);
    for (const name of ['vps-registry', 'vps-registry-cache']) {
      expect(isSecretValue(run.byName(name).raw.envs)).toBe(true);
      expect(envOf(run, name)).toMatchObject({
        REGISTRY_STORAGE_S3_ACCESSKEY: CREDENTIALS.accessKeyId,
        REGISTRY_STORAGE_S3_SECRETKEY: CREDENTIALS.secretAccessKey,
        REGISTRY_REDIS_PASSWORD: GENERATED.redis,
      });
    }
    const priv = loadConfigText(upload(run, 'vps-registry', '/etc/registry/config.yml').content, envOf(run, 'vps-registry')).config;
    expect(priv.storage.s3).toMatchObject({ regionendpoint: `https://${ACCOUNT}.eu.r2.cloudflarestorage.com`, chunksize: 64 * 1024 * 1024 });
    expect(priv.storage.redirect).toEqual({ disable: true });
    // one upstream per host: no load-balancing block
    expect(upload(run, 'vps-caddy', '/etc/caddy/Caddyfile').content).not.toContain('lb_policy');
    const text = JSON.stringify(run.outputs);
    expect(text).not.toContain(CREDENTIALS.secretAccessKey);
    expect(text).not.toContain(CREDENTIALS.accessKeyId);
  });
});

describe('R2 for the private registry, a local cache for the mirror, Redis persistent', () => {
  it('keeps the mirror on its volume, mounts Redis\'s volume, and monitors both disks', async () => {
    const run = await runProgram(
      { ...MINIMAL, cloudflare: R2, storage: { backend: 'r2', mirrorBackend: 'filesystem' }, r2Credentials: CREDENTIALS, replicas: { private: 2 }, redis: { persistence: true, memory: '512MiB' } },
      { secretKeys: ['users', 'r2Credentials'] },
    );
    if (run.error) throw run.error;
    expect(run.ofType('docker:index/volume:Volume').map((v) => v.inputs.name).sort()).toEqual([
      'caddy_admin',
      'caddy_config',
      'caddy_data',
      'redis_data',
      'registry_cache_data',
    ]);
    expect(run.byName('vps-redis').inputs.volumes).toEqual([{ volumeName: 'redis_data', containerPath: '/data' }]);
    expect(run.byName('vps-redis').inputs.memory).toBe(512);
    expect(upload(run, 'vps-redis', '/usr/local/etc/redis/redis.conf').content).toContain('appendonly yes\n');
    expect(run.byName('vps-registry-cache').inputs.volumes).toEqual([{ volumeName: 'registry_cache_data', containerPath: '/var/lib/registry' }]);
    const mir = loadConfigText(upload(run, 'vps-registry-cache', '/etc/registry/config.yml').content, envOf(run, 'vps-registry-cache'));
    expect(mir.ignoredEnv).toEqual([]);
    expect(mir.config.storage.filesystem?.rootdirectory).toBe('/var/lib/registry');
    expect(mir.config.storage.s3).toBeUndefined();
    expect(mir.config.redis).toMatchObject({ addr: 'redis:6379', db: 1 });
    expect(envOf(run, 'vps-registry-cache')).not.toHaveProperty('REGISTRY_STORAGE_S3_SECRETKEY');
    const ops = installed(run.byName('host-ops').inputs.stdin, '/opt/registry-stack/ops.env');
    expect(ops).toContain('MONITOR_PATHS=/data/registry-cache,/data/redis\n');
    expect(ops).toContain('GC_ADMIN_URLS=private=http://registry-1:5001,mirror=http://registry-cache:5001\n');
  });
});

describe('scaling changes', () => {
  const imageName = serverImageName(ROOT);
  const inputsByName = async (config: Record<string, unknown>) => {
    const r = await runProgram(config, { secretKeys: ['users'], imageName });
    if (r.error) throw r.error;
    return new Map(r.resources.map((x) => [`${x.type}::${x.name}`, JSON.stringify(x.inputs)]));
  };

  it('a second run of a replicated stack sends identical inputs', async () => {
    const a = await inputsByName(REPLICATED);
    const b = await inputsByName(REPLICATED);
    expect([...b.keys()].sort()).toEqual([...a.keys()].sort());
    for (const [k, v] of a) expect(b.get(k), k).toBe(v);
  });

  it('one more private replica adds its container and touches only Caddy and the ops settings', async () => {
    const a = await inputsByName(REPLICATED);
    const b = await inputsByName({ ...REPLICATED, replicas: { private: 4, mirror: 2 } });
    expect([...b.keys()].filter((k) => !a.has(k))).toEqual(['docker:index/container:Container::vps-registry-4']);
    expect([...a.keys()].filter((k) => !b.has(k))).toEqual([]);
    const changed = [...a.keys()].filter((k) => a.get(k) !== b.get(k));
    expect(changed.sort()).toEqual(['command:remote:Command::host-ops', 'docker:index/container:Container::vps-caddy']);
  });
});

describe('scale-out config errors', () => {
  const fails = async (config: Record<string, unknown>) => {
    const r = await runProgram(config, { secretKeys: ['users'] });
    expect(pulumi.RunError.isInstance(r.error), String(r.error)).toBe(true);
    expect(r.resources).toEqual([]);
    return r.error?.message ?? '';
  };

  it('refuses replicas on filesystem storage, naming the key and what to do', async () => {
    const msg = await fails({ ...MINIMAL, replicas: { private: 2 } });
    expect(msg).toContain('registry-stack:replicas.private: 2 replicas need shared storage');
    expect(msg).toContain('storage.backend is filesystem');
    expect(msg).toContain('set storage.backend: r2');
    const mirror = await fails({ ...MINIMAL, cloudflare: R2, storage: { backend: 'r2', mirrorBackend: 'filesystem' }, replicas: { mirror: 3 } });
    expect(mirror).toContain('registry-stack:replicas.mirror: 3 replicas need shared storage, but storage.mirrorBackend is filesystem');
    expect(mirror).not.toContain('replicas.private');
  });

  it('refuses R2 without the bucket, Redis off with replicas, and bad sizes, counts and durations', async () => {
    expect(await fails({ ...MINIMAL, storage: { backend: 'r2' } })).toContain('registry-stack:storage.backend: r2 storage needs the bucket: set cloudflare.r2');
    expect(await fails({ ...MINIMAL, r2Credentials: CREDENTIALS })).toContain('registry-stack:r2Credentials: set cloudflare.r2 too');
    expect(await fails({ ...REPLICATED, redis: { enabled: false } })).toContain('registry-stack:redis.enabled:');
    const msg = await fails({
      ...REPLICATED,
      storage: { backend: 's3', chunkSize: '1MiB' },
      replicas: { private: 0, mirror: 2 },
      loadBalancer: { policy: 'cookie', healthInterval: 'often' },
    });
    expect(msg).toContain('registry-stack:storage.backend');
    expect(msg).toContain('registry-stack:storage.chunkSize: must be at least 5MiB');
    expect(msg).toContain('registry-stack:replicas.private');
    expect(msg).toContain('registry-stack:loadBalancer.policy');
    expect(msg).toContain('registry-stack:loadBalancer.healthInterval');
  });

  it('allows Redis off with R2 and one replica each', async () => {
    const r = await runProgram(
      { ...MINIMAL, cloudflare: R2, storage: { backend: 'r2' }, r2Credentials: CREDENTIALS, redis: { enabled: false } },
      { secretKeys: ['users', 'r2Credentials'] },
    );
    if (r.error) throw r.error;
    expect(r.ofType('docker:index/container:Container').map((c) => c.inputs.name).sort()).toEqual(['caddy', 'registry', 'registry-cache']);
    expect(loadConfigText(upload(r, 'vps-registry', '/etc/registry/config.yml').content, {}).config.redis).toBeUndefined();
    expect(r.ofType('command:local:Command').map((c) => c.name)).toEqual(['secrets-generate']);
  });
});
