// What a handler gets: the parsed request, the service, and small helpers
// for the parsing every handler needs (query numbers, bodies, ranges).
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Identity } from '../auth/authenticator.ts';
import type { ByteRange } from '../storage/driver.ts';
import { RegistryError } from '../registry/errors.ts';
import type { RegistryService } from '../registry/types.ts';
import type { Route } from './router.ts';

export interface AccessRecord {
  repo?: string;
  reference?: string;
  bytesIn?: number;
  bytesOut?: number;
  cache?: 'hit' | 'miss';
}

export interface RequestContext {
  readonly req: IncomingMessage;
  readonly res: ServerResponse;
  readonly route: Route;
  readonly query: URLSearchParams;
  readonly service: RegistryService;
  readonly identity: Identity;
  /** Builds an absolute path on this server, honouring http.prefix. */
  readonly url: (path: string) => string;
  /** Fields for the access log, filled in by handlers. */
  readonly access: AccessRecord;
  readonly cacheControl: CacheControl;
}

/** Cache-Control values for responses a CDN or client may cache. */
export interface CacheControl {
  /** Content addressed by digest (blobs, manifests by digest). */
  readonly immutable?: string;
  /** Manifests by tag. */
  readonly tag?: string;
}

export function queryInt(query: URLSearchParams, key: string): number | undefined {
  const v = query.get(key);
  if (v === null || v === '') return undefined;
  if (!/^\d{1,9}$/.test(v)) {
    throw new RegistryError('PAGINATION_NUMBER_INVALID', `query parameter ${key} must be a non-negative integer`);
  }
  return Number(v);
}

export function contentLength(req: IncomingMessage): number | undefined {
  const v = req.headers['content-length'];
  if (v === undefined) return undefined;
  if (!/^\d+$/.test(v)) throw new RegistryError('SIZE_INVALID', 'invalid Content-Length');
  return Number(v);
}

/** Whether the request carries a body (a non-zero Content-Length, or chunked encoding). */
export function hasBody(req: IncomingMessage): boolean {
  const len = req.headers['content-length'];
  if (len !== undefined) return len !== '0';
  return req.headers['transfer-encoding'] !== undefined;
}

/** Reads a small body whole, refusing more than `limit` bytes before reading them. */
export async function readBody(req: IncomingMessage, limit: number, tooLarge: () => RegistryError): Promise<Buffer> {
  const declared = contentLength(req);
  if (declared !== undefined && declared > limit) throw tooLarge();
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of req) {
    total += (chunk as Buffer).length;
    if (total > limit) throw tooLarge();
    chunks.push(chunk as Buffer);
  }
  if (declared !== undefined && total !== declared) {
    throw new RegistryError('SIZE_INVALID', `received ${total} bytes, Content-Length said ${declared}`);
  }
  return Buffer.concat(chunks);
}

/**
 * Content-Range of a chunk upload: "<start>-<end>" as the spec writes it,
 * also accepting the "bytes <start>-<end>/<total>" form of RFC 9110.
 */
export function parseContentRange(header: string | undefined): ByteRange | undefined {
  if (header === undefined) return undefined;
  const m = /^\s*(?:bytes[ =])?(\d+)-(\d+)(?:\/(?:\d+|\*))?\s*$/.exec(header);
  if (!m) throw new RegistryError('RANGE_INVALID', `invalid Content-Range: ${header.slice(0, 60)}`);
  const range = { start: Number(m[1]), end: Number(m[2]) };
  if (range.end < range.start) throw new RegistryError('RANGE_INVALID', `invalid Content-Range: ${header.slice(0, 60)}`);
  return range;
}

export type RangeRequest = { kind: 'full' } | { kind: 'partial'; range: ByteRange } | { kind: 'unsatisfiable' };

/** A Range header against an object of `size` bytes. Multiple ranges are served as the full object. */
export function parseRangeHeader(header: string | undefined, size: number): RangeRequest {
  if (!header) return { kind: 'full' };
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m || (m[1] === '' && m[2] === '')) return { kind: 'full' };
  let start: number;
  let end: number;
  if (m[1] === '') {
    const suffix = Number(m[2]);
    if (suffix === 0) return { kind: 'unsatisfiable' };
    start = Math.max(0, size - suffix);
    end = size - 1;
  } else {
    start = Number(m[1]);
    end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
    if (m[2] !== '' && Number(m[2]) < start) return { kind: 'full' };
  }
  if (start >= size) return { kind: 'unsatisfiable' };
  return { kind: 'partial', range: { start, end } };
}

/** The Range header of upload responses: the bytes received so far, as distribution writes it. */
export function uploadRange(offset: number): string {
  return `0-${Math.max(offset - 1, 0)}`;
}

export function linkHeader(path: string, query: Record<string, string | number>): string {
  const qs = new URLSearchParams(Object.entries(query).map(([k, v]) => [k, String(v)])).toString();
  return `<${path}?${qs}>; rel="next"`;
}
