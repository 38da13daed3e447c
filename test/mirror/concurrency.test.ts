// 20 clients pull the same ~100 MB image through a cold mirror at once (the
// mirror runs as its own process, as in production): the upstream sees exactly
// one GET per blob, and every client receives the right bytes. A front proxy
// holds the layer bodies after their first 4 MiB until all 20 clients are
// receiving every layer, so the pulls really overlap the cache fills.
import { createHash } from 'node:crypto';
import { createReadStream, existsSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fetchManifest } from '../helpers/clients.ts';
import { readBlob } from '../helpers/mirror/fetch.ts';
import { FrontProxy } from '../helpers/mirror/front-proxy.ts';
import { randomImage } from '../helpers/mirror/images.ts';
import { blobDataPath, type MirrorProcess, startMirrorProcess } from '../helpers/mirror/mirror.ts';
import { FakeUpstream } from '../helpers/mirror/upstream.ts';

const MiB = 1024 * 1024;
const CLIENTS = 20;

function hashFile(file: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const hash = createHash('sha256');
    createReadStream(file)
      .on('data', (c) => hash.update(c))
      .on('error', reject)
      .on('end', () => resolve(`sha256:${hash.digest('hex')}`));
  });
}

describe('mirror: concurrent cold pulls', () => {
  let upstream: FakeUpstream;
  let mirror: MirrorProcess;
  let front: FrontProxy;
  const image = randomImage([40 * MiB, 35 * MiB, 25 * MiB]);

  beforeAll(async () => {
    upstream = await FakeUpstream.start();
    await upstream.pushImage('team/big', 'v1', image);
    front = await FrontProxy.start({ target: upstream.url });
    mirror = await startMirrorProcess({ upstreams: [{ host: 'docker.io', url: front.url }] });
  });

  afterAll(async () => {
    await mirror?.stop();
    await front?.stop();
    await upstream?.dispose();
  });

  it(`${CLIENTS} clients pulling the same 100 MB image at once cause one upstream GET per blob, and all get correct bytes`, async () => {
    const blobs = [image.config, ...image.layers];
    // (The mirror hands bytes to readers in steps of 1 MiB, so hold well after that.)
    front.holdBlobsAfter(4 * MiB);
    let layerResponses = 0;
    let allStarted!: () => void;
    const started = new Promise<void>((resolve) => {
      allStarted = resolve;
    });
    const pullOne = async () => {
      const manifest = await fetchManifest(mirror.url, undefined, 'team/big', 'v1');
      // Like real clients, the blobs of one pull are fetched in parallel.
      const got = await Promise.all(
        blobs.map((b) =>
          readBlob(mirror.url, 'team/big', b.digest, undefined, () => {
            if (b !== image.config && ++layerResponses === CLIENTS * image.layers.length) allStarted();
          }),
        ),
      );
      return { manifest: { status: manifest.status, digest: manifest.actualDigest }, blobs: got };
    };
    const pulls = Promise.all(Array.from({ length: CLIENTS }, () => pullOne()));
    // Every client is reading every layer while the upstream is still held: the fills are in flight.
    await started;
    expect(front.forwarded.filter((f) => f.method === 'GET' && f.path.includes('/blobs/') && f.path !== `/v2/team/big/blobs/${image.config.digest}`)).toHaveLength(
      image.layers.length,
    );
    front.release();
    const results = await pulls;

    const expected = { manifest: { status: 200, digest: image.manifest.digest }, blobs: blobs.map((b) => ({ status: 200, digest: b.digest, size: b.size })) };
    for (const r of results) expect(r).toEqual(expected);

    await upstream.sync();
    for (const b of blobs) expect(upstream.requests('GET', `/v2/team/big/blobs/${b.digest}`)).toHaveLength(1);
    // No blob was fetched any other way (HEADs would be fine, GETs are the pull limit).
    expect(upstream.requests('GET', /\/blobs\//)).toHaveLength(blobs.length);
    expect(upstream.requests('GET', '/v2/team/big/manifests/v1').length).toBeGreaterThanOrEqual(1);

    // The cache holds the right bytes (committed a moment after the clients had their last byte).
    for (const b of blobs) {
      const file = blobDataPath(mirror.dataDir, b.digest);
      for (const deadline = Date.now() + 30_000; !existsSync(file) && Date.now() < deadline; ) await new Promise((r) => setTimeout(r, 20));
      expect(await hashFile(file)).toBe(b.digest);
    }
  });
});
