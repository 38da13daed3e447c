// Two real upstreams (distribution 2.8.2) behind one mirror: which upstream a
// request goes to (containerd's ?ns=, a leading registry host, the default),
// Docker Hub's library/ names, isolation of the same repository name on two
// upstreams, and the manifest cache rules (by digest: never asks upstream; by
// tag: HEAD revalidation, GET only when the tag moved; tagfreshness).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { errorCodes, RegistryClient } from '../helpers/client.ts';
import { fetchManifest, MANIFEST_ACCEPT, verifyPull } from '../helpers/clients.ts';
import { cachedTag, hasRevision, type LocalMirror, startMirror } from '../helpers/mirror/mirror.ts';
import { HostileUpstream } from '../helpers/hostile-upstream.ts';
import { FakeUpstream } from '../helpers/mirror/upstream.ts';
import { buildImage, buildIndex } from '../helpers/oci.ts';

describe('mirror: routing between two upstreams and manifest caching', () => {
  // `hub` plays docker.io, `gh` plays ghcr.io.
  let hub: FakeUpstream;
  let gh: FakeUpstream;
  let mirror: LocalMirror;
  let client: RegistryClient;
  const hubApp = buildImage({ files: [{ 'who.txt': 'docker.io team/app\n' }] });
  const ghApp = buildImage({ files: [{ 'who.txt': 'ghcr.io team/app\n' }] });
  const alpine = buildImage({ files: [{ 'etc/os-release': 'NAME="Alpine (test)"\n' }] });
  const multi = buildIndex([buildImage({ architecture: 'amd64' }), buildImage({ architecture: 'arm64' })]);

  beforeAll(async () => {
    [hub, gh] = await Promise.all([FakeUpstream.start(), FakeUpstream.start()]);
    await hub.pushImage('team/app', 'v1', hubApp);
    await hub.pushImage('library/alpine', '3.20', alpine);
    await gh.pushImage('team/app', 'v1', ghApp);
    await gh.pushIndex('org/multi', 'latest', multi);
    mirror = await startMirror({
      upstreams: [
        { host: 'docker.io', url: hub.url },
        { host: 'ghcr.io', url: gh.url },
      ],
    });
    client = new RegistryClient(mirror.url);
  });

  afterAll(async () => {
    await mirror?.stop();
    await Promise.all([hub?.dispose(), gh?.dispose()]);
  });

  const digestAt = async (path: string) => {
    const res = await client.req(path, { headers: { accept: MANIFEST_ACCEPT } });
    return { status: res.status, digest: res.header('docker-content-digest'), codes: errorCodes(res) };
  };

  it('GET and HEAD of a reference that is not a valid tag → 404 MANIFEST_UNKNOWN, and the upstream is not asked', async () => {
    await hub.sync();
    const before = hub.requests(undefined, /\/manifests\//).length;
    for (const tag of ['.INVALID_MANIFEST_NAME', '-x']) {
      for (const method of ['GET', 'HEAD'] as const) {
        const res = await client.req(`/v2/team/app/manifests/${tag}`, { method, headers: { accept: MANIFEST_ACCEPT } });
        expect(res.status, `${method} ${tag}`).toBe(404);
        if (method === 'GET') expect(errorCodes(res)).toEqual(['MANIFEST_UNKNOWN']);
      }
    }
    expect(await hub.count(undefined, /\/manifests\//)).toBe(before);
  });

  it('routes by ?ns=, by a leading registry host, else to the default upstream; the same name on two upstreams stays apart', async () => {
    // Default upstream (docker.io) and its explicit forms.
    expect(await digestAt('/v2/team/app/manifests/v1')).toMatchObject({ status: 200, digest: hubApp.manifest.digest });
    expect(await digestAt('/v2/team/app/manifests/v1?ns=docker.io')).toMatchObject({ status: 200, digest: hubApp.manifest.digest });
    expect(await digestAt('/v2/docker.io/team/app/manifests/v1')).toMatchObject({ status: 200, digest: hubApp.manifest.digest });
    // The second upstream, the same repository name, other content.
    expect(await digestAt('/v2/team/app/manifests/v1?ns=ghcr.io')).toMatchObject({ status: 200, digest: ghApp.manifest.digest });
    expect(await digestAt('/v2/ghcr.io/team/app/manifests/v1')).toMatchObject({ status: 200, digest: ghApp.manifest.digest });

    // Whole pulls through each route give each upstream's own bytes.
    expect((await verifyPull(mirror.url, undefined, 'team/app', 'v1')).digest).toBe(hubApp.manifest.digest);
    expect((await verifyPull(mirror.url, undefined, 'ghcr.io/team/app', 'v1')).digest).toBe(ghApp.manifest.digest);

    // Cached apart, under each upstream's host (stored a moment after they were answered).
    await mirror.settled();
    expect(cachedTag(mirror.dataDir, 'docker.io/team/app', 'v1')).toBe(hubApp.manifest.digest);
    expect(cachedTag(mirror.dataDir, 'ghcr.io/team/app', 'v1')).toBe(ghApp.manifest.digest);
    expect(hasRevision(mirror.dataDir, 'docker.io/team/app', ghApp.manifest.digest)).toBe(false);
    expect(hasRevision(mirror.dataDir, 'ghcr.io/team/app', hubApp.manifest.digest)).toBe(false);

    // Each upstream only ever saw its own content asked for.
    await Promise.all([hub.sync(), gh.sync()]);
    const hubPaths = hub.requests().map((e) => e.path).join('\n');
    const ghPaths = gh.requests().map((e) => e.path).join('\n');
    for (const d of [ghApp.manifest.digest, ghApp.config.digest, ...ghApp.layers.map((l) => l.digest)]) expect(hubPaths).not.toContain(d);
    for (const d of [hubApp.manifest.digest, hubApp.config.digest, ...hubApp.layers.map((l) => l.digest)]) expect(ghPaths).not.toContain(d);
    // The mirror asked with the remote name, never with its cache prefix or the ns parameter.
    expect(hub.requests().every((e) => !e.path.includes('docker.io') && !e.query.includes('ns='))).toBe(true);
    expect(gh.requests().every((e) => !e.path.includes('ghcr.io') && !e.query.includes('ns='))).toBe(true);

    // A manifest digest of one upstream is not served under the other's name (that upstream is asked, and has none).
    expect((await digestAt(`/v2/team/app/manifests/${ghApp.manifest.digest}`)).status).toBe(404);
    expect((await digestAt(`/v2/ghcr.io/team/app/manifests/${hubApp.manifest.digest}`)).status).toBe(404);
  });

  it('maps one-component Docker Hub names to library/<name>', async () => {
    for (const path of [
      '/v2/alpine/manifests/3.20',
      '/v2/library/alpine/manifests/3.20',
      '/v2/alpine/manifests/3.20?ns=docker.io',
      '/v2/docker.io/alpine/manifests/3.20',
    ]) {
      expect(await digestAt(path)).toMatchObject({ status: 200, digest: alpine.manifest.digest });
    }
    const pulled = await verifyPull(mirror.url, undefined, 'alpine', '3.20');
    expect(pulled.digest).toBe(alpine.manifest.digest);
    await mirror.settled();
    expect(cachedTag(mirror.dataDir, 'docker.io/library/alpine', '3.20')).toBe(alpine.manifest.digest);
    await hub.sync();
    expect(hub.requests(undefined, /^\/v2\/alpine\//)).toEqual([]);
    expect(hub.requests(undefined, /^\/v2\/library\/alpine\//).length).toBeGreaterThan(0);
    // Not for other upstreams: a one-component name there stays as it is.
    expect((await digestAt('/v2/alpine/manifests/3.20?ns=ghcr.io')).status).toBe(404);
    await gh.sync();
    expect(gh.requests('GET', '/v2/alpine/manifests/3.20').length + gh.requests('HEAD', '/v2/alpine/manifests/3.20').length).toBe(1);
  });

  it('answers a clean 404 for ?ns= naming an upstream it does not have, without asking any upstream', async () => {
    await Promise.all([hub.sync(), gh.sync()]);
    const before = hub.requests().length + gh.requests().length;
    for (const path of ['/v2/team/app/manifests/v1?ns=quay.io', `/v2/team/app/blobs/${hubApp.layers[0].digest}?ns=quay.io`, '/v2/team/app/tags/list?ns=quay.io']) {
      const res = await client.req(path);
      expect(res.status).toBe(404);
      expect(errorCodes(res)).toEqual(['NAME_UNKNOWN']);
    }
    const head = await client.req('/v2/team/app/manifests/v1?ns=quay.io', { method: 'HEAD' });
    expect(head.status).toBe(404);
    await Promise.all([hub.sync(), gh.sync()]);
    expect(hub.requests().length + gh.requests().length).toBe(before);
  });

  it('serves manifests by digest from the cache with no upstream request at all', async () => {
    // Cold by digest: one GET upstream.
    const cold = await fetchManifest(mirror.url, undefined, 'ghcr.io/team/app', ghApp.manifest.digest);
    expect(cold.status).toBe(200);
    expect(cold.actualDigest).toBe(ghApp.manifest.digest);
    const before = await gh.count();
    for (let i = 0; i < 3; i++) {
      const warm = await fetchManifest(mirror.url, undefined, 'ghcr.io/team/app', ghApp.manifest.digest);
      expect(warm.status).toBe(200);
      expect(warm.body.equals(ghApp.manifest.data)).toBe(true);
      const head = await client.req(`/v2/ghcr.io/team/app/manifests/${ghApp.manifest.digest}`, { method: 'HEAD', headers: { accept: MANIFEST_ACCEPT } });
      expect(head.status).toBe(200);
      expect(head.header('docker-content-digest')).toBe(ghApp.manifest.digest);
    }
    expect(await gh.count()).toBe(before);
  });

  it('revalidates a tag with one HEAD and no GET when unchanged; fetches the new manifest when the upstream tag moved', async () => {
    await verifyPull(mirror.url, undefined, 'team/app', 'v1');
    const tagPath = '/v2/team/app/manifests/v1';
    const heads = await hub.count('HEAD', tagPath);
    const gets = hub.requests('GET', tagPath).length;
    const res = await fetchManifest(mirror.url, undefined, 'team/app', 'v1');
    expect(res.digest).toBe(hubApp.manifest.digest);
    expect(await hub.count('HEAD', tagPath)).toBe(heads + 1);
    expect(hub.requests('GET', tagPath)).toHaveLength(gets);

    // The upstream tag moves.
    const moved = buildImage({ files: [{ 'who.txt': 'docker.io team/app, rebuilt\n' }] });
    await hub.pushImage('team/app', 'v1', moved);
    const after = await verifyPull(mirror.url, undefined, 'team/app', 'v1');
    expect(after.digest).toBe(moved.manifest.digest);
    await mirror.settled();
    expect(cachedTag(mirror.dataDir, 'docker.io/team/app', 'v1')).toBe(moved.manifest.digest);
    expect(await hub.count('GET', tagPath)).toBe(gets + 1);
    // The old manifest stays available by digest, from the cache.
    const before = hub.requests().length;
    const old = await fetchManifest(mirror.url, undefined, 'team/app', hubApp.manifest.digest);
    expect(old.status).toBe(200);
    expect(old.actualDigest).toBe(hubApp.manifest.digest);
    expect(await hub.count()).toBe(before);
  });

  it('trusts a cached tag for proxy.tagfreshness without asking the upstream', async () => {
    const fresh = await startMirror({ upstreams: [{ host: 'ghcr.io', url: gh.url }], proxy: { tagfreshness: '1h' } });
    try {
      const first = await verifyPull(fresh.url, undefined, 'team/app', 'v1');
      expect(first.digest).toBe(ghApp.manifest.digest);
      const before = await gh.count();
      const again = await fetchManifest(fresh.url, undefined, 'team/app', 'v1');
      expect(again.digest).toBe(ghApp.manifest.digest);
      expect(await gh.count()).toBe(before);
    } finally {
      await fresh.stop();
    }
  });

  it('pulls an index with its children fetched on demand by digest', async () => {
    const pulled = await verifyPull(mirror.url, undefined, 'ghcr.io/org/multi', 'latest');
    expect(pulled.digest).toBe(multi.index.digest);
    expect(pulled.manifests.slice(1).sort()).toEqual(multi.images.map((i) => i.manifest.digest).sort());
    await Promise.all([gh.sync(), mirror.settled()]);
    for (const img of multi.images) {
      expect(gh.requests('GET', `/v2/org/multi/manifests/${img.manifest.digest}`)).toHaveLength(1);
      expect(hasRevision(mirror.dataDir, 'ghcr.io/org/multi', img.manifest.digest)).toBe(true);
    }
    // Pulled again: the children come from the cache.
    const before = hub.requests().length + (await gh.count());
    await verifyPull(mirror.url, undefined, 'ghcr.io/org/multi', 'latest');
    await Promise.all([hub.sync(), gh.sync()]);
    // Only the HEAD revalidating the tag.
    expect(hub.requests().length + gh.requests().length).toBe(before + 1);
  });

  it("lists the catalog by the names clients pull: the default upstream's without its host, the others' with it", async () => {
    for (const path of ['/v2/alpine/manifests/3.20', '/v2/team/app/manifests/v1', '/v2/ghcr.io/team/app/manifests/v1', '/v2/ghcr.io/org/multi/manifests/latest']) {
      expect((await digestAt(path)).status, path).toBe(200);
    }
    await mirror.settled();
    const listed: string[] = (await client.req('/v2/_catalog')).json().repositories;
    expect(listed).toEqual(['ghcr.io/org/multi', 'ghcr.io/team/app', 'library/alpine', 'team/app']);
    // Each name listed is one a client pulls by, from the upstream it came from.
    const tags = async (name: string) => (await client.req(`/v2/${name}/tags/list`)).json();
    expect(await tags('team/app')).toEqual({ name: 'team/app', tags: ['v1'] });
    expect((await digestAt('/v2/team/app/manifests/v1')).status).toBe(200);
    expect((await digestAt('/v2/ghcr.io/team/app/manifests/v1')).digest).toBe(ghApp.manifest.digest);
    expect((await digestAt('/v2/library/alpine/manifests/3.20')).digest).toBe(alpine.manifest.digest);
    expect((await digestAt('/v2/ghcr.io/org/multi/manifests/latest')).digest).toBe(multi.index.digest);
    // Paged one name at a time, in the same order.
    const paged: string[] = [];
    for (let last = ''; ; ) {
      const page = await client.req(`/v2/_catalog?n=1${last ? `&last=${encodeURIComponent(last)}` : ''}`);
      const items: string[] = page.json().repositories;
      paged.push(...items);
      if (!page.header('link')) break;
      last = items[items.length - 1];
    }
    expect(paged).toEqual(listed);
  });

  it('names references in its errors as clients write them: name:tag, name@digest', async () => {
    const byTag = await client.req('/v2/team/app/manifests/nosuchtag', { headers: { accept: MANIFEST_ACCEPT } });
    expect(byTag.status).toBe(404);
    expect(byTag.json().errors[0].message).toContain('docker.io/team/app:nosuchtag');
    const missing = `sha256:${'0'.repeat(64)}`;
    const byDigest = await client.req(`/v2/ghcr.io/team/app/manifests/${missing}`, { headers: { accept: MANIFEST_ACCEPT } });
    expect(byDigest.status).toBe(404);
    expect(byDigest.json().errors[0].message).toContain(`ghcr.io/team/app@${missing}`);
  });
});

describe('mirror: the catalog of a single upstream (proxy.remoteurl)', () => {
  let up: HostileUpstream;
  let mirror: LocalMirror;
  const image = buildImage({ files: [{ 'who.txt': 'a private upstream\n' }] });

  beforeAll(async () => {
    up = await HostileUpstream.start();
    up.serveImage('team/app', 'v1', image);
    mirror = await startMirror({ proxy: { remoteurl: up.url } });
  });

  afterAll(async () => {
    await mirror?.stop();
    await up?.stop();
  });

  it('lists team/app, not the cache name 127.0.0.1_<port>/team/app, and team/app pulls', async () => {
    expect((await verifyPull(mirror.url, undefined, 'team/app', 'v1')).digest).toBe(image.manifest.digest);
    await mirror.settled();
    const client = new RegistryClient(mirror.url);
    expect((await client.req('/v2/_catalog')).json().repositories).toEqual(['team/app']);
    expect((await client.req('/v2/team/app/tags/list')).json()).toEqual({ name: 'team/app', tags: ['v1'] });
  });
});
