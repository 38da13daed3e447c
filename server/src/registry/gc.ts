// Mark and sweep garbage collection, safe to run inside a serving registry.
//
// Mark: every manifest a repository keeps (all revisions, or with
// deleteUntagged only what tags reach, plus index children and referrers of
// what is kept), and every blob those manifests name. Sweep: blob data that
// nothing marked, unless it is younger than the grace period (uploads that a
// manifest will refer to soon), was used recently, or a push pinned it (see
// gc-guard.ts). Upload sessions are the upload purger's business.
import { isNotFound } from '../storage/driver.ts';
import { paths } from '../storage/paths.ts';
import { type Digest, tryParseDigest } from './digest.ts';
import { isRegistryError } from './errors.ts';
import { listDigests, listOrEmpty } from './listing.ts';
import type { LocalRegistry } from './local-registry.ts';

export interface GcOptions {
  dryRun: boolean;
  deleteUntagged: boolean;
  /** Blobs younger than this are kept. */
  graceMs: number;
  onProgress?: (phase: 'mark' | 'sweep', done: number, total: number) => void;
  /** Called for every manifest or blob that goes (or would go, in a dry run). */
  onDelete?: (kind: 'manifest' | 'blob', what: string, bytes: number) => void;
}

export interface GcResult {
  dryRun: boolean;
  repositories: number;
  manifestsMarked: number;
  manifestsDeleted: number;
  blobsMarked: number;
  blobsDeleted: number;
  bytesFreed: number;
  /** Blob bytes stored after the run. */
  storedBytes: number;
  durationMs: number;
}

export async function collectGarbage(registry: LocalRegistry, options: GcOptions): Promise<GcResult> {
  return registry.exclusive('gc', () => run(registry, options));
}

async function run(registry: LocalRegistry, options: GcOptions): Promise<GcResult> {
  const started = Date.now();
  const { guard } = registry;
  await guard.beginRun();
  try {
    const marked = new Set<string>();
    const repositories = await registry.repositories();
    let manifestsMarked = 0;
    let manifestsDeleted = 0;

    for (const [i, repo] of repositories.entries()) {
      const revisions = await listDigests(registry.driver, paths.revisionsDir(repo));
      const keep = options.deleteUntagged ? await reachable(registry, repo, revisions) : new Set(revisions.map((d) => d.value));
      for (const digest of revisions) {
        if (keep.has(digest.value)) continue;
        const bytes = (await registry.manifests.tryLoad(digest))?.body.length ?? 0;
        const deleted = options.dryRun
          ? !(await guard.isPinned(digest.value))
          : await guard.deleteUnlessPinned(digest.value, () =>
              // A client may have deleted it meanwhile: gone either way.
              registry.manifests.delete(repo, digest.value).catch((err) => {
                if (!isRegistryError(err, 'MANIFEST_UNKNOWN')) throw err;
              }),
            );
        if (deleted) {
          manifestsDeleted++;
          options.onDelete?.('manifest', `${repo}@${digest.value}`, bytes);
        } else {
          keep.add(digest.value);
        }
      }
      for (const value of keep) {
        const digest = tryParseDigest(value);
        if (!digest) continue;
        manifestsMarked++;
        marked.add(digest.value);
        const loaded = await registry.manifests.tryLoad(digest).catch(() => undefined);
        if (!loaded) continue;
        for (const b of loaded.info.blobs) marked.add(b.digest);
        for (const c of loaded.info.children) marked.add(c.digest);
      }
      options.onProgress?.('mark', i + 1, repositories.length);
    }

    const { blobsDeleted, bytesFreed, bytesKept } = await sweepBlobs(registry, marked, options);
    return {
      dryRun: options.dryRun,
      repositories: repositories.length,
      manifestsMarked,
      manifestsDeleted,
      blobsMarked: marked.size,
      blobsDeleted,
      bytesFreed,
      storedBytes: bytesKept,
      durationMs: Date.now() - started,
    };
  } finally {
    await guard.endRun(options.graceMs);
  }
}

export interface SweepOptions {
  dryRun: boolean;
  graceMs: number;
  onProgress?: (phase: 'sweep', done: number, total: number) => void;
  onDelete?: (kind: 'blob', what: string, bytes: number) => void;
}

/** Deletes every blob not in `marked`, except young, recently used and pinned ones. */
export async function sweepBlobs(
  registry: LocalRegistry,
  marked: Set<string>,
  options: SweepOptions,
): Promise<{ blobsDeleted: number; bytesFreed: number; bytesKept: number } & GraceKept> {
  const { guard } = registry;
  const all = await listBlobs(registry);
  const now = Date.now();
  const graceCutoff = now - options.graceMs;
  let blobsDeleted = 0;
  let bytesFreed = 0;
  let bytesKept = 0;
  // Unreferenced blobs kept only because they are younger than the grace period, so a caller can say when they go.
  const grace: GraceKept = { blobsInGrace: 0, bytesInGrace: 0, graceEndsAt: null };
  const inGrace = (size: number, until: number) => {
    grace.blobsInGrace++;
    grace.bytesInGrace += size;
    if (grace.graceEndsAt === null || until > Date.parse(grace.graceEndsAt)) grace.graceEndsAt = new Date(until).toISOString();
  };
  for (const [i, digest] of all.entries()) {
    options.onProgress?.('sweep', i + 1, all.length);
    if (marked.has(digest.value)) {
      bytesKept += (await registry.blobs.stat(digest))?.size ?? 0;
      continue;
    }
    if (await guard.usedSince(digest.value, graceCutoff)) {
      // When it was last used is not known here: at the latest, now.
      const size = (await registry.blobs.stat(digest))?.size ?? 0;
      bytesKept += size;
      inGrace(size, now + options.graceMs);
      continue;
    }
    let size: number;
    try {
      const info = await registry.driver.stat(paths.blobData(digest));
      size = info.size;
      if (info.modTime.getTime() > graceCutoff) {
        bytesKept += size;
        inGrace(size, info.modTime.getTime() + options.graceMs);
        continue;
      }
    } catch (err) {
      if (isNotFound(err)) continue;
      throw err;
    }
    const deleted = options.dryRun
      ? !(await guard.isPinned(digest.value))
      : await guard.deleteUnlessPinned(digest.value, () => registry.blobs.deleteData(digest));
    if (deleted) {
      blobsDeleted++;
      bytesFreed += size;
      options.onDelete?.('blob', digest.value, size);
    } else {
      bytesKept += size;
    }
  }
  return { blobsDeleted, bytesFreed, bytesKept, ...grace };
}

export interface GraceKept {
  /** Blobs nothing refers to, kept because they are younger than the grace period. */
  blobsInGrace: number;
  bytesInGrace: number;
  /** When the last of them leaves the grace period (ISO time), or null when there are none. */
  graceEndsAt: string | null;
}

/** With deleteUntagged: the manifests tags reach, their index children, and referrers of anything kept. */
async function reachable(registry: LocalRegistry, repo: string, revisions: Digest[]): Promise<Set<string>> {
  const present = new Set(revisions.map((d) => d.value));
  const keep = new Set<string>();
  const queue: string[] = [];
  const add = (d: string) => {
    if (present.has(d) && !keep.has(d)) {
      keep.add(d);
      queue.push(d);
    }
  };
  for (const tag of await registry.manifests.tagsIfAny(repo)) {
    const d = await registry.blobs.readLink(paths.tagCurrentLink(repo, tag));
    if (d) add(d.value);
  }
  // Pushes in flight: a manifest pinned right now is about to be tagged or referenced.
  for (const d of present) if (await registry.guard.isPinned(d)) add(d);
  while (queue.length > 0) {
    const value = queue.pop() as string;
    const digest = tryParseDigest(value);
    if (!digest) continue;
    const loaded = await registry.manifests.tryLoad(digest).catch(() => undefined);
    for (const c of loaded?.info.children ?? []) add(c.digest);
    for (const r of await listDigests(registry.driver, paths.referrersDir(repo, digest))) add(r.value);
  }
  return keep;
}

/** Every blob in blobs/<algorithm>/<2 hex>/<hex>. */
export async function listBlobs(registry: LocalRegistry): Promise<Digest[]> {
  const out: Digest[] = [];
  for (const algorithm of await listOrEmpty(registry.driver, paths.blobs)) {
    for (const prefix of await listOrEmpty(registry.driver, paths.blobAlgorithmDir(algorithm))) {
      for (const hex of await listOrEmpty(registry.driver, `${paths.blobAlgorithmDir(algorithm)}/${prefix}`)) {
        const d = tryParseDigest(`${algorithm}:${hex}`);
        if (d && d.hex.startsWith(prefix)) out.push(d);
      }
    }
  }
  return out;
}
