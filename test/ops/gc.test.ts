// Garbage collection, one scenario at a time: dry runs, the grace period,
// --delete-untagged (index children and referrers of tagged manifests stay),
// layers shared across repositories, blobs a client saw recently, and a push
// that is half way through while a whole GC run happens.
import { rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { paths } from '../../server/src/storage/paths.ts';
import { FilesystemDriver } from '../../server/src/storage/filesystem.ts';
import { collectGarbage } from '../../server/src/registry/gc.ts';
import { LocalRegistry } from '../../server/src/registry/local-registry.ts';
import { parseDigest } from '../../server/src/registry/digest.ts';
import { errorCodes, RegistryClient } from '../helpers/client.ts';
import { blobOf, buildArtifact, buildImage, buildIndex, type Image, manifestDescriptor, MT, randomBlob } from '../helpers/oci.ts';
import { dataDir, makeTempDir, snapshotTree, startTestServer, type TestServer } from '../helpers/server.ts';
import { composeImage, digestsOf, gzLayer, pullAndVerify, pushImageLikeClient, pushIndexLikeClient } from '../helpers/ops/images.ts';
import { ADMIN, adminReq, runCli, writeConfig } from '../helpers/ops/servers.ts';
import { age, blobFile, hasBlob, hoursAgo, inventory, revisions, storedBlobs, tags } from '../helpers/ops/store.ts';

const cleanups: Array<() => Promise<void> | void> = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
});

async function server(extra: Record<string, unknown> = {}): Promise<{ server: TestServer; client: RegistryClient; data: string }> {
  const s = await startTestServer({ extra: { ...ADMIN, ...extra } });
  cleanups.push(() => s.stop());
  return { server: s, client: new RegistryClient(s.url, s.auth), data: dataDir(s) };
}

/** Ages every stored blob's data file (mtime and atime) to `hours` ago, except `spare`. */
function ageAllBlobs(data: string, hours: number, spare: string[] = []): void {
  for (const d of storedBlobs(data)) if (!spare.includes(d)) age(blobFile(data, d), hoursAgo(hours));
}

/** A registry over the same directory with no memory of recent use: what the offline CLI sees. */
function offline(data: string): LocalRegistry {
  return new LocalRegistry(new FilesystemDriver(data), { deleteEnabled: true, readOnly: false });
}

describe('garbage-collect CLI: dry run, then the real run', () => {
  it('the dry run reports exactly what would go (with bytes) and changes nothing; the real run removes exactly that', async () => {
    const { client, data } = await server();
    const work = makeTempDir('rs-ops-gc-cli-');
    cleanups.push(() => rmSync(work, { recursive: true, force: true }));
    const shared = gzLayer(3000);
    const a = composeImage([shared, gzLayer(2000)]);
    const b = composeImage([shared, gzLayer(2500)]);
    await pushImageLikeClient(client, 'app', 'a', a);
    await pushImageLikeClient(client, 'app', 'b', b);
    expect((await client.req('/v2/app/manifests/b', { method: 'DELETE' })).status).toBe(202); // b is now untagged
    const orphan = randomBlob(1234);
    await client.pushBlob('app', orphan);
    ageAllBlobs(data, 2);
    const young = randomBlob(777); // unreferenced too, but inside the grace period
    await client.pushBlob('app', young);

    const config = writeConfig(work, { version: '0.1', storage: { filesystem: { rootdirectory: data } } });
    const before = snapshotTree(data);
    const dry = await runCli(['garbage-collect', '--dry-run', '--delete-untagged', '--grace', '3600', config]);
    expect(dry.code, dry.stderr).toBe(0);
    expect(snapshotTree(data)).toEqual(before);

    const goneBlobs = [b.manifest, b.config, b.layers[1], orphan];
    const summary = dry.lines.at(-1)!;
    expect(summary).toMatchObject({ event: 'summary', dryRun: true, manifestsDeleted: 1, blobsDeleted: goneBlobs.length });
    expect(summary.bytesFreed).toBe(goneBlobs.reduce((n, x) => n + x.size, 0));
    const events = dry.lines.slice(0, -1);
    expect(events.every((e) => e.event === 'would-delete')).toBe(true);
    expect(events.filter((e) => e.kind === 'manifest').map((e) => e.what)).toEqual([`app@${b.manifest.digest}`]);
    const reported = events.filter((e) => e.kind === 'blob');
    expect(reported.map((e) => e.what).sort()).toEqual(goneBlobs.map((x) => x.digest).sort());
    for (const e of reported) expect(e.bytes).toBe(goneBlobs.find((x) => x.digest === e.what)!.size);

    const real = await runCli(['garbage-collect', '-m', '--grace', '3600', config]);
    expect(real.code, real.stderr).toBe(0);
    expect(real.lines.at(-1)).toMatchObject({ event: 'summary', dryRun: false, manifestsDeleted: 1, blobsDeleted: goneBlobs.length, bytesFreed: summary.bytesFreed });
    expect(real.lines.slice(0, -1).map((e) => `${e.event} ${e.kind} ${e.what}`).sort()).toEqual(
      events.map((e) => `deleted ${e.kind} ${e.what}`).sort(),
    );
    for (const x of goneBlobs) expect(hasBlob(data, x.digest), x.digest).toBe(false);
    for (const d of [...digestsOf(a), young.digest]) expect(hasBlob(data, d), d).toBe(true);
    expect(revisions(data, 'app')).toEqual([a.manifest.digest]);
    expect(inventory(data).problems).toEqual([]);
    expect((await pullAndVerify(client, 'app', 'a')).digest).toBe(a.manifest.digest);
    const gone = await client.req(`/v2/app/manifests/${b.manifest.digest}`);
    expect(gone.status).toBe(404);
    expect(errorCodes(gone)).toEqual(['MANIFEST_UNKNOWN']);

    // Nothing left to collect: a second run is a no-op.
    const again = await runCli(['garbage-collect', '-m', '--grace', '3600', config]);
    expect(again.lines).toEqual([expect.objectContaining({ event: 'summary', manifestsDeleted: 0, blobsDeleted: 0, bytesFreed: 0 })]);
  });
});

describe('grace period and uploads in progress', () => {
  it('removes old unreferenced blobs, keeps young ones, referenced ones and upload sessions', async () => {
    const { client, data } = await server();
    const image = composeImage([gzLayer(4000)]);
    await pushImageLikeClient(client, 'grace', 'v1', image);
    const old = randomBlob(500);
    await client.pushBlob('grace', old);
    ageAllBlobs(data, 3);
    const young = randomBlob(600);
    await client.pushBlob('grace', young);

    // An upload half done: one chunk sent, not finished.
    const rest = randomBlob(3000);
    const start = await client.req('/v2/grace/blobs/uploads/', { method: 'POST' });
    expect(start.status).toBe(202);
    const chunk = await client.req(client.resolve(start.header('location')!), {
      method: 'PATCH',
      headers: { 'content-type': 'application/octet-stream', 'content-range': '0-999' },
      body: rest.data.subarray(0, 1000),
    });
    expect(chunk.status).toBe(202);

    const result = await collectGarbage(offline(data), { dryRun: false, deleteUntagged: false, graceMs: 3_600_000 });
    expect(result).toMatchObject({ blobsDeleted: 1, bytesFreed: old.size, manifestsDeleted: 0 });
    expect(hasBlob(data, old.digest)).toBe(false);
    expect(hasBlob(data, young.digest)).toBe(true);
    for (const d of digestsOf(image)) expect(hasBlob(data, d)).toBe(true);

    // The upload carries on and completes as if nothing happened.
    const finish = new URL(client.resolve(chunk.header('location')!));
    finish.searchParams.set('digest', rest.digest);
    const done = await client.req(finish.toString(), {
      method: 'PUT',
      headers: { 'content-type': 'application/octet-stream' },
      body: rest.data.subarray(1000),
    });
    expect(done.status, done.text).toBe(201);
    const got = await client.req(`/v2/grace/blobs/${rest.digest}`);
    expect(got.status).toBe(200);
    expect(blobOf(got.body).digest).toBe(rest.digest);
  });

  it('online, a blob a client looked at within the grace period is kept even when its file is old', async () => {
    const { server: s, client, data } = await server({ gc: { graceperiod: '1h' } });
    const seen = randomBlob(800);
    await client.pushBlob('seen', seen);
    age(blobFile(data, seen.digest), hoursAgo(5));
    // A client checks the blob before writing a manifest that refers to it.
    expect((await client.req(`/v2/seen/blobs/${seen.digest}`, { method: 'HEAD' })).status).toBe(200);

    const online = await adminReq(s, 'POST', '/admin/gc');
    expect(online.status).toBe(200);
    expect(online.json()).toMatchObject({ dryRun: false, blobsDeleted: 0 });
    expect(hasBlob(data, seen.digest)).toBe(true);

    // The offline collector has no such memory: by the file's age, the blob goes.
    const result = await collectGarbage(offline(data), { dryRun: false, deleteUntagged: false, graceMs: 3_600_000 });
    expect(result.blobsDeleted).toBe(1);
    expect(hasBlob(data, seen.digest)).toBe(false);
  });
});

describe('--delete-untagged', () => {
  let s: TestServer;
  let client: RegistryClient;
  let data: string;
  beforeAll(async () => {
    ({ server: s, client, data } = await server({ gc: { graceperiod: '0s' } }));
  });

  it('removes untagged manifests (and their referrers) but keeps index children and referrers of tagged manifests', async () => {
    const repo = 'multi';
    // Tagged: an index (children pushed by digest only), an image with a referrer chain.
    const index = buildIndex([buildImage({ architecture: 'amd64' }), buildImage({ architecture: 'arm64' })]);
    await pushIndexLikeClient(client, repo, 'v1', index);
    const t = buildImage();
    await pushImageLikeClient(client, repo, 't', t);
    const sig = buildArtifact({ artifactType: 'application/vnd.test.signature', subject: manifestDescriptor(t) });
    await pushImageLikeClient(client, repo, sig.manifest.digest, sig);
    const sigOfSig = buildArtifact({ artifactType: 'application/vnd.test.attestation', subject: manifestDescriptor(sig) });
    await pushImageLikeClient(client, repo, sigOfSig.manifest.digest, sigOfSig);

    // Untagged: an image whose tag was deleted (with a referrer), an image pushed by digest,
    // an index pushed by digest (and its child), an image tagged only in another repository.
    const u = buildImage();
    await pushImageLikeClient(client, repo, 'u', u);
    expect((await client.req(`/v2/${repo}/manifests/u`, { method: 'DELETE' })).status).toBe(202);
    const uSig = buildArtifact({ subject: manifestDescriptor(u) });
    await pushImageLikeClient(client, repo, uSig.manifest.digest, uSig);
    const v = buildImage();
    await pushImageLikeClient(client, repo, v.manifest.digest, v);
    const j = buildIndex([buildImage()]);
    await pushIndexLikeClient(client, repo, j.index.digest, j);
    const w = buildImage();
    await pushImageLikeClient(client, repo, w.manifest.digest, w);
    await pushImageLikeClient(client, 'other', 'w', w);

    const kept = [index.index, ...index.images.map((i) => i.manifest), t.manifest, sig.manifest, sigOfSig.manifest].map((b) => b.digest);
    const dropped = [u.manifest, uSig.manifest, v.manifest, j.index, j.images[0].manifest, w.manifest].map((b) => b.digest);
    expect(revisions(data, repo).sort()).toEqual([...kept, ...dropped].sort());

    // Without --delete-untagged every manifest stays, and so does every blob they name.
    const plain = await adminReq(s, 'POST', '/admin/gc?deleteuntagged=false');
    expect(plain.json()).toMatchObject({ manifestsDeleted: 0, blobsDeleted: 0 });
    expect(revisions(data, repo).length).toBe(kept.length + dropped.length);

    const before = snapshotTree(data);
    const dry = await adminReq(s, 'POST', '/admin/gc?dryrun=true&deleteuntagged=true');
    expect(dry.status).toBe(200);
    expect(dry.json()).toMatchObject({ dryRun: true, manifestsDeleted: dropped.length });
    expect(dry.json().blobsDeleted).toBeGreaterThan(0);
    expect(snapshotTree(data)).toEqual(before);

    const real = await adminReq(s, 'POST', '/admin/gc?deleteuntagged=true');
    expect(real.json()).toMatchObject({ dryRun: false, manifestsDeleted: dropped.length, blobsDeleted: dry.json().blobsDeleted, bytesFreed: dry.json().bytesFreed });
    expect(revisions(data, repo).sort()).toEqual(kept.sort());
    expect(revisions(data, 'other')).toEqual([w.manifest.digest]);

    // Only the untagged images' own blobs went; w's live on through the other repository.
    const stored = storedBlobs(data);
    const keptBlobs = new Set([...index.images, t, sig, sigOfSig, w].flatMap((img) => digestsOf(img)));
    for (const img of [u, uSig, v, ...j.images]) for (const d of digestsOf(img)) expect(stored.has(d), d).toBe(keptBlobs.has(d));
    expect(stored.has(j.index.digest)).toBe(false);
    for (const d of digestsOf(w)) expect(stored.has(d), d).toBe(true);
    const { referenced, problems } = inventory(data);
    expect(problems).toEqual([]);
    expect([...stored].sort()).toEqual([...referenced].sort());

    await pullAndVerify(client, repo, 'v1');
    await pullAndVerify(client, repo, 't');
    await pullAndVerify(client, repo, sigOfSig.manifest.digest);
    await pullAndVerify(client, 'other', 'w');
    const referrers = await client.req(`/v2/${repo}/referrers/${t.manifest.digest}`);
    expect(referrers.json().manifests.map((m: { digest: string }) => m.digest)).toEqual([sig.manifest.digest]);
    expect((await client.req(`/v2/${repo}/manifests/${u.manifest.digest}`)).status).toBe(404);
    expect((await client.req(`/v2/${repo}/referrers/${u.manifest.digest}`)).json().manifests).toEqual([]);
  });
});

describe('layers shared across repositories', () => {
  it('a shared layer survives while any manifest in any repository refers to it', async () => {
    const { server: s, client, data } = await server({ gc: { graceperiod: '0s' } });
    const shared = gzLayer(5000);
    const images: Record<string, Image> = {};
    for (const repo of ['team/a', 'team/b', 'c']) {
      images[repo] = composeImage([shared, gzLayer(1500)]);
      await pushImageLikeClient(client, repo, 'latest', images[repo]);
    }
    // The same image under a second repository (a cross-repository mount would give the same links).
    await pushImageLikeClient(client, 'c-copy', 'latest', images.c);
    const gc = async (deleteUntagged: boolean) => {
      const res = await adminReq(s, 'POST', `/admin/gc?deleteuntagged=${deleteUntagged}`);
      expect(res.status).toBe(200);
      return res.json();
    };

    expect((await client.req(`/v2/team/a/manifests/${images['team/a'].manifest.digest}`, { method: 'DELETE' })).status).toBe(202);
    expect(await gc(false)).toMatchObject({ manifestsDeleted: 0, blobsDeleted: 3 });
    expect(hasBlob(data, shared.digest)).toBe(true);
    for (const d of digestsOf(images['team/a'])) expect(hasBlob(data, d), d).toBe(d === shared.digest);

    // Untagging keeps the manifest (and its blobs) until a run with deleteUntagged.
    expect((await client.req('/v2/team/b/manifests/latest', { method: 'DELETE' })).status).toBe(202);
    expect(await gc(false)).toMatchObject({ manifestsDeleted: 0, blobsDeleted: 0 });
    expect(await gc(true)).toMatchObject({ manifestsDeleted: 1, blobsDeleted: 3 });
    expect(hasBlob(data, shared.digest)).toBe(true);

    // c's image is in two repositories: deleting it from one changes nothing on disk.
    expect((await client.req(`/v2/c/manifests/${images.c.manifest.digest}`, { method: 'DELETE' })).status).toBe(202);
    expect(await gc(true)).toMatchObject({ manifestsDeleted: 0, blobsDeleted: 0 });
    await pullAndVerify(client, 'c-copy', 'latest');

    expect((await client.req(`/v2/c-copy/manifests/${images.c.manifest.digest}`, { method: 'DELETE' })).status).toBe(202);
    expect(await gc(true)).toMatchObject({ blobsDeleted: 4 });
    expect(storedBlobs(data).size).toBe(0);
    expect(inventory(data).problems).toEqual([]);
  });
});

describe('a push half way through while a whole GC run happens', () => {
  // Opens the race window on purpose: the manifest PUT has pinned and checked its
  // blobs, and before it writes `link` a complete GC run (grace 0) goes by.
  async function pushWithGcInside(linkToDelay: 'revision' | 'tag', deleteUntagged: boolean) {
    const { server: s, client, data } = await server({ gc: { graceperiod: '0s' } });
    const repo = `race-${linkToDelay}`;
    const image = composeImage([gzLayer(3000), gzLayer(2000)]);
    for (const b of [image.config, ...image.layers]) await client.pushBlob(repo, b);
    const digest = parseDigest(image.manifest.digest);
    const key = linkToDelay === 'revision' ? paths.revisionLink(repo, digest) : paths.tagCurrentLink(repo, 'v1');
    const blobs = s.registry.blobs;
    const writeLink = blobs.writeLink.bind(blobs);
    let gcResult: unknown;
    blobs.writeLink = async (k, d) => {
      if (k === key && gcResult === undefined) gcResult = await s.maintenance.gc({ dryRun: false, deleteUntagged });
      return writeLink(k, d);
    };
    const put = await client.req(`/v2/${repo}/manifests/v1`, { method: 'PUT', headers: { 'content-type': MT.ociManifest }, body: image.manifest.data });
    blobs.writeLink = writeLink;
    expect(gcResult).toBeDefined();
    expect(put.status, put.text).toBe(201);
    expect(tags(data, repo).get('v1')).toBe(image.manifest.digest);
    expect(inventory(data).problems).toEqual([]);
    await pullAndVerify(client, repo, 'v1');
    // And once the push is over, the next run sees the manifest as usual.
    const next = await adminReq(s, 'POST', `/admin/gc?deleteuntagged=${deleteUntagged}`);
    expect(next.json()).toMatchObject({ manifestsDeleted: 0, blobsDeleted: 0 });
    await pullAndVerify(client, repo, 'v1');
  }

  it('a HEAD that saw a blob just before GC deleted it does not let a manifest through later', async () => {
    const { server: s, client, data } = await server({ gc: { graceperiod: '0s' } });
    const repo = 'race-stat';
    const image = composeImage([gzLayer(2000)]);
    for (const b of [image.config, ...image.layers]) await client.pushBlob(repo, b);
    const layer = image.layers[0];
    // As after a restart (or once the size cache has let it go): the next stat goes to storage.
    s.registry.blobs.forget(parseDigest(layer.digest));
    // Hold the HEAD's stat of the layer (which found the file) until GC has deleted the layer.
    const driver = s.registry.driver;
    const objectSize = driver.objectSize.bind(driver);
    let held: (() => void) | undefined;
    const gate = new Promise<void>((r) => (held = r));
    let intercepted = false;
    driver.objectSize = async (key) => {
      if (intercepted || key !== paths.blobData(parseDigest(layer.digest))) return objectSize(key);
      intercepted = true;
      const size = await objectSize(key);
      await gate;
      return size;
    };
    const head = client.req(`/v2/${repo}/blobs/${layer.digest}`, { method: 'HEAD' });
    while (!intercepted) await new Promise((r) => setTimeout(r, 5));
    const gc = await s.maintenance.gc({ dryRun: false });
    driver.objectSize = objectSize;
    held!();
    expect(gc.blobsDeleted).toBe(2);
    expect(hasBlob(data, layer.digest)).toBe(false);
    expect((await head).status).toBe(200); // true when it looked

    // The client trusts its HEAD and puts the manifest: refused cleanly, nothing tagged.
    const put = await client.req(`/v2/${repo}/manifests/v1`, { method: 'PUT', headers: { 'content-type': MT.ociManifest }, body: image.manifest.data });
    expect(put.status).toBe(400);
    expect(errorCodes(put)).toEqual(['MANIFEST_BLOB_UNKNOWN']);
    expect(tags(data, repo).size).toBe(0);
    // Pushing again (HEAD says 404 now, so the blobs are uploaded) works.
    await pushImageLikeClient(client, repo, 'v1', image);
    await pullAndVerify(client, repo, 'v1');
    expect(inventory(data).problems).toEqual([]);
  });

  it('a GC run between the blob check and the revision link keeps the blobs', () => pushWithGcInside('revision', false));
  it('a deleteUntagged run between the revision link and the tag keeps the manifest', () => pushWithGcInside('tag', true));
});

describe('admin GC endpoint', () => {
  it('answers with the run result, and refuses prune on a private registry', async () => {
    const { server: s } = await server();
    const res = await adminReq(s, 'POST', '/admin/gc?dryrun=1');
    expect(res.status).toBe(200);
    expect(res.json()).toMatchObject({ dryRun: true, repositories: 0, manifestsDeleted: 0, blobsDeleted: 0, bytesFreed: 0 });
    const prune = await adminReq(s, 'POST', '/admin/prune');
    expect(prune.status).toBe(409);
  });
});
