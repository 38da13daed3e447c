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
import { Readable, type Writable } from 'node:stream';
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
  /**
   * Where a reader is (called as it moves on, and with undefined when it stops):
   * the fill keeps what readers close behind the head still need in memory, so
   * that they need not read it back from storage.
   */
  readerAt?(reader: object, pos: number | undefined): void;
  /**
   * A reader took `chunk` from memory (fromMemory). `tracked`: it hands the chunk
   * back (giveBack) once nothing can read it any more; otherwise its consumer
   * may hold it for as long as it likes (a plain stream), and the fill must
   * leave its memory to the GC.
   */
  lend?(chunk: Buffer, tracked: boolean): void;
  /** A chunk lent to a tracked reader is written out: the reader no longer holds it. */
  giveBack?(chunk: Buffer): void;
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
  return new TailReadable(source, driver, false, range);
}

/**
 * The same bytes, written to `dest` (a response) by us rather than piped: each
 * chunk from the fill's memory goes back to the fill once its write is over
 * (the socket has let go of it), so the fill may free it then instead of
 * leaving it to the GC. Resolves once every write is over; rejects when the
 * fill fails or `dest` closes first.
 */
export function tailSender(source: TailSource, driver: StorageDriver, range?: ByteRange): (dest: Writable) => Promise<void> {
  return (dest) =>
    new Promise<void>((resolve, reject) => {
      const tail = new TailReadable(source, driver, true, range);
      let writing = 0;
      let ended = false;
      let over = false;
      const finish = (err?: Error) => {
        if (over) return;
        over = true;
        dest.off('close', gone);
        dest.off('drain', drained);
        if (err) {
          tail.destroy();
          reject(err);
        } else resolve();
      };
      const gone = () => finish(new Error('the client went away'));
      const drained = () => tail.resume();
      dest.on('close', gone);
      dest.on('drain', drained);
      tail.on('data', (chunk: Buffer) => {
        writing++;
        const more = dest.write(chunk, (err) => {
          writing--;
          source.giveBack?.(chunk);
          if (err) finish(err);
          else if (ended && writing === 0) finish();
        });
        if (!more) tail.pause();
      });
      tail.once('end', () => {
        ended = true;
        if (writing === 0) finish();
      });
      tail.once('error', (err) => finish(err));
    });
}

/**
 * A client's response body. It pushes what it can synchronously, from the
 * fill's memory, as long as its consumer wants more, and waits only when it
 * reached the head of the fill or reads from storage: per chunk at the head
 * of a fill that is one wake-up, where an async generator under Readable.from
 * cost several promises (a third of this thread's time in a cold pull went
 * to such per-chunk machinery).
 */
class TailReadable extends Readable {
  private pos: number;
  /** A wait or a storage read is running: it calls pull() again when it is over. */
  private busy = false;
  /** The storage read in progress, destroyed with the response. */
  private stored: Readable | undefined;
  /** Wakes a storage read that pushed more than the consumer wanted, once it wants more. */
  private wanted: (() => void) | undefined;

  constructor(
    private readonly source: TailSource,
    private readonly driver: StorageDriver,
    /** Whether the chunks this pushes are handed back to the source once written (tailSender). */
    private readonly tracked: boolean,
    private readonly range?: ByteRange,
  ) {
    super();
    this.pos = range?.start ?? 0;
  }

  override _read(): void {
    const wanted = this.wanted;
    this.wanted = undefined;
    if (wanted) wanted();
    else this.pull();
  }

  override _destroy(err: Error | null, callback: (error?: Error | null) => void): void {
    this.source.readerAt?.(this, undefined);
    this.stored?.destroy();
    this.wanted?.();
    callback(err);
  }

  /** Pushes what is readable now while the consumer wants it; otherwise starts what waits for more. */
  private pull(): void {
    const source = this.source;
    while (!this.busy && !this.destroyed) {
      if (source.failure) return void this.destroy(source.failure);
      const end = this.range?.end ?? (source.size !== undefined ? source.size - 1 : Number.POSITIVE_INFINITY);
      const available = source.available ?? source.written;
      if (this.pos > end || (source.complete && this.pos >= available)) {
        this.source.readerAt?.(this, undefined);
        this.push(null);
        return;
      }
      // Unverified, the response's last byte stays back, and so does the last byte received when the size is
      // unknown (it may be the blob's last). With the size known, every byte before `end` goes as it arrives:
      // holding back the last byte received split each chunk in two writes to the client.
      const held = source.size === undefined ? available - 1 : available;
      const readable = source.complete ? available : Math.max(0, Math.min(held, end));
      if (!source.complete && this.pos >= end) return this.wait(source.whenComplete());
      const last = Math.min(end, readable - 1);
      const inMemory = this.pos <= last ? source.fromMemory?.(this.pos, last) : undefined;
      if (inMemory) {
        source.lend?.(inMemory, this.tracked);
        this.pos += inMemory.length;
        source.readerAt?.(this, this.pos);
        if (!this.push(inMemory)) return;
        continue;
      }
      if (this.pos < readable && this.pos < source.written && source.key) return this.wait(this.fromStorage(source.key, last));
      return this.wait(source.waitForMore(this.pos));
    }
  }

  private wait(until: Promise<void>): void {
    this.busy = true;
    until.then(
      () => {
        this.busy = false;
        this.pull();
      },
      (err: Error) => this.destroy(err),
    );
  }

  /** Reads on from what is stored at `key`, up to `last`. */
  private async fromStorage(key: string, last: number): Promise<void> {
    try {
      const stream = (this.stored = await this.driver.reader(key, { start: this.pos, end: Math.min(last, this.source.written - 1) }));
      for await (const chunk of stream) {
        if (this.destroyed) return;
        this.pos += (chunk as Buffer).length;
        if (!this.push(chunk)) await new Promise<void>((resolve) => (this.wanted = resolve));
      }
    } catch (err) {
      if (this.destroyed) return;
      // The upload object moved into blobs/ between our checks: once the commit
      // is seen (the key changes), read on from there.
      if (!isNotFound(err)) throw err;
      if (key === this.source.key) await this.source.done.catch(() => {});
    } finally {
      this.stored = undefined;
    }
    this.source.readerAt?.(this, this.pos);
  }
}
