// Offline `registry prune` with a cache.maxsize that evicts: tags and manifests
// go at once, but the blobs they leave behind stay while younger than the grace
// period. The run must say so (how many, how many bytes, from when a run frees
// them), and a run after that time must free exactly those.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RegistryClient } from '../helpers/client.ts';
import { type Image } from '../helpers/oci.ts';
import { composeImage, gzLayer, pullAndVerify, pushImageLikeClient } from '../helpers/ops/images.ts';
import { type MirrorPair, runCli, startMirrorPair, writeConfig } from '../helpers/ops/servers.ts';
import { dataDir, makeTempDir } from '../helpers/server.ts';
import { age, blobFile, hasBlob, hoursAgo, storedBlobs } from '../helpers/ops/store.ts';

let pair: MirrorPair;
let data: string;
let work: string;
const images: Image[] = [0, 1, 2].map(() => composeImage([gzLayer(40_000), gzLayer(30_000)]));
// Manifests are stored as blobs too: they go in the same sweep.
const blobs = images.flatMap((img) => [img.manifest, img.config, ...img.layers]);
const bytes = blobs.reduce((n, b) => n + b.size, 0);

beforeAll(async () => {
  pair = await startMirrorPair();
  data = dataDir(pair.mirror);
  work = makeTempDir('rs-cli-prune-');
  const upstream = new RegistryClient(pair.upstream.url, pair.upstream.auth);
  for (const [i, img] of images.entries()) await pushImageLikeClient(upstream, `lib/i${i}`, '1', img);
  const mirror = new RegistryClient(pair.mirror.url);
  for (const i of images.keys()) await pullAndVerify(mirror, `lib/i${i}`, '1');
  await pair.mirror.mirror!.settled();
  // Offline from here on: only the CLI touches the cache.
  await pair.mirror.close();
});
afterAll(async () => {
  await pair?.upstream.stop();
});

function config(gc?: Record<string, unknown>): string {
  return writeConfig(work, {
    version: '0.1',
    storage: { filesystem: { rootdirectory: data } },
    proxy: { upstreams: [{ host: pair.upstreamHost, url: pair.upstream.url }] },
    // Smaller than any image: everything is evicted.
    cache: { maxage: '1000h', maxsize: '1KB' },
    ...(gc ? { gc } : {}),
  }, `config-${Math.random().toString(36).slice(2)}.yml`);
}

describe('registry prune: what the grace period keeps', () => {
  it('a dry run says the grace period would keep the blobs of what it evicts', async () => {
    const r = await runCli(['prune', '--dry-run', config()]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.lines.at(-1)).toMatchObject({ event: 'summary', dryRun: true, manifestsDeleted: 3, blobsDeleted: 0, blobsInGrace: blobs.length, bytesInGrace: bytes });
    expect(r.stderr).toContain(`kept ${blobs.length} blob(s)`);
    expect(r.stderr).toContain('would free them');
  });

  it('evicts tags and manifests, keeps their young blobs and says when a run frees them', async () => {
    const before = Date.now();
    const r = await runCli(['prune', config()]);
    expect(r.code, r.stderr).toBe(0);
    const summary = r.lines.at(-1)!;
    expect(summary).toMatchObject({ event: 'summary', dryRun: false, tagsDeleted: 3, manifestsDeleted: 3, blobsDeleted: 0, bytesFreed: 0, blobsInGrace: blobs.length, bytesInGrace: bytes });
    // The newest blob was written before the run began: its grace ends within the hour after.
    const ends = Date.parse(summary.graceEndsAt);
    expect(ends).toBeGreaterThan(before - 3_600_000);
    expect(ends).toBeLessThanOrEqual(Date.now() + 3_600_000);
    const note = r.stderr.split('\n').find((l) => l.startsWith('note: '));
    expect(note, r.stderr).toContain(`the grace period (gc.graceperiod 1h) kept ${blobs.length} blob(s)`);
    expect(note).toContain(`${(bytes / 1e6).toFixed(1)} MB`);
    expect(note).toContain(`a prune after ${summary.graceEndsAt} will free them`);
    for (const b of blobs) expect(hasBlob(data, b.digest)).toBe(true);
  });

  it('a run after the grace period frees exactly those blobs, and says nothing of a grace period', async () => {
    // As if the hour had passed: the blobs' files are older than the grace period.
    for (const b of blobs) age(blobFile(data, b.digest), hoursAgo(2));
    const r = await runCli(['prune', config()]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.lines.at(-1)).toMatchObject({ manifestsDeleted: 0, blobsDeleted: blobs.length, bytesFreed: bytes, blobsInGrace: 0, bytesInGrace: 0, graceEndsAt: null });
    expect(r.stderr).not.toContain('grace');
    expect([...storedBlobs(data)]).toEqual([]);
  });

  it('--grace must be a number of seconds', async () => {
    const r = await runCli(['prune', '--grace', '1h', config()]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^registry: --grace must be a whole number of seconds, got "1h"\n$/);
  });
});
