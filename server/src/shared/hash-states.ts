// Where resumable SHA-256 states of upload sessions live, so that a PATCH or
// PUT landing on another replica carries on hashing where the last one
// stopped (registry/uploads.ts).
//
// - Redis: one key per session, "<prefix>upload:<id>:sha256", holding the
//   8-byte offset followed by hash-wasm's state; it expires with the upload
//   purging age, and goes when the session ends.
// - Storage (S3 without Redis): distribution's layout,
//   _uploads/<id>/hashstates/sha256/<offset>, removed with the session's
//   directory. The state this process saved before is deleted when it saves
//   the next one.
import { isNotFound, type StorageDriver } from '../storage/driver.ts';
import { paths } from '../storage/paths.ts';
import type { HashStateStore } from '../registry/uploads.ts';
import type { SharedRedis } from './redis.ts';

const ALGORITHM = 'sha256';

export class RedisHashStates implements HashStateStore {
  constructor(
    private readonly redis: SharedRedis,
    /** How long a state outlives its last save (the upload purging age). */
    private readonly ttlMs: number,
  ) {}

  private key(id: string): string {
    return this.redis.key('upload', id, ALGORITHM);
  }

  async save(_name: string, id: string, offset: number, state: Uint8Array): Promise<void> {
    const value = Buffer.alloc(8 + state.length);
    value.writeBigUInt64BE(BigInt(offset), 0);
    value.set(state, 8);
    await this.redis.client.set(this.key(id), value, 'PX', this.ttlMs);
  }

  async load(_name: string, id: string, offset: number): Promise<Uint8Array | undefined> {
    const value = await this.redis.client.getBuffer(this.key(id));
    if (!value || value.length < 8) return undefined;
    if (Number(value.readBigUInt64BE(0)) !== offset) return undefined;
    return new Uint8Array(value.subarray(8));
  }

  async remove(_name: string, id: string): Promise<void> {
    await this.redis.client.del(this.key(id));
  }
}

export class StorageHashStates implements HashStateStore {
  /** upload id → the offset whose state this process saved last. */
  private readonly last = new Map<string, number>();

  constructor(private readonly driver: StorageDriver) {}

  async save(name: string, id: string, offset: number, state: Uint8Array): Promise<void> {
    await this.driver.putContent(paths.uploadHashState(name, id, ALGORITHM, offset), state);
    const previous = this.last.get(id);
    this.last.delete(id);
    if (this.last.size > 10_000) this.last.clear();
    this.last.set(id, offset);
    if (previous !== undefined && previous !== offset) {
      await this.driver.delete(paths.uploadHashState(name, id, ALGORITHM, previous)).catch(() => {});
    }
  }

  async load(name: string, id: string, offset: number): Promise<Uint8Array | undefined> {
    try {
      return new Uint8Array(await this.driver.getContent(paths.uploadHashState(name, id, ALGORITHM, offset)));
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  async remove(_name: string, id: string): Promise<void> {
    // The states live in the session's directory, which goes with it.
    this.last.delete(id);
  }
}
