// The registry on the S3 driver, against a real S3 (Ceph RGW): pushes and
// pulls over HTTP (monolithic, chunked in small PATCHes, one long streamed
// PATCH), manifests, tags, referrers, catalog, deletes, online GC, skopeo in
// and out, and memory that stays flat while a 200 MB blob goes in and out.
// What lands in the bucket is checked too: distribution's layout under the
// root directory, and no upload leftovers.
import { createCipheriv, createHash, randomBytes } from 'node:crypto';
import { readFileSync, rmSync } from 'node:fs';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { RegistryClient, requestFollowing } from '../helpers/client.ts';
import { ContainersClients, fetchManifest, listTags, verifyPull } from '../helpers/clients.ts';
import { blobOf, buildArtifact, buildImage, buildIndex, manifestDescriptor, randomBlob, writeOciLayout } from '../helpers/oci.ts';
import { readBlob } from '../helpers/mirror/fetch.ts';
import { adminReq } from '../helpers/ops/servers.ts';
import { createTestBucket, type TestBucket } from '../helpers/s3.ts';
import { makeTempDir, startTestServer, TEST_PASSWORD, TEST_USER, type TestServer } from '../helpers/server.ts';
import { paths } from '../../server/src/storage/paths.ts';
import { parseDigest } from '../../server/src/registry/digest.ts';

const MiB = 1024 * 1024;
const ROOT = 'registry-root';
const V2 = `${ROOT}/docker/registry/v2`;

const sha256 = (data: Uint8Array) => `sha256:${createHash('sha256').update(data).digest('hex')}`;
const blobKey = (digest: string) => `${V2}/blobs/sha256/${digest.slice(7, 9)}/${digest.slice(7)}/data`;

/**
 * `total` pseudo-random bytes (an AES-CTR keystream of `seed`), made 1 MiB at a
 * time as they are read, never held whole; `digest()` once consumed.
 */
function generated(total: number, seed = 'seed'): { stream: Readable; digest: () => string } {
  const hash = createHash('sha256');
  const cipher = keystream(seed);
  const zeros = Buffer.alloc(MiB);
  let left = total;
  const stream = new Readable({
    read() {
      if (left === 0) {
        this.push(null);
        return;
      }
      const chunk = cipher.update(zeros.subarray(0, Math.min(MiB, left)));
      left -= chunk.length;
      hash.update(chunk);
      this.push(chunk);
    },
  });
  return { stream, digest: () => `sha256:${hash.digest('hex')}` };
}

/** Bytes [start, end] of what `generated(…, seed)` produces. */
function generatedSlice(seed: string, start: number, end: number): Buffer {
  const cipher = keystream(seed);
  const zeros = Buffer.alloc(MiB);
  const out: Buffer[] = [];
  for (let at = 0; at <= end; at += MiB) {
    const chunk = cipher.update(zeros);
    if (at + chunk.length > start) out.push(chunk);
  }
  const joined = Buffer.concat(out);
  const first = Math.floor(start / MiB) * MiB;
  return joined.subarray(start - first, end - first + 1);
}

function keystream(seed: string) {
  const key = createHash('sha256').update(seed).digest();
  return createCipheriv('aes-256-ctr', key, Buffer.alloc(16));
}

/** GET a blob, streaming: its digest and size as served. */
async function pullDigest(srv: TestServer, repo: string, digest: string, range?: string) {
  const res = await requestFollowing(`${srv.url}/v2/${repo}/blobs/${digest}`, {
    headers: { authorization: srv.auth!, ...(range ? { range } : {}) },
  });
  const hash = createHash('sha256');
  let size = 0;
  for await (const chunk of res.body) {
    hash.update(chunk as Buffer);
    size += (chunk as Buffer).length;
  }
  return { status: res.statusCode, digest: `sha256:${hash.digest('hex')}`, size };
}

describe('registry on S3 storage (Ceph RGW)', () => {
  let bucket: TestBucket;
  let srv: TestServer;
  /** The same bucket and root, with storage.redirect.disable: blob bytes come through the server. */
  let direct: TestServer;
  let client: RegistryClient;

  beforeAll(async () => {
    bucket = await createTestBucket('registry');
    const s3 = bucket.storageConfig({ rootdirectory: `/${ROOT}`, chunksize: 5 * MiB });
    srv = await startTestServer({
      storageDriver: { s3 },
      extra: { admin: { addr: '127.0.0.1:0' }, gc: { graceperiod: 0 } },
    });
    direct = await startTestServer({ storageDriver: { s3, redirect: { disable: true } } });
    client = new RegistryClient(srv.url, srv.auth);
  });
  afterAll(async () => {
    await srv?.stop();
    await direct?.stop();
    await bucket?.destroy();
  });

  const uploadKeys = async (repo: string) => bucket.keys(`${V2}/repositories/${repo}/_uploads/`);

  async function startUpload(repo: string): Promise<string> {
    const res = await client.req(`/v2/${repo}/blobs/uploads/`, { method: 'POST' });
    expect(res.status).toBe(202);
    return client.resolve(res.header('location')!);
  }

  test('the server runs on the s3 driver', () => {
    expect(srv.registry.driver.name).toBe('s3');
  });

  // First, while the process has not yet held anything big: RSS only ever grows.
  test('a 200 MB blob goes in and out without the process growing by anything like its size', async () => {
    const total = 200 * MiB;
    // Warm up (sockets, code paths), then measure from here.
    await client.pushBlob('team/big', blobOf(randomBytes(6 * MiB)));
    const baseline = process.memoryUsage().rss;
    let peak = baseline;
    const sampler = setInterval(() => {
      peak = Math.max(peak, process.memoryUsage().rss);
    }, 25);
    let ranged: Awaited<ReturnType<typeof pullDigest>>;
    try {
      const gen = generated(total, 'big');
      const url = await startUpload('team/big');
      const patch = await client.req(url, { method: 'PATCH', headers: { 'content-type': 'application/octet-stream' }, body: gen.stream });
      expect(patch.status).toBe(202);
      const digest = gen.digest();
      const next = client.resolve(patch.header('location')!);
      const put = await client.req(`${next}${next.includes('?') ? '&' : '?'}digest=${digest}`, { method: 'PUT' });
      expect(put.status).toBe(201);
      // Through the server (no redirect), so its S3 reader is what streams the bytes.
      expect(await pullDigest(direct, 'team/big', digest)).toEqual({ status: 200, digest, size: total });
      ranged = await pullDigest(direct, 'team/big', digest, `bytes=${100 * MiB}-${150 * MiB - 1}`);
    } finally {
      clearInterval(sampler);
    }
    peak = Math.max(peak, process.memoryUsage().rss);
    // Parts of 5 MiB (two in memory at a time) plus garbage not yet collected: about 50-70 MiB
    // here; a driver that held the blob would grow by 200 MB or more.
    expect(peak - baseline, `RSS grew by ${((peak - baseline) / MiB).toFixed(1)} MiB`).toBeLessThan(100 * MiB);
    expect(ranged.status).toBe(206);
    expect(ranged).toMatchObject({ size: 50 * MiB, digest: sha256(generatedSlice('big', 100 * MiB, 150 * MiB - 1)) });
  });

  test('monolithic push: the blob lands in distribution’s layout under the root directory', async () => {
    const blob = randomBlob(300_000);
    await client.pushBlob('team/mono', blob);
    const keys = await bucket.keys(`${V2}/`);
    expect(keys).toContain(blobKey(blob.digest));
    expect(keys).toContain(`${V2}/repositories/team/mono/_layers/sha256/${blob.digest.slice(7)}/link`);
    expect(await uploadKeys('team/mono')).toEqual([]);
    const head = await client.req(`/v2/team/mono/blobs/${blob.digest}`, { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(head.header('content-length')).toBe(String(blob.size));
    const got = await client.req(`/v2/team/mono/blobs/${blob.digest}`);
    expect(got.status).toBe(200);
    expect(got.body.equals(blob.data)).toBe(true);
  });

  test('storage.redirect (on by default for s3): a blob GET is a 307 to a presigned bucket URL that needs no credentials', async () => {
    const blob = randomBlob(2 * MiB + 7);
    await client.pushBlob('team/redirect', blob);
    const url = `/v2/team/redirect/blobs/${blob.digest}`;

    const res = await client.req(url, { redirect: 'manual' });
    expect(res.status).toBe(307);
    expect(res.header('docker-content-digest')).toBe(blob.digest);
    expect(res.header('cache-control')).toBe('no-store');
    const location = new URL(res.header('location')!);
    expect(`${location.origin}/`).toBe(new URL(bucket.endpoint).origin + '/');
    expect(location.pathname).toBe(`/${bucket.bucket}/${blobKey(blob.digest)}`);
    expect(location.searchParams.get('X-Amz-Expires')).toBe('1200');
    // The presigned URL itself is the credential: no Authorization header, whole blob and ranges.
    const whole = await request(location.toString());
    expect(whole.statusCode).toBe(200);
    expect(Buffer.from(await whole.body.arrayBuffer()).equals(blob.data)).toBe(true);
    const part = await request(location.toString(), { headers: { range: 'bytes=1000-1999' } });
    expect(part.statusCode).toBe(206);
    expect(Buffer.from(await part.body.arrayBuffer()).equals(blob.data.subarray(1000, 2000))).toBe(true);
    // Tampering with the signed key is refused by the storage.
    const forged = new URL(location);
    forged.pathname = forged.pathname.replace(/\/data$/, '/link');
    expect((await request(forged.toString())).statusCode).toBe(403);

    // HEAD is answered by the server itself; unknown blobs and anonymous GETs never get a URL.
    const head = await client.req(url, { method: 'HEAD', redirect: 'manual' });
    expect(head.status).toBe(200);
    expect(head.header('content-length')).toBe(String(blob.size));
    const unknown = await client.req(`/v2/team/redirect/blobs/sha256:${'0'.repeat(64)}`, { redirect: 'manual' });
    expect(unknown.status).toBe(404);
    expect(unknown.json().errors[0].code).toBe('BLOB_UNKNOWN');
    const anonymous = await client.withAuth(undefined).req(url, { redirect: 'manual', headers: {} });
    expect(anonymous.status).toBe(401);
    expect(anonymous.header('location')).toBeUndefined();

    // storage.redirect.disable: the same blob, served by the server.
    const served = await new RegistryClient(direct.url, direct.auth).req(url, { redirect: 'manual' });
    expect(served.status).toBe(200);
    expect(served.body.equals(blob.data)).toBe(true);
  });

  test('chunked push in small PATCHes with Content-Range, status in between, then PUT', async () => {
    const blob = randomBlob(7 * MiB + 12345);
    const url = await startUpload('team/chunked');
    const step = MiB - 1;
    let offset = 0;
    let next = url;
    while (offset < blob.size) {
      const piece = blob.data.subarray(offset, offset + step);
      const res = await client.req(next, {
        method: 'PATCH',
        headers: {
          'content-type': 'application/octet-stream',
          'content-range': `${offset}-${offset + piece.length - 1}`,
          'content-length': String(piece.length),
        },
        body: piece,
      });
      expect(res.status).toBe(202);
      offset += piece.length;
      expect(res.header('range')).toBe(`0-${offset - 1}`);
      next = client.resolve(res.header('location')!);
      const status = await client.req(next);
      expect(status.status).toBe(204);
      expect(status.header('range')).toBe(`0-${offset - 1}`);
    }
    // A chunk that does not start at the offset is refused, and changes nothing.
    const wrong = await client.req(next, {
      method: 'PATCH',
      headers: { 'content-range': '0-9', 'content-length': '10' },
      body: Buffer.alloc(10),
    });
    expect(wrong.status).toBe(416);
    const sep = next.includes('?') ? '&' : '?';
    const put = await client.req(`${next}${sep}digest=${blob.digest}`, { method: 'PUT' });
    expect(put.status).toBe(201);
    const pulled = await pullDigest(srv, 'team/chunked', blob.digest);
    expect(pulled).toEqual({ status: 200, digest: blob.digest, size: blob.size });
    expect(await uploadKeys('team/chunked')).toEqual([]);
    expect(await bucket.keys(blobKey(blob.digest))).toEqual([blobKey(blob.digest)]);
  });

  test('a 60 MB blob in one streamed PATCH (no Content-Length), then byte ranges of it', async () => {
    const total = 60 * 1000 * 1000;
    const gen = generated(total, 'sixty');
    const url = await startUpload('team/stream');
    const patch = await client.req(url, {
      method: 'PATCH',
      headers: { 'content-type': 'application/octet-stream' },
      body: gen.stream,
    });
    expect(patch.status).toBe(202);
    expect(patch.header('range')).toBe(`0-${total - 1}`);
    const digest = gen.digest();
    const next = client.resolve(patch.header('location')!);
    const put = await client.req(`${next}${next.includes('?') ? '&' : '?'}digest=${digest}`, { method: 'PUT' });
    expect(put.status).toBe(201);
    expect(put.header('docker-content-digest')).toBe(digest);
    expect(await pullDigest(srv, 'team/stream', digest)).toEqual({ status: 200, digest, size: total });
    // Ranges: served from the composed object, including across the 5 MiB seams of its parts.
    for (const [start, end] of [
      [0, 99],
      [5 * MiB - 50, 5 * MiB + 49],
      [total - 1000, total - 1],
    ]) {
      const res = await client.req(`/v2/team/stream/blobs/${digest}`, { headers: { range: `bytes=${start}-${end}` } });
      expect(res.status).toBe(206);
      expect(res.body.equals(generatedSlice('sixty', start, end))).toBe(true);
    }
    expect(await uploadKeys('team/stream')).toEqual([]);
  });

  test('manifests, tags, an index, referrers and the catalog', async () => {
    const image = buildImage({ files: [{ 'etc/motd': 'on s3\n' }, { 'bin/tool': randomBytes(200_000) }] });
    await client.pushImage('team/app', 'v1', image);
    await client.pushManifest('team/app', 'v2', image.manifest, image.mediaType);
    const arm = buildImage({ architecture: 'arm64' });
    const index = buildIndex([image, arm]);
    await client.pushIndex('team/app', 'multi', index);

    const pulled = await verifyPull(srv.url, srv.auth, 'team/app', 'v1');
    expect(pulled.digest).toBe(image.manifest.digest);
    expect(pulled.blobs).toEqual([image.config.digest, ...image.layers.map((l) => l.digest)]);
    const multi = await verifyPull(srv.url, srv.auth, 'team/app', 'multi');
    expect(multi.manifests).toEqual([index.index.digest, image.manifest.digest, arm.manifest.digest]);
    expect(await listTags(srv.url, srv.auth, 'team/app')).toEqual(['multi', 'v1', 'v2']);

    const sbom = buildArtifact({ artifactType: 'application/vnd.example.sbom.v1+json', subject: manifestDescriptor(image) });
    await client.pushImage('team/app', sbom.manifest.digest, sbom);
    const referrers = await client.req(`/v2/team/app/referrers/${image.manifest.digest}`);
    expect(referrers.status).toBe(200);
    expect(referrers.json().manifests.map((m: { digest: string }) => m.digest)).toEqual([sbom.manifest.digest]);

    const catalog = await client.req('/v2/_catalog');
    expect(catalog.status).toBe(200);
    // As distribution's catalog: repositories with manifests (a pushed blob alone makes none).
    expect(catalog.json().repositories).toContain('team/app');
    expect(catalog.json().repositories).not.toContain('team/mono');
    const page = await client.req('/v2/_catalog?n=1');
    expect(page.json().repositories).toHaveLength(1);
    // Nothing of the S3 driver's own bookkeeping leaks into names.
    for (const name of catalog.json().repositories as string[]) expect(name).not.toMatch(/(^|\/)\./);
  });

  test('deletes: a tag, a manifest by digest, a blob', async () => {
    const image = buildImage();
    await client.pushImage('team/del', 'a', image);
    await client.pushManifest('team/del', 'b', image.manifest, image.mediaType);
    expect((await client.req('/v2/team/del/manifests/a', { method: 'DELETE' })).status).toBe(202);
    expect(await listTags(srv.url, srv.auth, 'team/del')).toEqual(['b']);
    expect((await client.req(`/v2/team/del/manifests/${image.manifest.digest}`, { method: 'DELETE' })).status).toBe(202);
    expect((await client.req(`/v2/team/del/manifests/${image.manifest.digest}`)).status).toBe(404);
    expect((await client.req('/v2/team/del/manifests/b')).status).toBe(404);
    const layer = image.layers[0].digest;
    expect((await client.req(`/v2/team/del/blobs/${layer}`, { method: 'DELETE' })).status).toBe(202);
    expect((await client.req(`/v2/team/del/blobs/${layer}`)).status).toBe(404);
    expect(await bucket.keys(`${V2}/repositories/team/del/_layers/sha256/${layer.slice(7)}/`)).toEqual([]);
  });

  test('online GC (POST /admin/gc) removes unreferenced blobs from the bucket and keeps the rest', async () => {
    const kept = buildImage({ files: [{ 'kept.txt': `kept ${randomBytes(4).toString('hex')}` }] });
    const dropped = buildImage({ files: [{ 'dropped.txt': `dropped ${randomBytes(4).toString('hex')}` }] });
    await client.pushImage('team/gc', 'kept', kept);
    await client.pushImage('team/gc', 'dropped', dropped);
    const orphan = randomBlob(50_000);
    await client.pushBlob('team/gc', orphan);
    expect((await client.req(`/v2/team/gc/manifests/${dropped.manifest.digest}`, { method: 'DELETE' })).status).toBe(202);

    const res = await adminReq(srv, 'POST', '/admin/gc');
    expect(res.status, res.text).toBe(200);
    expect(res.json().blobsDeleted).toBeGreaterThanOrEqual(4);
    const keys = new Set(await bucket.keys(`${V2}/blobs/`));
    for (const d of [dropped.manifest.digest, dropped.config.digest, dropped.layers[0].digest, orphan.digest]) {
      expect(keys.has(blobKey(d)), d).toBe(false);
    }
    for (const d of [kept.manifest.digest, kept.config.digest, kept.layers[0].digest]) expect(keys.has(blobKey(d)), d).toBe(true);
    // No orphaned bookkeeping of deleted blobs either.
    for (const k of keys) expect(k).toMatch(/\/data$/);
    expect((await verifyPull(srv.url, srv.auth, 'team/gc', 'kept')).digest).toBe(kept.manifest.digest);
    expect((await client.req(`/v2/team/gc/blobs/${orphan.digest}`)).status).toBe(404);
  });

  test('skopeo copies an image in and back out', async () => {
    const work = makeTempDir('rs-s3-skopeo-');
    try {
      const host = `127.0.0.1:${srv.port}`;
      const cli = new ContainersClients([host], path.join(work, 'cli'));
      const creds = `${TEST_USER}:${TEST_PASSWORD}`;
      const image = buildImage({ files: [{ 'etc/app.conf': 'answer=42\n' }, { 'bin/app': randomBytes(16 * MiB) }] });
      const src = path.join(work, 'src');
      writeOciLayout(src, 'v1', image);
      await cli.skopeo(['copy', '--dest-tls-verify=false', '--dest-creds', creds, `oci:${src}:v1`, `docker://${host}/team/skopeo:v1`]);
      const raw = await cli.skopeo(['inspect', '--tls-verify=false', '--creds', creds, '--raw', `docker://${host}/team/skopeo:v1`]);
      expect(Buffer.from(raw.stdout).equals(image.manifest.data)).toBe(true);
      const out = path.join(work, 'out');
      await cli.skopeo(['copy', '--src-tls-verify=false', '--src-creds', creds, `docker://${host}/team/skopeo:v1`, `oci:${out}:v1`]);
      const index = JSON.parse(readFileSync(path.join(out, 'index.json'), 'utf8'));
      expect(index.manifests[0].digest).toBe(image.manifest.digest);
      for (const b of [image.config, ...image.layers]) {
        expect(sha256(readFileSync(path.join(out, 'blobs', 'sha256', b.digest.slice(7))))).toBe(b.digest);
      }
      expect(await uploadKeys('team/skopeo')).toEqual([]);
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  });

});

describe('mirror mode on S3 storage (Ceph RGW)', () => {
  const MIRROR_ROOT = 'mirror-root';
  let bucket: TestBucket;
  let upstream: TestServer;
  let mirror: TestServer;
  let cacheName: (repo: string) => string;
  const image = buildImage({ files: [{ 'etc/motd': 'mirrored\n' }, { 'bin/big': randomBytes(23 * MiB) }] });
  const mirrorBlobKey = (digest: string) => `${MIRROR_ROOT}/docker/registry/v2/blobs/sha256/${digest.slice(7, 9)}/${digest.slice(7)}/data`;

  beforeAll(async () => {
    bucket = await createTestBucket('mirror');
    upstream = await startTestServer();
    const host = `127.0.0.1:${upstream.port}`;
    cacheName = (repo) => `${host.replace(':', '_')}/${repo}`;
    mirror = await startTestServer({
      users: {},
      storageDriver: { s3: bucket.storageConfig({ rootdirectory: `/${MIRROR_ROOT}`, chunksize: 5 * MiB }) },
      extra: {
        admin: { addr: '127.0.0.1:0' },
        gc: { graceperiod: '0s' },
        cache: { maxage: '1h' },
        // A freshness window makes the mirror record when the upstream last confirmed a tag (its link's mtime).
        proxy: { upstreams: [{ host, url: upstream.url, username: TEST_USER, password: TEST_PASSWORD }], tagfreshness: '1ms' },
      },
    });
    await new RegistryClient(upstream.url, upstream.auth).pushImage('lib/big', '1', image);
  });
  afterAll(async () => {
    await mirror?.stop();
    await upstream?.stop();
    await bucket?.destroy();
  });

  test('concurrent cold pulls of a blob stream it while it is cached, and it is committed once', async () => {
    const layer = image.layers[1];
    const pulls = await Promise.all(Array.from({ length: 3 }, () => readBlob(mirror.url, 'lib/big', layer.digest)));
    for (const p of pulls) expect(p).toEqual({ status: 200, digest: layer.digest, size: layer.size });
    // The clients had their last byte once it was verified; the commit follows.
    await mirror.mirror!.settled();
    expect(await bucket.keys(mirrorBlobKey(layer.digest))).toEqual([mirrorBlobKey(layer.digest)]);
    expect(await bucket.keys(`${MIRROR_ROOT}/docker/registry/v2/repositories/${cacheName('lib/big')}/_uploads/`)).toEqual([]);
    // Served from the cache now, ranges included.
    const res = await new RegistryClient(mirror.url).req(`/v2/lib/big/blobs/${layer.digest}`, { headers: { range: 'bytes=100-199' } });
    expect(res.status).toBe(206);
    expect(res.body.equals(layer.data.subarray(100, 200))).toBe(true);
  });

  test('revalidating a tag sets its modification time, use its access time, and prune evicts by them', async () => {
    const driver = mirror.registry.driver;
    const tagKey = paths.tagCurrentLink(cacheName('lib/big'), '1');
    const pulled = await verifyPull(mirror.url, undefined, 'lib/big', '1');
    expect(pulled.digest).toBe(image.manifest.digest);
    await mirror.mirror!.settled();
    // The mirror records the use (of the tag and of the manifest) in the background: wait for
    // the S3 driver's time records of both before changing them.
    const longAgo = new Date('2020-01-01T00:00:00Z');
    const revisionKey = paths.revisionLink(cacheName('lib/big'), parseDigest(image.manifest.digest));
    const sidecars = [tagKey, revisionKey].map((k) => `${MIRROR_ROOT}${k}/.times`);
    for (let i = 0; ; i++) {
      const keys = await bucket.keys(`${MIRROR_ROOT}/docker/registry/v2/repositories/${cacheName('lib/big')}/`);
      if (sidecars.every((k) => keys.includes(k))) break;
      if (i > 500) throw new Error(`the mirror never recorded the use: ${keys.join(' ')}`);
      await new Promise((r) => setTimeout(r, 20));
    }
    expect((await driver.stat(tagKey)).accessTime.getTime()).toBeGreaterThan(Date.parse('2024-01-01'));
    await driver.touch(tagKey, { accessed: longAgo, modified: longAgo });
    expect((await driver.stat(tagKey)).modTime.getTime()).toBe(longAgo.getTime());

    // A pull by tag revalidates it with the upstream: the link's mtime says when.
    expect((await fetchManifest(mirror.url, undefined, 'lib/big', '1')).status).toBe(200);
    const after = await driver.stat(tagKey);
    expect(after.modTime.getTime()).toBeGreaterThan(longAgo.getTime());
    expect(after.modTime.getFullYear()).toBeGreaterThanOrEqual(2024);
    // (The use itself is throttled per key: the access time set above stays.)
    expect(after.accessTime.getTime()).toBe(longAgo.getTime());

    // Unused for longer than cache.maxage: tag, manifest and blobs go.
    await driver.touch(revisionKey, { accessed: longAgo });
    const pruned = await adminReq(mirror, 'POST', '/admin/prune');
    expect(pruned.status, pruned.text).toBe(200);
    expect(pruned.json()).toMatchObject({ tagsDeleted: 1, manifestsDeleted: 1 });
    const blobs = await bucket.keys(`${MIRROR_ROOT}/docker/registry/v2/blobs/`);
    for (const d of [image.manifest.digest, image.config.digest, ...image.layers.map((l) => l.digest)]) {
      expect(blobs).not.toContain(mirrorBlobKey(d));
    }
    expect(await bucket.keys(`${MIRROR_ROOT}/docker/registry/v2/repositories/${cacheName('lib/big')}/_manifests/tags/`)).toEqual([]);
    // And it pulls again, from the upstream.
    expect((await verifyPull(mirror.url, undefined, 'lib/big', '1')).digest).toBe(image.manifest.digest);
  });
});

