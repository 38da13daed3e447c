// The StorageDriver contract (server/src/storage/driver.ts), run against every
// driver: the filesystem driver in a temp dir and the S3 driver on a real S3
// (Ceph RGW, see test/helpers/s3.ts). The registry relies on exactly these
// behaviours: uploads append in several calls and stat for the offset, the
// mirror tails an object with byte ranges while it is still being appended,
// commits move composed uploads into place, GC deletes trees, pruning reads
// access times that touch() set.
import { createHash, randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { PassThrough, Readable } from 'node:stream';
import { HeadObjectCommand, ListMultipartUploadsCommand } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { PathNotFoundError, type StorageDriver } from '../../server/src/storage/driver.ts';
import { FilesystemDriver } from '../../server/src/storage/filesystem.ts';
import { MIN_PART_SIZE, S3Driver } from '../../server/src/storage/s3.ts';
import { createTestBucket, type TestBucket } from '../helpers/s3.ts';
import { makeTempDir } from '../helpers/server.ts';

const MiB = 1024 * 1024;
/** The S3 driver's part size in these tests (its minimum): appends cross part boundaries often. */
const PART = MIN_PART_SIZE;

interface Harness {
  driver: StorageDriver;
  /** The bucket behind an S3 driver, to look at raw keys. */
  bucket?: TestBucket;
  cleanup(): Promise<void>;
}

const harnesses: Array<{ name: string; open: () => Promise<Harness> }> = [
  {
    name: 'filesystem',
    open: async () => {
      const dir = makeTempDir('rs-contract-fs-');
      return { driver: new FilesystemDriver(dir), cleanup: async () => rmSync(dir, { recursive: true, force: true }) };
    },
  },
  {
    name: 's3',
    open: async () => {
      const bucket = await createTestBucket('contract');
      const driver = new S3Driver({ ...s3Options(bucket), chunkSize: PART, rootDirectory: '/contract-root' });
      return {
        driver,
        bucket,
        cleanup: async () => {
          driver.destroy();
          await bucket.destroy();
        },
      };
    },
  },
];

function s3Options(bucket: TestBucket) {
  return {
    bucket: bucket.bucket,
    regionEndpoint: bucket.endpoint,
    accessKey: bucket.accessKey,
    secretKey: bucket.secretKey,
    region: bucket.region,
    forcePathStyle: true,
  };
}

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

const digest = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

/** `data` as a stream of chunks of `size` bytes. */
function chunked(data: Buffer, size = 256 * 1024): Readable {
  const chunks: Buffer[] = [];
  for (let i = 0; i < data.length; i += size) chunks.push(data.subarray(i, i + size));
  return Readable.from(chunks);
}

/** Appends `data`, returning what append() said and every byte tap() saw. */
async function appendWithTap(d: StorageDriver, key: string, source: Readable): Promise<{ n: number; tapped: Buffer }> {
  const seen: Buffer[] = [];
  const n = await d.append(key, source, (c) => seen.push(Buffer.from(c)));
  return { n, tapped: Buffer.concat(seen) };
}

async function expectNotFound(p: Promise<unknown>): Promise<void> {
  await expect(p).rejects.toBeInstanceOf(PathNotFoundError);
}

/** Waits (bounded) until `check` holds; fails the test if it never does. */
async function eventually(check: () => Promise<boolean>, what: string, limitMs = 60_000): Promise<void> {
  const deadline = Date.now() + limitMs;
  while (Date.now() < deadline) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`never happened: ${what}`);
}

describe.each(harnesses)('storage driver contract: $name', ({ name, open }) => {
  let h: Harness;
  let d: StorageDriver;
  let seq = 0;
  /** A fresh directory key for each test, in the registry's layout style. */
  const fresh = () => `/docker/registry/v2/t${++seq}-${randomBytes(3).toString('hex')}`;

  beforeAll(async () => {
    h = await open();
    d = h.driver;
  });
  afterAll(async () => {
    await h?.cleanup();
  });

  test('putContent and getContent: round trip, replace, empty object, missing key', async () => {
    const dir = fresh();
    await d.putContent(`${dir}/a/link`, Buffer.from('sha256:abc'));
    expect((await d.getContent(`${dir}/a/link`)).toString()).toBe('sha256:abc');
    await d.putContent(`${dir}/a/link`, Buffer.from('replaced'));
    expect((await d.getContent(`${dir}/a/link`)).toString()).toBe('replaced');
    await d.putContent(`${dir}/empty`, new Uint8Array(0));
    expect((await d.getContent(`${dir}/empty`)).length).toBe(0);
    expect((await d.stat(`${dir}/empty`)).size).toBe(0);
    const big = randomBytes(3 * MiB + 17);
    await d.putContent(`${dir}/big`, big);
    expect((await d.getContent(`${dir}/big`)).equals(big)).toBe(true);
    await expectNotFound(d.getContent(`${dir}/nope`));
    await expectNotFound(d.getContent(`${dir}/a/link/deeper`));
  });

  test('putContent is atomic: concurrent readers see the old or the new bytes, never a mix', async () => {
    const key = `${fresh()}/_manifests/tags/latest/current/link`;
    const versions = ['a', 'b', 'c', 'd', 'e'].map((c) => Buffer.alloc(512 * 1024, c));
    await d.putContent(key, versions[0]);
    const valid = new Set(versions.map(digest));
    const reads: Promise<Buffer>[] = [];
    const writes: Promise<void>[] = [];
    for (let i = 1; i < versions.length; i++) {
      writes.push(d.putContent(key, versions[i]));
      for (let j = 0; j < 4; j++) reads.push(d.getContent(key));
    }
    await Promise.all(writes);
    for (const r of await Promise.all(reads)) expect(valid.has(digest(r))).toBe(true);
  });

  test('stat: files with size and times, directories, missing keys', async () => {
    const dir = fresh();
    await d.putContent(`${dir}/repo/_layers/sha256/aa/link`, Buffer.from('12345'));
    const file = await d.stat(`${dir}/repo/_layers/sha256/aa/link`);
    expect(file).toMatchObject({ key: `${dir}/repo/_layers/sha256/aa/link`, size: 5, isDir: false });
    expect(file.modTime).toBeInstanceOf(Date);
    expect(file.modTime.getFullYear()).toBeGreaterThanOrEqual(2024);
    expect(file.accessTime).toBeInstanceOf(Date);
    for (const k of [`${dir}/repo`, `${dir}/repo/_layers`, `${dir}/repo/_layers/sha256/aa`]) {
      expect((await d.stat(k)).isDir).toBe(true);
    }
    await expectNotFound(d.stat(`${dir}/repo/_layers/sha256/bb`));
    await expectNotFound(d.stat(`${dir}/rep`)); // a name prefix is no directory
    await expectNotFound(d.stat(`${dir}/nope`));
  });

  test('objectSize: the size of objects written whole; nothing for missing keys, directories, name prefixes and deleted objects', async () => {
    const dir = fresh();
    await d.putContent(`${dir}/repo/_layers/sha256/aa/link`, Buffer.from('sha256:aa'));
    await d.putContent(`${dir}/empty`, Buffer.alloc(0));
    await d.append(`${dir}/repo/_uploads/u1/data`, Readable.from([randomBytes(1000)]));
    await d.move(`${dir}/repo/_uploads/u1/data`, `${dir}/blobs/u1/data`);
    expect(await d.objectSize(`${dir}/repo/_layers/sha256/aa/link`)).toBe('sha256:aa'.length);
    expect(await d.objectSize(`${dir}/empty`)).toBe(0);
    expect(await d.objectSize(`${dir}/blobs/u1/data`)).toBe(1000);
    for (const k of [`${dir}/repo/_layers`, `${dir}/repo/_layers/sha256/bb/link`, `${dir}/rep`, `${dir}/repo/_layers/sha256/aa/link/x`]) {
      expect(await d.objectSize(k), k).toBeUndefined();
    }
    await d.delete(`${dir}/repo/_layers/sha256/aa`);
    expect(await d.objectSize(`${dir}/repo/_layers/sha256/aa/link`)).toBeUndefined();
  });

  test('list: names of the direct children (objects and directories), missing keys and files are errors', async () => {
    const dir = fresh();
    await d.putContent(`${dir}/tags/v1/current/link`, Buffer.from('x'));
    await d.putContent(`${dir}/tags/v1.0/current/link`, Buffer.from('x'));
    await d.putContent(`${dir}/tags/v2/current/link`, Buffer.from('x'));
    await d.putContent(`${dir}/tags/startedat`, Buffer.from('x'));
    expect((await d.list(`${dir}/tags`)).sort()).toEqual(['startedat', 'v1', 'v1.0', 'v2']);
    expect(await d.list(`${dir}/tags/v1`)).toEqual(['current']);
    expect(await d.list(`${dir}/tags/v1/current`)).toEqual(['link']);
    await expectNotFound(d.list(`${dir}/nope`));
    await expectNotFound(d.list(`${dir}/tags/v1/current/link`));
  });

  test('list pages through more than 1000 children, and delete removes a tree that large', async () => {
    const dir = fresh();
    const names = Array.from({ length: 1010 }, (_, i) => `r${String(i).padStart(4, '0')}`);
    for (let i = 0; i < names.length; i += 50) {
      await Promise.all(names.slice(i, i + 50).map((n) => d.putContent(`${dir}/repos/${n}/link`, Buffer.from(n))));
    }
    expect((await d.list(`${dir}/repos`)).sort()).toEqual(names);
    await d.delete(`${dir}/repos`);
    await expectNotFound(d.list(`${dir}/repos`));
    await expectNotFound(d.stat(`${dir}/repos/r0000/link`));
    if (h.bucket) expect(await h.bucket.keys(`contract-root${dir}/`)).toEqual([]);
  });

  test('reader: the whole object, byte ranges, ranges past the end; a missing key rejects before any stream', async () => {
    const dir = fresh();
    const data = randomBytes(2 * MiB + 5);
    await d.putContent(`${dir}/blob/data`, data);
    expect((await readAll(await d.reader(`${dir}/blob/data`))).equals(data)).toBe(true);
    expect((await readAll(await d.reader(`${dir}/blob/data`, { start: 0, end: 0 }))).equals(data.subarray(0, 1))).toBe(true);
    expect((await readAll(await d.reader(`${dir}/blob/data`, { start: 1000, end: MiB + 3 }))).equals(data.subarray(1000, MiB + 4))).toBe(true);
    // An end past the object stops at its last byte; a start past it reads nothing.
    expect((await readAll(await d.reader(`${dir}/blob/data`, { start: 2 * MiB, end: 10 * MiB }))).equals(data.subarray(2 * MiB))).toBe(true);
    expect((await readAll(await d.reader(`${dir}/blob/data`, { start: data.length, end: data.length + 10 }))).length).toBe(0);
    await d.putContent(`${dir}/empty`, new Uint8Array(0));
    expect((await readAll(await d.reader(`${dir}/empty`))).length).toBe(0);
    await expectNotFound(d.reader(`${dir}/nope`));
    await expectNotFound(d.reader(`${dir}/nope`, { start: 0, end: 10 }));
  });

  test('append: creates the object, accumulates over several calls, and taps exactly the bytes it reports', async () => {
    const key = `${fresh()}/_uploads/u1/data`;
    const pieces = [randomBytes(PART + 2 * MiB + 3), Buffer.from('xyz'), randomBytes(PART + 1), Buffer.alloc(0), randomBytes(MiB)];
    let expected = Buffer.alloc(0);
    for (const piece of pieces) {
      const { n, tapped } = await appendWithTap(d, key, chunked(piece, 100_000));
      expect(n).toBe(piece.length);
      expect(tapped.equals(piece)).toBe(true);
      expected = Buffer.concat([expected, piece]);
      expect((await d.stat(key)).size).toBe(expected.length);
      expect((await d.stat(key)).isDir).toBe(false);
    }
    expect(digest(await d.getContent(key))).toBe(digest(expected));
    expect(digest(await readAll(await d.reader(key)))).toBe(digest(expected));
    // Ranges inside one part, across part boundaries and across append calls.
    const firstCall = pieces[0].length;
    for (const [start, end] of [
      [0, 10],
      [PART - 5, PART + 5],
      [firstCall - 2, firstCall + 4],
      [PART - 1, 2 * PART + 2 * MiB],
      [expected.length - 3, expected.length + 100],
      [0, expected.length - 1],
    ]) {
      const got = await readAll(await d.reader(key, { start, end }));
      expect(got.equals(expected.subarray(start, Math.min(end, expected.length - 1) + 1))).toBe(true);
    }
    expect(await d.list(key.replace(/\/data$/, ''))).toEqual(['data']);
  });

  test('append: nothing to a new key makes an empty object; appending to a written object continues it', async () => {
    const dir = fresh();
    expect(await d.append(`${dir}/empty/data`, Readable.from([]))).toBe(0);
    expect((await d.stat(`${dir}/empty/data`)).size).toBe(0);
    expect((await d.getContent(`${dir}/empty/data`)).length).toBe(0);
    expect(await d.list(`${dir}/empty`)).toEqual(['data']);

    const head = randomBytes(1234);
    const tail = randomBytes(PART + 10);
    await d.putContent(`${dir}/grow/data`, head);
    expect(await d.append(`${dir}/grow/data`, chunked(tail))).toBe(tail.length);
    expect((await d.stat(`${dir}/grow/data`)).size).toBe(head.length + tail.length);
    expect((await d.getContent(`${dir}/grow/data`)).equals(Buffer.concat([head, tail]))).toBe(true);
  });

  test('append: when the source fails, what was stored stays (a prefix) and the append rejects', async () => {
    const key = `${fresh()}/_uploads/u2/data`;
    const data = randomBytes(PART + 3 * MiB);
    async function* broken() {
      for (let i = 0; i < data.length; i += 256 * 1024) yield data.subarray(i, i + 256 * 1024);
      throw new Error('client went away');
    }
    const seen: Buffer[] = [];
    await expect(d.append(key, Readable.from(broken()), (c) => seen.push(Buffer.from(c)))).rejects.toThrow(/client went away/);
    const tapped = Buffer.concat(seen);
    const size = (await d.stat(key)).size;
    expect(size).toBeGreaterThan(0);
    expect(size).toBeLessThanOrEqual(data.length);
    // The tap never reports bytes that are not stored (the filesystem may store more than it tapped).
    expect(tapped.equals(data.subarray(0, tapped.length))).toBe(true);
    if (name === 's3') expect(size).toBe(tapped.length);
    else expect(size).toBeLessThanOrEqual(tapped.length);
    expect((await d.getContent(key)).equals(data.subarray(0, size))).toBe(true);
    // The upload resumes from the stored size.
    const rest = data.subarray(size);
    expect(await d.append(key, chunked(rest))).toBe(rest.length);
    expect(digest(await d.getContent(key))).toBe(digest(data));
  });

  test('while an append is still running, every stored byte is readable by range, across part boundaries', async () => {
    const key = `${fresh()}/_uploads/fill/data`;
    const data = randomBytes(3 * PART + 123);
    const source = new PassThrough();
    let settled = false;
    const appending = d.append(key, source).finally(() => {
      settled = true;
    });
    appending.catch(() => {});
    // More than two parts' worth, and the stream stays open.
    const firstBatch = 2 * PART + MiB;
    for (let i = 0; i < firstBatch; i += 128 * 1024) source.write(data.subarray(i, Math.min(firstBatch, i + 128 * 1024)));
    let size = 0;
    await eventually(async () => {
      size = (await d.stat(key).catch(() => ({ size: 0 }))).size;
      return size >= 2 * PART;
    }, `stat() reaching ${2 * PART} bytes while the append runs`);
    expect(settled).toBe(false);
    expect(size).toBeLessThanOrEqual(firstBatch);
    for (const [start, end] of [
      [0, size - 1],
      [PART - 10, PART + 10],
      [2 * PART - 7, 2 * PART - 1],
      [PART, 2 * PART - 1],
    ]) {
      const got = await readAll(await d.reader(key, { start, end }));
      expect(got.equals(data.subarray(start, end + 1))).toBe(true);
    }
    // A range past what is stored gives what is there (a prefix of the stream), no error.
    const past = await readAll(await d.reader(key, { start: PART - 1, end: data.length + 100 }));
    expect(past.length).toBeGreaterThanOrEqual(size - PART + 1);
    expect(past.equals(data.subarray(PART - 1, PART - 1 + past.length))).toBe(true);
    expect(settled).toBe(false);
    source.end(data.subarray(firstBatch));
    expect(await appending).toBe(data.length - 0);
    expect(digest(await d.getContent(key))).toBe(digest(data));
    const across = await readAll(await d.reader(key, { start: 3 * PART - 50, end: 3 * PART + 50 }));
    expect(across.equals(data.subarray(3 * PART - 50, 3 * PART + 51))).toBe(true);
  });

  test('the bytes of a stream that pauses become readable without waiting for more', async () => {
    const key = `${fresh()}/_uploads/paused/data`;
    const data = randomBytes(MiB + 77);
    const source = new PassThrough();
    const appending = d.append(key, source);
    appending.catch(() => {});
    source.write(data.subarray(0, MiB));
    await eventually(async () => (await d.stat(key).catch(() => ({ size: 0 }))).size === MiB, 'the first MiB stored');
    expect((await readAll(await d.reader(key, { start: 0, end: MiB - 1 }))).equals(data.subarray(0, MiB))).toBe(true);
    source.end(data.subarray(MiB));
    expect(await appending).toBe(data.length);
    expect((await d.getContent(key)).equals(data)).toBe(true);
  });

  test('move: a plain object replaces the target and leaves nothing at the source', async () => {
    const dir = fresh();
    const data = randomBytes(MiB + 1);
    await d.putContent(`${dir}/_uploads/u/data`, data);
    await d.putContent(`${dir}/blobs/aa/data`, Buffer.from('old bytes'));
    await d.move(`${dir}/_uploads/u/data`, `${dir}/blobs/aa/data`);
    expect((await d.getContent(`${dir}/blobs/aa/data`)).equals(data)).toBe(true);
    expect((await d.stat(`${dir}/blobs/aa/data`)).size).toBe(data.length);
    await expectNotFound(d.stat(`${dir}/_uploads/u/data`));
    await expectNotFound(d.move(`${dir}/_uploads/u/data`, `${dir}/blobs/bb/data`));
    await expectNotFound(d.stat(`${dir}/blobs/bb/data`));
  });

  const composed: Array<{ label: string; calls: () => Buffer[] }> = [
    { label: 'many small parts (chunked PATCHes of 300 KiB)', calls: () => Array.from({ length: 20 }, () => randomBytes(300 * 1024 + 1)) },
    { label: 'parts of 5 MiB and more (one long PATCH)', calls: () => [randomBytes(3 * PART + 4321)] },
    {
      label: 'small and large parts mixed',
      calls: () => [randomBytes(MiB), randomBytes(PART + 7), Buffer.from('x'.repeat(100)), randomBytes(2 * PART), randomBytes(3 * MiB)],
    },
    { label: 'a single small part', calls: () => [randomBytes(1000)] },
    { label: 'a single part of exactly the part size', calls: () => [randomBytes(PART)] },
    { label: 'nothing at all (an empty blob)', calls: () => [Buffer.alloc(0)] },
  ];

  test.each(composed)('move composes an appended object: $label', async ({ calls }) => {
    const dir = fresh();
    const upload = `${dir}/repositories/team/app/_uploads/u/data`;
    const target = `${dir}/blobs/sha256/ab/abcd/data`;
    const pieces = calls();
    for (const piece of pieces) await d.append(upload, chunked(piece, 64 * 1024));
    const all = Buffer.concat(pieces);
    await d.putContent(target, Buffer.from('stale content at the target'));
    await d.move(upload, target);
    const stored = await d.getContent(target);
    expect(stored.length).toBe(all.length);
    expect(digest(stored)).toBe(digest(all));
    expect((await d.stat(target)).size).toBe(all.length);
    const mid = Math.floor(all.length / 2);
    expect((await readAll(await d.reader(target, { start: mid, end: mid + 99 }))).equals(all.subarray(mid, mid + 100))).toBe(true);
    await expectNotFound(d.stat(upload));
    await expectNotFound(d.reader(upload));
    // (The filesystem keeps the emptied directory; S3 has no empty directories.)
    expect(await d.list(`${dir}/repositories/team/app/_uploads/u`).catch(() => [])).toEqual([]);
    if (h.bucket) {
      // No part objects are left behind, and the target is one plain object.
      expect(await h.bucket.keys(`contract-root${dir}/repositories/`)).toEqual([]);
      expect(await h.bucket.keys(`contract-root${dir}/blobs/`)).toEqual([`contract-root${target}`]);
    }
  });

  test('delete: an object, a whole tree, an appended object; missing keys are fine; name-prefix siblings stay', async () => {
    const dir = fresh();
    await d.putContent(`${dir}/repo/_manifests/tags/v1/current/link`, Buffer.from('a'));
    await d.putContent(`${dir}/repo/_manifests/tags/v1/index/sha256/aa/link`, Buffer.from('a'));
    await d.putContent(`${dir}/repo/_manifests/tags/v10/current/link`, Buffer.from('b'));
    await d.append(`${dir}/repo/_uploads/u/data`, chunked(randomBytes(PART + 5)));
    await d.putContent(`${dir}/repo/_uploads/u/startedat`, Buffer.from('now'));
    await d.touch(`${dir}/repo/_manifests/tags/v1/current/link`, { accessed: new Date('2020-01-01T00:00:00Z') });

    await d.delete(`${dir}/repo/_manifests/tags/v1`);
    await expectNotFound(d.stat(`${dir}/repo/_manifests/tags/v1`));
    await expectNotFound(d.getContent(`${dir}/repo/_manifests/tags/v1/current/link`));
    expect(await d.list(`${dir}/repo/_manifests/tags`)).toEqual(['v10']);
    expect((await d.getContent(`${dir}/repo/_manifests/tags/v10/current/link`)).toString()).toBe('b');

    await d.delete(`${dir}/repo/_uploads/u/data`);
    await expectNotFound(d.stat(`${dir}/repo/_uploads/u/data`));
    expect(await d.list(`${dir}/repo/_uploads/u`)).toEqual(['startedat']);
    await d.delete(`${dir}/repo/_uploads`);
    await expectNotFound(d.list(`${dir}/repo/_uploads`));

    await d.delete(`${dir}/repo/_manifests/tags/v10/current/link`);
    await expectNotFound(d.stat(`${dir}/repo/_manifests/tags/v10/current/link`));
    await d.delete(`${dir}/nope`);
    await d.delete(`${dir}/repo/nope/deeper`);
    await d.delete(dir);
    await expectNotFound(d.stat(dir));
    if (h.bucket) expect(await h.bucket.keys(`contract-root${dir}/`)).toEqual([]);
  });

  test('touch: accessed sets the access time, modified the modification time, each leaving the other', async () => {
    const key = `${fresh()}/_manifests/tags/latest/current/link`;
    await d.putContent(key, Buffer.from('sha256:1'));
    const before = await d.stat(key);
    const used = new Date('2021-03-04T05:06:07Z');
    await d.touch(key, { accessed: used });
    let st = await d.stat(key);
    expect(st.accessTime.getTime()).toBe(used.getTime());
    expect(st.modTime.getTime()).toBe(before.modTime.getTime());

    const validated = new Date('2022-06-07T08:09:10Z');
    await d.touch(key, { modified: validated });
    st = await d.stat(key);
    expect(st.modTime.getTime()).toBe(validated.getTime());
    expect(st.accessTime.getTime()).toBe(used.getTime());

    const a2 = new Date('2023-01-01T00:00:00Z');
    const m2 = new Date('2023-02-02T00:00:00Z');
    await d.touch(key, { accessed: a2, modified: m2 });
    st = await d.stat(key);
    expect([st.accessTime.getTime(), st.modTime.getTime()]).toEqual([a2.getTime(), m2.getTime()]);
    expect(st.size).toBe(8);
    expect((await d.getContent(key)).toString()).toBe('sha256:1');

    // Rewriting the object gives it fresh times, as a new file has.
    await d.putContent(key, Buffer.from('sha256:2'));
    st = await d.stat(key);
    expect(st.modTime.getTime()).toBeGreaterThan(m2.getTime());
    expect(st.modTime.getFullYear()).toBeGreaterThanOrEqual(2024);
    expect(st.size).toBe(8);

    await expectNotFound(d.touch(`${key}-nope`, { accessed: new Date() }));
  });

  test('touch works on large and appended objects without changing their bytes', async () => {
    const dir = fresh();
    const data = randomBytes(PART + MiB);
    await d.putContent(`${dir}/blobs/data`, data);
    await d.append(`${dir}/_uploads/u/data`, chunked(data));
    for (const key of [`${dir}/blobs/data`, `${dir}/_uploads/u/data`]) {
      const before = await d.stat(key);
      const used = new Date('2020-02-02T02:02:02Z');
      await d.touch(key, { accessed: used });
      const after = await d.stat(key);
      expect(after.accessTime.getTime()).toBe(used.getTime());
      expect(after.modTime.getTime()).toBe(before.modTime.getTime());
      expect(after.size).toBe(data.length);
      expect(digest(await d.getContent(key))).toBe(digest(data));
    }
    // The touched objects still list as one entry each, and still move.
    expect(await d.list(`${dir}/blobs`)).toEqual(['data']);
    await d.move(`${dir}/_uploads/u/data`, `${dir}/blobs2/data`);
    expect(digest(await d.getContent(`${dir}/blobs2/data`))).toBe(digest(data));
  });

  test('hidden bookkeeping objects never show in listings', async () => {
    const dir = fresh();
    await d.append(`${dir}/up/data`, chunked(randomBytes(2 * PART + 1)));
    await d.append(`${dir}/up/data`, Readable.from([Buffer.from('more')]));
    await d.putContent(`${dir}/up/link`, Buffer.from('l'));
    await d.touch(`${dir}/up/link`, { accessed: new Date('2020-01-01T00:00:00Z'), modified: new Date('2020-01-02T00:00:00Z') });
    await d.touch(`${dir}/up/data`, { accessed: new Date('2020-01-01T00:00:00Z') });
    await d.putContent(`${dir}/up/sub/file`, Buffer.from('f'));
    expect((await d.list(`${dir}/up`)).sort()).toEqual(['data', 'link', 'sub']);
    expect(await d.list(dir)).toEqual(['up']);
    await expectNotFound(d.list(`${dir}/up/data`));
    await expectNotFound(d.list(`${dir}/up/link`));
    expect((await d.stat(`${dir}/up/data`)).isDir).toBe(false);
    expect((await d.stat(`${dir}/up/link`)).isDir).toBe(false);
    if (h.bucket) {
      // They do exist, as objects of the bucket.
      const raw = await h.bucket.keys(`contract-root${dir}/`);
      expect(raw.some((k) => k.includes('/data/.parts/'))).toBe(true);
      expect(raw.some((k) => k.endsWith('/link/.times'))).toBe(true);
    }
  });
});

describe('S3 driver specifics (Ceph RGW)', () => {
  let bucket: TestBucket;
  beforeAll(async () => {
    bucket = await createTestBucket('s3-specifics');
  });
  afterAll(async () => {
    await bucket?.destroy();
  });

  /** A driver whose requests are recorded by command name. */
  function recordingDriver(extra: Partial<ConstructorParameters<typeof S3Driver>[0]> = {}) {
    const driver = new S3Driver({ ...s3Options(bucket), chunkSize: PART, ...extra });
    const sent: string[] = [];
    const send = driver.client.send.bind(driver.client);
    driver.client.send = ((command: { constructor: { name: string } }, ...rest: unknown[]) => {
      sent.push(command.constructor.name);
      return (send as (...a: unknown[]) => unknown)(command, ...rest);
    }) as typeof driver.client.send;
    return { driver, sent };
  }

  test('keys live under rootdirectory in distribution’s layout', async () => {
    const driver = new S3Driver({ ...s3Options(bucket), rootDirectory: '/registry/root/' });
    try {
      await driver.putContent('/docker/registry/v2/repositories/team/app/_layers/sha256/ab/link', Buffer.from('sha256:ab'));
      expect(await bucket.keys('registry/')).toEqual(['registry/root/docker/registry/v2/repositories/team/app/_layers/sha256/ab/link']);
      expect(await driver.list('/')).toEqual(['docker']);
      await expect(driver.delete('/')).rejects.toThrow(/root/);
    } finally {
      driver.destroy();
    }
  });

  test('composing parts of 5 MiB and more copies them server-side: no part bytes pass through the process', async () => {
    const { driver, sent } = recordingDriver({ rootDirectory: '/copy' });
    try {
      const data = randomBytes(3 * PART + 99);
      await driver.append('/up/data', chunked(data));
      sent.length = 0;
      await driver.move('/up/data', '/blob/data');
      expect(sent.filter((c) => c === 'UploadPartCopyCommand')).toHaveLength(4);
      expect(sent).not.toContain('UploadPartCommand');
      expect(sent).not.toContain('GetObjectCommand');
      expect(digest(await driver.getContent('/blob/data'))).toBe(digest(data));
    } finally {
      driver.destroy();
    }
  });

  test('composing small parts re-uploads them in pieces of at least 5 MiB, and copies what it can', async () => {
    const { driver, sent } = recordingDriver({ rootDirectory: '/mixed' });
    try {
      // 1 MiB + 1 MiB (small) then a long PATCH: 5 MiB pieces are gathered, the rest is copied.
      const pieces = [randomBytes(MiB), randomBytes(MiB), randomBytes(3 * PART)];
      for (const p of pieces) await driver.append('/up/data', chunked(p));
      sent.length = 0;
      await driver.move('/up/data', '/blob/data');
      expect(sent).toContain('UploadPartCommand');
      expect(sent).toContain('UploadPartCopyCommand');
      expect(digest(await driver.getContent('/blob/data'))).toBe(digest(Buffer.concat(pieces)));
    } finally {
      driver.destroy();
    }
  });

  test('large plain objects move with a multipart copy above multipartcopythresholdsize', async () => {
    const { driver, sent } = recordingDriver({ rootDirectory: '/bigcopy', multipartCopyThresholdSize: PART, multipartCopyChunkSize: PART });
    try {
      const data = randomBytes(2 * PART + 10);
      await driver.putContent('/a/data', data);
      sent.length = 0;
      await driver.move('/a/data', '/b/data');
      expect(sent.filter((c) => c === 'UploadPartCopyCommand')).toHaveLength(3);
      expect(sent).not.toContain('CopyObjectCommand');
      expect(digest(await driver.getContent('/b/data'))).toBe(digest(data));
      await expectNotFound(driver.stat('/a/data'));
    } finally {
      driver.destroy();
    }
  });

  test('an upload appended to in turn by two processes (two drivers) is one object', async () => {
    const a = new S3Driver({ ...s3Options(bucket), chunkSize: PART, rootDirectory: '/two' });
    const b = new S3Driver({ ...s3Options(bucket), chunkSize: PART, rootDirectory: '/two' });
    try {
      const pieces = [randomBytes(PART + 1), randomBytes(300), randomBytes(2 * MiB), randomBytes(PART)];
      for (const [i, p] of pieces.entries()) {
        const driver = i % 2 === 0 ? a : b;
        expect(await driver.append('/up/data', chunked(p))).toBe(p.length);
        const other = i % 2 === 0 ? b : a;
        expect((await other.stat('/up/data')).size).toBe(pieces.slice(0, i + 1).reduce((n, x) => n + x.length, 0));
      }
      await b.move('/up/data', '/blob/data');
      expect(digest(await a.getContent('/blob/data'))).toBe(digest(Buffer.concat(pieces)));
    } finally {
      a.destroy();
      b.destroy();
    }
  });

  test('parts are stored several at a time; a part that fails leaves a prefix, and parts stored past it are no part of the object', async () => {
    const { driver } = recordingDriver({ rootDirectory: '/concurrent', appendConcurrency: 3 });
    try {
      const data = randomBytes(4 * PART + 1000);
      // The second part's PUT fails; the third and fourth are stored meanwhile (in flight together).
      let puts = 0;
      const send = driver.client.send.bind(driver.client);
      driver.client.send = ((command: { constructor: { name: string }; input?: { Key?: string } }, ...rest: unknown[]) => {
        if (command.constructor.name === 'PutObjectCommand' && /\.parts\//.test(command.input?.Key ?? '') && ++puts === 2) {
          return new Promise((_, reject) => setTimeout(() => reject(new Error('injected part failure')), 200));
        }
        return (send as (...a: unknown[]) => unknown)(command, ...rest);
      }) as typeof driver.client.send;
      await expect(driver.append('/up/data', chunked(data))).rejects.toThrow(/injected part failure/);
      driver.client.send = send as typeof driver.client.send;
      // Parts past the failed one were stored meanwhile.
      expect((await bucket.keys('concurrent/up/data/.parts/')).length).toBeGreaterThan(1);
      // Only the first part counts; the parts stored after the gap are not the object's bytes.
      expect((await driver.stat('/up/data')).size).toBe(PART);
      expect((await driver.getContent('/up/data')).equals(data.subarray(0, PART))).toBe(true);
      // Continuing from what stat() says removes the strays first, so the object is exactly what was appended.
      const rest = randomBytes(PART + 7);
      expect(await driver.append('/up/data', chunked(rest))).toBe(rest.length);
      const expected = Buffer.concat([data.subarray(0, PART), rest]);
      expect((await driver.stat('/up/data')).size).toBe(expected.length);
      await driver.move('/up/data', '/blob/data');
      expect(digest(await driver.getContent('/blob/data'))).toBe(digest(expected));
      expect(await bucket.keys('concurrent/up/')).toEqual([]);
    } finally {
      driver.destroy();
    }
  });

  test('putStream: the object appears whole at the end, one multipart upload, nothing copied; a failed source leaves nothing', async () => {
    const { driver, sent } = recordingDriver({ rootDirectory: '/stream' });
    try {
      const data = randomBytes(2 * PART + 12345);
      const tapped: number[] = [];
      // Nothing is visible while the stream runs, even once its first part is stored.
      const source = new PassThrough();
      let firstPartStored!: () => void;
      const stored = new Promise<void>((resolve) => {
        firstPartStored = resolve;
      });
      const writing = driver.putStream('/blobs/x/data', source, (chunk) => {
        tapped.push(chunk.length);
        firstPartStored();
      });
      source.write(data.subarray(0, PART + 10));
      await stored;
      expect(await driver.objectSize('/blobs/x/data')).toBeUndefined();
      source.end(data.subarray(PART + 10));
      expect(await writing).toBe(data.length);
      expect(tapped.reduce((a, b) => a + b, 0)).toBe(data.length);
      expect(digest(await driver.getContent('/blobs/x/data'))).toBe(digest(data));
      expect(sent.filter((c) => c === 'UploadPartCommand')).toHaveLength(3);
      expect(sent).not.toContain('UploadPartCopyCommand');
      expect(await bucket.keys('stream/blobs/x/')).toEqual(['stream/blobs/x/data']);

      // A source that fails: no object, and the multipart upload is aborted.
      // It fails once the driver has taken a whole part (on its way while the upload is aborted).
      const failing = Readable.from(
        (async function* () {
          yield randomBytes(PART + 1);
          throw new Error('upstream went away');
        })(),
      );
      await expect(driver.putStream('/blobs/y/data', failing)).rejects.toThrow(/upstream went away/);
      expect(await driver.objectSize('/blobs/y/data')).toBeUndefined();
      const open = await bucket.client.send(new ListMultipartUploadsCommand({ Bucket: bucket.bucket, Prefix: 'stream/' }));
      expect(open.Uploads ?? []).toEqual([]);
    } finally {
      driver.destroy();
    }
  });

  test('touch never rewrites the object (its ETag and Last-Modified stay)', async () => {
    const driver = new S3Driver({ ...s3Options(bucket), rootDirectory: '/touch' });
    try {
      await driver.putContent('/blob/data', randomBytes(PART + 1));
      const head = () => bucket.client.send(new HeadObjectCommand({ Bucket: bucket.bucket, Key: 'touch/blob/data' }));
      const before = await head();
      await driver.touch('/blob/data', { accessed: new Date('2020-01-01T00:00:00Z'), modified: new Date('2020-01-01T00:00:00Z') });
      const after = await head();
      expect(after.ETag).toBe(before.ETag);
      expect(after.LastModified?.getTime()).toBe(before.LastModified?.getTime());
      expect((await driver.stat('/blob/data')).modTime.toISOString()).toBe('2020-01-01T00:00:00.000Z');
    } finally {
      driver.destroy();
    }
  });
});
