// Crash safety: SIGKILL the server (as a child process) in the middle of a
// 200 MB blob push, restart it on the same data directory (or bucket, on the
// s3 driver: there an upload is stored as part objects), and show that no
// partial blob is visible under its digest, that everything pushed before
// still pulls intact, and that the push can be retried (or resumed) to a blob
// that reads back with the right digest.
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync, rmSync } from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { RegistryClient } from '../helpers/client.ts';
import { ContainersClients, fetchBlobDigest, listTags, verifyPull } from '../helpers/clients.ts';
import { buildImage, type Image, writeOciLayout } from '../helpers/oci.ts';
import { basicAuth, makeTempDir, type ServerProcess, sleep, startServerProcess } from '../helpers/process.ts';
import { createTestStorage, type TestStorage } from '../helpers/storage.ts';

const USER = 'carol';
const PASSWORD = 'carol-crash-pw';
const AUTH = basicAuth(USER, PASSWORD);
const USERS = { [USER]: PASSWORD };

const MiB = 1024 * 1024;
const TOTAL = 200 * MiB;
const CHUNK = 4 * MiB;
/** The client sends this much, then stops and waits for the kill. */
const SENT_BEFORE_KILL = 120 * MiB;
/** The kill comes once the server has written at least this much of the upload. */
const WRITTEN_BEFORE_KILL = 64 * MiB;

/** A big blob made on the fly: 4 MiB of random bytes, each chunk stamped with its seed and index. */
class BigBlob {
  private readonly base = randomBytes(CHUNK);
  readonly size = TOTAL;
  readonly digest: string;
  readonly hex: string;

  constructor(private readonly seed: number) {
    const hash = createHash('sha256');
    for (const chunk of this.chunks()) hash.update(chunk);
    this.hex = hash.digest('hex');
    this.digest = `sha256:${this.hex}`;
  }

  /** The bytes from `offset` on, in chunks of at most 4 MiB. */
  *chunks(offset = 0): Generator<Buffer> {
    for (let i = Math.floor(offset / CHUNK); i * CHUNK < TOTAL; i++) {
      const chunk = Buffer.from(this.base);
      chunk.writeUInt32BE(this.seed, 0);
      chunk.writeUInt32BE(i, 4);
      const start = Math.max(offset - i * CHUNK, 0);
      yield start > 0 ? chunk.subarray(start) : chunk;
    }
  }
}

/**
 * A request whose body is streamed over a raw socket and stopped part-way:
 * the first `stopAfter` bytes go out (respecting backpressure), then nothing
 * more, as if the client were still uploading when the server dies.
 */
async function startPartialUpload(
  baseUrl: string,
  method: string,
  requestPath: string,
  headers: Record<string, string>,
  body: Iterable<Buffer>,
  stopAfter: number,
  chunked: boolean,
): Promise<{ closed: Promise<string> }> {
  const url = new URL(baseUrl);
  const socket = net.connect({ host: url.hostname, port: Number(url.port) });
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  let received = '';
  socket.on('data', (c: Buffer) => {
    received += c.toString('latin1');
  });
  // After the kill the socket is reset: that is the expected end.
  const closed = new Promise<string>((resolve) => {
    socket.on('error', () => {});
    socket.on('close', () => resolve(received));
  });
  const write = (data: Buffer | string) =>
    new Promise<void>((resolve, reject) => {
      if (socket.write(data)) resolve();
      else {
        const onDrain = () => {
          socket.off('close', onClose);
          resolve();
        };
        const onClose = () => reject(new Error('socket closed while sending'));
        socket.once('drain', onDrain);
        socket.once('close', onClose);
      }
    });
  const head = `${method} ${requestPath} HTTP/1.1\r\n${Object.entries({ host: url.host, ...headers })
    .map(([k, v]) => `${k}: ${v}\r\n`)
    .join('')}\r\n`;
  await write(head);
  let sent = 0;
  for (const chunk of body) {
    const piece = chunk.subarray(0, Math.min(chunk.length, stopAfter - sent));
    await write(chunked ? Buffer.concat([Buffer.from(`${piece.length.toString(16)}\r\n`), piece, Buffer.from('\r\n')]) : piece);
    sent += piece.length;
    if (sent >= stopAfter) break;
  }
  return { closed };
}

const V2 = 'docker/registry/v2';
const blobDataKey = (hex: string) => `${V2}/blobs/sha256/${hex.slice(0, 2)}/${hex}/data`;

/** data of the upload sessions of `repo` → size (on s3: of the parts stored so far). */
async function uploadFiles(storage: TestStorage, repo: string): Promise<Map<string, number>> {
  const dir = `${V2}/repositories/${repo}/_uploads`;
  const out = new Map<string, number>();
  for (const id of await storage.list(dir)) {
    const size = await storage.size(`${dir}/${id}/data`);
    if (size !== undefined) out.set(id, size);
  }
  return out;
}

async function waitForUploadBytes(storage: TestStorage, repo: string, atLeast: number, timeoutMs = 60_000): Promise<[string, number]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    for (const [id, size] of await uploadFiles(storage, repo)) if (size >= atLeast) return [id, size];
    if (Date.now() > deadline) throw new Error(`no upload in ${repo} reached ${atLeast} bytes: ${[...(await uploadFiles(storage, repo))]}`);
    await sleep(50);
  }
}

/** Every blob under blobs/ holds exactly the bytes its path names. */
async function expectEveryBlobMatchesItsPath(storage: TestStorage): Promise<number> {
  const root = `${V2}/blobs/sha256`;
  let count = 0;
  for (const prefix of await storage.list(root)) {
    for (const entry of await storage.list(`${root}/${prefix}`)) {
      expect(entry.startsWith(prefix), `${prefix}/${entry}`).toBe(true);
      const files = await storage.list(`${root}/${prefix}/${entry}`);
      expect(files, `${prefix}/${entry}`).toEqual(['data']);
      expect(await storage.sha256(`${root}/${prefix}/${entry}/data`)).toBe(entry);
      count++;
    }
  }
  expect(count).toBeGreaterThan(0);
  return count;
}

// Each test moves several hundred MB through the server: a generous bound for slow CI disks.
describe('crash safety: SIGKILL during a 200 MB blob push', { timeout: 180_000 }, () => {
  let work: string;
  let dataDir: string;
  let storage: TestStorage;
  let srv: ServerProcess | undefined;
  let http: RegistryClient;
  let before: { image: Image; repo: string; tag: string }[];
  let skopeoImage: Image;

  const start = async () => {
    srv = await startServerProcess({ dataDir, storageDriver: storage.driverConfig(), users: USERS, workDir: path.join(work, 'srv') });
    http = new RegistryClient(srv.url, AUTH);
    return srv;
  };

  /** Everything pushed before the crash is still there, byte for byte. */
  const expectEarlierPushesIntact = async () => {
    for (const { image, repo, tag } of before) {
      const pulled = await verifyPull(srv!.url, AUTH, repo, tag);
      expect(pulled.digest).toBe(image.manifest.digest);
      expect(pulled.blobs).toEqual([image.config.digest, ...image.layers.map((l) => l.digest)]);
    }
    const cli = new ContainersClients([srv!.host], path.join(work, `cli-${srv!.port}`));
    const out = path.join(work, `out-${srv!.port}`);
    await cli.skopeo(['copy', '--src-tls-verify=false', '--src-creds', `${USER}:${PASSWORD}`, `docker://${srv!.host}/crash/skopeo:v1`, `oci:${out}:v1`]);
    expect(JSON.parse(readFileSync(path.join(out, 'index.json'), 'utf8')).manifests[0].digest).toBe(skopeoImage.manifest.digest);
  };

  beforeAll(async () => {
    work = makeTempDir('rs-e2e-crash-');
    dataDir = path.join(work, 'data');
    storage = await createTestStorage('e2e-crash', { dataDir });
    await start();
    // Earlier pushes: two images over HTTP (one with a 12 MB layer) and one with skopeo.
    before = [
      { image: buildImage({ files: [{ 'small.txt': 'pushed before the crash\n' }] }), repo: 'crash/app', tag: 'v1' },
      { image: buildImage({ files: [{ 'big.bin': randomBytes(12 * MiB) }, { 'x.txt': 'x\n' }] }), repo: 'crash/big', tag: 'v1' },
    ];
    for (const { image, repo, tag } of before) await http.pushImage(repo, tag, image);
    skopeoImage = buildImage({ files: [{ 'via-skopeo.txt': 'skopeo\n' }] });
    const src = path.join(work, 'src-skopeo');
    writeOciLayout(src, 'v1', skopeoImage);
    const cli = new ContainersClients([srv!.host], path.join(work, 'cli-before'));
    await cli.skopeo(['copy', '--dest-tls-verify=false', '--dest-creds', `${USER}:${PASSWORD}`, `oci:${src}:v1`, `docker://${srv!.host}/crash/skopeo:v1`]);
    before.push({ image: skopeoImage, repo: 'crash/skopeo', tag: 'v1' });
  });

  afterAll(async () => {
    await srv?.kill();
    await storage?.destroy();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  test('monolithic POST ?digest= killed mid-body: nothing visible after restart; the retry succeeds', async () => {
    const blob = new BigBlob(1);
    const repo = 'crash/mono';
    const { closed } = await startPartialUpload(
      srv!.url,
      'POST',
      `/v2/${repo}/blobs/uploads/?digest=${blob.digest}`,
      { authorization: AUTH, 'content-type': 'application/octet-stream', 'content-length': String(blob.size) },
      blob.chunks(),
      SENT_BEFORE_KILL,
      false,
    );
    // The server is writing the body into an upload session ...
    const [orphan, written] = await waitForUploadBytes(storage, repo, WRITTEN_BEFORE_KILL);
    expect(written).toBeLessThan(blob.size);
    // ... when it is killed.
    await srv!.kill();
    const answer = await closed;
    expect(answer).not.toMatch(/^HTTP\/1\.1 201/);
    expect(await storage.exists(blobDataKey(blob.hex))).toBe(false);

    await start();
    const head = await http.req(`/v2/${repo}/blobs/${blob.digest}`, { method: 'HEAD' });
    expect(head.status).toBe(404);
    expect((await fetchBlobDigest(srv!.url, AUTH, repo, blob.digest)).status).toBe(404);
    expect(await storage.exists(blobDataKey(blob.hex))).toBe(false);
    await expectEveryBlobMatchesItsPath(storage);
    await expectEarlierPushesIntact();

    // The partial session the crash left behind cannot be committed under the digest:
    // the bytes are checked, the session dropped, and still no blob.
    const finishOrphan = await http.req(`/v2/${repo}/blobs/uploads/${orphan}?digest=${blob.digest}`, { method: 'PUT' });
    expect(finishOrphan.status).toBe(400);
    expect(finishOrphan.json().errors[0].code).toBe('DIGEST_INVALID');
    expect(await storage.exists(blobDataKey(blob.hex))).toBe(false);
    expect((await uploadFiles(storage, repo)).has(orphan)).toBe(false);

    // Retry the whole push: 201, and the blob reads back with the right digest.
    const retry = await request(`${srv!.url}/v2/${repo}/blobs/uploads/?digest=${blob.digest}`, {
      method: 'POST',
      headers: { authorization: AUTH, 'content-type': 'application/octet-stream', 'content-length': String(blob.size) },
      body: Readable.from(blob.chunks()),
    });
    await retry.body.dump();
    expect(retry.statusCode).toBe(201);
    expect(retry.headers['docker-content-digest']).toBe(blob.digest);
    const headAfter = await http.req(`/v2/${repo}/blobs/${blob.digest}`, { method: 'HEAD' });
    expect(headAfter.status).toBe(200);
    expect(headAfter.header('content-length')).toBe(String(blob.size));
    expect(await fetchBlobDigest(srv!.url, AUTH, repo, blob.digest)).toEqual({ status: 200, digest: blob.digest, size: blob.size });
    expect(await storage.size(blobDataKey(blob.hex))).toBe(blob.size);
  });

  test('streamed (chunked) PATCH killed mid-body: the session survives the restart and resumes to the right blob', async () => {
    const blob = new BigBlob(2);
    const repo = 'crash/patch';
    const started = await http.req(`/v2/${repo}/blobs/uploads/`, { method: 'POST' });
    expect(started.status).toBe(202);
    const location = new URL(started.header('location')!, srv!.url);
    const id = started.header('docker-upload-uuid')!;

    const { closed } = await startPartialUpload(
      srv!.url,
      'PATCH',
      `${location.pathname}${location.search}`,
      { authorization: AUTH, 'content-type': 'application/octet-stream', 'transfer-encoding': 'chunked' },
      blob.chunks(),
      SENT_BEFORE_KILL,
      true,
    );
    const [sessionId, written] = await waitForUploadBytes(storage, repo, WRITTEN_BEFORE_KILL);
    expect(sessionId).toBe(id);
    expect(written).toBeLessThan(blob.size);
    await srv!.kill();
    expect(await closed).not.toMatch(/^HTTP\/1\.1 20/);
    expect(await storage.exists(blobDataKey(blob.hex))).toBe(false);

    await start();
    expect((await http.req(`/v2/${repo}/blobs/${blob.digest}`, { method: 'HEAD' })).status).toBe(404);
    await expectEveryBlobMatchesItsPath(storage);
    await expectEarlierPushesIntact();

    // The session's offset is what reached the disk before the kill.
    const status = await http.req(`/v2/${repo}/blobs/uploads/${id}`);
    expect(status.status).toBe(204);
    const onDisk = (await uploadFiles(storage, repo)).get(id)!;
    expect(status.header('range')).toBe(`0-${onDisk - 1}`);
    expect(onDisk).toBeGreaterThanOrEqual(WRITTEN_BEFORE_KILL);

    // Resume from there: PATCH the rest, then PUT ?digest=.
    const rest = await request(`${srv!.url}/v2/${repo}/blobs/uploads/${id}`, {
      method: 'PATCH',
      headers: {
        authorization: AUTH,
        'content-type': 'application/octet-stream',
        'content-range': `${onDisk}-${blob.size - 1}`,
        'content-length': String(blob.size - onDisk),
      },
      body: Readable.from(blob.chunks(onDisk)),
    });
    await rest.body.dump();
    expect(rest.statusCode).toBe(202);
    expect(rest.headers.range).toBe(`0-${blob.size - 1}`);
    const put = await http.req(`/v2/${repo}/blobs/uploads/${id}?digest=${blob.digest}`, { method: 'PUT' });
    expect(put.status).toBe(201);
    expect(await fetchBlobDigest(srv!.url, AUTH, repo, blob.digest)).toEqual({ status: 200, digest: blob.digest, size: blob.size });
    expect(await storage.size(blobDataKey(blob.hex))).toBe(blob.size);
    expect((await uploadFiles(storage, repo)).has(id)).toBe(false);

    // And a manifest can now refer to it.
    const image = buildImage();
    await http.pushBlob(repo, image.config);
    const manifest = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: image.config.digest, size: image.config.size },
        layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: blob.digest, size: blob.size }],
      }),
    );
    const putManifest = await http.req(`/v2/${repo}/manifests/big`, {
      method: 'PUT',
      headers: { 'content-type': 'application/vnd.oci.image.manifest.v1+json' },
      body: manifest,
    });
    expect(putManifest.status).toBe(201);
    expect(await listTags(srv!.url, AUTH, repo)).toEqual(['big']);
  });

  test('killed while the final PUT verifies and commits: the blob is either absent or whole, and the push completes', async () => {
    const blob = new BigBlob(3);
    const repo = 'crash/commit';
    const started = await http.req(`/v2/${repo}/blobs/uploads/`, { method: 'POST' });
    const id = started.header('docker-upload-uuid')!;
    const patched = await request(`${srv!.url}/v2/${repo}/blobs/uploads/${id}`, {
      method: 'PATCH',
      headers: { authorization: AUTH, 'content-type': 'application/octet-stream', 'content-length': String(blob.size) },
      body: Readable.from(blob.chunks()),
    });
    await patched.body.dump();
    expect(patched.statusCode).toBe(202);
    // A restart drops the in-memory running hash: the PUT must re-read all 200 MB to verify.
    await srv!.kill();
    await start();
    const { closed } = await startPartialUpload(
      srv!.url,
      'PUT',
      `/v2/${repo}/blobs/uploads/${id}?digest=${blob.digest}`,
      { authorization: AUTH, 'content-length': '0' },
      [],
      0,
      false,
    );
    // Kill as soon as the server has the request; where exactly the kill lands
    // (hashing, the rename, the link) is up to the scheduler. Every outcome must be safe.
    await sleep(20);
    await srv!.kill();
    const answer = await closed;

    const key = blobDataKey(blob.hex);
    if (await storage.exists(key)) {
      // Committed before the kill: then all of it, verified.
      expect(await storage.size(key)).toBe(blob.size);
      expect(await storage.sha256(key)).toBe(blob.hex);
    } else {
      expect(answer).not.toMatch(/^HTTP\/1\.1 201/);
    }
    await start();
    await expectEveryBlobMatchesItsPath(storage);
    await expectEarlierPushesIntact();

    // Finish the push: the session if it is still there, else a fresh monolithic upload.
    const status = await http.req(`/v2/${repo}/blobs/uploads/${id}`);
    if (status.status === 204) {
      const put = await http.req(`/v2/${repo}/blobs/uploads/${id}?digest=${blob.digest}`, { method: 'PUT' });
      expect(put.status).toBe(201);
    } else if ((await http.req(`/v2/${repo}/blobs/${blob.digest}`, { method: 'HEAD' })).status !== 200) {
      const retry = await request(`${srv!.url}/v2/${repo}/blobs/uploads/?digest=${blob.digest}`, {
        method: 'POST',
        headers: { authorization: AUTH, 'content-type': 'application/octet-stream', 'content-length': String(blob.size) },
        body: Readable.from(blob.chunks()),
      });
      await retry.body.dump();
      expect(retry.statusCode).toBe(201);
    }
    expect(await fetchBlobDigest(srv!.url, AUTH, repo, blob.digest)).toEqual({ status: 200, digest: blob.digest, size: blob.size });
  });
});
