// The route parser: a path built from valid parts routes back to those parts,
// whatever words the name contains; any other path is either not an API path
// or refused with NAME_INVALID, and a name that reaches a handler is always
// one the spec's grammar allows.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { matchRoute, type Route, splitUrl } from '../../server/src/http/router.ts';
import { Upstreams } from '../../server/src/proxy/upstreams.ts';
import { MAX_NAME, refusal, SPEC_NAME, SPEC_TAG } from './support.ts';

const RUNS = { numRuns: 500 };

/** The words routes are made of, as name components: the router must not mistake a name for a suffix. */
const ROUTE_WORDS = ['v2', 'tags', 'list', 'blobs', 'uploads', 'manifests', 'referrers', 'catalog'];
const component = fc.oneof(fc.constantFrom(...ROUTE_WORDS), fc.stringMatching(/^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*$/));
const name = fc
  .array(component, { minLength: 1, maxLength: 6 })
  .map((parts) => parts.join('/'))
  .filter((n) => n.length <= MAX_NAME);

const hex = (n: number) => fc.string({ unit: fc.constantFrom(...'0123456789abcdef'), minLength: n, maxLength: n });
const digest = fc.oneof(hex(64).map((h) => `sha256:${h}`), hex(128).map((h) => `sha512:${h}`));
const reference = fc.oneof(fc.stringMatching(SPEC_TAG), digest, fc.constantFrom(...ROUTE_WORDS));
/** Upload ids are opaque to the router (the upload store checks them); only a dot segment is never one. */
const uploadId = fc.oneof(
  fc.uuid(),
  fc.constantFrom(...ROUTE_WORDS),
  fc.string({ unit: fc.constantFrom(...'abc-_.~'), minLength: 1, maxLength: 20 }).filter((id) => id !== '.' && id !== '..'),
);

/** A last segment as a client may send it: as is, or percent-encoded (":" as %3A). */
const encoded = (segment: string, encode: boolean) => (encode ? encodeURIComponent(segment) : segment);

type Built = { path: string; route: Route };

const built: fc.Arbitrary<Built> = fc.oneof(
  fc.constantFrom<Built>(
    { path: '/v2', route: { kind: 'base' } },
    { path: '/v2/', route: { kind: 'base' } },
    { path: '/v2/_catalog', route: { kind: 'catalog' } },
    { path: '/v2/_catalog/', route: { kind: 'catalog' } },
  ),
  fc.tuple(name, fc.boolean()).map(([n, slash]): Built => ({ path: `/v2/${n}/tags/list${slash ? '/' : ''}`, route: { kind: 'tags', name: n } })),
  fc.tuple(name, fc.boolean()).map(([n, slash]): Built => ({ path: `/v2/${n}/blobs/uploads${slash ? '/' : ''}`, route: { kind: 'uploads', name: n } })),
  fc.tuple(name, uploadId).map(([n, id]): Built => ({ path: `/v2/${n}/blobs/uploads/${encodeURIComponent(id)}`, route: { kind: 'upload', name: n, id } })),
  fc.tuple(name, reference, fc.boolean()).map(([n, ref, enc]): Built => ({
    path: `/v2/${n}/manifests/${encoded(ref, enc)}`,
    route: { kind: 'manifest', name: n, reference: ref },
  })),
  fc.tuple(name, digest, fc.boolean()).map(([n, d, enc]): Built => ({ path: `/v2/${n}/blobs/${encoded(d, enc)}`, route: { kind: 'blob', name: n, reference: d } })),
  fc.tuple(name, digest, fc.boolean()).map(([n, d, enc]): Built => ({
    path: `/v2/${n}/referrers/${encoded(d, enc)}`,
    route: { kind: 'referrers', name: n, reference: d },
  })),
);

/** Paths made of route words, names, dot segments and percent-escapes, plus plain noise. */
const PIECES = ['/', '/v2', '/v2/', 'v2', ...ROUTE_WORDS, '_catalog', 'a', 'A', 'a.b', 'a__b', '.', '..', '%2e', '%2E%2e', '%2F', '%', '%zz', '%E0%A4%A', '%00', '%3A', 'sha256:', `sha256:${'0'.repeat(64)}`, '?', '#', ' ', '\\', 'é', '//'];
const noisyPath = fc.oneof(
  fc.array(fc.constantFrom(...PIECES), { maxLength: 12 }).map((p) => p.join('')),
  fc.array(fc.constantFrom(...PIECES), { maxLength: 8 }).map((p) => `/v2/${p.join('/')}`),
  built.chain(({ path }) => fc.tuple(fc.nat(path.length), fc.constantFrom(...PIECES)).map(([at, piece]) => path.slice(0, at) + piece + path.slice(at))),
  fc.string({ unit: 'binary', maxLength: 60 }).map((s) => `/v2/${s}`),
);

function checkOutcome(path: string, canonicalName?: (n: string) => string): void {
  let route: Route | undefined;
  const code = refusal(() => {
    route = matchRoute(path, canonicalName);
  });
  if (code !== undefined) {
    // A bad name, a dot segment or a malformed escape: all NAME_INVALID; the mirror may also not know the upstream.
    expect(canonicalName ? ['NAME_INVALID', 'NAME_UNKNOWN'] : ['NAME_INVALID']).toContain(code);
    return;
  }
  if (route && 'name' in route) {
    expect(route.name.length).toBeLessThanOrEqual(MAX_NAME);
    expect(route.name).toMatch(SPEC_NAME);
  }
  // Only paths under /v2 are API paths.
  if (route) expect(path === '/v2' || path.startsWith('/v2/')).toBe(true);
}

describe('matchRoute', () => {
  it('a path built from valid parts routes back to exactly those parts', () => {
    fc.assert(
      fc.property(built, ({ path, route }) => {
        expect(matchRoute(path)).toEqual(route);
      }),
      RUNS,
    );
  });

  it('any path is not an API path, a route with a valid name, or NAME_INVALID', () => {
    fc.assert(
      fc.property(noisyPath, (path) => checkOutcome(path)),
      { numRuns: 1000 },
    );
  });

  it('with the mirror mapping names onto upstreams: the same, and the stored name is valid too', () => {
    const upstreams = new Upstreams([
      { host: 'docker.io', url: 'https://registry-1.docker.io' },
      { host: 'ghcr.io', url: 'https://ghcr.io' },
      { host: 'registry.example.com:5000', url: 'https://registry.example.com:5000' },
    ]);
    const ns = fc.option(fc.constantFrom('docker.io', 'GHCR.IO', 'registry.example.com:5000', 'nope.example', ''), { nil: undefined });
    const mirrorPath = fc.oneof(
      noisyPath,
      built.map(({ path }) => path),
      built.map(({ path }) => path.replace(/^\/v2\//, '/v2/ghcr.io/')),
      built.map(({ path }) => path.replace(/^\/v2\//, '/v2/registry.example.com:5000/')),
    );
    fc.assert(
      fc.property(mirrorPath, ns, (path, host) => checkOutcome(path, (n) => upstreams.canonicalName(n, host))),
      RUNS,
    );
  });

  it('a "." or ".." segment never reaches a route, however it is written', () => {
    const dots = fc.constantFrom('.', '..');
    fc.assert(
      fc.property(built, dots, fc.nat(), (b, dot, at) => {
        const segments = b.path.split('/');
        // Replace one segment after "/v2/": a dot segment anywhere in an API path is refused.
        const i = 2 + (at % Math.max(1, segments.length - 2));
        if (i >= segments.length) return;
        segments[i] = dot;
        expect(refusal(() => matchRoute(segments.join('/')))).toBe('NAME_INVALID');
      }),
      RUNS,
    );
  });
});

describe('splitUrl', () => {
  it('a request target in absolute form ("http://host/v2/…") routes as its path does', () => {
    const authority = fc.constantFrom('http://registry.example.com', 'https://127.0.0.1:5000', 'HTTP://[::1]:5000', 'http://user@host');
    fc.assert(
      fc.property(authority, built, fc.option(fc.constantFrom('n=1', 'digest=sha256:x', ''), { nil: undefined }), (origin, { path, route }, query) => {
        const target = query === undefined ? `${origin}${path}` : `${origin}${path}?${query}`;
        const split = splitUrl(target);
        expect(split.pathname).toBe(path);
        expect(split.query.toString()).toBe(new URLSearchParams(query ?? '').toString());
        expect(matchRoute(split.pathname)).toEqual(route);
      }),
      RUNS,
    );
    // Regression: "GET http://host/v2/ HTTP/1.1" was 404 NAME_UNKNOWN ("no such API endpoint").
    expect(splitUrl('http://registry.example.com/v2/').pathname).toBe('/v2/');
    expect(splitUrl('http://registry.example.com?n=1')).toEqual({ pathname: '/', query: new URLSearchParams('n=1') });
  });


  it('the path is everything before the first "?", undecoded; the query is what follows', () => {
    // Origin form: a target that starts with "scheme://" is the absolute form (below).
    const originForm = fc.string({ maxLength: 40 }).filter((p) => !/^[a-z][a-z0-9+.-]*:\/\//i.test(p));
    fc.assert(
      fc.property(originForm, fc.option(fc.string({ maxLength: 40 }), { nil: undefined }), (path, query) => {
        const p = path.replace(/\?/g, '');
        const url = query === undefined ? p : `${p}?${query}`;
        const split = splitUrl(url);
        expect(split.pathname).toBe(p);
        expect(split.query.toString()).toBe(new URLSearchParams(query ?? '').toString());
      }),
      RUNS,
    );
  });
});
