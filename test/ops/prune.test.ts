// Mirror cache pruning. The upstream is another server of ours (private,
// with a user the mirror logs in as). Images are pulled through the mirror,
// then the access times of some cached files are set into the past (tag
// links, revision links, blob data), as if nobody had used them for hours.
// Pruning must evict exactly the unused content (tags and manifests first,
// then the blobs nothing kept refers to), keep the cache under maxSize
// least-recently-used first, never leave a manifest pointing at a missing
// blob, and a pruned image must still pull (fetched again from upstream).
import { rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RegistryClient } from '../helpers/client.ts';
import { buildImage, buildIndex, type Image, type IndexImage } from '../helpers/oci.ts';
import { dataDir, makeTempDir } from '../helpers/server.ts';
import { composeImage, digestsOf, gzLayer, pullAndVerify, pushImageLikeClient, pushIndexLikeClient } from '../helpers/ops/images.ts';
import { ADMIN, adminReq, type MirrorPair, runCli, startMirrorPair, writeConfig } from '../helpers/ops/servers.ts';
import { blobFile, hasBlob, hoursAgo, inventory, revisionLink, revisions, setAccessTime, statTree, storedBlobs, tagLink, tags } from '../helpers/ops/store.ts';

const cleanups: Array<() => Promise<void> | void> = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
});

async function pair(cache: Record<string, unknown>): Promise<{ p: MirrorPair; upstream: RegistryClient; mirror: RegistryClient; data: string }> {
  // Grace 0: the sweep goes by what the files and links say, not by how recently this process saw a blob.
  const p = await startMirrorPair({ ...ADMIN, gc: { graceperiod: '0s' }, cache });
  cleanups.push(() => p.stop());
  return { p, upstream: new RegistryClient(p.upstream.url, p.upstream.auth), mirror: new RegistryClient(p.mirror.url), data: dataDir(p.mirror) };
}

/** Marks an image in the mirror's cache as last used at `when`: its tag link (if any), revision links and blob files. */
function lastUsed(data: string, cacheRepo: string, image: Image | IndexImage, when: Date, tag?: string): void {
  if (tag) setAccessTime(tagLink(data, cacheRepo, tag), when);
  const manifests = 'index' in image ? [image.index, ...image.images.map((i) => i.manifest)] : [image.manifest];
  for (const m of manifests) setAccessTime(revisionLink(data, cacheRepo, m.digest), when);
  for (const d of digestsOf(image)) setAccessTime(blobFile(data, d), when);
}

const sizeOf = (image: Image | IndexImage, digest: string): number => {
  if ('index' in image) {
    if (image.index.digest === digest) return image.index.size;
    for (const i of image.images) {
      const n = sizeOf(i, digest);
      if (n >= 0) return n;
    }
    return -1;
  }
  return [image.manifest, image.config, ...image.layers].find((b) => b.digest === digest)?.size ?? -1;
};

describe('prune by age (cache.maxage)', () => {
  let env: Awaited<ReturnType<typeof pair>>;
  const shared = gzLayer(6000);
  const old = composeImage([shared, gzLayer(3000)]);
  const fresh = composeImage([shared, gzLayer(3500)]);
  const oldIndex = buildIndex([buildImage({ architecture: 'amd64' }), buildImage({ architecture: 'arm64' })]);
  // An index used recently whose children were last fetched long ago: they stay with it.
  const freshIndex = buildIndex([buildImage({ architecture: 'amd64' }), buildImage({ architecture: 'arm64' })]);
  let work: string;

  beforeAll(async () => {
    env = await pair({ maxage: '1h' });
    work = makeTempDir('rs-ops-prune-');
    cleanups.push(() => rmSync(work, { recursive: true, force: true }));
    await pushImageLikeClient(env.upstream, 'lib/old', '1', old);
    await pushImageLikeClient(env.upstream, 'lib/fresh', '1', fresh);
    await pushIndexLikeClient(env.upstream, 'lib/oldidx', '1', oldIndex);
    await pushIndexLikeClient(env.upstream, 'lib/freshidx', '1', freshIndex);
    for (const repo of ['lib/old', 'lib/fresh', 'lib/oldidx', 'lib/freshidx']) await pullAndVerify(env.mirror, repo, '1');
    // Clients have their last byte a moment before the blob is committed: let the cache settle.
    await env.p.mirror.mirror!.settled();
    const { data, p } = env;
    lastUsed(data, p.cacheName('lib/old'), old, hoursAgo(3), '1');
    lastUsed(data, p.cacheName('lib/oldidx'), oldIndex, hoursAgo(5), '1');
    for (const child of freshIndex.images) lastUsed(data, p.cacheName('lib/freshidx'), child, hoursAgo(4));
  });

  const gone = () => [...digestsOf(old).filter((d) => d !== shared.digest), ...digestsOf(oldIndex)];
  const goneBytes = () => gone().reduce((n, d) => n + Math.max(sizeOf(old, d), sizeOf(oldIndex, d)), 0);

  it('the CLI dry run reports what would go and how many bytes, and touches nothing (not even access times)', async () => {
    const { data, p } = env;
    const config = writeConfig(work, {
      version: '0.1',
      storage: { filesystem: { rootdirectory: data } },
      proxy: { upstreams: [{ host: p.upstreamHost, url: p.upstream.url }] },
      cache: { maxage: '1h' },
      gc: { graceperiod: '0s' },
    });
    const before = statTree(data);
    const dry = await runCli(['prune', '--dry-run', config]);
    expect(dry.code, dry.stderr).toBe(0);
    expect(statTree(data)).toEqual(before);
    const summary = dry.lines.at(-1)!;
    expect(summary).toMatchObject({ event: 'summary', dryRun: true, tagsDeleted: 2, manifestsDeleted: 4, blobsDeleted: gone().length, bytesFreed: goneBytes() });
    const events = dry.lines.slice(0, -1);
    expect(events.every((e) => e.event === 'would-delete')).toBe(true);
    expect(events.filter((e) => e.kind === 'tag').map((e) => e.what).sort()).toEqual([`${p.cacheName('lib/old')}:1`, `${p.cacheName('lib/oldidx')}:1`]);
    expect(events.filter((e) => e.kind === 'blob').map((e) => e.what).sort()).toEqual(gone().sort());
    // The same from the running mirror's admin endpoint.
    const admin = await adminReq(p.mirror, 'POST', '/admin/prune?dryrun=1');
    expect(admin.status).toBe(200);
    expect(admin.json()).toMatchObject({ dryRun: true, tagsDeleted: 2, manifestsDeleted: 4, blobsDeleted: gone().length, bytesFreed: goneBytes() });
    expect(statTree(data)).toEqual(before);
  });

  it('the admin prune evicts old tags and manifests, then their blobs; recent content and shared layers stay', async () => {
    const { data, p } = env;
    const res = await adminReq(p.mirror, 'POST', '/admin/prune');
    expect(res.status).toBe(200);
    expect(res.json()).toMatchObject({ dryRun: false, tagsDeleted: 2, manifestsDeleted: 4, blobsDeleted: gone().length, bytesFreed: goneBytes() });

    expect(tags(data, p.cacheName('lib/old')).size).toBe(0);
    expect(revisions(data, p.cacheName('lib/old'))).toEqual([]);
    expect(revisions(data, p.cacheName('lib/oldidx'))).toEqual([]);
    for (const d of gone()) expect(hasBlob(data, d), d).toBe(false);
    expect(tags(data, p.cacheName('lib/fresh')).get('1')).toBe(fresh.manifest.digest);
    expect(revisions(data, p.cacheName('lib/freshidx')).sort()).toEqual([freshIndex.index, ...freshIndex.images.map((i) => i.manifest)].map((b) => b.digest).sort());
    for (const d of [...digestsOf(fresh), ...digestsOf(freshIndex)]) expect(hasBlob(data, d), d).toBe(true);
    const { referenced, problems } = inventory(data);
    expect(problems).toEqual([]);
    expect([...storedBlobs(data)].sort()).toEqual([...referenced].sort());

    // What stays still pulls from the cache, and what went is fetched again from the upstream.
    await pullAndVerify(env.mirror, 'lib/fresh', '1');
    await pullAndVerify(env.mirror, 'lib/freshidx', '1');
    const requestsBefore = p.mirror.mirror!.clients.get(p.upstreamHost)!.stats.requests;
    expect((await pullAndVerify(env.mirror, 'lib/old', '1')).digest).toBe(old.manifest.digest);
    expect((await pullAndVerify(env.mirror, 'lib/oldidx', '1')).digest).toBe(oldIndex.index.digest);
    expect(p.mirror.mirror!.clients.get(p.upstreamHost)!.stats.requests).toBeGreaterThan(requestsBefore);
    await p.mirror.mirror!.settled();
    for (const d of gone()) expect(hasBlob(data, d), d).toBe(true);
    expect(inventory(data).problems).toEqual([]);

    // Nothing is old any more: a second prune removes nothing.
    expect((await adminReq(p.mirror, 'POST', '/admin/prune')).json()).toMatchObject({ tagsDeleted: 0, manifestsDeleted: 0, blobsDeleted: 0 });
  });
});

describe('prune by size (cache.maxsize), least recently used first', () => {
  it('evicts the least recently used images until the cache fits, and no further', async () => {
    const shared = gzLayer(2000);
    const images = [0, 1, 2, 3].map(() => composeImage([shared, gzLayer(20_000)]));
    const blobBytes = (list: Image[]) => {
      const seen = new Map<string, number>();
      for (const img of list) for (const b of [img.config, ...img.layers]) seen.set(b.digest, b.size);
      return [...seen.values()].reduce((a, b) => a + b, 0);
    };
    // Room for the two most recently used images (but not for three).
    const maxsize = blobBytes([images[2], images[3]]);
    const { p, upstream, mirror, data } = await pair({ maxage: '1000h', maxsize });
    for (const [i, img] of images.entries()) await pushImageLikeClient(upstream, `lru/i${i}`, 'latest', img);
    for (const i of [0, 1, 2, 3]) await pullAndVerify(mirror, `lru/i${i}`, 'latest');
    await p.mirror.mirror!.settled();
    // Last used: i1 longest ago, then i0, i3, i2 (not the pull order).
    const order = [1, 0, 3, 2];
    order.forEach((i, rank) => lastUsed(data, p.cacheName(`lru/i${i}`), images[i], hoursAgo(10 - rank), 'latest'));

    const res = await adminReq(p.mirror, 'POST', '/admin/prune');
    expect(res.status).toBe(200);
    expect(res.json()).toMatchObject({ tagsDeleted: 2, manifestsDeleted: 2, cacheBytes: blobBytes([images[3], images[2]]) });
    expect(res.json().cacheBytes).toBeLessThanOrEqual(maxsize);
    for (const i of [1, 0]) {
      expect(revisions(data, p.cacheName(`lru/i${i}`)), `i${i}`).toEqual([]);
      for (const l of [images[i].config, images[i].layers[1]]) expect(hasBlob(data, l.digest)).toBe(false);
    }
    for (const i of [2, 3]) {
      expect(tags(data, p.cacheName(`lru/i${i}`)).get('latest'), `i${i}`).toBe(images[i].manifest.digest);
      for (const d of digestsOf(images[i])) expect(hasBlob(data, d)).toBe(true);
    }
    expect(inventory(data).problems).toEqual([]);
    await pullAndVerify(mirror, 'lru/i1', 'latest');
  });
});
