// GET/HEAD/DELETE /v2/<name>/blobs/<digest>: headers, ranges, conditional
// requests, and deletes that unlink a blob from one repository only.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { errorCodes, RegistryClient } from '../helpers/client.ts';
import { blobOf, randomBlob } from '../helpers/oci.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { ON_S3 } from '../helpers/storage.ts';

const V2 = 'docker/registry/v2';
const blobDataPath = (digest: string) => `${V2}/blobs/sha256/${digest.slice(7, 9)}/${digest.slice(7)}/data`;
const layerLinkPath = (name: string, digest: string) => `${V2}/repositories/${name}/_layers/sha256/${digest.slice(7)}/link`;

describe('blobs', () => {
  let server: TestServer;
  let client: RegistryClient;
  /**
   * A server that answers blob GETs with the bytes itself: on the filesystem the
   * same one; on s3 (where GETs are redirected to the bucket by default) a second
   * server on the same bucket with storage.redirect disabled.
   */
  let direct: TestServer | undefined;
  let served: RegistryClient;
  const blob = randomBlob(1000);
  const empty = blobOf(Buffer.alloc(0));

  beforeAll(async () => {
    server = await startTestServer();
    client = new RegistryClient(server.url, server.auth);
    await client.pushBlob('blobs/one', blob);
    await client.pushBlob('blobs/one', empty);
    if (ON_S3) direct = await startTestServer({ storage: server.storage, storageExtra: { redirect: { disable: true } } });
    served = direct ? new RegistryClient(direct.url, direct.auth) : client;
  });
  afterAll(async () => {
    await direct?.stop();
    await server.stop();
  });

  it.runIf(ON_S3)('s3: GET answers 307 to a presigned bucket URL, which serves the bytes (HEAD stays with the registry)', async () => {
    const res = await client.req(`/v2/blobs/one/blobs/${blob.digest}`, { redirect: 'manual' });
    expect(res.status).toBe(307);
    expect(res.header('docker-content-digest')).toBe(blob.digest);
    expect(res.header('cache-control')).toBe('no-store');
    expect(res.header('content-length')).toBe('0');
    const location = new URL(res.header('location')!);
    const bucket = server.storage.bucket!;
    expect(location.origin).toBe(new URL(bucket.endpoint).origin);
    expect(location.pathname).toBe(`/${bucket.bucket}/${blobDataPath(blob.digest)}`);
    expect(location.searchParams.get('X-Amz-Signature')).toMatch(/^[0-9a-f]{64}$/);
    // What a client gets after following it (without the registry's credentials).
    const followed = await client.req(`/v2/blobs/one/blobs/${blob.digest}`);
    expect(followed.status).toBe(200);
    expect(followed.body.equals(blob.data)).toBe(true);
    expect(followed.header('content-length')).toBe('1000');
    const ranged = await client.req(`/v2/blobs/one/blobs/${blob.digest}`, { headers: { range: 'bytes=10-19' } });
    expect(ranged.status).toBe(206);
    expect(ranged.header('content-range')).toBe('bytes 10-19/1000');
    expect(ranged.body.equals(blob.data.subarray(10, 20))).toBe(true);
    const zero = await client.req(`/v2/blobs/one/blobs/${empty.digest}`);
    expect(zero.status).toBe(200);
    expect(zero.body.length).toBe(0);
    const head = await client.req(`/v2/blobs/one/blobs/${blob.digest}`, { method: 'HEAD', redirect: 'manual' });
    expect(head.status).toBe(200);
  });

  // On s3 the checks of the registry's own GET answers below go to `direct` (storage.redirect disabled).
  it('GET returns the bytes with Docker-Content-Digest, Content-Length, Accept-Ranges and an ETag', async () => {
    const res = await served.req(`/v2/blobs/one/blobs/${blob.digest}`, { redirect: 'manual' });
    expect(res.status).toBe(200);
    expect(res.body.equals(blob.data)).toBe(true);
    expect(res.header('docker-content-digest')).toBe(blob.digest);
    expect(res.header('content-length')).toBe('1000');
    expect(res.header('accept-ranges')).toBe('bytes');
    expect(res.header('content-type')).toBe('application/octet-stream');
    expect(res.header('etag')).toBe(`"${blob.digest}"`);
    expect(res.header('docker-distribution-api-version')).toBe('registry/2.0');
  });

  it('stores the blob in distribution’s layout: blobs/sha256/<2>/<hex>/data and a _layers link', async () => {
    expect((await server.storage.read(blobDataPath(blob.digest)))?.equals(blob.data)).toBe(true);
    expect((await server.storage.read(layerLinkPath('blobs/one', blob.digest)))?.toString('utf8')).toBe(blob.digest);
  });

  it('HEAD returns the same headers and no body', async () => {
    const res = await client.req(`/v2/blobs/one/blobs/${blob.digest}`, { method: 'HEAD' });
    expect(res.status).toBe(200);
    expect(res.body.length).toBe(0);
    expect(res.header('docker-content-digest')).toBe(blob.digest);
    expect(res.header('content-length')).toBe('1000');
    expect(res.header('accept-ranges')).toBe('bytes');
  });

  it('serves a zero-length blob', async () => {
    const res = await served.req(`/v2/blobs/one/blobs/${empty.digest}`, { redirect: 'manual' });
    expect(res.status).toBe(200);
    expect(res.header('content-length')).toBe('0');
    expect(res.body.length).toBe(0);
    expect(res.header('docker-content-digest')).toBe(empty.digest);
  });

  it('unknown blob: GET 404 BLOB_UNKNOWN with the digest in detail, HEAD 404 without body', async () => {
    const other = randomBlob(10);
    const res = await client.req(`/v2/blobs/one/blobs/${other.digest}`);
    expect(res.status).toBe(404);
    expect(errorCodes(res)).toEqual(['BLOB_UNKNOWN']);
    expect(res.json().errors[0].detail).toEqual({ digest: other.digest });
    const head = await client.req(`/v2/blobs/one/blobs/${other.digest}`, { method: 'HEAD' });
    expect(head.status).toBe(404);
    expect(head.body.length).toBe(0);
  });

  it('a blob stored for one repository is not visible in another', async () => {
    const res = await client.req(`/v2/blobs/elsewhere/blobs/${blob.digest}`);
    expect(res.status).toBe(404);
    expect(errorCodes(res)).toEqual(['BLOB_UNKNOWN']);
  });

  describe('Range requests', () => {
    const get = (range: string, method = 'GET') =>
      served.req(`/v2/blobs/one/blobs/${blob.digest}`, { method, headers: { range }, redirect: 'manual' });

    it('bytes=0-99 → 206 with Content-Range and exactly those bytes', async () => {
      const res = await get('bytes=0-99');
      expect(res.status).toBe(206);
      expect(res.header('content-range')).toBe('bytes 0-99/1000');
      expect(res.header('content-length')).toBe('100');
      expect(res.header('docker-content-digest')).toBe(blob.digest);
      expect(res.body.equals(blob.data.subarray(0, 100))).toBe(true);
    });

    it('an open-ended range bytes=900-', async () => {
      const res = await get('bytes=900-');
      expect(res.status).toBe(206);
      expect(res.header('content-range')).toBe('bytes 900-999/1000');
      expect(res.body.equals(blob.data.subarray(900))).toBe(true);
    });

    it('a single byte, the last byte, and an end past the size (clamped)', async () => {
      const one = await get('bytes=0-0');
      expect(one.status).toBe(206);
      expect(one.header('content-range')).toBe('bytes 0-0/1000');
      expect(one.body.equals(blob.data.subarray(0, 1))).toBe(true);
      const last = await get('bytes=999-999');
      expect(last.header('content-range')).toBe('bytes 999-999/1000');
      expect(last.body.equals(blob.data.subarray(999))).toBe(true);
      const past = await get('bytes=990-5000');
      expect(past.status).toBe(206);
      expect(past.header('content-range')).toBe('bytes 990-999/1000');
      expect(past.body.equals(blob.data.subarray(990))).toBe(true);
    });

    it('suffix ranges: bytes=-10 is the last ten bytes; a suffix longer than the blob is all of it', async () => {
      const tail = await get('bytes=-10');
      expect(tail.status).toBe(206);
      expect(tail.header('content-range')).toBe('bytes 990-999/1000');
      expect(tail.header('content-length')).toBe('10');
      expect(tail.body.equals(blob.data.subarray(990))).toBe(true);
      const all = await get('bytes=-5000');
      expect(all.status).toBe(206);
      expect(all.header('content-range')).toBe('bytes 0-999/1000');
      expect(all.body.equals(blob.data)).toBe(true);
    });

    it('unsatisfiable ranges → 416 with Content-Range: bytes */size and no body', async () => {
      for (const range of ['bytes=1000-', 'bytes=5000-6000', 'bytes=-0']) {
        const res = await get(range);
        expect(res.status, range).toBe(416);
        expect(res.header('content-range'), range).toBe('bytes */1000');
        expect(res.body.length, range).toBe(0);
      }
    });

    it('any range of a zero-length blob is unsatisfiable', async () => {
      const res = await served.req(`/v2/blobs/one/blobs/${empty.digest}`, { headers: { range: 'bytes=0-' }, redirect: 'manual' });
      expect(res.status).toBe(416);
      expect(res.header('content-range')).toBe('bytes */0');
    });

    it('ranges it does not serve (multiple, other units, malformed) get the whole blob with 200', async () => {
      for (const range of ['bytes=0-1,5-6', 'items=0-5', 'bytes=abc', 'bytes=50-10']) {
        const res = await get(range);
        expect(res.status, range).toBe(200);
        expect(res.header('content-range'), range).toBeUndefined();
        expect(res.body.equals(blob.data), range).toBe(true);
      }
    });

    it('HEAD with a Range reports the partial length without a body', async () => {
      const res = await get('bytes=10-19', 'HEAD');
      expect(res.status).toBe(206);
      expect(res.header('content-range')).toBe('bytes 10-19/1000');
      expect(res.header('content-length')).toBe('10');
      expect(res.body.length).toBe(0);
    });
  });

  describe('conditional requests', () => {
    it('If-None-Match with the ETag → 304 with no body', async () => {
      const res = await client.req(`/v2/blobs/one/blobs/${blob.digest}`, {
        headers: { 'if-none-match': `"${blob.digest}"` },
      });
      expect(res.status).toBe(304);
      expect(res.body.length).toBe(0);
      expect(res.header('etag')).toBe(`"${blob.digest}"`);
      expect(res.header('docker-content-digest')).toBe(blob.digest);
    });

    it('If-None-Match with another ETag → 200 with the bytes', async () => {
      const res = await client.req(`/v2/blobs/one/blobs/${blob.digest}`, {
        headers: { 'if-none-match': `"${empty.digest}"` },
      });
      expect(res.status).toBe(200);
      expect(res.body.equals(blob.data)).toBe(true);
    });

    it('If-None-Match on an unknown blob is still 404', async () => {
      const other = randomBlob(5);
      const res = await client.req(`/v2/blobs/one/blobs/${other.digest}`, {
        headers: { 'if-none-match': `"${other.digest}"` },
      });
      expect(res.status).toBe(404);
    });
  });
});

describe('blob DELETE', () => {
  let server: TestServer;
  let client: RegistryClient;

  beforeAll(async () => {
    server = await startTestServer({ deleteEnabled: true });
    client = new RegistryClient(server.url, server.auth);
  });
  afterAll(() => server.stop());

  it('202, then 404 BLOB_UNKNOWN in that repository while another repository sharing the blob still serves it', async () => {
    const blob = randomBlob(300);
    await client.pushBlob('del/a', blob);
    await client.pushBlob('del/b', blob);

    const res = await client.req(`/v2/del/a/blobs/${blob.digest}`, { method: 'DELETE' });
    expect(res.status).toBe(202);
    expect(res.header('content-length')).toBe('0');

    const gone = await client.req(`/v2/del/a/blobs/${blob.digest}`);
    expect(gone.status).toBe(404);
    expect(errorCodes(gone)).toEqual(['BLOB_UNKNOWN']);
    expect((await client.req(`/v2/del/a/blobs/${blob.digest}`, { method: 'HEAD' })).status).toBe(404);

    const other = await client.req(`/v2/del/b/blobs/${blob.digest}`);
    expect(other.status).toBe(200);
    expect(other.body.equals(blob.data)).toBe(true);

    // Only the repository's link went; the shared data is garbage collection's to remove.
    expect(await server.storage.exists(layerLinkPath('del/a', blob.digest))).toBe(false);
    expect(await server.storage.exists(layerLinkPath('del/b', blob.digest))).toBe(true);
    expect(await server.storage.exists(blobDataPath(blob.digest))).toBe(true);
  });

  it('a second DELETE, and a DELETE of a blob the repository never had, are 404 BLOB_UNKNOWN', async () => {
    const blob = randomBlob(30);
    await client.pushBlob('del/c', blob);
    expect((await client.req(`/v2/del/c/blobs/${blob.digest}`, { method: 'DELETE' })).status).toBe(202);
    const again = await client.req(`/v2/del/c/blobs/${blob.digest}`, { method: 'DELETE' });
    expect(again.status).toBe(404);
    expect(errorCodes(again)).toEqual(['BLOB_UNKNOWN']);
    const never = await client.req(`/v2/del/c/blobs/${randomBlob(30).digest}`, { method: 'DELETE' });
    expect(never.status).toBe(404);
    expect(errorCodes(never)).toEqual(['BLOB_UNKNOWN']);
  });

  it('a deleted blob can be pushed again', async () => {
    const blob = randomBlob(40);
    await client.pushBlob('del/d', blob);
    expect((await client.req(`/v2/del/d/blobs/${blob.digest}`, { method: 'DELETE' })).status).toBe(202);
    await client.pushBlob('del/d', blob);
    const res = await client.req(`/v2/del/d/blobs/${blob.digest}`);
    expect(res.status).toBe(200);
    expect(res.body.equals(blob.data)).toBe(true);
  });
});

describe('blob DELETE with storage.delete.enabled: false', () => {
  let server: TestServer;
  let client: RegistryClient;
  beforeAll(async () => {
    server = await startTestServer({ deleteEnabled: false });
    client = new RegistryClient(server.url, server.auth);
  });
  afterAll(() => server.stop());

  it('405 UNSUPPORTED, and the blob stays (nothing in storage changes)', async () => {
    const blob = randomBlob(100);
    await client.pushBlob('nodel/a', blob);
    const before = await server.storage.snapshot();
    const res = await client.req(`/v2/nodel/a/blobs/${blob.digest}`, { method: 'DELETE' });
    expect(res.status).toBe(405);
    expect(errorCodes(res)).toEqual(['UNSUPPORTED']);
    expect(await server.storage.snapshot()).toEqual(before);
    expect((await client.req(`/v2/nodel/a/blobs/${blob.digest}`)).status).toBe(200);
  });
});
