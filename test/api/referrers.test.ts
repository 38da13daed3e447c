// GET /v2/<name>/referrers/<digest> (OCI distribution 1.1): an image index of
// the manifests whose subject is <digest>, with the artifactType filter.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { errorCodes, RegistryClient } from '../helpers/client.ts';
import { blobOf, buildArtifact, buildImage, type Image, manifestDescriptor, MT, randomBlob } from '../helpers/oci.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';

const SBOM = 'application/vnd.example.sbom.v1+json';
const SIG = 'application/vnd.example.signature.v1';

describe('referrers', () => {
  let server: TestServer;
  let client: RegistryClient;
  const subject = buildImage();
  let sbom: Image;
  let sig: Image;
  let plain: Image; // an image manifest with a subject but no artifactType
  let sbomIndex: ReturnType<typeof blobOf>;

  beforeAll(async () => {
    server = await startTestServer();
    client = new RegistryClient(server.url, server.auth);
    await client.pushImage('ref/app', 'v1', subject);
    const desc = manifestDescriptor(subject);
    sbom = buildArtifact({ artifactType: SBOM, subject: desc, annotations: { 'org.example.kind': 'sbom', n: '1' } });
    sig = buildArtifact({ artifactType: SIG, subject: desc });
    plain = buildImage({ extra: { subject: desc, annotations: { 'org.example.kind': 'plain' } } });
    for (const a of [sbom, sig, plain]) await client.pushImage('ref/app', a.manifest.digest, a);
    // An index that refers to the subject (and holds the sbom), with its own artifactType.
    sbomIndex = blobOf(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MT.ociIndex,
        artifactType: SBOM,
        manifests: [manifestDescriptor(sbom)],
        subject: desc,
      }),
    );
    await client.pushManifest('ref/app', 'sbom-bundle', sbomIndex, MT.ociIndex);
  });
  afterAll(() => server.stop());

  const referrers = (digest: string, query = '', name = 'ref/app') =>
    client.req(`/v2/${name}/referrers/${digest}${query}`);

  it('returns an OCI image index of every manifest with that subject', async () => {
    const res = await referrers(subject.manifest.digest);
    expect(res.status).toBe(200);
    expect(res.header('content-type')).toBe(MT.ociIndex);
    expect(res.header('oci-filters-applied')).toBeUndefined();
    const body = res.json();
    expect(body.schemaVersion).toBe(2);
    expect(body.mediaType).toBe(MT.ociIndex);
    const expected = [
      {
        mediaType: MT.ociManifest,
        digest: sbom.manifest.digest,
        size: sbom.manifest.size,
        artifactType: SBOM,
        annotations: { 'org.example.kind': 'sbom', n: '1' },
      },
      { mediaType: MT.ociManifest, digest: sig.manifest.digest, size: sig.manifest.size, artifactType: SIG },
      {
        // OCI 1.1: without artifactType, an image manifest's artifactType is its config's media type.
        mediaType: MT.ociManifest,
        digest: plain.manifest.digest,
        size: plain.manifest.size,
        artifactType: MT.ociConfig,
        annotations: { 'org.example.kind': 'plain' },
      },
      { mediaType: MT.ociIndex, digest: sbomIndex.digest, size: sbomIndex.size, artifactType: SBOM },
    ];
    expect(body.manifests).toHaveLength(expected.length);
    expect(body.manifests).toEqual(expect.arrayContaining(expected));
  });

  it('every listed descriptor is fetchable by its digest, with that size', async () => {
    const body = (await referrers(subject.manifest.digest)).json();
    for (const d of body.manifests) {
      const res = await client.req(`/v2/ref/app/manifests/${d.digest}`, { headers: { accept: d.mediaType } });
      expect(res.status).toBe(200);
      expect(res.body.length).toBe(d.size);
      expect(res.header('content-type')).toBe(d.mediaType);
    }
  });

  it('?artifactType= filters, and says so with OCI-Filters-Applied: artifactType', async () => {
    const res = await referrers(subject.manifest.digest, `?artifactType=${encodeURIComponent(SBOM)}`);
    expect(res.status).toBe(200);
    expect(res.header('content-type')).toBe(MT.ociIndex);
    expect(res.header('oci-filters-applied')).toBe('artifactType');
    const digests = res.json().manifests.map((m: { digest: string }) => m.digest).sort();
    expect(digests).toEqual([sbom.manifest.digest, sbomIndex.digest].sort());

    const none = await referrers(subject.manifest.digest, '?artifactType=application%2Fvnd.example.none');
    expect(none.status).toBe(200);
    expect(none.header('oci-filters-applied')).toBe('artifactType');
    expect(none.json().manifests).toEqual([]);
  });

  it('a digest with no manifest at all → 200 with an empty index', async () => {
    const res = await referrers(randomBlob(20).digest);
    expect(res.status).toBe(200);
    expect(res.header('content-type')).toBe(MT.ociIndex);
    expect(res.json()).toEqual({ schemaVersion: 2, mediaType: MT.ociIndex, manifests: [] });
  });

  it('a manifest nobody refers to → 200 with an empty index', async () => {
    const res = await referrers(sig.manifest.digest);
    expect(res.status).toBe(200);
    expect(res.json().manifests).toEqual([]);
  });

  it('referrers are per repository', async () => {
    await client.pushImage('ref/other', 'v1', subject);
    const res = await referrers(subject.manifest.digest, '', 'ref/other');
    expect(res.status).toBe(200);
    expect(res.json().manifests).toEqual([]);
  });

  it('referrers pushed before their subject are listed', async () => {
    const later = buildImage();
    const early = buildArtifact({ artifactType: SIG, subject: manifestDescriptor(later) });
    await client.pushImage('ref/early', early.manifest.digest, early);
    let res = await referrers(later.manifest.digest, '', 'ref/early');
    expect(res.json().manifests.map((m: { digest: string }) => m.digest)).toEqual([early.manifest.digest]);
    await client.pushImage('ref/early', 'v1', later);
    res = await referrers(later.manifest.digest, '', 'ref/early');
    expect(res.json().manifests.map((m: { digest: string }) => m.digest)).toEqual([early.manifest.digest]);
  });

  it('a deleted referrer disappears from the list', async () => {
    const target = buildImage();
    await client.pushImage('ref/del', 'v1', target);
    const a = buildArtifact({ artifactType: SIG, subject: manifestDescriptor(target) });
    const b = buildArtifact({ artifactType: SBOM, subject: manifestDescriptor(target) });
    await client.pushImage('ref/del', 'a', a);
    await client.pushImage('ref/del', b.manifest.digest, b);
    const list = async () =>
      (await referrers(target.manifest.digest, '', 'ref/del')).json().manifests.map((m: { digest: string }) => m.digest).sort();
    expect(await list()).toEqual([a.manifest.digest, b.manifest.digest].sort());

    expect((await client.req(`/v2/ref/del/manifests/${a.manifest.digest}`, { method: 'DELETE' })).status).toBe(202);
    expect(await list()).toEqual([b.manifest.digest]);
    expect((await client.req(`/v2/ref/del/manifests/${b.manifest.digest}`, { method: 'DELETE' })).status).toBe(202);
    expect(await list()).toEqual([]);
  });

  it('deleting only the tag of a referrer keeps it listed (the manifest still exists)', async () => {
    const target = buildImage();
    await client.pushImage('ref/tagdel', 'v1', target);
    const a = buildArtifact({ artifactType: SIG, subject: manifestDescriptor(target) });
    await client.pushImage('ref/tagdel', 'sig', a);
    expect((await client.req('/v2/ref/tagdel/manifests/sig', { method: 'DELETE' })).status).toBe(202);
    const res = await referrers(target.manifest.digest, '', 'ref/tagdel');
    expect(res.json().manifests.map((m: { digest: string }) => m.digest)).toEqual([a.manifest.digest]);
  });

  it('a malformed digest → 400 DIGEST_INVALID, nothing changes', async () => {
    const before = await server.storage.snapshot();
    for (const d of ['latest', 'sha256:abc', `sha256:${'A'.repeat(64)}`, 'md5:d41d8cd98f00b204e9800998ecf8427e']) {
      const res = await referrers(d);
      expect(res.status, d).toBe(400);
      expect(errorCodes(res), d).toEqual(['DIGEST_INVALID']);
    }
    expect(await server.storage.snapshot()).toEqual(before);
  });

  it('only GET is served on the referrers endpoint', async () => {
    const res = await client.req(`/v2/ref/app/referrers/${subject.manifest.digest}`, { method: 'DELETE' });
    expect(res.status).toBe(405);
    expect(errorCodes(res)).toEqual(['UNSUPPORTED']);
  });
});
