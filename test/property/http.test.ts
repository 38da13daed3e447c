// The HTTP layer as a client sees it: a real server (one repository pushed,
// auth on, anonymous pulls) hit over raw sockets with generated methods,
// paths, queries, headers and bodies. Every request gets an answer; none is a
// 5xx; every 4xx says what was wrong with a spec error code in a JSON body,
// except the two that by HTTP have none: a HEAD, and a blob GET's 416 (which
// carries "Content-Range: bytes */<size>" instead).
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RegistryClient, rawHttp, type RawResponse } from '../helpers/client.ts';
import { buildImage, type Image } from '../helpers/oci.ts';
import { startTestServer, TEST_PASSWORD, TEST_USER, type TestServer, basicAuth } from '../helpers/server.ts';
import { WIRE_CODES } from './support.ts';

const REPO = 'seed/app';
const TAG = 'v1';
let server: TestServer;
// Built up front: the generators use its digests.
const image: Image = buildImage();

/** Upload sessions opened before the run, so that PATCH/PUT/GET/DELETE of an upload reach a live one. */
const uploadIds: string[] = [];

beforeAll(async () => {
  // The generated requests send wrong passwords from 127.0.0.1, more than the default failed-login
  // limit allows: without turning it off, the push after the run would be locked out (as it should be).
  server = await startTestServer({ anonymousPull: true, extra: { ratelimit: { failedlogins: { enabled: false } } } });
  const client = new RegistryClient(server.url, server.auth);
  await client.pushImage(REPO, TAG, image);
  for (let i = 0; i < 20; i++) {
    const res = await client.req(`/v2/${REPO}/blobs/uploads/`, { method: 'POST' });
    uploadIds.push(String(res.header('docker-upload-uuid')));
  }
});

afterAll(async () => {
  await server?.stop();
});

const hex = (n: number) => fc.string({ unit: fc.constantFrom(...'0123456789abcdef'), minLength: n, maxLength: n });

/** Paths that reach every route with the pushed repository's real names and digests, or come close. */
function paths(): fc.Arbitrary<string> {
  const layer = image.layers[0].digest;
  // Mostly the pushed repository and its real references, so that requests get past routing to the handlers.
  const name = fc.oneof(
    { arbitrary: fc.constant(REPO), weight: 8 },
    { arbitrary: fc.constantFrom('seed', 'other/repo', 'Seed/App', 'seed//app', 'seed/../app', 'seed/%2e%2e/app', 'a'.repeat(300), '_x', 'seed/app/tags'), weight: 2 },
    { arbitrary: fc.stringMatching(/^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:\/[a-z0-9]+)?$/), weight: 1 },
  );
  const reference = fc.oneof(
    { arbitrary: fc.constantFrom(TAG, image.manifest.digest, image.config.digest, layer), weight: 8 },
    {
      arbitrary: fc.constantFrom('latest', '.INVALID_MANIFEST_NAME', image.manifest.digest.replace(':', '%3A'), 'sha256:xyz', 'sha256:', 'md5:abc', '%', '%zz', '%00', '..'),
      weight: 3,
    },
    { arbitrary: hex(64).map((h) => `sha256:${h}`), weight: 1 },
    { arbitrary: fc.stringMatching(/^[A-Za-z0-9_][A-Za-z0-9._-]{0,20}$/), weight: 1 },
  );
  const route = fc.oneof(
    fc.constantFrom('/v2/', '/v2', '/v2/_catalog', '/', '/healthz', '/readyz', '/metrics', '*', '/v1/', '/v2/seed/app/blobs/uploads/00000000-0000-0000-0000-000000000000'),
    fc.tuple(name, reference).map(([n, r]) => `/v2/${n}/manifests/${r}`),
    fc.tuple(name, reference).map(([n, r]) => `/v2/${n}/blobs/${r}`),
    fc.tuple(name, reference).map(([n, r]) => `/v2/${n}/referrers/${r}`),
    name.map((n) => `/v2/${n}/tags/list`),
    name.map((n) => `/v2/${n}/blobs/uploads/`),
    fc.tuple(name, fc.oneof(fc.uuid(), fc.constantFrom('x', '..', '%2e%2e', '%2F'))).map(([n, id]) => `/v2/${n}/blobs/uploads/${id}`),
    fc.string({ unit: fc.constantFrom(...'/v2abcs._-%:?&='), maxLength: 40 }).map((s) => `/v2/${s}`),
  );
  const query = fc.option(
    fc
      .array(
        fc.tuple(
          fc.constantFrom('n', 'last', 'digest', 'mount', 'from', 'ns', 'artifactType', 'x'),
          fc.oneof(fc.constantFrom('', '0', '1', '-1', '1000000000000', 'abc', layer, REPO, 'docker.io', '%zz'), fc.string({ maxLength: 10 }).map(encodeURIComponent)),
        ),
        { maxLength: 3 },
      )
      .map((pairs) => pairs.map(([k, v]) => `${k}=${v}`).join('&')),
    { nil: undefined },
  );
  return fc.tuple(route, query).map(([r, q]) => (q === undefined ? r : `${r}?${q}`));
}

/** Printable ASCII: what a header value may hold, so that most requests get past Node's parser to the API. */
const printable = fc.string({ unit: fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c)), maxLength: 20 });
const headerValue = (values: string[]) =>
  fc.oneof(
    { arbitrary: fc.constantFrom(...values), weight: 30 },
    { arbitrary: printable, weight: 15 },
    // Now and then bytes Node's parser refuses: it must still answer in the spec's format.
    { arbitrary: fc.string({ unit: 'binary-ascii', maxLength: 20 }), weight: 1 },
  );

function headers(): fc.Arbitrary<Record<string, string>> {
  return fc.record(
    {
      authorization: headerValue([basicAuth(TEST_USER, TEST_PASSWORD), basicAuth(TEST_USER, TEST_PASSWORD), basicAuth(TEST_USER, TEST_PASSWORD), basicAuth(TEST_USER, 'wrong'), 'Basic', 'Basic !!!', 'Basic Og==', 'Bearer x']),
      range: headerValue(['bytes=0-0', 'bytes=0-', 'bytes=-1', 'bytes=100000-', 'bytes=5-2', 'bytes=0-1,3-4', 'bytes=9007199254740993-9007199254740992']),
      'content-range': headerValue(['0-0', '0-9', 'bytes 0-9/5', '5-1', '0-99999999999999999999']),
      'content-type': headerValue(['application/vnd.oci.image.manifest.v1+json', 'application/octet-stream', 'text/plain', 'application/json']),
      accept: headerValue(['*/*', 'application/vnd.oci.image.index.v1+json', 'text/html', ',,,']),
      'if-none-match': headerValue([`"${image.manifest.digest}"`, '*']),
      'x-forwarded-for': headerValue(['1.2.3.4', 'garbage', '::1, 10.0.0.1']),
      'transfer-encoding': fc.constantFrom('chunked', 'chunked', 'chunked', 'chunked', 'chunked', 'gzip'),
    },
    { requiredKeys: [] },
  );
}

const METHODS = ['GET', 'GET', 'GET', 'HEAD', 'HEAD', 'POST', 'POST', 'PUT', 'PUT', 'PATCH', 'DELETE', 'OPTIONS', 'TRACE', 'PROPFIND', 'CONNECT', 'get'];
const body = fc.option(
  fc.oneof(fc.uint8Array({ maxLength: 64 }).map((b) => Buffer.from(b)), fc.constant(null).map(() => image.manifest.data), fc.jsonValue({ maxDepth: 2 }).map((v) => Buffer.from(JSON.stringify(v)))),
  { nil: undefined },
);

type Sent = { method: string; path: string; headers: Record<string, string>; body?: Buffer };

/** Calls the API has, on the pushed repository: a method that fits the route, with the query it reads. */
function apiCalls(): fc.Arbitrary<{ method: string; path: string }> {
  const digests = [image.manifest.digest, image.config.digest, image.layers[0].digest];
  const digest = fc.oneof({ arbitrary: fc.constantFrom(...digests), weight: 4 }, { arbitrary: hex(64).map((h) => `sha256:${h}`), weight: 1 });
  const reference = fc.oneof(digest, fc.constantFrom(TAG, 'latest', '.INVALID_MANIFEST_NAME'));
  const uploadId = fc.oneof({ arbitrary: fc.nat().map((i) => uploadIds[i % uploadIds.length] ?? 'none'), weight: 4 }, { arbitrary: fc.uuid(), weight: 1 });
  const n = fc.constantFrom('', '?n=0', '?n=1', '?n=2&last=a', '?last=v1', '?n=-1', '?n=99999999999');
  const call = (method: string | string[], path: fc.Arbitrary<string>) =>
    fc.tuple(Array.isArray(method) ? fc.constantFrom(...method) : fc.constant(method), path).map(([m, p]) => ({ method: m, path: p }));
  return fc.oneof(
    call(['GET', 'HEAD'], reference.map((r) => `/v2/${REPO}/manifests/${r}`)),
    call('PUT', reference.map((r) => `/v2/${REPO}/manifests/${r}`)),
    call('DELETE', reference.map((r) => `/v2/${REPO}/manifests/${r}`)),
    call(['GET', 'HEAD'], digest.map((d) => `/v2/${REPO}/blobs/${d}`)),
    call('DELETE', digest.map((d) => `/v2/${REPO}/blobs/${d}`)),
    call('POST', fc.constantFrom('', `?digest=${digests[1]}`, '?digest=sha256:bad', `?mount=${digests[2]}&from=${REPO}`, `?mount=${digests[2]}&from=Bad`).map((q) => `/v2/other/repo/blobs/uploads/${q}`)),
    call(['PATCH', 'GET', 'DELETE'], uploadId.map((id) => `/v2/${REPO}/blobs/uploads/${id}`)),
    call('PUT', fc.tuple(uploadId, fc.constantFrom(...digests, 'sha256:bad', '')).map(([id, d]) => `/v2/${REPO}/blobs/uploads/${id}${d ? `?digest=${d}` : ''}`)),
    call('GET', n.map((q) => `/v2/${REPO}/tags/list${q}`)),
    call('GET', n.map((q) => `/v2/_catalog${q}`)),
    call('GET', fc.tuple(digest, fc.constantFrom('', '?artifactType=x/y')).map(([d, q]) => `/v2/${REPO}/referrers/${d}${q}`)),
    call(['GET', 'HEAD'], fc.constantFrom('/v2/', '/v2')),
  );
}

const request: fc.Arbitrary<Sent> = fc
  .record({
    call: fc.oneof({ arbitrary: apiCalls(), weight: 3 }, { arbitrary: fc.record({ method: fc.constantFrom(...METHODS), path: paths() }), weight: 1 }),
    headers: headers(),
    body,
  })
  .map(({ call, ...r }) => ({ ...r, ...call }))
  .map((r) => {
  const h = { ...r.headers };
  let payload = r.body;
  // A body goes with a length that matches it, or chunked when the request says so (else no body).
  if (h['transfer-encoding'] === 'chunked') {
    payload = Buffer.concat([Buffer.from(payload?.length ? `${payload.length.toString(16)}\r\n` : ''), payload ?? Buffer.alloc(0), Buffer.from(payload?.length ? '\r\n0\r\n\r\n' : '0\r\n\r\n')]);
  } else if (payload !== undefined) {
    delete h['transfer-encoding'];
    h['content-length'] = String(payload.length);
  }
  return { method: r.method, path: r.path, headers: h, body: payload };
});

/** Written whole, then read until the server closes, as "Connection: close" asks. */
function exchange(baseUrl: string, sent: Sent): Promise<RawResponse | undefined> {
  return rawHttp(baseUrl, sent, { halfClose: false });
}

function check(sent: Sent, res: RawResponse | undefined): void {
  const what = `${sent.method} ${sent.path} ${JSON.stringify(sent.headers)}`;
  expect(res, `no answer to ${what}`).toBeDefined();
  const { status } = res!;
  expect(Number.isInteger(status) && status >= 200 && status < 500, `${status} for ${what}: ${res!.body.slice(0, 200)}`).toBe(true);
  if (status < 400) return;
  if (sent.method === 'HEAD') return;
  if (status === 416 && res!.headers['content-range'] !== undefined) {
    expect(res!.headers['content-range']).toMatch(/^bytes \*\/\d+$/);
    return;
  }
  let doc: { errors?: Array<{ code?: unknown; message?: unknown }> };
  try {
    doc = JSON.parse(res!.body);
  } catch {
    throw new Error(`${status} without a JSON error body for ${what}: ${JSON.stringify(res!.body.slice(0, 200))}`);
  }
  expect(Array.isArray(doc.errors) && doc.errors.length > 0, what).toBe(true);
  for (const e of doc.errors!) {
    expect(WIRE_CODES.has(String(e.code)), `code ${String(e.code)} for ${what}`).toBe(true);
    expect(typeof e.message).toBe('string');
  }
}

describe('the HTTP API under generated requests', () => {
  it('regressions found by the property below (run first: it may delete what was pushed)', async () => {
    // CONNECT: Node drops the connection without a word unless the server answers it.
    const connect = await exchange(server.url, { method: 'CONNECT', path: '/v2/', headers: {} });
    expect(connect?.status).toBe(405);
    expect(JSON.parse(connect!.body).errors[0].code).toBe('UNSUPPORTED');
    // The absolute form of a request target is the API path it names.
    const absolute = await exchange(server.url, { method: 'GET', path: `http://${new URL(server.url).host}/v2/${REPO}/tags/list`, headers: {} });
    expect(absolute?.status).toBe(200);
    expect(JSON.parse(absolute!.body)).toEqual({ name: REPO, tags: [TAG] });
  });

  it('answers every request, never with a 5xx, and every 4xx with a spec error code', async () => {
    await fc.assert(
      fc.asyncProperty(request, async (sent) => {
        check(sent, await exchange(server.url, sent));
      }),
      { numRuns: 300 },
    );
    await server.idle();
  });

  it('and still serves a push and pull afterwards', async () => {
    const client = new RegistryClient(server.url, server.auth);
    const after = buildImage();
    await client.pushImage('after/app', 'v1', after);
    const res = await client.req(`/v2/after/app/blobs/${after.config.digest}`);
    expect(res.status).toBe(200);
    expect(res.body.equals(after.config.data)).toBe(true);
  });
});
