// Cutting a stream into parts for S3, which takes no stream of unknown length
// in one request: the part objects of append() and the parts of putStream()'s
// multipart upload.

/** One part of a stream cut by PartQueue: its place in the stream and its bytes. */
export interface QueuedPart {
  /** 0, 1, 2, … */
  index: number;
  /** Where the part starts, counted from the queue's first byte. */
  offset: number;
  chunks: Buffer[];
  size: number;
}

/** A part's bytes in one buffer (no copy when it arrived as one chunk). */
export function concatParts(part: QueuedPart): Buffer {
  return part.chunks.length === 1 ? part.chunks[0] : Buffer.concat(part.chunks, part.size);
}

/**
 * Cuts a stream into parts of `partSize` bytes (flush() also cuts a shorter one)
 * and stores up to `concurrency` of them at the same time, while the next one
 * fills: a single request at a time would cap the stream at one request's
 * throughput. `tap` sees each part's chunks in order, once that part and every
 * part before it are stored. Used by append() (part objects) and putStream()
 * (parts of a multipart upload).
 */
export class PartQueue {
  /** Bytes buffered for the next part. */
  pendingBytes = 0;
  /** Parts handed to `store` so far. */
  count = 0;
  /** Bytes stored (and tapped) so far, in order. */
  written = 0;
  /** A part failed to store (seen while waiting for room). */
  failed = false;
  private pending: Buffer[] = [];
  private queued = 0;
  private ordered: Promise<void> = Promise.resolve();
  private readonly inFlight: Array<Promise<void>> = [];

  constructor(
    private readonly partSize: number,
    private readonly concurrency: number,
    private readonly tap: ((chunk: Buffer) => void) | undefined,
    private readonly store: (part: QueuedPart) => Promise<void>,
    /** At most this many parts (S3's limit for a multipart upload), `what` naming the object in the error. */
    private readonly limit: { maxParts: number; what: string } = { maxParts: Number.POSITIVE_INFINITY, what: '' },
  ) {}

  /** Buffers bytes; stores every part they complete, waiting while `concurrency` parts are being stored. */
  async write(bytes: Buffer): Promise<void> {
    let chunk = bytes;
    while (chunk.length > 0) {
      const take = Math.min(chunk.length, this.partSize - this.pendingBytes);
      this.pending.push(take === chunk.length ? chunk : chunk.subarray(0, take));
      this.pendingBytes += take;
      chunk = chunk.subarray(take);
      if (this.pendingBytes === this.partSize) {
        this.flush();
        await this.drain();
      }
    }
  }

  /** Stores what is buffered as a part (a short or empty one, when that is all there is). */
  flush(): void {
    if (this.count >= this.limit.maxParts) throw new Error(`${this.limit.what}: more than ${this.limit.maxParts} parts of ${this.partSize} bytes`);
    const part: QueuedPart = { index: this.count++, offset: this.queued, chunks: this.pending, size: this.pendingBytes };
    this.queued += part.size;
    this.pending = [];
    this.pendingBytes = 0;
    const stored = this.store(part);
    stored.catch(() => {}); // awaited in order below
    const previous = this.ordered;
    this.ordered = (async () => {
      await previous;
      await stored;
      for (const chunk of part.chunks) this.tap?.(chunk);
      this.written += part.size;
    })();
    this.ordered.catch(() => {}); // awaited by drain() or settle(); not an unhandled rejection meanwhile
    this.inFlight.push(this.ordered);
  }

  /** Resolves once every part is stored; rejects with the first failure. */
  async settle(): Promise<void> {
    await Promise.allSettled(this.inFlight);
    await this.ordered;
  }

  private async drain(): Promise<void> {
    try {
      while (this.inFlight.length >= this.concurrency) await this.inFlight.shift();
    } catch (err) {
      this.failed = true;
      throw err;
    }
  }
}
