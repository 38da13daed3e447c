// The admin listener: Prometheus metrics after real traffic, liveness and
// readiness (on the admin and the main listener), and the admin token.
import { statSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RegistryClient } from '../helpers/client.ts';
import { freePort } from '../helpers/process.ts';
import { dataDir, startTestServer, type TestServer } from '../helpers/server.ts';
import { composeImage, gzLayer, pullAndVerify, pushImageLikeClient } from '../helpers/ops/images.ts';
import { adminReq, metric, startMirrorPair, type MirrorPair } from '../helpers/ops/servers.ts';
import { blobFile, storedBlobs } from '../helpers/ops/store.ts';

const TOKEN = 'admin-token-for-tests';

describe('private registry: metrics, health, admin token', () => {
  let server: TestServer;
  let client: RegistryClient;
  const image = composeImage([gzLayer(3000), gzLayer(5000)]);

  beforeAll(async () => {
    server = await startTestServer({ extra: { admin: { addr: '127.0.0.1:0', token: TOKEN } } });
    client = new RegistryClient(server.url, server.auth);
    await client.pushImage('m/app', '1', image);
    expect((await client.req('/v2/m/app/manifests/1')).status).toBe(200);
    expect((await client.req('/v2/m/app/manifests/nope')).status).toBe(404);
    expect((await client.req(`/v2/m/app/blobs/${image.layers[1].digest}`)).status).toBe(200);
    expect((await client.withAuth(undefined).req('/v2/')).status).toBe(401);
  });
  afterAll(() => server.stop());

  it('counts requests by route, method and status, with latencies and bytes', async () => {
    const res = await adminReq(server, 'GET', '/metrics');
    expect(res.status).toBe(200);
    expect(String(res.headers['content-type'])).toMatch(/^text\/plain/);
    // A response is counted once it has been written: the client may have its last byte a moment before.
    const text = await metricsOnce(server, (t) => metric(t, 'registry_http_sent_bytes_total', { route: 'blob' }) !== undefined);
    expect(metric(text, 'registry_http_requests_total', { route: 'manifest', method: 'GET', status: '200' })).toBe(1);
    expect(metric(text, 'registry_http_requests_total', { route: 'manifest', method: 'GET', status: '404' })).toBe(1);
    expect(metric(text, 'registry_http_requests_total', { route: 'manifest', method: 'PUT', status: '201' })).toBe(1);
    expect(metric(text, 'registry_http_requests_total', { route: 'uploads', method: 'POST', status: '201' })).toBe(3);
    expect(metric(text, 'registry_http_requests_total', { route: 'base', method: 'GET', status: '401' })).toBe(1);
    expect(metric(text, 'registry_http_request_duration_seconds_count', { route: 'manifest', method: 'GET' })).toBe(2);
    expect(metric(text, 'registry_http_request_duration_seconds_bucket', { route: 'manifest', method: 'GET', le: '+Inf' })).toBe(2);
    const uploaded = image.config.size + image.layers[0].size + image.layers[1].size;
    expect(metric(text, 'registry_http_received_bytes_total', { route: 'uploads' })).toBe(uploaded);
    expect(metric(text, 'registry_http_received_bytes_total', { route: 'manifest' })).toBe(image.manifest.size);
    expect(metric(text, 'registry_http_sent_bytes_total', { route: 'blob' })).toBe(image.layers[1].size);
    expect(metric(text, 'registry_http_sent_bytes_total', { route: 'manifest' })).toBe(image.manifest.size);
    // Process metrics come along, under the same prefix.
    expect(metric(text, 'registry_process_resident_memory_bytes')).toBeGreaterThan(0);
  });

  it('records maintenance runs and the stored bytes after a GC', async () => {
    const before = (await adminReq(server, 'GET', '/metrics')).text;
    expect(metric(before, 'registry_maintenance_runs_total', { kind: 'gc', result: 'ok' })).toBeUndefined();
    const gc = await adminReq(server, 'POST', '/admin/gc', TOKEN);
    expect(gc.status).toBe(200);
    const after = (await adminReq(server, 'GET', '/metrics')).text;
    expect(metric(after, 'registry_maintenance_runs_total', { kind: 'gc', result: 'ok' })).toBe(1);
    const stored = [...storedBlobs(dataDir(server))].reduce((n, d) => n + statSync(blobFile(dataDir(server), d)).size, 0);
    expect(metric(after, 'registry_storage_bytes')).toBe(stored);
    expect(metric(after, 'registry_maintenance_freed_bytes_total', { kind: 'gc' })).toBe(0);
    // A dry run counts as a run but leaves the freed-bytes counter alone.
    await adminReq(server, 'POST', '/admin/gc?dryrun=1', TOKEN);
    expect(metric((await adminReq(server, 'GET', '/metrics')).text, 'registry_maintenance_runs_total', { kind: 'gc', result: 'ok' })).toBe(2);
  });

  it('the admin endpoints that change things need the token', async () => {
    for (const path of ['/admin/gc', '/admin/prune']) {
      const none = await adminReq(server, 'POST', path);
      expect(none.status, path).toBe(401);
      expect(String(none.headers['www-authenticate'])).toMatch(/^Bearer /);
      expect((await adminReq(server, 'POST', path, 'wrong-token')).status, path).toBe(401);
    }
    expect((await adminReq(server, 'POST', '/admin/gc?dryrun=1', TOKEN)).status).toBe(200);
    // Reading is open on the (loopback) admin listener.
    expect((await adminReq(server, 'GET', '/metrics')).status).toBe(200);
    expect((await adminReq(server, 'GET', '/nothing-here')).status).toBe(404);
  });

  it('healthz and readyz answer on both listeners', async () => {
    for (const res of [await adminReq(server, 'GET', '/healthz'), await client.withAuth(undefined).req('/healthz')]) {
      expect(res.status).toBe(200);
      expect(JSON.parse(res.text)).toEqual({ status: 'ok' });
    }
    for (const res of [await adminReq(server, 'GET', '/readyz'), await client.withAuth(undefined).req('/readyz')]) {
      expect(res.status).toBe(200);
      expect(JSON.parse(res.text)).toEqual({ status: 'ready', checks: { storage: 'writable' } });
    }
  });
});

describe('mirror: cache and upstream metrics, readiness follows the upstream', () => {
  let pair: MirrorPair;
  beforeAll(async () => {
    pair = await startMirrorPair({ admin: { addr: '127.0.0.1:0' } });
  });
  afterAll(() => pair.stop());

  it('counts blob cache misses then hits, and upstream requests', async () => {
    const image = composeImage([gzLayer(2000), gzLayer(2500)]);
    await pushImageLikeClient(new RegistryClient(pair.upstream.url, pair.upstream.auth), 'lib/app', '1', image);
    const mirror = new RegistryClient(pair.mirror.url);
    await pullAndVerify(mirror, 'lib/app', '1');
    let text = await metricsOnce(pair.mirror, (t) => metric(t, 'registry_cache_requests_total', { kind: 'blob', result: 'miss' }) === 3);
    expect(metric(text, 'registry_cache_requests_total', { kind: 'blob', result: 'miss' })).toBe(3);
    expect(metric(text, 'registry_cache_requests_total', { kind: 'blob', result: 'hit' })).toBeUndefined();
    const upstreamRequests = metric(text, 'registry_upstream_requests', { upstream: pair.upstreamHost })!;
    expect(upstreamRequests).toBeGreaterThanOrEqual(4); // manifest + 3 blobs (+ the auth challenge)
    expect(metric(text, 'registry_upstream_errors', { upstream: pair.upstreamHost })).toBe(0);

    // (Once the first pull's fills are committed: a request that joins a fill still committing counts as a miss.)
    await pair.mirror.mirror!.settled();
    await pullAndVerify(mirror, 'lib/app', '1');
    text = await metricsOnce(pair.mirror, (t) => metric(t, 'registry_cache_requests_total', { kind: 'blob', result: 'hit' }) === 3);
    expect(metric(text, 'registry_cache_requests_total', { kind: 'blob', result: 'miss' })).toBe(3);
    expect(metric(text, 'registry_cache_requests_total', { kind: 'blob', result: 'hit' })).toBe(3);
    // The second pull asked the upstream only to revalidate the tag (one HEAD), no blob.
    expect(metric(text, 'registry_upstream_requests', { upstream: pair.upstreamHost })).toBe(upstreamRequests + 1);
  });

  it('is ready while the upstream answers', async () => {
    const res = await adminReq(pair.mirror, 'GET', '/readyz');
    expect(res.status).toBe(200);
    expect(res.json().checks).toEqual({ storage: 'writable', [`upstream:${pair.upstreamHost}`]: 'reachable' });
  });

  it('is alive but not ready when the upstream cannot be reached', async () => {
    const port = await freePort();
    const host = `127.0.0.1:${port}`;
    const mirror = await startTestServer({
      users: {},
      extra: { admin: { addr: '127.0.0.1:0' }, proxy: { upstreams: [{ host, url: `http://${host}` }] } },
    });
    try {
      for (const res of [await adminReq(mirror, 'GET', '/readyz'), await new RegistryClient(mirror.url).req('/readyz')]) {
        expect(res.status).toBe(503);
        expect(JSON.parse(res.text)).toEqual({ status: 'not ready', checks: { storage: 'writable', [`upstream:${host}`]: 'unreachable' } });
      }
      expect((await adminReq(mirror, 'GET', '/healthz')).status).toBe(200);
      expect((await new RegistryClient(mirror.url).req('/healthz')).status).toBe(200);
    } finally {
      await mirror.stop();
    }
  });
});

/**
 * Scrapes until `ready` holds (or 10 s pass, then returns the last scrape):
 * a request is counted once its response is complete, which can be a moment
 * after the client has read it.
 */
async function metricsOnce(server: { adminUrl?: string }, ready: (text: string) => boolean): Promise<string> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const text = (await adminReq(server, 'GET', '/metrics')).text;
    if (ready(text) || Date.now() > deadline) return text;
    await new Promise((r) => setTimeout(r, 20));
  }
}
