// The S3 driver's pieces that need no S3: distribution's storage.s3 config
// keys (file and REGISTRY_STORAGE_S3_* environment), the driver factory, and
// the plan that composes appended parts into one multipart upload.
import { describe, expect, test } from 'vitest';
import { loadConfigObject, loadConfigText } from '../../server/src/config/load.ts';
import { createDriver, describeStorage } from '../../server/src/storage/factory.ts';
import { FilesystemDriver } from '../../server/src/storage/filesystem.ts';
import { planCompose, S3Driver } from '../../server/src/storage/s3.ts';

const MiB = 1024 * 1024;

describe('storage.s3 configuration', () => {
  test('distribution’s s3 keys load as they are', () => {
    const { config } = loadConfigText(
      [
        'version: 0.1',
        'storage:',
        '  s3:',
        '    accesskey: AKIAEXAMPLE',
        '    secretkey: secret/example',
        '    region: eu-west-1',
        '    regionendpoint: https://s3.example.com',
        '    forcepathstyle: true',
        '    accelerate: false',
        '    bucket: registry-bucket',
        '    encrypt: true',
        '    keyid: mykeyid',
        '    secure: true',
        '    v4auth: true',
        '    chunksize: 5242880',
        '    multipartcopychunksize: 33554432',
        '    multipartcopymaxconcurrency: 100',
        '    multipartcopythresholdsize: 33554432',
        '    rootdirectory: /s3/object/name/prefix',
        '    usedualstack: false',
        '    loglevel: debug',
        '    storageclass: STANDARD',
        '    skipverify: false',
        '  delete:',
        '    enabled: true',
      ].join('\n'),
      {},
    );
    expect(config.storage.filesystem).toBeUndefined();
    expect(config.storage.s3).toMatchObject({
      bucket: 'registry-bucket',
      region: 'eu-west-1',
      regionendpoint: 'https://s3.example.com',
      forcepathstyle: true,
      chunksize: 5 * MiB,
      rootdirectory: '/s3/object/name/prefix',
      encrypt: true,
      keyid: 'mykeyid',
    });
  });

  test('defaults, sizes with units, and REGISTRY_STORAGE_S3_* overrides', () => {
    const { config, ignoredEnv } = loadConfigObject(
      { storage: { s3: { bucket: 'b', chunksize: '16MiB' } } },
      {
        REGISTRY_STORAGE_S3_ACCESSKEY: 'from-env',
        REGISTRY_STORAGE_S3_SECRETKEY: 'secret-from-env',
        REGISTRY_STORAGE_S3_REGIONENDPOINT: 'http://127.0.0.1:7480',
        REGISTRY_STORAGE_S3_FORCEPATHSTYLE: 'true',
        REGISTRY_STORAGE_S3_MULTIPARTCOPYMAXCONCURRENCY: '8',
      },
    );
    expect(ignoredEnv).toEqual([]);
    expect(config.storage.s3).toMatchObject({
      bucket: 'b',
      region: 'us-east-1',
      accesskey: 'from-env',
      secretkey: 'secret-from-env',
      regionendpoint: 'http://127.0.0.1:7480',
      forcepathstyle: true,
      chunksize: 16 * MiB,
      secure: true,
      multipartcopymaxconcurrency: 8,
      multipartcopychunksize: 32 * MiB,
      multipartcopythresholdsize: 32 * MiB,
    });
  });

  test('refused: no driver, both drivers, parts below S3’s 5 MiB minimum, half a key pair, unknown keys', () => {
    const fail = (raw: Record<string, unknown>) => () => loadConfigObject(raw, {});
    expect(fail({ storage: {} })).toThrow(/storage\.filesystem: a storage driver is required \(storage\.filesystem or storage\.s3\)/);
    expect(fail({ storage: { filesystem: { rootdirectory: '/x' }, s3: { bucket: 'b' } } })).toThrow(/storage\.s3: exactly one storage driver/);
    expect(fail({ storage: { s3: { bucket: 'b', chunksize: 1024 } } })).toThrow(/storage\.s3\.chunksize: must be at least 5 MiB/);
    expect(fail({ storage: { s3: { bucket: 'b', accesskey: 'a' } } })).toThrow(/storage\.s3\.secretkey/);
    expect(fail({ storage: { s3: { bucket: 'b', v4auth: false } } })).toThrow(/storage\.s3\.v4auth/);
    expect(fail({ storage: { s3: { bucket: 'b', buckett: 'x' } } })).toThrow(/unknown key "storage\.s3\.buckett"/);
    expect(fail({ storage: { s3: {} } })).toThrow(/storage\.s3\.bucket/);
  });

  test('createDriver picks the driver the config names', async () => {
    const s3 = loadConfigObject({ storage: { s3: { bucket: 'b', regionendpoint: 'http://127.0.0.1:1', rootdirectory: '/pfx' } } }, {}).config;
    const driver = await createDriver(s3);
    expect(driver).toBeInstanceOf(S3Driver);
    expect(driver.name).toBe('s3');
    expect((driver as S3Driver).bucket).toBe('b');
    (driver as S3Driver).destroy();
    expect(describeStorage(s3)).toBe('s3://b/pfx');
    const fs = loadConfigObject({ storage: { filesystem: { rootdirectory: '/tmp/x' } } }, {}).config;
    expect(await createDriver(fs)).toBeInstanceOf(FilesystemDriver);
    expect(describeStorage(fs)).toBe('/tmp/x');
  });
});

describe('composing appended parts (planCompose)', () => {
  type Plan = ReturnType<typeof planCompose>;
  const MIN = 5 * MiB;

  /** The bytes a plan produces, as (part key, offset) pairs in order, and every piece's size. */
  function expand(plan: Plan): { bytes: Array<[string, number, number]>; sizes: number[] } {
    const bytes: Array<[string, number, number]> = [];
    const sizes: number[] = [];
    for (const item of plan) {
      const ranges = item.kind === 'copy' ? [item] : item.segments;
      let size = 0;
      for (const r of ranges) {
        bytes.push([r.key, r.start, r.end]);
        size += r.end - r.start + 1;
      }
      if (item.kind === 'upload') expect(item.size).toBe(size);
      sizes.push(size);
    }
    return { bytes, sizes };
  }

  function check(sizes: number[], uploadAll = false, min = MIN): Plan {
    const parts = sizes.map((size, i) => ({ key: `p${i}`, size }));
    const plan = planCompose(parts, min, uploadAll);
    const { bytes, sizes: pieces } = expand(plan);
    // Every byte of every part, once, in order.
    const flat: Array<[string, number, number]> = [];
    for (const p of parts) if (p.size > 0) flat.push([p.key, 0, p.size - 1]);
    const merged: Array<[string, number, number]> = [];
    for (const r of bytes) {
      const last = merged.at(-1);
      if (last && last[0] === r[0] && last[2] + 1 === r[1]) last[2] = r[2];
      else merged.push([...r]);
    }
    expect(merged).toEqual(flat);
    // S3's rule: every piece but the last has at least the minimum size.
    for (const s of pieces.slice(0, -1)) expect(s).toBeGreaterThanOrEqual(min);
    return plan;
  }

  test('parts of at least 5 MiB are all copied server-side, a small last part too', () => {
    const plan = check([MIN, 7 * MiB, MIN, 100]);
    expect(plan.map((p) => p.kind)).toEqual(['copy', 'copy', 'copy', 'copy']);
  });

  test('small parts are gathered into re-uploaded pieces of 5 to 10 MiB', () => {
    const plan = check(Array.from({ length: 30 }, () => 700 * 1024));
    expect(plan.every((p) => p.kind === 'upload')).toBe(true);
    for (const p of plan.slice(0, -1)) expect(p.kind === 'upload' && p.size < 2 * MIN).toBe(true);
  });

  test('mixed parts: the head of a big part completes a small piece, and its rest is copied', () => {
    const plan = check([MiB, MiB, 20 * MiB, 300, MIN, 2 * MiB]);
    expect(plan.map((p) => p.kind)).toEqual(['upload', 'copy', 'upload', 'copy']);
  });

  test('random layouts keep every byte in order and S3’s minimum', () => {
    let seed = 42;
    const rand = () => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed / 2 ** 31;
    };
    for (let n = 0; n < 200; n++) {
      const count = 1 + Math.floor(rand() * 25);
      const sizes = Array.from({ length: count }, () => {
        const r = rand();
        return r < 0.1 ? 0 : r < 0.5 ? Math.floor(rand() * MiB) : r < 0.8 ? MIN + Math.floor(rand() * 3 * MiB) : Math.floor(rand() * 12 * MiB);
      });
      check(sizes);
      check(sizes, true, 6 * MiB);
    }
  });
});
