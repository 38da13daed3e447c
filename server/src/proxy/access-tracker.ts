// Records when cached content was last used, by setting the access time of
// its files explicitly (utimes). That works the same on noatime and relatime
// mounts, unlike `find -atime`. Writes are throttled per file: pruning works
// in hours and days, so one update per file per throttle window is enough.
import type { StorageDriver } from '../storage/driver.ts';

export class AccessTracker {
  private readonly last = new Map<string, number>();

  constructor(
    private readonly driver: StorageDriver,
    private readonly throttleMs = 10 * 60_000,
  ) {}

  touch(key: string): void {
    const now = Date.now();
    const previous = this.last.get(key);
    if (previous !== undefined && now - previous < this.throttleMs) return;
    this.last.set(key, now);
    if (this.last.size > 200_000) this.forgetOlderThan(now - this.throttleMs);
    this.driver.touch(key, { accessed: new Date(now) }).catch(() => {
      this.last.delete(key);
    });
  }

  private forgetOlderThan(cutoff: number): void {
    for (const [k, t] of this.last) if (t < cutoff) this.last.delete(k);
  }
}
