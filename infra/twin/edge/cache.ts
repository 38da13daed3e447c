// The edge cache: what may be stored and for how long (Cloudflare's rules
// for it, as far as our rulesets reach), and a store on disk that is filled
// while a response streams to the client.
//
// Bodies never sit whole in memory: a blob can be hundreds of megabytes. A
// miss writes the body to a temporary file chunk by chunk as it passes
// through, and only a response that arrived complete (the declared length, or
// a properly ended chunked body) is committed, by renaming the file into
// place. A reader that opened the previous version keeps reading it: versions
// have their own file names and an old one is only unlinked, never rewritten.
import { createHash, randomBytes } from 'node:crypto';
import { createWriteStream, type WriteStream } from 'node:fs';
import { mkdir, open, readdir, readFile, rename, rm, writeFile, type FileHandle } from 'node:fs/promises';
import type { IncomingHttpHeaders } from 'node:http';
import * as path from 'node:path';
import { Transform, type TransformCallback } from 'node:stream';
import { finished } from 'node:stream/promises';
import type { CacheSettings } from './rules.ts';

// ---- what to store, and for how long ------------------------------------------

/** Cloudflare's default edge TTLs (seconds) when the origin sends no Cache-Control or Expires. */
const DEFAULT_TTLS: Record<number, number> = { 200: 7200, 206: 7200, 301: 7200, 302: 1200, 303: 1200, 404: 180, 410: 180 };

// File extensions Cloudflare caches without a cache rule ("default cache behavior").
const STATIC_EXTENSIONS = new Set(
  ('7z avi avif apk bin bmp bz2 class css csv doc docx dmg ejs eot eps exe flac gif gz ico iso jar jpg jpeg js mid midi mkv mp3 mp4 ' +
    'ogg otf pdf pict pls png ppt pptx ps rar svg svgz swf tar tif tiff ttf webm webp woff woff2 xls xlsx zip zst').split(' '),
);

/**
 * Whether a request is looked up in (and may fill) the cache. A cache rule
 * decides when one matched (`cache: true` is "eligible for cache", which is
 * Cache Everything); otherwise Cloudflare's default: static file extensions only.
 */
export function isEligible(method: string, path: string, settings: CacheSettings | undefined): boolean {
  if (method !== 'GET' && method !== 'HEAD') return false;
  if (settings?.cache !== undefined) return settings.cache;
  const ext = /\.([A-Za-z0-9]+)$/.exec(path)?.[1]?.toLowerCase();
  return ext !== undefined && STATIC_EXTENSIONS.has(ext);
}

export type StoreDecision =
  | { store: true; ttlSeconds: number }
  /**
   * origin: the origin's headers forbid it (no-store, private, no-cache,
   * max-age=0, Set-Cookie), which Cloudflare reports as BYPASS;
   * rule/status: the settings or the status code do not cache it (MISS).
   */
  | { store: false; reason: 'origin' | 'rule' | 'status' | 'partial' };

/**
 * How long an eligible response may be stored. Status-code TTLs come first
 * (they override the origin and the defaults for the statuses they name), then
 * the edge TTL mode.
 *
 * An approximation where Cloudflare documents no more: with override_origin,
 * only the statuses Cloudflare caches by default (200, 206, 301, 302, 303,
 * 404, 410) take the default TTL; any other status (a 307 redirect, say) is
 * cached only when a status-code TTL names it.
 */
export function storeDecision(settings: CacheSettings | undefined, status: number, headers: IncomingHttpHeaders): StoreDecision {
  // A 206 is a piece of the resource; the cache holds whole responses and cuts ranges itself.
  if (status === 206) return { store: false, reason: 'partial' };
  if (headers['set-cookie']) return { store: false, reason: 'origin' };
  if (headers.vary?.split(',').some((v) => v.trim() === '*')) return { store: false, reason: 'origin' };

  const edge = settings?.edgeTtl ?? { mode: 'respect_origin' as const };
  const byStatus = edge.statusCodeTtls?.find((s) =>
    s.statusCode !== undefined ? s.statusCode === status : status >= (s.statusCodeRange?.from ?? 0) && status <= (s.statusCodeRange?.to ?? 999),
  );
  if (byStatus) return byStatus.value > 0 ? { store: true, ttlSeconds: byStatus.value } : { store: false, reason: 'rule' };

  const cc = parseCacheControl(headers['cache-control']);
  if (edge.mode === 'override_origin') {
    return status in DEFAULT_TTLS ? { store: true, ttlSeconds: edge.default ?? 0 } : { store: false, reason: 'status' };
  }
  // respect_origin and bypass_by_default read the origin's headers.
  if (cc.has('no-store') || cc.has('private') || cc.has('no-cache')) return { store: false, reason: 'origin' };
  const maxAge = seconds(cc.get('s-maxage')) ?? seconds(cc.get('max-age')) ?? expiresIn(headers);
  if (maxAge !== undefined) return maxAge > 0 ? { store: true, ttlSeconds: maxAge } : { store: false, reason: 'origin' };
  if (edge.mode === 'bypass_by_default') return { store: false, reason: 'rule' };
  const fallback = DEFAULT_TTLS[status];
  return fallback ? { store: true, ttlSeconds: fallback } : { store: false, reason: 'status' };
}

function parseCacheControl(value: string | undefined): Map<string, string | undefined> {
  const out = new Map<string, string | undefined>();
  for (const part of (value ?? '').split(',')) {
    const [k, v] = part.split('=');
    if (k.trim()) out.set(k.trim().toLowerCase(), v?.trim().replace(/^"|"$/g, ''));
  }
  return out;
}

function seconds(v: string | undefined): number | undefined {
  return v !== undefined && /^\d+$/.test(v) ? Number(v) : undefined;
}

function expiresIn(headers: IncomingHttpHeaders): number | undefined {
  if (!headers.expires) return undefined;
  const at = Date.parse(headers.expires);
  const now = headers.date ? Date.parse(headers.date) : Date.now();
  return Number.isNaN(at) ? 0 : Math.max(0, Math.floor((at - now) / 1000));
}

// ---- ranges ------------------------------------------------------------------

/**
 * One byte range of a `Range: bytes=...` header against a body of `size`
 * bytes. undefined = ignore the header and send the whole body (also for
 * several ranges, which a server may always do); 'unsatisfiable' = 416.
 */
export function parseRange(header: string | undefined, size: number): { start: number; end: number } | 'unsatisfiable' | undefined {
  if (!header) return undefined;
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m || (m[1] === '' && m[2] === '')) return undefined;
  if (m[1] === '') {
    const suffix = Number(m[2]);
    if (suffix === 0) return 'unsatisfiable';
    return { start: Math.max(0, size - suffix), end: size - 1 };
  }
  const start = Number(m[1]);
  const end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
  if (m[2] !== '' && Number(m[2]) < start) return undefined;
  if (start >= size) return 'unsatisfiable';
  return { start, end };
}

// ---- the store ---------------------------------------------------------------

export interface CacheEntry {
  key: string;
  status: number;
  /** The origin's response headers, without hop-by-hop ones. */
  headers: Record<string, string | string[]>;
  size: number;
  storedAt: number;
  expiresAt: number;
  /** The body's file name in the cache directory. */
  body: string;
}

export interface FillOptions {
  status: number;
  headers: Record<string, string | string[]>;
  ttlSeconds: number;
  /** Content-Length, when the origin declared one. */
  expectedBytes?: number;
  /** A body longer than this is passed through without being stored. */
  maxBytes: number;
  /** Whether the source ended properly (IncomingMessage.complete), checked when it ends. */
  complete: () => boolean;
}

/** The cache directory: <sha256 of key>.json holds an entry, <sha256>.<version>.body its body. */
export class DiskCache {
  private readonly index = new Map<string, CacheEntry>();
  private readonly dir: string;
  private readonly now: () => number;

  private constructor(dir: string, now: () => number) {
    this.dir = dir;
    this.now = now;
  }

  /** Opens (creating) the directory, keeps the entries found there, and clears out half-written files. */
  static async open(dir: string, now: () => number = Date.now): Promise<DiskCache> {
    await mkdir(dir, { recursive: true });
    const cache = new DiskCache(dir, now);
    const names = await readdir(dir);
    // Only files of ours (named by a key's hash) are read or cleared: a
    // cacheDir set to the wrong directory must not cost anyone their files.
    const ours = (n: string) => /^[0-9a-f]{64}\./.test(n);
    const kept = new Set<string>();
    for (const name of names.filter((n) => ours(n) && n.endsWith('.json'))) {
      try {
        const entry = JSON.parse(await readFile(path.join(dir, name), 'utf8')) as CacheEntry;
        if (names.includes(entry.body) && entry.expiresAt > now()) {
          cache.index.set(entry.key, entry);
          kept.add(name).add(entry.body);
        }
      } catch {
        // unreadable: removed below with the other leftovers
      }
    }
    await Promise.all(names.filter((n) => ours(n) && !kept.has(n)).map((n) => rm(path.join(dir, n), { force: true })));
    return cache;
  }

  /** The entry for a key, fresh or not (the caller tells a HIT from an EXPIRED). */
  lookup(key: string): { entry: CacheEntry; fresh: boolean } | undefined {
    const entry = this.index.get(key);
    return entry ? { entry, fresh: entry.expiresAt > this.now() } : undefined;
  }

  /** Opens an entry's body; undefined when it is gone (removed since the lookup). */
  async openBody(entry: CacheEntry): Promise<FileHandle | undefined> {
    try {
      return await open(path.join(this.dir, entry.body), 'r');
    } catch {
      if (this.index.get(entry.key) === entry) this.index.delete(entry.key);
      return undefined;
    }
  }

  async remove(key: string): Promise<void> {
    const entry = this.index.get(key);
    if (!entry) return;
    this.index.delete(key);
    await Promise.all([rm(path.join(this.dir, `${hash(key)}.json`), { force: true }), rm(path.join(this.dir, entry.body), { force: true })]);
  }

  /** Drops expired entries, so a cache that is never read again does not grow without end. */
  async sweep(): Promise<void> {
    const now = this.now();
    for (const [key, entry] of [...this.index]) if (entry.expiresAt <= now) await this.remove(key);
  }

  /**
   * A pass-through stream that also writes what passes to a new version of
   * the entry, and commits it when the source is complete. Committing
   * happens before the last byte is passed on, so once a client has the
   * whole body the next request finds it in the cache. A failure to write the
   * file only loses the entry; the client's response carries on.
   */
  fill(key: string, o: FillOptions): Transform {
    const name = hash(key);
    const version = `${name}.${Date.now().toString(36)}${randomBytes(4).toString('hex')}`;
    const tmp = path.join(this.dir, `${version}.tmp`);
    let file: WriteStream | undefined = createWriteStream(tmp, { flags: 'wx' });
    let bytes = 0;
    let committed = false;
    const abandon = () => {
      if (!file) return;
      file.destroy();
      file = undefined;
      void rm(tmp, { force: true });
    };
    file.on('error', abandon);

    const commit = async () => {
      const current = file!;
      current.end();
      await finished(current);
      const body = `${version}.body`;
      await rename(tmp, path.join(this.dir, body));
      const storedAt = this.now();
      const entry: CacheEntry = { key, status: o.status, headers: o.headers, size: bytes, storedAt, expiresAt: storedAt + o.ttlSeconds * 1000, body };
      const metaTmp = path.join(this.dir, `${version}.json.tmp`);
      await writeFile(metaTmp, JSON.stringify(entry));
      await rename(metaTmp, path.join(this.dir, `${name}.json`));
      const previous = this.index.get(key);
      this.index.set(key, entry);
      committed = true;
      file = undefined;
      if (previous && previous.body !== body) await rm(path.join(this.dir, previous.body), { force: true });
    };
    /** Commits, or on failure forgets the entry; never fails the response. */
    const tryCommit = () => commit().catch(abandon);

    return new Transform({
      transform(chunk: Buffer, _enc, done: TransformCallback) {
        bytes += chunk.length;
        if (!file || bytes > o.maxBytes || (o.expectedBytes !== undefined && bytes > o.expectedBytes)) {
          abandon();
          this.push(chunk);
          return done();
        }
        const flowing = file.write(chunk);
        if (bytes === o.expectedBytes) {
          // The declared length has arrived, so the response is complete. The
          // client must not have its last byte before the entry is committed:
          // it may ask again at once and should find it. So commit, then pass it on.
          void tryCommit().then(() => {
            this.push(chunk);
            done();
          });
          return;
        }
        this.push(chunk);
        // Wait for the disk before taking the next chunk: the origin is paused
        // by the slower of the client and the disk, never buffered for either.
        if (flowing) return done();
        const current = file;
        const go = () => {
          current.off('drain', go).off('close', go);
          done();
        };
        current.on('drain', go).on('close', go);
      },
      flush(done: TransformCallback) {
        if (!file) return done(); // committed above, or abandoned
        // Without a declared length, a body is whole when the origin ended it
        // properly (the last chunk of a chunked body), not when the connection dropped.
        const whole = o.complete() && (o.expectedBytes === undefined || bytes === o.expectedBytes);
        if (!whole) {
          abandon();
          return done();
        }
        void tryCommit().then(() => done());
      },
      destroy(err, done) {
        if (!committed) abandon();
        done(err);
      },
    });
  }
}

function hash(key: string): string {
  return createHash('sha256').update(key).digest('hex');
}
