import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RegistryClient } from '../helpers/client.ts';
import { buildImage, buildIndex, MT } from '../helpers/oci.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';

describe('push and pull over the API', () => {
  let server: TestServer;
  let client: RegistryClient;
  beforeAll(async () => {
    server = await startTestServer();
    client = new RegistryClient(server.url, server.auth);
  });
  afterAll(() => server.stop());

  it('round-trips an OCI image by tag and by digest', async () => {
    const image = buildImage();
    await client.pushImage('team/app', 'v1', image);
    const byTag = await client.req('/v2/team/app/manifests/v1', { headers: { accept: MT.ociManifest } });
    expect(byTag.status).toBe(200);
    expect(byTag.header('docker-content-digest')).toBe(image.manifest.digest);
    expect(byTag.header('content-type')).toBe(MT.ociManifest);
    expect(byTag.body.equals(image.manifest.data)).toBe(true);
    const byDigest = await client.req(`/v2/team/app/manifests/${image.manifest.digest}`);
    expect(byDigest.body.equals(image.manifest.data)).toBe(true);
    const layer = await client.req(`/v2/team/app/blobs/${image.layers[0].digest}`);
    expect(layer.status).toBe(200);
    expect(layer.body.equals(image.layers[0].data)).toBe(true);
  });

  it('round-trips a multi-arch index', async () => {
    const index = buildIndex([buildImage({ architecture: 'amd64' }), buildImage({ architecture: 'arm64' })]);
    await client.pushIndex('team/multi', 'latest', index);
    const res = await client.req('/v2/team/multi/manifests/latest', { headers: { accept: `${MT.ociIndex}, ${MT.ociManifest}` } });
    expect(res.status).toBe(200);
    expect(res.header('content-type')).toBe(MT.ociIndex);
    expect(res.header('docker-content-digest')).toBe(index.index.digest);
  });
});
