// Another replica's cache fill, read through the shared storage: the filler
// publishes its upload key, the upstream's size and how many bytes are stored
// (fill-coordinator.ts); this side polls that state and streams the upload
// object as it grows (S3 parts are readable from any process as soon as they
// are stored), then switches to the committed blob. As in BlobFill, the last
// byte is held back until the blob is committed (its digest verified), so no
// client receives a complete blob whose bytes do not match it.
//
// If the filler goes away (its lease expired, another replica took over) or
// fails, and the blob was not committed, the readers here fail; the next
// request starts a new fill.
import { Readable } from 'node:stream';
import { type ByteRange, isNotFound, type StorageDriver } from '../storage/driver.ts';
import { paths } from '../storage/paths.ts';
import type { Digest } from '../registry/digest.ts';
import type { Logger } from '../ops/logger.ts';
import type { Fill } from './blob-fill.ts';
import type { FillCoordinator, FillInfo } from './fill-coordinator.ts';

const READ_STEP = 1024 * 1024;
const POLL_MS = 50;
/** Redis errors in a row before the readers give up. */
const MAX_POLL_ERRORS = 20;

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

type State = 'waiting' | 'running' | 'done' | 'failed';

export class RemoteFill implements Fill {
  size: number | undefined;
  readonly ready: Promise<number | undefined>;
  readonly done: Promise<void>;

  private state: State = 'waiting';
  private error: Error | undefined;
  private written = 0;
  private key: string | undefined;
  private readonly owner: string;
  private waiters: Array<() => void> = [];
  private resolveReady!: (size: number | undefined) => void;
  private rejectReady!: (err: Error) => void;
  private resolveDone!: () => void;
  private rejectDone!: (err: Error) => void;

  constructor(
    readonly digest: Digest,
    first: FillInfo,
    private readonly deps: { driver: StorageDriver; coordinator: FillCoordinator; logger: Logger },
  ) {
    this.owner = first.owner;
    this.ready = new Promise((resolve, reject) => {
      this.resolveReady = resolve;
      this.rejectReady = reject;
    });
    this.ready.catch(() => {});
    this.done = new Promise((resolve, reject) => {
      this.resolveDone = resolve;
      this.rejectDone = reject;
    });
    this.done.catch(() => {});
    void this.follow(first);
  }

  private async follow(first: FillInfo): Promise<void> {
    let info: FillInfo | undefined = first;
    let errors = 0;
    for (;;) {
      if (!info || info.owner !== this.owner || info.state === 'done') {
        await this.settle('the replica filling this blob went away before it was cached');
        return;
      }
      if (info.state === 'failed') {
        this.fail(new Error(info.error ?? 'the upstream fetch failed on another replica'));
        return;
      }
      if (info.state === 'running') this.update(info);
      await sleep(POLL_MS);
      try {
        info = await this.deps.coordinator.get(this.digest.value);
        errors = 0;
      } catch (err) {
        if (++errors >= MAX_POLL_ERRORS) {
          this.fail(new Error(`lost track of the fill on another replica: ${(err as Error).message}`));
          return;
        }
      }
    }
  }

  private update(info: FillInfo): void {
    if (this.state === 'waiting') {
      this.state = 'running';
      this.size = info.size;
      this.resolveReady(info.size);
    }
    if (info.key) this.key = info.key;
    if (info.written > this.written) this.written = info.written;
    this.wake();
  }

  /** The fill ended (or its filler vanished): done if the blob is committed, failed otherwise. */
  private async settle(reason: string): Promise<void> {
    let size: number | undefined;
    try {
      size = (await this.deps.driver.stat(paths.blobData(this.digest))).size;
    } catch (err) {
      if (!isNotFound(err)) {
        this.fail(err as Error);
        return;
      }
    }
    if (size === undefined) {
      this.fail(new Error(reason));
      return;
    }
    this.size = size;
    this.written = size;
    this.key = paths.blobData(this.digest);
    this.state = 'done';
    this.resolveReady(size);
    this.resolveDone();
    this.wake();
  }

  private fail(err: Error): void {
    this.error = err;
    this.state = 'failed';
    this.rejectReady(err);
    this.rejectDone(err);
    this.wake();
    this.deps.logger.warn({ digest: this.digest.value, err: err.message }, 'following a blob fill of another replica failed');
  }

  stream(range?: ByteRange): Readable {
    return Readable.from(this.chunks(range), { objectMode: false });
  }

  private async *chunks(range?: ByteRange): AsyncGenerator<Buffer> {
    let pos = range?.start ?? 0;
    for (;;) {
      if (this.state === 'failed') throw this.error;
      const end = range?.end ?? (this.size !== undefined ? this.size - 1 : Number.POSITIVE_INFINITY);
      if (pos > end) return;
      // Until the blob is committed, the final byte stays back (see the header comment).
      const readable = this.state === 'done' ? this.written : Math.max(0, this.written - 1);
      if (this.state === 'done' && pos >= this.written) return;
      if (pos < readable && this.key) {
        const last = Math.min(end, readable - 1);
        const key = this.key;
        try {
          const stream = await this.deps.driver.reader(key, { start: pos, end: last });
          for await (const chunk of stream) {
            pos += (chunk as Buffer).length;
            yield chunk as Buffer;
          }
        } catch (err) {
          // The upload object became the blob between our checks: read on once the commit is seen.
          if (!isNotFound(err)) throw err;
          if (key === this.key) await this.done.catch(() => {});
        }
        continue;
      }
      await this.waitFor(Math.min(pos + READ_STEP, end === Number.POSITIVE_INFINITY ? pos + READ_STEP : end));
    }
  }

  /** Until at least `atLeast` + 1 bytes are readable, the fill ends, or (slow filler) the next update. */
  private waitFor(atLeast: number): Promise<void> {
    if (this.state === 'done' || this.state === 'failed' || this.written - 1 > atLeast) return Promise.resolve();
    return new Promise((wake) => this.waiters.push(wake));
  }

  private wake(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }
}
