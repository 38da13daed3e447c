// Mirror single-flight across replicas (issue 6): two mirror processes on one
// Ceph RGW bucket and one Redis, in front of a real upstream (Debian's
// docker-registry, counted through its access log and a front proxy). 20
// clients pull the same cold image at once, spread over both replicas: the
// manifest and each blob are fetched from the upstream exactly once, and every
// client gets the right bytes. A front proxy holds the layer bodies after their first 4 MiB
// until all 20 clients are receiving every layer, so the pulls really overlap
// the fills: the replica that did not claim a layer serves its clients by
// tailing the other's upload in the bucket.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fetchManifest } from '../helpers/clients.ts';
import { readBlob } from '../helpers/mirror/fetch.ts';
import { FrontProxy } from '../helpers/mirror/front-proxy.ts';
import { randomImage } from '../helpers/mirror/images.ts';
import { FakeUpstream } from '../helpers/mirror/upstream.ts';
import { startRedis, type TestRedis } from '../helpers/redis.ts';
import { createTestBucket, type TestBucket } from '../helpers/s3.ts';
import { MiB, type Replica, startReplica } from '../helpers/scale.ts';

const CLIENTS = 20;

describe('scale-out: mirror replicas share one upstream fetch per blob', () => {
  let upstream: FakeUpstream;
  let front: FrontProxy;
  let redis: TestRedis;
  let bucket: TestBucket;
  let replicas: Replica[] = [];
  const image = randomImage([14 * MiB, 11 * MiB, 9 * MiB]);

  beforeAll(async () => {
    [upstream, redis, bucket] = await Promise.all([FakeUpstream.start(), startRedis(), createTestBucket('scale-mirror')]);
    await upstream.pushImage('team/big', 'v1', image);
    front = await FrontProxy.start({ target: upstream.url });
    const mirror = { proxy: { upstreams: [{ host: 'docker.io', url: front.url }] } };
    replicas = await Promise.all(['m1', 'm2'].map((label) => startReplica({ label, bucket, redis, extra: mirror })));
  });

  afterAll(async () => {
    await Promise.allSettled(replicas.map((r) => r.dispose()));
    await front?.stop();
    await upstream?.dispose();
    await redis?.stop();
    await bucket?.destroy();
  });

  it(`${CLIENTS} concurrent cold pulls over both replicas: one upstream GET per blob and for the manifest, correct bytes for everyone`, async () => {
    const blobs = [image.config, ...image.layers];
    front.holdBlobsAfter(4 * MiB);
    let layerResponses = 0;
    let allStarted!: () => void;
    const started = new Promise<void>((resolve) => {
      allStarted = resolve;
    });
    const pullOne = async (replica: Replica) => {
      const manifest = await fetchManifest(replica.url, undefined, 'team/big', 'v1');
      const got = await Promise.all(
        blobs.map((b) =>
          readBlob(replica.url, 'team/big', b.digest, undefined, () => {
            if (b !== image.config && ++layerResponses === CLIENTS * image.layers.length) allStarted();
          }),
        ),
      );
      return { replica: replica.label, manifest: { status: manifest.status, digest: manifest.actualDigest }, blobs: got };
    };
    const pulls = Promise.all(Array.from({ length: CLIENTS }, (_, i) => pullOne(replicas[i % replicas.length])));
    // Every client on both replicas is receiving every layer while the upstream is still held.
    await started;
    const layerGets = () => front.forwarded.filter((f) => f.method === 'GET' && image.layers.some((l) => f.path === `/v2/team/big/blobs/${l.digest}`));
    expect(layerGets()).toHaveLength(image.layers.length);
    front.release();
    const results = await pulls;

    const expected = { manifest: { status: 200, digest: image.manifest.digest }, blobs: blobs.map((b) => ({ status: 200, digest: b.digest, size: b.size })) };
    for (const r of results) expect({ manifest: r.manifest, blobs: r.blobs }, `a client of ${r.replica}`).toEqual(expected);
    expect(new Set(results.map((r) => r.replica))).toEqual(new Set(['m1', 'm2']));

    // Counted at the upstream itself: one GET per blob, and no other blob GET.
    await upstream.sync();
    for (const b of blobs) expect(upstream.requests('GET', `/v2/team/big/blobs/${b.digest}`), b.digest).toHaveLength(1);
    expect(upstream.requests('GET', /\/blobs\//)).toHaveLength(blobs.length);
    // And the manifest once: the replica that did not fetch it waited for the other's lock and read it from the bucket.
    expect(upstream.requests('GET', /\/manifests\//)).toHaveLength(1);

    // Both replicas now serve every blob from the shared cache, with no upstream GET at all.
    for (const replica of replicas) {
      for (const b of blobs) {
        const again = await readBlob(replica.url, 'team/big', b.digest);
        expect(again).toEqual({ status: 200, digest: b.digest, size: b.size });
      }
    }
    await upstream.sync();
    expect(upstream.requests('GET', /\/blobs\//)).toHaveLength(blobs.length);
    // Exactly one copy of each blob in the bucket, and no upload left behind.
    for (const b of blobs) {
      const hex = b.digest.slice('sha256:'.length);
      const keys = (await bucket.keys(`docker/registry/v2/blobs/sha256/${hex.slice(0, 2)}/${hex}/`)).filter((k) => !k.endsWith('/.times'));
      expect(keys).toEqual([`docker/registry/v2/blobs/sha256/${hex.slice(0, 2)}/${hex}/data`]);
    }
    expect((await bucket.keys('docker/registry/v2/repositories/')).filter((k) => k.includes('/_uploads/'))).toEqual([]);
    // The fills were coordinated through Redis: the claims are there, ended as done.
    for (const b of blobs) {
      const state = await redis.client.hget(`registry:fill:${b.digest}`, 'state');
      expect(state === 'done' || state === null, `fill state of ${b.digest}: ${state}`).toBe(true);
    }
  });
});
