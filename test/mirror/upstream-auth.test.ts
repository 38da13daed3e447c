// The mirror against real upstream registries (distribution 2.8.2): with no
// auth, with htpasswd (credentials from the config and from distribution's
// REGISTRY_PROXY_USERNAME/PASSWORD environment variables), and behind a
// Docker-style token server (Bearer challenge, /token?service=&scope=).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { errorCodes, RegistryClient } from '../helpers/client.ts';
import { fetchManifest, verifyPull } from '../helpers/clients.ts';
import { cachedBlob, cachedTag, type LocalMirror, type Mirror, startMirror, startMirrorProcess } from '../helpers/mirror/mirror.ts';
import { FrontProxy } from '../helpers/mirror/front-proxy.ts';
import { FakeUpstream } from '../helpers/mirror/upstream.ts';
import { sleep } from '../helpers/process.ts';
import { buildImage, type Image } from '../helpers/oci.ts';
import { silentLogger } from '../../server/src/log/logger.ts';
import { Metrics } from '../../server/src/ops/metrics.ts';
import { UpstreamClient } from '../../server/src/proxy/upstream-client.ts';

const UP_USER = 'upuser';
const UP_PASS = 'up-pass-Zq81';
const TOKEN_USER = 'tokuser';
const TOKEN_PASS = 'tok-pass-Yx42';

function allBlobs(image: Image) {
  return [image.config, ...image.layers];
}

describe('mirror: upstream authentication', () => {
  let plain: FakeUpstream;
  let basic: FakeUpstream;
  let behindTokens: FakeUpstream;
  let anonTokens: FrontProxy;
  let credTokens: FrontProxy;
  let shortTokens: FrontProxy;
  let redirecting: FrontProxy;
  let cdn: FrontProxy;
  const mirrors: Mirror[] = [];
  const image = buildImage({ files: [{ 'a.txt': 'layer one\n' }, { 'b.txt': 'layer two\n' }] });
  const other = buildImage();

  beforeAll(async () => {
    [plain, basic, behindTokens] = await Promise.all([
      FakeUpstream.start(),
      FakeUpstream.start({ users: { [UP_USER]: UP_PASS } }),
      FakeUpstream.start(),
    ]);
    for (const up of [plain, basic, behindTokens]) {
      await up.pushImage('team/app', 'v1', image);
      await up.pushImage('team/other', 'v1', other);
    }
    anonTokens = await FrontProxy.start({ target: behindTokens.url, tokenAuth: {} });
    credTokens = await FrontProxy.start({ target: behindTokens.url, tokenAuth: { users: { [TOKEN_USER]: TOKEN_PASS } } });
    shortTokens = await FrontProxy.start({ target: behindTokens.url, tokenAuth: { expiresIn: 1 } });
    // Docker Hub's shape: token-protected registry that redirects blob GETs to a CDN on another origin.
    cdn = await FrontProxy.start({ target: behindTokens.url });
    redirecting = await FrontProxy.start({ target: behindTokens.url, tokenAuth: {} });
    redirecting.redirectBlobsTo = cdn.url;
  });

  afterAll(async () => {
    await Promise.all(mirrors.map((m) => m.stop()));
    await Promise.all([anonTokens?.stop(), credTokens?.stop(), shortTokens?.stop(), redirecting?.stop(), cdn?.stop()]);
    await Promise.all([plain?.dispose(), basic?.dispose(), behindTokens?.dispose()]);
  });

  async function mirror(options: Parameters<typeof startMirror>[0]): Promise<LocalMirror> {
    const m = await startMirror(options);
    mirrors.push(m);
    return m;
  }

  it('pulls through an upstream with no auth, caches every blob once, serves repeats from the cache', async () => {
    const m = await mirror({ upstreams: [{ host: 'plain.test', url: plain.url }] });
    const first = await verifyPull(m.url, undefined, 'team/app', 'v1');
    expect(first.digest).toBe(image.manifest.digest);
    expect(first.blobs.sort()).toEqual(allBlobs(image).map((b) => b.digest).sort());
    // The only upstream is the default: the name is cached under its host.
    await m.settled();
    expect(cachedTag(m.dataDir, 'plain.test/team/app', 'v1')).toBe(image.manifest.digest);
    for (const b of allBlobs(image)) expect(cachedBlob(m.dataDir, b.digest)?.equals(b.data)).toBe(true);

    const before = await plain.count('GET', /\/blobs\//);
    const second = await verifyPull(m.url, undefined, 'team/app', 'v1');
    expect(second.digest).toBe(image.manifest.digest);
    expect(await plain.count('GET', /\/blobs\//)).toBe(before);
    // Each blob was fetched from the upstream exactly once over both pulls.
    for (const b of allBlobs(image)) expect(plain.requests('GET', `/v2/team/app/blobs/${b.digest}`)).toHaveLength(1);
  });

  it('authenticates to an htpasswd upstream with the credentials of its proxy.upstreams entry', async () => {
    const m = await mirror({ upstreams: [{ host: 'basic.test', url: basic.url, username: UP_USER, password: UP_PASS }] });
    const pulled = await verifyPull(m.url, undefined, 'team/app', 'v1');
    expect(pulled.digest).toBe(image.manifest.digest);
    expect(await basic.count('GET', `/v2/team/app/manifests/v1`)).toBeGreaterThanOrEqual(1);
  });

  it('answers a clean error, and caches nothing, when the htpasswd upstream refuses it', async () => {
    const none = await mirror({ upstreams: [{ host: 'basic.test', url: basic.url }] });
    const wrong = await mirror({ upstreams: [{ host: 'basic.test', url: basic.url, username: UP_USER, password: 'wrong' }] });
    for (const m of [none, wrong]) {
      const c = new RegistryClient(m.url);
      const res = await c.req('/v2/team/app/manifests/v1');
      // 503 UNAVAILABLE, not 401: the client is not told to log in to the mirror (it has no auth of its own).
      expect(res.status).toBe(503);
      expect(errorCodes(res)).toEqual(['UNAVAILABLE']);
      expect(cachedTag(m.dataDir, 'basic.test/team/app', 'v1')).toBeUndefined();
        const blob = await c.req(`/v2/team/app/blobs/${image.layers[0].digest}`);
      expect(blob.status).toBe(503);
      expect(cachedBlob(m.dataDir, image.layers[0].digest)).toBeUndefined();
    }
  });

  it("takes distribution's proxy.remoteurl with REGISTRY_PROXY_USERNAME/PASSWORD from the environment, and never logs the password", async () => {
    const m = await startMirrorProcess({
      proxy: { remoteurl: basic.url },
      env: { REGISTRY_PROXY_USERNAME: UP_USER, REGISTRY_PROXY_PASSWORD: UP_PASS },
    });
    mirrors.push(m);
    const pulled = await verifyPull(m.url, undefined, 'team/app', 'v1');
    expect(pulled.digest).toBe(image.manifest.digest);
    // remoteurl's upstream is named by its host:port (':' → '_' in cache names). The tag is stored
    // a moment after the manifest was answered (another process: polled).
    await expect.poll(() => cachedTag(m.dataDir, `${basic.host.replace(':', '_')}/team/app`, 'v1'), { timeout: 10_000 }).toBe(image.manifest.digest);
    expect(m.output.toString()).not.toContain(UP_PASS);
    expect(m.output.toString()).not.toContain(Buffer.from(`${UP_USER}:${UP_PASS}`).toString('base64'));
  });

  it('follows the Bearer token flow: one anonymous token per repository scope, reused across requests and pulls', async () => {
    const m = await mirror({ upstreams: [{ host: 'token.test', url: anonTokens.url }] });
    const first = await verifyPull(m.url, undefined, 'team/app', 'v1');
    expect(first.digest).toBe(image.manifest.digest);
    // One challenge taught the client the realm; one token served the manifest and all 3 blobs.
    expect(anonTokens.challenges).toBe(1);
    expect(anonTokens.tokenRequests).toEqual([
      { service: 'test-registry', scopes: ['repository:team/app:pull'], user: undefined, granted: true },
    ]);
    // Every registry request that reached the upstream carried a valid token.
    expect(anonTokens.forwarded.map((f) => f.status).every((s) => s === 200)).toBe(true);
    expect(anonTokens.forwarded.filter((f) => f.path.includes('/blobs/'))).toHaveLength(3);

    // A second pull by tag (revalidated with a HEAD) reuses the cached token.
    await verifyPull(m.url, undefined, 'team/app', 'v1');
    expect(anonTokens.forwarded.filter((f) => f.method === 'HEAD' && f.path === '/v2/team/app/manifests/v1')).toHaveLength(1);
    expect(anonTokens.tokenRequests).toHaveLength(1);

    // Another repository needs a token of its own scope, fetched without another challenge.
    const second = await verifyPull(m.url, undefined, 'team/other', 'v1');
    expect(second.digest).toBe(other.manifest.digest);
    expect(anonTokens.tokenRequests.map((t) => t.scopes)).toEqual([['repository:team/app:pull'], ['repository:team/other:pull']]);
    expect(anonTokens.challenges).toBe(1);
  });

  it('sends the upstream credentials to the token endpoint, and fails cleanly without them', async () => {
    const withCreds = await mirror({
      upstreams: [{ host: 'token.test', url: credTokens.url, username: TOKEN_USER, password: TOKEN_PASS }],
    });
    const pulled = await verifyPull(withCreds.url, undefined, 'team/app', 'v1');
    expect(pulled.digest).toBe(image.manifest.digest);
    expect(credTokens.tokenRequests.filter((t) => t.granted)).toEqual([
      { service: 'test-registry', scopes: ['repository:team/app:pull'], user: TOKEN_USER, granted: true },
    ]);

    const without = await mirror({ upstreams: [{ host: 'token.test', url: credTokens.url }] });
    const res = await fetchManifest(without.url, undefined, 'team/app', 'v1');
    expect(res.status).toBe(503);
    expect(res.json?.errors?.[0]?.code).toBe('UNAVAILABLE');
    expect(cachedTag(without.dataDir, 'token.test/team/app', 'v1')).toBeUndefined();
    expect(credTokens.tokenRequests.filter((t) => !t.granted).length).toBeGreaterThanOrEqual(1);
  });

  it('fetches a new token when the upstream rejects an expired one', async () => {
    const m = await mirror({ upstreams: [{ host: 'token.test', url: shortTokens.url }] });
    expect((await verifyPull(m.url, undefined, 'team/app', 'v1')).digest).toBe(image.manifest.digest);
    expect(shortTokens.tokenRequests).toHaveLength(1);
    // The token (expires_in: 1) runs out; the mirror's copy is rejected with a fresh challenge.
    await sleep(1500);
    expect((await verifyPull(m.url, undefined, 'team/app', 'v1')).digest).toBe(image.manifest.digest);
    expect(shortTokens.tokenRequests.map((t) => t.granted)).toEqual([true, true]);
    expect(shortTokens.challenges).toBe(2);
  });

  it("follows blob redirects to another origin (a CDN) without sending the upstream's token there", async () => {
    const m = await mirror({ upstreams: [{ host: 'token.test', url: redirecting.url }] });
    const pulled = await verifyPull(m.url, undefined, 'team/app', 'v1');
    expect(pulled.digest).toBe(image.manifest.digest);
    // All three blobs were redirected (the request carrying the token), and fetched from the CDN without it.
    expect(redirecting.redirected).toHaveLength(3);
    expect(redirecting.redirected.every((r) => r.authorization)).toBe(true);
    const fromCdn = cdn.forwarded.filter((f) => f.path.includes('/blobs/'));
    expect(fromCdn.map((f) => [f.status, f.authorization])).toEqual([
      [200, false],
      [200, false],
      [200, false],
    ]);
    await m.settled();
    for (const b of allBlobs(image)) expect(cachedBlob(m.dataDir, b.digest)?.equals(b.data)).toBe(true);
  });
});

describe('mirror: the upstream token cache', () => {
  let upstream: FakeUpstream;
  let tokens: FrontProxy;

  beforeAll(async () => {
    upstream = await FakeUpstream.start();
    tokens = await FrontProxy.start({ target: upstream.url, tokenAuth: {} });
  });

  afterAll(async () => {
    await tokens?.stop();
    await upstream?.dispose();
  });

  it('stays at its bound for many made-up repository names, keeps the recent ones, and a gauge reports its size', async () => {
    const client = new UpstreamClient(
      { host: 'tokens.test', url: tokens.url, prefix: 'tokens.test' },
      { logger: silentLogger, maxTokens: 8, retries: 0 },
    );
    const metrics = new Metrics(() => [client]);
    try {
      const names = Array.from({ length: 60 }, (_, i) => `made-up/name-${i}`);
      for (const name of names) {
        await expect(client.headManifest(name, 'latest', 0)).rejects.toMatchObject({ code: 'MANIFEST_UNKNOWN' });
      }
      expect(tokens.tokenRequests.length).toBe(names.length);
      expect(client.tokenCacheSize).toBe(8);
      const scraped = await metrics.registry.metrics();
      expect(scraped).toMatch(/^registry_upstream_token_cache_entries\{upstream="tokens\.test"\} 8$/m);

      // The most recently used names keep their tokens; the oldest were evicted.
      const before = tokens.tokenRequests.length;
      await expect(client.headManifest(names.at(-1)!, 'latest', 0)).rejects.toMatchObject({ code: 'MANIFEST_UNKNOWN' });
      expect(tokens.tokenRequests.length).toBe(before);
      await expect(client.headManifest(names[0], 'latest', 0)).rejects.toMatchObject({ code: 'MANIFEST_UNKNOWN' });
      expect(tokens.tokenRequests.length).toBe(before + 1);
      expect(client.tokenCacheSize).toBe(8);
    } finally {
      await client.close();
    }
  });
});
