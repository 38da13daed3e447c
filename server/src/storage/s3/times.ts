// Times. S3 has no access time and no way to set a modification time, so
// touch() writes a tiny sidecar "<key>/.times" (JSON: atime, mtime, and the
// version of the object it describes). locate() reads it alongside the HEAD
// and applies it only while the object is still that version: a rewrite of the
// object makes the sidecar stale, as a new file would have fresh times. The
// object itself is never rewritten or copied for its times.
import { type FileInfo, PathNotFoundError } from '../driver.ts';
import { isNotFoundError, type S3Bucket } from './bucket.ts';
import { timesKey } from './keys.ts';
import { probe } from './listing.ts';

interface Times {
  /** Which version of the object these times belong to. */
  base: string;
  atime: number;
  mtime: number;
}

export interface Located {
  info: FileInfo;
  /** Identifies this version of the object, for the times sidecar. */
  base: string;
}

/** What is at object key `k` (registry key `key`), with the times its sidecar gives it. */
export async function locate(bucket: S3Bucket, key: string, k: string): Promise<Located> {
  const [head, times] = await Promise.all([bucket.head(k), readTimes(bucket, k)]);
  let located: Located;
  if (head) {
    located = {
      base: `object|${head.etag}|${head.lastModified.getTime()}|${head.size}`,
      info: { key, size: head.size, modTime: head.lastModified, accessTime: head.lastModified, isDir: false },
    };
  } else {
    const probed = await probe(bucket, k);
    if (probed.kind === 'missing') throw new PathNotFoundError(key);
    if (probed.kind === 'dir') {
      located = { base: 'dir', info: { key, size: 0, modTime: probed.lastModified, accessTime: probed.lastModified, isDir: true } };
    } else {
      const a = probed.appendable;
      located = {
        base: `parts|${a.parts.length}|${a.size}|${a.lastModified.getTime()}`,
        info: { key, size: a.size, modTime: a.lastModified, accessTime: a.lastModified, isDir: false },
      };
    }
  }
  if (times && times.base === located.base) {
    located = {
      base: located.base,
      info: { ...located.info, modTime: new Date(times.mtime), accessTime: new Date(times.atime) },
    };
  }
  return located;
}

/** Writes the sidecar of `k`: these times, for the version `located` found. */
export async function writeTimes(
  bucket: S3Bucket,
  k: string,
  { info, base }: Located,
  times: { accessed?: Date; modified?: Date },
): Promise<void> {
  const sidecar: Times = {
    base,
    atime: (times.accessed ?? info.accessTime).getTime(),
    mtime: (times.modified ?? info.modTime).getTime(),
  };
  const key = timesKey(k);
  await bucket.put(key, Buffer.from(JSON.stringify(sidecar)));
  // A delete that ran meanwhile must not leave the sidecar behind (it would keep
  // the deleted name visible in list()).
  if (!(await existsAt(bucket, k))) await bucket.deleteKeys([key]);
}

/** Forgets the times of `k`, whose object is about to be replaced. */
export async function dropTimes(bucket: S3Bucket, k: string): Promise<void> {
  await bucket.deleteKeys([timesKey(k)]);
}

async function existsAt(bucket: S3Bucket, k: string): Promise<boolean> {
  if (await bucket.head(k)) return true;
  return (await probe(bucket, k)).kind !== 'missing';
}

async function readTimes(bucket: S3Bucket, k: string): Promise<Times | undefined> {
  try {
    const out = await bucket.get(timesKey(k));
    const parsed = JSON.parse(await (out.Body as { transformToString(): Promise<string> }).transformToString()) as Times;
    if (typeof parsed.base !== 'string' || !Number.isFinite(parsed.atime) || !Number.isFinite(parsed.mtime)) return undefined;
    return parsed;
  } catch (err) {
    if (isNotFoundError(err) || err instanceof SyntaxError) return undefined;
    throw err;
  }
}
