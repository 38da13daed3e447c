// The mirror when upstreams misbehave: killed after a first pull
// (stale-if-error), sending corrupt blob bytes (never cached, the next pull
// after the fix works), and a client that vanishes in the middle of a cache
// fill (the fill finishes for everyone else).
import { existsSync, readdirSync, rmSync } from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { errorCodes, RegistryClient } from '../helpers/client.ts';
import { ContainersClients, fetchManifest, MANIFEST_ACCEPT, verifyPull } from '../helpers/clients.ts';
import { readBlob, readBlobThenDisconnect } from '../helpers/mirror/fetch.ts';
import { FrontProxy } from '../helpers/mirror/front-proxy.ts';
import { randomImage } from '../helpers/mirror/images.ts';
import { blobDataPath, cachedBlob, cachedTag, hasRevision, type LocalMirror, repoDir, startMirror } from '../helpers/mirror/mirror.ts';
import { FakeUpstream } from '../helpers/mirror/upstream.ts';
import { buildImage, sha256 } from '../helpers/oci.ts';
import { makeTempDir } from '../helpers/server.ts';
import { sleep } from '../helpers/process.ts';

const MiB = 1024 * 1024;

/** Waits (bounded) for a condition; the assertion is on the condition, not on the time. */
async function waitUntil(condition: () => boolean, timeoutMs = 60_000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) return false;
    await sleep(50);
  }
  return true;
}

function waitForFile(file: string): Promise<boolean> {
  return waitUntil(() => existsSync(file));
}

/** Every file under a directory (relative paths); [] when it does not exist. */
function filesUnder(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return (readdirSync(dir, { recursive: true, withFileTypes: true }) as import('node:fs').Dirent[])
    .filter((e) => e.isFile())
    .map((e) => path.relative(dir, path.join(e.parentPath, e.name)));
}

describe('mirror: upstream killed after a first pull', () => {
  let upstream: FakeUpstream;
  let mirror: LocalMirror;
  const tmp = makeTempDir('rs-mirror-kill-');
  const v1 = buildImage({ files: [{ 'v.txt': 'v1\n' }, { 'w.txt': 'second layer of v1\n' }] });
  const v2 = buildImage({ files: [{ 'v.txt': 'v2, never pulled before the upstream died\n' }] });

  beforeAll(async () => {
    upstream = await FakeUpstream.start();
    await upstream.pushImage('team/app', 'v1', v1);
    await upstream.pushImage('team/app', 'v2', v2);
    mirror = await startMirror({ upstreams: [{ host: 'docker.io', url: upstream.url }] });
  });

  afterAll(async () => {
    await mirror?.stop();
    await upstream?.dispose();
    rmSync(tmp, { recursive: true, force: true });
  });

  it('keeps serving what was pulled (by tag and by digest), fails a new tag cleanly, recovers when the upstream returns', async () => {
    expect((await verifyPull(mirror.url, undefined, 'team/app', 'v1')).digest).toBe(v1.manifest.digest);
    await upstream.kill();

    // Stale-if-error: the tag's HEAD revalidation fails, the cached manifest is served.
    const byTag = await verifyPull(mirror.url, undefined, 'team/app', 'v1');
    expect(byTag.digest).toBe(v1.manifest.digest);
    const byDigest = await verifyPull(mirror.url, undefined, 'team/app', v1.manifest.digest);
    expect(byDigest.digest).toBe(v1.manifest.digest);
    const c = new RegistryClient(mirror.url);
    const head = await c.req('/v2/team/app/manifests/v1', { method: 'HEAD', headers: { accept: MANIFEST_ACCEPT } });
    expect(head.status).toBe(200);
    expect(head.header('docker-content-digest')).toBe(v1.manifest.digest);

    // A real client pulls it too.
    const clients = new ContainersClients([mirror.host], path.join(tmp, 'cli'));
    await clients.skopeo(['copy', '--src-tls-verify=false', `docker://${mirror.host}/team/app:v1`, `oci:${path.join(tmp, 'out')}:v1`]);
    expect(existsSync(path.join(tmp, 'out', 'blobs', 'sha256', v1.layers[1].digest.slice(7)))).toBe(true);

    // Never seen before: an error status (the upstream is unreachable), not a hang, not a 200.
    const newTag = await c.req('/v2/team/app/manifests/v2', { headers: { accept: MANIFEST_ACCEPT } });
    expect(newTag.status).toBe(503);
    expect(errorCodes(newTag)).toEqual(['UNAVAILABLE']);
    const newDigest = await c.req(`/v2/team/app/manifests/${v2.manifest.digest}`, { headers: { accept: MANIFEST_ACCEPT } });
    expect(newDigest.status).toBe(503);
    const newBlob = await readBlob(mirror.url, 'team/app', v2.layers[0].digest);
    expect(newBlob.status).toBe(503);
    const headNew = await c.req('/v2/team/app/manifests/v2', { method: 'HEAD', headers: { accept: MANIFEST_ACCEPT } });
    expect(headNew.status).toBe(503);
    const cli = await clients.skopeo(['inspect', '--tls-verify=false', '--raw', `docker://${mirror.host}/team/app:v2`], { allowFailure: true, timeoutMs: 60_000 });
    expect(cli.code).not.toBe(0);
    expect(cachedTag(mirror.dataDir, 'docker.io/team/app', 'v2')).toBeUndefined();

    // Back up: the new tag pulls.
    await upstream.restart();
    expect((await verifyPull(mirror.url, undefined, 'team/app', 'v2')).digest).toBe(v2.manifest.digest);
  });
});

describe('mirror: a corrupting upstream', () => {
  let upstream: FakeUpstream;
  let corrupting: FrontProxy;
  let mirror: LocalMirror;
  const tmp = makeTempDir('rs-mirror-corrupt-');
  const image = randomImage([3 * MiB + 17, 40_000]);

  beforeAll(async () => {
    upstream = await FakeUpstream.start();
    await upstream.pushImage('team/app', 'v1', image);
    corrupting = await FrontProxy.start({ target: upstream.url });
    mirror = await startMirror({ upstreams: [{ host: 'docker.io', url: corrupting.url }] });
  });

  afterAll(async () => {
    await mirror?.stop();
    await corrupting?.stop();
    await upstream?.dispose();
    rmSync(tmp, { recursive: true, force: true });
  });

  it('gives the client an error, caches nothing corrupt, and pulls fine once the upstream is fixed', async () => {
    corrupting.corrupt = true;
    // The manifest is fine (only blobs are corrupted).
    const manifest = await fetchManifest(mirror.url, undefined, 'team/app', 'v1');
    expect(manifest.digest).toBe(image.manifest.digest);

    for (const layer of image.layers) {
      const got = await readBlob(mirror.url, 'team/app', layer.digest);
      // Either an error status or a cut-off body; never all the bytes, never the corrupt bytes as a whole blob.
      expect(got.error !== undefined || got.status >= 400).toBe(true);
      expect(got.size).toBeLessThan(layer.size);
      expect(existsSync(blobDataPath(mirror.dataDir, layer.digest))).toBe(false);
    }
    expect(corrupting.corrupted).toBe(image.layers.length);

    // A real client fails too.
    const clients = new ContainersClients([mirror.host], path.join(tmp, 'cli'));
    const cli = await clients.skopeo(['copy', '--retry-times=0', '--src-tls-verify=false', `docker://${mirror.host}/team/app:v1`, `oci:${path.join(tmp, 'bad')}:v1`], {
      allowFailure: true,
      timeoutMs: 60_000,
    });
    expect(cli.code).not.toBe(0);

    // Nothing of the bad layers anywhere in the cache: no blob data, no links, and no upload files
    // once the fills skopeo left behind (it drops its other downloads when one fails) have failed too.
    const uploads = path.join(repoDir(mirror.dataDir, 'docker.io/team/app'), '_uploads');
    expect(await waitUntil(() => filesUnder(uploads).length === 0)).toBe(true);
    for (const layer of image.layers) expect(existsSync(blobDataPath(mirror.dataDir, layer.digest))).toBe(false);
    const layerLinks = filesUnder(path.join(repoDir(mirror.dataDir, 'docker.io/team/app'), '_layers'));
    for (const layer of image.layers) expect(layerLinks.join('\n')).not.toContain(layer.digest.slice(7));

    // Fixed upstream: the next pull works and caches the right bytes.
    corrupting.corrupt = false;
    const pulled = await verifyPull(mirror.url, undefined, 'team/app', 'v1');
    expect(pulled.digest).toBe(image.manifest.digest);
    await mirror.settled();
    for (const layer of image.layers) {
      const cached = cachedBlob(mirror.dataDir, layer.digest);
      expect(cached && sha256(cached)).toBe(layer.digest);
    }
    await clients.skopeo(['copy', '--src-tls-verify=false', `docker://${mirror.host}/team/app:v1`, `oci:${path.join(tmp, 'good')}:v1`]);
  });

  it('never caches a manifest whose bytes do not match its digest', async () => {
    const fresh = randomImage([1000]);
    await upstream.pushImage('team/fresh', 'v1', fresh);
    corrupting.corruptManifests = true;
    try {
      const byTag = await fetchManifest(mirror.url, undefined, 'team/fresh', 'v1');
      expect(byTag.status).toBe(503);
      const byDigest = await fetchManifest(mirror.url, undefined, 'team/fresh', fresh.manifest.digest);
      expect(byDigest.status).toBe(503);
      expect(cachedTag(mirror.dataDir, 'docker.io/team/fresh', 'v1')).toBeUndefined();
      expect(hasRevision(mirror.dataDir, 'docker.io/team/fresh', fresh.manifest.digest)).toBe(false);
      expect(existsSync(blobDataPath(mirror.dataDir, fresh.manifest.digest))).toBe(false);
    } finally {
      corrupting.corruptManifests = false;
    }
    expect((await verifyPull(mirror.url, undefined, 'team/fresh', 'v1')).digest).toBe(fresh.manifest.digest);
  });
});

describe('mirror: an erroring upstream', () => {
  let upstream: FakeUpstream;
  let flaky: FrontProxy;
  let mirror: LocalMirror;
  const image = buildImage();
  const later = buildImage();

  beforeAll(async () => {
    upstream = await FakeUpstream.start();
    await upstream.pushImage('team/app', 'v1', image);
    await upstream.pushImage('team/app', 'later', later);
    flaky = await FrontProxy.start({ target: upstream.url });
    mirror = await startMirror({ upstreams: [{ host: 'docker.io', url: flaky.url }] });
  });

  afterAll(async () => {
    await mirror?.stop();
    await flaky?.stop();
    await upstream?.dispose();
  });

  it('retries 5xx answers and waits out a short 429 Retry-After', async () => {
    flaky.failNext(2, 503);
    const manifest = await fetchManifest(mirror.url, undefined, 'team/app', 'v1');
    expect(manifest.digest).toBe(image.manifest.digest);
    expect(flaky.failed.map((f) => f.status)).toEqual([503, 503]);
    flaky.failNext(1, 429, { 'retry-after': '1' });
    const blob = await readBlob(mirror.url, 'team/app', image.layers[0].digest);
    expect(blob).toEqual({ status: 200, digest: image.layers[0].digest, size: image.layers[0].size });
    expect(flaky.failed.map((f) => f.status)).toEqual([503, 503, 429]);
    expect((await verifyPull(mirror.url, undefined, 'team/app', 'v1')).digest).toBe(image.manifest.digest);
  });

  it('serves a cached tag when the upstream keeps failing (stale-if-error), and fails an unseen tag with 503, not a hang', async () => {
    flaky.failNext(20, 500);
    const stale = await fetchManifest(mirror.url, undefined, 'team/app', 'v1');
    expect(stale.status).toBe(200);
    expect(stale.digest).toBe(image.manifest.digest);
    const unseen = await fetchManifest(mirror.url, undefined, 'team/app', 'later');
    expect(unseen.status).toBe(503);
    expect(unseen.json?.errors?.[0]?.code).toBe('UNAVAILABLE');
    flaky.clearFailures();

    // A long Retry-After is not waited for: the client gets its answer (stale or 503) at once.
    const before = flaky.failed.length;
    flaky.failNext(1, 429, { 'retry-after': '3600' });
    const limited = await fetchManifest(mirror.url, undefined, 'team/app', 'later');
    expect(limited.status).toBe(503);
    expect(flaky.failed.length).toBe(before + 1);
    const staleAgain = await fetchManifest(mirror.url, undefined, 'team/app', 'v1');
    expect(staleAgain.digest).toBe(image.manifest.digest);

    // A tag the upstream does not have is a 404, not an outage.
    const missing = await fetchManifest(mirror.url, undefined, 'team/app', 'no-such-tag');
    expect(missing.status).toBe(404);
    expect(missing.json?.errors?.[0]?.code).toBe('MANIFEST_UNKNOWN');
    expect((await verifyPull(mirror.url, undefined, 'team/app', 'later')).digest).toBe(later.manifest.digest);
  });
});

describe('mirror: an upstream sending a garbage Docker-Content-Digest', () => {
  let upstream: FakeUpstream;
  let garbling: FrontProxy;
  let mirror: LocalMirror;
  const image = buildImage({ files: [{ 'g.txt': 'garbage digest header, cached first\n' }] });
  const unseen = buildImage({ files: [{ 'h.txt': 'garbage digest header, never cached\n' }] });

  beforeAll(async () => {
    upstream = await FakeUpstream.start();
    await upstream.pushImage('team/app', 'v1', image);
    await upstream.pushImage('team/app', 'unseen', unseen);
    garbling = await FrontProxy.start({ target: upstream.url });
    mirror = await startMirror({ upstreams: [{ host: 'docker.io', url: garbling.url }] });
  });

  afterAll(async () => {
    await mirror?.stop();
    await garbling?.stop();
    await upstream?.dispose();
  });

  it('is an upstream failure (503 UNAVAILABLE, not the client\'s 400), and a cached tag is served stale', async () => {
    expect((await verifyPull(mirror.url, undefined, 'team/app', 'v1')).digest).toBe(image.manifest.digest);
    await mirror.settled();
    garbling.manifestDigestHeader = 'not-a-digest!!';
    try {
      // First, before anything marked the upstream down: the revalidation fails, the cached tag is served.
      const stale = await fetchManifest(mirror.url, undefined, 'team/app', 'v1');
      expect(stale.status).toBe(200);
      expect(stale.digest).toBe(image.manifest.digest);
      const fresh = await fetchManifest(mirror.url, undefined, 'team/app', 'unseen');
      expect(fresh.status).toBe(503);
      expect(fresh.json?.errors?.[0]?.code).toBe('UNAVAILABLE');
      expect(cachedTag(mirror.dataDir, 'docker.io/team/app', 'unseen')).toBeUndefined();
    } finally {
      garbling.manifestDigestHeader = undefined;
    }
  });
});

describe('mirror: a client that disconnects mid-blob', () => {
  let upstream: FakeUpstream;
  let slow: FrontProxy;
  let mirror: LocalMirror;
  const image = randomImage([24 * MiB, 24 * MiB + 5]);

  beforeAll(async () => {
    upstream = await FakeUpstream.start();
    await upstream.pushImage('team/big', 'v1', image);
    slow = await FrontProxy.start({ target: upstream.url });
    mirror = await startMirror({ upstreams: [{ host: 'docker.io', url: slow.url }] });
  });

  afterAll(async () => {
    await mirror?.stop();
    await slow?.stop();
    await upstream?.dispose();
  });

  it('does not abort the fill for a client reading at the same time', async () => {
    const layer = image.layers[0];
    slow.holdBlobsAfter(8 * MiB);
    const leaving = readBlobThenDisconnect(mirror.url, 'team/big', layer.digest, 2 * MiB);
    await slow.waitHeld(1);
    const staying = readBlob(mirror.url, 'team/big', layer.digest);
    expect(await leaving).toBeGreaterThanOrEqual(2 * MiB);
    slow.release();
    const got = await staying;
    expect(got).toEqual({ status: 200, digest: layer.digest, size: layer.size });
    await mirror.settled();
    expect(sha256(cachedBlob(mirror.dataDir, layer.digest) ?? Buffer.alloc(0))).toBe(layer.digest);
    expect(await upstream.count('GET', `/v2/team/big/blobs/${layer.digest}`)).toBe(1);
  });

  it('finishes and commits the fill when its only client went away', async () => {
    const layer = image.layers[1];
    slow.holdBlobsAfter(8 * MiB);
    const leaving = readBlobThenDisconnect(mirror.url, 'team/big', layer.digest, 2 * MiB);
    await slow.waitHeld(2);
    expect(await leaving).toBeGreaterThanOrEqual(2 * MiB);
    slow.release();
    expect(await waitForFile(blobDataPath(mirror.dataDir, layer.digest))).toBe(true);
    expect(sha256(cachedBlob(mirror.dataDir, layer.digest) ?? Buffer.alloc(0))).toBe(layer.digest);
    // The next client gets it from the cache.
    const got = await readBlob(mirror.url, 'team/big', layer.digest);
    expect(got).toEqual({ status: 200, digest: layer.digest, size: layer.size });
    expect(await upstream.count('GET', `/v2/team/big/blobs/${layer.digest}`)).toBe(1);
  });
});
