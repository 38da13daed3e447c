// A cache fill's clients written to by the fill (send) rather than piped: the
// upstream's chunks are freed once stored and written, and never while a
// client's write of them is still pending; a client reading a plain stream
// keeps the fill from freeing anything. The client's writes are held by the
// test (a Writable whose callbacks it releases), so every check is on an
// event, never on time.
import { createHash, randomFillSync } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Readable, Writable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { silentLogger } from '../../server/src/log/logger.ts';
import { BlobFill } from '../../server/src/proxy/blob-fill.ts';
import type { UpstreamClient } from '../../server/src/proxy/upstream-client.ts';
import { BlobStore } from '../../server/src/registry/blob-store.ts';
import { parseDigest } from '../../server/src/registry/digest.ts';
import { FilesystemDriver } from '../../server/src/storage/filesystem.ts';
import { paths } from '../../server/src/storage/paths.ts';

const KiB = 1024;
const CHUNK = 64 * KiB;
/** Larger than what a fill keeps in memory for a reader close behind it (4 MiB). */
const CHUNKS = 100;

/** Chunks that each own their memory, as the upstream socket's reads do. */
function upstreamChunks(): Buffer[] {
  return Array.from({ length: CHUNKS }, () => randomFillSync(Buffer.alloc(CHUNK)));
}

/** An upstream whose body the test writes, one chunk at a time as the fill reads it (as a socket's reads come). */
function upstream(chunks: Buffer[]) {
  const body = new Readable({ objectMode: true, read() {} });
  const size = chunks.reduce((n, c) => n + c.length, 0);
  const client = { getBlob: async () => ({ size, body }) } as unknown as UpstreamClient;
  return { client, body, size };
}

/** A client socket whose writes complete only when the test says so. */
function heldClient() {
  const writes: Array<{ chunk: Buffer; copy: Buffer; complete(): void }> = [];
  let waiting: Array<() => void> = [];
  const dest = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      // The copy is what the socket would send, taken as the write starts.
      writes.push({ chunk, copy: Buffer.from(chunk), complete: () => callback() });
      for (const w of waiting) w();
      waiting = [];
    },
  });
  return {
    dest,
    writes,
    /** Resolves once `n` writes have started. */
    started: (n: number) => new Promise<void>((resolve) => (writes.length >= n ? resolve() : waiting.push(resolve))),
  };
}

describe('a cache fill writing to its clients', () => {
  let root: string;
  let driver: FilesystemDriver;
  let blobs: BlobStore;
  const name = 'docker.io/library/app';

  beforeEach(() => {
    root = mkdtempSync(path.join(os.tmpdir(), 'fill-sender-'));
    driver = new FilesystemDriver(root);
    blobs = new BlobStore(driver);
  });
  afterEach(() => rmSync(root, { recursive: true, force: true }));

  const start = async (chunks: Buffer[]) => {
    const blob = Buffer.concat(chunks);
    const digest = parseDigest(`sha256:${createHash('sha256').update(blob).digest('hex')}`);
    const up = upstream(chunks);
    const fill = new BlobFill(digest, name, 'library/app', { driver, blobs, client: up.client, logger: silentLogger });
    await fill.ready;
    return { blob, digest, up, fill };
  };

  it('frees each upstream chunk once it is stored and its writes are over, never while a write of it is pending', async () => {
    const chunks = upstreamChunks();
    const { blob, digest, up, fill } = await start(chunks);
    const client = heldClient();
    const sending = fill.send(undefined)(client.dest);
    for (const c of chunks) up.body.push(c);
    up.body.push(null);
    // The client's first write is held while the whole blob is stored, verified and committed.
    await client.started(1);
    await fill.done;
    expect(readFileSync(path.join(root, paths.blobData(digest))).equals(blob)).toBe(true);
    const first = client.writes[0];
    expect(first.chunk.buffer).toBe(chunks[0].buffer);
    expect(first.chunk.equals(first.copy)).toBe(true);
    // Chunks no client took were freed as soon as they were stored.
    expect(chunks.slice(1, -1).some((c) => c.buffer.byteLength === 0)).toBe(true);
    // Each write still has its bytes when it completes; then the rest follow (from storage).
    for (let i = 0; ; i++) {
      await Promise.race([client.started(i + 1), sending]);
      if (i === client.writes.length) break;
      const w = client.writes[i];
      expect(w.chunk.equals(w.copy)).toBe(true);
      w.complete();
    }
    await sending;
    expect(Buffer.concat(client.writes.map((w) => w.copy)).equals(blob)).toBe(true);
    // Every chunk but the last (which holds the blob's last byte) is freed now: the first one too.
    expect(chunks.slice(0, -1).every((c) => c.buffer.byteLength === 0)).toBe(true);
  });

  it('frees nothing once a client reads a plain stream (its consumer may keep the chunks)', async () => {
    const chunks = upstreamChunks();
    const { blob, up, fill } = await start(chunks);
    const received: Buffer[] = [];
    const reading = new Promise<void>((resolve, reject) => {
      const stream = fill.stream();
      stream.on('data', (c: Buffer) => received.push(c));
      stream.on('end', resolve);
      stream.on('error', reject);
    });
    for (const c of chunks) up.body.push(c);
    up.body.push(null);
    await Promise.all([reading, fill.done]);
    expect(Buffer.concat(received).equals(blob)).toBe(true);
    expect(chunks.every((c, i) => c.buffer.byteLength === CHUNK && c[0] === blob[i * CHUNK])).toBe(true);
  });

  it('a client that goes away fails its send; the fill still commits the blob', async () => {
    const chunks = upstreamChunks();
    const { blob, digest, up, fill } = await start(chunks);
    const client = heldClient();
    const sending = fill.send(undefined)(client.dest);
    sending.catch(() => {});
    up.body.push(chunks[0]);
    await client.started(1);
    client.dest.destroy();
    await expect(sending).rejects.toThrow(/went away/);
    for (const c of chunks.slice(1)) up.body.push(c);
    up.body.push(null);
    await fill.done;
    expect(readFileSync(path.join(root, paths.blobData(digest))).equals(blob)).toBe(true);
  });
});
