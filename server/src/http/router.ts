// Maps a request path to one of the API's routes. Repository names contain
// slashes, so routes are recognised by their suffix (/manifests/<ref>,
// /blobs/<digest>, …) and everything before it is the name, which is then
// validated against the spec's grammar. The path is never decoded as a whole:
// only the final segment is, so "%2e%2e" can't become a path component.
import { RegistryError } from '../registry/errors.ts';
import { validateName } from '../registry/names.ts';

/** `requestedName` is the name as the client wrote it, when the service stores it under another. */
type Named = { name: string; requestedName?: string };

export type Route =
  | { kind: 'base' }
  | { kind: 'catalog' }
  | ({ kind: 'tags' } & Named)
  | ({ kind: 'manifest'; reference: string } & Named)
  | ({ kind: 'blob'; reference: string } & Named)
  | ({ kind: 'uploads' } & Named)
  | ({ kind: 'upload'; id: string } & Named)
  | ({ kind: 'referrers'; reference: string } & Named);

export type RouteKind = Route['kind'];

const PATTERNS: Array<[RegExp, (m: RegExpExecArray) => Route]> = [
  [/^\/v2\/?$/, () => ({ kind: 'base' })],
  [/^\/v2\/_catalog\/?$/, () => ({ kind: 'catalog' })],
  [/^\/v2\/(.+)\/tags\/list\/?$/, (m) => ({ kind: 'tags', name: m[1] })],
  [/^\/v2\/(.+)\/blobs\/uploads\/?$/, (m) => ({ kind: 'uploads', name: m[1] })],
  [/^\/v2\/(.+)\/blobs\/uploads\/([^/]+)$/, (m) => ({ kind: 'upload', name: m[1], id: decode(m[2]) })],
  [/^\/v2\/(.+)\/manifests\/([^/]+)$/, (m) => ({ kind: 'manifest', name: m[1], reference: decode(m[2]) })],
  [/^\/v2\/(.+)\/blobs\/([^/]+)$/, (m) => ({ kind: 'blob', name: m[1], reference: decode(m[2]) })],
  [/^\/v2\/(.+)\/referrers\/([^/]+)$/, (m) => ({ kind: 'referrers', name: m[1], reference: decode(m[2]) })],
];

/**
 * The route for a path (without query string), or undefined when it is not an
 * API path. `canonicalName` maps the requested name first (the mirror accepts
 * a leading "host:port/" that the name grammar alone would refuse); the
 * resulting name is always validated before anything uses it.
 */
export function matchRoute(pathname: string, canonicalName?: (name: string) => string): Route | undefined {
  // A raw "." or ".." segment ("/v2/../../etc/passwd", "/v2/a/blobs/sha256:../../x")
  // is never part of an API path: refuse it as a bad name rather than as "not found".
  if (pathname.startsWith('/v2/') && pathname.split('/').some((s) => s === '.' || s === '..')) {
    throw new RegistryError('NAME_INVALID', 'invalid repository name: the path has "." or ".." segments');
  }
  for (const [re, build] of PATTERNS) {
    const m = re.exec(pathname);
    if (!m) continue;
    const route = build(m);
    if (!('name' in route)) return route;
    if (!canonicalName) return { ...route, name: validateName(route.name) };
    return { ...route, name: validateName(canonicalName(route.name)), requestedName: route.name };
  }
  return undefined;
}

function decode(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    throw new RegistryError('NAME_INVALID', 'malformed percent-encoding in path');
  }
}

export function splitUrl(target: string): { pathname: string; query: URLSearchParams } {
  // RFC 9112 §3.2.2: a server must accept the absolute form ("http://host/v2/…"), which Node passes on as
  // it came; only its path and query say what is asked for (as distribution reads it).
  const absolute = /^[a-z][a-z0-9+.-]*:\/\/[^/?#]*/i.exec(target);
  const rest = absolute ? target.slice(absolute[0].length) : target;
  const url = absolute && !rest.startsWith('/') ? `/${rest}` : rest;
  const q = url.indexOf('?');
  if (q < 0) return { pathname: url, query: new URLSearchParams() };
  return { pathname: url.slice(0, q), query: new URLSearchParams(url.slice(q + 1)) };
}
