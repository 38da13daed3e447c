// Appendable objects. S3 cannot append, so append(key) stores the bytes as
// part objects "<key>/.parts/<16-digit start offset>", each one PutObject of at
// most `chunkSize` bytes buffered in memory (never the whole blob: one part is
// stored while the next fills, so at most two per append). A source that
// pauses for a moment has what it sent stored as a smaller part, so that a
// mirror's clients tailing a slow upstream fill are not kept waiting for a
// whole part. A part is written in one piece and becomes visible whole, so
// stat() (the sum of the contiguous parts) and read() (which stitches them) see
// a consistent prefix of the stream at any time, from any process, while an
// append is still running. The `tap` callback sees bytes only once their part
// is stored: "written" means readable by everyone. move() composes the parts
// into one object (multipart.ts), then deletes them.
import type { Readable } from 'node:stream';
import { PathNotFoundError } from '../driver.ts';
import { isNotFoundError, rangeHeader, type S3Bucket } from './bucket.ts';
import type { AppendSettings } from './config.ts';
import { partKey } from './keys.ts';
import { type Appendable, listParts } from './listing.ts';
import type { Multipart } from './multipart.ts';
import { concatParts, PartQueue } from './part-queue.ts';

export class Appendables {
  constructor(
    private readonly bucket: S3Bucket,
    private readonly multipart: Multipart,
    private readonly settings: AppendSettings,
  ) {}

  /** Appends `source` to the object at `k`; resolves with the number of bytes appended. */
  async append(k: string, source: Readable, tap?: (chunk: Buffer) => void): Promise<number> {
    const startOffset = await this.prepare(k);
    const parts = new PartQueue(this.settings.chunkSize, this.settings.concurrency, tap, (part) =>
      this.bucket.put(partKey(k, startOffset + part.offset), concatParts(part)),
    );
    // A source that pauses (a slow upstream, a client between writes) gets what it
    // sent so far stored as a smaller part, so that readers need not wait for a full one.
    let idle: NodeJS.Timeout | undefined;
    const armIdleFlush = () => {
      clearTimeout(idle);
      if (parts.pendingBytes > 0 && this.settings.idleFlushMs > 0) {
        idle = setTimeout(() => {
          if (parts.pendingBytes > 0) parts.flush();
        }, this.settings.idleFlushMs);
      }
    };

    let sourceError: unknown;
    try {
      for await (const raw of source) {
        clearTimeout(idle);
        await parts.write(typeof raw === 'string' ? Buffer.from(raw) : (raw as Buffer));
        armIdleFlush();
      }
    } catch (err) {
      sourceError = err;
    } finally {
      clearTimeout(idle);
    }
    // The bytes received before a source failure stay, as in a file: the caller resumes from stat().
    if (parts.pendingBytes > 0 && !parts.failed) parts.flush();
    // A failed part write ends the append with that error (the parts before it stay; any stored
    // after it are not contiguous, so they are no part of the object, and the next append removes them).
    await parts.settle();
    if (sourceError) throw sourceError;
    if (parts.written === 0 && startOffset === 0) {
      // Appending nothing still creates the (empty) object, as a file would be created.
      await this.bucket.put(partKey(k, 0), Buffer.alloc(0));
    }
    return parts.written;
  }

  /** The bytes [start, end] of an appendable object, part by part; `key` names it in errors. */
  async *read(key: string, appendable: Appendable, start: number, end: number): AsyncGenerator<Buffer> {
    for (const part of appendable.parts) {
      const partEnd = part.offset + part.size - 1;
      if (part.size === 0 || partEnd < start || part.offset > end) continue;
      const from = Math.max(start, part.offset) - part.offset;
      const to = Math.min(end, partEnd) - part.offset;
      let body: Readable;
      try {
        body = (await this.bucket.get(part.key, rangeHeader(from, to))).Body as Readable;
      } catch (err) {
        // The parts went away under us (moved or deleted): as a vanished file.
        if (isNotFoundError(err)) throw new PathNotFoundError(key);
        throw err;
      }
      for await (const chunk of body) yield chunk as Buffer;
    }
  }

  /** The offset the next part starts at; a plain object at the key becomes the first part. */
  private async prepare(k: string): Promise<number> {
    const [head, appendable] = await Promise.all([this.bucket.head(k), listParts(this.bucket, k)]);
    // Parts past a gap (stored while an earlier part of a failed append was not) would be
    // taken for data once the gap is written again: they go before anything is appended.
    if (appendable && appendable.stray.length > 0) await this.bucket.deleteKeys(appendable.stray);
    if (!head) return appendable?.size ?? 0;
    // A plain object (written by putContent or move) wins over parts; turn it into part 0.
    if (appendable) await this.bucket.deleteKeys(appendable.parts.map((p) => p.key));
    if (head.size > 0) await this.multipart.copy(k, partKey(k, 0), head.size);
    else await this.bucket.put(partKey(k, 0), Buffer.alloc(0));
    await this.bucket.deleteKeys([k]);
    return head.size;
  }
}
