// Interop with CNCF distribution 2.8.2 (Debian's docker-registry) on one shared
// data directory (on the s3 driver: one shared bucket, both registries with the
// same storage.s3 section): what one registry writes, the other serves with the
// same digests, tags and catalog, whether they run side by side or one at a time.
import { createHash } from 'node:crypto';
import { readFileSync, rmSync } from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { RegistryClient } from '../helpers/client.ts';
import { ContainersClients, catalog, fetchManifest, listTags, verifyPull } from '../helpers/clients.ts';
import { type DistributionProcess, distributionGarbageCollect, distributionS3Config, startDistribution } from '../helpers/distribution.ts';
import { type Blob, buildImage, buildIndex, type IndexImage, MT, writeOciLayout } from '../helpers/oci.ts';
import { basicAuth, makeTempDir, type ServerProcess, startServerProcess } from '../helpers/process.ts';
import { createTestStorage, type TestStorage } from '../helpers/storage.ts';

const USER = 'bob';
const PASSWORD = 'bob-interop-pw';
const CREDS = `${USER}:${PASSWORD}`;
const AUTH = basicAuth(USER, PASSWORD);
const USERS = { [USER]: PASSWORD };

const sha256 = (data: Uint8Array) => `sha256:${createHash('sha256').update(data).digest('hex')}`;

function blobKey(digest: string): string {
  const hex = digest.slice('sha256:'.length);
  return `docker/registry/v2/blobs/sha256/${hex.slice(0, 2)}/${hex}/data`;
}

/**
 * Pushes an index over HTTP with POST-then-PUT blob uploads (distribution 2.8
 * answers a monolithic POST ?digest= with 202 and ignores its body).
 */
async function pushIndexTwoStep(client: RegistryClient, repo: string, tag: string, index: IndexImage): Promise<void> {
  const putBlob = async (blob: Blob) => {
    const started = await client.req(`/v2/${repo}/blobs/uploads/`, { method: 'POST' });
    expect(started.status).toBe(202);
    const location = new URL(client.resolve(started.header('location')!));
    location.searchParams.set('digest', blob.digest);
    const done = await client.req(location.toString(), {
      method: 'PUT',
      headers: { 'content-type': 'application/octet-stream', 'content-length': String(blob.size) },
      body: blob.data,
    });
    expect(done.status, `PUT ${blob.digest}: ${done.text}`).toBe(201);
  };
  for (const img of index.images) {
    for (const blob of [img.config, ...img.layers]) await putBlob(blob);
    await client.pushManifest(repo, img.manifest.digest, img.manifest, img.mediaType);
  }
  await client.pushManifest(repo, tag, index.index, index.mediaType);
}

describe('interop with distribution 2.8.2 on one data directory (or bucket)', () => {
  let work: string;
  let dataDir: string;
  let storage: TestStorage;
  /** The storage section's driver part, the same for both registries (and distribution's GC). */
  let driver: Record<string, unknown>;
  let ours: ServerProcess | undefined;
  let dist: DistributionProcess | undefined;
  let cli: ContainersClients;

  const startOurs = async () => {
    ours = await startServerProcess({ dataDir, storageDriver: driver, users: USERS, workDir: path.join(work, 'ours') });
    cli.addInsecureRegistry(ours.host);
    return ours;
  };
  const startDist = async () => {
    dist = await startDistribution({ dataDir, storageDriver: driver, users: USERS, workDir: path.join(work, 'dist') });
    cli.addInsecureRegistry(dist.host);
    return dist;
  };
  const push = (layout: string, tag: string, dest: string, extra: string[] = []) =>
    cli.skopeo(['copy', ...extra, '--dest-tls-verify=false', '--dest-creds', CREDS, `oci:${layout}:${tag}`, `docker://${dest}`]);
  const rawManifest = async (image: string) =>
    Buffer.from((await cli.skopeo(['inspect', '--tls-verify=false', '--creds', CREDS, '--raw', `docker://${image}`])).stdout);

  beforeAll(async () => {
    work = makeTempDir('rs-e2e-interop-');
    dataDir = path.join(work, 'data');
    storage = await createTestStorage('e2e-interop', { dataDir });
    // distribution 2.8 takes only its own storage.s3 keys (ours takes the same section).
    driver = storage.bucket ? { s3: distributionS3Config(storage.bucket) } : storage.driverConfig();
    cli = new ContainersClients([], path.join(work, 'cli'));
    await Promise.all([startOurs(), startDist()]);
  });

  afterAll(async () => {
    await Promise.allSettled([ours?.stop(), dist?.stop()]);
    await storage?.destroy();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  test('both registries run, side by side, on the same directory (or bucket)', async () => {
    // Told apart by their realms: ours says "e2e", distribution "e2e-dist".
    const challenge = async (url: string) => {
      const res = await fetch(`${url}/v2/`);
      await res.arrayBuffer();
      return [res.status, res.headers.get('www-authenticate')];
    };
    expect(await challenge(ours!.url)).toEqual([401, 'Basic realm="e2e"']);
    expect(await challenge(dist!.url)).toEqual([401, 'Basic realm="e2e-dist"']);
    expect(ours!.dataDir).toBe(dist!.dataDir);
  });

  test('pushed with skopeo to ours → distribution serves the same image (OCI manifest)', async () => {
    const image = buildImage({ files: [{ 'a.txt': 'to ours\n' }, { 'b.bin': Buffer.alloc(200_000, 3) }] });
    const src = path.join(work, 'src-ours');
    writeOciLayout(src, 'v1', image);
    await push(src, 'v1', `${ours!.host}/shared/from-ours:v1`);

    // The blobs are in distribution's layout, under their digests.
    for (const blob of [image.config, ...image.layers, image.manifest]) {
      expect(`sha256:${await storage.sha256(blobKey(blob.digest))}`).toBe(blob.digest);
    }
    expect(sha256(await rawManifest(`${dist!.host}/shared/from-ours:v1`))).toBe(image.manifest.digest);
    const viaDist = await verifyPull(dist!.url, AUTH, 'shared/from-ours', 'v1');
    expect(viaDist.digest).toBe(image.manifest.digest);
    expect(viaDist.mediaType).toBe(MT.ociManifest);
    expect(viaDist.blobs).toEqual([image.config.digest, ...image.layers.map((l) => l.digest)]);

    // And a real pull from distribution into an OCI layout gives back the same bytes.
    const out = path.join(work, 'out-dist');
    await cli.skopeo(['copy', '--src-tls-verify=false', '--src-creds', CREDS, `docker://${dist!.host}/shared/from-ours:v1`, `oci:${out}:v1`]);
    const outIndex = JSON.parse(readFileSync(path.join(out, 'index.json'), 'utf8'));
    expect(outIndex.manifests[0].digest).toBe(image.manifest.digest);
    for (const blob of [image.config, ...image.layers]) {
      expect(readFileSync(path.join(out, 'blobs', 'sha256', blob.digest.slice(7))).equals(blob.data)).toBe(true);
    }
  });

  test('a multi-arch index pushed to ours is served by distribution, children by digest too', async () => {
    const amd64 = buildImage({ architecture: 'amd64' });
    const arm64 = buildImage({ architecture: 'arm64' });
    const index = buildIndex([amd64, arm64]);
    const src = path.join(work, 'src-index');
    writeOciLayout(src, 'multi', index);
    await push(src, 'multi', `${ours!.host}/shared/multi:1.0`, ['--all']);

    const viaDist = await verifyPull(dist!.url, AUTH, 'shared/multi', '1.0');
    expect(viaDist.digest).toBe(index.index.digest);
    expect(viaDist.mediaType).toBe(MT.ociIndex);
    expect(viaDist.manifests).toEqual([index.index.digest, amd64.manifest.digest, arm64.manifest.digest]);
    const viaOurs = await verifyPull(ours!.url, AUTH, 'shared/multi', '1.0');
    expect(viaOurs).toEqual(viaDist);
  });

  test('pushed with skopeo to distribution → ours serves the same image (OCI and Docker v2s2)', async () => {
    const image = buildImage({ files: [{ 'c.txt': 'to distribution\n' }] });
    const src = path.join(work, 'src-dist');
    writeOciLayout(src, 'v1', image);
    await push(src, 'v1', `${dist!.host}/shared/from-dist:v1`);
    await push(src, 'v1', `${dist!.host}/shared/from-dist:docker`, ['--format', 'v2s2']);

    const viaOurs = await verifyPull(ours!.url, AUTH, 'shared/from-dist', 'v1');
    expect(viaOurs.digest).toBe(image.manifest.digest);
    expect(sha256(await rawManifest(`${ours!.host}/shared/from-dist:v1`))).toBe(image.manifest.digest);

    const dockerViaDist = await fetchManifest(dist!.url, AUTH, 'shared/from-dist', 'docker');
    expect(dockerViaDist.status).toBe(200);
    expect(dockerViaDist.json.mediaType).toBe(MT.dockerManifest);
    const dockerViaOurs = await verifyPull(ours!.url, AUTH, 'shared/from-dist', 'docker');
    expect(dockerViaOurs.digest).toBe(dockerViaDist.digest);
    expect(dockerViaOurs.mediaType).toBe(MT.dockerManifest);
    expect(dockerViaOurs.blobs).toEqual([image.config.digest, ...image.layers.map((l) => l.digest)]);

    // A skopeo pull from ours, in the Docker format, into an OCI layout.
    const out = path.join(work, 'out-ours');
    await cli.skopeo(['copy', '--src-tls-verify=false', '--src-creds', CREDS, `docker://${ours!.host}/shared/from-dist:v1`, `oci:${out}:v1`]);
    expect(JSON.parse(readFileSync(path.join(out, 'index.json'), 'utf8')).manifests[0].digest).toBe(image.manifest.digest);
  });

  test('a Docker manifest list pushed to distribution is served by ours with its media type and digest', async () => {
    const amd64 = buildImage({ architecture: 'amd64', docker: true });
    const arm64 = buildImage({ architecture: 'arm64', docker: true });
    const list = buildIndex([amd64, arm64], true);
    await pushIndexTwoStep(new RegistryClient(dist!.url, AUTH), 'shared/docker-list', 'v1', list);

    const viaOurs = await verifyPull(ours!.url, AUTH, 'shared/docker-list', 'v1');
    expect(viaOurs.digest).toBe(list.index.digest);
    expect(viaOurs.mediaType).toBe(MT.dockerList);
    expect(viaOurs.manifests).toEqual([list.index.digest, amd64.manifest.digest, arm64.manifest.digest]);
    const child = await fetchManifest(ours!.url, AUTH, 'shared/docker-list', arm64.manifest.digest);
    expect(child.mediaType).toBe(MT.dockerManifest);
    // skopeo resolves the platform through ours.
    const info = JSON.parse(
      (
        await cli.skopeo([
          '--override-arch',
          'arm64',
          'inspect',
          '--tls-verify=false',
          '--creds',
          CREDS,
          `docker://${ours!.host}/shared/docker-list:v1`,
        ])
      ).stdout,
    );
    expect(info.Digest).toBe(list.index.digest); // skopeo reports the top-level digest
    expect(info.Architecture).toBe('arm64');
    expect(info.Layers).toEqual(arm64.layers.map((l) => l.digest));
  });

  test('tag lists and the catalog agree', async () => {
    // One more tag from each side on one repository.
    const image = buildImage();
    const src = path.join(work, 'src-tags');
    writeOciLayout(src, 'v1', image);
    await push(src, 'v1', `${ours!.host}/shared/tags:from-ours`);
    await push(src, 'v1', `${dist!.host}/shared/tags:from-dist`);

    for (const repo of ['shared/from-ours', 'shared/from-dist', 'shared/multi', 'shared/docker-list', 'shared/tags']) {
      const [a, b] = await Promise.all([listTags(ours!.url, AUTH, repo), listTags(dist!.url, AUTH, repo)]);
      expect(a, repo).toEqual(b);
    }
    expect(await listTags(ours!.url, AUTH, 'shared/tags')).toEqual(['from-dist', 'from-ours']);
    expect(await listTags(ours!.url, AUTH, 'shared/from-dist')).toEqual(['docker', 'v1']);

    const [catOurs, catDist] = await Promise.all([catalog(ours!.url, AUTH), catalog(dist!.url, AUTH)]);
    expect(catOurs).toEqual(catDist);
    expect(catOurs).toEqual(['shared/docker-list', 'shared/from-dist', 'shared/from-ours', 'shared/multi', 'shared/tags']);

    // skopeo list-tags sees the same on both.
    const viaSkopeo = async (host: string) =>
      [...JSON.parse((await cli.skopeo(['list-tags', '--tls-verify=false', '--creds', CREDS, `docker://${host}/shared/tags`])).stdout).Tags].sort();
    expect(await viaSkopeo(ours!.host)).toEqual(await viaSkopeo(dist!.host));
  });

  test('a delete through one registry is seen by the other', async () => {
    const a = buildImage();
    const b = buildImage();
    const srcA = path.join(work, 'src-del-a');
    const srcB = path.join(work, 'src-del-b');
    writeOciLayout(srcA, 'v1', a);
    writeOciLayout(srcB, 'v1', b);
    await push(srcA, 'v1', `${ours!.host}/shared/del:a`);
    await push(srcB, 'v1', `${dist!.host}/shared/del:b`);
    expect((await fetchManifest(dist!.url, AUTH, 'shared/del', 'a')).status).toBe(200);
    expect((await fetchManifest(ours!.url, AUTH, 'shared/del', 'b')).status).toBe(200);

    await cli.skopeo(['delete', '--tls-verify=false', '--creds', CREDS, `docker://${dist!.host}/shared/del:a`]);
    await cli.skopeo(['delete', '--tls-verify=false', '--creds', CREDS, `docker://${ours!.host}/shared/del:b`]);
    for (const srv of [ours!, dist!]) {
      expect((await fetchManifest(srv.url, AUTH, 'shared/del', a.manifest.digest)).status).toBe(404);
      expect((await fetchManifest(srv.url, AUTH, 'shared/del', b.manifest.digest)).status).toBe(404);
      expect((await fetchManifest(srv.url, AUTH, 'shared/del', 'a')).status).toBe(404);
      expect(await listTags(srv.url, AUTH, 'shared/del')).toEqual([]);
    }
  });

  test('one at a time: each registry alone serves what the other wrote', async () => {
    const first = buildImage();
    const second = buildImage();
    const srcFirst = path.join(work, 'src-seq-1');
    const srcSecond = path.join(work, 'src-seq-2');
    writeOciLayout(srcFirst, 'v1', first);
    writeOciLayout(srcSecond, 'v1', second);

    // distribution alone writes ...
    await ours!.stop();
    await push(srcFirst, 'v1', `${dist!.host}/seq/app:1`);
    await dist!.stop();
    expect(await storage.exists(blobKey(first.manifest.digest))).toBe(true);

    // ... ours alone serves it and writes more ...
    await startOurs();
    expect((await verifyPull(ours!.url, AUTH, 'seq/app', '1')).digest).toBe(first.manifest.digest);
    await push(srcSecond, 'v1', `${ours!.host}/seq/app:2`);
    await ours!.stop();

    // ... and distribution, restarted alone, serves both.
    await startDist();
    expect((await verifyPull(dist!.url, AUTH, 'seq/app', '1')).digest).toBe(first.manifest.digest);
    expect((await verifyPull(dist!.url, AUTH, 'seq/app', '2')).digest).toBe(second.manifest.digest);
    expect(await listTags(dist!.url, AUTH, 'seq/app')).toEqual(['1', '2']);
    expect(await catalog(dist!.url, AUTH)).toContain('seq/app');
  });

  test("distribution's garbage-collect on the shared directory (or bucket) keeps every tagged image and sweeps the deleted ones", async () => {
    // Something only deleted manifests refer to: an image pushed to ours, then deleted there.
    const doomed = buildImage({ files: [{ 'doomed.txt': 'delete me\n' }] });
    const src = path.join(work, 'src-doomed');
    writeOciLayout(src, 'v1', doomed);
    // The previous test left distribution running alone; ours starts again beside it.
    await ours?.stop();
    await startOurs();
    await push(src, 'v1', `${ours!.host}/gc/doomed:v1`);
    await cli.skopeo(['delete', '--tls-verify=false', '--creds', CREDS, `docker://${ours!.host}/gc/doomed:v1`]);
    expect(await storage.exists(blobKey(doomed.layers[0].digest))).toBe(true);

    // Every tag of every repository, as ours serves them before GC.
    const before = new Map<string, Awaited<ReturnType<typeof verifyPull>>>();
    for (const repo of await catalog(ours!.url, AUTH)) {
      for (const tag of await listTags(ours!.url, AUTH, repo)) before.set(`${repo}:${tag}`, await verifyPull(ours!.url, AUTH, repo, tag));
    }
    expect(before.size).toBeGreaterThanOrEqual(8);

    await Promise.all([ours?.stop(), dist?.stop()]);
    await distributionGarbageCollect(dataDir, { workDir: path.join(work, 'gc'), storageDriver: driver });

    // The deleted image's own blobs are gone; everything tagged still pulls from both.
    expect(await storage.exists(blobKey(doomed.layers[0].digest))).toBe(false);
    expect(await storage.exists(blobKey(doomed.manifest.digest))).toBe(false);
    await Promise.all([startOurs(), startDist()]);
    for (const [key, expected] of before) {
      const [repo, tag] = key.split(':');
      expect(await verifyPull(ours!.url, AUTH, repo, tag), `ours ${key}`).toEqual(expected);
      expect(await verifyPull(dist!.url, AUTH, repo, tag), `distribution ${key}`).toEqual(expected);
    }
  });
});
