// One upstream fetch per manifest across replicas: the replica that takes the
// manifest's lock fetches and stores it; one that waited for the lock finds it
// in the shared storage. Two mirrors over one data directory and one in-process
// lock stand in for two replicas and Redis here (test/scale/mirror.test.ts runs
// the real thing); a lock that cannot be taken (Redis down) does not stop a pull.
import { rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfigText } from '../../server/src/config/load.ts';
import { silentLogger } from '../../server/src/log/logger.ts';
import { MirrorRegistry } from '../../server/src/proxy/mirror-registry.ts';
import { Upstreams } from '../../server/src/proxy/upstreams.ts';
import { type Exclusive, KeyedLock } from '../../server/src/registry/keyed-lock.ts';
import { LocalRegistry } from '../../server/src/registry/local-registry.ts';
import { FilesystemDriver } from '../../server/src/storage/filesystem.ts';
import { FakeUpstream } from '../helpers/mirror/upstream.ts';
import { buildImage } from '../helpers/oci.ts';
import { makeTempDir } from '../helpers/server.ts';

describe('mirror: manifest fetches under a lock shared by replicas', () => {
  let hub: FakeUpstream;
  const mirrors: MirrorRegistry[] = [];
  const dirs: string[] = [];

  /** A mirror of `hub` (as docker.io) on `dir`, with `locks` as its cross-replica manifest lock. */
  function replica(dir: string, locks: Exclusive): MirrorRegistry {
    const yaml = `version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: ${dir}\nproxy:\n  upstreams:\n    - host: docker.io\n      url: ${hub.url}\n`;
    const { config } = loadConfigText(yaml, {});
    const local = new LocalRegistry(new FilesystemDriver(dir), { deleteEnabled: false, readOnly: true });
    const mirror = new MirrorRegistry(local, Upstreams.fromConfig(config.proxy!, {}), { tagFreshnessMs: 0, logger: silentLogger, manifestLocks: locks });
    mirrors.push(mirror);
    return mirror;
  }

  beforeAll(async () => {
    hub = await FakeUpstream.start();
  });

  afterAll(async () => {
    await Promise.all(mirrors.map((m) => m.close()));
    await hub?.stop();
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  });

  it('two replicas asked at once for a new tag: one upstream GET, the same manifest from both', async () => {
    const image = buildImage({ files: [{ 'a.txt': 'asked on two replicas\n' }] });
    await hub.pushImage('team/shared', 'v1', image);
    const dir = makeTempDir('rs-manifest-locks-');
    dirs.push(dir);
    const lock = new KeyedLock();
    const [a, b] = [replica(dir, lock), replica(dir, lock)];

    const results = await Promise.all([a, b, a, b].map((m) => m.getManifest('docker.io/team/shared', 'v1')));
    for (const r of results) expect(r.digest.value).toBe(image.manifest.digest);
    for (const r of results) expect(r.body.equals(image.manifest.data)).toBe(true);
    await hub.sync();
    expect(hub.requests('GET', '/v2/team/shared/manifests/v1')).toHaveLength(1);
  });

  it('a lock that cannot be taken (Redis down) does not stop the pull: the replica fetches on its own', async () => {
    const image = buildImage({ files: [{ 'b.txt': 'no lock to be had\n' }] });
    await hub.pushImage('team/nolock', 'v1', image);
    const dir = makeTempDir('rs-manifest-nolock-');
    dirs.push(dir);
    const unreachable: Exclusive = { run: () => Promise.reject(new Error('connect ECONNREFUSED 127.0.0.1:6379 (injected)')) };
    const m = replica(dir, unreachable);

    const result = await m.getManifest('docker.io/team/nolock', 'v1');
    expect(result.digest.value).toBe(image.manifest.digest);
    await m.settled();
    // Stored as usual: the next request is answered from the cache.
    expect((await m.getManifest('docker.io/team/nolock', 'v1')).cache).toBe('hit');
    await hub.sync();
    expect(hub.requests('GET', '/v2/team/nolock/manifests/v1')).toHaveLength(1);
  });
});
