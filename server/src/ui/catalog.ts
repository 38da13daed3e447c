// The repository list: pages of the catalog with each repository's tag
// count, total size and last push, fast with thousands of repositories.
// - The catalog's names are read once (a walk of the repositories tree) and
//   kept, sorted, until a push, delete or mirror fetch brings a name not in
//   them, or for 30 s (other replicas' pushes); a page is a binary search and
//   a slice, not a walk.
// - A repository's summary (reading its tags' manifests) is kept until the
//   repository changes, or for 30 s; at most 10,000 of them.
// Reads go to the local store (the mirror's cache), never an upstream.
import { type Digest, tryParseDigest } from '../registry/digest.ts';
import type { LocalRegistry } from '../registry/local-registry.ts';
import { LruCache } from '../registry/lru.ts';

export interface RepositorySummary {
  name: string;
  tags: number;
  /** Bytes of the distinct blobs and manifests its tags reach (a layer shared by tags counted once). */
  size: number;
  /** The newest tag's last push (ISO 8601); absent without tags. */
  lastPush?: string;
  /** More tags than were read for the size and last push (MAX_TAGS_READ). */
  partial?: boolean;
}

export interface RepositoryPage {
  repositories: RepositorySummary[];
  /** Pass as `last` for the next page; absent on the last page. */
  next?: string;
}

const FRESH_MS = 30_000;
const MAX_SUMMARIES = 10_000;
/** Beyond this many names the catalog is not kept (read again for each page, as before). */
const MAX_KEPT_NAMES = 200_000;
/** Tags read per repository for its size and last push. */
const MAX_TAGS_READ = 500;

export class RepositoryCatalog {
  private names: { list: string[]; set: Set<string>; at: number } | undefined;
  private reading: Promise<string[]> | undefined;
  private readonly summaries = new LruCache<string, { value: RepositorySummary; at: number }>(MAX_SUMMARIES, () => 1);

  constructor(
    private readonly store: LocalRegistry,
    private readonly now: () => number = Date.now,
  ) {}

  /** `name` changed (undefined: anything may have). */
  changed(name: string | undefined): void {
    if (name === undefined) {
      this.names = undefined;
      this.summaries.clear();
      return;
    }
    this.summaries.delete(name);
    if (this.names && !this.names.set.has(name)) this.names = undefined;
  }

  /** Up to `n` repositories after `last` whose name contains `q` and that `visible` lets this client see. */
  async page(options: { q?: string; last?: string; n: number; visible: (name: string) => Promise<boolean> }): Promise<RepositoryPage> {
    const q = (options.q ?? '').toLowerCase();
    const names = await this.allNames();
    const found: string[] = [];
    for (let i = options.last === undefined ? 0 : upperBound(names, options.last); i < names.length && found.length <= options.n; i++) {
      const name = names[i];
      if (q && !name.toLowerCase().includes(q)) continue;
      if (await options.visible(name)) found.push(name);
    }
    const shown = found.slice(0, options.n);
    const repositories = await Promise.all(shown.map((name) => this.summary(name)));
    return { repositories, next: found.length > options.n ? shown[shown.length - 1] : undefined };
  }

  async summary(name: string): Promise<RepositorySummary> {
    const kept = this.summaries.get(name);
    if (kept && this.now() - kept.at < FRESH_MS) return kept.value;
    const at = this.now();
    const value = await this.read(name);
    this.summaries.set(name, { value, at });
    return value;
  }

  private async allNames(): Promise<string[]> {
    if (this.names && this.now() - this.names.at < FRESH_MS) return this.names.list;
    this.reading ??= (async () => {
      const at = this.now();
      const list = (await this.store.catalog({})).items;
      this.names = list.length <= MAX_KEPT_NAMES ? { list, set: new Set(list), at } : undefined;
      return list;
    })().finally(() => {
      this.reading = undefined;
    });
    return this.reading;
  }

  private async read(name: string): Promise<RepositorySummary> {
    const tags = await this.store.listTags(name, {}).then((p) => p.items, () => [] as string[]);
    const read = tags.slice(0, MAX_TAGS_READ);
    const sizes = new Map<string, number>();
    let newest: Date | undefined;
    for (const tag of read) {
      const [time, digest] = await Promise.all([
        this.store.manifests.tagTime(name, tag),
        this.store.manifests.resolve(name, tag).catch(() => undefined),
      ]);
      if (time && (!newest || time > newest)) newest = time;
      if (digest) await this.addManifest(digest, sizes);
    }
    let size = 0;
    for (const bytes of sizes.values()) size += bytes;
    return { name, tags: tags.length, size, lastPush: newest?.toISOString(), ...(tags.length > read.length ? { partial: true } : {}) };
  }

  /** Adds a manifest, its blobs and (for an index) its children's, by digest, to `sizes`; false when it is not stored. */
  private async addManifest(digest: Digest, sizes: Map<string, number>, depth = 0): Promise<boolean> {
    if (sizes.has(digest.value)) return true;
    const loaded = depth > 2 ? undefined : await this.store.manifests.tryLoad(digest).catch(() => undefined);
    if (!loaded) return false;
    sizes.set(digest.value, loaded.body.length);
    for (const blob of loaded.info.blobs) sizes.set(blob.digest, blob.size);
    for (const child of loaded.info.children) {
      const d = tryParseDigest(child.digest);
      // A child not stored (a mirror caches the platforms pulled) counts its manifest's size only.
      if (!d || !(await this.addManifest(d, sizes, depth + 1))) sizes.set(child.digest, child.size);
    }
    return true;
  }
}

/** The index of the first name after `last` in sorted `names`. */
function upperBound(names: string[], last: string): number {
  let lo = 0;
  let hi = names.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (names[mid] <= last) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
