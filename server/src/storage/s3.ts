// S3 driver: the same key layout as the filesystem driver (and distribution's
// s3 driver), under an optional root prefix, in any S3-compatible bucket
// (AWS S3, Cloudflare R2, Ceph RGW, MinIO).
//
// Two things S3 lacks are built from plain objects, hidden under names that
// list() never shows (no registry name or tag can start with a dot):
//
// - Appendable objects. S3 cannot append, so append(key) stores the bytes as
//   part objects "<key>/.parts/<16-digit start offset>", each one PutObject of
//   at most `chunkSize` bytes buffered in memory (never the whole blob: one part
//   is stored while the next fills, so at most two per append). A source that
//   pauses for a moment has what it sent stored as a smaller part, so that a
//   mirror's clients tailing a slow upstream fill are not kept waiting for a
//   whole part. A part is written in one piece and becomes visible whole, so stat() (the sum of the
//   contiguous parts) and reader() (which stitches them) see a consistent
//   prefix of the stream at any time, from any process, while an append is
//   still running. The `tap` callback sees bytes only once their part is
//   stored: "written" means readable by everyone. move() composes the parts
//   into one object with a multipart upload: parts of 5 MiB or more are copied
//   server-side (UploadPartCopy, no bytes through this process); runs of
//   smaller parts are read and re-uploaded in pieces of 5-10 MiB. A single part
//   is a CopyObject. Then the parts are deleted.
//
// - Times. S3 has no access time and no way to set a modification time, so
//   touch() writes a tiny sidecar "<key>/.times" (JSON: atime, mtime, and the
//   version of the object it describes). stat() reads it alongside the HEAD
//   and applies it only while the object is still that version: a rewrite of
//   the object makes the sidecar stale, as a new file would have fresh times.
//   The object itself is never rewritten or copied by touch().
import * as https from 'node:https';
import * as http from 'node:http';
import { Readable } from 'node:stream';
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CopyObjectCommand,
  CreateMultipartUploadCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  type ListObjectsV2CommandOutput,
  PutObjectCommand,
  S3Client,
  type ServerSideEncryption,
  type StorageClass,
  UploadPartCommand,
  UploadPartCopyCommand,
} from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { type ByteRange, type FileInfo, PathNotFoundError, type StorageDriver } from './driver.ts';

const MiB = 1024 * 1024;
/** S3's smallest part of a multipart upload (except the last). */
export const MIN_PART_SIZE = 5 * MiB;
/** S3's largest part, and the largest single PutObject / CopyObject. */
const MAX_PART_SIZE = 5 * 1024 * MiB;
const MAX_PARTS = 10_000;
const DELETE_BATCH = 1000;

const PARTS_DIR = '.parts';
const TIMES_FILE = '.times';
/** Child names that are ours, never the caller's. */
const HIDDEN = new Set([PARTS_DIR, TIMES_FILE]);
const OFFSET_DIGITS = 16;

export interface S3DriverOptions {
  bucket: string;
  region?: string;
  /** Endpoint of an S3-compatible service, e.g. http://127.0.0.1:7480 or minio.example.com. */
  regionEndpoint?: string;
  accessKey?: string;
  secretKey?: string;
  sessionToken?: string;
  /** Path-style URLs (bucket in the path); default: on when regionEndpoint is set. */
  forcePathStyle?: boolean;
  /** https for an endpoint given without a scheme (default true). */
  secure?: boolean;
  /** Do not verify the endpoint's TLS certificate. */
  skipVerify?: boolean;
  /** Key prefix under which the registry's tree lives. */
  rootDirectory?: string;
  /** Size of the part objects append() writes (default 10 MiB, at least 5 MiB). */
  chunkSize?: number;
  /** Objects larger than this are copied with a multipart copy (default 32 MiB). */
  multipartCopyThresholdSize?: number;
  /** Part size of multipart copies (default 32 MiB). */
  multipartCopyChunkSize?: number;
  /** Parallel part copies (default 100). */
  multipartCopyMaxConcurrency?: number;
  /** Server-side encryption: AES256, or aws:kms when keyId is set. */
  encrypt?: boolean;
  keyId?: string;
  /** Storage class of new objects (NONE: let the bucket decide). */
  storageClass?: string;
  userAgent?: string;
  /**
   * When an appended stream pauses this long with bytes buffered, they are stored as
   * a (smaller) part, so that readers tailing the object see them (default 500 ms; 0: never).
   */
  appendIdleFlushMs?: number;
  /** Parts an append stores at the same time (default 2; memory: one more part than this per append). */
  appendConcurrency?: number;
  /** Only for tests: a custom client. */
  client?: S3Client;
}

interface Part {
  key: string;
  offset: number;
  size: number;
  lastModified: Date;
}

interface Appendable {
  parts: Part[];
  size: number;
  lastModified: Date;
  /** Part objects after a gap: not part of the object. */
  stray: string[];
}

interface Times {
  /** Which version of the object these times belong to. */
  base: string;
  atime: number;
  mtime: number;
}

interface Located {
  info: FileInfo;
  /** Identifies this version of the object, for the times sidecar. */
  base: string;
}

/** One piece of the composed object: a server-side copy of a range, or bytes re-uploaded. */
type PlanItem =
  | { kind: 'copy'; key: string; start: number; end: number }
  | { kind: 'upload'; segments: Array<{ key: string; start: number; end: number }>; size: number };

export class S3Driver implements StorageDriver {
  readonly name = 's3';
  readonly bucket: string;
  readonly client: S3Client;
  private readonly prefix: string;
  private readonly chunkSize: number;
  private readonly copyThreshold: number;
  private readonly copyChunkSize: number;
  private readonly copyConcurrency: number;
  private readonly sse: { ServerSideEncryption?: ServerSideEncryption; SSEKMSKeyId?: string };
  private readonly storageClass: StorageClass | undefined;
  private readonly ownsClient: boolean;
  private readonly idleFlushMs: number;
  private readonly appendConcurrency: number;

  constructor(options: S3DriverOptions) {
    this.bucket = options.bucket;
    const root = (options.rootDirectory ?? '').replace(/^\/+|\/+$/g, '');
    this.prefix = root ? `${root}/` : '';
    this.chunkSize = clamp(options.chunkSize ?? 10 * MiB, MIN_PART_SIZE, MAX_PART_SIZE);
    this.copyThreshold = clamp(options.multipartCopyThresholdSize ?? 32 * MiB, 0, MAX_PART_SIZE);
    this.copyChunkSize = clamp(options.multipartCopyChunkSize ?? 32 * MiB, MIN_PART_SIZE, MAX_PART_SIZE);
    this.copyConcurrency = Math.max(1, options.multipartCopyMaxConcurrency ?? 100);
    this.sse = options.encrypt
      ? options.keyId
        ? { ServerSideEncryption: 'aws:kms', SSEKMSKeyId: options.keyId }
        : { ServerSideEncryption: 'AES256' }
      : {};
    const sc = options.storageClass?.toUpperCase();
    this.storageClass = sc && sc !== 'NONE' ? (sc as StorageClass) : undefined;
    this.idleFlushMs = options.appendIdleFlushMs ?? 500;
    this.appendConcurrency = Math.max(1, options.appendConcurrency ?? 2);
    this.ownsClient = options.client === undefined;
    this.client = options.client ?? createClient(options);
  }

  /** Closes the client's connections (the driver is unusable afterwards). */
  destroy(): void {
    if (this.ownsClient) this.client.destroy();
  }

  // ---- keys ----

  /** Registry key ("/docker/registry/v2/…") → object key ("<root>/docker/registry/v2/…"). */
  private objectKey(key: string): string {
    const parts = key.split('/').filter((p) => p !== '');
    if (parts.some((p) => p === '.' || p === '..')) throw new Error(`storage key escapes the root: ${key}`);
    return parts.length === 0 ? this.rootKey : this.prefix + parts.join('/');
  }

  /** The object key of the root itself ("" for an unprefixed bucket). */
  private get rootKey(): string {
    return this.prefix.replace(/\/$/, '');
  }

  /** The prefix of everything below a key ("" for the root of an unprefixed bucket). */
  private dirPrefix(key: string): string {
    const k = this.objectKey(key);
    return k === '' ? '' : `${k}/`;
  }

  private partKey(k: string, offset: number): string {
    return `${k}/${PARTS_DIR}/${String(offset).padStart(OFFSET_DIGITS, '0')}`;
  }

  // ---- StorageDriver ----

  async getContent(key: string): Promise<Buffer> {
    const k = this.objectKey(key);
    try {
      const out = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: k }));
      const bytes = await (out.Body as { transformToByteArray(): Promise<Uint8Array> }).transformToByteArray();
      return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    } catch (err) {
      if (!isNotFoundError(err)) throw err;
    }
    const appendable = await this.listParts(k);
    if (!appendable) throw new PathNotFoundError(key);
    const chunks: Buffer[] = [];
    for await (const chunk of this.partsReader(key, appendable, 0, appendable.size - 1)) chunks.push(chunk);
    return Buffer.concat(chunks);
  }

  /**
   * A presigned GET URL of a stored object (computed locally, no request). Only
   * for whole objects: an appendable object's parts have no single URL.
   */
  async urlFor(key: string, expiresInS: number): Promise<string> {
    return getSignedUrl(this.client, new GetObjectCommand({ Bucket: this.bucket, Key: this.objectKey(key) }), { expiresIn: expiresInS });
  }

  async putContent(key: string, data: Uint8Array): Promise<void> {
    await this.put(this.objectKey(key), data);
  }

  async stat(key: string): Promise<FileInfo> {
    return (await this.locate(key)).info;
  }

  async objectSize(key: string): Promise<number | undefined> {
    return (await this.head(this.objectKey(key)))?.size;
  }

  async list(key: string): Promise<string[]> {
    const prefix = this.dirPrefix(key);
    const names = new Set<string>();
    let token: string | undefined;
    do {
      const out: ListObjectsV2CommandOutput = await this.client.send(
        new ListObjectsV2Command({ Bucket: this.bucket, Prefix: prefix, Delimiter: '/', ContinuationToken: token }),
      );
      for (const p of out.CommonPrefixes ?? []) {
        const name = (p.Prefix ?? '').slice(prefix.length).replace(/\/$/, '');
        if (name && !HIDDEN.has(name)) names.add(name);
      }
      for (const o of out.Contents ?? []) {
        const name = (o.Key ?? '').slice(prefix.length);
        if (name && !HIDDEN.has(name)) names.add(name);
      }
      token = out.IsTruncated ? out.NextContinuationToken : undefined;
    } while (token);
    // Nothing but our own hidden objects: the key is a file (or nothing), not a directory.
    if (names.size === 0) throw new PathNotFoundError(key);
    return [...names];
  }

  async reader(key: string, range?: ByteRange): Promise<Readable> {
    const k = this.objectKey(key);
    const start = range?.start ?? 0;
    try {
      const out = await this.client.send(
        new GetObjectCommand({
          Bucket: this.bucket,
          Key: k,
          Range: range ? rangeHeader(range.start, range.end) : undefined,
        }),
      );
      return out.Body as Readable;
    } catch (err) {
      // The object exists but the range starts at or past its end: nothing to read.
      if (isInvalidRange(err)) return Readable.from([]);
      if (!isNotFoundError(err)) throw err;
    }
    const appendable = await this.listParts(k);
    if (!appendable) throw new PathNotFoundError(key);
    const end = Math.min(range?.end ?? Number.POSITIVE_INFINITY, appendable.size - 1);
    const chunks = this.partsReader(key, appendable, start, end);
    // Open the first part before resolving, so that a failure shows up here.
    const first = await chunks.next();
    if (first.done) return Readable.from([]);
    return Readable.from(
      (async function* () {
        try {
          yield first.value;
          yield* chunks;
        } finally {
          // A reader destroyed early: let go of the part being read.
          await chunks.return(undefined);
        }
      })(),
      { objectMode: false },
    );
  }

  async append(key: string, source: Readable, tap?: (chunk: Buffer) => void): Promise<number> {
    const k = this.objectKey(key);
    const startOffset = await this.prepareAppend(k);
    const parts = new PartQueue(this.chunkSize, this.appendConcurrency, tap, (part) =>
      this.put(this.partKey(k, startOffset + part.offset), concatParts(part)),
    );
    // A source that pauses (a slow upstream, a client between writes) gets what it
    // sent so far stored as a smaller part, so that readers need not wait for a full one.
    let idle: NodeJS.Timeout | undefined;
    const armIdleFlush = () => {
      clearTimeout(idle);
      if (parts.pendingBytes > 0 && this.idleFlushMs > 0) {
        idle = setTimeout(() => {
          if (parts.pendingBytes > 0) parts.flush();
        }, this.idleFlushMs);
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
      await this.put(this.partKey(k, 0), Buffer.alloc(0));
    }
    return parts.written;
  }

  async putStream(key: string, source: Readable, tap?: (chunk: Buffer) => void): Promise<number> {
    const k = this.objectKey(key);
    // A sidecar of what was there before describes an object that is about to be replaced.
    await this.deleteKeys([`${k}/${TIMES_FILE}`]);
    return this.multipartUpload(k, async (uploadId, etags) => {
      const parts = new PartQueue(
        this.chunkSize,
        this.appendConcurrency,
        tap,
        async (part) => {
          etags[part.index] = await this.uploadPart(k, uploadId, part.index + 1, concatParts(part));
        },
        { maxParts: MAX_PARTS, what: key },
      );
      try {
        for await (const raw of source) await parts.write(typeof raw === 'string' ? Buffer.from(raw) : (raw as Buffer));
        if (parts.pendingBytes > 0 || parts.count === 0) parts.flush();
        await parts.settle();
        return parts.written;
      } catch (err) {
        // No part may still be on its way when the upload is aborted.
        await parts.settle().catch(() => {});
        throw err;
      }
    });
  }

  async move(from: string, to: string): Promise<void> {
    const src = this.objectKey(from);
    const dst = this.objectKey(to);
    if (src === dst) return;
    // A sidecar of what `to` was before describes an object that is about to go.
    const [head] = await Promise.all([this.head(src), this.deleteKeys([`${dst}/${TIMES_FILE}`])]);
    if (head) {
      await this.copy(src, dst, head.size);
    } else {
      const appendable = await this.listParts(src);
      if (!appendable) throw new PathNotFoundError(from);
      await this.compose(appendable, dst);
    }
    await this.deleteTree(src);
  }

  async delete(key: string): Promise<void> {
    const k = this.objectKey(key);
    if (k === this.rootKey) throw new Error('refusing to delete the storage root');
    await this.deleteTree(k);
  }

  async touch(key: string, times: { accessed?: Date; modified?: Date }): Promise<void> {
    const k = this.objectKey(key);
    const { info, base } = await this.locate(key);
    const sidecar: Times = {
      base,
      atime: (times.accessed ?? info.accessTime).getTime(),
      mtime: (times.modified ?? info.modTime).getTime(),
    };
    const timesKey = `${k}/${TIMES_FILE}`;
    await this.put(timesKey, Buffer.from(JSON.stringify(sidecar)));
    // A delete that ran meanwhile must not leave the sidecar behind (it would keep
    // the deleted name visible in list()).
    if (!(await this.existsAt(k))) await this.deleteKeys([timesKey]);
  }

  // ---- objects, parts and times ----

  private async locate(key: string): Promise<Located> {
    const k = this.objectKey(key);
    const [head, times] = await Promise.all([this.head(k), this.readTimes(k)]);
    let located: Located;
    if (head) {
      located = {
        base: `object|${head.etag}|${head.lastModified.getTime()}|${head.size}`,
        info: { key, size: head.size, modTime: head.lastModified, accessTime: head.lastModified, isDir: false },
      };
    } else {
      const probe = await this.probe(k);
      if (probe.kind === 'missing') throw new PathNotFoundError(key);
      if (probe.kind === 'dir') {
        located = { base: 'dir', info: { key, size: 0, modTime: probe.lastModified, accessTime: probe.lastModified, isDir: true } };
      } else {
        const a = probe.appendable;
        located = {
          base: `parts|${a.parts.length}|${a.size}|${a.lastModified.getTime()}`,
          info: { key, size: a.size, modTime: a.lastModified, accessTime: a.lastModified, isDir: false },
        };
      }
    }
    if (times && times.base === located.base) {
      located = {
        base: located.base,
        info: { ...located.info, modTime: new Date(times.mtime), accessTime: new Date(times.atime) },
      };
    }
    return located;
  }

  private async head(k: string): Promise<{ size: number; lastModified: Date; etag: string } | undefined> {
    try {
      const out = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: k }));
      return { size: out.ContentLength ?? 0, lastModified: out.LastModified ?? new Date(0), etag: out.ETag ?? '' };
    } catch (err) {
      if (isNotFoundError(err)) return undefined;
      throw err;
    }
  }

  private async existsAt(k: string): Promise<boolean> {
    if (await this.head(k)) return true;
    return (await this.probe(k)).kind !== 'missing';
  }

  private async readTimes(k: string): Promise<Times | undefined> {
    try {
      const out = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: `${k}/${TIMES_FILE}` }));
      const parsed = JSON.parse(await (out.Body as { transformToString(): Promise<string> }).transformToString()) as Times;
      if (typeof parsed.base !== 'string' || !Number.isFinite(parsed.atime) || !Number.isFinite(parsed.mtime)) return undefined;
      return parsed;
    } catch (err) {
      if (isNotFoundError(err) || err instanceof SyntaxError) return undefined;
      throw err;
    }
  }

  /** What is below `k/` when `k` itself is no object: a directory, an appendable object, or nothing. */
  private async probe(
    k: string,
  ): Promise<{ kind: 'missing' } | { kind: 'dir'; lastModified: Date } | { kind: 'appendable'; appendable: Appendable }> {
    const prefix = `${k}/`;
    const partsPrefix = `${prefix}${PARTS_DIR}/`;
    let token: string | undefined;
    const found: Array<{ Key?: string; Size?: number; LastModified?: Date }> = [];
    let dirModified = 0;
    do {
      const out: ListObjectsV2CommandOutput = await this.client.send(
        new ListObjectsV2Command({ Bucket: this.bucket, Prefix: prefix, ContinuationToken: token }),
      );
      let child = false;
      for (const o of out.Contents ?? []) {
        const key = o.Key ?? '';
        if (key.startsWith(partsPrefix)) found.push(o);
        else if (key !== `${prefix}${TIMES_FILE}`) {
          child = true;
          dirModified = Math.max(dirModified, o.LastModified?.getTime() ?? 0);
        }
      }
      if (child) return { kind: 'dir', lastModified: new Date(dirModified) };
      token = out.IsTruncated ? out.NextContinuationToken : undefined;
    } while (token);
    const appendable = contiguous(found, partsPrefix);
    return appendable ? { kind: 'appendable', appendable } : { kind: 'missing' };
  }

  private async listParts(k: string): Promise<Appendable | undefined> {
    const partsPrefix = `${k}/${PARTS_DIR}/`;
    const found: Array<{ Key?: string; Size?: number; LastModified?: Date }> = [];
    let token: string | undefined;
    do {
      const out: ListObjectsV2CommandOutput = await this.client.send(
        new ListObjectsV2Command({ Bucket: this.bucket, Prefix: partsPrefix, ContinuationToken: token }),
      );
      found.push(...(out.Contents ?? []));
      token = out.IsTruncated ? out.NextContinuationToken : undefined;
    } while (token);
    return contiguous(found, partsPrefix);
  }

  /** The offset the next part starts at; a plain object at the key becomes the first part. */
  private async prepareAppend(k: string): Promise<number> {
    const [head, appendable] = await Promise.all([this.head(k), this.listParts(k)]);
    // Parts past a gap (stored while an earlier part of a failed append was not) would be
    // taken for data once the gap is written again: they go before anything is appended.
    if (appendable && appendable.stray.length > 0) await this.deleteKeys(appendable.stray);
    if (!head) return appendable?.size ?? 0;
    // A plain object (written by putContent or move) wins over parts; turn it into part 0.
    if (appendable) await this.deleteKeys(appendable.parts.map((p) => p.key));
    if (head.size > 0) await this.copy(k, this.partKey(k, 0), head.size);
    else await this.put(this.partKey(k, 0), Buffer.alloc(0));
    await this.deleteKeys([k]);
    return head.size;
  }

  /** The bytes [start, end] of an appendable object, part by part. */
  private async *partsReader(key: string, appendable: Appendable, start: number, end: number): AsyncGenerator<Buffer> {
    for (const part of appendable.parts) {
      const partEnd = part.offset + part.size - 1;
      if (part.size === 0 || partEnd < start || part.offset > end) continue;
      const from = Math.max(start, part.offset) - part.offset;
      const to = Math.min(end, partEnd) - part.offset;
      let body: Readable;
      try {
        const out = await this.client.send(
          new GetObjectCommand({ Bucket: this.bucket, Key: part.key, Range: rangeHeader(from, to) }),
        );
        body = out.Body as Readable;
      } catch (err) {
        // The parts went away under us (moved or deleted): as a vanished file.
        if (isNotFoundError(err)) throw new PathNotFoundError(key);
        throw err;
      }
      for await (const chunk of body) yield chunk as Buffer;
    }
  }

  /**
   * One PutObject. Its payload is not hashed for the signature (UNSIGNED-PAYLOAD):
   * for a part of an upload that SHA-256 on the event loop costs the pull or push
   * streaming through this process meanwhile, and the blob's own digest is
   * verified on its way in anyway.
   */
  private async put(k: string, data: Uint8Array): Promise<void> {
    await this.client.send(
      unsignedPayload(
        new PutObjectCommand({
          Bucket: this.bucket,
          Key: k,
          Body: data,
          ContentLength: data.length,
          ContentType: 'application/octet-stream',
          StorageClass: this.storageClass,
          ...this.sse,
        }),
      ),
    );
  }

  /** Server-side copy of a whole object (multipart above the threshold). */
  private async copy(src: string, dst: string, size: number): Promise<void> {
    if (size <= this.copyThreshold) {
      await this.client.send(
        new CopyObjectCommand({
          Bucket: this.bucket,
          Key: dst,
          CopySource: this.copySource(src),
          ContentType: 'application/octet-stream',
          MetadataDirective: 'REPLACE',
          StorageClass: this.storageClass,
          ...this.sse,
        }),
      );
      return;
    }
    const chunk = Math.max(this.copyChunkSize, Math.ceil(size / MAX_PARTS));
    const plan: PlanItem[] = [];
    for (let at = 0; at < size; at += chunk) plan.push({ kind: 'copy', key: src, start: at, end: Math.min(size, at + chunk) - 1 });
    await this.multipart(dst, plan, size);
  }

  /** Joins the parts of an appendable object into one object at `dst`. */
  private async compose(appendable: Appendable, dst: string): Promise<void> {
    const parts = appendable.parts.filter((p) => p.size > 0);
    if (parts.length === 0) {
      await this.put(dst, Buffer.alloc(0));
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
    await this.multipart(dst, plan, appendable.size);
  }

  /** Stores `plan` (server-side copies of ranges, re-uploads of small pieces) as the parts of one object at `dst`. */
  private async multipart(dst: string, plan: PlanItem[], size: number): Promise<void> {
    await this.multipartUpload(dst, async (uploadId, etags) => {
      // Re-uploads hold their bytes in memory: only two at a time.
      const uploads = new Semaphore(2);
      await pool(plan, Math.min(this.copyConcurrency, plan.length), async (item, i) => {
        const PartNumber = i + 1;
        if (item.kind === 'copy') {
          const out = await this.client.send(
            new UploadPartCopyCommand({
              Bucket: this.bucket,
              Key: dst,
              UploadId: uploadId,
              PartNumber,
              CopySource: this.copySource(item.key),
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

  /**
   * One multipart upload to `k`: `storeParts` stores the parts, recording each one's ETag
   * at its index, and resolves with the object's size. The upload is then completed, and
   * what landed is checked: some S3 implementations answer CompleteMultipartUpload with an
   * ETag that says little. Aborted when anything before the completion fails.
   */
  private async multipartUpload(k: string, storeParts: (uploadId: string, etags: string[]) => Promise<number>): Promise<number> {
    const created = await this.client.send(
      new CreateMultipartUploadCommand({ Bucket: this.bucket, Key: k, ContentType: 'application/octet-stream', StorageClass: this.storageClass, ...this.sse }),
    );
    const uploadId = created.UploadId;
    if (!uploadId) throw new Error(`CreateMultipartUpload for ${k} returned no upload id`);
    let size: number;
    try {
      const etags: string[] = [];
      size = await storeParts(uploadId, etags);
      await this.client.send(
        new CompleteMultipartUploadCommand({
          Bucket: this.bucket,
          Key: k,
          UploadId: uploadId,
          MultipartUpload: { Parts: etags.map((ETag, i) => ({ ETag, PartNumber: i + 1 })) },
        }),
      );
    } catch (err) {
      await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: k, UploadId: uploadId })).catch(() => {});
      throw err;
    }
    const landed = await this.head(k);
    if (landed?.size !== size) {
      await this.deleteKeys([k]).catch(() => {});
      throw new Error(`multipart upload to ${k} stored ${landed?.size ?? 'nothing'} bytes, expected ${size}`);
    }
    return size;
  }

  /** One part of a multipart upload, signed as put() is (UNSIGNED-PAYLOAD); resolves with its ETag. */
  private async uploadPart(k: string, uploadId: string, PartNumber: number, body: Buffer): Promise<string> {
    const out = await this.client.send(
      unsignedPayload(new UploadPartCommand({ Bucket: this.bucket, Key: k, UploadId: uploadId, PartNumber, Body: body, ContentLength: body.length })),
    );
    return requireEtag(out.ETag, k, PartNumber);
  }

  private async readSegments(segments: Array<{ key: string; start: number; end: number }>, size: number): Promise<Buffer> {
    const buf = Buffer.allocUnsafe(size);
    let at = 0;
    for (const s of segments) {
      const out = await this.client.send(
        new GetObjectCommand({ Bucket: this.bucket, Key: s.key, Range: `bytes=${s.start}-${s.end}` }),
      );
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

  private copySource(k: string): string {
    return `${this.bucket}/${k.split('/').map(encodeURIComponent).join('/')}`;
  }

  /** Deletes `k` and everything below `k/`. */
  private async deleteTree(k: string): Promise<void> {
    const prefix = `${k}/`;
    let batch: string[] = [k];
    let token: string | undefined;
    do {
      const out: ListObjectsV2CommandOutput = await this.client.send(
        new ListObjectsV2Command({ Bucket: this.bucket, Prefix: prefix, ContinuationToken: token }),
      );
      for (const o of out.Contents ?? []) {
        if (!o.Key) continue;
        batch.push(o.Key);
        if (batch.length === DELETE_BATCH) {
          await this.deleteKeys(batch);
          batch = [];
        }
      }
      token = out.IsTruncated ? out.NextContinuationToken : undefined;
    } while (token);
    if (batch.length > 0) await this.deleteKeys(batch);
  }

  private async deleteKeys(keys: string[]): Promise<void> {
    for (let i = 0; i < keys.length; i += DELETE_BATCH) {
      const slice = keys.slice(i, i + DELETE_BATCH);
      const out = await this.client.send(
        new DeleteObjectsCommand({
          Bucket: this.bucket,
          Delete: { Objects: slice.map((Key) => ({ Key })), Quiet: true },
        }),
      );
      const failed = (out.Errors ?? []).filter((e) => e.Code !== 'NoSuchKey');
      if (failed.length > 0) {
        const e = failed[0];
        throw new Error(`deleting ${failed.length} object(s) failed, first ${e.Key}: ${e.Code} ${e.Message ?? ''}`.trim());
      }
    }
  }
}

function createClient(options: S3DriverOptions): S3Client {
  let endpoint = options.regionEndpoint?.trim() || undefined;
  if (endpoint && !/^https?:\/\//i.test(endpoint)) endpoint = `${options.secure === false ? 'http' : 'https'}://${endpoint}`;
  const agentOptions = { keepAlive: true, maxSockets: 256 };
  return new S3Client({
    region: options.region || 'us-east-1',
    endpoint,
    forcePathStyle: options.forcePathStyle ?? endpoint !== undefined,
    credentials:
      options.accessKey && options.secretKey
        ? { accessKeyId: options.accessKey, secretAccessKey: options.secretKey, sessionToken: options.sessionToken }
        : undefined,
    // Ceph RGW (and others) reject the SDK's default streamed checksums.
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    customUserAgent: options.userAgent,
    requestHandler: {
      httpAgent: new http.Agent(agentOptions),
      httpsAgent: new https.Agent({ ...agentOptions, rejectUnauthorized: !options.skipVerify }),
    },
  });
}

/**
 * The parts from a listing, in offset order, up to the first gap: a part that
 * does not start where the previous one ended is not part of the stream.
 */
function contiguous(
  listed: Array<{ Key?: string; Size?: number; LastModified?: Date }>,
  partsPrefix: string,
): Appendable | undefined {
  const parts: Part[] = [];
  for (const o of listed) {
    const name = (o.Key ?? '').slice(partsPrefix.length);
    if (!/^\d+$/.test(name)) continue;
    parts.push({ key: o.Key as string, offset: Number(name), size: o.Size ?? 0, lastModified: o.LastModified ?? new Date(0) });
  }
  if (parts.length === 0) return undefined;
  parts.sort((a, b) => a.offset - b.offset);
  const kept: Part[] = [];
  let size = 0;
  let lastModified = 0;
  for (const p of parts) {
    if (p.offset !== size) break;
    kept.push(p);
    size += p.size;
    lastModified = Math.max(lastModified, p.lastModified.getTime());
  }
  if (kept.length === 0) return undefined;
  const stray = parts.slice(kept.length).map((p) => p.key);
  return { parts: kept, size, lastModified: new Date(lastModified), stray };
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
  let segments: Array<{ key: string; start: number; end: number }> = [];
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

/** An HTTP Range header value; an open end reads to the end of the object. */
function rangeHeader(start: number, end: number): string {
  return Number.isFinite(end) ? `bytes=${start}-${end}` : `bytes=${start}-`;
}

function requireEtag(etag: string | undefined, key: string, part: number): string {
  if (!etag) throw new Error(`part ${part} of ${key} came back without an ETag`);
  return etag;
}

function clamp(n: number, min: number, max: number): number {
  return Math.min(Math.max(n, min), max);
}

function errorName(err: unknown): string | undefined {
  return (err as { name?: string; Code?: string })?.name ?? (err as { Code?: string })?.Code;
}

function statusOf(err: unknown): number | undefined {
  return (err as { $metadata?: { httpStatusCode?: number } })?.$metadata?.httpStatusCode;
}

function isNotFoundError(err: unknown): boolean {
  const name = errorName(err);
  if (name === 'NoSuchBucket') return false;
  return name === 'NoSuchKey' || name === 'NotFound' || statusOf(err) === 404;
}

function isInvalidRange(err: unknown): boolean {
  return errorName(err) === 'InvalidRange' || statusOf(err) === 416;
}

/** One part of a stream cut by PartQueue: its place in the stream and its bytes. */
interface QueuedPart {
  /** 0, 1, 2, … */
  index: number;
  /** Where the part starts, counted from the queue's first byte. */
  offset: number;
  chunks: Buffer[];
  size: number;
}

/** A part's bytes in one buffer (no copy when it arrived as one chunk). */
function concatParts(part: QueuedPart): Buffer {
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
class PartQueue {
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

/**
 * Signs a request without hashing its body: x-amz-content-sha256 set to
 * UNSIGNED-PAYLOAD before signing makes the signer use it as it is.
 */
function unsignedPayload<C extends { middlewareStack: { add(mw: unknown, options: unknown): void } }>(command: C): C {
  command.middlewareStack.add(
    (next: (args: { request: unknown }) => Promise<unknown>) => async (args: { request: unknown }) => {
      const request = args.request as { headers?: Record<string, string> };
      if (request.headers) request.headers['x-amz-content-sha256'] = 'UNSIGNED-PAYLOAD';
      return next(args);
    },
    { step: 'build', name: 'registryUnsignedPayload' },
  );
  return command;
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
