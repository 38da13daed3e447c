// The worker that hashes cache fills and writes their upload files
// (server/src/proxy/fill-writer.ts, fill-worker.mjs): the bytes go through a
// shared ring smaller than the fills, in chunks of odd sizes at odd offsets
// (as the upstream's socket hands them over), for several fills at once. Each
// file must hold exactly its fill's bytes and each digest match them; a fill
// whose file cannot be written fails alone.
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { type FillJob, startFillJob } from '../../server/src/proxy/fill-writer.ts';

const MiB = 1024 * 1024;
const dir = mkdtempSync(path.join(os.tmpdir(), 'fill-writer-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/**
 * Feeds `data` to a job in chunks of 1 to 70,000 bytes, each a view at an odd offset into a larger
 * buffer, writing again what the ring did not take once it has room. Resolves with the digest's hex
 * and the `stored` totals the job reported.
 */
function feed(data: Buffer, file: string | undefined): Promise<{ hex: string; stored: number[] }> {
  const stored: number[] = [];
  return new Promise((resolve, reject) => {
    let at = 0;
    let pending: Buffer | undefined;
    const next = (): Buffer | undefined => {
      if (pending) return pending;
      if (at >= data.length) return undefined;
      const n = Math.min(data.length - at, 1 + Math.floor(Math.random() * 70_000));
      const offset = 1 + Math.floor(Math.random() * 7);
      const holder = Buffer.alloc(n + offset + 3);
      data.copy(holder, offset, at, at + n);
      at += n;
      return holder.subarray(offset, offset + n);
    };
    const pump = () => {
      try {
        for (let chunk = next(); chunk; chunk = next()) {
          const taken = job.write(chunk);
          pending = taken < chunk.length ? chunk.subarray(taken) : undefined;
          if (taken === 0) return; // room() calls again
        }
        job.end().then((hex) => resolve({ hex, stored }), reject);
      } catch (err) {
        reject(err);
      }
    };
    const job: FillJob = startFillJob(
      { algorithm: 'sha256', file },
      { stored: (total) => stored.push(total), room: () => setImmediate(pump) },
    );
    pump();
  });
}

describe('fill writer', () => {
  it('stores and hashes three fills at once, each larger than the ring, from chunks at odd offsets', async () => {
    const blobs = [9 * MiB + 3, 6 * MiB + 1, 5 * MiB].map((n) => randomBytes(n));
    const files = blobs.map((_, i) => path.join(dir, `three/${i}/data`));
    const results = await Promise.all(blobs.map((blob, i) => feed(blob, files[i])));
    results.forEach(({ hex, stored }, i) => {
      expect(hex).toBe(createHash('sha256').update(blobs[i]).digest('hex'));
      expect(readFileSync(files[i]).equals(blobs[i])).toBe(true);
      expect(stored.at(-1)).toBe(blobs[i].length);
      expect(stored).toEqual([...stored].sort((a, b) => a - b));
    });
  });

  it('hashes without a file when the storage is not local', async () => {
    const blob = randomBytes(5 * MiB + 7);
    const { hex } = await feed(blob, undefined);
    expect(hex).toBe(createHash('sha256').update(blob).digest('hex'));
  });

  it("fails a fill whose file cannot be created, and only that fill", async () => {
    writeFileSync(path.join(dir, 'not-a-dir'), 'x');
    const good = randomBytes(2 * MiB);
    const [bad, ok] = await Promise.allSettled([feed(randomBytes(2 * MiB), path.join(dir, 'not-a-dir/upload/data')), feed(good, path.join(dir, 'ok/data'))]);
    expect(bad.status).toBe('rejected');
    expect(String((bad as PromiseRejectedResult).reason)).toMatch(/storing a cache fill failed: ENOTDIR/);
    expect(ok.status).toBe('fulfilled');
    expect((ok as PromiseFulfilledResult<{ hex: string }>).value.hex).toBe(createHash('sha256').update(good).digest('hex'));
  });

  it('lets go of an aborted fill: its file is closed and can be removed, and the ring serves the next fills', async () => {
    const file = path.join(dir, 'aborted/data');
    const job = startFillJob({ algorithm: 'sha256', file }, { stored: () => {}, room: () => {} });
    job.write(randomBytes(3 * MiB));
    await job.abort();
    rmSync(path.dirname(file), { recursive: true });
    const blob = randomBytes(6 * MiB);
    expect((await feed(blob, path.join(dir, 'after/data'))).hex).toBe(createHash('sha256').update(blob).digest('hex'));
  });
});
