// The local twin end to end: Caddy (tls internal, high ports) serving the
// rendered Caddyfile in front of the private registry and the mirror, both
// started from their rendered configs. Clients trust Caddy's local CA.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { type Dispatcher, getGlobalDispatcher, setGlobalDispatcher } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfigText } from '../../server/src/config/load.ts';
import { type LocalStack, startLocalStack } from '../../infra/local/stack.ts';
import { RegistryClient } from '../helpers/client.ts';
import { buildImage, type Image, MT, randomBlob, sha256 } from '../helpers/oci.ts';
import { basicAuth, startTestServer, type TestServer } from '../helpers/server.ts';
import { parseChallenge, TokenClient } from '../auth/helpers.ts';

const USER = 'tester';
const PASSWORD = 'tester-password-1';

/** The twin a describe runs against, filled in by its beforeAll. */
interface Twin {
  stack: LocalStack;
  /** The mirror's upstream: a registry on loopback holding library/base:<tag>. */
  upstream: TestServer;
  upstreamImage: Image;
  dcr: RegistryClient;
  mir: RegistryClient;
  /** The header Caddy requires on the mirror host (what Cloudflare adds in production). */
  origin: Record<string, string>;
}

/**
 * Starts (beforeAll) and stops (afterAll) a local twin whose mirror has a loopback
 * upstream holding one image, library/base:<tag>. The test clients use undici's global
 * dispatcher: while the twin runs, it trusts Caddy's CA and resolves *.localhost to loopback.
 */
function useTwin(options: { tmpPrefix: string; tag: string; content: string; stack?: Partial<Parameters<typeof startLocalStack>[0]> }): Twin {
  const t = {} as Twin;
  let dir: string | undefined;
  let previousDispatcher: Dispatcher | undefined;
  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), options.tmpPrefix));
    t.upstream = await startTestServer({ anonymousPull: true });
    t.upstreamImage = buildImage({ files: [{ 'etc/upstream.txt': options.content }] });
    await new RegistryClient(t.upstream.url, t.upstream.auth).pushImage('library/base', options.tag, t.upstreamImage);
    const upstreamHost = new URL(t.upstream.url).host;
    t.stack = await startLocalStack({
      dir,
      users: { [USER]: PASSWORD },
      upstreams: [{ host: upstreamHost, url: t.upstream.url }],
      mirrorDefaultHost: upstreamHost,
      stackConfig: { docker: { bcryptCost: 4 } },
      ...options.stack,
    });
    previousDispatcher = getGlobalDispatcher();
    setGlobalDispatcher(t.stack.dispatcher);
    t.dcr = new RegistryClient(t.stack.privateUrl, basicAuth(USER, PASSWORD));
    t.mir = new RegistryClient(t.stack.mirrorUrl);
    t.origin = { [t.stack.originHeader.name]: t.stack.originHeader.value };
  });

  afterAll(async () => {
    if (previousDispatcher) setGlobalDispatcher(previousDispatcher);
    await t.stack?.stop();
    await t.upstream?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });
  return t;
}

describe('local twin: Caddy over TLS in front of the private registry and the mirror', () => {
  // The mirror's upstream: a registry on loopback holding one image.
  const t = useTwin({ tmpPrefix: 'rs-twin-', tag: '1.0', content: 'from the upstream\n' });

  it('serves both hosts with certificates from Caddy\'s local CA, on the rendered Caddyfile', async () => {
    expect(t.stack.privateUrl).toMatch(/^https:\/\/dcr\.localhost:\d+$/);
    expect(t.stack.mirrorUrl).toMatch(/^https:\/\/mir\.localhost:\d+$/);
    expect(t.stack.caRoot).toContain('BEGIN CERTIFICATE');
    const res = await t.dcr.withAuth(undefined).req('/v2/');
    expect(res.status).toBe(401);
    expect(res.header('www-authenticate')).toContain('Basic');
    expect((await t.dcr.req('/v2/')).status).toBe(200);
  });

  it('pushes an image to the private host over TLS and pulls it back byte for byte', async () => {
    const image = buildImage({ files: [{ 'app/hello.txt': 'hello through caddy\n' }, { 'app/big.bin': randomBlob(4 * 1024 * 1024).data }] });
    await t.dcr.pushImage('team/app', 'v1', image);

    const manifest = await t.dcr.req('/v2/team/app/manifests/v1', { headers: { accept: image.mediaType } });
    expect(manifest.status).toBe(200);
    expect(manifest.header('docker-content-digest')).toBe(image.manifest.digest);
    expect(sha256(manifest.body)).toBe(image.manifest.digest);
    for (const blob of [image.config, ...image.layers]) {
      const res = await t.dcr.req(`/v2/team/app/blobs/${blob.digest}`);
      expect(res.status).toBe(200);
      expect(sha256(res.body)).toBe(blob.digest);
    }
    const tags = await t.dcr.req('/v2/team/app/tags/list');
    expect(tags.json()).toEqual({ name: 'team/app', tags: ['v1'] });
  });

  it('refuses a push without credentials on the private host', async () => {
    const res = await t.dcr.withAuth(undefined).req(`/v2/team/app/blobs/uploads/`, { method: 'POST' });
    expect(res.status).toBe(401);
  });

  it('answers 403 on the mirror host to requests without the origin header', async () => {
    for (const p of ['/v2/', '/v2/library/base/manifests/1.0', `/v2/library/base/blobs/${t.upstreamImage.config.digest}`]) {
      const res = await t.mir.req(p);
      expect(res.status, p).toBe(403);
    }
    const wrong = await t.mir.req('/v2/', { headers: { [t.stack.originHeader.name]: 'not-the-secret' } });
    expect(wrong.status).toBe(403);
  });

  it('refuses pushes on the mirror host, even with the origin header', async () => {
    const blob = randomBlob(1024);
    const post = await t.mir.req(`/v2/library/base/blobs/uploads/?digest=${blob.digest}`, {
      method: 'POST',
      headers: { ...t.origin, 'content-type': 'application/octet-stream' },
      body: blob.data,
    });
    expect(post.status).toBe(405);
    expect(post.json().errors[0].code).toBe('UNSUPPORTED');
    const put = await t.mir.req('/v2/library/base/manifests/evil', {
      method: 'PUT',
      headers: { ...t.origin, 'content-type': MT.ociManifest },
      body: t.upstreamImage.manifest.data,
    });
    expect(put.status).toBe(405);
    const del = await t.mir.req(`/v2/library/base/manifests/${t.upstreamImage.manifest.digest}`, { method: 'DELETE', headers: t.origin });
    expect(del.status).toBe(405);
    // nothing reached the upstream either
    const upstreamTags = await new RegistryClient(t.upstream.url).req('/v2/library/base/tags/list');
    expect(upstreamTags.json().tags).toEqual(['1.0']);
  });

  // Needs mirror mode in the server (proxy section): pulls through mir from the loopback t.upstream.
  it('pulls through the mirror host with the origin header (mirror mode)', async () => {
    const manifest = await t.mir.req('/v2/library/base/manifests/1.0', { headers: { ...t.origin, accept: t.upstreamImage.mediaType } });
    expect(manifest.status, manifest.text).toBe(200);
    expect(sha256(manifest.body)).toBe(t.upstreamImage.manifest.digest);
    for (const blob of [t.upstreamImage.config, ...t.upstreamImage.layers]) {
      const res = await t.mir.req(`/v2/library/base/blobs/${blob.digest}`, { headers: t.origin });
      expect(res.status).toBe(200);
      expect(sha256(res.body)).toBe(blob.digest);
    }
    // containerd's form: ?ns=<upstream host>
    const ns = new URL(t.upstream.url).host;
    const viaNs = await t.mir.req(`/v2/library/base/manifests/${t.upstreamImage.manifest.digest}?ns=${ns}`, {
      method: 'HEAD',
      headers: { ...t.origin, accept: t.upstreamImage.mediaType },
    });
    expect(viaNs.status).toBe(200);
    expect(viaNs.header('docker-content-digest')).toBe(t.upstreamImage.manifest.digest);
  });
});

describe('local twin with --replicas 2: Caddy balances over two processes per registry sharing data and a local Redis', () => {
  const t = useTwin({
    tmpPrefix: 'rs-twin-replicas-',
    tag: '2.0',
    content: 'from the upstream, twice\n',
    stack: {
      replicas: 2,
      // "first": every request to the first healthy replica, so the failover below is deterministic
      stackConfig: { docker: { bcryptCost: 4 }, loadBalancer: { policy: 'first', healthInterval: '1s', failDuration: '10s' } },
    },
  });

  it('renders both replicas of each host into the Caddyfile, and a redis section into each config', () => {
    expect(Object.keys(t.stack.replicas.private)).toEqual(['registry-1', 'registry-2']);
    expect(Object.keys(t.stack.replicas.mirror)).toEqual(['registry-cache-1', 'registry-cache-2']);
    const caddyfile = readFileSync(t.stack.files.caddyfile, 'utf8');
    expect(caddyfile).toContain(`reverse_proxy ${Object.values(t.stack.replicas.private).map((u) => new URL(u).host).join(' ')} {`);
    expect(caddyfile.match(/\tlb_policy first\n/g)).toHaveLength(2);
    expect(caddyfile.match(/\thealth_uri \/healthz\n/g)).toHaveLength(2);
    for (const name of ['registry-2', 'registry-cache-2']) {
      const config = loadConfigText(readFileSync(path.join(t.stack.dir, `${name}.yml`), 'utf8'), {}).config;
      expect(config.redis).toMatchObject({ addr: t.stack.redisAddr, db: name.startsWith('registry-cache') ? 1 : 0 });
      expect(config.storage.filesystem?.rootdirectory).toBe(path.join(t.stack.dir, name.replace(/-\d$/, ''), 'data'));
    }
    expect(statSync(t.stack.files.redisConf!).mode & 0o777).toBe(0o600);
    // the rendered redis.conf runs, with its password: the container healthcheck's command answers
    const port = t.stack.redisAddr!.split(':')[1];
    const password = readFileSync(path.join(t.stack.dir, 'redis.secret'), 'utf8').trim();
    const ping = spawnSync('sh', ['-c', `redis-cli -p ${port} ping | grep -q PONG`], { env: { ...process.env, REDISCLI_AUTH: password } });
    expect(ping.status).toBe(0);
  });

  it('a push through Caddy is readable from both replicas (they share the data directory)', async () => {
    const image = buildImage({ files: [{ 'app/replicated.txt': 'on every replica\n' }] });
    await t.dcr.pushImage('team/replicated', 'v1', image);
    for (const [name, url] of Object.entries(t.stack.replicas.private)) {
      const direct = new RegistryClient(url, basicAuth(USER, PASSWORD));
      const res = await direct.req('/v2/team/replicated/manifests/v1', { headers: { accept: image.mediaType } });
      expect(res.status, name).toBe(200);
      expect(res.header('docker-content-digest')).toBe(image.manifest.digest);
    }
  });

  it('keeps serving both hosts when the first replica of each stops', async () => {
    await t.stack.stopReplica('registry-1');
    await t.stack.stopReplica('registry-cache-1');
    for (let i = 0; i < 5; i++) {
      const res = await t.dcr.req('/v2/team/replicated/tags/list');
      expect(res.status, `attempt ${i}`).toBe(200);
      expect(res.json().tags).toEqual(['v1']);
    }
    const manifest = await t.mir.req('/v2/library/base/manifests/2.0', { headers: { ...t.origin, accept: t.upstreamImage.mediaType } });
    expect(manifest.status, manifest.text).toBe(200);
    expect(sha256(manifest.body)).toBe(t.upstreamImage.manifest.digest);
  });
});

describe('local twin with an access policy: token auth on the private host, through Caddy', () => {
  const t = useTwin({
    tmpPrefix: 'rs-twin-access-',
    tag: '3.0',
    content: 'from the upstream, with a policy on dcr\n',
    stack: {
      stackConfig: {
        docker: { bcryptCost: 4 },
        access: {
          groups: { team: [USER] },
          repositories: [
            { pattern: 'team/**', groups: { team: ['pull', 'push'] } },
            { pattern: 'public/**', anonymous: ['pull'], groups: { team: ['pull', 'push'] } },
          ],
        },
      },
    },
  });

  it('challenges for a token at its own public URL, and the policy decides', async () => {
    const probe = await new RegistryClient(t.stack.privateUrl).req('/v2/');
    expect(probe.status).toBe(401);
    const challenge = parseChallenge(probe.header('www-authenticate'));
    expect(challenge).toMatchObject({ scheme: 'Bearer', params: { realm: `${t.stack.privateUrl}/auth/token` } });

    const team = new TokenClient(t.stack.privateUrl, basicAuth(USER, PASSWORD));
    const image = buildImage({ files: [{ 'app/team.txt': 'team only\n' }] });
    await team.pushImage('team/app', 'v1', image);
    await team.pushImage('public/app', 'v1', image);
    const anonymous = new TokenClient(t.stack.privateUrl);
    expect((await anonymous.req('/v2/public/app/manifests/v1', { headers: { accept: image.mediaType } })).status).toBe(200);
    expect((await anonymous.req('/v2/team/app/manifests/v1', { headers: { accept: image.mediaType } })).status).toBe(401);
    // The mirror is not under the policy: it pulls through as before.
    const manifest = await t.mir.req('/v2/library/base/manifests/3.0', { headers: { ...t.origin, accept: t.upstreamImage.mediaType } });
    expect(manifest.status, manifest.text).toBe(200);
  });
});
