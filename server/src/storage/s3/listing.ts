// What listings say: the children of a "directory" (a key prefix), what is
// below a key that is no object itself (a directory, an appendable object's
// parts, or nothing), and an appendable object's parts.
import type { S3Bucket } from './bucket.ts';
import { HIDDEN, partsPrefix, timesKey } from './keys.ts';

interface Listed {
  Key?: string;
  Size?: number;
  LastModified?: Date;
}

export interface Part {
  key: string;
  /** Where the part starts in the object. */
  offset: number;
  size: number;
  lastModified: Date;
}

/** An object kept as part objects (appended to, not yet moved). */
export interface Appendable {
  parts: Part[];
  size: number;
  lastModified: Date;
  /** Part objects after a gap: not part of the object. */
  stray: string[];
}

export type Probed = { kind: 'missing' } | { kind: 'dir'; lastModified: Date } | { kind: 'appendable'; appendable: Appendable };

/** The names of the direct children under `prefix`, our hidden ones left out. */
export async function listChildren(bucket: S3Bucket, prefix: string): Promise<string[]> {
  const names = new Set<string>();
  for await (const page of bucket.listPages(prefix, '/')) {
    for (const p of page.CommonPrefixes ?? []) {
      const name = (p.Prefix ?? '').slice(prefix.length).replace(/\/$/, '');
      if (name && !HIDDEN.has(name)) names.add(name);
    }
    for (const o of page.Contents ?? []) {
      const name = (o.Key ?? '').slice(prefix.length);
      if (name && !HIDDEN.has(name)) names.add(name);
    }
  }
  return [...names];
}

/** What is below `k/` when `k` itself is no object: a directory, an appendable object, or nothing. */
export async function probe(bucket: S3Bucket, k: string): Promise<Probed> {
  const prefix = `${k}/`;
  const parts = partsPrefix(k);
  const times = timesKey(k);
  const found: Listed[] = [];
  let dirModified = 0;
  for await (const page of bucket.listPages(prefix)) {
    let child = false;
    for (const o of page.Contents ?? []) {
      const key = o.Key ?? '';
      if (key.startsWith(parts)) found.push(o);
      else if (key !== times) {
        child = true;
        dirModified = Math.max(dirModified, o.LastModified?.getTime() ?? 0);
      }
    }
    // One child of the caller's makes it a directory: no need to list the rest.
    if (child) return { kind: 'dir', lastModified: new Date(dirModified) };
  }
  const appendable = contiguous(found, parts);
  return appendable ? { kind: 'appendable', appendable } : { kind: 'missing' };
}

/** The appendable object at `k`, or undefined when it has no parts. */
export async function listParts(bucket: S3Bucket, k: string): Promise<Appendable | undefined> {
  const prefix = partsPrefix(k);
  const found: Listed[] = [];
  for await (const page of bucket.listPages(prefix)) found.push(...(page.Contents ?? []));
  return contiguous(found, prefix);
}

/**
 * The parts from a listing, in offset order, up to the first gap: a part that
 * does not start where the previous one ended is not part of the stream.
 */
function contiguous(listed: Listed[], prefix: string): Appendable | undefined {
  const parts: Part[] = [];
  for (const o of listed) {
    const name = (o.Key ?? '').slice(prefix.length);
    if (!/^\d+$/.test(name)) continue;
    parts.push({ key: o.Key as string, offset: Number(name), size: o.Size ?? 0, lastModified: o.LastModified ?? new Date(0) });
  }
  if (parts.length === 0) return undefined;
  parts.sort((a, b) => a.offset - b.offset);
  const kept: Part[] = [];
  let size = 0;
  let lastModified = 0;
  for (const p of parts) {
    if (p.offset !== size) break;
    kept.push(p);
    size += p.size;
    lastModified = Math.max(lastModified, p.lastModified.getTime());
  }
  if (kept.length === 0) return undefined;
  const stray = parts.slice(kept.length).map((p) => p.key);
  return { parts: kept, size, lastModified: new Date(lastModified), stray };
}
