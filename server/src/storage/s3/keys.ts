// Registry keys to object keys, and the names of the objects the driver keeps
// next to the caller's: an appendable object's parts and a times sidecar live
// below the key, under names no registry name or tag can have (they start with
// a dot), so that list() can leave them out.

const PARTS_DIR = '.parts';
const TIMES_FILE = '.times';
/** Child names that are ours, never the caller's. */
export const HIDDEN: ReadonlySet<string> = new Set([PARTS_DIR, TIMES_FILE]);
/** Part names are their start offsets, zero-padded so that they list in order. */
const OFFSET_DIGITS = 16;

export class S3Keys {
  private readonly prefix: string;

  constructor(rootDirectory: string | undefined) {
    const root = (rootDirectory ?? '').replace(/^\/+|\/+$/g, '');
    this.prefix = root ? `${root}/` : '';
  }

  /** Registry key ("/docker/registry/v2/…") → object key ("<root>/docker/registry/v2/…"). */
  objectKey(key: string): string {
    const parts = key.split('/').filter((p) => p !== '');
    if (parts.some((p) => p === '.' || p === '..')) throw new Error(`storage key escapes the root: ${key}`);
    return parts.length === 0 ? this.rootKey : this.prefix + parts.join('/');
  }

  /** The object key of the root itself ("" for an unprefixed bucket). */
  get rootKey(): string {
    return this.prefix.replace(/\/$/, '');
  }

  /** The prefix of everything below a key ("" for the root of an unprefixed bucket). */
  dirPrefix(key: string): string {
    const k = this.objectKey(key);
    return k === '' ? '' : `${k}/`;
  }
}

/** The prefix of the part objects of the appendable object `k`. */
export function partsPrefix(k: string): string {
  return `${k}/${PARTS_DIR}/`;
}

/** The part object of `k` that starts at `offset`. */
export function partKey(k: string, offset: number): string {
  return `${partsPrefix(k)}${String(offset).padStart(OFFSET_DIGITS, '0')}`;
}

/** The times sidecar of `k`. */
export function timesKey(k: string): string {
  return `${k}/${TIMES_FILE}`;
}
