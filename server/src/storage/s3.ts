// S3 driver: the same key layout as the filesystem driver (and distribution's
// s3 driver), under an optional root prefix, in any S3-compatible bucket
// (AWS S3, Cloudflare R2, Ceph RGW, MinIO).
//
// Two things S3 lacks are built from plain objects, hidden under names that
// list() never shows (s3/keys.ts):
// - appendable objects, kept as part objects while they are appended to
//   (s3/appendable.ts) and composed into one object when moved (s3/multipart.ts);
// - access and modification times, in a sidecar object (s3/times.ts).
// The rest of s3/: the options and the client (config.ts), the requests made of
// the bucket (bucket.ts), listings (listing.ts), presigned redirects (presign.ts).
import { Readable } from 'node:stream';
import type { S3Client } from '@aws-sdk/client-s3';
import { type ByteRange, type FileInfo, PathNotFoundError, type StorageDriver } from './driver.ts';
import { Appendables } from './s3/appendable.ts';
import { isInvalidRange, isNotFoundError, rangeHeader, S3Bucket } from './s3/bucket.ts';
import { type AppendSettings, createClient, resolveSettings, type S3DriverOptions } from './s3/config.ts';
import { S3Keys } from './s3/keys.ts';
import { listChildren, listParts } from './s3/listing.ts';
import { Multipart } from './s3/multipart.ts';
import { presignedGet } from './s3/presign.ts';
import { dropTimes, locate, writeTimes } from './s3/times.ts';

export { MIN_PART_SIZE, type S3DriverOptions } from './s3/config.ts';
export { planCompose } from './s3/multipart.ts';

export class S3Driver implements StorageDriver {
  readonly name = 's3';
  readonly bucket: string;
  readonly client: S3Client;
  private readonly ownsClient: boolean;
  private readonly keys: S3Keys;
  private readonly objects: S3Bucket;
  private readonly multipart: Multipart;
  private readonly appendables: Appendables;
  private readonly parts: AppendSettings;

  constructor(options: S3DriverOptions) {
    const settings = resolveSettings(options);
    this.bucket = options.bucket;
    this.keys = new S3Keys(options.rootDirectory);
    this.parts = settings.append;
    this.ownsClient = options.client === undefined;
    this.client = options.client ?? createClient(options);
    this.objects = new S3Bucket(this.client, this.bucket, settings.sse, settings.storageClass);
    this.multipart = new Multipart(this.objects, settings.copy);
    this.appendables = new Appendables(this.objects, this.multipart, settings.append);
  }

  /** Closes the client's connections (the driver is unusable afterwards). */
  destroy(): void {
    if (this.ownsClient) this.client.destroy();
  }

  async getContent(key: string): Promise<Buffer> {
    const k = this.keys.objectKey(key);
    try {
      const out = await this.objects.get(k);
      const bytes = await (out.Body as { transformToByteArray(): Promise<Uint8Array> }).transformToByteArray();
      return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    } catch (err) {
      if (!isNotFoundError(err)) throw err;
    }
    const appendable = await listParts(this.objects, k);
    if (!appendable) throw new PathNotFoundError(key);
    const chunks: Buffer[] = [];
    for await (const chunk of this.appendables.read(key, appendable, 0, appendable.size - 1)) chunks.push(chunk);
    return Buffer.concat(chunks);
  }

  async urlFor(key: string, expiresInS: number): Promise<string> {
    return presignedGet(this.objects, this.keys.objectKey(key), expiresInS);
  }

  async putContent(key: string, data: Uint8Array): Promise<void> {
    await this.objects.put(this.keys.objectKey(key), data);
  }

  async stat(key: string): Promise<FileInfo> {
    return (await locate(this.objects, key, this.keys.objectKey(key))).info;
  }

  async objectSize(key: string): Promise<number | undefined> {
    return (await this.objects.head(this.keys.objectKey(key)))?.size;
  }

  async list(key: string): Promise<string[]> {
    const names = await listChildren(this.objects, this.keys.dirPrefix(key));
    // Nothing but our own hidden objects: the key is a file (or nothing), not a directory.
    if (names.length === 0) throw new PathNotFoundError(key);
    return names;
  }

  async reader(key: string, range?: ByteRange): Promise<Readable> {
    const k = this.keys.objectKey(key);
    const start = range?.start ?? 0;
    try {
      const out = await this.objects.get(k, range ? rangeHeader(range.start, range.end) : undefined);
      return out.Body as Readable;
    } catch (err) {
      // The object exists but the range starts at or past its end: nothing to read.
      if (isInvalidRange(err)) return Readable.from([]);
      if (!isNotFoundError(err)) throw err;
    }
    const appendable = await listParts(this.objects, k);
    if (!appendable) throw new PathNotFoundError(key);
    const end = Math.min(range?.end ?? Number.POSITIVE_INFINITY, appendable.size - 1);
    const chunks = this.appendables.read(key, appendable, start, end);
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
    return this.appendables.append(this.keys.objectKey(key), source, tap);
  }

  async putStream(key: string, source: Readable, tap?: (chunk: Buffer) => void): Promise<number> {
    const k = this.keys.objectKey(key);
    // A sidecar of what was there before describes an object that is about to be replaced.
    await dropTimes(this.objects, k);
    return this.multipart.stream(k, source, tap, this.parts, key);
  }

  async move(from: string, to: string): Promise<void> {
    const src = this.keys.objectKey(from);
    const dst = this.keys.objectKey(to);
    if (src === dst) return;
    // A sidecar of what `to` was before describes an object that is about to go.
    const [head] = await Promise.all([this.objects.head(src), dropTimes(this.objects, dst)]);
    if (head) {
      await this.multipart.copy(src, dst, head.size);
    } else {
      const appendable = await listParts(this.objects, src);
      if (!appendable) throw new PathNotFoundError(from);
      await this.multipart.compose(appendable, dst);
    }
    await this.objects.deleteTree(src);
  }

  async delete(key: string): Promise<void> {
    const k = this.keys.objectKey(key);
    if (k === this.keys.rootKey) throw new Error('refusing to delete the storage root');
    await this.objects.deleteTree(k);
  }

  async touch(key: string, times: { accessed?: Date; modified?: Date }): Promise<void> {
    const k = this.keys.objectKey(key);
    await writeTimes(this.objects, k, await locate(this.objects, key, k), times);
  }
}
