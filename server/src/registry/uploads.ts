// Blob upload sessions, stored as distribution stores them
// (_uploads/<uuid>/{data,startedat}). Bytes are hashed as they arrive; the
// running hash lives in memory keyed by session and is trusted only while its
// byte count matches the data file, so a restart (or a session that another
// replica appended to) falls back to re-reading the data once at commit.
import { randomUUID, type Hash } from 'node:crypto';
import type { Readable } from 'node:stream';
import { isNotFound, type StorageDriver } from '../storage/driver.ts';
import { paths } from '../storage/paths.ts';
import type { BlobInfo, BlobStore } from './blob-store.ts';
import { type Algorithm, type Digest, newHash } from './digest.ts';
import { RegistryError } from './errors.ts';
import type { GcGuard } from './gc-guard.ts';
import { KeyedLock } from './keyed-lock.ts';
import type { AppendOptions, UploadStatus } from './types.ts';

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const RUNNING_ALGORITHM: Algorithm = 'sha256';

interface RunningHash {
  hash: Hash;
  bytes: number;
}

export class UploadStore {
  private readonly locks = new KeyedLock();
  private readonly running = new Map<string, RunningHash>();

  constructor(
    private readonly driver: StorageDriver,
    private readonly blobs: BlobStore,
    private readonly guard: GcGuard,
  ) {}

  async start(name: string): Promise<UploadStatus> {
    const id = randomUUID();
    await this.driver.putContent(paths.uploadStartedAt(name, id), Buffer.from(new Date().toISOString()));
    this.running.set(id, { hash: newHash(RUNNING_ALGORITHM), bytes: 0 });
    return { name, id, offset: 0 };
  }

  async status(name: string, id: string): Promise<UploadStatus> {
    return { name, id, offset: await this.offset(name, id) };
  }

  async append(name: string, id: string, body: Readable, options: AppendOptions): Promise<UploadStatus> {
    return this.locks.run(id, async () => {
      const offset = await this.offset(name, id);
      checkRange(offset, options);
      const written = await this.write(name, id, offset, body);
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
        const written = await this.write(name, id, size, body);
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
        this.guard.noteUse(digest);
        await this.blobs.commitFrom(paths.uploadData(name, id), digest, size);
        await this.blobs.writeLink(paths.layerLink(name, digest), digest);
      } finally {
        release();
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

  private async write(name: string, id: string, offset: number, body: Readable): Promise<number> {
    let state = this.running.get(id);
    if (state && state.bytes !== offset) state = undefined;
    if (!state && offset === 0) state = { hash: newHash(RUNNING_ALGORITHM), bytes: 0 };
    if (state) this.running.set(id, state);
    else this.running.delete(id);
    const tracked = state;
    try {
      return await this.driver.append(paths.uploadData(name, id), body, (chunk) => {
        if (tracked) {
          tracked.hash.update(chunk);
          tracked.bytes += chunk.length;
        }
      });
    } catch (err) {
      // The client went away or the body broke off: whatever reached the file
      // stays (the offset tells the client where to resume). The running hash
      // is checked against the file size before it is trusted again.
      throw new RegistryError('BLOB_UPLOAD_INVALID', `upload body was not received completely: ${(err as Error).message}`);
    }
  }

  private async digestOf(name: string, id: string, size: number, algorithm: Algorithm): Promise<string> {
    const state = this.running.get(id);
    if (state && state.bytes === size && algorithm === RUNNING_ALGORITHM) {
      this.running.delete(id);
      return state.hash.digest('hex');
    }
    if (size === 0) return newHash(algorithm).digest('hex');
    const hash = newHash(algorithm);
    const stream = await this.driver.reader(paths.uploadData(name, id));
    for await (const chunk of stream) hash.update(chunk as Buffer);
    return hash.digest('hex');
  }

  private async remove(name: string, id: string): Promise<void> {
    this.running.delete(id);
    await this.driver.delete(paths.uploadDir(name, id));
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
