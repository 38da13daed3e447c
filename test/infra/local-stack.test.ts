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

const USER = 'tester';
const PASSWORD = 'tester-password-1';

describe('local twin: Caddy over TLS in front of the private registry and the mirror', () => {
  let dir: string;
  let stack: LocalStack;
  let upstream: TestServer;
  let upstreamImage: Image;
  let previousDispatcher: Dispatcher;
  let dcr: RegistryClient;
  let mir: RegistryClient;
  let origin: Record<string, string>;

  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'rs-twin-'));
    // The mirror's upstream: a registry on loopback holding one image.
    upstream = await startTestServer({ anonymousPull: true });
    upstreamImage = buildImage({ files: [{ 'etc/upstream.txt': 'from the upstream\n' }] });
    await new RegistryClient(upstream.url, upstream.auth).pushImage('library/base', '1.0', upstreamImage);
    const upstreamHost = new URL(upstream.url).host;

    stack = await startLocalStack({
      dir,
      users: { [USER]: PASSWORD },
      upstreams: [{ host: upstreamHost, url: upstream.url }],
      mirrorDefaultHost: upstreamHost,
      stackConfig: { docker: { bcryptCost: 4 } },
    });
    previousDispatcher = getGlobalDispatcher();
    // The test clients use undici's global dispatcher: trust Caddy's CA, resolve *.localhost to loopback.
    setGlobalDispatcher(stack.dispatcher);
    dcr = new RegistryClient(stack.privateUrl, basicAuth(USER, PASSWORD));
    mir = new RegistryClient(stack.mirrorUrl);
    origin = { [stack.originHeader.name]: stack.originHeader.value };
  });

  afterAll(async () => {
    if (previousDispatcher) setGlobalDispatcher(previousDispatcher);
    await stack?.stop();
    await upstream?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('serves both hosts with certificates from Caddy\'s local CA, on the rendered Caddyfile', async () => {
    expect(stack.privateUrl).toMatch(/^https:\/\/dcr\.localhost:\d+$/);
    expect(stack.mirrorUrl).toMatch(/^https:\/\/mir\.localhost:\d+$/);
    expect(stack.caRoot).toContain('BEGIN CERTIFICATE');
    const res = await dcr.withAuth(undefined).req('/v2/');
    expect(res.status).toBe(401);
    expect(res.header('www-authenticate')).toContain('Basic');
    expect((await dcr.req('/v2/')).status).toBe(200);
  });

  it('pushes an image to the private host over TLS and pulls it back byte for byte', async () => {
    const image = buildImage({ files: [{ 'app/hello.txt': 'hello through caddy\n' }, { 'app/big.bin': randomBlob(4 * 1024 * 1024).data }] });
    await dcr.pushImage('team/app', 'v1', image);

    const manifest = await dcr.req('/v2/team/app/manifests/v1', { headers: { accept: image.mediaType } });
    expect(manifest.status).toBe(200);
    expect(manifest.header('docker-content-digest')).toBe(image.manifest.digest);
    expect(sha256(manifest.body)).toBe(image.manifest.digest);
    for (const blob of [image.config, ...image.layers]) {
      const res = await dcr.req(`/v2/team/app/blobs/${blob.digest}`);
      expect(res.status).toBe(200);
      expect(sha256(res.body)).toBe(blob.digest);
    }
    const tags = await dcr.req('/v2/team/app/tags/list');
    expect(tags.json()).toEqual({ name: 'team/app', tags: ['v1'] });
  });

  it('refuses a push without credentials on the private host', async () => {
    const res = await dcr.withAuth(undefined).req(`/v2/team/app/blobs/uploads/`, { method: 'POST' });
    expect(res.status).toBe(401);
  });

  it('answers 403 on the mirror host to requests without the origin header', async () => {
    for (const p of ['/v2/', '/v2/library/base/manifests/1.0', `/v2/library/base/blobs/${upstreamImage.config.digest}`]) {
      const res = await mir.req(p);
      expect(res.status, p).toBe(403);
    }
    const wrong = await mir.req('/v2/', { headers: { [stack.originHeader.name]: 'not-the-secret' } });
    expect(wrong.status).toBe(403);
  });

  it('refuses pushes on the mirror host, even with the origin header', async () => {
    const blob = randomBlob(1024);
    const post = await mir.req(`/v2/library/base/blobs/uploads/?digest=${blob.digest}`, {
      method: 'POST',
      headers: { ...origin, 'content-type': 'application/octet-stream' },
      body: blob.data,
    });
    expect(post.status).toBe(405);
    expect(post.json().errors[0].code).toBe('UNSUPPORTED');
    const put = await mir.req('/v2/library/base/manifests/evil', {
      method: 'PUT',
      headers: { ...origin, 'content-type': MT.ociManifest },
      body: upstreamImage.manifest.data,
    });
    expect(put.status).toBe(405);
    const del = await mir.req(`/v2/library/base/manifests/${upstreamImage.manifest.digest}`, { method: 'DELETE', headers: origin });
    expect(del.status).toBe(405);
    // nothing reached the upstream either
    const upstreamTags = await new RegistryClient(upstream.url).req('/v2/library/base/tags/list');
    expect(upstreamTags.json().tags).toEqual(['1.0']);
  });

  // Needs mirror mode in the server (proxy section): pulls through mir from the loopback upstream.
  it('pulls through the mirror host with the origin header (mirror mode)', async () => {
    const manifest = await mir.req('/v2/library/base/manifests/1.0', { headers: { ...origin, accept: upstreamImage.mediaType } });
    expect(manifest.status, manifest.text).toBe(200);
    expect(sha256(manifest.body)).toBe(upstreamImage.manifest.digest);
    for (const blob of [upstreamImage.config, ...upstreamImage.layers]) {
      const res = await mir.req(`/v2/library/base/blobs/${blob.digest}`, { headers: origin });
      expect(res.status).toBe(200);
      expect(sha256(res.body)).toBe(blob.digest);
    }
    // containerd's form: ?ns=<upstream host>
    const ns = new URL(upstream.url).host;
    const viaNs = await mir.req(`/v2/library/base/manifests/${upstreamImage.manifest.digest}?ns=${ns}`, {
      method: 'HEAD',
      headers: { ...origin, accept: upstreamImage.mediaType },
    });
    expect(viaNs.status).toBe(200);
    expect(viaNs.header('docker-content-digest')).toBe(upstreamImage.manifest.digest);
  });
});

describe('local twin with --replicas 2: Caddy balances over two processes per registry sharing data and a local Redis', () => {
  let dir: string;
  let stack: LocalStack;
  let upstream: TestServer;
  let upstreamImage: Image;
  let previousDispatcher: Dispatcher;
  let dcr: RegistryClient;
  let mir: RegistryClient;
  let origin: Record<string, string>;

  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'rs-twin-replicas-'));
    upstream = await startTestServer({ anonymousPull: true });
    upstreamImage = buildImage({ files: [{ 'etc/upstream.txt': 'from the upstream, twice\n' }] });
    await new RegistryClient(upstream.url, upstream.auth).pushImage('library/base', '2.0', upstreamImage);
    const upstreamHost = new URL(upstream.url).host;
    stack = await startLocalStack({
      dir,
      users: { [USER]: PASSWORD },
      upstreams: [{ host: upstreamHost, url: upstream.url }],
      mirrorDefaultHost: upstreamHost,
      replicas: 2,
      // "first": every request to the first healthy replica, so the failover below is deterministic
      stackConfig: { docker: { bcryptCost: 4 }, loadBalancer: { policy: 'first', healthInterval: '1s', failDuration: '10s' } },
    });
    previousDispatcher = getGlobalDispatcher();
    setGlobalDispatcher(stack.dispatcher);
    dcr = new RegistryClient(stack.privateUrl, basicAuth(USER, PASSWORD));
    mir = new RegistryClient(stack.mirrorUrl);
    origin = { [stack.originHeader.name]: stack.originHeader.value };
  });

  afterAll(async () => {
    if (previousDispatcher) setGlobalDispatcher(previousDispatcher);
    await stack?.stop();
    await upstream?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('renders both replicas of each host into the Caddyfile, and a redis section into each config', () => {
    expect(Object.keys(stack.replicas.private)).toEqual(['registry-1', 'registry-2']);
    expect(Object.keys(stack.replicas.mirror)).toEqual(['registry-cache-1', 'registry-cache-2']);
    const caddyfile = readFileSync(stack.files.caddyfile, 'utf8');
    expect(caddyfile).toContain(`reverse_proxy ${Object.values(stack.replicas.private).map((u) => new URL(u).host).join(' ')} {`);
    expect(caddyfile.match(/\tlb_policy first\n/g)).toHaveLength(2);
    expect(caddyfile.match(/\thealth_uri \/healthz\n/g)).toHaveLength(2);
    for (const name of ['registry-2', 'registry-cache-2']) {
      const config = loadConfigText(readFileSync(path.join(stack.dir, `${name}.yml`), 'utf8'), {}).config;
      expect(config.redis).toMatchObject({ addr: stack.redisAddr, db: name.startsWith('registry-cache') ? 1 : 0 });
      expect(config.storage.filesystem?.rootdirectory).toBe(path.join(stack.dir, name.replace(/-\d$/, ''), 'data'));
    }
    expect(statSync(stack.files.redisConf!).mode & 0o777).toBe(0o600);
    // the rendered redis.conf runs, with its password: the container healthcheck's command answers
    const port = stack.redisAddr!.split(':')[1];
    const password = readFileSync(path.join(stack.dir, 'redis.secret'), 'utf8').trim();
    const ping = spawnSync('sh', ['-c', `redis-cli -p ${port} ping | grep -q PONG`], { env: { ...process.env, REDISCLI_AUTH: password } });
    expect(ping.status).toBe(0);
  });

  it('a push through Caddy is readable from both replicas (they share the data directory)', async () => {
    const image = buildImage({ files: [{ 'app/replicated.txt': 'on every replica\n' }] });
    await dcr.pushImage('team/replicated', 'v1', image);
    for (const [name, url] of Object.entries(stack.replicas.private)) {
      const direct = new RegistryClient(url, basicAuth(USER, PASSWORD));
      const res = await direct.req('/v2/team/replicated/manifests/v1', { headers: { accept: image.mediaType } });
      expect(res.status, name).toBe(200);
      expect(res.header('docker-content-digest')).toBe(image.manifest.digest);
    }
  });

  it('keeps serving both hosts when the first replica of each stops', async () => {
    await stack.stopReplica('registry-1');
    await stack.stopReplica('registry-cache-1');
    for (let i = 0; i < 5; i++) {
      const res = await dcr.req('/v2/team/replicated/tags/list');
      expect(res.status, `attempt ${i}`).toBe(200);
      expect(res.json().tags).toEqual(['v1']);
    }
    const manifest = await mir.req('/v2/library/base/manifests/2.0', { headers: { ...origin, accept: upstreamImage.mediaType } });
    expect(manifest.status, manifest.text).toBe(200);
    expect(sha256(manifest.body)).toBe(upstreamImage.manifest.digest);
  });
});
