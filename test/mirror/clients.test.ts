// Real clients through the mirror, configured the way users configure them:
// skopeo by name, podman with a registries.conf mirror for docker.io and for a
// second registry, and containerd's ctr with hosts.toml mirror configs (the
// ?ns=<host> path end to end). Two distribution 2.8.2 instances play docker.io
// and ghcr.io; both hold an `org/tool:v1` with different content, so which
// one answered shows which way the mirror routed.
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Containerd, ContainersClients } from '../helpers/clients.ts';
import { hostsToml, registriesConf } from '../helpers/mirror/client-configs.ts';
import { cachedTag, type MirrorProcess, startMirror, startMirrorProcess } from '../helpers/mirror/mirror.ts';
import { FakeUpstream } from '../helpers/mirror/upstream.ts';
import { buildImage } from '../helpers/oci.ts';
import { makeTempDir, TEST_PASSWORD, TEST_USER } from '../helpers/server.ts';

describe('mirror: real clients', () => {
  let hub: FakeUpstream;
  let gh: FakeUpstream;
  let mirror: MirrorProcess;
  let clients: ContainersClients;
  const tmp = makeTempDir('rs-mirror-clients-');
  const alpine = buildImage({ files: [{ 'etc/os-release': 'NAME="Alpine (mirror test)"\n' }, { 'bin/tool': '#!/bin/sh\necho hi\n' }] });
  const hubTool = buildImage({ files: [{ 'tool.txt': 'org/tool on docker.io\n' }] });
  const ghTool = buildImage({ files: [{ 'tool.txt': 'org/tool on ghcr.io\n' }] });
  const dockerFormat = buildImage({ docker: true, files: [{ 'd.txt': 'docker v2s2 image\n' }] });

  beforeAll(async () => {
    [hub, gh] = await Promise.all([FakeUpstream.start(), FakeUpstream.start()]);
    await hub.pushImage('library/alpine', '3.20', alpine);
    await hub.pushImage('org/tool', 'v1', hubTool);
    await hub.pushImage('library/dockerfmt', 'v1', dockerFormat);
    await gh.pushImage('org/tool', 'v1', ghTool);
    mirror = await startMirrorProcess({
      upstreams: [
        { host: 'docker.io', url: hub.url },
        { host: 'ghcr.io', url: gh.url },
      ],
    });
    clients = new ContainersClients([mirror.host], path.join(tmp, 'containers'));
  });

  afterAll(async () => {
    await mirror?.stop();
    await Promise.all([hub?.dispose(), gh?.dispose()]);
    rmSync(tmp, { recursive: true, force: true });
  });

  /** The manifest digest skopeo sees at a reference. */
  async function skopeoDigest(ref: string): Promise<string> {
    const { stdout } = await clients.skopeo(['inspect', '--tls-verify=false', '--format', '{{.Digest}}', ref]);
    return stdout.trim();
  }

  it('skopeo pulls by default-upstream name, one-component name and leading-host name', async () => {
    expect(await skopeoDigest(`docker://${mirror.host}/library/alpine:3.20`)).toBe(alpine.manifest.digest);
    expect(await skopeoDigest(`docker://${mirror.host}/alpine:3.20`)).toBe(alpine.manifest.digest);
    expect(await skopeoDigest(`docker://${mirror.host}/org/tool:v1`)).toBe(hubTool.manifest.digest);
    expect(await skopeoDigest(`docker://${mirror.host}/ghcr.io/org/tool:v1`)).toBe(ghTool.manifest.digest);
    expect(await skopeoDigest(`docker://${mirror.host}/dockerfmt:v1`)).toBe(dockerFormat.manifest.digest);

    const out = path.join(tmp, 'skopeo-out');
    await clients.skopeo(['copy', '--src-tls-verify=false', `docker://${mirror.host}/ghcr.io/org/tool:v1`, `oci:${out}:v1`]);
    const index = JSON.parse(readFileSync(path.join(out, 'index.json'), 'utf8'));
    expect(index.manifests[0].digest).toBe(ghTool.manifest.digest);
    for (const b of [ghTool.config, ...ghTool.layers]) {
      expect(readFileSync(path.join(out, 'blobs', 'sha256', b.digest.slice(7))).equals(b.data)).toBe(true);
    }
    const raw = await clients.skopeo(['inspect', '--tls-verify=false', '--raw', `docker://${mirror.host}/dockerfmt:v1`]);
    expect(Buffer.from(raw.stdout).equals(dockerFormat.manifest.data)).toBe(true);
  });

  it('podman pulls docker.io and ghcr.io images through registries.conf mirrors, and the mirror by its own name', async () => {
    writeFileSync(path.join(clients.dir, 'registries.conf'), registriesConf(mirror.host));
    const digestOf = async (ref: string) => (await clients.podman(['image', 'inspect', '--format', '{{.Digest}}', ref])).stdout.trim();

    await clients.podman(['pull', 'docker.io/library/alpine:3.20'], { timeoutMs: 90_000 });
    expect(await digestOf('docker.io/library/alpine:3.20')).toBe(alpine.manifest.digest);
    await clients.podman(['pull', 'ghcr.io/org/tool:v1'], { timeoutMs: 90_000 });
    expect(await digestOf('ghcr.io/org/tool:v1')).toBe(ghTool.manifest.digest);
    await clients.podman(['pull', '--tls-verify=false', `${mirror.host}/alpine:3.20`], { timeoutMs: 90_000 });
    expect(await digestOf(`${mirror.host}/alpine:3.20`)).toBe(alpine.manifest.digest);
    await clients.podman(['pull', 'docker.io/library/dockerfmt:v1'], { timeoutMs: 90_000 });
    expect(await digestOf('docker.io/library/dockerfmt:v1')).toBe(dockerFormat.manifest.digest);

    // They came through the mirror: it cached them under each upstream's host (a tag is stored a
    // moment after its manifest was answered, by another process here: polled).
    await expect.poll(() => cachedTag(mirror.dataDir, 'docker.io/library/alpine', '3.20')).toBe(alpine.manifest.digest);
    await expect.poll(() => cachedTag(mirror.dataDir, 'ghcr.io/org/tool', 'v1')).toBe(ghTool.manifest.digest);
  });

  it('containerd (ctr --hosts-dir) pulls docker.io and ghcr.io images through hosts.toml mirrors, routed by ?ns=', async () => {
    const ctrd = await Containerd.start(path.join(tmp, 'ctrd'));
    try {
      const hostsDir = path.join(tmp, 'hosts');
      for (const [host, server] of [
        ['docker.io', 'https://registry-1.docker.io'],
        ['ghcr.io', 'https://ghcr.io'],
      ]) {
        mkdirSync(path.join(hostsDir, host), { recursive: true });
        writeFileSync(path.join(hostsDir, host, 'hosts.toml'), hostsToml(server, mirror.url));
      }
      const pullDump = async (ref: string) => {
        const r = await ctrd.ctr(['images', 'pull', '--http-dump', '--hosts-dir', hostsDir, ref], { timeoutMs: 90_000 });
        return `${r.stdout}\n${r.stderr}`;
      };

      const hubDump = await pullDump('docker.io/library/alpine:3.20');
      expect(await ctrd.imageDigest('docker.io/library/alpine:3.20')).toBe(alpine.manifest.digest);
      for (const b of [alpine.config, ...alpine.layers]) expect((await ctrd.content(b.digest)).equals(b.data)).toBe(true);
      expect(hubDump).toContain('/v2/library/alpine/manifests/3.20?ns=docker.io');
      expect(hubDump).toContain(`/v2/library/alpine/blobs/${alpine.layers[0].digest}?ns=docker.io`);

      // org/tool exists on both upstreams with different content: ns=ghcr.io must pick ghcr.io's.
      const ghDump = await pullDump('ghcr.io/org/tool:v1');
      expect(await ctrd.imageDigest('ghcr.io/org/tool:v1')).toBe(ghTool.manifest.digest);
      for (const b of [ghTool.config, ...ghTool.layers]) expect((await ctrd.content(b.digest)).equals(b.data)).toBe(true);
      expect(ghDump).toContain('/v2/org/tool/manifests/v1?ns=ghcr.io');
      await expect.poll(() => cachedTag(mirror.dataDir, 'ghcr.io/org/tool', 'v1')).toBe(ghTool.manifest.digest);

      // And docker.io's org/tool through the same mirror.
      await pullDump('docker.io/org/tool:v1');
      expect(await ctrd.imageDigest('docker.io/org/tool:v1')).toBe(hubTool.manifest.digest);
      await expect.poll(() => cachedTag(mirror.dataDir, 'docker.io/org/tool', 'v1')).toBe(hubTool.manifest.digest);

      // The upstreams were asked with the remote names only.
      await Promise.all([hub.sync(), gh.sync()]);
      expect(gh.requests(undefined, /^\/v2\/org\/tool\/manifests\//).length).toBeGreaterThan(0);
      expect(hub.requests(undefined, /^\/v2\/library\/alpine\/manifests\//).length).toBeGreaterThan(0);
    } finally {
      await ctrd.stop();
    }
    expect(existsSync(path.join(mirror.dataDir, 'docker', 'registry', 'v2', 'repositories', 'docker.io', 'library', 'alpine'))).toBe(true);
  });

  it('skopeo, podman and ctr log in to a mirror with htpasswd auth', async () => {
    const locked = await startMirror({ upstreams: [{ host: 'docker.io', url: hub.url }], users: { [TEST_USER]: TEST_PASSWORD } });
    const creds = `${TEST_USER}:${TEST_PASSWORD}`;
    const ctrd = await Containerd.start(path.join(tmp, 'ctrd-auth'));
    try {
      const denied = await clients.skopeo(['inspect', '--tls-verify=false', '--raw', `docker://${locked.host}/alpine:3.20`], { allowFailure: true });
      expect(denied.code).not.toBe(0);
      const { stdout } = await clients.skopeo(['inspect', '--tls-verify=false', '--creds', creds, '--format', '{{.Digest}}', `docker://${locked.host}/alpine:3.20`]);
      expect(stdout.trim()).toBe(alpine.manifest.digest);

      clients.addInsecureRegistry(locked.host);
      await clients.podman(['login', '--tls-verify=false', '--username', TEST_USER, '--password', TEST_PASSWORD, locked.host]);
      await clients.podman(['pull', '--tls-verify=false', `${locked.host}/org/tool:v1`], { timeoutMs: 90_000 });
      const digest = (await clients.podman(['image', 'inspect', '--format', '{{.Digest}}', `${locked.host}/org/tool:v1`])).stdout.trim();
      expect(digest).toBe(hubTool.manifest.digest);

      const hostsDir = path.join(tmp, 'hosts-auth');
      mkdirSync(path.join(hostsDir, 'docker.io'), { recursive: true });
      writeFileSync(path.join(hostsDir, 'docker.io', 'hosts.toml'), hostsToml('https://registry-1.docker.io', locked.url));
      await ctrd.ctr(['images', 'pull', '--user', creds, '--hosts-dir', hostsDir, 'docker.io/library/alpine:3.20'], { timeoutMs: 90_000 });
      expect(await ctrd.imageDigest('docker.io/library/alpine:3.20')).toBe(alpine.manifest.digest);
    } finally {
      await ctrd.stop();
      await locked.stop();
    }
  });
});
