// One upstream fetch of one blob into the cache, readable by any number of
// clients while it runs. The fetch writes to an upload file and hashes as it
// goes; readers tail that file at their own pace (memory stays flat, and a
// slow or vanished client neither slows nor aborts the fill). The last byte
// is held back until the digest is verified, so no client ever receives a
// complete blob whose bytes do not match it, and a bad blob is never committed.
import { randomUUID } from 'node:crypto';
import { Readable } from 'node:stream';
import { type ByteRange, isNotFound, type StorageDriver } from '../storage/driver.ts';
import { paths } from '../storage/paths.ts';
import type { BlobStore } from '../registry/blob-store.ts';
import { type Digest, newHash } from '../registry/digest.ts';
import type { Logger } from '../ops/logger.ts';
import type { UpstreamClient } from './upstream-client.ts';

const READ_STEP = 1024 * 1024;
const SLOW_UPSTREAM_MS = 50;

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

type State = 'starting' | 'running' | 'done' | 'failed';

/** A cache fill clients can read while it runs: this process's own (BlobFill) or another replica's (RemoteFill). */
export interface Fill {
  readonly size: number | undefined;
  readonly ready: Promise<number | undefined>;
  readonly done: Promise<void>;
  stream(range?: ByteRange): Readable;
}

/** Told about a fill's progress, to share it with other replicas (proxy/fill-coordinator.ts). */
export interface FillObserver {
  /** The upstream answered: the fill writes to `key`; `size` is undefined when the upstream sent none. */
  started(key: string, size: number | undefined): void;
  /** `written` bytes are stored at the key and readable by anyone. */
  progress(written: number): void;
  /** Committed (ok) or given up. */
  finished(ok: boolean, error?: string): void;
}

export class BlobFill implements Fill {
  /** Size announced by the upstream (Content-Length); undefined until known or when not sent. */
  size: number | undefined;
  /** Resolves once the upstream answered (with the size, if it sent one); rejects if it failed first. */
  readonly ready: Promise<number | undefined>;
  /** Resolves when the blob is committed to the cache; rejects when the fill failed. */
  readonly done: Promise<void>;

  private state: State = 'starting';
  private error: Error | undefined;
  private written = 0;
  private key: string;
  private readonly uploadId = randomUUID();
  private waiters: Array<{ atLeast: number; wake: () => void }> = [];
  private resolveReady!: (size: number | undefined) => void;
  private rejectReady!: (err: Error) => void;

  constructor(
    readonly digest: Digest,
    private readonly cacheName: string,
    private readonly remoteName: string,
    private readonly deps: { driver: StorageDriver; blobs: BlobStore; client: UpstreamClient; logger: Logger; observer?: FillObserver },
  ) {
    this.key = paths.uploadData(cacheName, this.uploadId);
    this.ready = new Promise((resolve, reject) => {
      this.resolveReady = resolve;
      this.rejectReady = reject;
    });
    this.ready.catch(() => {});
    this.done = this.run();
    this.done.catch(() => {});
  }

  private async run(): Promise<void> {
    const { driver, blobs, client, logger } = this.deps;
    let cleaned = false;
    try {
      const fetched = await client.getBlob(this.remoteName, this.digest.value);
      this.size = fetched.size;
      this.state = 'running';
      this.resolveReady(fetched.size);
      this.deps.observer?.started(this.key, fetched.size);
      const hash = newHash(this.digest.algorithm);
      await driver.append(this.key, fetched.body, (chunk) => {
        hash.update(chunk);
        this.written += chunk.length;
        this.wake();
        this.deps.observer?.progress(this.written);
      });
      if (this.size !== undefined && this.written !== this.size) {
        throw new Error(`upstream sent ${this.written} bytes of ${this.size} for ${this.digest.value}`);
      }
      const actual = hash.digest('hex');
      if (actual !== this.digest.hex) {
        throw new Error(`upstream sent bytes that do not match ${this.digest.value} (got ${this.digest.algorithm}:${actual}); not cached`);
      }
      this.size = this.written;
      await blobs.commitFrom(this.key, this.digest, this.written);
      await blobs.writeLink(paths.layerLink(this.cacheName, this.digest), this.digest);
      // Clean up before anyone learns the blob is complete: a client that has all its bytes sees no leftovers.
      await driver.delete(paths.uploadDir(this.cacheName, this.uploadId)).catch(() => {});
      cleaned = true;
      this.key = paths.blobData(this.digest);
      this.state = 'done';
      this.wake();
      this.deps.observer?.finished(true);
      logger.debug({ digest: this.digest.value, repo: this.cacheName, bytes: this.written }, 'blob cached');
    } catch (err) {
      this.error = err as Error;
      this.state = 'failed';
      this.rejectReady(this.error);
      this.wake();
      this.deps.observer?.finished(false, this.error.message);
      logger.warn({ digest: this.digest.value, repo: this.cacheName, err: this.error.message }, 'blob fill failed');
      throw this.error;
    } finally {
      if (!cleaned) await driver.delete(paths.uploadDir(this.cacheName, this.uploadId)).catch(() => {});
    }
  }

  /** The blob's bytes (or a range of them), read from the cache file as the fill writes it. */
  stream(range?: ByteRange): Readable {
    return Readable.from(this.chunks(range), { objectMode: false });
  }

  private async *chunks(range?: ByteRange): AsyncGenerator<Buffer> {
    let pos = range?.start ?? 0;
    for (;;) {
      const end = range?.end ?? (this.size !== undefined ? this.size - 1 : Number.POSITIVE_INFINITY);
      if (pos > end) return;
      // Until verified, the final byte stays back (see the header comment).
      const readable = this.state === 'done' ? this.written : Math.max(0, this.written - 1);
      if (this.state === 'failed') throw this.error;
      if (this.state === 'done' && pos >= this.written) return;
      if (pos < readable) {
        const last = Math.min(end, readable - 1);
        const key = this.key;
        try {
          const stream = await this.deps.driver.reader(key, { start: pos, end: last });
          for await (const chunk of stream) {
            pos += (chunk as Buffer).length;
            yield chunk as Buffer;
          }
        } catch (err) {
          // The file moved from the upload area into blobs/ between our checks: read on from there.
          // If it is moving right now (commit renamed it, this.key not updated yet), wait for the
          // commit to finish first; a failed fill is reported at the top of the loop.
          if (!isNotFound(err)) throw err;
          if (key === this.key) await this.done.catch(() => {});
        }
        continue;
      }
      // Read in steps of about READ_STEP, but never sit on bytes for long when the upstream is slow.
      await Promise.race([this.waitFor(pos + READ_STEP), this.waitFor(pos + 1).then(() => sleep(SLOW_UPSTREAM_MS))]);
    }
  }

  private waitFor(atLeast: number): Promise<void> {
    if (this.state === 'done' || this.state === 'failed' || this.written - 1 >= atLeast) return Promise.resolve();
    return new Promise((wake) => this.waiters.push({ atLeast, wake }));
  }

  private wake(): void {
    if (this.waiters.length === 0) return;
    const finished = this.state === 'done' || this.state === 'failed';
    const still: typeof this.waiters = [];
    for (const w of this.waiters) {
      if (finished || this.written - 1 >= w.atLeast) w.wake();
      else still.push(w);
    }
    this.waiters = still;
  }
}
