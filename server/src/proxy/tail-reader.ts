// Reading a blob while a cache fill writes it, for any number of clients at
// their own pace: a client reads what is stored (or, at the head of this
// process's own fill, what is still in memory on its way to storage), waits
// for more, and reads on, switching to the committed blob when the upload
// object moves there.
// The last byte a response is to carry (the blob's last byte, or the last of
// the Range asked for) is held back until the fill says the bytes are complete
// (their digest verified), so no client receives a complete blob, or a
// complete 206, whose bytes do not match it: when verification fails, the
// response is cut short. Shared by this process's fills (blob-fill.ts) and
// other replicas' (remote-fill.ts), which differ only in how they learn of
// progress.
import { Readable } from 'node:stream';
import { type ByteRange, isNotFound, type StorageDriver } from '../storage/driver.ts';

export interface TailSource {
  /** The blob's size, once known. */
  readonly size: number | undefined;
  /** Bytes stored so far at `key`. */
  readonly written: number;
  /**
   * Bytes a reader may have so far: `written`, plus what the fill holds in
   * memory on its way to storage (this process's own fills; see `fromMemory`).
   */
  readonly available?: number;
  /**
   * Bytes from `pos` (up to `end`) that the fill still holds in memory, or
   * undefined when `pos` is no longer there (then it is in storage). Lets a
   * client at the head of a fill have bytes as they arrive instead of after
   * they were stored (on S3 a part is stored only once it is complete).
   */
  fromMemory?(pos: number, end: number): Buffer | undefined;
  /** All bytes are stored and verified: the last byte may go out. */
  readonly complete: boolean;
  /** Set when the fill failed. */
  readonly failure: Error | undefined;
  /** Where the bytes are now (the upload object, then the committed blob). */
  readonly key: string | undefined;
  /** Settles when the fill ended. */
  readonly done: Promise<void>;
  /** Resolves when more than `pos` bytes may be readable, or the fill ended. */
  waitForMore(pos: number): Promise<void>;
  /** Resolves once the fill is complete (verified) or failed. */
  whenComplete(): Promise<void>;
}

export function tailStream(source: TailSource, driver: StorageDriver, range?: ByteRange): Readable {
  return Readable.from(tailChunks(source, driver, range), { objectMode: false });
}

async function* tailChunks(source: TailSource, driver: StorageDriver, range?: ByteRange): AsyncGenerator<Buffer> {
  let pos = range?.start ?? 0;
  for (;;) {
    if (source.failure) throw source.failure;
    const end = range?.end ?? (source.size !== undefined ? source.size - 1 : Number.POSITIVE_INFINITY);
    if (pos > end) return;
    const available = source.available ?? source.written;
    if (source.complete && pos >= available) return;
    // Unverified, the response's last byte stays back, and so does the last byte received when the size is
    // unknown (it may be the blob's last). With the size known, every byte before `end` goes as it arrives:
    // holding back the last byte received split each chunk in two writes to the client.
    const held = source.size === undefined ? available - 1 : available;
    const readable = source.complete ? available : Math.max(0, Math.min(held, end));
    if (!source.complete && pos >= end) {
      await source.whenComplete();
      continue;
    }
    const last = Math.min(end, readable - 1);
    const inMemory = pos <= last ? source.fromMemory?.(pos, last) : undefined;
    if (inMemory) {
      pos += inMemory.length;
      yield inMemory;
      continue;
    }
    const key = source.key;
    if (pos < readable && pos < source.written && key) {
      try {
        const stream = await driver.reader(key, { start: pos, end: Math.min(last, source.written - 1) });
        for await (const chunk of stream) {
          pos += (chunk as Buffer).length;
          yield chunk as Buffer;
        }
      } catch (err) {
        // The upload object moved into blobs/ between our checks: once the commit
        // is seen (the key changes), read on from there.
        if (!isNotFound(err)) throw err;
        if (key === source.key) await source.done.catch(() => {});
      }
      continue;
    }
    await source.waitForMore(pos);
  }
}
