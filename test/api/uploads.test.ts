// Blob uploads: monolithic POST, POST+PUT, chunked PATCH with Content-Range,
// streamed PATCH (chunked transfer encoding), status, cancel, digest checks
// and cross-repository mounts.
import { randomUUID } from 'node:crypto';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { errorCodes, RegistryClient, type Response } from '../helpers/client.ts';
import { blobOf, randomBlob } from '../helpers/oci.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';

const V2 = 'docker/registry/v2';
const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

describe('blob uploads', () => {
  let server: TestServer;
  let client: RegistryClient;

  beforeAll(async () => {
    server = await startTestServer();
    client = new RegistryClient(server.url, server.auth);
  });
  afterAll(() => server.stop());

  const blobDir = (digest: string) => `${V2}/blobs/sha256/${digest.slice(7, 9)}/${digest.slice(7)}`;
  const blobPath = (digest: string) => `${blobDir(digest)}/data`;
  /** The upload sessions stored for a repository (their ids). */
  const sessions = (name: string) => server.storage.list(`${V2}/repositories/${name}/_uploads`);
  const snapshot = () => server.storage.snapshot();

  /** POST to start a session; returns the absolute upload URL. */
  async function start(name: string): Promise<{ url: string; res: Response }> {
    const res = await client.req(`/v2/${name}/blobs/uploads/`, { method: 'POST' });
    expect(res.status).toBe(202);
    return { url: client.resolve(res.header('location')!), res };
  }

  async function expectBlob(name: string, blob: { digest: string; data: Buffer }) {
    const res = await client.req(`/v2/${name}/blobs/${blob.digest}`);
    expect(res.status).toBe(200);
    expect(res.body.equals(blob.data)).toBe(true);
  }

  it('monolithic POST ?digest= → 201 with Location and Docker-Content-Digest; no session is left behind', async () => {
    const blob = randomBlob(5000);
    const res = await client.req(`/v2/up/mono/blobs/uploads/?digest=${blob.digest}`, {
      method: 'POST',
      headers: { 'content-type': 'application/octet-stream' },
      body: blob.data,
    });
    expect(res.status).toBe(201);
    expect(res.header('location')).toBe(`/v2/up/mono/blobs/${blob.digest}`);
    expect(res.header('docker-content-digest')).toBe(blob.digest);
    await expectBlob('up/mono', blob);
    expect(await sessions('up/mono')).toEqual([]);
  });

  it('monolithic POST of a zero-length blob', async () => {
    const blob = blobOf(Buffer.alloc(0));
    const res = await client.req(`/v2/up/mono/blobs/uploads/?digest=${blob.digest}`, { method: 'POST', body: '' });
    expect(res.status).toBe(201);
    const get = await client.req(`/v2/up/mono/blobs/${blob.digest}`);
    expect(get.status).toBe(200);
    expect(get.header('content-length')).toBe('0');
  });

  it('POST starts a session (202, Location, Docker-Upload-UUID, Range 0-0); PUT ?digest= with the body finishes it', async () => {
    const blob = randomBlob(2048);
    const { res, url } = await start('up/two-step');
    const uuid = res.header('docker-upload-uuid')!;
    expect(uuid).toMatch(UUID_RE);
    expect(res.header('location')).toBe(`/v2/up/two-step/blobs/uploads/${uuid}`);
    expect(res.header('range')).toBe('0-0');
    expect(res.header('content-length')).toBe('0');
    expect(await sessions('up/two-step')).toEqual([uuid]);

    const put = await client.req(`${url}?digest=${blob.digest}`, {
      method: 'PUT',
      headers: { 'content-type': 'application/octet-stream' },
      body: blob.data,
    });
    expect(put.status).toBe(201);
    expect(put.header('location')).toBe(`/v2/up/two-step/blobs/${blob.digest}`);
    expect(put.header('docker-content-digest')).toBe(blob.digest);
    await expectBlob('up/two-step', blob);
    expect(await server.storage.exists(blobPath(blob.digest))).toBe(true);
    expect(await sessions('up/two-step')).toEqual([]);
  });

  it('chunked PATCH with Content-Range: Range grows as 0-<last byte>, GET reports it, PUT without body commits', async () => {
    const blob = randomBlob(3000);
    const { url } = await start('up/chunked');
    const parts = [blob.data.subarray(0, 1000), blob.data.subarray(1000, 2500), blob.data.subarray(2500)];
    let offset = 0;
    let location = url;
    for (const part of parts) {
      const res = await client.req(location, {
        method: 'PATCH',
        headers: {
          'content-type': 'application/octet-stream',
          'content-range': `${offset}-${offset + part.length - 1}`,
          'content-length': String(part.length),
        },
        body: part,
      });
      expect(res.status).toBe(202);
      offset += part.length;
      expect(res.header('range')).toBe(`0-${offset - 1}`);
      expect(res.header('docker-upload-uuid')).toMatch(UUID_RE);
      expect(res.header('location')).toMatch(/^\/v2\/up\/chunked\/blobs\/uploads\/[0-9a-f-]{36}$/);
      expect(res.header('content-length')).toBe('0');
      location = client.resolve(res.header('location')!);

      const status = await client.req(location);
      expect(status.status).toBe(204);
      expect(status.header('range')).toBe(`0-${offset - 1}`);
      expect(status.header('location')).toBe(res.header('location'));
      expect(status.header('docker-upload-uuid')).toBe(res.header('docker-upload-uuid'));
    }
    const put = await client.req(`${location}?digest=${blob.digest}`, { method: 'PUT' });
    expect(put.status).toBe(201);
    expect(put.header('docker-content-digest')).toBe(blob.digest);
    await expectBlob('up/chunked', blob);
  });

  it('accepts the RFC 9110 form of Content-Range (bytes a-b/total) and a last chunk on the PUT', async () => {
    const blob = randomBlob(200);
    const { url } = await start('up/chunked');
    const first = await client.req(url, {
      method: 'PATCH',
      headers: { 'content-range': 'bytes 0-99/200', 'content-length': '100' },
      body: blob.data.subarray(0, 100),
    });
    expect(first.status).toBe(202);
    expect(first.header('range')).toBe('0-99');
    const put = await client.req(`${url}?digest=${blob.digest}`, {
      method: 'PUT',
      headers: { 'content-range': '100-199', 'content-length': '100' },
      body: blob.data.subarray(100),
    });
    expect(put.status).toBe(201);
    await expectBlob('up/chunked', blob);
  });

  it('an out-of-order chunk → 416 BLOB_UPLOAD_INVALID and the session keeps its bytes and can go on', async () => {
    const blob = randomBlob(300);
    const { url } = await start('up/order');
    const first = await client.req(url, {
      method: 'PATCH',
      headers: { 'content-range': '0-99', 'content-length': '100' },
      body: blob.data.subarray(0, 100),
    });
    expect(first.status).toBe(202);
    const before = await snapshot();
    for (const range of ['150-249', '0-99', '50-149']) {
      const [a, b] = range.split('-').map(Number);
      const res = await client.req(url, {
        method: 'PATCH',
        headers: { 'content-range': range, 'content-length': String(b - a + 1) },
        body: blob.data.subarray(a, b + 1),
      });
      expect(res.status, range).toBe(416);
      expect(errorCodes(res), range).toEqual(['BLOB_UPLOAD_INVALID']);
    }
    expect(await snapshot()).toEqual(before);
    const status = await client.req(url);
    expect(status.header('range')).toBe('0-99');
    const rest = await client.req(`${url}?digest=${blob.digest}`, {
      method: 'PUT',
      headers: { 'content-range': '100-299', 'content-length': '200' },
      body: blob.data.subarray(100),
    });
    expect(rest.status).toBe(201);
    await expectBlob('up/order', blob);
  });

  it('a Content-Range whose length disagrees with Content-Length → 416 BLOB_UPLOAD_INVALID, nothing appended', async () => {
    const { url } = await start('up/order');
    const before = await snapshot();
    const res = await client.req(url, {
      method: 'PATCH',
      headers: { 'content-range': '0-49', 'content-length': '100' },
      body: Buffer.alloc(100, 1),
    });
    expect(res.status).toBe(416);
    expect(errorCodes(res)).toEqual(['BLOB_UPLOAD_INVALID']);
    expect(await snapshot()).toEqual(before);
    expect((await client.req(url)).header('range')).toBe('0-0');
  });

  it('GET on a fresh session → 204 with Range 0-0, Location and Docker-Upload-UUID', async () => {
    const { url, res } = await start('up/status');
    const status = await client.req(url);
    expect(status.status).toBe(204);
    expect(status.header('range')).toBe('0-0');
    expect(status.header('location')).toBe(res.header('location'));
    expect(status.header('docker-upload-uuid')).toBe(res.header('docker-upload-uuid'));
    expect(status.body.length).toBe(0);
  });

  it('DELETE cancels a session (204); afterwards GET, PATCH, PUT and DELETE are 404 BLOB_UPLOAD_UNKNOWN', async () => {
    const blob = randomBlob(100);
    const { url, res } = await start('up/cancel');
    await client.req(url, { method: 'PATCH', headers: { 'content-range': '0-49' }, body: blob.data.subarray(0, 50) });
    expect(await sessions('up/cancel')).toEqual([res.header('docker-upload-uuid')]);
    const del = await client.req(url, { method: 'DELETE' });
    expect(del.status).toBe(204);
    expect(await sessions('up/cancel')).toEqual([]);
    for (const [method, body] of [
      ['GET', undefined],
      ['PATCH', blob.data.subarray(50)],
      ['PUT', undefined],
      ['DELETE', undefined],
    ] as const) {
      const target = method === 'PUT' ? `${url}?digest=${blob.digest}` : url;
      const r = await client.req(target, { method, body });
      expect(r.status, method).toBe(404);
      expect(errorCodes(r), method).toEqual(['BLOB_UPLOAD_UNKNOWN']);
    }
    expect((await client.req(`/v2/up/cancel/blobs/${blob.digest}`)).status).toBe(404);
  });

  it('a streamed PATCH without Content-Range or Content-Length (chunked transfer encoding)', async () => {
    const blob = randomBlob(256 * 1024);
    const { url } = await start('up/stream');
    const pieces = [];
    for (let i = 0; i < blob.data.length; i += 10_000) pieces.push(blob.data.subarray(i, i + 10_000));
    const res = await client.req(url, {
      method: 'PATCH',
      headers: { 'content-type': 'application/octet-stream' },
      body: Readable.from(pieces),
    });
    expect(res.status).toBe(202);
    expect(res.header('range')).toBe(`0-${blob.size - 1}`);
    const put = await client.req(`${client.resolve(res.header('location')!)}?digest=${blob.digest}`, { method: 'PUT' });
    expect(put.status).toBe(201);
    await expectBlob('up/stream', blob);
  });

  it('two streamed PATCHes in a row append', async () => {
    const blob = randomBlob(5000);
    const { url } = await start('up/stream');
    const a = await client.req(url, { method: 'PATCH', body: Readable.from([blob.data.subarray(0, 1234)]) });
    expect(a.header('range')).toBe('0-1233');
    const b = await client.req(url, { method: 'PATCH', body: Readable.from([blob.data.subarray(1234)]) });
    expect(b.header('range')).toBe('0-4999');
    expect((await client.req(`${url}?digest=${blob.digest}`, { method: 'PUT' })).status).toBe(201);
    await expectBlob('up/stream', blob);
  });

  it('PUT with the wrong digest → 400 DIGEST_INVALID; no blob under either digest and no session or data left', async () => {
    const blob = randomBlob(500);
    const claimed = randomBlob(500);
    const before = await snapshot();
    const { url } = await start('up/bad-digest');
    await client.req(url, { method: 'PATCH', headers: { 'content-range': '0-499' }, body: blob.data });
    const put = await client.req(`${url}?digest=${claimed.digest}`, { method: 'PUT' });
    expect(put.status).toBe(400);
    expect(errorCodes(put)).toEqual(['DIGEST_INVALID']);
    for (const d of [blob.digest, claimed.digest]) {
      expect((await client.req(`/v2/up/bad-digest/blobs/${d}`)).status).toBe(404);
      expect(await server.storage.exists(blobPath(d))).toBe(false);
    }
    // The failed session is dropped, as distribution does.
    const status = await client.req(url);
    expect(status.status).toBe(404);
    expect(errorCodes(status)).toEqual(['BLOB_UPLOAD_UNKNOWN']);
    const after = await snapshot();
    // The only trace of the repository is the (empty) _uploads directory the session lived in
    // (on the filesystem; a bucket has no empty directories).
    const added = Object.keys(after).filter((k) => !(k in before));
    expect(added.every((k) => after[k] === 'dir')).toBe(true);
    expect(Object.entries(before).every(([k, v]) => after[k] === v)).toBe(true);
  });

  it('monolithic POST with the wrong digest → 400 DIGEST_INVALID and no blob', async () => {
    const blob = randomBlob(100);
    await client.pushBlob('up/mono', randomBlob(5)); // the repository exists already
    const before = await snapshot();
    const res = await client.req(`/v2/up/mono/blobs/uploads/?digest=${randomBlob(100).digest}`, {
      method: 'POST',
      body: blob.data,
    });
    expect(res.status).toBe(400);
    expect(errorCodes(res)).toEqual(['DIGEST_INVALID']);
    expect(await snapshot()).toEqual(before);
    expect((await client.req(`/v2/up/mono/blobs/${blob.digest}`)).status).toBe(404);
  });

  it('PUT without ?digest= → 400 DIGEST_INVALID and the session survives', async () => {
    const { url } = await start('up/nodigest');
    const res = await client.req(url, { method: 'PUT' });
    expect(res.status).toBe(400);
    expect(errorCodes(res)).toEqual(['DIGEST_INVALID']);
    expect((await client.req(url)).status).toBe(204);
  });

  it('pushing a blob that is already stored elsewhere links it without a second copy', async () => {
    const blob = randomBlob(700);
    await client.pushBlob('up/dedupe-a', blob);
    await client.pushBlob('up/dedupe-b', blob);
    await expectBlob('up/dedupe-a', blob);
    await expectBlob('up/dedupe-b', blob);
    expect(await server.storage.list(blobDir(blob.digest))).toEqual(['data']);
  });

  describe('cross-repository mount', () => {
    it('?mount=&from= for a blob in `from` → 201 with Location and Docker-Content-Digest, no upload needed', async () => {
      const blob = randomBlob(400);
      await client.pushBlob('mount/src', blob);
      const res = await client.req(`/v2/mount/dst/blobs/uploads/?mount=${blob.digest}&from=mount/src`, { method: 'POST' });
      expect(res.status).toBe(201);
      expect(res.header('location')).toBe(`/v2/mount/dst/blobs/${blob.digest}`);
      expect(res.header('docker-content-digest')).toBe(blob.digest);
      expect(res.header('docker-upload-uuid')).toBeUndefined();
      await expectBlob('mount/dst', blob);
      expect(await sessions('mount/dst')).toEqual([]);
    });

    it('a blob that `from` does not have → 202 with an upload session that works', async () => {
      const blob = randomBlob(400);
      await client.pushBlob('mount/other', blob); // stored, but not in mount/src
      const res = await client.req(`/v2/mount/dst2/blobs/uploads/?mount=${blob.digest}&from=mount/src`, {
        method: 'POST',
      });
      expect(res.status).toBe(202);
      expect(res.header('docker-upload-uuid')).toMatch(UUID_RE);
      expect(res.header('location')).toBe(`/v2/mount/dst2/blobs/uploads/${res.header('docker-upload-uuid')}`);
      expect((await client.req(`/v2/mount/dst2/blobs/${blob.digest}`)).status).toBe(404);
      const put = await client.req(`${client.resolve(res.header('location')!)}?digest=${blob.digest}`, {
        method: 'PUT',
        body: blob.data,
      });
      expect(put.status).toBe(201);
      await expectBlob('mount/dst2', blob);
    });

    it('from a repository that does not exist → 202 upload session', async () => {
      const blob = randomBlob(10);
      const res = await client.req(`/v2/mount/dst3/blobs/uploads/?mount=${blob.digest}&from=no/such/repo`, {
        method: 'POST',
      });
      expect(res.status).toBe(202);
      expect(res.header('docker-upload-uuid')).toMatch(UUID_RE);
    });

    it('a blob deleted from `from` cannot be mounted from it', async () => {
      const blob = randomBlob(50);
      await client.pushBlob('mount/src2', blob);
      expect((await client.req(`/v2/mount/src2/blobs/${blob.digest}`, { method: 'DELETE' })).status).toBe(202);
      const res = await client.req(`/v2/mount/dst4/blobs/uploads/?mount=${blob.digest}&from=mount/src2`, {
        method: 'POST',
      });
      expect(res.status).toBe(202);
    });
  });

  describe('unknown and garbage upload ids → 404 BLOB_UPLOAD_UNKNOWN', () => {
    const ids = [randomUUID(), 'not-a-uuid', randomUUID().toUpperCase(), 'x'.repeat(300), '%2E%2E%2F', '..%2F..%2Fetc'] // raw dot segments: bad-input.test.ts;
    for (const id of ids) {
      it(`id ${id.slice(0, 40)}`, async () => {
        await client.pushBlob('ids/repo', randomBlob(3));
        const before = await snapshot();
        const digest = randomBlob(3).digest;
        for (const [method, suffix, body] of [
          ['GET', '', undefined],
          ['PATCH', '', 'abc'],
          ['PUT', `?digest=${digest}`, 'abc'],
          ['DELETE', '', undefined],
        ] as const) {
          const res = await client.req(`/v2/ids/repo/blobs/uploads/${id}${suffix}`, { method, body });
          expect(res.status, `${method} ${id}`).toBe(404);
          expect(errorCodes(res), `${method} ${id}`).toEqual(['BLOB_UPLOAD_UNKNOWN']);
        }
        expect(await snapshot()).toEqual(before);
      });
    }

    it('a session is bound to its repository: using it under another name is 404', async () => {
      const { url, res } = await start('ids/owner');
      const id = res.header('docker-upload-uuid')!;
      const before = await snapshot();
      const other = await client.req(`/v2/ids/thief/blobs/uploads/${id}`, { method: 'PATCH', body: 'stolen' });
      expect(other.status).toBe(404);
      expect(errorCodes(other)).toEqual(['BLOB_UPLOAD_UNKNOWN']);
      expect(await snapshot()).toEqual(before);
      expect((await client.req(url)).status).toBe(204);
    });
  });
});
