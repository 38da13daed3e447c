// What the registry has been doing lately, for the UI's mirror and operations
// pages: pulls and bytes sent over the last day in five-minute buckets, the
// mirror's hits and misses with the bytes of each, the most pulled
// repositories, and a signal when what the lists show changed (a push, a
// delete, a manifest the mirror fetched). Fed by the request pipeline with
// what it already knows about each finished request; nothing here runs on a
// timer, and the buckets are allocated by the first request counted.

export interface FinishedRequest {
  route: string;
  method: string;
  status: number;
  repo?: string;
  bytesOut?: number;
  cache?: 'hit' | 'miss';
}

export interface ActivityBucket {
  /** The bucket's start (ISO 8601). */
  at: string;
  /** Manifest GETs answered. */
  pulls: number;
  /** Response body bytes sent. */
  bytes: number;
}

export interface CacheTotals {
  hits: number;
  misses: number;
  /** Body bytes of hits (served from the cache) and of misses (fetched from the upstream as they were served). */
  hitBytes: number;
  missBytes: number;
}

export const BUCKET_MS = 5 * 60_000;
/** A day of five-minute buckets: 288 × 3 numbers. */
export const BUCKETS = 288;
/** Repositories whose pulls are counted at once; past that, the least pulled are forgotten. */
const MAX_COUNTED_REPOS = 5000;

export class Activity {
  /** Per bucket: its number (time / BUCKET_MS), pulls, bytes. Ring indexed by bucket number modulo BUCKETS. */
  private ring: { slot: Float64Array; pulls: Float64Array; bytes: Float64Array } | undefined;
  readonly cache: CacheTotals = { hits: 0, misses: 0, hitBytes: 0, missBytes: 0 };
  private readonly pullsByRepo = new Map<string, number>();
  private readonly listeners = new Set<(repo: string | undefined) => void>();

  constructor(private readonly now: () => number = Date.now) {}

  record(r: FinishedRequest): void {
    const ok = r.status >= 200 && r.status < 300;
    const pull = ok && r.route === 'manifest' && r.method === 'GET';
    this.count(pull ? 1 : 0, r.bytesOut ?? 0);
    if (pull && r.repo) this.countPull(r.repo);
    if (r.cache && ok) {
      if (r.cache === 'hit') {
        this.cache.hits++;
        this.cache.hitBytes += r.bytesOut ?? 0;
      } else {
        this.cache.misses++;
        this.cache.missBytes += r.bytesOut ?? 0;
      }
    }
    if (ok && r.route === 'manifest' && (r.method === 'PUT' || r.method === 'DELETE')) this.changed(r.repo);
    // A manifest the mirror fetched is new in its cache (the request's name is the cache's, canonical one).
    if (pull && r.cache === 'miss') this.changed(r.repo);
  }

  /** Tells whoever shows repositories that `repo` (undefined: any) changed. */
  changed(repo: string | undefined): void {
    for (const listener of this.listeners) listener(repo);
  }

  onChange(listener: (repo: string | undefined) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** The last day, oldest bucket first, the current (partial) one last. */
  series(): ActivityBucket[] {
    const current = Math.floor(this.now() / BUCKET_MS);
    const out: ActivityBucket[] = [];
    for (let n = current - BUCKETS + 1; n <= current; n++) {
      const i = n % BUCKETS;
      const live = this.ring !== undefined && this.ring.slot[i] === n;
      out.push({ at: new Date(n * BUCKET_MS).toISOString(), pulls: live ? this.ring!.pulls[i] : 0, bytes: live ? this.ring!.bytes[i] : 0 });
    }
    return out;
  }

  /** The most pulled repositories since the start (manifest GETs), most first, that `keep` lets through. */
  async topPulled(n: number, keep: (repo: string) => Promise<boolean> = async () => true): Promise<Array<{ name: string; pulls: number }>> {
    const sorted = [...this.pullsByRepo].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
    const out: Array<{ name: string; pulls: number }> = [];
    for (const [name, pulls] of sorted) {
      if (out.length >= n) break;
      if (await keep(name)) out.push({ name, pulls });
    }
    return out;
  }

  private count(pulls: number, bytes: number): void {
    const n = Math.floor(this.now() / BUCKET_MS);
    this.ring ??= { slot: new Float64Array(BUCKETS).fill(-1), pulls: new Float64Array(BUCKETS), bytes: new Float64Array(BUCKETS) };
    const i = n % BUCKETS;
    if (this.ring.slot[i] !== n) {
      this.ring.slot[i] = n;
      this.ring.pulls[i] = 0;
      this.ring.bytes[i] = 0;
    }
    this.ring.pulls[i] += pulls;
    this.ring.bytes[i] += bytes;
  }

  private countPull(repo: string): void {
    this.pullsByRepo.set(repo, (this.pullsByRepo.get(repo) ?? 0) + 1);
    if (this.pullsByRepo.size <= MAX_COUNTED_REPOS) return;
    // Forget the less pulled half: a name pulled once among thousands is not a "most pulled" one.
    const counts = [...this.pullsByRepo.values()].sort((a, b) => a - b);
    const cut = counts[Math.floor(counts.length / 2)];
    for (const [name, c] of this.pullsByRepo) if (c <= cut && name !== repo) this.pullsByRepo.delete(name);
  }
}
