// Records when cached content was last used, by setting the access time of
// its files explicitly (utimes). That works the same on noatime and relatime
// mounts, unlike `find -atime`.
//
// Pruning works in hours and days, so the writes are cheap to put off:
// - throttled per file: one update per file per throttle window;
// - deferred and batched: written a few seconds after the use, a few at a
//   time, so they do not compete with the pull that caused them for the
//   storage (on S3 one touch is four requests, and a pull's burst of blob
//   GETs is exactly when the object store is busiest).
import type { StorageDriver } from '../storage/driver.ts';

export interface AccessTrackerOptions {
  /** One write per file at most this often. */
  throttleMs?: number;
  /** How long after a use its write is made (uses meanwhile join the same batch). */
  delayMs?: number;
  /** Writes in flight at once. */
  concurrency?: number;
}

export class AccessTracker {
  /** When each file's last use was recorded (for the throttle). */
  private readonly last = new Map<string, number>();
  /** Uses not written yet: file → time of use. */
  private readonly pending = new Map<string, number>();
  private timer: NodeJS.Timeout | undefined;
  private draining: Promise<void> | undefined;
  private readonly throttleMs: number;
  private readonly delayMs: number;
  private readonly concurrency: number;

  constructor(
    private readonly driver: StorageDriver,
    options: AccessTrackerOptions = {},
  ) {
    this.throttleMs = options.throttleMs ?? 10 * 60_000;
    this.delayMs = options.delayMs ?? 5_000;
    this.concurrency = options.concurrency ?? 4;
  }

  touch(key: string): void {
    const now = Date.now();
    const previous = this.last.get(key);
    if (previous !== undefined && now - previous < this.throttleMs) return;
    this.last.set(key, now);
    if (this.last.size > 200_000) this.forgetOlderThan(now - this.throttleMs);
    this.pending.set(key, now);
    this.timer ??= setTimeout(() => void this.flush(), this.delayMs).unref();
  }

  /** Writes every use recorded so far now; resolves when they are written (failures are dropped, see below). */
  flush(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.draining ??= this.drain().finally(() => {
      this.draining = undefined;
    });
    return this.draining;
  }

  private async drain(): Promise<void> {
    while (this.pending.size > 0) {
      const batch = [...this.pending].slice(0, this.concurrency);
      for (const [key] of batch) this.pending.delete(key);
      await Promise.all(
        batch.map(([key, at]) =>
          this.driver.touch(key, { accessed: new Date(at) }).catch(() => {
            // Gone meanwhile (pruned, collected) or the storage failed: the next use records it again.
            this.last.delete(key);
          }),
        ),
      );
    }
  }

  private forgetOlderThan(cutoff: number): void {
    for (const [k, t] of this.last) if (t < cutoff) this.last.delete(k);
  }
}
