// The requests the driver makes of its bucket, by object key: whole-object
// puts, heads, gets, listings page by page, batched deletes. Everything above
// (parts, times, multipart uploads) is built from these and the multipart
// commands in multipart.ts.
import {
  DeleteObjectsCommand,
  GetObjectCommand,
  type GetObjectCommandOutput,
  HeadObjectCommand,
  ListObjectsV2Command,
  type ListObjectsV2CommandOutput,
  PutObjectCommand,
  type S3Client,
  type StorageClass,
} from '@aws-sdk/client-s3';
import type { Sse } from './config.ts';

/** DeleteObjects takes at most this many keys. */
const DELETE_BATCH = 1000;

export interface ObjectHead {
  size: number;
  lastModified: Date;
  etag: string;
}

export class S3Bucket {
  constructor(
    /** Every request goes through `client.send` at the time it is made (tests wrap it to record them). */
    readonly client: S3Client,
    readonly name: string,
    private readonly sse: Sse,
    private readonly storageClass: StorageClass | undefined,
  ) {}

  /** Parameters of every request that creates an object. */
  get newObject(): { StorageClass: StorageClass | undefined } & Sse {
    return { StorageClass: this.storageClass, ...this.sse };
  }

  /**
   * One PutObject. Its payload is not hashed for the signature (UNSIGNED-PAYLOAD):
   * for a part of an upload that SHA-256 on the event loop costs the pull or push
   * streaming through this process meanwhile, and the blob's own digest is
   * verified on its way in anyway.
   */
  async put(k: string, data: Uint8Array): Promise<void> {
    await this.client.send(
      unsignedPayload(
        new PutObjectCommand({
          Bucket: this.name,
          Key: k,
          Body: data,
          ContentLength: data.length,
          ContentType: 'application/octet-stream',
          ...this.newObject,
        }),
      ),
    );
  }

  /** The object at `k`, or undefined when there is none. */
  async head(k: string): Promise<ObjectHead | undefined> {
    try {
      const out = await this.client.send(new HeadObjectCommand({ Bucket: this.name, Key: k }));
      return { size: out.ContentLength ?? 0, lastModified: out.LastModified ?? new Date(0), etag: out.ETag ?? '' };
    } catch (err) {
      if (isNotFoundError(err)) return undefined;
      throw err;
    }
  }

  /** One GetObject; `range` is a Range header value. */
  get(k: string, range?: string): Promise<GetObjectCommandOutput> {
    return this.client.send(new GetObjectCommand({ Bucket: this.name, Key: k, Range: range }));
  }

  /** ListObjectsV2 page by page (the next page is asked for only when the caller goes on). */
  async *listPages(prefix: string, delimiter?: string): AsyncGenerator<ListObjectsV2CommandOutput> {
    let token: string | undefined;
    do {
      const out: ListObjectsV2CommandOutput = await this.client.send(
        new ListObjectsV2Command({ Bucket: this.name, Prefix: prefix, Delimiter: delimiter, ContinuationToken: token }),
      );
      yield out;
      token = out.IsTruncated ? out.NextContinuationToken : undefined;
    } while (token);
  }

  /** Deletes `k` and everything below `k/`. */
  async deleteTree(k: string): Promise<void> {
    let batch: string[] = [k];
    for await (const page of this.listPages(`${k}/`)) {
      for (const o of page.Contents ?? []) {
        if (!o.Key) continue;
        batch.push(o.Key);
        if (batch.length === DELETE_BATCH) {
          await this.deleteKeys(batch);
          batch = [];
        }
      }
    }
    if (batch.length > 0) await this.deleteKeys(batch);
  }

  /** Deletes these objects; missing ones are not an error. */
  async deleteKeys(keys: string[]): Promise<void> {
    for (let i = 0; i < keys.length; i += DELETE_BATCH) {
      const slice = keys.slice(i, i + DELETE_BATCH);
      const out = await this.client.send(
        new DeleteObjectsCommand({
          Bucket: this.name,
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

  /** `k` as the CopySource of a copy request. */
  copySource(k: string): string {
    return `${this.name}/${k.split('/').map(encodeURIComponent).join('/')}`;
  }
}

/**
 * Signs a request without hashing its body: x-amz-content-sha256 set to
 * UNSIGNED-PAYLOAD before signing makes the signer use it as it is.
 */
export function unsignedPayload<C extends { middlewareStack: { add(mw: unknown, options: unknown): void } }>(command: C): C {
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

/** An HTTP Range header value; an open end reads to the end of the object. */
export function rangeHeader(start: number, end: number): string {
  return Number.isFinite(end) ? `bytes=${start}-${end}` : `bytes=${start}-`;
}

function errorName(err: unknown): string | undefined {
  return (err as { name?: string; Code?: string })?.name ?? (err as { Code?: string })?.Code;
}

function statusOf(err: unknown): number | undefined {
  return (err as { $metadata?: { httpStatusCode?: number } })?.$metadata?.httpStatusCode;
}

export function isNotFoundError(err: unknown): boolean {
  const name = errorName(err);
  // A missing bucket is a broken configuration, not a missing key.
  if (name === 'NoSuchBucket') return false;
  return name === 'NoSuchKey' || name === 'NotFound' || statusOf(err) === 404;
}

export function isInvalidRange(err: unknown): boolean {
  return errorName(err) === 'InvalidRange' || statusOf(err) === 416;
}
