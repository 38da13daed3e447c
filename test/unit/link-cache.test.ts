// storage.cache.blobdescriptor: inmemory also trusts repository links seen to
// exist for a short while (distribution's inmemory cache keeps them for good):
// deletions by this process show at once, deletions by another process once
// the TTL has passed.
import { rmSync } from 'node:fs';
import * as path from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { BlobStore } from '../../server/src/registry/blob-store.ts';
import { parseDigest } from '../../server/src/registry/digest.ts';
import { FilesystemDriver } from '../../server/src/storage/filesystem.ts';
import { paths } from '../../server/src/storage/paths.ts';
import { makeTempDir } from '../helpers/server.ts';

const root = makeTempDir('rs-link-cache-');
afterAll(() => rmSync(root, { recursive: true, force: true }));

const digest = parseDigest(`sha256:${'ab'.repeat(32)}`);
const link = paths.layerLink('team/app', digest);
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('repository links seen to exist (storage.cache.blobdescriptor: inmemory)', () => {
  test('a link deleted by this process is gone at once', async () => {
    const blobs = new BlobStore(new FilesystemDriver(path.join(root, 'a')), 100, undefined, 60_000);
    await blobs.writeLink(link, digest);
    expect(await blobs.hasLink(link)).toBe(true);
    await blobs.deleteLinks(paths.layerLinkDir('team/app', digest));
    expect(await blobs.hasLink(link)).toBe(false);
  });

  test('a link deleted by another process is trusted until the TTL passes, then asked for again', async () => {
    const dir = path.join(root, 'b');
    const blobs = new BlobStore(new FilesystemDriver(dir), 100, undefined, 300);
    await blobs.writeLink(link, digest);
    expect(await blobs.hasLink(link)).toBe(true);
    rmSync(path.join(dir, paths.layerLinkDir('team/app', digest)), { recursive: true });
    expect(await blobs.hasLink(link)).toBe(true);
    await sleep(350);
    expect(await blobs.hasLink(link)).toBe(false);
  });

  test('a link this process wrote is known at once; one written while a deletion ran is asked for', async () => {
    const dir = path.join(root, 'd');
    const driver = new FilesystemDriver(dir);
    let asked = 0;
    const objectSize = driver.objectSize.bind(driver);
    driver.objectSize = (key: string) => {
      asked++;
      return objectSize(key);
    };
    const blobs = new BlobStore(driver, 100, undefined, 60_000);
    await blobs.writeLink(link, digest);
    expect(await blobs.hasLink(link)).toBe(true);
    expect(asked).toBe(0);

    // A deletion overlapping the write: the write may have landed before it, so it is not trusted.
    const other = paths.layerLink('team/other', digest);
    await Promise.all([blobs.writeLink(other, digest), blobs.deleteLinks(paths.layerLinkDir('team/other', digest))]);
    const there = await blobs.hasLink(other);
    expect(asked).toBe(1);
    expect(there).toBe((await objectSize(other)) !== undefined);
  });

  test('without the TTL (the default) every check asks the storage', async () => {
    const dir = path.join(root, 'c');
    const blobs = new BlobStore(new FilesystemDriver(dir));
    await blobs.writeLink(link, digest);
    expect(await blobs.hasLink(link)).toBe(true);
    rmSync(path.join(dir, paths.layerLinkDir('team/app', digest)), { recursive: true });
    expect(await blobs.hasLink(link)).toBe(false);
    // Absent links are never cached.
    await blobs.writeLink(link, digest);
    expect(await blobs.hasLink(link)).toBe(true);
  });
});
