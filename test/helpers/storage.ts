// The storage a test server runs on, and a driver-neutral view of what is
// stored there, so that one test file runs on either driver.
//
// RS_TEST_STORAGE=s3 (set by the "s3" project in vitest.config.ts) makes the
// suites that use these helpers (test/api, test/e2e) run on the s3 driver, each
// server on a fresh bucket of the run's Ceph RGW (test/helpers/s3.ts); without
// it they run on the filesystem driver, in a temp directory, as always.
//
// The view speaks in storage keys ("docker/registry/v2/…"), which are file paths
// under the data directory on the filesystem driver and object keys in the bucket
// on the s3 driver (which uses the same layout).
import { createHash } from 'node:crypto';
import { createReadStream, type Dirent, existsSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import type { Readable } from 'node:stream';
import type { TestBucket } from './s3.ts';

export type StorageKind = 'filesystem' | 's3';

/** The driver this test run uses: RS_TEST_STORAGE=s3, or the filesystem. */
export const STORAGE_KIND: StorageKind = process.env.RS_TEST_STORAGE === 's3' ? 's3' : 'filesystem';
export const ON_S3 = STORAGE_KIND === 's3';

/** The s3 driver's own hidden children: appendable objects' parts and time sidecars (server/src/storage/s3/keys.ts). */
const S3_HIDDEN = new Set(['.parts', '.times']);
const S3_PARTS = '.parts';

export interface TestStorage {
  readonly kind: StorageKind;
  /** The filesystem driver's rootdirectory (undefined on s3). */
  readonly dataDir: string | undefined;
  /** The bucket (undefined on the filesystem). */
  readonly bucket: TestBucket | undefined;
  /** The driver part of a `storage` config section: `{ filesystem: {…} }` or `{ s3: {…} }`; `extra` is merged into it. */
  driverConfig(extra?: Record<string, unknown>): Record<string, unknown>;
  /**
   * Everything stored, as key → description; two snapshots are equal exactly when
   * the same keys hold the same bytes. Filesystem: every file and directory
   * (snapshotTree). S3: every object, hidden ones included, with size and ETag.
   */
  snapshot(): Promise<Record<string, string>>;
  /** The bytes of a stored file/object, or undefined when there is none. */
  read(key: string): Promise<Buffer | undefined>;
  /** Whether `key` is a file/object or a directory (a prefix with objects below it). */
  exists(key: string): Promise<boolean>;
  /** The names directly below `key`, sorted ([] when there are none); the s3 driver's hidden children left out. */
  list(key: string): Promise<string[]>;
  /**
   * The size of a stored file/object; on s3 also of an appendable object (an
   * upload's data being written: the contiguous parts from offset 0).
   */
  size(key: string): Promise<number | undefined>;
  /** sha256 (hex) of a stored file/object, streamed. */
  sha256(key: string): Promise<string | undefined>;
  /** Removes what this storage created (its temp directory or bucket); a given dataDir is left alone. */
  destroy(): Promise<void>;
}

/**
 * Storage for one test server (or several sharing it): a bucket on s3, else
 * `dataDir` (or a fresh temp directory) on the filesystem.
 */
export async function createTestStorage(label: string, options: { dataDir?: string; kind?: StorageKind } = {}): Promise<TestStorage> {
  const kind = options.kind ?? STORAGE_KIND;
  if (kind === 's3') {
    const { createTestBucket } = await import('./s3.ts');
    return s3Storage(await createTestBucket(label));
  }
  const owned = options.dataDir === undefined;
  return filesystemStorage(options.dataDir ?? mkdtempSync(path.join(tmpdir(), 'rs-data-')), owned);
}

// ---------------------------------------------------------------- filesystem

/**
 * Every file and directory under `dir` (recursively, nothing ignored), as
 * relative path → "dir", "file <size> <sha256>" or "symlink <target>". Two
 * snapshots are equal exactly when the tree's names and file contents are.
 * A missing `dir` is an empty tree.
 */
export function snapshotTree(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (rel: string) => {
    const full = rel ? path.join(dir, rel) : dir;
    let entries: Dirent[];
    try {
      entries = readdirSync(full, { withFileTypes: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT' && rel === '') return;
      throw err;
    }
    for (const e of entries) {
      const childRel = rel ? `${rel}/${e.name}` : e.name;
      const childFull = path.join(dir, childRel);
      if (e.isSymbolicLink()) out[childRel] = `symlink ${readlinkSync(childFull)}`;
      else if (e.isDirectory()) {
        out[childRel] = 'dir';
        walk(childRel);
      } else {
        const data = readFileSync(childFull);
        out[childRel] = `file ${data.length} ${createHash('sha256').update(data).digest('hex')}`;
      }
    }
  };
  walk('');
  return out;
}

function filesystemStorage(dataDir: string, owned: boolean): TestStorage {
  const file = (key: string) => path.join(dataDir, key);
  return {
    kind: 'filesystem',
    dataDir,
    bucket: undefined,
    driverConfig: (extra = {}) => ({ filesystem: { rootdirectory: dataDir, ...extra } }),
    snapshot: async () => snapshotTree(dataDir),
    read: async (key) => (isFile(file(key)) ? readFileSync(file(key)) : undefined),
    exists: async (key) => existsSync(file(key)),
    list: async (key) => {
      try {
        return readdirSync(file(key)).sort();
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
        throw err;
      }
    },
    size: async (key) => (isFile(file(key)) ? statSync(file(key)).size : undefined),
    sha256: async (key) => (isFile(file(key)) ? hashStream(createReadStream(file(key))) : undefined),
    destroy: async () => {
      if (owned) rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

function isFile(p: string): boolean {
  try {
    return statSync(p).isFile();
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------- s3

function s3Storage(bucket: TestBucket): TestStorage {
  const { client } = bucket;
  const Bucket = bucket.bucket;
  const sdk = import('@aws-sdk/client-s3');
  const notFound = (err: unknown) => {
    const e = err as { name?: string; $metadata?: { httpStatusCode?: number } };
    return e?.name === 'NoSuchKey' || e?.name === 'NotFound' || e?.$metadata?.httpStatusCode === 404;
  };
  /** Every object under `prefix` with its size and ETag. */
  const objects = async (prefix: string): Promise<Array<{ key: string; size: number; etag: string }>> => {
    const { ListObjectsV2Command } = await sdk;
    const out: Array<{ key: string; size: number; etag: string }> = [];
    let token: string | undefined;
    do {
      const page = await client.send(new ListObjectsV2Command({ Bucket, Prefix: prefix, ContinuationToken: token }));
      for (const o of page.Contents ?? []) if (o.Key) out.push({ key: o.Key, size: o.Size ?? 0, etag: o.ETag ?? '' });
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
    return out;
  };
  const head = async (key: string): Promise<number | undefined> => {
    const { HeadObjectCommand } = await sdk;
    try {
      return (await client.send(new HeadObjectCommand({ Bucket, Key: key }))).ContentLength ?? 0;
    } catch (err) {
      if (notFound(err)) return undefined;
      throw err;
    }
  };
  const body = async (key: string): Promise<Readable | undefined> => {
    const { GetObjectCommand } = await sdk;
    try {
      return (await client.send(new GetObjectCommand({ Bucket, Key: key }))).Body as Readable;
    } catch (err) {
      if (notFound(err)) return undefined;
      throw err;
    }
  };
  return {
    kind: 's3',
    dataDir: undefined,
    bucket,
    driverConfig: (extra = {}) => ({ s3: bucket.storageConfig(extra) }),
    snapshot: async () => Object.fromEntries((await objects('')).map((o) => [o.key, `object ${o.size} ${o.etag}`])),
    read: async (key) => {
      const stream = await body(key);
      if (!stream) return undefined;
      const chunks: Buffer[] = [];
      for await (const c of stream) chunks.push(Buffer.from(c as Uint8Array));
      return Buffer.concat(chunks);
    },
    exists: async (key) => (await head(key)) !== undefined || (await objects(`${key}/`)).length > 0,
    list: async (key) => {
      const { ListObjectsV2Command } = await sdk;
      const prefix = `${key}/`;
      const names = new Set<string>();
      let token: string | undefined;
      do {
        const page = await client.send(new ListObjectsV2Command({ Bucket, Prefix: prefix, Delimiter: '/', ContinuationToken: token }));
        for (const p of page.CommonPrefixes ?? []) names.add((p.Prefix ?? '').slice(prefix.length).replace(/\/$/, ''));
        for (const o of page.Contents ?? []) names.add((o.Key ?? '').slice(prefix.length));
        token = page.IsTruncated ? page.NextContinuationToken : undefined;
      } while (token);
      return [...names].filter((n) => n !== '' && !S3_HIDDEN.has(n)).sort();
    },
    size: async (key) => {
      const whole = await head(key);
      if (whole !== undefined) return whole;
      // An appendable object: parts named by their 16-digit start offset; count the contiguous run from 0.
      const parts = (await objects(`${key}/${S3_PARTS}/`))
        .map((o) => ({ offset: Number(o.key.slice(o.key.lastIndexOf('/') + 1)), size: o.size }))
        .sort((a, b) => a.offset - b.offset);
      if (parts.length === 0) return undefined;
      let size = 0;
      for (const p of parts) {
        if (p.offset !== size) break;
        size += p.size;
      }
      return size;
    },
    sha256: async (key) => {
      const stream = await body(key);
      return stream ? hashStream(stream) : undefined;
    },
    destroy: () => bucket.destroy(),
  };
}

async function hashStream(stream: AsyncIterable<unknown>): Promise<string> {
  const hash = createHash('sha256');
  for await (const c of stream) hash.update(c as Uint8Array);
  return hash.digest('hex');
}
