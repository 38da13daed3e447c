// Where a cache fill's bytes are hashed, and on the filesystem also stored:
// on a worker thread (fill-worker.mjs), not on the event loop that reads the
// upstream and serves the clients. On one event loop, SHA-256 alone took a
// fifth of its time during a cold pull, and the file writes (a thread-pool
// round trip per 64 KB chunk) much of the rest.
//
// The bytes go through a ring of shared memory per worker: copying a chunk
// into it costs a memcpy, and nothing is allocated per chunk on either side
// (a message carrying the bytes would allocate them again in the worker, and
// a transferred buffer would come back as new memory to this thread's garbage
// collector). The ring bounds what is on its way to a worker; when it is full
// a job's write() takes less, and the job hears `room()` once the worker has
// caught up (the fill keeps the rest in its window meanwhile).
//
// A few workers serve every fill of the process (a worker per fill would cost
// a thread and some megabytes per concurrent fill); a worker that has had no
// job for a while ends, and the next fill starts one again.
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import type { Algorithm } from '../registry/digest.ts';

const MiB = 1024 * 1024;
/** Shared memory per worker: what may be on its way to be hashed and written (4 MiB was no faster: blob-fill.ts WORKER_AHEAD_TOTAL). */
const RING_BYTES = 2 * MiB;
/** Workers at most; a 2-core host gets one (the event loop keeps the other core). */
const MAX_WORKERS = Math.max(1, Math.min(4, availableParallelism() - 1));
/** A worker without a job for this long ends (its thread and memory go back). */
const IDLE_MS = 30_000;
/** What is copied goes to the worker in messages of at least this much, or after FLUSH_MS. */
const BATCH_BYTES = 512 * 1024;
const FLUSH_MS = 2;

/** What a job tells its fill. */
export interface FillJobEvents {
  /** The worker hashed (and, with a file, wrote) `stored` bytes of the job in all. */
  stored(stored: number): void;
  /** The ring has room again after a write() took less than it was given. */
  room(): void;
}

/** One fill's bytes on their way to a worker: write() them in order, then end() for the digest. */
export class FillJob {
  /** Bytes hashed (and written to the file, if any) so far. */
  stored = 0;
  private error: Error | undefined;
  /** Waits for the worker's last word on the job: the digest (end) or that it let go (abort). */
  private settle: { resolve(hex: string | undefined): void; reject(err: Error): void } | undefined;
  private over = false;

  constructor(
    private readonly worker: FillWorker,
    readonly id: number,
    private readonly events: FillJobEvents,
  ) {}

  /** Why the job failed (the file could not be written, the worker stopped). */
  get failure(): Error | undefined {
    return this.error;
  }

  /**
   * Hands the worker the start of `chunk` (copied: the caller keeps its buffer).
   * Returns how many bytes it took: fewer than all at the ring's end (write the
   * rest again) or when it is full; 0 when it is full, and then `room()` follows.
   * Throws once the job failed.
   */
  write(chunk: Uint8Array): number {
    if (this.error) throw this.error;
    return chunk.length === 0 ? 0 : this.worker.copy(this, chunk);
  }

  /** Every byte was written: resolves with the digest's hex once the worker has them all (stored, with a file). */
  end(): Promise<string> {
    return this.last('end') as Promise<string>;
  }

  /** Drops the job; resolves once the worker has closed its file, which is then the caller's to delete. */
  async abort(): Promise<void> {
    if (this.over) return;
    await this.last('abort').catch(() => {});
  }

  private last(t: 'end' | 'abort'): Promise<string | undefined> {
    if (this.error) return Promise.reject(this.error);
    if (this.over) return Promise.reject(new Error('the fill job is over'));
    this.over = true;
    return new Promise((resolve, reject) => {
      this.settle = { resolve, reject };
      this.worker.send(this, { t, id: this.id });
    });
  }

  // ---- from the worker ----

  progressed(stored: number, error?: string): void {
    if (error) return this.failed(new Error(`storing a cache fill failed: ${error}`));
    if (stored <= this.stored) return;
    this.stored = stored;
    this.events.stored(stored);
  }

  finished(hex: string | undefined, error?: string): void {
    if (error && error !== ABORTED) return this.failed(new Error(`storing a cache fill failed: ${error}`));
    this.settle?.resolve(hex);
  }

  failed(err: Error): void {
    if (this.error) return;
    this.error = err;
    this.over = true;
    this.worker.forget(this);
    this.settle?.reject(err);
    // A fill waiting for room learns of the failure from it.
    this.events.room();
  }

  wakeForRoom(): void {
    this.events.room();
  }
}

/** The worker's answer to an abort (fill-worker.mjs). */
const ABORTED = 'aborted';

interface WorkerAnswer {
  released: number;
  progress: Array<[number, number, string?]>;
  done: Array<[number, string | undefined, string?]>;
}

class FillWorker {
  readonly jobs = new Map<number, FillJob>();
  private readonly worker: Worker;
  private readonly ring: Buffer;
  /** Ring bytes handed out and handed back since the start: what lies between is in the worker's hands. */
  private head = 0;
  private released = 0;
  /** Jobs whose last write() found the ring full. */
  private waiting = new Set<FillJob>();
  private idle: NodeJS.Timeout | undefined;
  /**
   * Where the bytes copied since the last message are: [id, off, len, cost] for each copy. Sent
   * in batches (see schedule()), and only while the worker has nothing of ours left to do: each
   * message wakes the worker, and its answer this thread, which took as much of this thread's time
   * as the copies did. A worker still busy gets what was copied meanwhile in one message once it
   * answers (postMessage was 9 % of this thread's time in a cold pull).
   */
  private copied: number[] = [];
  /** Ring bytes in data messages sent so far: the worker is busy with ours until `released` reaches it. */
  private sent = 0;
  /** A flush is due: on the next turn (a batch's worth waits), or after FLUSH_MS (the timer). */
  private scheduled: 'immediate' | NodeJS.Timeout | undefined;
  dead = false;

  constructor(private readonly onEnd: (w: FillWorker) => void) {
    const shared = new SharedArrayBuffer(RING_BYTES);
    this.ring = Buffer.from(shared);
    this.worker = new Worker(new URL('./fill-worker.mjs', import.meta.url), { workerData: { ring: shared } });
    // Jobs in flight belong to fills whose sockets keep the process up; an idle worker must not.
    this.worker.unref();
    this.worker.on('message', (answer: WorkerAnswer) => this.answered(answer));
    this.worker.on('error', (err) => this.end(err));
    this.worker.on('exit', (code) => this.end(new Error(`the fill worker stopped (exit code ${code})`)));
  }

  add(job: FillJob, open: { algorithm: Algorithm; file?: string }): void {
    clearTimeout(this.idle);
    this.jobs.set(job.id, job);
    this.worker.postMessage({ t: 'open', id: job.id, ...open });
  }

  copy(job: FillJob, chunk: Uint8Array): number {
    // Shared memory is copied a byte at a time (7 times slower than memcpy) unless the source and
    // the target sit at the same offset modulo 8: so the bytes go in that far into the ring, the
    // bytes skipped handed back with them.
    const at = this.head % RING_BYTES;
    let start = at + ((chunk.byteOffset - at) & 7);
    if (start >= RING_BYTES) start = chunk.byteOffset & 7;
    const skipped = start >= at ? start - at : RING_BYTES - at + start;
    const n = Math.min(chunk.length, RING_BYTES - start, RING_BYTES - (this.head - this.released) - skipped);
    if (n <= 0) {
      // The job hears room() once the worker has handed some back.
      this.waiting.add(job);
      return 0;
    }
    this.ring.set(n === chunk.length ? chunk : chunk.subarray(0, n), start);
    this.head += skipped + n;
    this.copied.push(job.id, start, n, skipped + n);
    this.schedule();
    return n;
  }

  send(job: FillJob, msg: { t: 'end' | 'abort'; id: number }): void {
    if (this.dead) return job.failed(new Error('the fill worker stopped'));
    this.flush();
    this.worker.postMessage(msg);
  }

  /**
   * Sends what was copied once the worker is done with what it had: on the next turn when a batch's
   * worth waits, else after FLUSH_MS (a message and its answer per 64 KB chunk took a tenth of this
   * thread's time in a cold pull; a fill trickling in still reaches the worker within FLUSH_MS).
   */
  private schedule(): void {
    if (this.released < this.sent || this.scheduled === 'immediate' || this.copied.length === 0) return;
    if (this.head - this.sent >= BATCH_BYTES) {
      clearTimeout(this.scheduled);
      this.scheduled = 'immediate';
      setImmediate(this.flush);
    } else if (this.scheduled === undefined) {
      this.scheduled = setTimeout(this.flush, FLUSH_MS);
    }
  }

  /** Tells the worker where the bytes copied since the last message are (in the order copied). */
  private readonly flush = (): void => {
    if (this.scheduled !== 'immediate') clearTimeout(this.scheduled);
    this.scheduled = undefined;
    if (this.copied.length === 0 || this.dead) return;
    this.worker.postMessage({ t: 'data', copied: this.copied });
    this.copied = [];
    this.sent = this.head;
  };

  forget(job: FillJob): void {
    this.jobs.delete(job.id);
    this.waiting.delete(job);
    if (this.jobs.size === 0 && !this.dead) {
      clearTimeout(this.idle);
      this.idle = setTimeout(() => this.end(new Error('the fill worker stopped when idle')), IDLE_MS).unref();
    }
  }

  private answered({ released, progress, done }: WorkerAnswer): void {
    this.released = released;
    // Done with what it had: what was copied meanwhile goes as a batch, or soon.
    this.schedule();
    for (const [id, stored, error] of progress) this.jobs.get(id)?.progressed(stored, error);
    for (const [id, hex, error] of done) {
      const job = this.jobs.get(id);
      if (!job) continue;
      this.forget(job);
      job.finished(hex, error);
    }
    if (this.waiting.size > 0 && this.head - this.released < RING_BYTES) {
      const waiting = this.waiting;
      this.waiting = new Set();
      for (const job of waiting) job.wakeForRoom();
    }
  }

  private end(err: Error): void {
    if (this.dead) return;
    this.dead = true;
    clearTimeout(this.idle);
    this.onEnd(this);
    for (const job of [...this.jobs.values()]) job.failed(err);
    this.jobs.clear();
    void this.worker.terminate();
  }
}

const workers: FillWorker[] = [];
let nextId = 1;

/**
 * Starts a job on the least busy worker: hashing with `algorithm`, and, given
 * `file` (an absolute path, created with its directory), writing the bytes there.
 */
export function startFillJob(open: { algorithm: Algorithm; file?: string }, events: FillJobEvents): FillJob {
  let worker = workers.find((w) => w.jobs.size === 0);
  if (!worker && workers.length < MAX_WORKERS) {
    worker = new FillWorker((ended) => {
      const at = workers.indexOf(ended);
      if (at >= 0) workers.splice(at, 1);
    });
    workers.push(worker);
  }
  worker ??= workers.reduce((a, b) => (b.jobs.size < a.jobs.size ? b : a));
  const job = new FillJob(worker, nextId++, events);
  worker.add(job, open);
  return job;
}
