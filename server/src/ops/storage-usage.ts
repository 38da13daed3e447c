// How many bytes of blobs the storage holds, for the UI's mirror and
// operations pages. Counting means listing and stating every blob (what GC's
// sweep does), so it is done on demand, one count at a time, and kept: until
// it is ten minutes old, or something says it is stale (a push, a GC or a
// prune). In between, the mirror's own fills are added as they commit, so the
// cache is seen growing without counting it again.
import { statfs } from 'node:fs/promises';
import * as path from 'node:path';
import { listBlobs } from '../registry/gc.ts';
import type { LocalRegistry } from '../registry/local-registry.ts';

export interface Usage {
  bytes: number;
  blobs: number;
  /** When the blobs were last counted (fills since then are added). */
  countedAt: string;
}

export interface Disk {
  /** The file system the data directory is on. */
  totalBytes: number;
  freeBytes: number;
}

const MAX_AGE_MS = 10 * 60_000;
const STAT_CONCURRENCY = 8;

export class StorageUsage {
  private counted: { bytes: number; blobs: number; at: number; filledBytes: number; filledBlobs: number } | undefined;
  private counting: Promise<void> | undefined;
  private stale = false;

  constructor(
    private readonly registry: LocalRegistry,
    /** The mirror's committed fills (counters that only grow). */
    private readonly filled?: { blobs: number; bytes: number },
    /** The filesystem driver's data directory (disk space is reported for it). */
    private readonly dataDir?: string,
  ) {}

  /** The next read counts again. */
  markStale(): void {
    this.stale = true;
  }

  async current(): Promise<Usage> {
    if (!this.counted || this.stale || Date.now() - this.counted.at > MAX_AGE_MS) {
      this.counting ??= this.count().finally(() => {
        this.counting = undefined;
      });
      await this.counting;
    }
    const c = this.counted!;
    return {
      bytes: c.bytes + (this.filled ? this.filled.bytes - c.filledBytes : 0),
      blobs: c.blobs + (this.filled ? this.filled.blobs - c.filledBlobs : 0),
      countedAt: new Date(c.at).toISOString(),
    };
  }

  /** The data directory's file system, or undefined on S3 (or when it cannot be asked). */
  async disk(): Promise<Disk | undefined> {
    // The directory may not exist before the first push: its nearest existing parent is on the same disk.
    for (let dir = this.dataDir; dir; dir = dir === path.dirname(dir) ? undefined : path.dirname(dir)) {
      try {
        const s = await statfs(dir);
        return { totalBytes: s.blocks * s.bsize, freeBytes: s.bavail * s.bsize };
      } catch {
        // Try the parent.
      }
    }
    return undefined;
  }

  private async count(): Promise<void> {
    this.stale = false;
    const filledBytes = this.filled?.bytes ?? 0;
    const filledBlobs = this.filled?.blobs ?? 0;
    const at = Date.now();
    const digests = await listBlobs(this.registry);
    let bytes = 0;
    let blobs = 0;
    for (let i = 0; i < digests.length; i += STAT_CONCURRENCY) {
      const infos = await Promise.all(digests.slice(i, i + STAT_CONCURRENCY).map((d) => this.registry.blobs.stat(d).catch(() => undefined)));
      for (const info of infos) {
        if (!info) continue;
        bytes += info.size;
        blobs++;
      }
    }
    this.counted = { bytes, blobs, at, filledBytes, filledBlobs };
  }
}
