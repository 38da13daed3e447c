// A manifest fetched from the upstream is answered from the verified bytes
// at once and stored in the cache behind the answer (on S3 storing is four
// or five requests in a row). Requests for it meanwhile wait for the write
// instead of fetching it again; a write that fails loses nothing: the next
// request fetches it again. The storage is held or broken here by wrapping
// the mirror's own driver.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fetchManifest, verifyPull } from '../helpers/clients.ts';
import { cachedTag, hasRevision, type LocalMirror, startMirror } from '../helpers/mirror/mirror.ts';
import { FakeUpstream } from '../helpers/mirror/upstream.ts';
import { buildImage } from '../helpers/oci.ts';
import type { StorageDriver } from '../../server/src/storage/driver.ts';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('mirror: manifests are answered before they are stored', () => {
  let hub: FakeUpstream;
  let mirror: LocalMirror;
  let driver: StorageDriver;
  const held = buildImage({ files: [{ 'a.txt': 'stored behind the answer\n' }] });
  const broken = buildImage({ files: [{ 'b.txt': 'the cache write fails once\n' }] });
  /** What putContent does to tag links (`current/link`) of a repository, by repository. */
  const tagWrites = new Map<string, (write: () => Promise<void>) => Promise<void>>();

  beforeAll(async () => {
    hub = await FakeUpstream.start();
    await hub.pushImage('team/held', 'v1', held);
    await hub.pushImage('team/broken', 'v1', broken);
    mirror = await startMirror({ upstreams: [{ host: 'docker.io', url: hub.url }] });
    driver = mirror.server.mirror!.local.driver;
    const putContent = driver.putContent.bind(driver);
    driver.putContent = (key, data) => {
      const repo = /\/repositories\/docker\.io\/(.+)\/_manifests\/tags\/[^/]+\/current\/link$/.exec(key)?.[1];
      const hook = repo ? tagWrites.get(repo) : undefined;
      return hook ? hook(() => putContent(key, data)) : putContent(key, data);
    };
  });

  afterAll(async () => {
    await mirror?.stop();
    await hub?.stop();
  });

  it('answers while the tag is not stored yet; requests meanwhile wait for the write and fetch nothing again', async () => {
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    tagWrites.set('team/held', async (write) => {
      await gate;
      await write();
    });

    const first = await fetchManifest(mirror.url, undefined, 'team/held', 'v1');
    expect(first).toMatchObject({ status: 200, digest: held.manifest.digest, actualDigest: held.manifest.digest });
    expect(cachedTag(mirror.dataDir, 'docker.io/team/held', 'v1')).toBeUndefined();

    // By tag and by digest (what docker and containerd ask next): both wait for the write.
    let answered = 0;
    const again = [
      fetchManifest(mirror.url, undefined, 'team/held', 'v1'),
      fetchManifest(mirror.url, undefined, 'team/held', held.manifest.digest),
    ].map((p) => p.finally(() => answered++));
    await sleep(300);
    expect(answered).toBe(0);
    release();
    for (const res of await Promise.all(again)) expect(res).toMatchObject({ status: 200, actualDigest: held.manifest.digest });

    expect(cachedTag(mirror.dataDir, 'docker.io/team/held', 'v1')).toBe(held.manifest.digest);
    expect(hasRevision(mirror.dataDir, 'docker.io/team/held', held.manifest.digest)).toBe(true);
    await hub.sync();
    expect(hub.requests('GET', '/v2/team/held/manifests/v1')).toHaveLength(1);
    expect(hub.requests('GET', `/v2/team/held/manifests/${held.manifest.digest}`)).toHaveLength(0);
    tagWrites.delete('team/held');
  });

  it('a failed cache write still answers the client; the next request fetches it again and stores it', async () => {
    let failures = 0;
    tagWrites.set('team/broken', async (write) => {
      if (failures++ === 0) throw new Error('disk full (injected)');
      await write();
    });

    const first = await fetchManifest(mirror.url, undefined, 'team/broken', 'v1');
    expect(first).toMatchObject({ status: 200, actualDigest: broken.manifest.digest });
    await mirror.settled();
    expect(cachedTag(mirror.dataDir, 'docker.io/team/broken', 'v1')).toBeUndefined();

    const pulled = await verifyPull(mirror.url, undefined, 'team/broken', 'v1');
    expect(pulled.digest).toBe(broken.manifest.digest);
    await mirror.settled();
    expect(cachedTag(mirror.dataDir, 'docker.io/team/broken', 'v1')).toBe(broken.manifest.digest);
    await hub.sync();
    expect(hub.requests('GET', '/v2/team/broken/manifests/v1')).toHaveLength(2);
    tagWrites.delete('team/broken');
  });
});
