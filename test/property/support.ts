// What the property suites share: the spec's grammar written out as the spec
// writes it (independently of the server's own regexes), the error codes a
// client may see, and a check that a refusal is a typed one.
import { type ErrorCode, RegistryError } from '../../server/src/registry/errors.ts';

/** OCI distribution spec v1.1, "Pulling manifests": <name> and <reference> as a tag. */
export const SPEC_NAME = /^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*$/;
export const SPEC_TAG = /^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$/;
/** OCI image spec, "Digests": algorithm ":" encoded. */
export const SPEC_DIGEST = /^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/;
/** distribution refuses names longer than this, whatever the grammar says. */
export const MAX_NAME = 255;

/**
 * The codes of the spec's error table, plus distribution's few that clients
 * know (TAG_INVALID, PAGINATION_NUMBER_INVALID, UNAVAILABLE). UNKNOWN (a 500)
 * is deliberately absent.
 */
export const WIRE_CODES = new Set([
  'BLOB_UNKNOWN',
  'BLOB_UPLOAD_INVALID',
  'BLOB_UPLOAD_UNKNOWN',
  'DIGEST_INVALID',
  'MANIFEST_BLOB_UNKNOWN',
  'MANIFEST_INVALID',
  'MANIFEST_UNKNOWN',
  'NAME_INVALID',
  'NAME_UNKNOWN',
  'SIZE_INVALID',
  'UNAUTHORIZED',
  'DENIED',
  'UNSUPPORTED',
  'TOOMANYREQUESTS',
  'TAG_INVALID',
  'PAGINATION_NUMBER_INVALID',
  'UNAVAILABLE',
]);

/**
 * Runs `fn`: undefined when it returns, the code when it throws a
 * RegistryError. Anything else thrown (a TypeError, a RangeError from a
 * regex, a plain Error) is rethrown, so the property fails on it.
 */
export function refusal(fn: () => unknown): ErrorCode | undefined {
  try {
    fn();
    return undefined;
  } catch (err) {
    if (err instanceof RegistryError) return err.code;
    throw err;
  }
}

/** Like `refusal`, for a refusal that must happen: its code. */
export function refusedWith(fn: () => unknown): ErrorCode {
  const code = refusal(fn);
  if (code === undefined) throw new Error('expected a RegistryError, but the call returned');
  return code;
}
