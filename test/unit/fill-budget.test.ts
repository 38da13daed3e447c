// A cache fill reads the upstream ahead of the storage within a process-wide
// budget, and holds its storage writes back for a moment (write-behind). Many
// large fills at once must still all finish: once the fills hold half the
// budget, their storage writes start, so no pump waits for a storage that
// waits for it. Driven with a storage that writes in place (putStream, as the
// S3 driver) and an upstream that streams 20 MiB per blob.
// On the filesystem, where the worker thread writes every fill's bytes in
// turn, the fills share a smaller budget with no floor per fill: what 64 fills
// hold in memory at once stays within it (plus the chunks each just read).
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import { describe, expect, test } from 'vitest';
import { silentLogger } from '../../server/src/log/logger.ts';
import { BlobFill } from '../../server/src/proxy/blob-fill.ts';
import type { UpstreamClient } from '../../server/src/proxy/upstream-client.ts';
import { BlobStore } from '../../server/src/registry/blob-store.ts';
import { parseDigest } from '../../server/src/registry/digest.ts';
import type { StorageDriver } from '../../server/src/storage/driver.ts';
import { FilesystemDriver } from '../../server/src/storage/filesystem.ts';

const MiB = 1024 * 1024;
const SIZE = 20 * MiB;
const CHUNK = Buffer.alloc(MiB, 7);
const DIGEST = parseDigest(`sha256:${createHash('sha256').update(Buffer.concat(Array.from({ length: 20 }, () => CHUNK))).digest('hex')}`);

/** 20 MiB, a MiB at a time, as fast as it is read. */
const upstream = { getBlob: async () => ({ size: SIZE, body: Readable.from(Array.from({ length: 20 }, () => CHUNK), { objectMode: false }) }) };

describe('cache fills within the read-ahead budget', () => {
  test('24 concurrent 20 MiB fills (480 MiB, more than the 256 MiB budget) all complete, each storing every byte once', async () => {
    const stored = new Map<string, number>();
    const driver = {
      name: 'fake-s3',
      async putStream(key: string, source: Readable, tap?: (chunk: Buffer) => void) {
        let n = 0;
        for await (const chunk of source) {
          // A storage slower than the upstream: the fills run ahead of it.
          await new Promise((resolve) => setTimeout(resolve, 2));
          tap?.(chunk as Buffer);
          n += (chunk as Buffer).length;
        }
        stored.set(key, (stored.get(key) ?? 0) + n);
        return n;
      },
      async delete() {},
    } as unknown as StorageDriver;
    const recorded: number[] = [];
    const blobs = {
      async recordStored(_digest: unknown, size: number) {
        recorded.push(size);
      },
      async writeLink() {},
    } as unknown as BlobStore;
    const fills = Array.from(
      { length: 24 },
      (_, i) => new BlobFill(DIGEST, `cache/repo${i}`, 'repo', { driver, blobs, client: upstream as unknown as UpstreamClient, logger: silentLogger }),
    );
    // Every fill also has a client reading it to the end.
    const reads = fills.map(async (fill) => {
      let n = 0;
      for await (const chunk of fill.stream()) n += (chunk as Buffer).length;
      return n;
    });
    await Promise.all(fills.map((f) => f.done));
    expect(await Promise.all(reads)).toEqual(fills.map(() => SIZE));
    expect(recorded).toEqual(fills.map(() => SIZE));
    // Written in place under the digest (the same key for all 24), 24 × 20 MiB in all.
    expect([...stored.values()]).toEqual([24 * SIZE]);
  }, 60_000);

  test('64 concurrent 2 MiB fills on the filesystem hold at most 8 MiB between them ahead of the worker (plus two chunks each), and all complete', async () => {
    const root = mkdtempSync(path.join(os.tmpdir(), 'fill-budget-'));
    try {
      const driver = new FilesystemDriver(root);
      const blobs = new BlobStore(driver);
      const FILLS = 64;
      const CHUNK_BYTES = 64 * 1024;
      const SIZE_EACH = 2 * MiB;
      const fills: BlobFill[] = [];
      // Bytes received and not yet stored, over all fills: sampled whenever a fill asks its upstream for more.
      let most = 0;
      const held = () => fills.reduce((sum, f) => sum + (f.available - f.written), 0);
      for (let i = 0; i < FILLS; i++) {
        const data = randomBytes(SIZE_EACH);
        const digest = parseDigest(`sha256:${createHash('sha256').update(data).digest('hex')}`);
        // As fast as the fill reads it, a chunk at a time (a socket's reads are at most 64 KiB).
        const body = Readable.from(
          (function* () {
            for (let at = 0; at < data.length; at += CHUNK_BYTES) {
              most = Math.max(most, held());
              yield data.subarray(at, at + CHUNK_BYTES);
            }
          })(),
          { objectMode: false },
        );
        const client = { getBlob: async () => ({ size: data.length, body }) } as unknown as UpstreamClient;
        fills.push(new BlobFill(digest, `cache/repo${i}`, 'repo', { driver, blobs, client, logger: silentLogger }));
      }
      const reads = fills.map(async (fill) => {
        let n = 0;
        for await (const chunk of fill.stream()) n += (chunk as Buffer).length;
        return n;
      });
      await Promise.all(fills.map((f) => f.done));
      expect(await Promise.all(reads)).toEqual(fills.map(() => SIZE_EACH));
      // 128 MiB went through; without the shared budget each fill could hold its whole blob. Beyond the
      // budget: the chunk a fill that held nothing read, and the one every waiting fill reads when the
      // budget has room again.
      expect(most).toBeLessThanOrEqual(8 * MiB + 2 * FILLS * CHUNK_BYTES);
      expect(most).toBeGreaterThan(0);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  }, 60_000);
});
