// One upstream fetch of one blob into the cache, readable by any number of
// clients while it runs. The fetch writes to an upload file and hashes as it
// goes, both on a worker thread (fill-writer.ts: this event loop only reads
// the upstream and serves clients); readers tail that file at their own pace
// (memory stays flat, and a slow or vanished client neither slows nor aborts
// the fill: the fill follows its fastest client only while that client keeps
// up, see PACE_*). The bytes on
// their way to storage are kept in memory until they are stored, so clients at
// the head of the fill have them as they arrive, not once stored (on S3 that
// is a whole part later). The last byte is held back until the digest is
// verified, so no client ever receives a complete blob whose bytes do not
// match it, and a bad blob is never committed.
//
// A fill is shared by every repository that asks for its digest, but a
// repository's upstream answer is its own: until some repository's upstream
// answers with the bytes, each repository that joins asks its own upstream
// (the first to answer wins, the others are dropped), and a repository whose
// upstream fails (404, down, stalled) fails only its own clients. Otherwise a
// client looping on /v2/nope/x/blobs/<popular layer> would fail, or stall,
// everyone's pulls of that layer.
//
// A fill reads at most the size the upstream announced (and, when a manifest
// of the repository declared one, no more than that: a larger announcement is
// refused up front), and gives up when the body takes longer than a deadline
// scaled to its size (limits): a body trickled a byte at a time would
// otherwise hold the fill, and its clients, for ever.
import { randomUUID } from 'node:crypto';
import * as path from 'node:path';
import { Readable, type Writable } from 'node:stream';
import type { ByteRange, StorageDriver } from '../storage/driver.ts';
import { FilesystemDriver } from '../storage/filesystem.ts';
import { paths } from '../storage/paths.ts';
import type { BlobStore } from '../registry/blob-store.ts';
import type { Digest } from '../registry/digest.ts';
import type { Logger } from '../log/logger.ts';
import { type FillJob, startFillJob } from './fill-writer.ts';
import { freeChunk } from '../storage/free-chunk.ts';
import { streamChunks } from '../storage/stream-chunks.ts';
import { type TailSource, tailSender, tailStream } from './tail-reader.ts';
import { type FetchedBlob, type UpstreamClient, UpstreamUnavailable } from './upstream-client.ts';

/** Wakes everyone waiting for the next change. */
class Signal {
  private waiting: Array<() => void> = [];
  next(): Promise<void> {
    return new Promise((resolve) => this.waiting.push(resolve));
  }
  notify(): void {
    const waiting = this.waiting;
    this.waiting = [];
    for (const resolve of waiting) resolve();
  }
}

const MiB = 1024 * 1024;
/**
 * How far a fill may read the upstream ahead of what the storage has taken:
 * clients get the bytes at the upstream's speed even when the storage is slower
 * (S3 stores a part at a time), while memory stays bounded whatever the blob's
 * size: at most AHEAD_PER_FILL per fill, and beyond AHEAD_MIN only while all the
 * process's fills together hold less than AHEAD_TOTAL.
 */
const AHEAD_PER_FILL = 64 * MiB;
const AHEAD_MIN = 16 * MiB;
const AHEAD_TOTAL = 256 * MiB;
/**
 * Fills written by the worker (the filesystem) share a budget of their own and
 * no floor: the worker stores every fill's bytes in turn whatever the others
 * hold, so a fill waiting for room always gets it, and one that holds nothing
 * may always read on (a chunk at a time). The floor the driver-stored fills
 * need (a whole S3 part must be in memory before any of it is stored) let 64
 * fills hold 4 MB each; 8 MiB in all kept a 3-layer cold pull as fast and took
 * 64 concurrent fills from 209 to 148 MB of RSS (medians, bench sizes). 4 MiB
 * (with a 2 MiB ring, fill-writer.ts): cold pulls as fast again (bench, 7
 * fresh mirrors each: 265 MB/s against 256) and the mirror phase's peak 99.7
 * MB against 105: the bytes ahead sit in the sockets' 64 KB read buffers.
 */
const WORKER_AHEAD_TOTAL = 4 * MiB;
/**
 * The process's fills together: bytes held ahead of the storage (all fills; those the worker
 * writes), fills downloading, clients reading a fill. `room` wakes pumps waiting for the budget.
 */
const budget = { ahead: 0, workerAhead: 0, kept: 0, receiving: 0, reading: 0, changed: new Signal(), room: new Signal() };
/**
 * Stored bytes a fill keeps in memory for its readers close behind the head (at most
 * READER_KEEP behind it; all fills together at most KEEP_TOTAL): the worker stores
 * faster than most clients read, and a client that fell behind the window read
 * the bytes back from storage (15 % of a 300 MB cold pull did), which cost this
 * thread a file read, and a new buffer, per 64 KB.
 */
const READER_KEEP = 4 * MiB;
const KEEP_TOTAL = 16 * MiB;
/**
 * A fill reads the upstream at most PACE_LEAD ahead of its fastest reader, as
 * distribution's single copy loop does: that reader then gets every byte from
 * memory, and the process does not spend the cores reading ahead what it must
 * then read back (a 60 MB cold pull on 2 cores: 0.88× of distribution's speed
 * without, 0.94× with). Only while the reader keeps up: pacing ends for the
 * fill once its reader has not moved for PACE_STALL_MS or the fill's average
 * rate would drop below PACE_MIN_RATE, so a stalled or slow client never holds
 * the fill (nor brings it near its deadline); it reads from storage instead.
 */
const PACE_LEAD = 2 * MiB;
const PACE_STALL_MS = 200;
const PACE_MIN_RATE = 8_000_000;
/** How many bytes of a fill may wait for the storage before it starts writing them (see feed()). */
const WRITE_BEHIND = 32 * MiB;
/** How long, at most, the storage writes then wait while other fills download or clients read. */
const WRITE_BEHIND_MAX_WAIT_MS = 1000;
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** 'verified': every byte arrived and matches the digest; the commit is still running. */
type State = 'starting' | 'running' | 'verified' | 'done' | 'failed';

/** Where a fill may fetch its blob: a repository of an upstream, on behalf of the clients of a cache repository. */
export interface FillSource {
  /** The cache repository (its canonical name, upstream host included): what tells sources apart. */
  cacheName: string;
  remoteName: string;
  client: UpstreamClient;
  /** The blob's size as a manifest of `cacheName` declares it, when one was seen. */
  declaredSize?: number;
}

/** A fill's time limit: `floorMs` plus its size at `bytesPerSecond` (proxy.filltimeout, proxy.fillminrate). */
export interface FillLimits {
  floorMs: number;
  bytesPerSecond: number;
}

export const DEFAULT_FILL_LIMITS: FillLimits = { floorMs: 120_000, bytesPerSecond: 128 * 1024 };

/**
 * The fill ended without the blob, and not because of the joining source's own
 * upstream: the caller starts a new fill (the storage-side state is gone).
 */
export class FillEnded extends Error {
  constructor(reason: string) {
    super(reason);
    this.name = 'FillEnded';
  }
}

/** A cache fill clients can read while it runs: this process's own (BlobFill) or another replica's (RemoteFill). */
export interface Fill {
  readonly size: number | undefined;
  /** Resolves once the upstream answered (with the size, if it sent one); rejects if the fill failed first. */
  readonly ready: Promise<number | undefined>;
  readonly done: Promise<void>;
  /**
   * Waits on behalf of a client of `source`: resolves with the size (if known) once
   * the fill has the upstream's bytes coming, whichever repository's upstream
   * sent them; rejects with `source`'s own upstream failure, or FillEnded.
   */
  join(source: FillSource): Promise<number | undefined>;
  stream(range?: ByteRange): Readable;
  /** The same bytes written to a response: faster, and lighter on memory, than piping stream() (tail-reader.ts). */
  send?(range?: ByteRange): (dest: Writable) => Promise<void>;
}

/** One repository's upstream request for a fill. */
interface Attempt {
  failure?: Error;
  /** Cancels the request once another repository's answer won (a dropped request would hold its connection). */
  cancel: AbortController;
  /** Settles for the clients of this source: the fill runs (any source), or this source failed. */
  settled: Promise<number | undefined>;
  resolve(size: number | undefined): void;
  reject(err: Error): void;
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
  readonly ready: Promise<number | undefined>;
  /** Resolves when the blob is committed to the cache; rejects when the fill failed. */
  readonly done: Promise<void>;

  private state: State = 'starting';
  private error: Error | undefined;
  private stored = 0;
  /** Bytes received from the upstream; those from `windowStart` on are in `window`. */
  private received = 0;
  /** The most bytes the upstream may send: its Content-Length, or less when a manifest declared less. */
  private limit = Number.POSITIVE_INFINITY;
  /** Received chunks not yet (wholly) stored, in order: at most the read-ahead (AHEAD_*) plus what the driver buffers. */
  private window: Buffer[] = [];
  private windowStart = 0;
  /** Bytes of this fill counted in the process's read-ahead budget. */
  private accounted = 0;
  /**
   * Whether chunks leaving the window are freed at once (freeChunk) rather than left to the GC: with
   * the worker storing the bytes (it copies them), as long as every reader that took chunks from
   * memory hands them back once written (tailSender; a plain stream() does not). A chunk still lent
   * to a reader is freed when it comes back. The upstream's chunks are the fill's alone: each is
   * the socket read that carried it.
   */
  private get freeing(): boolean {
    return this.file !== undefined && !this.chunksShared;
  }
  /** A reader that does not hand chunks back took some: nothing is freed from then on. */
  private chunksShared = false;
  private readonly lent = new Map<ArrayBufferLike, number>();
  private readonly retired = new Map<ArrayBufferLike, Buffer>();
  /** Where this fill's readers are (tail-reader.ts), and the stored bytes kept for them (in budget.kept). */
  private readonly readers = new Map<object, number>();
  private kept = 0;
  /** The pump follows its fastest reader (see PACE_*) until this turns false. */
  private pacing = true;
  private readonly readerMoved = new Signal();
  /** Wakes a pump waiting for a reader that does not move. */
  private paceTimer: NodeJS.Timeout | undefined;
  /** When the last byte arrived and was verified (for the debug log). */
  private verifiedAt = 0;
  /** Why the pump gave up (upstream error, wrong size or digest, too slow, the worker could not store). */
  private pumpError: Error | undefined;
  /** The upstream's body, while the fill reads it. */
  private body: Readable | undefined;
  /** Hashes the bytes on a worker thread, and with `file` stores them there too (fill-writer.ts). */
  private job: FillJob | undefined;
  /** Bytes handed to the job so far: the window keeps those it does not have yet. */
  private staged = 0;
  /**
   * The upload file on the filesystem, written by the job's worker rather than by the
   * driver on this thread; undefined when the driver stores the bytes (S3, putStream).
   */
  private file: string | undefined;
  /** Any progress: bytes received or stored, the end, a failure (the storage writer, the pump and readers wait on it). */
  private readonly progressed = new Signal();
  /** Each repository's upstream request, by cache name, while the fill starts. */
  private readonly attempts = new Map<string, Attempt>();
  /** The repository whose upstream sent the bytes (its upload directory holds them until the commit). */
  private winner: FillSource | undefined;
  /** Repositories whose clients were served by this fill: each gets the blob's link at the commit. */
  private readonly linkNames = new Set<string>();
  private location = '';
  private readonly uploadId = randomUUID();
  private readonly limits: FillLimits;
  private resolveReady!: (size: number | undefined) => void;
  private rejectReady!: (err: Error) => void;
  private readonly answer: Promise<FetchedBlob>;
  private resolveAnswer!: (fetched: FetchedBlob) => void;
  private rejectAnswer!: (err: Error) => void;

  /**
   * Written straight to the blob's key (driver.putStream) rather than to an upload
   * that is moved there: when the driver can, and no other replica reads the fill
   * from storage (no observer). On S3 this saves copying every byte a second time.
   */
  private readonly direct: boolean;

  constructor(
    readonly digest: Digest,
    cacheName: string,
    remoteName: string,
    private readonly deps: {
      driver: StorageDriver;
      blobs: BlobStore;
      client: UpstreamClient;
      logger: Logger;
      observer?: FillObserver;
      /** The size a manifest of `cacheName` declares for the blob. */
      declaredSize?: number;
      limits?: FillLimits;
    },
  ) {
    this.limits = deps.limits ?? DEFAULT_FILL_LIMITS;
    this.direct = deps.driver.putStream !== undefined && deps.observer === undefined;
    this.ready = new Promise((resolve, reject) => {
      this.resolveReady = resolve;
      this.rejectReady = reject;
    });
    this.ready.catch(() => {});
    this.answer = new Promise((resolve, reject) => {
      this.resolveAnswer = resolve;
      this.rejectAnswer = reject;
    });
    this.answer.catch(() => {});
    this.join({ cacheName, remoteName, client: deps.client, declaredSize: deps.declaredSize });
    this.done = this.run();
    this.done.catch(() => {});
  }

  join(source: FillSource): Promise<number | undefined> {
    if (this.state === 'failed') return Promise.reject(new FillEnded(this.error?.message ?? 'the blob fill failed'));
    if (this.state !== 'starting') {
      this.linkNames.add(source.cacheName);
      return Promise.resolve(this.size);
    }
    return (this.attempts.get(source.cacheName) ?? this.attempt(source)).settled;
  }

  /** Asks `source`'s upstream for the blob, alongside the requests already out. */
  private attempt(source: FillSource): Attempt {
    const attempt = { cancel: new AbortController() } as Attempt;
    attempt.settled = new Promise<number | undefined>((resolve, reject) => {
      attempt.resolve = resolve;
      attempt.reject = reject;
    });
    attempt.settled.catch(() => {});
    this.attempts.set(source.cacheName, attempt);
    void this.ask(source, attempt);
    return attempt;
  }

  private async ask(source: FillSource, attempt: Attempt): Promise<void> {
    let fetched: FetchedBlob;
    try {
      fetched = await source.client.getBlob(source.remoteName, this.digest.value, attempt.cancel.signal);
    } catch (err) {
      // Cancelled: another repository's answer won, and this attempt's clients were resolved with it.
      if (attempt.cancel.signal.aborted) return;
      this.attemptFailed(attempt, err as Error);
      return;
    }
    if (this.state !== 'starting') {
      // Another repository's upstream answered first (or they all failed): the digest makes its bytes the same blob.
      fetched.body.destroy();
      return;
    }
    const declared = source.declaredSize;
    if (declared !== undefined && fetched.size !== undefined && fetched.size > declared) {
      fetched.body.destroy();
      const host = source.client.upstream?.host ?? 'upstream';
      this.attemptFailed(
        attempt,
        new UpstreamUnavailable(
          host,
          `blob ${source.remoteName}@${this.digest.value} comes as ${fetched.size} bytes where its manifest declares ${declared}; not fetched`,
        ),
      );
      return;
    }
    this.winner = source;
    this.location = paths.uploadData(source.cacheName, this.uploadId);
    this.limit = Math.min(fetched.size ?? Number.POSITIVE_INFINITY, declared ?? Number.POSITIVE_INFINITY);
    this.size = fetched.size;
    this.state = 'running';
    for (const [name, a] of this.attempts) {
      if (a !== attempt) a.cancel.abort();
      if (a.failure) continue;
      this.linkNames.add(name);
      a.resolve(fetched.size);
    }
    this.resolveReady(fetched.size);
    this.resolveAnswer(fetched);
  }

  /** A repository's upstream request failed: its clients fail; the fill fails once every request did. */
  private attemptFailed(attempt: Attempt, err: Error): void {
    attempt.failure = err;
    attempt.reject(err);
    if (this.state !== 'starting' || [...this.attempts.values()].some((a) => !a.failure)) return;
    // At once, so that no repository joins a fill that is over.
    this.state = 'failed';
    this.error = err;
    this.rejectAnswer(err);
  }

  private async run(): Promise<void> {
    const { driver, blobs, logger } = this.deps;
    let cleaned = false;
    let body: Readable | undefined;
    const t0 = Date.now();
    const ms: Record<string, number> = {};
    try {
      const fetched = await this.answer;
      ms.upstreamMs = Date.now() - t0;
      this.deps.observer?.started(this.key, fetched.size);
      body = this.body = fetched.body;
      this.file = !this.direct && driver instanceof FilesystemDriver ? localFile(driver, this.key) : undefined;
      this.job = startFillJob(
        { algorithm: this.digest.algorithm, file: this.file },
        {
          stored: (total) => {
            if (this.file) this.storedUpTo(total);
          },
          room: () => {
            this.stage();
            this.progressed.notify();
          },
        },
      );
      const pumping = this.pump(fetched.body);
      const stream = this.file ? undefined : Readable.from(this.feed(), { objectMode: false });
      const tap = (chunk: Buffer) => this.storedUpTo(this.stored + chunk.length);
      if (!stream) {
        // The worker wrote every byte by the time the pump has the digest.
        await pumping;
        if (this.pumpError) throw this.pumpError;
        ms.storedMs = Date.now() - t0;
        await blobs.commitFrom(this.key, this.digest, this.stored);
      } else if (this.direct && driver.putStream) {
        // Straight to the blob's place, visible only once complete (the feed ends only after the
        // digest checked out; a bad blob aborts the write).
        await driver.putStream(paths.blobData(this.digest), stream, tap);
        await pumping;
        ms.storedMs = Date.now() - t0;
        await blobs.recordStored(this.digest, this.stored);
      } else {
        await driver.append(this.key, stream, tap);
        await pumping;
        ms.storedMs = Date.now() - t0;
        await blobs.commitFrom(this.key, this.digest, this.stored);
      }
      await Promise.all([...this.linkNames].map((name) => blobs.writeLink(paths.layerLink(name, this.digest), this.digest)));
      // Clean up before anyone learns the blob is complete: a client that has all its bytes sees no leftovers.
      if (!this.direct) await driver.delete(this.uploadDir).catch(() => {});
      cleaned = true;
      this.location = paths.blobData(this.digest);
      this.state = 'done';
      this.progressed.notify();
      this.deps.observer?.finished(true);
      ms.committedMs = Date.now() - t0;
      ms.verifiedMs = this.verifiedAt - t0;
      logger.debug({ digest: this.digest.value, repo: this.winner?.cacheName, bytes: this.stored, ...ms }, 'blob cached');
    } catch (err) {
      this.error = this.pumpError ?? (err as Error);
      this.state = 'failed';
      this.window = [];
      body?.destroy();
      this.progressed.notify();
      this.rejectReady(this.error);
      for (const a of this.attempts.values()) a.reject(this.error);
      this.deps.observer?.finished(false, this.error.message);
      logger.warn({ digest: this.digest.value, repo: this.winner?.cacheName ?? [...this.attempts.keys()][0], err: this.error.message }, 'blob fill failed');
      throw this.error;
    } finally {
      this.unaccount(Number.POSITIVE_INFINITY);
      this.keep(0);
      // The worker lets go of the upload file before it is deleted.
      await this.job?.abort();
      if (!cleaned && !this.direct && this.winner) await driver.delete(this.uploadDir).catch(() => {});
    }
  }

  private get uploadDir(): string {
    return paths.uploadDir(this.winner?.cacheName ?? '', this.uploadId);
  }

  /**
   * Reads the upstream into the window as fast as it sends (handing the bytes to
   * the worker that hashes them, and waking readers), independently of how fast
   * the storage takes the bytes, up to a bounded distance ahead of it (see
   * AHEAD_*), and no further than `limit`, within the fill's deadline. At the end
   * it checks the size and digest: only then may readers have the last byte, and
   * the storage the end of the stream (feed()).
   */
  private async pump(body: Readable): Promise<void> {
    budget.receiving++;
    const stopDeadline = this.deadline(body);
    const started = Date.now();
    try {
      for await (const chunk of streamChunks(body)) {
        if ((this.state as State) === 'failed') return;
        if (this.received + chunk.length > this.limit) {
          throw new Error(`upstream sent more than the ${this.limit} bytes ${this.size === this.limit ? 'it announced' : 'the manifest declares'} for ${this.digest.value}; not cached`);
        }
        this.window.push(chunk);
        this.received += chunk.length;
        this.accounted += chunk.length;
        budget.ahead += chunk.length;
        if (this.file) budget.workerAhead += chunk.length;
        this.stage();
        this.progressed.notify();
        while (this.state !== 'failed' && !this.pumpError && this.tooFarAhead()) {
          await (this.file ? Promise.race([this.progressed.next(), budget.room.next()]) : this.progressed.next());
        }
        if (this.pumpError) throw this.pumpError;
        if (this.pacing && this.readers.size > 0) await this.pace(started);
      }
      if ((this.state as State) === 'failed') return;
      if (this.size !== undefined && this.received !== this.size) {
        throw new Error(`upstream sent ${this.received} bytes of ${this.size} for ${this.digest.value}`);
      }
      // The worker has every byte (with a file: written) before it answers the digest.
      while (this.staged < this.received && !this.pumpError) await this.progressed.next();
      if (this.pumpError) throw this.pumpError;
      const actual = await this.job!.end();
      if ((this.state as State) === 'failed') return;
      if (actual !== this.digest.hex) {
        throw new Error(`upstream sent bytes that do not match ${this.digest.value} (got ${this.digest.algorithm}:${actual}); not cached`);
      }
      this.size = this.received;
      // Readers may have the last byte now (from memory); the commit follows once it is all stored.
      this.state = 'verified';
      this.verifiedAt = Date.now();
    } catch (err) {
      this.pumpError ??= err as Error;
      body.destroy();
    } finally {
      stopDeadline();
      clearTimeout(this.paceTimer);
      budget.receiving--;
      budget.changed.notify();
      this.progressed.notify();
    }
  }

  /** Waits while the pump is more than PACE_LEAD ahead of its fastest reader, as long as that reader keeps up. */
  private async pace(started: number): Promise<void> {
    for (;;) {
      const lead = this.fastestReader();
      if (lead < 0 || this.received - lead <= PACE_LEAD || this.pumpError || this.state !== 'running') return;
      if (this.received < (PACE_MIN_RATE * (Date.now() - started)) / 1000) {
        this.pacing = false;
        return;
      }
      const waitedFrom = Date.now();
      if (this.paceTimer) this.paceTimer.refresh();
      else this.paceTimer = setTimeout(() => this.readerMoved.notify(), PACE_STALL_MS);
      await this.readerMoved.next();
      if (this.fastestReader() <= lead && Date.now() - waitedFrom >= PACE_STALL_MS) {
        this.pacing = false;
        return;
      }
    }
  }

  /** Where the reader furthest into the blob is; -1 without readers. */
  private fastestReader(): number {
    let lead = -1;
    for (const pos of this.readers.values()) if (pos > lead) lead = pos;
    return lead;
  }

  /**
   * Gives up on the body once it has taken longer than the floor plus its size at
   * the slowest rate allowed (the upstream's per-chunk timeout restarts with every
   * byte, so a trickle never trips it). Without a size, the bytes received so far
   * stand for it: the body must keep up that average rate. Returns the canceller.
   */
  private deadline(body: Readable): () => void {
    const { floorMs, bytesPerSecond } = this.limits;
    const started = Date.now();
    let timer: NodeJS.Timeout | undefined;
    const check = () => {
      const expected = this.size ?? this.received;
      const left = started + floorMs + (expected / bytesPerSecond) * 1000 - Date.now();
      if (left > 0) {
        timer = setTimeout(check, Math.min(Math.ceil(left), 2 ** 31 - 1));
        return;
      }
      const seconds = ((Date.now() - started) / 1000).toFixed(1);
      this.pumpError ??= new Error(
        `upstream too slow: ${this.received} of ${this.size ?? 'an unknown number of'} bytes of ${this.digest.value} in ${seconds} s (proxy.filltimeout, proxy.fillminrate); not cached`,
      );
      body.destroy(this.pumpError);
      this.progressed.notify();
    };
    check();
    return () => clearTimeout(timer);
  }

  /** Hands the worker the window's bytes it does not have yet, as far as its ring has room (room() calls again). */
  private stage(): void {
    const job = this.job;
    if (!job || this.pumpError || this.state === 'failed') return;
    try {
      if (job.failure) throw job.failure;
      while (this.staged < this.received) {
        const chunk = this.fromMemory(this.staged, Number.POSITIVE_INFINITY);
        if (!chunk) throw new Error(`a cache fill lost bytes ${this.staged}-${this.received} on their way to the worker`);
        const taken = job.write(chunk);
        if (taken === 0) break;
        this.staged += taken;
      }
    } catch (err) {
      this.pumpError ??= err as Error;
      this.body?.destroy();
    }
    this.release();
  }

  /** `total` bytes are in storage (and readable from it, unless written in place). */
  private storedUpTo(total: number): void {
    if (total <= this.stored) return;
    this.unaccount(total - this.stored);
    this.stored = total;
    this.release();
    this.progressed.notify();
    this.deps.observer?.progress(this.stored);
  }

  private tooFarAhead(): boolean {
    const ahead = this.received - this.stored;
    if (this.file) return ahead > 0 && budget.workerAhead > WORKER_AHEAD_TOTAL;
    return ahead > AHEAD_PER_FILL || (ahead > AHEAD_MIN && budget.ahead > AHEAD_TOTAL);
  }

  /** The stream the storage stores: the window's bytes in order, ending only once the pump verified them. */
  private async *feed(): AsyncGenerator<Buffer> {
    // Write-behind: the upstream gets the process first, and the storage its bytes once they are all
    // here and verified, or once WRITE_BEHIND of them wait (readers have them from memory meanwhile).
    // Not when other replicas follow the fill (an observer): they read it from the storage.
    // Never while the fills of this process hold half the read-ahead budget: their pumps would soon
    // wait for the storage, and the storage for them.
    if (!this.deps.observer) {
      const holding = () => !this.pumpError && budget.ahead < AHEAD_TOTAL / 2;
      while (this.state === 'running' && holding() && this.received < WRITE_BEHIND) {
        await Promise.race([this.progressed.next(), sleep(50)]);
      }
      // And, for a moment, while other fills are still downloading or clients still read a fill
      // (they wait for those bytes; the storage writes compete with them for the CPU and the disk).
      const until = Date.now() + WRITE_BEHIND_MAX_WAIT_MS;
      while ((budget.receiving > 0 || budget.reading > 0) && holding() && Date.now() < until) {
        await Promise.race([budget.changed.next(), sleep(50)]);
      }
    }
    let fed = 0;
    for (;;) {
      if (this.pumpError) throw this.pumpError;
      const chunk = fed < this.received ? this.fromMemory(fed, Number.POSITIVE_INFINITY) : undefined;
      if (chunk) {
        fed += chunk.length;
        yield chunk;
        continue;
      }
      if (this.state === 'verified') return;
      await this.progressed.next();
    }
  }

  /** Gives the fill's share of the read-ahead budget back (all of it once the fill ended). */
  private unaccount(bytes: number): void {
    const freed = Math.min(bytes, this.accounted);
    this.accounted -= freed;
    budget.ahead -= freed;
    if (this.file && freed > 0) {
      budget.workerAhead -= freed;
      budget.room.notify();
    }
  }

  /**
   * Drops the window's chunks that are wholly stored (readers find them in storage) and
   * handed to the worker; but not the last byte's: readers held back at it until the
   * verification take it from here (from storage, when written in place, it would only
   * come once committed).
   */
  private release(): void {
    const done = Math.min(this.stored, this.staged, this.received - 1);
    let until = done;
    // Kept also once committed, while readers remain: their bytes are here, and reading them back costs.
    const keeping = this.state !== 'failed' && this.readers.size > 0;
    if (keeping) {
      for (const pos of this.readers.values()) {
        if (pos < until && pos >= this.windowStart && this.received - pos <= READER_KEEP) until = pos;
      }
      if (budget.kept - this.kept + (done - until) > KEEP_TOTAL) until = done;
    }
    while (this.window.length > 0 && this.windowStart + this.window[0].length <= until) {
      const chunk = this.window.shift()!;
      this.windowStart += chunk.length;
      if (!this.freeing) continue;
      if (this.lent.has(chunk.buffer)) this.retired.set(chunk.buffer, chunk);
      else freeChunk(chunk);
    }
    this.keep(keeping ? Math.max(0, done - this.windowStart) : 0);
  }

  /** Counts `bytes` of the window as kept for readers only. */
  private keep(bytes: number): void {
    budget.kept += bytes - this.kept;
    this.kept = bytes;
  }

  /** The blob's bytes (or a range of them), read from the cache file as the fill writes it. */
  stream(range?: ByteRange): Readable {
    const stream = tailStream(this, this.deps.driver, range);
    budget.reading++;
    stream.once('close', () => {
      budget.reading--;
      budget.changed.notify();
    });
    return stream;
  }

  send(range?: ByteRange): (dest: Writable) => Promise<void> {
    const send = tailSender(this, this.deps.driver, range);
    return async (dest) => {
      budget.reading++;
      try {
        await send(dest);
      } finally {
        budget.reading--;
        budget.changed.notify();
      }
    };
  }

  // ---- TailSource ----

  get written(): number {
    // Written in place (direct), nothing is readable from storage before the end.
    return this.direct && this.state !== 'done' ? 0 : this.stored;
  }

  get available(): number {
    return this.received;
  }

  readerAt(reader: object, pos: number | undefined): void {
    if (pos === undefined) this.readers.delete(reader);
    else this.readers.set(reader, pos);
    this.release();
    this.readerMoved.notify();
  }

  lend(chunk: Buffer, tracked: boolean): void {
    if (!tracked) this.chunksShared = true;
    if (!this.freeing) return;
    this.lent.set(chunk.buffer, (this.lent.get(chunk.buffer) ?? 0) + 1);
  }

  giveBack(chunk: Buffer): void {
    const count = this.lent.get(chunk.buffer);
    if (count === undefined) return;
    if (count > 1) return void this.lent.set(chunk.buffer, count - 1);
    this.lent.delete(chunk.buffer);
    const retired = this.retired.get(chunk.buffer);
    if (!retired) return;
    this.retired.delete(chunk.buffer);
    if (this.freeing) freeChunk(retired);
  }

  fromMemory(pos: number, end: number): Buffer | undefined {
    if (pos < this.windowStart || pos >= this.received) return undefined;
    // From the newest chunk back: the worker's staging and readers at the head ask for the last ones.
    let at = this.received;
    for (let i = this.window.length - 1; i >= 0; i--) {
      const chunk = this.window[i];
      at -= chunk.length;
      if (pos >= at) return chunk.subarray(pos - at, Math.min(chunk.length, end - at + 1));
    }
    return undefined;
  }

  get key(): string {
    return this.location;
  }

  get complete(): boolean {
    return this.state === 'verified' || this.state === 'done';
  }

  get failure(): Error | undefined {
    return this.state === 'failed' ? this.error : undefined;
  }

  /**
   * Readers at the head of the fill take the bytes from memory as they arrive. (The
   * byte before the last one is what a reader can have before verification.)
   */
  waitForMore(pos: number): Promise<void> {
    // A reader that fell behind the window while nothing is readable from storage yet
    // (direct) catches up from the committed blob.
    if (pos < this.windowStart && pos >= this.written) return this.done.catch(() => {});
    return this.waitFor(pos + 1);
  }

  async whenComplete(): Promise<void> {
    while (this.state === 'starting' || this.state === 'running') await this.progressed.next();
  }

  private async waitFor(atLeast: number): Promise<void> {
    while ((this.state === 'starting' || this.state === 'running') && this.received - 1 < atLeast) await this.progressed.next();
  }
}

/** Where the filesystem driver keeps `key` (its own layout), for the worker that writes it. */
function localFile(driver: FilesystemDriver, key: string): string {
  const file = path.join(driver.root, key);
  // As the driver checks for itself: no key leads out of the root.
  if (!file.startsWith(driver.root + path.sep)) throw new Error(`storage key escapes the root: ${key}`);
  return file;
}
