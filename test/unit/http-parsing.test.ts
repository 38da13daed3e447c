// The small parsers every handler leans on: Range and Content-Range, query
// numbers, Content-Length and bodies, Link and upload Range headers,
// pagination, routes, and the one mapping from domain errors to HTTP.
import type { IncomingMessage } from 'node:http';
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import {
  contentLength,
  hasBody,
  linkHeader,
  parseContentRange,
  parseRangeHeader,
  queryInt,
  readBody,
  uploadRange,
} from '../../server/src/http/context.ts';
import { toErrorResponse } from '../../server/src/http/errors.ts';
import { matchRoute, splitUrl } from '../../server/src/http/router.ts';
import { type ErrorCode, RegistryError } from '../../server/src/registry/errors.ts';
import { paginate } from '../../server/src/registry/local-registry.ts';

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
    return undefined;
  } catch (err) {
    expect(err).toBeInstanceOf(RegistryError);
    return (err as RegistryError).code;
  }
}

/** A request-like readable with headers, for the body helpers. */
function fakeRequest(headers: Record<string, string>, chunks: Buffer[] = []): IncomingMessage {
  return Object.assign(Readable.from(chunks), { headers }) as unknown as IncomingMessage;
}

describe('parseRangeHeader (blob GET)', () => {
  const size = 1000;
  it.each([
    ['bytes=0-99', { start: 0, end: 99 }],
    ['bytes=0-0', { start: 0, end: 0 }],
    ['bytes=999-999', { start: 999, end: 999 }],
    ['bytes=900-', { start: 900, end: 999 }],
    ['bytes=990-5000', { start: 990, end: 999 }],
    ['bytes=-10', { start: 990, end: 999 }],
    ['bytes=-1000', { start: 0, end: 999 }],
    ['bytes=-5000', { start: 0, end: 999 }],
    ['  bytes=5-9  ', { start: 5, end: 9 }],
  ])('%j → partial %j', (header, range) => {
    expect(parseRangeHeader(header, size)).toEqual({ kind: 'partial', range });
  });

  it.each(['bytes=1000-', 'bytes=1000-2000', 'bytes=5000-', 'bytes=-0'])('%j → unsatisfiable', (header) => {
    expect(parseRangeHeader(header, size)).toEqual({ kind: 'unsatisfiable' });
  });

  it.each([undefined, '', 'bytes=', 'bytes=-', 'bytes=0-1,5-6', 'items=0-5', 'bytes=abc', 'bytes=5-3', 'bytes 0-5', 'bytes=0x1-2'])(
    '%j → the whole object',
    (header) => {
      expect(parseRangeHeader(header, size)).toEqual({ kind: 'full' });
    },
  );

  it('every range of an empty object is unsatisfiable', () => {
    for (const h of ['bytes=0-', 'bytes=0-0', 'bytes=-1']) expect(parseRangeHeader(h, 0)).toEqual({ kind: 'unsatisfiable' });
    expect(parseRangeHeader(undefined, 0)).toEqual({ kind: 'full' });
  });
});

describe('parseContentRange (upload chunks)', () => {
  it.each([
    ['0-99', { start: 0, end: 99 }],
    ['100-199', { start: 100, end: 199 }],
    ['0-0', { start: 0, end: 0 }],
    ['bytes 0-99/200', { start: 0, end: 99 }],
    ['bytes 0-99/*', { start: 0, end: 99 }],
    ['bytes=0-99', { start: 0, end: 99 }],
    ['0-99/200', { start: 0, end: 99 }],
    [' 5-9 ', { start: 5, end: 9 }],
  ])('%j → %j', (header, range) => {
    expect(parseContentRange(header)).toEqual(range);
  });

  it('absent → undefined', () => {
    expect(parseContentRange(undefined)).toBeUndefined();
  });

  it.each(['', 'garbage', '-5', '5-', '10-5', 'a-b', 'bytes */100', '0-99/abc', '1.5-2', '0-1,2-3'])(
    '%j → RANGE_INVALID',
    (header) => {
      expect(codeOf(() => parseContentRange(header))).toBe('RANGE_INVALID');
    },
  );
});

describe('uploadRange (the Range header of upload responses)', () => {
  it('is 0-<last byte>, and 0-0 for an empty session, as distribution writes it', () => {
    expect(uploadRange(0)).toBe('0-0');
    expect(uploadRange(1)).toBe('0-0');
    expect(uploadRange(100)).toBe('0-99');
    expect(uploadRange(5 * 1024 ** 3)).toBe(`0-${5 * 1024 ** 3 - 1}`);
  });
});

describe('queryInt', () => {
  const q = (s: string) => new URLSearchParams(s);
  it('reads non-negative integers; absent or empty is undefined', () => {
    expect(queryInt(q('n=5'), 'n')).toBe(5);
    expect(queryInt(q('n=0'), 'n')).toBe(0);
    expect(queryInt(q('n=007'), 'n')).toBe(7);
    expect(queryInt(q('n=999999999'), 'n')).toBe(999_999_999);
    expect(queryInt(q(''), 'n')).toBeUndefined();
    expect(queryInt(q('n='), 'n')).toBeUndefined();
    expect(queryInt(q('m=5'), 'n')).toBeUndefined();
  });

  it.each(['abc', '-1', '1.5', '1e3', '0x10', ' 5', '5 ', '+5', '9999999999', 'Infinity'])('n=%j → PAGINATION_NUMBER_INVALID', (v) => {
    expect(codeOf(() => queryInt(new URLSearchParams({ n: v }), 'n'))).toBe('PAGINATION_NUMBER_INVALID');
  });
});

describe('linkHeader', () => {
  it('builds an RFC 8288 next link with an encoded query', () => {
    expect(linkHeader('/v2/_catalog', { last: 'a/b', n: 2 })).toBe('</v2/_catalog?last=a%2Fb&n=2>; rel="next"');
    expect(linkHeader('/v2/x/tags/list', { last: 'v1.0', n: 10 })).toBe('</v2/x/tags/list?last=v1.0&n=10>; rel="next"');
  });
});

describe('paginate', () => {
  const all = ['a', 'b', 'c', 'd', 'e'];
  it('everything without n or last', () => {
    expect(paginate(all, {})).toEqual({ items: all });
  });
  it('the first n, with next = the last item returned', () => {
    expect(paginate(all, { n: 2 })).toEqual({ items: ['a', 'b'], next: 'b' });
  });
  it('after `last` (which need not be in the list)', () => {
    expect(paginate(all, { last: 'b' })).toEqual({ items: ['c', 'd', 'e'] });
    expect(paginate(all, { last: 'bb', n: 2 })).toEqual({ items: ['c', 'd'], next: 'd' });
    expect(paginate(all, { last: 'e' })).toEqual({ items: [] });
    expect(paginate(all, { last: '' })).toEqual({ items: all });
  });
  it('no next when the page reaches the end exactly', () => {
    expect(paginate(all, { n: 5 })).toEqual({ items: all });
    expect(paginate(all, { n: 3, last: 'b' })).toEqual({ items: ['c', 'd', 'e'] });
    expect(paginate(all, { n: 100 })).toEqual({ items: all });
  });
  it('n = 0 gives an empty page with no next', () => {
    const page = paginate(all, { n: 0 });
    expect(page.items).toEqual([]);
    expect(page.next).toBeUndefined();
  });
  it('walking the pages visits every item once', () => {
    const many = Array.from({ length: 23 }, (_, i) => `item-${String(i).padStart(2, '0')}`);
    const seen: string[] = [];
    let last: string | undefined;
    for (let i = 0; i < 100; i++) {
      const page = paginate(many, { n: 5, last });
      seen.push(...page.items);
      if (page.next === undefined) break;
      last = page.next;
    }
    expect(seen).toEqual(many);
  });
});

describe('Content-Length and bodies', () => {
  it('contentLength: absent → undefined, digits → number, anything else → SIZE_INVALID', () => {
    expect(contentLength(fakeRequest({}))).toBeUndefined();
    expect(contentLength(fakeRequest({ 'content-length': '0' }))).toBe(0);
    expect(contentLength(fakeRequest({ 'content-length': '12345' }))).toBe(12345);
    for (const v of ['-1', 'abc', '1.5', '']) {
      expect(codeOf(() => contentLength(fakeRequest({ 'content-length': v })))).toBe('SIZE_INVALID');
    }
  });

  it('hasBody: a non-zero Content-Length or a Transfer-Encoding', () => {
    expect(hasBody(fakeRequest({}))).toBe(false);
    expect(hasBody(fakeRequest({ 'content-length': '0' }))).toBe(false);
    expect(hasBody(fakeRequest({ 'content-length': '3' }))).toBe(true);
    expect(hasBody(fakeRequest({ 'transfer-encoding': 'chunked' }))).toBe(true);
  });

  const tooLarge = () => new RegistryError('MANIFEST_TOO_LARGE', 'too large');

  it('readBody reads the whole body', async () => {
    const body = await readBody(fakeRequest({ 'content-length': '6' }, [Buffer.from('abc'), Buffer.from('def')]), 10, tooLarge);
    expect(body.toString()).toBe('abcdef');
    expect((await readBody(fakeRequest({}, [Buffer.from('xyz')]), 10, tooLarge)).toString()).toBe('xyz');
  });

  it('readBody refuses a declared length over the limit before reading, and an undeclared one while reading', async () => {
    await expect(readBody(fakeRequest({ 'content-length': '11' }, []), 10, tooLarge)).rejects.toMatchObject({
      code: 'MANIFEST_TOO_LARGE',
    });
    await expect(readBody(fakeRequest({}, [Buffer.alloc(6), Buffer.alloc(6)]), 10, tooLarge)).rejects.toMatchObject({
      code: 'MANIFEST_TOO_LARGE',
    });
  });

  it('readBody refuses a body shorter than its Content-Length', async () => {
    await expect(readBody(fakeRequest({ 'content-length': '8' }, [Buffer.from('abc')]), 10, tooLarge)).rejects.toMatchObject({
      code: 'SIZE_INVALID',
    });
  });
});

describe('matchRoute', () => {
  const d = `sha256:${'a'.repeat(64)}`;
  it('recognises every endpoint, with nested names', () => {
    expect(matchRoute('/v2/')).toEqual({ kind: 'base' });
    expect(matchRoute('/v2')).toEqual({ kind: 'base' });
    expect(matchRoute('/v2/_catalog')).toEqual({ kind: 'catalog' });
    expect(matchRoute('/v2/a/b/c/tags/list')).toEqual({ kind: 'tags', name: 'a/b/c' });
    expect(matchRoute('/v2/a/manifests/latest')).toEqual({ kind: 'manifest', name: 'a', reference: 'latest' });
    expect(matchRoute(`/v2/a/b/blobs/${d}`)).toEqual({ kind: 'blob', name: 'a/b', reference: d });
    expect(matchRoute('/v2/a/blobs/uploads/')).toEqual({ kind: 'uploads', name: 'a' });
    expect(matchRoute('/v2/a/blobs/uploads/some-id')).toEqual({ kind: 'upload', name: 'a', id: 'some-id' });
    expect(matchRoute(`/v2/a/referrers/${d}`)).toEqual({ kind: 'referrers', name: 'a', reference: d });
  });

  it('names that end like an endpoint still route by the last suffix', () => {
    expect(matchRoute('/v2/blobs/manifests/tags/list')).toEqual({ kind: 'tags', name: 'blobs/manifests' });
    expect(matchRoute('/v2/a/blobs/uploads/manifests/v1')).toEqual({ kind: 'manifest', name: 'a/blobs/uploads', reference: 'v1' });
  });

  it('decodes only the last segment', () => {
    expect(matchRoute(`/v2/a/blobs/${d.replace(':', '%3A')}`)).toEqual({ kind: 'blob', name: 'a', reference: d });
    expect(codeOf(() => matchRoute('/v2/a%2Fb/tags/list'))).toBe('NAME_INVALID');
    expect(codeOf(() => matchRoute('/v2/a/manifests/%E0%A4%A'))).toBe('NAME_INVALID');
  });

  it('refuses dot segments and invalid names with NAME_INVALID', () => {
    for (const p of ['/v2/../../etc/passwd', '/v2/a/../b/tags/list', '/v2/./a/tags/list', '/v2/a/blobs/sha256:../../x', '/v2/a/%2e%2e/b/tags/list', '/v2/A/tags/list']) {
      expect(codeOf(() => matchRoute(p)), p).toBe('NAME_INVALID');
    }
  });

  it('anything else is not an API path', () => {
    for (const p of ['/', '/v1/', '/v2/a', '/v2/a/blobs', '/v2/a/manifests/', '/v3/a/tags/list', '/v2/a/tags']) {
      expect(matchRoute(p), p).toBeUndefined();
    }
  });

  it('splitUrl separates path and query without decoding the path', () => {
    const { pathname, query } = splitUrl('/v2/a%2Fb/tags/list?n=1&last=x%2Fy');
    expect(pathname).toBe('/v2/a%2Fb/tags/list');
    expect(query.get('n')).toBe('1');
    expect(query.get('last')).toBe('x/y');
    expect(splitUrl('/v2/').query.toString()).toBe('');
  });
});

describe('error responses', () => {
  const expectations: Array<[ErrorCode, number, string]> = [
    ['BLOB_UNKNOWN', 404, 'BLOB_UNKNOWN'],
    ['BLOB_UPLOAD_INVALID', 400, 'BLOB_UPLOAD_INVALID'],
    ['BLOB_UPLOAD_UNKNOWN', 404, 'BLOB_UPLOAD_UNKNOWN'],
    ['DIGEST_INVALID', 400, 'DIGEST_INVALID'],
    ['MANIFEST_BLOB_UNKNOWN', 400, 'MANIFEST_BLOB_UNKNOWN'],
    ['MANIFEST_INVALID', 400, 'MANIFEST_INVALID'],
    ['MANIFEST_UNKNOWN', 404, 'MANIFEST_UNKNOWN'],
    ['NAME_INVALID', 400, 'NAME_INVALID'],
    ['NAME_UNKNOWN', 404, 'NAME_UNKNOWN'],
    ['SIZE_INVALID', 400, 'SIZE_INVALID'],
    ['TAG_INVALID', 400, 'TAG_INVALID'],
    ['UNAUTHORIZED', 401, 'UNAUTHORIZED'],
    ['DENIED', 403, 'DENIED'],
    ['UNSUPPORTED', 405, 'UNSUPPORTED'],
    ['TOOMANYREQUESTS', 429, 'TOOMANYREQUESTS'],
    ['PAGINATION_NUMBER_INVALID', 400, 'PAGINATION_NUMBER_INVALID'],
    // Internal codes that the spec spells differently.
    ['RANGE_INVALID', 416, 'BLOB_UPLOAD_INVALID'],
    ['MANIFEST_TOO_LARGE', 413, 'MANIFEST_INVALID'],
    ['UNAVAILABLE', 503, 'UNAVAILABLE'],
  ];

  it.each(expectations)('%s → %d %s', (internal, status, code) => {
    const res = toErrorResponse(new RegistryError(internal, 'msg', { d: 1 }));
    expect(res.status).toBe(status);
    expect(JSON.parse(res.body)).toEqual({ errors: [{ code, message: 'msg', detail: { d: 1 } }] });
  });

  it('omits detail when there is none', () => {
    expect(JSON.parse(toErrorResponse(new RegistryError('NAME_UNKNOWN', 'm')).body)).toEqual({
      errors: [{ code: 'NAME_UNKNOWN', message: 'm' }],
    });
  });

  it('anything else is a 500 UNKNOWN that does not leak the internal message', () => {
    const res = toErrorResponse(new Error('EACCES: /secret/path/on/disk'));
    expect(res.status).toBe(500);
    expect(res.body).not.toContain('secret');
    expect(JSON.parse(res.body).errors[0].code).toBe('UNKNOWN');
  });
});
