// Hostile and broken requests: path traversal in names, digests and upload
// ids (sent over a raw socket so that nothing normalises them), invalid names
// and digests everywhere they are accepted, bodies shorter than their
// Content-Length, size mismatches. For every one: the right 4xx and error
// code, the data directory exactly as it was (every file and directory,
// nothing ignored), and a server that still serves normal requests.
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { errorCodes, rawHttp, type RawRequest, RegistryClient } from '../helpers/client.ts';
import { blobOf, buildImage, type Image, MT, randomBlob } from '../helpers/oci.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';

describe('bad input', () => {
  let server: TestServer;
  let client: RegistryClient;
  const image: Image = buildImage();
  const REPO = 'ok/app';

  beforeAll(async () => {
    server = await startTestServer();
    client = new RegistryClient(server.url, server.auth);
    // Pushed with uploads, so the repository has every directory a repository gets.
    await client.pushImage(REPO, 'v1', image);
  });
  afterAll(() => server.stop());

  const snapshot = () => server.storage.snapshot();

  /** The server still answers normal requests correctly. */
  async function expectHealthy() {
    const blob = await client.req(`/v2/${REPO}/blobs/${image.layers[0].digest}`);
    expect(blob.status).toBe(200);
    expect(blob.body.equals(image.layers[0].data)).toBe(true);
    const manifest = await client.req(`/v2/${REPO}/manifests/v1`, { headers: { accept: MT.ociManifest } });
    expect(manifest.status).toBe(200);
    expect(manifest.header('docker-content-digest')).toBe(image.manifest.digest);
  }

  /** Runs `request`, then checks that nothing on disk changed and the server is healthy. */
  async function untouched<T>(request: () => Promise<T>): Promise<T> {
    // What earlier (broken, abandoned) requests still clean up must not land in this comparison.
    await server.idle();
    const before = await snapshot();
    const result = await request();
    await server.idle();
    expect(await snapshot()).toEqual(before);
    await expectHealthy();
    return result;
  }

  const raw = (req: RawRequest) =>
    rawHttp(server.url, { ...req, headers: { authorization: server.auth, ...req.headers } });

  async function expectRawError(req: RawRequest, status: number, code: string) {
    const res = await untouched(() => raw(req));
    expect(res, `${req.method} ${req.path}`).toBeDefined();
    expect(res!.status, `${req.method} ${req.path}`).toBe(status);
    if (req.method !== 'HEAD') expect(errorCodes(res!), `${req.method} ${req.path}`).toEqual([code]);
  }

  describe('path traversal (raw request lines, nothing normalised)', () => {
    const digest = () => image.layers[0].digest;
    const cases: Array<[string, () => string, string, number, string]> = [
      ['GET', () => '/v2/../../etc/passwd', '', 400, 'NAME_INVALID'],
      ['GET', () => '/v2/ok/../../../../etc/passwd/tags/list', '', 400, 'NAME_INVALID'],
      ['GET', () => '/v2/ok/./app/tags/list', '', 400, 'NAME_INVALID'],
      ['GET', () => '/v2/ok/app/blobs/sha256:../../x', '', 400, 'NAME_INVALID'],
      ['GET', () => `/v2/ok/app/../app/blobs/${digest()}`, '', 400, 'NAME_INVALID'],
      ['HEAD', () => `/v2/ok/app/../app/blobs/${digest()}`, '', 400, 'NAME_INVALID'],
      ['POST', () => '/v2/../ok/app/blobs/uploads/', '', 400, 'NAME_INVALID'],
      ['PUT', () => '/v2/ok/app/manifests/..', '{}', 400, 'NAME_INVALID'],
      ['DELETE', () => '/v2/ok/app/manifests/../../../_manifests', '', 400, 'NAME_INVALID'],
      ['GET', () => `/v2/a/%2e%2e/b/blobs/${digest()}`, '', 400, 'NAME_INVALID'],
      ['GET', () => '/v2/a/%2E%2E/%2E%2E/etc/tags/list', '', 400, 'NAME_INVALID'],
      ['GET', () => '/v2/ok%2Fapp/tags/list', '', 400, 'NAME_INVALID'],
      ['GET', () => `/v2/ok%2fapp/blobs/${digest()}`, '', 400, 'NAME_INVALID'],
      ['GET', () => '/v2/..%2F..%2Fetc/tags/list', '', 400, 'NAME_INVALID'],
      ['GET', () => '/v2/ok/app%00/tags/list', '', 400, 'NAME_INVALID'],
      ['GET', () => '/v2/ok/app/blobs/sha256:..%2F..%2Fx', '', 400, 'DIGEST_INVALID'],
      ['GET', () => '/v2/ok/app/blobs/%2e%2e', '', 400, 'DIGEST_INVALID'],
      ['DELETE', () => '/v2/ok/app/blobs/sha256%3A..%2F..%2F..%2Fdata', '', 400, 'DIGEST_INVALID'],
      ['GET', () => '/v2/ok/app/manifests/sha256:..%2F..%2Fblobs', '', 400, 'DIGEST_INVALID'],
      ['GET', () => '/v2/ok/app/manifests/..%2F..%2F_manifests', '', 404, 'MANIFEST_UNKNOWN'],
      ['PUT', () => '/v2/ok/app/manifests/%2e%2e', '{}', 400, 'TAG_INVALID'],
      ['GET', () => '/v2/ok/app/referrers/sha256:..%2F..', '', 400, 'DIGEST_INVALID'],
      ['GET', () => '/v2/ok/app/blobs/uploads/%2e%2e', '', 404, 'BLOB_UPLOAD_UNKNOWN'],
      ['PATCH', () => '/v2/ok/app/blobs/uploads/..%2F..%2F_layers', 'xyz', 404, 'BLOB_UPLOAD_UNKNOWN'],
      ['POST', () => '/v2/ok/app/blobs/uploads/?digest=sha256:../../../x', 'x', 400, 'DIGEST_INVALID'],
      ['POST', () => '/v2/ok/app/blobs/uploads/?mount=sha256:..%2F..&from=ok/app', '', 400, 'DIGEST_INVALID'],
      ['POST', () => `/v2/ok/app/blobs/uploads/?mount=${digest()}&from=../../etc`, '', 400, 'NAME_INVALID'],
      ['POST', () => `/v2/ok/app/blobs/uploads/?mount=${digest()}&from=ok%2F..%2Fapp`, '', 400, 'NAME_INVALID'],
    ];
    for (const [method, path, body, status, code] of cases) {
      it(`${method} ${path().replace(/sha256:[0-9a-f]{64}/, 'sha256:<hex>')} → ${status} ${code}`, async () => {
        await expectRawError(
          { method, path: path(), body, headers: { 'content-length': String(Buffer.byteLength(body)) } },
          status,
          code,
        );
      });
    }
  });

  describe('invalid repository names → 400 NAME_INVALID on every endpoint', () => {
    const names = [
      'Upper/app',
      'ok/App',
      'a..b',
      '-lead',
      'trail-',
      '_under',
      'a/_manifests',
      'a/_uploads',
      'a___b',
      'a/.hidden',
      'sp%20ace',
      `${'a'.repeat(256)}`,
      `${'abc/'.repeat(64)}x`,
    ];
    const endpoints = (name: string): Array<[string, string, string?]> => [
      ['GET', `/v2/${name}/tags/list`],
      ['GET', `/v2/${name}/manifests/v1`],
      ['PUT', `/v2/${name}/manifests/v1`, image.manifest.data.toString()],
      ['DELETE', `/v2/${name}/manifests/v1`],
      ['GET', `/v2/${name}/blobs/${image.config.digest}`],
      ['DELETE', `/v2/${name}/blobs/${image.config.digest}`],
      ['POST', `/v2/${name}/blobs/uploads/`],
      ['POST', `/v2/${name}/blobs/uploads/?digest=${image.config.digest}`, image.config.data.toString()],
      ['PATCH', `/v2/${name}/blobs/uploads/00000000-0000-4000-8000-000000000000`, 'x'],
      ['GET', `/v2/${name}/referrers/${image.manifest.digest}`],
    ];
    for (const name of names) {
      it(name.length > 40 ? `${name.slice(0, 40)}… (${name.length} chars)` : name, async () => {
        await untouched(async () => {
          for (const [method, path, body] of endpoints(name)) {
            const res = await client.req(path, {
              method,
              body,
              headers: method === 'PUT' ? { 'content-type': MT.ociManifest } : {},
            });
            expect(res.status, `${method} ${path}`).toBe(400);
            expect(errorCodes(res), `${method} ${path}`).toEqual(['NAME_INVALID']);
          }
        });
      });
    }

    it('the longest valid name (255 characters) is accepted', async () => {
      const name = `${'a'.repeat(127)}/${'b'.repeat(127)}`;
      expect(name.length).toBe(255);
      const blob = randomBlob(5);
      await client.pushBlob(name, blob);
      expect((await client.req(`/v2/${name}/blobs/${blob.digest}`)).status).toBe(200);
    });
  });

  describe('malformed digests → 400 DIGEST_INVALID, never 500', () => {
    const hex = image_hex();
    const bad = [
      `sha256:${hex.toUpperCase()}`,
      `sha256:${hex.slice(1)}`,
      `sha256:${hex}0`,
      'sha256:',
      `SHA256:${hex}`,
      `md5:${hex.slice(0, 32)}`,
      `sha512:${hex}`,
      `sha256:${'g'.repeat(64)}`,
      `:${hex}`,
      `sha256:${hex}:extra`,
      `sha256:${hex.slice(0, 32)}+${hex.slice(33)}`,
      `sha256: ${hex.slice(1)}`,
    ];
    for (const d of bad) {
      it(d.length > 30 ? `${d.slice(0, 30)}… (${d.length})` : d || '(empty)', async () => {
        const e = encodeURIComponent(d);
        await untouched(async () => {
          const requests: Array<[string, string, string?]> = [
            ['GET', `/v2/${REPO}/blobs/${e}`],
            ['HEAD', `/v2/${REPO}/blobs/${e}`],
            ['DELETE', `/v2/${REPO}/blobs/${e}`],
            ['GET', `/v2/${REPO}/manifests/${e}`],
            ['HEAD', `/v2/${REPO}/manifests/${e}`],
            ['DELETE', `/v2/${REPO}/manifests/${e}`],
            ['PUT', `/v2/${REPO}/manifests/${e}`, image.manifest.data.toString()],
            ['GET', `/v2/${REPO}/referrers/${e}`],
            ['POST', `/v2/${REPO}/blobs/uploads/?digest=${e}`, 'data'],
            ['POST', `/v2/${REPO}/blobs/uploads/?mount=${e}&from=${REPO}`],
          ];
          for (const [method, path, body] of requests) {
            const res = await client.req(path, {
              method,
              body,
              headers: method === 'PUT' ? { 'content-type': MT.ociManifest } : {},
            });
            expect(res.status, `${method} ${path}`).toBe(400);
            if (method !== 'HEAD') expect(errorCodes(res), `${method} ${path}`).toEqual(['DIGEST_INVALID']);
          }
        });
      });
    }

    it('on PUT finishing an upload: 400 DIGEST_INVALID and the session is untouched (it can still finish)', async () => {
      const blob = randomBlob(64);
      const post = await client.req(`/v2/${REPO}/blobs/uploads/`, { method: 'POST' });
      const url = client.resolve(post.header('location')!);
      await client.req(url, { method: 'PATCH', body: blob.data });
      await untouched(async () => {
        for (const d of bad) {
          const res = await client.req(`${url}?digest=${encodeURIComponent(d)}`, { method: 'PUT' });
          expect(res.status, d).toBe(400);
          expect(errorCodes(res), d).toEqual(['DIGEST_INVALID']);
        }
      });
      expect((await client.req(`${url}?digest=${blob.digest}`, { method: 'PUT' })).status).toBe(201);
    });
  });

  describe('bodies that do not match their Content-Length (raw socket, then close)', () => {
    /** Waits for the server to finish cleaning up after the broken request, then compares. */
    async function settlesBackTo(before: Record<string, string>) {
      await server.idle();
      await vi.waitFor(async () => expect(await snapshot()).toEqual(before), { timeout: 10_000, interval: 50 });
      await expectHealthy();
    }

    it('monolithic POST with a truncated body: no blob, no session, nothing left on disk', async () => {
      const blob = randomBlob(1000);
      const before = await snapshot();
      const res = await raw({
        method: 'POST',
        path: `/v2/${REPO}/blobs/uploads/?digest=${blob.digest}`,
        headers: { 'content-length': '1000', 'content-type': 'application/octet-stream' },
        body: blob.data.subarray(0, 300),
      });
      if (res) expect(res.status).toBeGreaterThanOrEqual(400);
      await settlesBackTo(before);
      expect((await client.req(`/v2/${REPO}/blobs/${blob.digest}`)).status).toBe(404);
    });

    it('manifest PUT with a truncated body: nothing stored', async () => {
      const other = buildImage({ files: [{ f: 'x' }] });
      await client.pushBlob(REPO, other.config);
      for (const l of other.layers) await client.pushBlob(REPO, l);
      const before = await snapshot();
      const res = await raw({
        method: 'PUT',
        path: `/v2/${REPO}/manifests/truncated`,
        headers: { 'content-type': MT.ociManifest, 'content-length': String(other.manifest.size + 50) },
        body: other.manifest.data,
      });
      if (res) expect(res.status).toBeGreaterThanOrEqual(400);
      await settlesBackTo(before);
      expect((await client.req(`/v2/${REPO}/manifests/truncated`)).status).toBe(404);
    });

    it('manifest PUT with a body longer than Content-Length: refused (400), nothing stored', async () => {
      // Node's parser reads the surplus as a second, malformed request and answers 400 itself.
      const before = await snapshot();
      const res = await raw({
        method: 'PUT',
        path: `/v2/${REPO}/manifests/overlong`,
        headers: { 'content-type': MT.ociManifest, 'content-length': '10' },
        body: image.manifest.data,
      });
      expect(res).toBeDefined();
      expect(res!.status).toBe(400);
      await settlesBackTo(before);
      expect((await client.req(`/v2/${REPO}/manifests/overlong`)).status).toBe(404);
    });

    it('request headers over 16 KB → 431 Request Header Fields Too Large, with a spec error body', async () => {
      const res = await raw({ method: 'GET', path: '/v2/', headers: { 'x-padding': 'a'.repeat(20 * 1024) } });
      expect(res).toBeDefined();
      expect(res!.status).toBe(431);
      expect(res!.headers.connection).toBe('close');
      expect(errorCodes({ body: res!.body }).length).toBe(1);
      // Headers under the limit are still served.
      expect((await raw({ method: 'GET', path: '/v2/', headers: { 'x-padding': 'a'.repeat(8 * 1024) } }))!.status).toBe(200);
    });

    it('a non-numeric Content-Length is refused before anything is written', async () => {
      const before = await snapshot();
      const res = await raw({
        method: 'POST',
        path: `/v2/${REPO}/blobs/uploads/?digest=${randomBlob(4).digest}`,
        headers: { 'content-length': 'abc' },
        body: 'abcd',
      });
      expect(res).toBeDefined();
      expect(res!.status).toBe(400);
      await settlesBackTo(before);
    });

    it('PATCH with a truncated body keeps exactly the bytes received; the client resumes from the reported Range', async () => {
      const blob = randomBlob(4000);
      const post = await client.req(`/v2/${REPO}/blobs/uploads/`, { method: 'POST' });
      const location = post.header('location')!;
      await raw({
        method: 'PATCH',
        path: location,
        headers: { 'content-length': '4000', 'content-range': '0-3999' },
        body: blob.data.subarray(0, 1500),
      });
      // Whatever reached the session is a prefix of what was sent; the Range says how much.
      // An empty PATCH waits for the session's lock, so it reports the offset after the
      // broken request has been fully dealt with.
      const status = await client.req(location, { method: 'PATCH', body: '' });
      expect(status.status).toBe(202);
      const offset = Number(/^0-(\d+)$/.exec(status.header('range')!)![1]) + 1;
      expect(offset).toBeLessThanOrEqual(1500);
      if (offset === 1) {
        // "0-0" means zero or one byte; distribution's format cannot tell them apart. Restart cleanly.
        await client.req(location, { method: 'DELETE' });
        await client.pushBlob(REPO, blob);
      } else {
        const rest = await client.req(`${client.resolve(location)}?digest=${blob.digest}`, {
          method: 'PUT',
          headers: { 'content-range': `${offset}-3999`, 'content-length': String(4000 - offset) },
          body: blob.data.subarray(offset),
        });
        expect(rest.status).toBe(201);
      }
      const got = await client.req(`/v2/${REPO}/blobs/${blob.digest}`);
      expect(got.body.equals(blob.data)).toBe(true);
    });

    it('a streamed (chunked) body cut off mid-way commits nothing', async () => {
      const blob = randomBlob(3000);
      const before = await snapshot();
      const res = await raw({
        method: 'POST',
        path: `/v2/${REPO}/blobs/uploads/?digest=${blob.digest}`,
        headers: { 'transfer-encoding': 'chunked' },
        // One complete 1000-byte chunk, then a chunk that promises more than is sent.
        body: Buffer.concat([
          Buffer.from('3e8\r\n'),
          blob.data.subarray(0, 1000),
          Buffer.from('\r\n7d0\r\n'),
          blob.data.subarray(1000, 1500),
        ]),
      });
      if (res) expect(res.status).toBeGreaterThanOrEqual(400);
      await settlesBackTo(before);
      expect((await client.req(`/v2/${REPO}/blobs/${blob.digest}`)).status).toBe(404);
    });
  });

  describe('size mismatches', () => {
    it('monolithic POST whose bytes are complete but do not match the digest', async () => {
      const blob = randomBlob(100);
      const res = await untouched(() =>
        client.req(`/v2/${REPO}/blobs/uploads/?digest=${randomBlob(100).digest}`, { method: 'POST', body: blob.data }),
      );
      expect(res.status).toBe(400);
      expect(errorCodes(res)).toEqual(['DIGEST_INVALID']);
    });

    it('a manifest descriptor whose size differs from the stored blob → 400 MANIFEST_INVALID', async () => {
      for (const delta of [-1, 1, 1000]) {
        const doc = JSON.parse(image.manifest.data.toString());
        doc.config.size += delta;
        const res = await untouched(() =>
          client.req(`/v2/${REPO}/manifests/sized`, {
            method: 'PUT',
            headers: { 'content-type': MT.ociManifest },
            body: JSON.stringify(doc),
          }),
        );
        expect(res.status).toBe(400);
        expect(errorCodes(res)).toEqual(['MANIFEST_INVALID']);
      }
    });

    it('PATCH: Content-Range length ≠ Content-Length, malformed or reversed Content-Range → 416, session untouched', async () => {
      const post = await client.req(`/v2/${REPO}/blobs/uploads/`, { method: 'POST' });
      const url = client.resolve(post.header('location')!);
      await client.req(url, { method: 'PATCH', headers: { 'content-range': '0-9' }, body: Buffer.alloc(10, 7) });
      await untouched(async () => {
        for (const [range, body] of [
          ['10-109', Buffer.alloc(50)],
          ['10-19', Buffer.alloc(11)],
          ['garbage', Buffer.alloc(10)],
          ['19-10', Buffer.alloc(10)],
          ['bytes=a-b', Buffer.alloc(10)],
          ['-5', Buffer.alloc(5)],
          ['0-9', Buffer.alloc(10)],
          ['11-20', Buffer.alloc(10)],
        ] as const) {
          const res = await client.req(url, { method: 'PATCH', headers: { 'content-range': range }, body });
          expect(res.status, range).toBe(416);
          expect(errorCodes(res), range).toEqual(['BLOB_UPLOAD_INVALID']);
        }
      });
      expect((await client.req(url)).header('range')).toBe('0-9');
      await client.req(url, { method: 'DELETE' });
    });

    it('a blob as big as a manifest may be is fine as a blob (no manifest limit on blobs)', async () => {
      const blob = randomBlob(5 * 1024 * 1024);
      await client.pushBlob(REPO, blob);
      const res = await client.req(`/v2/${REPO}/blobs/${blob.digest}`, { method: 'HEAD' });
      expect(res.header('content-length')).toBe(String(blob.size));
    });
  });

  describe('a refused push into a repository that does not exist yet', () => {
    it('leaves no file behind and does not create the repository', async () => {
      const before = await snapshot();
      const blob = randomBlob(100);
      const res = await client.req(`/v2/brand/new/blobs/uploads/?digest=${randomBlob(100).digest}`, {
        method: 'POST',
        body: blob.data,
      });
      expect(res.status).toBe(400);
      expect(errorCodes(res)).toEqual(['DIGEST_INVALID']);
      const streamed = await client.req(`/v2/brand/new/blobs/uploads/?digest=${randomBlob(100).digest}`, {
        method: 'POST',
        body: Readable.from([blob.data]),
      });
      expect(streamed.status).toBe(400);
      const after = await snapshot();
      // Known deviation: the upload session's directories stay behind, empty
      // (repositories/brand/new/_uploads). No file is left, and the API does not
      // see a repository.
      for (const [k, v] of Object.entries(before)) expect(after[k], k).toBe(v);
      const added = Object.keys(after).filter((k) => !(k in before));
      for (const k of added) {
        expect(after[k], k).toBe('dir');
        expect(k.startsWith('docker/registry/v2/repositories/brand'), k).toBe(true);
      }
      expect(errorCodes(await client.req('/v2/brand/new/tags/list'))).toEqual(['NAME_UNKNOWN']);
      expect((await client.req('/v2/_catalog')).json().repositories).not.toContain('brand/new');
      await expectHealthy();
    });
  });

  describe('methods the API does not have', () => {
    it('→ 405 UNSUPPORTED, nothing changes', async () => {
      await untouched(async () => {
        for (const [method, path] of [
          ['POST', `/v2/${REPO}/manifests/v1`],
          ['PATCH', `/v2/${REPO}/manifests/v1`],
          ['PUT', `/v2/${REPO}/blobs/${image.config.digest}`],
          ['POST', `/v2/${REPO}/tags/list`],
          ['DELETE', '/v2/_catalog'],
          ['PUT', '/v2/'],
        ]) {
          const res = await client.req(path, { method, body: method === 'GET' ? undefined : 'x' });
          expect(res.status, `${method} ${path}`).toBe(405);
          expect(errorCodes(res), `${method} ${path}`).toEqual(['UNSUPPORTED']);
        }
      });
    });

    it('paths outside the API → 404 NAME_UNKNOWN', async () => {
      await untouched(async () => {
        for (const p of ['/', '/v1/', '/v2/ok/app', '/v2/ok/app/blobs', '/etc/passwd']) {
          const res = await client.req(p);
          expect(res.status, p).toBe(404);
          expect(errorCodes(res), p).toEqual(['NAME_UNKNOWN']);
        }
      });
    });
  });

  function image_hex(): string {
    return blobOf('fixed').digest.slice(7);
  }
});
