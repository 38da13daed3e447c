// The storage driver contract: a key/value tree of byte objects, nothing
// more. It knows nothing of manifests, tags or digests (see paths.ts for the
// only place that builds keys). Keys are absolute, '/'-separated paths such as
// "/docker/registry/v2/blobs/sha256/ab/ab12…/data", as in distribution.
import type { Readable, Writable } from 'node:stream';

export interface FileInfo {
  readonly key: string;
  readonly size: number;
  readonly modTime: Date;
  /** Last access as recorded by touch() (drivers without access times report modTime). */
  readonly accessTime: Date;
  readonly isDir: boolean;
}

export class PathNotFoundError extends Error {
  constructor(readonly key: string) {
    super(`path not found: ${key}`);
    this.name = 'PathNotFoundError';
  }
}

export interface ByteRange {
  /** First byte, inclusive. */
  readonly start: number;
  /** Last byte, inclusive. */
  readonly end: number;
}

export interface AppendSourceOptions {
  /**
   * The source's chunks belong to this append alone (an HTTP request body's):
   * a driver that has copied a chunk's bytes may free its memory at once
   * instead of leaving it to the GC. Never for a source whose chunks someone
   * else still holds.
   */
  readonly freeChunks?: boolean;
}

export interface StorageDriver {
  readonly name: string;
  /** Whole small object (links, manifests). Throws PathNotFoundError. */
  getContent(key: string): Promise<Buffer>;
  /** Atomically replaces the object: readers see the old or the new bytes, never a mix. */
  putContent(key: string, data: Uint8Array): Promise<void>;
  /** Throws PathNotFoundError. */
  stat(key: string): Promise<FileInfo>;
  /**
   * The size of the object written whole at `key` (putContent, putStream, move), by the
   * cheapest check the storage has: one stat(2) on disk, one HEAD on S3 (stat() also reads
   * S3's times sidecar, and tells directories and unfinished appends apart with a listing).
   * Undefined when there is none: nothing, a directory, or on S3 an object still being
   * appended to (kept in parts). For links and blob data, which are only ever written whole.
   */
  objectSize(key: string): Promise<number | undefined>;
  /** Names (not keys) of the direct children of a directory. Throws PathNotFoundError. */
  list(key: string): Promise<string[]>;
  /** A stream of the object's bytes, opened before it resolves (so a missing object throws here). */
  reader(key: string, range?: ByteRange): Promise<Readable>;
  /**
   * Optional fast path for serving an object: opens it (throwing PathNotFoundError
   * here if missing) and resolves with a function that writes its bytes into
   * `dest` and resolves when they were handed to it all.
   */
  sender?(key: string, range?: ByteRange): Promise<(dest: Writable) => Promise<void>>;
  /**
   * Optional: a URL from which a client can GET the object directly for
   * `expiresInS` seconds (an S3 presigned URL), for storage.redirect. Drivers
   * whose objects are not reachable by clients (the filesystem) leave it out.
   */
  urlFor?(key: string, expiresInS: number): Promise<string>;
  /**
   * Appends a stream to an object (created if missing), calling `tap` with every chunk
   * actually written, and resolves with the number of bytes appended. If the source fails
   * half way, the bytes written so far stay (the upload's offset says how many).
   */
  append(key: string, source: Readable, tap?: (chunk: Buffer) => void, options?: AppendSourceOptions): Promise<number>;
  /**
   * Optional: streams an object to `key` that appears there whole, or not at all,
   * when the source ends (and never when it fails), calling `tap` with every chunk
   * stored. Nothing is readable before the end. For a writer that knows the final
   * key up front and has no reader of the bytes in storage meanwhile (a cache fill):
   * on S3 this is one multipart upload, where append() + move() copy the data twice.
   */
  putStream?(key: string, source: Readable, tap?: (chunk: Buffer) => void): Promise<number>;
  /** Durably and atomically moves an object to a new key, replacing what is there. */
  move(from: string, to: string): Promise<void>;
  /** Deletes an object or a whole directory tree. Missing keys are not an error. */
  delete(key: string): Promise<void>;
  /**
   * Sets an object's access time (last use, for cache pruning) and/or its
   * modification time (the mirror's "last revalidated" for tags).
   */
  touch(key: string, times: { accessed?: Date; modified?: Date }): Promise<void>;
}

export function isNotFound(err: unknown): err is PathNotFoundError {
  return err instanceof PathNotFoundError;
}
