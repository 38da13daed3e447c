// Cache pruning for the mirror: evict what was not used for maxAge, then, if
// the cache is still over maxSize, the least recently used manifests until it
// fits. Tags and manifests go first; blobs only once nothing kept refers to
// them (the same sweep as GC), so no cached manifest ever points at a missing
// blob. Last use is the access time the mirror records (access-tracker.ts).
import { isNotFound } from '../storage/driver.ts';
import { paths } from '../storage/paths.ts';
import { type Digest, tryParseDigest } from '../registry/digest.ts';
import { type GraceKept, sweepBlobs } from '../registry/gc.ts';
import { listDigests } from '../registry/listing.ts';
import type { LocalRegistry } from '../registry/local-registry.ts';

export interface PrunePolicy {
  /** Evict content unused for this long. */
  maxAgeMs: number;
  /** Then keep the cache (blob bytes) under this size. */
  maxSizeBytes?: number;
  dryRun: boolean;
  /** Blobs younger than this are never swept (fills and fetches in flight). */
  graceMs: number;
  onDelete?: (kind: 'tag' | 'manifest' | 'blob', what: string, bytes: number) => void;
}

export interface PruneResult extends GraceKept {
  dryRun: boolean;
  tagsDeleted: number;
  manifestsDeleted: number;
  blobsDeleted: number;
  bytesFreed: number;
  /** Blob bytes the cache holds after pruning (as it would, in a dry run). */
  cacheBytes: number;
  durationMs: number;
}

interface Revision {
  repo: string;
  digest: Digest;
  lastUsed: number;
  tags: string[];
  blobs: string[];
  children: string[];
}

export async function pruneCache(registry: LocalRegistry, policy: PrunePolicy): Promise<PruneResult> {
  // Shares GC's lock: the two must not sweep at the same time.
  return registry.exclusive('gc', () => prune(registry, policy));
}

async function prune(registry: LocalRegistry, policy: PrunePolicy): Promise<PruneResult> {
  const started = Date.now();
  await registry.guard.beginRun();
  try {
    const revisions = await inventory(registry);
    const cutoff = Date.now() - policy.maxAgeMs;
    const evicted = new Set<Revision>();

    // 1. Age: a manifest goes when neither it nor any tag naming it was used since the cutoff,
    //    unless an index that stays still lists it.
    for (const r of revisions) if (r.lastUsed < cutoff) evicted.add(r);
    keepChildrenOfKept(revisions, evicted);

    // 2. Size: least recently used first, until the blobs of what stays fit.
    const sizes = await blobSizes(registry, revisions);
    const refs = new Map<string, number>();
    let cacheBytes = 0;
    for (const r of revisions) {
      if (evicted.has(r)) continue;
      for (const b of r.blobs) {
        const n = refs.get(b) ?? 0;
        if (n === 0) cacheBytes += sizes.get(b) ?? 0;
        refs.set(b, n + 1);
      }
    }
    if (policy.maxSizeBytes !== undefined && cacheBytes > policy.maxSizeBytes) {
      const byAge = revisions.filter((r) => !evicted.has(r)).sort((a, b) => a.lastUsed - b.lastUsed);
      for (const r of byAge) {
        if (cacheBytes <= policy.maxSizeBytes) break;
        evicted.add(r);
        for (const b of r.blobs) {
          const n = (refs.get(b) ?? 1) - 1;
          refs.set(b, n);
          if (n === 0) cacheBytes -= sizes.get(b) ?? 0;
        }
      }
    }

    // 3. Delete tags and manifests, then sweep the blobs nothing kept refers to.
    let tagsDeleted = 0;
    let manifestsDeleted = 0;
    for (const r of evicted) {
      if (await registry.guard.isPinned(r.digest.value)) continue;
      for (const tag of r.tags) {
        tagsDeleted++;
        policy.onDelete?.('tag', `${r.repo}:${tag}`, 0);
        if (!policy.dryRun) await registry.driver.delete(paths.tagDir(r.repo, tag));
      }
      manifestsDeleted++;
      policy.onDelete?.('manifest', `${r.repo}@${r.digest.value}`, 0);
      if (!policy.dryRun) await registry.manifests.deleteRevision(r.repo, r.digest);
    }
    const marked = new Set<string>();
    for (const r of revisions) {
      if (evicted.has(r)) continue;
      marked.add(r.digest.value);
      for (const b of r.blobs) marked.add(b);
    }
    const { blobsDeleted, bytesFreed, blobsInGrace, bytesInGrace, graceEndsAt } = await sweepBlobs(registry, marked, {
      dryRun: policy.dryRun,
      graceMs: policy.graceMs,
      onDelete: policy.onDelete,
    });
    return {
      dryRun: policy.dryRun,
      tagsDeleted,
      manifestsDeleted,
      blobsDeleted,
      bytesFreed,
      cacheBytes,
      blobsInGrace,
      bytesInGrace,
      graceEndsAt,
      durationMs: Date.now() - started,
    };
  } finally {
    await registry.guard.endRun(policy.graceMs);
  }
}

/** Every cached manifest with its last use (its own, or its tags'), tags, blobs and children. */
async function inventory(registry: LocalRegistry): Promise<Revision[]> {
  const out: Revision[] = [];
  for (const repo of await registry.repositories()) {
    const tagsByDigest = new Map<string, Array<{ tag: string; used: number }>>();
    for (const tag of await registry.manifests.tagsIfAny(repo)) {
      const key = paths.tagCurrentLink(repo, tag);
      // Stat before reading, and put the access time back after: on relatime/strictatime
      // mounts the read itself would count as a use, and no tag would ever grow old.
      const used = await accessTime(registry, key);
      const digest = await registry.blobs.readLink(key);
      if (used !== undefined) await registry.driver.touch(key, { accessed: new Date(used) }).catch(() => {});
      if (digest && used !== undefined) {
        const list = tagsByDigest.get(digest.value) ?? [];
        list.push({ tag, used });
        tagsByDigest.set(digest.value, list);
      }
    }
    for (const digest of await listDigests(registry.driver, paths.revisionsDir(repo))) {
      const own = await accessTime(registry, paths.revisionLink(repo, digest));
      if (own === undefined) continue;
      const tags = tagsByDigest.get(digest.value) ?? [];
      const loaded = await registry.manifests.tryLoad(digest).catch(() => undefined);
      out.push({
        repo,
        digest,
        lastUsed: Math.max(own, ...tags.map((t) => t.used)),
        tags: tags.map((t) => t.tag),
        blobs: loaded?.info.blobs.map((b) => b.digest) ?? [],
        children: loaded?.info.children.map((c) => c.digest) ?? [],
      });
    }
  }
  return out;
}

/** An index that stays keeps the children it lists (in the same repository). */
function keepChildrenOfKept(revisions: Revision[], evicted: Set<Revision>): void {
  const byKey = new Map(revisions.map((r) => [`${r.repo}@${r.digest.value}`, r]));
  const queue = revisions.filter((r) => !evicted.has(r));
  while (queue.length > 0) {
    const r = queue.pop() as Revision;
    for (const c of r.children) {
      const child = byKey.get(`${r.repo}@${c}`);
      if (child && evicted.has(child)) {
        evicted.delete(child);
        queue.push(child);
      }
    }
  }
}

async function blobSizes(registry: LocalRegistry, revisions: Revision[]): Promise<Map<string, number>> {
  const sizes = new Map<string, number>();
  for (const r of revisions) {
    for (const b of r.blobs) {
      if (sizes.has(b)) continue;
      const d = tryParseDigest(b);
      const info = d ? await registry.blobs.stat(d) : undefined;
      sizes.set(b, info?.size ?? 0);
    }
  }
  return sizes;
}

async function accessTime(registry: LocalRegistry, key: string): Promise<number | undefined> {
  try {
    return (await registry.driver.stat(key)).accessTime.getTime();
  } catch (err) {
    if (isNotFound(err)) return undefined;
    throw err;
  }
}

