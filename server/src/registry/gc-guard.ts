// Makes online garbage collection safe while pushes continue.
//
// The race to close: a manifest PUT checks that its blobs exist, then writes
// its links; a GC sweep that decided earlier that a blob is unreferenced may
// delete it in between, leaving a manifest that points at nothing. So:
// - a push *pins* every digest it is about to rely on before checking them,
//   and waits for any deletion of those digests already under way (after
//   which its own existence check fails cleanly with MANIFEST_BLOB_UNKNOWN);
// - the sweep skips pinned digests, and registers each deletion before it
//   starts it.
// Both steps run inside one event-loop tick each, so one of the two always
// sees the other. Pins of a run are dropped when the next run starts, except
// those of pushes still in flight.
// Blobs that clients looked at recently (HEAD before deciding not to upload)
// are remembered too, and the sweep keeps them for the grace period.
//
// This is the in-process guard (one server). Replicas sharing storage share
// the same state through Redis instead (shared/redis-gc-guard.ts); callers
// see one interface and await every step.
import type { Digest } from './digest.ts';

export interface GcGuard {
  /** Pins `digests` (waiting for deletions of them already under way); call the release once the links are written. */
  protect(digests: Iterable<Digest | string>): Promise<() => void | Promise<void>>;
  /** A client saw this blob (e.g. HEAD): keep it for a grace period even if nothing references it yet. */
  noteUse(digest: Digest): void | Promise<void>;
  usedSince(digest: string, since: number): boolean | Promise<boolean>;
  beginRun(): void | Promise<void>;
  endRun(graceMs: number): void | Promise<void>;
  isPinned(digest: string): boolean | Promise<boolean>;
  /** Deletes `digest` with `remove` unless a push pinned it; true when deleted. */
  deleteUnlessPinned(digest: string, remove: () => Promise<void>): Promise<boolean>;
}

export class InProcessGcGuard implements GcGuard {
  private pins = new Set<string>();
  /** Digests pushes in flight rely on (how many hold each): they stay pinned into the next run. */
  private readonly held = new Map<string, number>();
  private readonly deleting = new Map<string, Promise<void>>();
  private readonly recentUse = new Map<string, number>();
  private running = false;

  /**
   * Called by pushes before they check and link `digests`. Call the returned
   * release once the links are written: until then the pins survive the
   * start of new runs (a run that starts half way through a push must not
   * sweep what the push already checked).
   */
  async protect(digests: Iterable<Digest | string>): Promise<() => void> {
    const waits: Promise<void>[] = [];
    const keys: string[] = [];
    for (const d of digests) {
      const key = typeof d === 'string' ? d : d.value;
      keys.push(key);
      this.pins.add(key);
      this.held.set(key, (this.held.get(key) ?? 0) + 1);
      const pending = this.deleting.get(key);
      if (pending) waits.push(pending);
    }
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      for (const key of keys) {
        const n = (this.held.get(key) ?? 1) - 1;
        if (n <= 0) this.held.delete(key);
        else this.held.set(key, n);
      }
    };
    if (waits.length > 0) await Promise.allSettled(waits);
    return release;
  }

  /** A client saw this blob (e.g. HEAD): keep it for a grace period even if nothing references it yet. */
  noteUse(digest: Digest): void {
    if (this.running || this.recentUse.size < 100_000) this.recentUse.set(digest.value, Date.now());
  }

  usedSince(digest: string, since: number): boolean {
    const t = this.recentUse.get(digest);
    return t !== undefined && t >= since;
  }

  beginRun(): void {
    this.pins = new Set(this.held.keys());
    this.running = true;
  }

  endRun(graceMs: number): void {
    this.running = false;
    const cutoff = Date.now() - graceMs;
    for (const [k, t] of this.recentUse) if (t < cutoff) this.recentUse.delete(k);
  }

  isPinned(digest: string): boolean {
    return this.pins.has(digest);
  }

  /**
   * Deletes `digest` with `remove` unless a push pinned it; true when deleted.
   * The pin check and the registration happen in the same tick.
   */
  async deleteUnlessPinned(digest: string, remove: () => Promise<void>): Promise<boolean> {
    if (this.pins.has(digest)) return false;
    const work = remove();
    this.deleting.set(digest, work.catch(() => {}));
    try {
      await work;
      return true;
    } finally {
      this.deleting.delete(digest);
    }
  }
}
