// Blob upload sessions, stored as distribution stores them
// (_uploads/<uuid>/{data,startedat}). Bytes are hashed as they arrive; the
// running hash lives in memory keyed by session and is trusted only while its
// byte count matches the data file, so a restart (or a session that another
// replica appended to) falls back to re-reading the data once at commit.
//
// Replicas sharing storage (S3, or any storage with Redis) keep the running
// SHA-256 resumable instead: hash-wasm's state is saved after every PATCH
// (and every few MiB of a long one) in a HashStateStore (Redis, or the bucket
// under _uploads/<id>/hashstates/ as distribution does), keyed by the byte
// offset it covers, so a PATCH or PUT that lands on another replica loads it
// and carries on without re-reading the data. Bytes that arrive in the same
// request as the final PUT from offset 0 (monolithic uploads) never need a
// saved state and keep the native hash, which is several times faster.
import { randomUUID, type Hash } from 'node:crypto';
import type { Readable } from 'node:stream';
import type { IHasher } from 'hash-wasm';
import { type AppendSourceOptions, isNotFound, type StorageDriver } from '../storage/driver.ts';
import { paths } from '../storage/paths.ts';
import type { BlobInfo, BlobStore } from './blob-store.ts';
import { type Algorithm, type Digest, newHash } from './digest.ts';
import { RegistryError } from './errors.ts';
import type { GcGuard } from './gc-guard.ts';
import { KeyedLock } from './keyed-lock.ts';
import type { AppendOptions, UploadStatus } from './types.ts';

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const RUNNING_ALGORITHM: Algorithm = 'sha256';

/** Save the resumable state at least this often during one long PATCH. */
const CHECKPOINT_BYTES = 8 * 1024 * 1024;
/** Resumable states kept in memory (the rest are loaded from the store when needed). */
const MAX_RESUMABLE_IN_MEMORY = 1000;
/**
 * Running hashes kept in memory (least recently used first out). Each costs
 * about a kilobyte; unbounded, abandoned sessions kept theirs until the purge
 * (40k POSTs: ~43 MB). An evicted session loses nothing but speed: its bytes
 * are hashed afresh from the data file at commit, so only its digest's bytes commit.
 */
const MAX_RUNNING_IN_MEMORY = 1000;

interface RunningHash {
  hash: Hash;
  bytes: number;
}

interface ResumableHash {
  hasher: IHasher;
  bytes: number;
  /** The offset whose state the store holds (as far as this process knows). */
  saved: number;
}

/** Where resumable SHA-256 states of upload sessions are kept (shared/hash-states.ts). */
export interface HashStateStore {
  save(name: string, id: string, offset: number, state: Uint8Array): Promise<void>;
  /** The state saved at exactly `offset`, if there is one. */
  load(name: string, id: string, offset: number): Promise<Uint8Array | undefined>;
  remove(name: string, id: string): Promise<void>;
}

/** saved/loaded: a state went to or came from the store; missing: none for the offset; rehashed: the commit re-read the data. */
export type HashStateEvent = 'saved' | 'loaded' | 'missing' | 'rehashed';

export interface UploadStoreOptions {
  /** Keep the running hash resumable, in this store (replicas sharing storage). */
  hashStates?: HashStateStore;
  onHashState?: (event: HashStateEvent) => void;
  /** Running hashes kept in memory at most (default MAX_RUNNING_IN_MEMORY). */
  maxHashStatesInMemory?: number;
}

export class UploadStore {
  private readonly locks = new KeyedLock();
  private readonly running = new Map<string, RunningHash>();
  private readonly resumable = new Map<string, ResumableHash>();
  private readonly hashStates?: HashStateStore;
  private readonly onHashState: (event: HashStateEvent) => void;
  private readonly maxRunning: number;

  constructor(
    private readonly driver: StorageDriver,
    private readonly blobs: BlobStore,
    private readonly guard: GcGuard,
    options: UploadStoreOptions = {},
  ) {
    this.hashStates = options.hashStates;
    this.onHashState = options.onHashState ?? (() => {});
    this.maxRunning = Math.max(1, options.maxHashStatesInMemory ?? MAX_RUNNING_IN_MEMORY);
  }

  /** Running and resumable hashes held in memory (bounded). */
  get hashStatesInMemory(): number {
    return this.running.size + this.resumable.size;
  }

  async start(name: string): Promise<UploadStatus> {
    const id = randomUUID();
    // No hash state yet: the first write (at offset 0) starts one, so a POST
    // that is never followed by bytes holds nothing in memory.
    await this.driver.putContent(paths.uploadStartedAt(name, id), Buffer.from(new Date().toISOString()));
    return { name, id, offset: 0 };
  }

  async status(name: string, id: string): Promise<UploadStatus> {
    return { name, id, offset: await this.offset(name, id) };
  }

  async append(name: string, id: string, body: Readable, options: AppendOptions): Promise<UploadStatus> {
    return this.locks.run(id, async () => {
      const offset = await this.offset(name, id);
      checkRange(offset, options);
      const written = await this.write(name, id, offset, body, options);
      checkLength(written, options);
      return { name, id, offset: offset + written };
    });
  }

  /** Appends the last chunk (if any), verifies the digest and commits the blob. */
  async finish(
    name: string,
    id: string,
    digest: Digest,
    body: Readable | undefined,
    options: AppendOptions,
  ): Promise<BlobInfo> {
    return this.locks.run(id, async () => {
      let size = await this.offset(name, id);
      if (body) {
        checkRange(size, options);
        const written = await this.write(name, id, size, body, options, true);
        checkLength(written, options);
        size += written;
      }
      const actual = await this.digestOf(name, id, size, digest.algorithm);
      if (actual !== digest.hex) {
        // As distribution does: a session whose bytes do not match is dropped,
        // so nothing of it can ever be committed.
        await this.remove(name, id);
        throw new RegistryError('DIGEST_INVALID', `provided digest ${digest.value} does not match the uploaded content`, {
          expected: digest.value,
          actual: `${digest.algorithm}:${actual}`,
        });
      }
      if (size === 0) await this.driver.putContent(paths.uploadData(name, id), Buffer.alloc(0)).catch(() => {});
      // The same bytes may already be stored (and unreferenced): keep GC off them from here on.
      const release = await this.guard.protect([digest]);
      try {
        await this.guard.noteUse(digest);
        await this.blobs.commitFrom(paths.uploadData(name, id), digest, size);
        await this.blobs.writeLink(paths.layerLink(name, digest), digest);
      } finally {
        await release();
      }
      await this.remove(name, id);
      return { digest, size };
    });
  }

  async cancel(name: string, id: string): Promise<void> {
    await this.locks.run(id, async () => {
      await this.offset(name, id);
      await this.remove(name, id);
    });
  }

  /** Deletes sessions started before `cutoff` in every repository; returns how many. */
  async purgeOlderThan(repositories: string[], cutoff: Date, dryRun = false): Promise<number> {
    let purged = 0;
    for (const name of repositories) {
      let ids: string[];
      try {
        ids = await this.driver.list(paths.uploadsDir(name));
      } catch (err) {
        if (isNotFound(err)) continue;
        throw err;
      }
      for (const id of ids) {
        const started = await this.startedAt(name, id);
        if (started === undefined || started < cutoff) {
          purged++;
          if (!dryRun) await this.locks.run(id, () => this.remove(name, id));
        }
      }
    }
    return purged;
  }

  private async startedAt(name: string, id: string): Promise<Date | undefined> {
    try {
      const text = (await this.driver.getContent(paths.uploadStartedAt(name, id))).toString('utf8').trim();
      const t = new Date(text);
      return Number.isNaN(t.getTime()) ? undefined : t;
    } catch (err) {
      if (isNotFound(err)) {
        // Without startedat, fall back to the directory's own age.
        const st = await this.driver.stat(paths.uploadDir(name, id)).catch(() => undefined);
        return st?.modTime;
      }
      throw err;
    }
  }

  private async offset(name: string, id: string): Promise<number> {
    if (!UUID_RE.test(id)) throw unknownUpload(id);
    try {
      return (await this.driver.stat(paths.uploadData(name, id))).size;
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
    try {
      await this.driver.stat(paths.uploadStartedAt(name, id));
      return 0;
    } catch (err) {
      if (isNotFound(err)) throw unknownUpload(id);
      throw err;
    }
  }

  private async write(name: string, id: string, offset: number, body: Readable, options: AppendOptions, finishing = false): Promise<number> {
    if (this.hashStates && !(finishing && offset === 0)) return this.writeResumable(this.hashStates, name, id, offset, body, options);
    let state = this.running.get(id);
    if (state && state.bytes !== offset) state = undefined;
    if (!state && offset === 0) state = { hash: newHash(RUNNING_ALGORITHM), bytes: 0 };
    // Re-inserted, so the Map's order is least recently used first.
    this.running.delete(id);
    if (state) {
      this.running.set(id, state);
      while (this.running.size > this.maxRunning) {
        const oldest = this.running.keys().next().value;
        if (oldest === undefined) break;
        this.running.delete(oldest);
      }
    }
    const tracked = state;
    try {
      return await this.driver.append(
        paths.uploadData(name, id),
        body,
        (chunk) => {
          if (tracked) {
            tracked.hash.update(chunk);
            tracked.bytes += chunk.length;
          }
        },
        options,
      );
    } catch (err) {
      // The client went away or the body broke off: whatever reached the file
      // stays (the offset tells the client where to resume). The running hash
      // is checked against the file size before it is trusted again.
      throw new RegistryError('BLOB_UPLOAD_INVALID', `upload body was not received completely: ${(err as Error).message}`);
    }
  }

  /** Appends with the resumable hash, saving its state for whichever replica takes the next request. */
  private async writeResumable(
    store: HashStateStore,
    name: string,
    id: string,
    offset: number,
    body: Readable,
    options: AppendSourceOptions,
  ): Promise<number> {
    const state = await this.resumableAt(store, name, id, offset);
    let saving: Promise<void> = Promise.resolve();
    const checkpoint = () => {
      if (!state || state.saved === state.bytes) return;
      const at = state.bytes;
      const snapshot = state.hasher.save();
      state.saved = at;
      // One save at a time, in order; a failed save only means a later re-read.
      saving = saving.then(() =>
        store.save(name, id, at, snapshot).then(
          () => this.onHashState('saved'),
          () => {},
        ),
      );
    };
    try {
      return await this.driver.append(
        paths.uploadData(name, id),
        body,
        (chunk) => {
          if (!state) return;
          state.hasher.update(chunk);
          state.bytes += chunk.length;
          if (state.bytes - state.saved >= CHECKPOINT_BYTES) checkpoint();
        },
        options,
      );
    } catch (err) {
      throw new RegistryError('BLOB_UPLOAD_INVALID', `upload body was not received completely: ${(err as Error).message}`);
    } finally {
      // Whatever reached storage (all of it, or what came before a broken body) is covered.
      checkpoint();
      await saving;
    }
  }

  /** The resumable hash of the first `offset` bytes: in memory, from the store, or fresh at 0; undefined when lost. */
  private async resumableAt(store: HashStateStore, name: string, id: string, offset: number): Promise<ResumableHash | undefined> {
    const known = this.resumable.get(id);
    if (known && known.bytes === offset) return known;
    this.resumable.delete(id);
    let state: ResumableHash | undefined;
    if (offset === 0) {
      state = { hasher: (await resumableSha256()).init(), bytes: 0, saved: 0 };
    } else {
      const saved = await store.load(name, id, offset).catch(() => undefined);
      if (saved) {
        try {
          state = { hasher: (await resumableSha256()).init().load(saved), bytes: offset, saved: offset };
          this.onHashState('loaded');
        } catch {
          // A state written by an incompatible hash-wasm build: re-read at commit.
        }
      }
      if (!state) this.onHashState('missing');
    }
    if (!state) return undefined;
    if (this.resumable.size >= MAX_RESUMABLE_IN_MEMORY) {
      const oldest = this.resumable.keys().next().value;
      if (oldest !== undefined) this.resumable.delete(oldest);
    }
    this.resumable.set(id, state);
    return state;
  }

  private async digestOf(name: string, id: string, size: number, algorithm: Algorithm): Promise<string> {
    const state = this.running.get(id);
    if (state && state.bytes === size && algorithm === RUNNING_ALGORITHM) {
      this.running.delete(id);
      return state.hash.digest('hex');
    }
    if (this.hashStates && algorithm === RUNNING_ALGORITHM && size > 0) {
      const resumable = await this.resumableAt(this.hashStates, name, id, size);
      if (resumable) {
        this.resumable.delete(id);
        return resumable.hasher.digest('hex');
      }
    }
    if (size === 0) return newHash(algorithm).digest('hex');
    this.onHashState('rehashed');
    const hash = newHash(algorithm);
    const stream = await this.driver.reader(paths.uploadData(name, id));
    for await (const chunk of stream) hash.update(chunk as Buffer);
    return hash.digest('hex');
  }

  private async remove(name: string, id: string): Promise<void> {
    this.running.delete(id);
    this.resumable.delete(id);
    await this.driver.delete(paths.uploadDir(name, id));
    await this.hashStates?.remove(name, id).catch(() => {});
  }
}

function unknownUpload(id: string): RegistryError {
  return new RegistryError('BLOB_UPLOAD_UNKNOWN', `blob upload unknown: ${id.slice(0, 64)}`);
}

function checkRange(offset: number, options: AppendOptions): void {
  const { range, contentLength } = options;
  if (!range) return;
  if (range.start !== offset) {
    throw new RegistryError('RANGE_INVALID', `chunk starts at ${range.start}, but the upload has ${offset} bytes`, {
      offset,
    });
  }
  if (range.end < range.start - 1 || (contentLength !== undefined && contentLength !== range.end - range.start + 1)) {
    throw new RegistryError('RANGE_INVALID', 'Content-Range does not match Content-Length', { offset });
  }
}

function checkLength(written: number, options: AppendOptions): void {
  if (options.contentLength !== undefined && written !== options.contentLength) {
    throw new RegistryError('SIZE_INVALID', `received ${written} bytes, Content-Length said ${options.contentLength}`);
  }
  // A streamed chunk (no Content-Length) must still be as long as its Content-Range said.
  const { range } = options;
  if (range && written !== range.end - range.start + 1) {
    throw new RegistryError('RANGE_INVALID', `received ${written} bytes, Content-Range said ${range.end - range.start + 1}`, {
      offset: range.start + written,
    });
  }
}

/** hash-wasm, imported by the first upload whose hash state is shared (replicas): a single instance never loads it. */
async function resumableSha256(): Promise<IHasher> {
  return (await import('hash-wasm')).createSHA256();
}
