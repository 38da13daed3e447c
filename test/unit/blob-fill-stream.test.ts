// A cache fill on the filesystem, driven byte by byte from the test: its
// clients get every byte before the response's last as soon as it arrived
// (only the last waits for the digest), the worker stores the bytes in the
// upload file that is committed, and a fill that fails leaves no upload
// behind. Waits are on what the client received, never on time.
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { silentLogger } from '../../server/src/log/logger.ts';
import { BlobFill } from '../../server/src/proxy/blob-fill.ts';
import type { UpstreamClient } from '../../server/src/proxy/upstream-client.ts';
import { BlobStore } from '../../server/src/registry/blob-store.ts';
import { parseDigest } from '../../server/src/registry/digest.ts';
import { FilesystemDriver } from '../../server/src/storage/filesystem.ts';
import { paths } from '../../server/src/storage/paths.ts';

const KiB = 1024;

/** An upstream whose body the test writes: getBlob answers with `size` as Content-Length. */
function upstream(size: number) {
  const body = new Readable({ read() {} });
  const client = { getBlob: async () => ({ size, body }) } as unknown as UpstreamClient;
  return { client, body };
}

/** Reads a stream, counting bytes; `reached(n)` resolves once n bytes came. */
function reader(stream: Readable) {
  const chunks: Buffer[] = [];
  let got = 0;
  let waiters: Array<{ n: number; resolve(): void }> = [];
  const ended = new Promise<Buffer>((resolve, reject) => {
    stream.on('data', (chunk: Buffer) => {
      chunks.push(chunk);
      got += chunk.length;
      waiters = waiters.filter((w) => (got >= w.n ? (w.resolve(), false) : true));
    });
    stream.on('end', () => resolve(Buffer.concat(chunks)));
    stream.on('error', reject);
  });
  ended.catch(() => {});
  return {
    ended,
    get got() {
      return got;
    },
    reached: (n: number) => new Promise<void>((resolve) => (got >= n ? resolve() : waiters.push({ n, resolve }))),
  };
}

describe('a cache fill on the filesystem', () => {
  let root: string;
  let driver: FilesystemDriver;
  let blobs: BlobStore;
  const name = 'docker.io/library/app';

  beforeEach(() => {
    root = mkdtempSync(path.join(os.tmpdir(), 'blob-fill-'));
    driver = new FilesystemDriver(root);
    blobs = new BlobStore(driver);
  });
  afterEach(() => rmSync(root, { recursive: true, force: true }));

  const uploads = () => {
    const dir = path.join(root, paths.repository(name), '_uploads');
    return existsSync(dir) ? readdirSync(dir) : [];
  };

  /** A fill of `digest` from an upstream answering `size` bytes, with one client reading it. */
  const fillWithClient = async (digest: ReturnType<typeof parseDigest>, size: number) => {
    const up = upstream(size);
    const fill = new BlobFill(digest, name, 'library/app', { driver, blobs, client: up.client, logger: silentLogger });
    const announced = await fill.ready;
    return { up, fill, announced, client: reader(fill.stream()) };
  };

  it('gives a client every byte received before the last at once, the last after verification, and commits what the worker wrote', async () => {
    const blob = randomBytes(300 * KiB + 5);
    const digest = parseDigest(`sha256:${createHash('sha256').update(blob).digest('hex')}`);
    const { up, fill, announced, client } = await fillWithClient(digest, blob.length);
    expect(announced).toBe(blob.length);
    // Half, then the rest: the client has the whole half before anything more is sent
    // (holding back the last byte received made it wait for the next chunk).
    const half = 150 * KiB;
    up.body.push(blob.subarray(0, half));
    await client.reached(half);
    up.body.push(blob.subarray(half, blob.length - 1));
    await client.reached(blob.length - 1);
    up.body.push(blob.subarray(blob.length - 1));
    up.body.push(null);
    expect((await client.ended).equals(blob)).toBe(true);
    await fill.done;
    expect(readFileSync(path.join(root, paths.blobData(digest))).equals(blob)).toBe(true);
    expect(uploads()).toEqual([]);
  });

  it('holds back the last byte of bytes that do not match the digest, caches nothing and leaves no upload', async () => {
    const blob = randomBytes(200 * KiB);
    const digest = parseDigest(`sha256:${createHash('sha256').update(Buffer.from('something else')).digest('hex')}`);
    const { up, fill, client } = await fillWithClient(digest, blob.length);
    up.body.push(blob);
    up.body.push(null);
    await expect(client.ended).rejects.toThrow(/do not match/);
    expect(client.got).toBe(blob.length - 1);
    await expect(fill.done).rejects.toThrow(/do not match/);
    expect(existsSync(path.join(root, paths.blobData(digest)))).toBe(false);
    expect(uploads()).toEqual([]);
  });

  it('fails when the worker cannot write the upload file, and commits nothing', async () => {
    const blob = randomBytes(100 * KiB);
    const digest = parseDigest(`sha256:${createHash('sha256').update(blob).digest('hex')}`);
    // The uploads directory is a file: the worker cannot create the upload under it.
    mkdirSync(path.join(root, paths.repository(name)), { recursive: true });
    writeFileSync(path.join(root, paths.repository(name), '_uploads'), 'x');
    const { up, fill, client } = await fillWithClient(digest, blob.length);
    up.body.push(blob);
    up.body.push(null);
    await expect(fill.done).rejects.toThrow(/storing a cache fill failed/);
    await expect(client.ended).rejects.toThrow(/storing a cache fill failed/);
    expect(existsSync(path.join(root, paths.blobData(digest)))).toBe(false);
  });

  /**
   * A client that took the first chunk and then stopped reading until the fill was committed: the
   * worker stored every byte long before. Returns what it received and how often it had to read
   * the storage for it (the driver's reader).
   */
  const pausedClient = async (size: number) => {
    const blob = randomBytes(size);
    const digest = parseDigest(`sha256:${createHash('sha256').update(blob).digest('hex')}`);
    // One chunk per push (object mode), as a socket delivers them: the fill's window holds them apart.
    const body = new Readable({ objectMode: true, read() {} });
    const client = { getBlob: async () => ({ size, body }) } as unknown as UpstreamClient;
    const storage = countStorageReads();
    const fill = new BlobFill(digest, name, 'library/app', { driver, blobs, client, logger: silentLogger });
    await fill.ready;
    const stream = fill.stream();
    const first = new Promise<Buffer>((resolve) =>
      stream.once('data', (chunk: Buffer) => {
        stream.pause();
        resolve(chunk);
      }),
    );
    for (let at = 0; at < size; at += 64 * KiB) body.push(blob.subarray(at, at + 64 * KiB));
    body.push(null);
    const chunks = [await first];
    await fill.done;
    for await (const chunk of stream) chunks.push(chunk as Buffer);
    return { same: Buffer.concat(chunks).equals(blob), storageReads: storage.reads };
  };

  /** Counts the driver's reader() calls from now on: how often clients read a fill back from storage. */
  const countStorageReads = () => {
    const counter = { reads: 0 };
    const reader = driver.reader.bind(driver);
    driver.reader = (key, range) => {
      counter.reads++;
      return reader(key, range);
    };
    return counter;
  };

  it('keeps what a client close behind the head still needs in memory: it never reads the storage', async () => {
    expect(await pausedClient(3 * 1024 * KiB)).toEqual({ same: true, storageReads: 0 });
  });

  it('lets go of what a client more than 4 MiB behind the head needs: it reads that back from the storage', async () => {
    const { same, storageReads } = await pausedClient(6 * 1024 * KiB);
    expect(same).toBe(true);
    expect(storageReads).toBeGreaterThan(0);
  });

  /** A blob, and an upstream that sends it as fast as it is read (`sent()`: how far it got). */
  const eagerUpstream = (size: number) => {
    const blob = randomBytes(size);
    const digest = parseDigest(`sha256:${createHash('sha256').update(blob).digest('hex')}`);
    let sent = 0;
    const body = new Readable({
      objectMode: true,
      highWaterMark: 1,
      read() {
        const chunk = blob.subarray(sent, sent + 64 * KiB);
        sent += chunk.length;
        this.push(chunk.length > 0 ? chunk : null);
      },
    });
    const client = { getBlob: async () => ({ size, body }) } as unknown as UpstreamClient;
    return { blob, digest, client, sent: () => sent };
  };

  it('does not wait for a client that it followed and that stopped reading: the fill completes', async () => {
    const up = eagerUpstream(16 * 1024 * KiB);
    const fill = new BlobFill(up.digest, name, 'library/app', { driver, blobs, client: up.client, logger: silentLogger });
    await fill.ready;
    const stream = fill.stream();
    const chunks: Buffer[] = [];
    let got = 0;
    // Reads 4 MiB (the fill follows it meanwhile), then stops.
    await new Promise<void>((resolve) => {
      stream.on('data', (chunk: Buffer) => {
        chunks.push(chunk);
        got += chunk.length;
        if (got < 4 * 1024 * KiB) return;
        stream.pause();
        stream.removeAllListeners('data');
        resolve();
      });
    });
    expect(up.sent()).toBeLessThan(up.blob.length);
    await fill.done;
    expect(up.sent()).toBe(up.blob.length);
    for await (const chunk of stream) chunks.push(chunk as Buffer);
    expect(Buffer.concat(chunks).equals(up.blob)).toBe(true);
  });

  it('reads the upstream no further than 2 MiB ahead of a client that keeps up, which gets every byte from memory', async () => {
    const up = eagerUpstream(16 * 1024 * KiB);
    const storage = countStorageReads();
    const fill = new BlobFill(up.digest, name, 'library/app', { driver, blobs, client: up.client, logger: silentLogger });
    await fill.ready;
    const chunks: Buffer[] = [];
    let got = 0;
    let lead = 0;
    for await (const chunk of fill.stream()) {
      chunks.push(chunk as Buffer);
      got += (chunk as Buffer).length;
      lead = Math.max(lead, up.sent() - got);
      // A client slower than the upstream, but well above the pace a fill follows (8 MB/s).
      await new Promise((resolve) => setTimeout(resolve, 1));
    }
    await fill.done;
    expect(Buffer.concat(chunks).equals(up.blob)).toBe(true);
    // 2 MiB, plus the chunks on their way: one in the upstream's buffer, one in the pump, those the response buffers.
    expect(lead).toBeLessThanOrEqual(2 * 1024 * KiB + 4 * 64 * KiB);
    expect(storage.reads).toBe(0);
  });
});
