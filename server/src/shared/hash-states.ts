// Where resumable SHA-256 states of upload sessions live, so that a PATCH or
// PUT landing on another replica carries on hashing where the last one
// stopped (registry/uploads.ts): in Redis, one key per session,
// "<prefix>upload:<id>:sha256", holding the 8-byte offset followed by
// hash-wasm's state; it expires with the upload purging age, and goes when
// the session ends. (A single instance keeps the native hash in memory.)
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
