// Appending a stream to a file through two reused buffers: every byte lands in
// order whatever the chunk sizes (fast-check), a source that fails keeps what
// came before it, and chunks are freed only when their caller says they may be
// and only when a chunk is the whole of its memory; an upload session passes
// that word on to storage.
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs/promises';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import fc from 'fast-check';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BlobStore } from '../../server/src/registry/blob-store.ts';
import { digestOf } from '../../server/src/registry/digest.ts';
import { InProcessGcGuard } from '../../server/src/registry/gc-guard.ts';
import { UploadStore } from '../../server/src/registry/uploads.ts';
import { appendToFile } from '../../server/src/storage/file-appender.ts';
import { freeChunk } from '../../server/src/storage/free-chunk.ts';
import { FilesystemDriver } from '../../server/src/storage/filesystem.ts';
import { paths } from '../../server/src/storage/paths.ts';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'rs-appender-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

async function appendChunks(file: string, chunks: Buffer[], options: Parameters<typeof appendToFile>[2] = {}): Promise<number> {
  const fh = await fs.open(file, 'a');
  try {
    return await appendToFile(fh, Readable.from(chunks), options);
  } finally {
    await fh.close();
  }
}

describe('appendToFile', () => {
  it('writes every byte in order after what the file held, whatever the chunk sizes', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.integer({ min: 1, max: 3 * 1024 * 1024 }), { minLength: 0, maxLength: 6 }), async (sizes) => {
        const file = path.join(dir, `f-${sizes.join('-')}`);
        const before = randomBytes(100);
        await fs.writeFile(file, before);
        const chunks = sizes.map((n) => randomBytes(n));
        const tapped: number[] = [];
        const written = await appendChunks(file, chunks, { tap: (c) => tapped.push(c.length) });
        const expected = Buffer.concat([before, ...chunks]);
        expect(written).toBe(expected.length - before.length);
        expect(tapped).toEqual(sizes);
        expect(readFileSync(file).equals(expected)).toBe(true);
        await fs.rm(file);
      }),
      { numRuns: 25 },
    );
  });

  it('writes what arrived before the source failed, then throws its error', async () => {
    const file = path.join(dir, 'broken');
    const first = randomBytes(1536 * 1024);
    const source = new Readable({ read() {} });
    source.push(first);
    const fh = await fs.open(file, 'a');
    const appending = appendToFile(fh, source);
    setImmediate(() => source.destroy(new Error('client went away')));
    await expect(appending).rejects.toThrow('client went away');
    // Written by the time the error comes, not only once the file is closed.
    expect(readFileSync(file).equals(first)).toBe(true);
    await fh.close();
  });

  it('leaves the chunks alone unless told they are its to free', async () => {
    const chunk = Buffer.from(new Uint8Array(64 * 1024).fill(7));
    await appendChunks(path.join(dir, 'kept'), [chunk]);
    expect(chunk.length).toBe(64 * 1024);
    expect(chunk[100]).toBe(7);
  });

  it('frees chunks it owns once their bytes are in the file', async () => {
    const own = Buffer.from(new Uint8Array(64 * 1024).fill(9));
    const file = path.join(dir, 'freed');
    await appendChunks(file, [own], { freeChunks: true });
    // Detached: the memory is released now, not at the next GC.
    expect(own.length).toBe(0);
    expect(own.buffer.byteLength).toBe(0);
    expect(readFileSync(file).equals(Buffer.alloc(64 * 1024, 9))).toBe(true);
  });
});

describe('freeChunk', () => {
  it("never detaches a slice of memory shared with other buffers (Node's pool)", () => {
    const pooled = Buffer.from('small, so from the shared pool');
    expect(pooled.byteOffset > 0 || pooled.byteLength < pooled.buffer.byteLength).toBe(true);
    const whole = pooled.buffer.byteLength;
    freeChunk(pooled);
    expect(pooled.toString()).toBe('small, so from the shared pool');
    expect(pooled.buffer.byteLength).toBe(whole);

    const backing = new ArrayBuffer(1024);
    const half = Buffer.from(backing, 0, 512);
    freeChunk(half);
    expect(backing.byteLength).toBe(1024);
  });
});

describe('an upload session whose body is a request', () => {
  it("has its chunks freed once stored when it says they are its own, and commits the right bytes", async () => {
    const driver = new FilesystemDriver(path.join(dir, 'store'));
    const uploads = new UploadStore(driver, new BlobStore(driver), new InProcessGcGuard());
    const data = randomBytes(3 * 1024 * 1024 + 17);
    // Whole-ArrayBuffer chunks, as the HTTP parser makes them.
    const chunks = [data.subarray(0, 1024 * 1024), data.subarray(1024 * 1024)].map((c) => Buffer.from(new Uint8Array(c)));
    const { id } = await uploads.start('r');
    await uploads.append('r', id, Readable.from(chunks), { freeChunks: true });
    expect(chunks.map((c) => c.length)).toEqual([0, 0]);
    const kept = Buffer.from(new Uint8Array(16));
    await uploads.append('r', id, Readable.from([kept]), {});
    expect(kept.length).toBe(16);
    const all = Buffer.concat([data, kept]);
    const info = await uploads.finish('r', id, digestOf(all), undefined, {});
    expect(info.size).toBe(all.length);
    expect(readFileSync(path.join(dir, 'store', paths.blobData(info.digest))).equals(all)).toBe(true);
  });
});
