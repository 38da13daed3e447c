// The local twin end to end: Caddy (tls internal, high ports) serving the
// rendered Caddyfile in front of the private registry and the mirror, both
// started from their rendered configs. Clients trust Caddy's local CA.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { type Dispatcher, getGlobalDispatcher, setGlobalDispatcher } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type LocalStack, startLocalStack } from '../../infra/local/stack.ts';
import { RegistryClient } from '../helpers/client.ts';
import { buildImage, type Image, MT, randomBlob, sha256 } from '../helpers/oci.ts';
import { basicAuth, startTestServer, type TestServer } from '../helpers/server.ts';

const USER = 'tester';
const PASSWORD = 'tester-password-1';

describe('local twin: Caddy over TLS in front of the private registry and the mirror', () => {
  let dir: string;
  let stack: LocalStack;
  let upstream: TestServer;
  let upstreamImage: Image;
  let previousDispatcher: Dispatcher;
  let dcr: RegistryClient;
  let mir: RegistryClient;
  let origin: Record<string, string>;

  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'rs-twin-'));
    // The mirror's upstream: a registry on loopback holding one image.
    upstream = await startTestServer({ anonymousPull: true });
    upstreamImage = buildImage({ files: [{ 'etc/upstream.txt': 'from the upstream\n' }] });
    await new RegistryClient(upstream.url, upstream.auth).pushImage('library/base', '1.0', upstreamImage);
    const upstreamHost = new URL(upstream.url).host;

    stack = await startLocalStack({
      dir,
      users: { [USER]: PASSWORD },
      upstreams: [{ host: upstreamHost, url: upstream.url }],
      mirrorDefaultHost: upstreamHost,
      stackConfig: { docker: { bcryptCost: 4 } },
    });
    previousDispatcher = getGlobalDispatcher();
    // The test clients use undici's global dispatcher: trust Caddy's CA, resolve *.localhost to loopback.
    setGlobalDispatcher(stack.dispatcher);
    dcr = new RegistryClient(stack.privateUrl, basicAuth(USER, PASSWORD));
    mir = new RegistryClient(stack.mirrorUrl);
    origin = { [stack.originHeader.name]: stack.originHeader.value };
  });

  afterAll(async () => {
    if (previousDispatcher) setGlobalDispatcher(previousDispatcher);
    await stack?.stop();
    await upstream?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('serves both hosts with certificates from Caddy\'s local CA, on the rendered Caddyfile', async () => {
    expect(stack.privateUrl).toMatch(/^https:\/\/dcr\.localhost:\d+$/);
    expect(stack.mirrorUrl).toMatch(/^https:\/\/mir\.localhost:\d+$/);
    expect(stack.caRoot).toContain('BEGIN CERTIFICATE');
    const res = await dcr.withAuth(undefined).req('/v2/');
    expect(res.status).toBe(401);
    expect(res.header('www-authenticate')).toContain('Basic');
    expect((await dcr.req('/v2/')).status).toBe(200);
  });

  it('pushes an image to the private host over TLS and pulls it back byte for byte', async () => {
    const image = buildImage({ files: [{ 'app/hello.txt': 'hello through caddy\n' }, { 'app/big.bin': randomBlob(4 * 1024 * 1024).data }] });
    await dcr.pushImage('team/app', 'v1', image);

    const manifest = await dcr.req('/v2/team/app/manifests/v1', { headers: { accept: image.mediaType } });
    expect(manifest.status).toBe(200);
    expect(manifest.header('docker-content-digest')).toBe(image.manifest.digest);
    expect(sha256(manifest.body)).toBe(image.manifest.digest);
    for (const blob of [image.config, ...image.layers]) {
      const res = await dcr.req(`/v2/team/app/blobs/${blob.digest}`);
      expect(res.status).toBe(200);
      expect(sha256(res.body)).toBe(blob.digest);
    }
    const tags = await dcr.req('/v2/team/app/tags/list');
    expect(tags.json()).toEqual({ name: 'team/app', tags: ['v1'] });
  });

  it('refuses a push without credentials on the private host', async () => {
    const res = await dcr.withAuth(undefined).req(`/v2/team/app/blobs/uploads/`, { method: 'POST' });
    expect(res.status).toBe(401);
  });

  it('answers 403 on the mirror host to requests without the origin header', async () => {
    for (const p of ['/v2/', '/v2/library/base/manifests/1.0', `/v2/library/base/blobs/${upstreamImage.config.digest}`]) {
      const res = await mir.req(p);
      expect(res.status, p).toBe(403);
    }
    const wrong = await mir.req('/v2/', { headers: { [stack.originHeader.name]: 'not-the-secret' } });
    expect(wrong.status).toBe(403);
  });

  it('refuses pushes on the mirror host, even with the origin header', async () => {
    const blob = randomBlob(1024);
    const post = await mir.req(`/v2/library/base/blobs/uploads/?digest=${blob.digest}`, {
      method: 'POST',
      headers: { ...origin, 'content-type': 'application/octet-stream' },
      body: blob.data,
    });
    expect(post.status).toBe(405);
    expect(post.json().errors[0].code).toBe('UNSUPPORTED');
    const put = await mir.req('/v2/library/base/manifests/evil', {
      method: 'PUT',
      headers: { ...origin, 'content-type': MT.ociManifest },
      body: upstreamImage.manifest.data,
    });
    expect(put.status).toBe(405);
    const del = await mir.req(`/v2/library/base/manifests/${upstreamImage.manifest.digest}`, { method: 'DELETE', headers: origin });
    expect(del.status).toBe(405);
    // nothing reached the upstream either
    const upstreamTags = await new RegistryClient(upstream.url).req('/v2/library/base/tags/list');
    expect(upstreamTags.json().tags).toEqual(['1.0']);
  });

  // Needs mirror mode in the server (proxy section): pulls through mir from the loopback upstream.
  it('pulls through the mirror host with the origin header (mirror mode)', async () => {
    const manifest = await mir.req('/v2/library/base/manifests/1.0', { headers: { ...origin, accept: upstreamImage.mediaType } });
    expect(manifest.status, manifest.text).toBe(200);
    expect(sha256(manifest.body)).toBe(upstreamImage.manifest.digest);
    for (const blob of [upstreamImage.config, ...upstreamImage.layers]) {
      const res = await mir.req(`/v2/library/base/blobs/${blob.digest}`, { headers: origin });
      expect(res.status).toBe(200);
      expect(sha256(res.body)).toBe(blob.digest);
    }
    // containerd's form: ?ns=<upstream host>
    const ns = new URL(upstream.url).host;
    const viaNs = await mir.req(`/v2/library/base/manifests/${upstreamImage.manifest.digest}?ns=${ns}`, {
      method: 'HEAD',
      headers: { ...origin, accept: upstreamImage.mediaType },
    });
    expect(viaNs.status).toBe(200);
    expect(viaNs.header('docker-content-digest')).toBe(upstreamImage.manifest.digest);
  });
});
