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
 * also accepting the "bytes <start>-<end>/<total>" form of RFC 9110. The
 * digits are compared exactly (BigInt): past 2^53 a JS number rounds, and
 * "9007199254740992-9007199254740993" would read as one byte.
 */
export function parseContentRange(header: string | undefined): ByteRange | undefined {
  if (header === undefined) return undefined;
  const m = /^\s*(?:bytes[ =])?(\d+)-(\d+)(?:\/(\d+|\*))?\s*$/.exec(header);
  const invalid = () => new RegistryError('RANGE_INVALID', `invalid Content-Range: ${header.slice(0, 60)}`);
  if (!m) throw invalid();
  const start = BigInt(m[1]);
  const end = BigInt(m[2]);
  // RFC 9110 §14.4: invalid when the last byte comes before the first, or is not below the complete length.
  if (end < start || (m[3] !== undefined && m[3] !== '*' && BigInt(m[3]) <= end)) throw invalid();
  if (end > MAX_SAFE) throw invalid();
  return { start: Number(start), end: Number(end) };
}

const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);

export type RangeRequest = { kind: 'full' } | { kind: 'partial'; range: ByteRange } | { kind: 'unsatisfiable' };

/**
 * A Range header against an object of `size` bytes. Multiple ranges are served
 * as the full object, and so is an invalid range (RFC 9110 §14.2: ignored).
 * Positions are compared exactly (BigInt), so that digits past 2^53 cannot
 * round into a different answer.
 */
export function parseRangeHeader(header: string | undefined, size: number): RangeRequest {
  if (!header) return { kind: 'full' };
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m || (m[1] === '' && m[2] === '')) return { kind: 'full' };
  const total = BigInt(size);
  if (m[1] === '') {
    const suffix = BigInt(m[2]);
    if (suffix === 0n || total === 0n) return { kind: 'unsatisfiable' };
    return { kind: 'partial', range: { start: suffix >= total ? 0 : size - Number(suffix), end: size - 1 } };
  }
  const first = BigInt(m[1]);
  const last = m[2] === '' ? undefined : BigInt(m[2]);
  if (last !== undefined && last < first) return { kind: 'full' };
  if (first >= total) return { kind: 'unsatisfiable' };
  return { kind: 'partial', range: { start: Number(first), end: last === undefined || last >= total ? size - 1 : Number(last) } };
}

/** The Range header of upload responses: the bytes received so far, as distribution writes it. */
export function uploadRange(offset: number): string {
  return `0-${Math.max(offset - 1, 0)}`;
}

export function linkHeader(path: string, query: Record<string, string | number>): string {
  const qs = new URLSearchParams(Object.entries(query).map(([k, v]) => [k, String(v)])).toString();
  return `<${path}?${qs}>; rel="next"`;
}
