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
// request starts a new fill. A client that joins a fill that failed (or fails
// before the upstream answered) is told FillEnded: the failure may be another
// repository's upstream's, so it starts a fill of its own.
import type { Readable } from 'node:stream';
import { type ByteRange, isNotFound, type StorageDriver } from '../storage/driver.ts';
import { paths } from '../storage/paths.ts';
import type { Digest } from '../registry/digest.ts';
import type { Logger } from '../log/logger.ts';
import { type Fill, FillEnded } from './blob-fill.ts';
import type { FillCoordinator, FillInfo } from './fill-coordinator.ts';
import { type TailSource, tailStream } from './tail-reader.ts';

const READ_STEP = 1024 * 1024;
const POLL_MS = 50;
/** Redis errors in a row before the readers give up. */
const MAX_POLL_ERRORS = 20;

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

type State = 'waiting' | 'running' | 'done' | 'failed';

export class RemoteFill implements Fill, TailSource {
  size: number | undefined;
  readonly ready: Promise<number | undefined>;
  readonly done: Promise<void>;

  private state: State = 'waiting';
  /** The latest state seen of the fill followed. */
  info: FillInfo;
  private error: Error | undefined;
  private stored = 0;
  private location: string | undefined;
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
    this.info = first;
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
    this.info = info;
    if (this.state === 'waiting') {
      this.state = 'running';
      this.size = info.size;
      this.resolveReady(info.size);
    }
    if (info.key) this.location = info.key;
    if (info.written > this.stored) this.stored = info.written;
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
    this.stored = size;
    this.location = paths.blobData(this.digest);
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

  join(): Promise<number | undefined> {
    if (this.state === 'failed') return Promise.reject(new FillEnded(this.error?.message ?? 'the blob fill failed on another replica'));
    return this.ready.catch((err: Error) => {
      throw new FillEnded(err.message);
    });
  }

  stream(range?: ByteRange): Readable {
    return tailStream(this, this.deps.driver, range);
  }

  // ---- TailSource ----

  get written(): number {
    return this.stored;
  }

  get key(): string | undefined {
    return this.location;
  }

  get complete(): boolean {
    return this.state === 'done';
  }

  get failure(): Error | undefined {
    return this.state === 'failed' ? this.error : undefined;
  }

  waitForMore(pos: number): Promise<void> {
    const end = this.size !== undefined ? this.size - 1 : Number.POSITIVE_INFINITY;
    return this.waitFor(Math.min(pos + READ_STEP, end));
  }

  whenComplete(): Promise<void> {
    return this.done.catch(() => {});
  }

  /** Until at least `atLeast` + 1 bytes are readable, the fill ends, or (slow filler) the next update. */
  private waitFor(atLeast: number): Promise<void> {
    if (this.state === 'done' || this.state === 'failed' || this.stored - 1 > atLeast) return Promise.resolve();
    return new Promise((wake) => this.waiters.push(wake));
  }

  private wake(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }
}
