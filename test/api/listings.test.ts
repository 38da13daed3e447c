// GET /v2/<name>/tags/list and GET /v2/_catalog: sorting, n/last
// pagination with Link headers, and their errors.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { errorCodes, RegistryClient } from '../helpers/client.ts';
import { buildImage, MT, randomBlob } from '../helpers/oci.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';

/** The target of a `Link: <url>; rel="next"` header, or undefined. */
function nextLink(link: string | undefined): string | undefined {
  if (link === undefined) return undefined;
  const m = /^<([^>]+)>;\s*rel="next"$/.exec(link);
  expect(m, `malformed Link header: ${link}`).not.toBeNull();
  return m![1];
}

describe('tags list', () => {
  let server: TestServer;
  let client: RegistryClient;
  const tags = ['v1', 'latest', '1.0', '1.0.1', 'A-upper', '_under', 'z', 'v10', 'v2'];
  const sorted = [...tags].sort();

  beforeAll(async () => {
    server = await startTestServer();
    client = new RegistryClient(server.url, server.auth);
    const image = buildImage();
    await client.pushImage('list/app', tags[0], image);
    for (const t of tags.slice(1)) await client.pushManifest('list/app', t, image.manifest, MT.ociManifest);
  });
  afterAll(() => server.stop());

  it('lists every tag, sorted, as {name, tags}, with a JSON content type', async () => {
    const res = await client.req('/v2/list/app/tags/list');
    expect(res.status).toBe(200);
    expect(res.header('content-type')).toMatch(/^application\/json/);
    expect(res.header('link')).toBeUndefined();
    expect(res.json()).toEqual({ name: 'list/app', tags: sorted });
  });

  it('?n= returns the first n and a Link to the next page; following Links visits every tag once', async () => {
    const first = await client.req('/v2/list/app/tags/list?n=2');
    expect(first.status).toBe(200);
    expect(first.json().tags).toEqual(sorted.slice(0, 2));
    expect(first.header('link')).toBe(`</v2/list/app/tags/list?last=${encodeURIComponent(sorted[1])}&n=2>; rel="next"`);

    const seen: string[] = [];
    let url: string | undefined = '/v2/list/app/tags/list?n=2';
    let pages = 0;
    while (url) {
      const res = await client.req(url);
      expect(res.status).toBe(200);
      const page = res.json().tags as string[];
      expect(page.length).toBeLessThanOrEqual(2);
      seen.push(...page);
      url = nextLink(res.header('link'));
      pages++;
      expect(pages).toBeLessThanOrEqual(tags.length);
    }
    expect(seen).toEqual(sorted);
    expect(pages).toBe(Math.ceil(tags.length / 2));
  });

  it('?n= at least the number of tags → everything, no Link', async () => {
    for (const n of [tags.length, tags.length + 1, 1000]) {
      const res = await client.req(`/v2/list/app/tags/list?n=${n}`);
      expect(res.json().tags).toEqual(sorted);
      expect(res.header('link')).toBeUndefined();
    }
  });

  it('?last= starts after that tag (which need not exist)', async () => {
    const res = await client.req(`/v2/list/app/tags/list?last=${sorted[3]}`);
    expect(res.json().tags).toEqual(sorted.slice(4));
    const between = await client.req('/v2/list/app/tags/list?last=m&n=1');
    expect(between.json().tags).toEqual([sorted.find((t) => t > 'm')]);
    const after = await client.req('/v2/list/app/tags/list?last=zzz');
    expect(after.json().tags).toEqual([]);
    expect(after.header('link')).toBeUndefined();
  });

  it('?n=0 → an empty list', async () => {
    const res = await client.req('/v2/list/app/tags/list?n=0');
    expect(res.status).toBe(200);
    expect(res.json().tags).toEqual([]);
  });

  it('a bad n → 400 PAGINATION_NUMBER_INVALID', async () => {
    for (const n of ['abc', '-1', '1.5', '1e3', '0x10', '9999999999']) {
      const res = await client.req(`/v2/list/app/tags/list?n=${n}`);
      expect(res.status, n).toBe(400);
      expect(errorCodes(res), n).toEqual(['PAGINATION_NUMBER_INVALID']);
    }
  });

  it('an unknown repository → 404 NAME_UNKNOWN', async () => {
    const res = await client.req('/v2/no/such/repo/tags/list');
    expect(res.status).toBe(404);
    expect(errorCodes(res)).toEqual(['NAME_UNKNOWN']);
  });

  it('a repository holding only blobs or an upload session is not a known repository', async () => {
    await client.pushBlob('list/blobs-only', randomBlob(10));
    const res = await client.req('/v2/list/blobs-only/tags/list');
    expect(res.status).toBe(404);
    expect(errorCodes(res)).toEqual(['NAME_UNKNOWN']);
    expect((await client.req('/v2/list/session-only/blobs/uploads/', { method: 'POST' })).status).toBe(202);
    expect(errorCodes(await client.req('/v2/list/session-only/tags/list'))).toEqual(['NAME_UNKNOWN']);
  });

  it('a repository whose manifests were pushed by digest only, or whose tags were all deleted, has an empty list', async () => {
    const image = buildImage();
    await client.pushImage('list/untagged', image.manifest.digest, image);
    expect((await client.req('/v2/list/untagged/tags/list')).json()).toEqual({ name: 'list/untagged', tags: [] });
    await client.pushManifest('list/untagged', 'tmp', image.manifest, MT.ociManifest);
    expect((await client.req('/v2/list/untagged/tags/list', {})).json().tags).toEqual(['tmp']);
    expect((await client.req('/v2/list/untagged/manifests/tmp', { method: 'DELETE' })).status).toBe(202);
    const res = await client.req('/v2/list/untagged/tags/list');
    expect(res.status).toBe(200);
    expect(res.json().tags).toEqual([]);
  });
});

describe('catalog', () => {
  let server: TestServer;
  let client: RegistryClient;
  const repos = ['b/app', 'a', 'a/b', 'a/b/c', 'c.d/e-f', 'z__z', '0num'];
  const sorted = [...repos].sort();

  beforeAll(async () => {
    server = await startTestServer();
    client = new RegistryClient(server.url, server.auth);
    const image = buildImage();
    for (const r of repos) await client.pushImage(r, 'v1', image);
    // Neither a blob-only repository nor an upload session makes a catalog entry.
    await client.pushBlob('blobs/only', randomBlob(5));
    expect((await client.req('/v2/session/only/blobs/uploads/', { method: 'POST' })).status).toBe(202);
  });
  afterAll(() => server.stop());

  it('lists every repository with manifests, nested ones included, sorted', async () => {
    const res = await client.req('/v2/_catalog');
    expect(res.status).toBe(200);
    expect(res.header('content-type')).toMatch(/^application\/json/);
    expect(res.header('link')).toBeUndefined();
    expect(res.json()).toEqual({ repositories: sorted });
  });

  it('?n= pages with Link: <...>; rel="next", and following them visits every repository once', async () => {
    const first = await client.req('/v2/_catalog?n=3');
    expect(first.json().repositories).toEqual(sorted.slice(0, 3));
    expect(first.header('link')).toBe(`</v2/_catalog?last=${encodeURIComponent(sorted[2])}&n=3>; rel="next"`);

    const seen: string[] = [];
    let url: string | undefined = '/v2/_catalog?n=3';
    let pages = 0;
    while (url) {
      const res = await client.req(url);
      seen.push(...res.json().repositories);
      url = nextLink(res.header('link'));
      expect(++pages).toBeLessThanOrEqual(repos.length);
    }
    expect(seen).toEqual(sorted);
  });

  it('?last= starts after that name; the last page has no Link', async () => {
    const res = await client.req(`/v2/_catalog?last=${encodeURIComponent('a/b')}`);
    expect(res.json().repositories).toEqual(sorted.filter((r) => r > 'a/b'));
    const end = await client.req(`/v2/_catalog?n=100&last=${encodeURIComponent(sorted[sorted.length - 2])}`);
    expect(end.json().repositories).toEqual([sorted[sorted.length - 1]]);
    expect(end.header('link')).toBeUndefined();
  });

  it('a bad n → 400 PAGINATION_NUMBER_INVALID', async () => {
    for (const n of ['x', '-5', '2.0']) {
      const res = await client.req(`/v2/_catalog?n=${n}`);
      expect(res.status, n).toBe(400);
      expect(errorCodes(res), n).toEqual(['PAGINATION_NUMBER_INVALID']);
    }
  });

  it('an empty registry has an empty catalog', async () => {
    const empty = await startTestServer();
    try {
      const res = await new RegistryClient(empty.url, empty.auth).req('/v2/_catalog');
      expect(res.status).toBe(200);
      expect(res.json()).toEqual({ repositories: [] });
    } finally {
      await empty.stop();
    }
  });
});

describe('listings under http.prefix', () => {
  let server: TestServer;
  let client: RegistryClient;
  beforeAll(async () => {
    server = await startTestServer({ extra: { http: { addr: '127.0.0.1:0', prefix: '/registry/' } } });
    client = new RegistryClient(`${server.url}/registry`, server.auth);
    const image = buildImage();
    for (const t of ['a', 'b', 'c']) await client.pushImage('pre/app', t, image);
    await client.pushImage('pre/other', 'v1', image);
  });
  afterAll(() => server.stop());

  it('Link and Location headers carry the prefix', async () => {
    const res = await client.req('/v2/pre/app/tags/list?n=1');
    expect(res.json().tags).toEqual(['a']);
    expect(res.header('link')).toBe('</registry/v2/pre/app/tags/list?last=a&n=1>; rel="next"');
    const next = await client.req(`${server.url}${nextLink(res.header('link'))}`);
    expect(next.json().tags).toEqual(['b']);
    const cat = await client.req('/v2/_catalog?n=1');
    expect(cat.header('link')).toBe('</registry/v2/_catalog?last=pre%2Fapp&n=1>; rel="next"');
    const post = await client.req('/v2/pre/app/blobs/uploads/', { method: 'POST' });
    expect(post.header('location')).toMatch(/^\/registry\/v2\/pre\/app\/blobs\/uploads\/[0-9a-f-]{36}$/);
  });

  it('paths outside the prefix are not the API', async () => {
    const res = await client.req(`${server.url}/v2/pre/app/tags/list`);
    expect(res.status).toBe(404);
  });
});
