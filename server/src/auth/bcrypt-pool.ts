// bcrypt compares on worker threads. A compare costs tens to hundreds of
// milliseconds of CPU; on the main thread (bcryptjs) it would stall every
// other request while a client logs in, or while someone guesses passwords.
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';

/**
 * Compares waiting or running, at most, by default. One worker on a 2-core
 * host does a cost-10 compare in ~80 ms, so a full queue is ~2.5 s of work:
 * unbounded, 100 concurrent wrong passwords made a legitimate login wait 17 s.
 */
export const DEFAULT_MAX_PENDING = 32;

/**
 * Workers end after this long without a compare, and the next compare starts
 * them again (a few tens of milliseconds): verified credentials are cached
 * (htpasswd.ts), so logins come in bursts, and a worker costs about 10 MB of
 * RSS that a small VPS can use better between them.
 */
export const DEFAULT_IDLE_MS = 30_000;

/** The queue is full: the compare was not queued (see Htpasswd.verify). */
export class BcryptPoolBusy extends Error {
  constructor(limit: number) {
    super(`bcrypt queue full (${limit} compares pending)`);
    this.name = 'BcryptPoolBusy';
  }
}

interface Pending {
  resolve: (ok: boolean) => void;
  reject: (err: Error) => void;
}

export class BcryptPool {
  private workers: Worker[] = [];
  /** Workers ended for being idle: their exit fails nothing. */
  private readonly retired = new WeakSet<Worker>();
  private idle: NodeJS.Timeout | undefined;
  private readonly pending = new Map<number, Pending>();
  private nextId = 0;
  private next = 0;
  private run = 0;

  constructor(
    private readonly size = Math.max(1, Math.min(4, availableParallelism() - 1)),
    /** Compares waiting or running, at most; beyond it compare() rejects with BcryptPoolBusy. */
    private readonly maxPending = DEFAULT_MAX_PENDING,
    private readonly idleMs = DEFAULT_IDLE_MS,
  ) {}

  /** Worker threads running now. */
  get workerCount(): number {
    return this.workers.length;
  }

  /** Compares waiting or running now. */
  get pendingCount(): number {
    return this.pending.size;
  }

  /** Compares handed to a worker since the start (refused ones are not). */
  get comparesRun(): number {
    return this.run;
  }

  compare(password: string, hash: string): Promise<boolean> {
    if (this.pending.size >= this.maxPending) return Promise.reject(new BcryptPoolBusy(this.maxPending));
    clearTimeout(this.idle);
    if (this.workers.length === 0) this.start();
    this.run++;
    const id = this.nextId++;
    const worker = this.workers[this.next++ % this.workers.length];
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      worker.postMessage({ id, password, hash });
    });
  }

  private start(): void {
    for (let i = 0; i < this.size; i++) {
      const worker = new Worker(new URL('./bcrypt-worker.mjs', import.meta.url));
      worker.unref();
      worker.on('message', ({ id, ok }: { id: number; ok: boolean }) => {
        this.pending.get(id)?.resolve(ok);
        this.pending.delete(id);
        if (this.pending.size === 0) this.idle = setTimeout(() => this.retire(), this.idleMs).unref();
      });
      worker.on('error', (err) => this.failAll(err));
      worker.on('exit', () => {
        if (this.retired.has(worker)) return;
        this.workers = this.workers.filter((w) => w !== worker);
        this.failAll(new Error('bcrypt worker exited'));
      });
      this.workers.push(worker);
    }
  }

  /** Ends the workers of an idle pool; a compare after that starts new ones. */
  private retire(): void {
    if (this.pending.size > 0) return;
    for (const worker of this.workers) {
      this.retired.add(worker);
      void worker.terminate();
    }
    this.workers = [];
  }

  private failAll(err: Error): void {
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
  }

  async close(): Promise<void> {
    clearTimeout(this.idle);
    const workers = this.workers;
    this.workers = [];
    await Promise.all(workers.map((w) => w.terminate()));
  }
}
