// One upstream fetch of one blob into the cache, readable by any number of
// clients while it runs. The fetch writes to an upload file and hashes as it
// goes; readers tail that file at their own pace (memory stays flat, and a
// slow or vanished client neither slows nor aborts the fill). The last byte
// is held back until the digest is verified, so no client ever receives a
// complete blob whose bytes do not match it, and a bad blob is never committed.
import { randomUUID } from 'node:crypto';
import type { Readable } from 'node:stream';
import type { ByteRange, StorageDriver } from '../storage/driver.ts';
import { paths } from '../storage/paths.ts';
import type { BlobStore } from '../registry/blob-store.ts';
import { type Digest, newHash } from '../registry/digest.ts';
import type { Logger } from '../ops/logger.ts';
import { type TailSource, tailStream } from './tail-reader.ts';
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

export class BlobFill implements Fill, TailSource {
  /** Size announced by the upstream (Content-Length); undefined until known or when not sent. */
  size: number | undefined;
  /** Resolves once the upstream answered (with the size, if it sent one); rejects if it failed first. */
  readonly ready: Promise<number | undefined>;
  /** Resolves when the blob is committed to the cache; rejects when the fill failed. */
  readonly done: Promise<void>;

  private state: State = 'starting';
  private error: Error | undefined;
  private stored = 0;
  private location: string;
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
    this.location = paths.uploadData(cacheName, this.uploadId);
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
        this.stored += chunk.length;
        this.wake();
        this.deps.observer?.progress(this.stored);
      });
      if (this.size !== undefined && this.stored !== this.size) {
        throw new Error(`upstream sent ${this.stored} bytes of ${this.size} for ${this.digest.value}`);
      }
      const actual = hash.digest('hex');
      if (actual !== this.digest.hex) {
        throw new Error(`upstream sent bytes that do not match ${this.digest.value} (got ${this.digest.algorithm}:${actual}); not cached`);
      }
      this.size = this.stored;
      await blobs.commitFrom(this.key, this.digest, this.stored);
      await blobs.writeLink(paths.layerLink(this.cacheName, this.digest), this.digest);
      // Clean up before anyone learns the blob is complete: a client that has all its bytes sees no leftovers.
      await driver.delete(paths.uploadDir(this.cacheName, this.uploadId)).catch(() => {});
      cleaned = true;
      this.location = paths.blobData(this.digest);
      this.state = 'done';
      this.wake();
      this.deps.observer?.finished(true);
      logger.debug({ digest: this.digest.value, repo: this.cacheName, bytes: this.stored }, 'blob cached');
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
    return tailStream(this, this.deps.driver, range);
  }

  // ---- TailSource ----

  get written(): number {
    return this.stored;
  }

  get key(): string {
    return this.location;
  }

  get complete(): boolean {
    return this.state === 'done';
  }

  get failure(): Error | undefined {
    return this.state === 'failed' ? this.error : undefined;
  }

  /** Read in steps of about READ_STEP, but never sit on bytes for long when the upstream is slow. */
  waitForMore(pos: number): Promise<void> {
    return Promise.race([this.waitFor(pos + READ_STEP), this.waitFor(pos + 1).then(() => sleep(SLOW_UPSTREAM_MS))]);
  }

  private waitFor(atLeast: number): Promise<void> {
    if (this.state === 'done' || this.state === 'failed' || this.stored - 1 >= atLeast) return Promise.resolve();
    return new Promise((wake) => this.waiters.push({ atLeast, wake }));
  }

  private wake(): void {
    if (this.waiters.length === 0) return;
    const finished = this.state === 'done' || this.state === 'failed';
    const still: typeof this.waiters = [];
    for (const w of this.waiters) {
      if (finished || this.stored - 1 >= w.atLeast) w.wake();
      else still.push(w);
    }
    this.waiters = still;
  }
}
