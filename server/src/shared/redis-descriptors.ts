// storage.cache.blobdescriptor: redis — digest → size, shared by the
// replicas, under "<prefix>blob:<digest>".
//
// A deletion writes a tombstone ("-1", for TOMBSTONE_MS) before and after the
// data goes, and a stat may only fill an absent key (SET NX): a stat on
// another replica that saw the blob just before it was deleted cannot bring
// the entry back. A commit (upload finished, manifest stored; both under a GC
// pin, so no deletion can be under way) overwrites the tombstone. Entries
// expire after a day, which bounds what a blob deleted behind our back (an
// offline GC without Redis) can leave.
import type { DescriptorCache } from '../registry/blob-store.ts';
import type { SharedRedis } from './redis.ts';

const ENTRY_TTL_MS = 24 * 3_600_000;
const TOMBSTONE_MS = 60_000;
const TOMBSTONE = '-1';

export class RedisDescriptorCache implements DescriptorCache {
  constructor(private readonly redis: SharedRedis) {}

  private key(digest: string): string {
    return this.redis.key('blob', digest);
  }

  async get(digest: string): Promise<number | undefined> {
    const v = await this.redis.client.get(this.key(digest));
    if (v === null || v === TOMBSTONE) return undefined;
    const n = Number(v);
    return Number.isSafeInteger(n) && n >= 0 ? n : undefined;
  }

  async fill(digest: string, size: number): Promise<void> {
    await this.redis.client.set(this.key(digest), String(size), 'PX', ENTRY_TTL_MS, 'NX');
  }

  async put(digest: string, size: number): Promise<void> {
    await this.redis.client.set(this.key(digest), String(size), 'PX', ENTRY_TTL_MS);
  }

  async invalidate(digest: string): Promise<void> {
    await this.redis.client.set(this.key(digest), TOMBSTONE, 'PX', TOMBSTONE_MS);
  }
}
