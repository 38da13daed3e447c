// Multipart uploads: putStream()'s streamed upload, server-side copies of
// large objects, and move()'s composing of an appendable object's parts into
// one object. Parts of 5 MiB or more are copied server-side (UploadPartCopy,
// no bytes through this process); runs of smaller parts are read and
// re-uploaded in pieces of 5-10 MiB. A single part is a CopyObject.
import type { Readable } from 'node:stream';
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CopyObjectCommand,
  CreateMultipartUploadCommand,
  UploadPartCommand,
  UploadPartCopyCommand,
} from '@aws-sdk/client-s3';
import { type S3Bucket, unsignedPayload } from './bucket.ts';
import { type AppendSettings, type CopySettings, MAX_PARTS, MIN_PART_SIZE } from './config.ts';
import type { Appendable } from './listing.ts';
import { concatParts, PartQueue } from './part-queue.ts';

type Segment = { key: string; start: number; end: number };

/** One piece of the composed object: a server-side copy of a range, or bytes re-uploaded. */
type PlanItem = { kind: 'copy'; key: string; start: number; end: number } | { kind: 'upload'; segments: Segment[]; size: number };

export class Multipart {
  constructor(
    private readonly bucket: S3Bucket,
    private readonly settings: CopySettings,
  ) {}

  /**
   * One multipart upload to `k`: `storeParts` stores the parts, recording each one's ETag
   * at its index, and resolves with the object's size. The upload is then completed, and
   * what landed is checked: some S3 implementations answer CompleteMultipartUpload with an
   * ETag that says little. Aborted when anything before the completion fails.
   */
  async upload(k: string, storeParts: (uploadId: string, etags: string[]) => Promise<number>): Promise<number> {
    const { client, name: Bucket } = this.bucket;
    const created = await client.send(
      new CreateMultipartUploadCommand({ Bucket, Key: k, ContentType: 'application/octet-stream', ...this.bucket.newObject }),
    );
    const uploadId = created.UploadId;
    if (!uploadId) throw new Error(`CreateMultipartUpload for ${k} returned no upload id`);
    let size: number;
    try {
      const etags: string[] = [];
      size = await storeParts(uploadId, etags);
      await client.send(
        new CompleteMultipartUploadCommand({
          Bucket,
          Key: k,
          UploadId: uploadId,
          MultipartUpload: { Parts: etags.map((ETag, i) => ({ ETag, PartNumber: i + 1 })) },
        }),
      );
    } catch (err) {
      await client.send(new AbortMultipartUploadCommand({ Bucket, Key: k, UploadId: uploadId })).catch(() => {});
      throw err;
    }
    const landed = await this.bucket.head(k);
    if (landed?.size !== size) {
      await this.bucket.deleteKeys([k]).catch(() => {});
      throw new Error(`multipart upload to ${k} stored ${landed?.size ?? 'nothing'} bytes, expected ${size}`);
    }
    return size;
  }

  /**
   * Streams `source` to `k` as one multipart upload of `parts.chunkSize` parts, up to
   * `parts.concurrency` on their way at a time; `what` names the object in errors.
   */
  async stream(k: string, source: Readable, tap: ((chunk: Buffer) => void) | undefined, parts: AppendSettings, what: string): Promise<number> {
    return this.upload(k, async (uploadId, etags) => {
      const queue = new PartQueue(
        parts.chunkSize,
        parts.concurrency,
        tap,
        async (part) => {
          etags[part.index] = await this.uploadPart(k, uploadId, part.index + 1, concatParts(part));
        },
        { maxParts: MAX_PARTS, what },
      );
      try {
        for await (const raw of source) await queue.write(typeof raw === 'string' ? Buffer.from(raw) : (raw as Buffer));
        if (queue.pendingBytes > 0 || queue.count === 0) queue.flush();
        await queue.settle();
        return queue.written;
      } catch (err) {
        // No part may still be on its way when the upload is aborted.
        await queue.settle().catch(() => {});
        throw err;
      }
    });
  }

  /** One part of a multipart upload, signed as S3Bucket.put() is (UNSIGNED-PAYLOAD); resolves with its ETag. */
  async uploadPart(k: string, uploadId: string, PartNumber: number, body: Buffer): Promise<string> {
    const out = await this.bucket.client.send(
      unsignedPayload(
        new UploadPartCommand({ Bucket: this.bucket.name, Key: k, UploadId: uploadId, PartNumber, Body: body, ContentLength: body.length }),
      ),
    );
    return requireEtag(out.ETag, k, PartNumber);
  }

  /** Server-side copy of a whole object (multipart above the threshold). */
  async copy(src: string, dst: string, size: number): Promise<void> {
    if (size <= this.settings.threshold) {
      await this.bucket.client.send(
        new CopyObjectCommand({
          Bucket: this.bucket.name,
          Key: dst,
          CopySource: this.bucket.copySource(src),
          ContentType: 'application/octet-stream',
          MetadataDirective: 'REPLACE',
          ...this.bucket.newObject,
        }),
      );
      return;
    }
    const chunk = Math.max(this.settings.chunkSize, Math.ceil(size / MAX_PARTS));
    const plan: PlanItem[] = [];
    for (let at = 0; at < size; at += chunk) plan.push({ kind: 'copy', key: src, start: at, end: Math.min(size, at + chunk) - 1 });
    await this.run(dst, plan, size);
  }

  /** Joins the parts of an appendable object into one object at `dst`. */
  async compose(appendable: Appendable, dst: string): Promise<void> {
    const parts = appendable.parts.filter((p) => p.size > 0);
    if (parts.length === 0) {
      await this.bucket.put(dst, Buffer.alloc(0));
      return;
    }
    if (parts.length === 1) {
      await this.copy(parts[0].key, dst, parts[0].size);
      return;
    }
    let plan = planCompose(parts, MIN_PART_SIZE);
    // More pieces than a multipart upload may have (tiny parts): re-upload everything in bigger pieces.
    if (plan.length > MAX_PARTS) {
      plan = planCompose(parts, Math.max(MIN_PART_SIZE, Math.ceil(appendable.size / (MAX_PARTS - 1))), true);
    }
    await this.run(dst, plan, appendable.size);
  }

  /** Stores `plan` (server-side copies of ranges, re-uploads of small pieces) as the parts of one object at `dst`. */
  private async run(dst: string, plan: PlanItem[], size: number): Promise<void> {
    await this.upload(dst, async (uploadId, etags) => {
      // Re-uploads hold their bytes in memory: only two at a time.
      const uploads = new Semaphore(2);
      await pool(plan, Math.min(this.settings.concurrency, plan.length), async (item, i) => {
        const PartNumber = i + 1;
        if (item.kind === 'copy') {
          const out = await this.bucket.client.send(
            new UploadPartCopyCommand({
              Bucket: this.bucket.name,
              Key: dst,
              UploadId: uploadId,
              PartNumber,
              CopySource: this.bucket.copySource(item.key),
              CopySourceRange: `bytes=${item.start}-${item.end}`,
            }),
          );
          etags[i] = requireEtag(out.CopyPartResult?.ETag, dst, PartNumber);
        } else {
          await uploads.run(async () => {
            etags[i] = await this.uploadPart(dst, uploadId, PartNumber, await this.readSegments(item.segments, item.size));
          });
        }
      });
      return size;
    });
  }

  private async readSegments(segments: Segment[], size: number): Promise<Buffer> {
    const buf = Buffer.allocUnsafe(size);
    let at = 0;
    for (const s of segments) {
      const out = await this.bucket.get(s.key, `bytes=${s.start}-${s.end}`);
      for await (const chunk of out.Body as Readable) {
        const c = chunk as Buffer;
        if (at + c.length > size) throw new Error(`part ${s.key} is longer than listed`);
        c.copy(buf, at);
        at += c.length;
      }
    }
    if (at !== size) throw new Error(`parts yielded ${at} bytes, expected ${size}`);
    return buf;
  }
}

/**
 * How to build one object from parts with a multipart upload, where every
 * piece but the last must have at least `minPiece` bytes. A part that is big
 * enough on its own is copied server-side; smaller parts are gathered (with the
 * head of the next part when that leaves a remainder big enough to copy) into
 * pieces of `minPiece` to 2×`minPiece` bytes that are re-uploaded. The last
 * piece may be smaller: when it is one range, it is copied too.
 * `uploadAll` re-uploads everything, in pieces of exactly `minPiece` bytes.
 */
export function planCompose(parts: Array<{ key: string; size: number }>, minPiece: number, uploadAll = false): PlanItem[] {
  const plan: PlanItem[] = [];
  let segments: Segment[] = [];
  let gathered = 0;
  const flush = () => {
    if (gathered === 0) return;
    plan.push({ kind: 'upload', segments, size: gathered });
    segments = [];
    gathered = 0;
  };
  for (const part of parts) {
    let pos = 0;
    while (pos < part.size) {
      const left = part.size - pos;
      if (!uploadAll && gathered === 0 && left >= minPiece) {
        plan.push({ kind: 'copy', key: part.key, start: pos, end: part.size - 1 });
        break;
      }
      const need = minPiece - gathered;
      let take: number;
      if (uploadAll) take = Math.min(left, need);
      else take = left <= need || left - need < minPiece ? left : need;
      segments.push({ key: part.key, start: pos, end: pos + take - 1 });
      gathered += take;
      pos += take;
      if (gathered >= minPiece) flush();
    }
  }
  // The last piece may be of any size: a single range needs no re-upload.
  if (!uploadAll && segments.length === 1) {
    plan.push({ kind: 'copy', ...segments[0] });
    segments = [];
    gathered = 0;
  }
  flush();
  return plan;
}

function requireEtag(etag: string | undefined, key: string, part: number): string {
  if (!etag) throw new Error(`part ${part} of ${key} came back without an ETag`);
  return etag;
}

async function pool<T>(items: T[], concurrency: number, fn: (item: T, index: number) => Promise<void>): Promise<void> {
  let next = 0;
  let failed: unknown;
  const worker = async () => {
    while (failed === undefined && next < items.length) {
      const i = next++;
      try {
        await fn(items[i], i);
      } catch (err) {
        failed ??= err;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, concurrency) }, worker));
  if (failed !== undefined) throw failed;
}

class Semaphore {
  private active = 0;
  private readonly queue: Array<() => void> = [];

  constructor(private readonly limit: number) {}

  async run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.active >= this.limit) await new Promise<void>((resolve) => this.queue.push(resolve));
    this.active++;
    try {
      return await fn();
    } finally {
      this.active--;
      this.queue.shift()?.();
    }
  }
}
