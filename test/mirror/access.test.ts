// What the mirror lets clients do: pull only (every write is 405 UNSUPPORTED
// and leaves the data directory untouched), anonymously or with htpasswd
// logins, with Cache-Control headers a CDN in front can follow.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { errorCodes, RegistryClient } from '../helpers/client.ts';
import { ContainersClients } from '../helpers/clients.ts';
import { type LocalMirror, startMirror } from '../helpers/mirror/mirror.ts';
import { FakeUpstream } from '../helpers/mirror/upstream.ts';
import { buildImage, MT, writeOciLayout } from '../helpers/oci.ts';
import { makeTempDir, snapshotTree, TEST_PASSWORD, TEST_USER, basicAuth } from '../helpers/server.ts';
import { rmSync } from 'node:fs';
import * as path from 'node:path';

describe('mirror: read-only, pull access and caching headers', () => {
  let upstream: FakeUpstream;
  let open: LocalMirror;
  let locked: LocalMirror;
  let anonPull: LocalMirror;
  const image = buildImage({ files: [{ 'x.txt': 'mirror access test\n' }, { 'y.txt': 'second layer\n' }] });
  const users = { [TEST_USER]: TEST_PASSWORD };
  const tmp = makeTempDir('rs-mirror-access-');

  beforeAll(async () => {
    upstream = await FakeUpstream.start();
    await upstream.pushImage('team/app', 'v1', image);
    const upstreams = [{ host: 'docker.io', url: upstream.url }];
    [open, locked, anonPull] = await Promise.all([
      startMirror({ upstreams, proxy: { tagmaxage: '5m' } }),
      startMirror({ upstreams, users }),
      startMirror({ upstreams, users, anonymousPull: true }),
    ]);
  });

  afterAll(async () => {
    await Promise.all([open?.stop(), locked?.stop(), anonPull?.stop()]);
    await upstream?.dispose();
    rmSync(tmp, { recursive: true, force: true });
  });

  it('refuses push, tag delete, blob upload and blob delete with 405 UNSUPPORTED and writes nothing', async () => {
    const c = new RegistryClient(open.url);
    // Something cached first, so that deletes have a target.
    expect((await c.req('/v2/team/app/manifests/v1', { headers: { accept: MT.ociManifest } })).status).toBe(200);
    expect((await c.req(`/v2/team/app/blobs/${image.layers[0].digest}`)).status).toBe(200);
    await open.settled();
    const before = snapshotTree(open.dataDir);
    const upstreamBefore = await upstream.count();
    const layer = image.layers[1];
    const attempts: Array<[string, string, Record<string, string>?, Buffer?]> = [
      ['PUT', '/v2/team/app/manifests/v2', { 'content-type': image.mediaType }, image.manifest.data],
      ['PUT', '/v2/team/app/manifests/v1', { 'content-type': image.mediaType }, image.manifest.data],
      ['PUT', `/v2/team/app/manifests/${image.manifest.digest}`, { 'content-type': image.mediaType }, image.manifest.data],
      ['PUT', '/v2/team/app/manifests/v2?ns=docker.io', { 'content-type': image.mediaType }, image.manifest.data],
      ['DELETE', '/v2/team/app/manifests/v1'],
      ['DELETE', `/v2/team/app/manifests/${image.manifest.digest}`],
      ['DELETE', `/v2/docker.io/team/app/manifests/${image.manifest.digest}`],
      ['POST', '/v2/team/app/blobs/uploads/'],
      ['POST', `/v2/team/app/blobs/uploads/?digest=${layer.digest}`, { 'content-type': 'application/octet-stream' }, layer.data],
      ['POST', `/v2/team/app/blobs/uploads/?mount=${image.layers[0].digest}&from=team/app`],
      ['PATCH', '/v2/team/app/blobs/uploads/0b0d7e8e-8d29-4d5c-9a57-1f1bb3a4c0de', { 'content-type': 'application/octet-stream' }, layer.data],
      ['PUT', `/v2/team/app/blobs/uploads/0b0d7e8e-8d29-4d5c-9a57-1f1bb3a4c0de?digest=${layer.digest}`, {}, layer.data],
      ['DELETE', '/v2/team/app/blobs/uploads/0b0d7e8e-8d29-4d5c-9a57-1f1bb3a4c0de'],
      ['DELETE', `/v2/team/app/blobs/${image.layers[0].digest}`],
    ];
    for (const [method, p, headers, body] of attempts) {
      const res = await c.req(p, { method, headers, body });
      expect({ method, p, status: res.status, codes: errorCodes(res) }).toEqual({ method, p, status: 405, codes: ['UNSUPPORTED'] });
    }
    // A logged-in user of a mirror with auth cannot write either.
    const withLogin = new RegistryClient(locked.url, basicAuth(TEST_USER, TEST_PASSWORD));
    const put = await withLogin.req('/v2/team/app/manifests/v2', { method: 'PUT', headers: { 'content-type': image.mediaType }, body: image.manifest.data });
    expect(put.status).toBe(405);
    expect(errorCodes(put)).toEqual(['UNSUPPORTED']);
    const post = await withLogin.req('/v2/team/app/blobs/uploads/', { method: 'POST' });
    expect(post.status).toBe(405);

    expect(snapshotTree(open.dataDir)).toEqual(before);
    // Nothing was passed on to the upstream either.
    expect(await upstream.count()).toBe(upstreamBefore);
  });

  it('fails a real push (skopeo copy) into the mirror, leaving its data directory as it was', async () => {
    const clients = new ContainersClients([open.host], path.join(tmp, 'cli'));
    const layout = path.join(tmp, 'layout');
    const pushed = buildImage();
    writeOciLayout(layout, 'v1', pushed);
    await open.settled();
    const before = snapshotTree(open.dataDir);
    const res = await clients.skopeo(['copy', '--dest-tls-verify=false', `oci:${layout}:v1`, `docker://${open.host}/team/pushed:v1`], {
      allowFailure: true,
      timeoutMs: 60_000,
    });
    expect(res.code).not.toBe(0);
    expect(res.stderr).toMatch(/unsupported/i);
    expect(snapshotTree(open.dataDir)).toEqual(before);
    rmSync(clients.dir, { recursive: true, force: true });
  });

  it('sends Cache-Control for a CDN: immutable by digest, tagmaxage by tag, nothing on errors', async () => {
    const c = new RegistryClient(open.url);
    const immutable = 'public, max-age=31536000, immutable';
    for (const method of ['GET', 'HEAD']) {
      const byTag = await c.req('/v2/team/app/manifests/v1', { method, headers: { accept: MT.ociManifest } });
      expect(byTag.status).toBe(200);
      expect(byTag.header('cache-control')).toBe('public, max-age=300');
      const byDigest = await c.req(`/v2/team/app/manifests/${image.manifest.digest}`, { method, headers: { accept: MT.ociManifest } });
      expect(byDigest.status).toBe(200);
      expect(byDigest.header('cache-control')).toBe(immutable);
      for (const blob of [image.config, ...image.layers]) {
        const res = await c.req(`/v2/team/app/blobs/${blob.digest}`, { method });
        expect(res.status).toBe(200);
        expect(res.header('cache-control')).toBe(immutable);
        if (method === 'GET') expect(res.body.equals(blob.data)).toBe(true);
      }
    }
    const missing = await c.req('/v2/team/app/manifests/no-such-tag');
    expect(missing.status).toBe(404);
    expect(missing.header('cache-control') ?? '').not.toMatch(/public|max-age=[1-9]/);
    const missingBlob = await c.req(`/v2/team/app/blobs/sha256:${'0'.repeat(64)}`);
    expect(missingBlob.status).toBe(404);
    expect(missingBlob.header('cache-control') ?? '').not.toMatch(/public|max-age=[1-9]/);
  });

  it('with htpasswd: 401 with a Basic challenge without a login (and no upstream request), private caching with one', async () => {
    const anon = new RegistryClient(locked.url);
    const before = await upstream.count();
    for (const p of ['/v2/', '/v2/team/app/manifests/v1', `/v2/team/app/blobs/${image.layers[0].digest}`, '/v2/_catalog']) {
      const res = await anon.req(p);
      expect(res.status).toBe(401);
      expect(res.header('www-authenticate')).toMatch(/^Basic /);
      expect(res.header('cache-control') ?? '').not.toMatch(/public/);
    }
    const bad = await anon.withAuth(basicAuth(TEST_USER, 'wrong')).req('/v2/team/app/manifests/v1');
    expect(bad.status).toBe(401);
    expect(await upstream.count()).toBe(before);

    const user = anon.withAuth(basicAuth(TEST_USER, TEST_PASSWORD));
    const byTag = await user.req('/v2/team/app/manifests/v1', { headers: { accept: MT.ociManifest } });
    expect(byTag.status).toBe(200);
    expect(byTag.header('docker-content-digest')).toBe(image.manifest.digest);
    expect(byTag.header('cache-control')).toBe('private, max-age=60');
    const blob = await user.req(`/v2/team/app/blobs/${image.layers[0].digest}`);
    expect(blob.status).toBe(200);
    expect(blob.body.equals(image.layers[0].data)).toBe(true);
    expect(blob.header('cache-control')).toBe('private, max-age=31536000, immutable');
  });

  it('with anonymouspull: pulls without a login, still no writes', async () => {
    const anon = new RegistryClient(anonPull.url);
    const res = await anon.req('/v2/team/app/manifests/v1', { headers: { accept: MT.ociManifest } });
    expect(res.status).toBe(200);
    expect(res.header('docker-content-digest')).toBe(image.manifest.digest);
    const blob = await anon.req(`/v2/team/app/blobs/${image.layers[1].digest}`);
    expect(blob.status).toBe(200);
    expect(blob.body.equals(image.layers[1].data)).toBe(true);
    await anonPull.settled();
    const before = snapshotTree(anonPull.dataDir);
    for (const c of [anon, anon.withAuth(basicAuth(TEST_USER, TEST_PASSWORD))]) {
      const put = await c.req('/v2/team/app/manifests/v2', { method: 'PUT', headers: { 'content-type': image.mediaType }, body: image.manifest.data });
      expect(put.status).toBe(405);
      const del = await c.req(`/v2/team/app/manifests/${image.manifest.digest}`, { method: 'DELETE' });
      expect(del.status).toBe(405);
    }
    expect(snapshotTree(anonPull.dataDir)).toEqual(before);
  });
});
