// Real clients (skopeo, podman, buildah, containerd's ctr) against our server
// running as a child process with htpasswd auth, exactly as it runs in
// production. Every image is checked by digest, both as the client reports it
// and as the server serves it over HTTP.
import { createHash, randomBytes } from 'node:crypto';
import { readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { gunzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { RegistryClient } from '../helpers/client.ts';
import { Containerd, ContainersClients, fetchManifest, listTags, run, verifyPull } from '../helpers/clients.ts';
import { buildImage, buildIndex, MT, writeOciLayout } from '../helpers/oci.ts';
import { basicAuth, makeTempDir, type ServerProcess, startServerProcess } from '../helpers/process.ts';
import { createTestStorage, type TestStorage } from '../helpers/storage.ts';

const USER = 'alice';
const PASSWORD = 'alice-e2e-pw';
const CREDS = `${USER}:${PASSWORD}`;
const AUTH = basicAuth(USER, PASSWORD);

const sha256 = (data: Uint8Array) => `sha256:${createHash('sha256').update(data).digest('hex')}`;

/** Every blob file in an OCI layout is named by its digest. */
function expectLayoutIntact(dir: string): void {
  const blobDir = path.join(dir, 'blobs', 'sha256');
  for (const name of readdirSync(blobDir)) {
    expect(sha256(readFileSync(path.join(blobDir, name)))).toBe(`sha256:${name}`);
  }
}

function layoutTop(dir: string): { digest: string; mediaType: string } {
  const index = JSON.parse(readFileSync(path.join(dir, 'index.json'), 'utf8'));
  expect(index.manifests).toHaveLength(1);
  return index.manifests[0];
}

/** Whether the uncompressed tar of a gzipped layer contains `needle` (a file's content). */
function tarContains(layer: Buffer, needle: string): boolean {
  return gunzipSync(layer).includes(Buffer.from(needle));
}

describe('real clients against our server (htpasswd auth, child process)', () => {
  let work: string;
  let storage: TestStorage | undefined;
  let srv: ServerProcess;
  let cli: ContainersClients;
  let http: RegistryClient;
  let ctrd: Containerd | undefined;
  let ref: (repoTag: string) => string;

  beforeAll(async () => {
    work = makeTempDir('rs-e2e-clients-');
    storage = await createTestStorage('e2e-clients', { dataDir: path.join(work, 'data') });
    srv = await startServerProcess({
      dataDir: path.join(work, 'data'),
      storageDriver: storage.driverConfig(),
      users: { [USER]: PASSWORD },
      workDir: path.join(work, 'srv'),
    });
    cli = new ContainersClients([srv.host], path.join(work, 'cli'));
    http = new RegistryClient(srv.url, AUTH);
    ref = (repoTag) => `${srv.host}/${repoTag}`;
  });

  afterAll(async () => {
    await ctrd?.stop();
    await srv?.stop();
    await storage?.destroy();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  test('the server refuses anonymous and wrong-password clients', async () => {
    expect((await new RegistryClient(srv.url).req('/v2/')).status).toBe(401);
    const wrong = await cli.skopeo(['inspect', '--tls-verify=false', '--creds', `${USER}:nope`, `docker://${ref('team/none:v1')}`], {
      allowFailure: true,
    });
    expect(wrong.code).not.toBe(0);
    expect(wrong.stderr).toMatch(/unauthorized|authentication required/i);
  });

  test('skopeo: copy an OCI layout in, inspect, copy out, list-tags, delete', async () => {
    // One 16 MiB layer, so skopeo streams a real amount of data through PATCH.
    const image = buildImage({ files: [{ 'etc/app.conf': 'answer=42\n' }, { 'bin/app': randomBytes(16 * 1024 * 1024) }] });
    const src = path.join(work, 'src-app');
    writeOciLayout(src, 'v1', image);

    await cli.skopeo(['copy', '--dest-tls-verify=false', '--dest-creds', CREDS, `oci:${src}:v1`, `docker://${ref('team/app:v1')}`]);
    await cli.skopeo(['copy', '--dest-tls-verify=false', '--dest-creds', CREDS, `oci:${src}:v1`, `docker://${ref('team/app:v2')}`]);

    // --raw: the exact manifest bytes that went in.
    const raw = await cli.skopeo(['inspect', '--tls-verify=false', '--creds', CREDS, '--raw', `docker://${ref('team/app:v1')}`]);
    expect(sha256(Buffer.from(raw.stdout))).toBe(image.manifest.digest);
    expect(Buffer.from(raw.stdout).equals(image.manifest.data)).toBe(true);
    // normal inspect: digest, layers and platform as the client understands them.
    const info = JSON.parse((await cli.skopeo(['inspect', '--tls-verify=false', '--creds', CREDS, `docker://${ref('team/app:v1')}`])).stdout);
    expect(info.Digest).toBe(image.manifest.digest);
    expect(info.Layers).toEqual(image.layers.map((l) => l.digest));
    expect(info.Architecture).toBe('amd64');
    expect(info.Os).toBe('linux');
    expect([...info.RepoTags].sort()).toEqual(['v1', 'v2']);

    // What the server serves over HTTP is the same tree.
    const pulled = await verifyPull(srv.url, AUTH, 'team/app', 'v1');
    expect(pulled.digest).toBe(image.manifest.digest);
    expect(pulled.mediaType).toBe(MT.ociManifest);
    expect(pulled.blobs).toEqual([image.config.digest, ...image.layers.map((l) => l.digest)]);

    // Copy out to a fresh OCI layout: same manifest digest, every blob intact.
    const out = path.join(work, 'out-app');
    await cli.skopeo(['copy', '--src-tls-verify=false', '--src-creds', CREDS, `docker://${ref('team/app:v1')}`, `oci:${out}:v1`]);
    expect(layoutTop(out).digest).toBe(image.manifest.digest);
    expectLayoutIntact(out);
    for (const blob of [image.config, ...image.layers]) {
      expect(readFileSync(path.join(out, 'blobs', 'sha256', blob.digest.slice(7))).equals(blob.data)).toBe(true);
    }

    const tags = JSON.parse((await cli.skopeo(['list-tags', '--tls-verify=false', '--creds', CREDS, `docker://${ref('team/app')}`])).stdout);
    expect([...tags.Tags].sort()).toEqual(['v1', 'v2']);

    // skopeo delete removes the manifest (by digest, so both tags go).
    await cli.skopeo(['delete', '--tls-verify=false', '--creds', CREDS, `docker://${ref('team/app:v1')}`]);
    expect((await fetchManifest(srv.url, AUTH, 'team/app', image.manifest.digest)).status).toBe(404);
    expect((await fetchManifest(srv.url, AUTH, 'team/app', 'v1')).status).toBe(404);
    expect(await listTags(srv.url, AUTH, 'team/app')).toEqual([]);
    const gone = await cli.skopeo(['inspect', '--tls-verify=false', '--creds', CREDS, '--raw', `docker://${ref('team/app:v1')}`], {
      allowFailure: true,
    });
    expect(gone.code).not.toBe(0);
    expect(gone.stderr).toMatch(/manifest unknown/i);
  });

  test('skopeo: a multi-arch index with --all, one platform picked from it, and copied back out whole', async () => {
    const amd64 = buildImage({ architecture: 'amd64', files: [{ 'arch.txt': 'amd64\n' }] });
    const arm64 = buildImage({ architecture: 'arm64', files: [{ 'arch.txt': 'arm64\n' }] });
    const index = buildIndex([amd64, arm64]);
    const src = path.join(work, 'src-multi');
    writeOciLayout(src, 'multi', index);

    await cli.skopeo(['copy', '--all', '--dest-tls-verify=false', '--dest-creds', CREDS, `oci:${src}:multi`, `docker://${ref('team/multi:1.0')}`]);

    const raw = await cli.skopeo(['inspect', '--tls-verify=false', '--creds', CREDS, '--raw', `docker://${ref('team/multi:1.0')}`]);
    expect(sha256(Buffer.from(raw.stdout))).toBe(index.index.digest);
    const pulled = await verifyPull(srv.url, AUTH, 'team/multi', '1.0');
    expect(pulled.digest).toBe(index.index.digest);
    expect(pulled.mediaType).toBe(MT.ociIndex);
    expect(pulled.manifests).toEqual([index.index.digest, amd64.manifest.digest, arm64.manifest.digest]);

    // skopeo picks the platform it is told to from the index.
    const armInfo = JSON.parse(
      (
        await cli.skopeo([
          '--override-arch',
          'arm64',
          'inspect',
          '--tls-verify=false',
          '--creds',
          CREDS,
          `docker://${ref('team/multi:1.0')}`,
        ])
      ).stdout,
    );
    expect(armInfo.Architecture).toBe('arm64');
    expect(armInfo.Layers).toEqual(arm64.layers.map((l) => l.digest));

    // --all out: the whole index comes back byte for byte.
    const out = path.join(work, 'out-multi');
    await cli.skopeo(['copy', '--all', '--src-tls-verify=false', '--src-creds', CREDS, `docker://${ref('team/multi:1.0')}`, `oci:${out}:multi`]);
    expect(layoutTop(out).digest).toBe(index.index.digest);
    expectLayoutIntact(out);
    for (const img of [amd64, arm64]) {
      for (const blob of [img.manifest, img.config, ...img.layers]) {
        expect(readFileSync(path.join(out, 'blobs', 'sha256', blob.digest.slice(7))).equals(blob.data)).toBe(true);
      }
    }
  });

  test('skopeo: Docker v2s2 (--format v2s2 conversion, and a v2s2 image copied between repositories)', async () => {
    const image = buildImage({ files: [{ 'v2s2.txt': 'docker format\n' }] });
    const src = path.join(work, 'src-v2s2');
    writeOciLayout(src, 'v1', image);
    await cli.skopeo([
      'copy',
      '--format',
      'v2s2',
      '--dest-tls-verify=false',
      '--dest-creds',
      CREDS,
      `oci:${src}:v1`,
      `docker://${ref('team/docker:v1')}`,
    ]);
    const m = await fetchManifest(srv.url, AUTH, 'team/docker', 'v1');
    expect(m.status).toBe(200);
    expect(m.mediaType).toBe(MT.dockerManifest);
    expect(m.json.mediaType).toBe(MT.dockerManifest);
    expect(m.json.config.mediaType).toBe(MT.dockerConfig);
    expect(m.json.config.digest).toBe(image.config.digest);
    expect(m.json.layers.map((l: { digest: string; mediaType: string }) => [l.digest, l.mediaType])).toEqual(
      image.layers.map((l) => [l.digest, MT.dockerLayer]),
    );
    const pulled = await verifyPull(srv.url, AUTH, 'team/docker', 'v1');
    expect(pulled.digest).toBe(m.digest);

    // A native v2s2 image (pushed over HTTP) survives a registry-to-registry
    // copy with its digest: skopeo mounts or re-uploads the blobs, then puts the same bytes.
    const native = buildImage({ docker: true });
    await http.pushImage('team/docker-native', 'v1', native);
    await cli.skopeo([
      'copy',
      '--src-tls-verify=false',
      '--dest-tls-verify=false',
      '--src-creds',
      CREDS,
      '--dest-creds',
      CREDS,
      `docker://${ref('team/docker-native:v1')}`,
      `docker://${ref('team/docker-copy:v1')}`,
    ]);
    const copied = await verifyPull(srv.url, AUTH, 'team/docker-copy', 'v1');
    expect(copied.digest).toBe(native.manifest.digest);
    expect(copied.mediaType).toBe(MT.dockerManifest);
    const info = JSON.parse((await cli.skopeo(['inspect', '--tls-verify=false', '--creds', CREDS, `docker://${ref('team/docker-copy:v1')}`])).stdout);
    expect(info.Digest).toBe(native.manifest.digest);
  });

  test('skopeo: concurrent pushes of the same layers to several repositories and tags', async () => {
    const image = buildImage({ files: [{ 'shared.bin': randomBytes(8 * 1024 * 1024) }, { 'n.txt': 'same layers everywhere\n' }] });
    const src = path.join(work, 'src-concurrent');
    writeOciLayout(src, 'v1', image);
    const targets = ['team/conc-a:v1', 'team/conc-a:v2', 'team/conc-b:v1', 'team/conc-c:v1'];
    // Separate client environments: no shared auth file or temp dirs between the four.
    await Promise.all(
      targets.map((t, i) =>
        new ContainersClients([srv.host], path.join(work, `cli-conc-${i}`)).skopeo([
          'copy',
          '--dest-tls-verify=false',
          '--dest-creds',
          CREDS,
          `oci:${src}:v1`,
          `docker://${ref(t)}`,
        ]),
      ),
    );
    for (const t of targets) {
      const [repo, tag] = t.split(':');
      const pulled = await verifyPull(srv.url, AUTH, repo, tag);
      expect(pulled.digest).toBe(image.manifest.digest);
      expect(pulled.blobs).toEqual([image.config.digest, ...image.layers.map((l) => l.digest)]);
    }
    expect(await listTags(srv.url, AUTH, 'team/conc-a')).toEqual(['v1', 'v2']);
  });

  test('podman: login, pull, tag, push, pull back in a fresh store', async () => {
    const image = buildImage({ files: [{ 'podman.txt': 'from podman\n' }] });
    await http.pushImage('team/pod', 'v1', image);

    const login = await cli.podman(['login', '--tls-verify=false', '-u', USER, '-p', PASSWORD, srv.host]);
    expect(login.stdout).toMatch(/Login Succeeded/);
    const authJson = JSON.parse(readFileSync(cli.authFile, 'utf8'));
    expect(Object.keys(authJson.auths)).toContain(srv.host);

    await cli.podman(['pull', '--tls-verify=false', ref('team/pod:v1')]);
    const imgs = JSON.parse((await cli.podman(['images', '--format', 'json'])).stdout) as { Id: string; Digest: string; Names?: string[] }[];
    const mine = imgs.find((i) => i.Names?.includes(ref('team/pod:v1')));
    expect(mine?.Digest).toBe(image.manifest.digest);
    expect(`sha256:${mine?.Id}`).toBe(image.config.digest);

    await cli.podman(['tag', ref('team/pod:v1'), ref('team/pod:v2')]);
    await cli.podman(['push', '--tls-verify=false', ref('team/pod:v2')]);
    // podman may rewrite the manifest (and recompress layers), but the image is the same: same config.
    const pushed = await verifyPull(srv.url, AUTH, 'team/pod', 'v2');
    const pushedManifest = (await fetchManifest(srv.url, AUTH, 'team/pod', 'v2')).json;
    expect(pushedManifest.config.digest).toBe(image.config.digest);
    expect(pushed.blobs).toContain(image.config.digest);
    expect(await listTags(srv.url, AUTH, 'team/pod')).toEqual(['v1', 'v2']);

    // A second, empty store pulls v2 with --creds (no login) and gets the same image.
    const other = new ContainersClients([srv.host], path.join(work, 'cli-podman-2'));
    await other.podman(['pull', '--tls-verify=false', '--creds', CREDS, ref('team/pod:v2')]);
    const imgs2 = JSON.parse((await other.podman(['images', '--format', 'json'])).stdout) as { Id: string; Digest: string }[];
    expect(imgs2).toHaveLength(1);
    expect(`sha256:${imgs2[0].Id}`).toBe(image.config.digest);
    expect(imgs2[0].Digest).toBe(pushed.digest);

    await cli.podman(['logout', srv.host]);
    const denied = await cli.podman(['pull', '--tls-verify=false', ref('team/pod:v1')], { allowFailure: true });
    expect(denied.code).not.toBe(0);
  });

  test('podman manifest: build a manifest list from two images in the registry and push it with --all', async () => {
    const amd64 = buildImage({ architecture: 'amd64' });
    const arm64 = buildImage({ architecture: 'arm64' });
    await http.pushImage('team/plat', 'amd64', amd64);
    await http.pushImage('team/plat', 'arm64', arm64);
    const list = ref('team/plist:v1');
    await cli.podman(['manifest', 'create', list]);
    for (const tag of ['amd64', 'arm64']) {
      await cli.podman(['manifest', 'add', '--tls-verify=false', '--creds', CREDS, list, `docker://${ref(`team/plat:${tag}`)}`]);
    }
    const digestFile = path.join(work, 'plist.digest');
    await cli.podman(['manifest', 'push', '--all', '--tls-verify=false', '--creds', CREDS, '--digestfile', digestFile, list, `docker://${list}`]);

    const pulled = await verifyPull(srv.url, AUTH, 'team/plist', 'v1');
    expect(pulled.digest).toBe(readFileSync(digestFile, 'utf8').trim());
    expect([MT.ociIndex, MT.dockerList]).toContain(pulled.mediaType);
    expect(pulled.manifests.slice(1).sort()).toEqual([amd64.manifest.digest, arm64.manifest.digest].sort());
    const index = (await fetchManifest(srv.url, AUTH, 'team/plist', 'v1')).json;
    const platforms = index.manifests.map((m: { platform: { architecture: string } }) => m.platform.architecture).sort();
    expect(platforms).toEqual(['amd64', 'arm64']);
  });

  test('buildah: from scratch, copy, commit, push; the pushed layer holds the file', async () => {
    const file = path.join(work, 'buildah-file.txt');
    const content = `built by buildah ${Date.now()}\n`;
    writeFileSync(file, content);
    const container = (await cli.buildah(['from', 'scratch'])).stdout.trim();
    expect(container).not.toBe('');
    await cli.buildah(['copy', container, file, '/hello.txt']);
    await cli.buildah(['config', '--cmd', '/hello.txt', '--label', 'e2e=buildah', container]);
    const imageId = (await cli.buildah(['commit', '--format', 'oci', container, ref('team/built:v1')])).stdout.trim().split('\n').pop();
    const digestFile = path.join(work, 'buildah.digest');
    await cli.buildah(['push', '--tls-verify=false', '--creds', CREDS, '--digestfile', digestFile, ref('team/built:v1')]);
    const pushedDigest = readFileSync(digestFile, 'utf8').trim();

    const pulled = await verifyPull(srv.url, AUTH, 'team/built', 'v1');
    expect(pulled.digest).toBe(pushedDigest);
    const manifest = (await fetchManifest(srv.url, AUTH, 'team/built', 'v1')).json;
    expect(manifest.config.digest).toBe(`sha256:${imageId}`);
    expect(manifest.layers).toHaveLength(1);
    const layer = await http.req(`/v2/team/built/blobs/${manifest.layers[0].digest}`);
    expect(layer.status).toBe(200);
    expect(sha256(layer.body)).toBe(manifest.layers[0].digest);
    expect(tarContains(layer.body, content)).toBe(true);
    const config = JSON.parse((await http.req(`/v2/team/built/blobs/${manifest.config.digest}`)).text);
    expect(config.config.Labels).toMatchObject({ e2e: 'buildah' });

    // buildah pulls it back (into a fresh store) to the same image id.
    const other = new ContainersClients([srv.host], path.join(work, 'cli-buildah-2'));
    const pulledId = (await other.buildah(['pull', '--tls-verify=false', '--creds', CREDS, ref('team/built:v1')])).stdout.trim().split('\n').pop();
    expect(pulledId).toBe(imageId);
  });

  test('containerd ctr: pull with --user, unpack, content digests match', async () => {
    const image = buildImage({ files: [{ 'ctr.txt': 'for containerd\n' }, { 'more/data.bin': Buffer.alloc(300_000, 7) }] });
    await http.pushImage('team/ctr', 'v1', image);
    const amd64 = buildImage({ architecture: 'amd64' });
    const arm64 = buildImage({ architecture: 'arm64' });
    const index = buildIndex([amd64, arm64]);
    await http.pushIndex('team/ctr-multi', 'latest', index);

    ctrd = await Containerd.start(path.join(work, 'ctrd'));
    const imageRef = ref('team/ctr:v1');
    await ctrd.ctr(['images', 'pull', '--plain-http', '--user', CREDS, '--snapshotter', 'native', imageRef]);
    expect(await ctrd.imageDigest(imageRef)).toBe(image.manifest.digest);
    for (const blob of [image.manifest, image.config, ...image.layers]) {
      const got = await ctrd.content(blob.digest);
      expect(sha256(got)).toBe(blob.digest);
    }
    // Unpacked: containerd checked every layer's diff_id against the config.
    const check = await ctrd.ctr(['images', 'check']);
    expect(check.stdout).toMatch(new RegExp(`${imageRef.replace(/[.]/g, '\\.')}\\s+application/vnd\\.oci\\.image\\.manifest\\.v1\\+json\\s+${image.manifest.digest}\\s+complete`));

    // A multi-arch index: containerd resolves the index and fetches only the platform asked for.
    const multiRef = ref('team/ctr-multi:latest');
    await ctrd.ctr(['images', 'pull', '--plain-http', '--user', CREDS, '--platform', 'linux/arm64', '--snapshotter', 'native', multiRef]);
    expect(await ctrd.imageDigest(multiRef)).toBe(index.index.digest);
    expect(sha256(await ctrd.content(arm64.layers[0].digest))).toBe(arm64.layers[0].digest);
    const amdLayer = await ctrd.ctr(['content', 'get', amd64.layers[0].digest], { allowFailure: true });
    expect(amdLayer.code).not.toBe(0);

    // ctr push: an image imported from an OCI archive goes up through containerd's pusher.
    const pushedImage = buildImage({ files: [{ 'big.bin': randomBytes(5_000_000) }, { 'small.txt': 'pushed by ctr\n' }] });
    const layout = path.join(work, 'ctr-import');
    writeOciLayout(layout, 'v1', pushedImage);
    const archive = path.join(work, 'ctr-import.tar');
    await run('tar', ['-C', layout, '-cf', archive, '.']);
    const pushRef = ref('team/ctr-pushed:v1');
    await ctrd.ctr(['images', 'import', '--base-name', ref('team/ctr-pushed'), '--snapshotter', 'native', archive]);
    expect(await ctrd.imageDigest(pushRef)).toBe(pushedImage.manifest.digest);
    await ctrd.ctr(['images', 'push', '--plain-http', '--user', CREDS, pushRef]);
    const pushed = await verifyPull(srv.url, AUTH, 'team/ctr-pushed', 'v1');
    expect(pushed.digest).toBe(pushedImage.manifest.digest);
    expect(pushed.blobs).toEqual([pushedImage.config.digest, ...pushedImage.layers.map((l) => l.digest)]);

    // Wrong credentials: no image.
    const denied = await ctrd.ctr(['images', 'pull', '--plain-http', '--user', `${USER}:wrong`, ref('team/ctr:v1').replace(':v1', ':v2')], {
      allowFailure: true,
    });
    expect(denied.code).not.toBe(0);
  });
});

describe('anonymous pull (auth.anonymouspull: true), users from Apache htpasswd -B', () => {
  let work: string;
  let storage: TestStorage | undefined;
  let srv: ServerProcess;
  let anon: ContainersClients;
  let ctrd: Containerd | undefined;
  const image = buildImage({ files: [{ 'public.txt': 'anyone may pull this\n' }] });

  beforeAll(async () => {
    work = makeTempDir('rs-e2e-anon-');
    // The users file comes from Apache's tool ($2y$ bcrypt), as an operator would make it.
    const htpasswdFile = path.join(work, 'htpasswd');
    await run('htpasswd', ['-B', '-b', '-c', '-C', '5', htpasswdFile, USER, PASSWORD]);
    expect(readFileSync(htpasswdFile, 'utf8')).toMatch(new RegExp(`^${USER}:\\$2y\\$05\\$`));
    storage = await createTestStorage('e2e-anon', { dataDir: path.join(work, 'data') });
    srv = await startServerProcess({
      dataDir: path.join(work, 'data'),
      storageDriver: storage.driverConfig(),
      htpasswdFile,
      anonymousPull: true,
      workDir: path.join(work, 'srv'),
    });
    anon = new ContainersClients([srv.host], path.join(work, 'cli'));
    await new RegistryClient(srv.url, AUTH).pushImage('public/app', 'v1', image);
  });

  afterAll(async () => {
    await ctrd?.stop();
    await srv?.stop();
    await storage?.destroy();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  test('skopeo and podman pull without credentials; pushes still need a login', async () => {
    const raw = await anon.skopeo(['inspect', '--tls-verify=false', '--raw', `docker://${srv.host}/public/app:v1`]);
    expect(sha256(Buffer.from(raw.stdout))).toBe(image.manifest.digest);
    const out = path.join(work, 'out');
    await anon.skopeo(['copy', '--src-tls-verify=false', `docker://${srv.host}/public/app:v1`, `oci:${out}:v1`]);
    expect(layoutTop(out).digest).toBe(image.manifest.digest);
    expectLayoutIntact(out);
    const pulled = await verifyPull(srv.url, undefined, 'public/app', 'v1');
    expect(pulled.digest).toBe(image.manifest.digest);

    await anon.podman(['pull', '--tls-verify=false', `${srv.host}/public/app:v1`]);
    const imgs = JSON.parse((await anon.podman(['images', '--format', 'json'])).stdout) as { Id: string; Digest: string }[];
    expect(imgs.map((i) => i.Digest)).toEqual([image.manifest.digest]);

    // Anonymous push is refused and leaves nothing behind.
    const src = path.join(work, 'src');
    writeOciLayout(src, 'v1', buildImage());
    const push = await anon.skopeo(['copy', '--dest-tls-verify=false', `oci:${src}:v1`, `docker://${srv.host}/public/app:v2`], { allowFailure: true });
    expect(push.code).not.toBe(0);
    expect(push.stderr).toMatch(/unauthorized|authentication required|denied/i);
    expect(await listTags(srv.url, undefined, 'public/app')).toEqual(['v1']);
    // ... and works with credentials.
    await anon.skopeo(['copy', '--dest-tls-verify=false', '--dest-creds', CREDS, `oci:${src}:v1`, `docker://${srv.host}/public/app:v2`]);
    expect(await listTags(srv.url, undefined, 'public/app')).toEqual(['v1', 'v2']);
  });

  test('containerd ctr pulls without --user', async () => {
    ctrd = await Containerd.start(path.join(work, 'ctrd'));
    const imageRef = `${srv.host}/public/app:v1`;
    await ctrd.ctr(['images', 'pull', '--plain-http', '--snapshotter', 'native', imageRef]);
    expect(await ctrd.imageDigest(imageRef)).toBe(image.manifest.digest);
    expect(sha256(await ctrd.content(image.layers[0].digest))).toBe(image.layers[0].digest);
  });
});
