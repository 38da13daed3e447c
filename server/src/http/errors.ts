// The one place where domain errors become HTTP: status codes and the spec's
// JSON error body ({"errors":[{"code","message","detail"}]}).
import type { ServerResponse } from 'node:http';
import { type ErrorCode, RegistryError } from '../registry/errors.ts';

interface Mapping {
  status: number;
  /** The code the client sees, when it differs from the internal one. */
  code?: string;
}

const MAPPINGS: Record<ErrorCode, Mapping> = {
  BLOB_UNKNOWN: { status: 404 },
  BLOB_UPLOAD_INVALID: { status: 400 },
  BLOB_UPLOAD_UNKNOWN: { status: 404 },
  DIGEST_INVALID: { status: 400 },
  MANIFEST_BLOB_UNKNOWN: { status: 400 },
  MANIFEST_INVALID: { status: 400 },
  MANIFEST_UNKNOWN: { status: 404 },
  NAME_INVALID: { status: 400 },
  NAME_UNKNOWN: { status: 404 },
  SIZE_INVALID: { status: 400 },
  TAG_INVALID: { status: 400 },
  UNAUTHORIZED: { status: 401 },
  DENIED: { status: 403 },
  UNSUPPORTED: { status: 405 },
  TOOMANYREQUESTS: { status: 429 },
  PAGINATION_NUMBER_INVALID: { status: 400 },
  // An out-of-order chunk: 416, as the spec asks, with the spec's upload error code.
  RANGE_INVALID: { status: 416, code: 'BLOB_UPLOAD_INVALID' },
  MANIFEST_TOO_LARGE: { status: 413, code: 'MANIFEST_INVALID' },
  UNAVAILABLE: { status: 503 },
};

export interface ErrorResponse {
  status: number;
  body: string;
}

export function toErrorResponse(err: unknown): ErrorResponse {
  if (err instanceof RegistryError) {
    const { status, code } = MAPPINGS[err.code];
    const entry: Record<string, unknown> = { code: code ?? err.code, message: err.message };
    if (err.detail !== undefined) entry.detail = err.detail;
    return { status, body: JSON.stringify({ errors: [entry] }) };
  }
  return {
    status: 500,
    body: JSON.stringify({ errors: [{ code: 'UNKNOWN', message: 'internal server error' }] }),
  };
}

/**
 * For requests Node's parser refused before the app saw them (malformed
 * headers, broken chunked bodies): the spec's JSON error body rather than a
 * bare 400. Headers over the parser's limit (16 KB) are 431 Request Header
 * Fields Too Large (RFC 6585), which tells the client what to shorten; the
 * spec has no error code for either, so both keep the one malformed requests
 * have always had.
 */
export function parserErrorResponse(err: NodeJS.ErrnoException): ErrorResponse {
  const tooLarge = err.code === 'HPE_HEADER_OVERFLOW';
  const message = tooLarge ? 'request headers too large' : `malformed request: ${err.code ?? err.message}`;
  return { status: tooLarge ? 431 : 400, body: JSON.stringify({ errors: [{ code: 'BLOB_UPLOAD_INVALID', message }] }) };
}

export function writeError(res: ServerResponse, err: unknown, extraHeaders: Record<string, string> = {}): number {
  const { status, body } = toErrorResponse(err);
  if (res.headersSent) {
    res.destroy();
    return status;
  }
  res.writeHead(status, {
    ...extraHeaders,
    'Content-Type': 'application/json; charset=utf-8',
    'Content-Length': Buffer.byteLength(body),
  });
  res.end(body);
  return status;
}
