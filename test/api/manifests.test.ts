// GET/HEAD/PUT/DELETE /v2/<name>/manifests/<reference> for every manifest
// type the registry takes, content negotiation, validation errors (each
// leaving the storage untouched) and deletes.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { errorCodes, RegistryClient } from '../helpers/client.ts';
import {
  blobOf,
  buildArtifact,
  buildImage,
  buildIndex,
  type Image,
  type IndexImage,
  manifestDescriptor,
  MT,
  randomBlob,
} from '../helpers/oci.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { ON_S3 } from '../helpers/storage.ts';

const V2 = 'docker/registry/v2';
const ALL_TYPES = [MT.dockerManifest, MT.dockerList, MT.ociManifest, MT.ociIndex].join(', ');

describe('manifests', () => {
  let server: TestServer;
  let client: RegistryClient;

  beforeAll(async () => {
    server = await startTestServer();
    client = new RegistryClient(server.url, server.auth);
  });
  afterAll(() => server.stop());

  const repoFile = (name: string, rel: string) => `${V2}/repositories/${name}/${rel}`;
  const read = async (key: string) => (await server.storage.read(key))?.toString('utf8');
  const exists = (key: string) => server.storage.exists(key);

  /** Runs `request` and checks that the storage is exactly as before and the server still serves. */
  async function unchanged<T>(request: () => Promise<T>): Promise<T> {
    const before = await server.storage.snapshot();
    const result = await request();
    expect(await server.storage.snapshot()).toEqual(before);
    expect((await client.req('/v2/')).status).toBe(200);
    return result;
  }

  const put = (name: string, reference: string, body: Buffer | string, contentType?: string) =>
    client.req(`/v2/${name}/manifests/${reference}`, {
      method: 'PUT',
      headers: contentType ? { 'content-type': contentType } : {},
      body,
    });

  async function pushBlobs(name: string, image: Image) {
    await client.pushBlob(name, image.config);
    for (const layer of image.layers) await client.pushBlob(name, layer);
  }

  type Case = { label: string; mediaType: string; make: () => Image | IndexImage };
  const cases: Case[] = [
    { label: 'Docker v2 schema 2', mediaType: MT.dockerManifest, make: () => buildImage({ docker: true }) },
    {
      label: 'Docker manifest list',
      mediaType: MT.dockerList,
      make: () => buildIndex([buildImage({ docker: true }), buildImage({ docker: true, architecture: 'arm64' })], true),
    },
    { label: 'OCI image manifest', mediaType: MT.ociManifest, make: () => buildImage() },
    {
      label: 'OCI image index',
      mediaType: MT.ociIndex,
      make: () => buildIndex([buildImage(), buildImage({ architecture: 'arm64' })]),
    },
  ];

  for (const c of cases) {
    describe(c.label, () => {
      const name = `types/${c.mediaType.split('.').slice(-2).join('-').replace(/[^a-z0-9-]/g, '')}`;
      let item: Image | IndexImage;
      let bytes: Buffer;
      let digest: string;

      beforeAll(async () => {
        item = c.make();
        bytes = 'index' in item ? item.index.data : item.manifest.data;
        digest = 'index' in item ? item.index.digest : item.manifest.digest;
        if ('index' in item) for (const img of item.images) await client.pushImage(name, img.manifest.digest, img);
        else await pushBlobs(name, item);
      });

      it('PUT by tag → 201 with Location and Docker-Content-Digest, stored in distribution’s layout', async () => {
        const res = await put(name, 'v1', bytes, c.mediaType);
        expect(res.status).toBe(201);
        expect(res.header('location')).toBe(`/v2/${name}/manifests/${digest}`);
        expect(res.header('docker-content-digest')).toBe(digest);
        expect(res.header('oci-subject')).toBeUndefined();
        const hex = digest.slice(7);
        expect(await read(repoFile(name, '_manifests/tags/v1/current/link'))).toBe(digest);
        expect(await read(repoFile(name, `_manifests/tags/v1/index/sha256/${hex}/link`))).toBe(digest);
        expect(await read(repoFile(name, `_manifests/revisions/sha256/${hex}/link`))).toBe(digest);
        const data = await server.storage.read(`${V2}/blobs/sha256/${hex.slice(0, 2)}/${hex}/data`);
        expect(data?.equals(bytes)).toBe(true);
      });

      it('GET by tag and by digest return the exact bytes with Content-Type and Docker-Content-Digest', async () => {
        for (const ref of ['v1', digest]) {
          const res = await client.req(`/v2/${name}/manifests/${ref}`, { headers: { accept: ALL_TYPES } });
          expect(res.status, ref).toBe(200);
          expect(res.header('content-type'), ref).toBe(c.mediaType);
          expect(res.header('docker-content-digest'), ref).toBe(digest);
          expect(res.header('content-length'), ref).toBe(String(bytes.length));
          expect(res.header('etag'), ref).toBe(`"${digest}"`);
          expect(res.body.equals(bytes), ref).toBe(true);
        }
      });

      it('HEAD by tag and by digest: the same headers, no body', async () => {
        for (const ref of ['v1', digest]) {
          const res = await client.req(`/v2/${name}/manifests/${ref}`, { method: 'HEAD', headers: { accept: ALL_TYPES } });
          expect(res.status, ref).toBe(200);
          expect(res.header('content-type'), ref).toBe(c.mediaType);
          expect(res.header('docker-content-digest'), ref).toBe(digest);
          expect(res.header('content-length'), ref).toBe(String(bytes.length));
          expect(res.body.length, ref).toBe(0);
        }
      });

      it('PUT by digest stores it without a tag; the same bytes again are idempotent', async () => {
        const res = await put(name, digest, bytes, c.mediaType);
        expect(res.status).toBe(201);
        expect(res.header('docker-content-digest')).toBe(digest);
        expect((await put(name, 'v1', bytes, c.mediaType)).status).toBe(201);
        expect((await client.req(`/v2/${name}/tags/list`)).json().tags).toEqual(['v1']);
      });

      it('If-None-Match with the ETag → 304', async () => {
        const res = await client.req(`/v2/${name}/manifests/v1`, {
          headers: { accept: ALL_TYPES, 'if-none-match': `"${digest}"` },
        });
        expect(res.status).toBe(304);
        expect(res.body.length).toBe(0);
      });

      it('DELETE by tag removes only the tag; DELETE by digest removes the manifest and its tags', async () => {
        expect((await put(name, 'v2', bytes, c.mediaType)).status).toBe(201);
        expect((await put(name, 'v3', bytes, c.mediaType)).status).toBe(201);

        const delTag = await client.req(`/v2/${name}/manifests/v1`, { method: 'DELETE' });
        expect(delTag.status).toBe(202);
        const gone = await client.req(`/v2/${name}/manifests/v1`, { headers: { accept: ALL_TYPES } });
        expect(gone.status).toBe(404);
        expect(errorCodes(gone)).toEqual(['MANIFEST_UNKNOWN']);
        // Named as clients write references: name:tag, name@digest.
        expect(gone.json().errors[0].message).toBe(`manifest unknown: ${name}:v1`);
        expect(await exists(repoFile(name, '_manifests/tags/v1'))).toBe(false);
        expect((await client.req(`/v2/${name}/manifests/${digest}`, { headers: { accept: ALL_TYPES } })).status).toBe(200);
        expect((await client.req(`/v2/${name}/tags/list`)).json().tags).toEqual(['v2', 'v3']);

        const delDigest = await client.req(`/v2/${name}/manifests/${digest}`, { method: 'DELETE' });
        expect(delDigest.status).toBe(202);
        for (const ref of [digest, 'v2', 'v3']) {
          const res = await client.req(`/v2/${name}/manifests/${ref}`, { headers: { accept: ALL_TYPES } });
          expect(res.status, ref).toBe(404);
          expect(errorCodes(res), ref).toEqual(['MANIFEST_UNKNOWN']);
        }
        expect((await client.req(`/v2/${name}/manifests/${digest}`, { headers: { accept: ALL_TYPES } })).json().errors[0].message).toBe(
          `manifest unknown: ${name}@${digest}`,
        );
        const tagsAfter = await client.req(`/v2/${name}/tags/list`);
        if (ON_S3 && !('index' in item)) {
          // KNOWN s3 DEVIATION (a server matter, reported): with its only manifest deleted the repository
          // has nothing left under _manifests in the bucket, and ManifestStore.tags()
          // (server/src/registry/manifest-store.ts) answers 404 NAME_UNKNOWN; on the filesystem the empty
          // directories stay and it answers []. Update this when the server answers the same on both.
          expect(tagsAfter.status).toBe(404);
          expect(errorCodes(tagsAfter)).toEqual(['NAME_UNKNOWN']);
        } else {
          expect(tagsAfter.json().tags).toEqual([]);
        }
        expect(await exists(repoFile(name, `_manifests/revisions/sha256/${digest.slice(7)}`))).toBe(false);
      });

      it('can be pushed again after the delete', async () => {
        expect((await put(name, 'again', bytes, c.mediaType)).status).toBe(201);
        const res = await client.req(`/v2/${name}/manifests/again`, { headers: { accept: ALL_TYPES } });
        expect(res.body.equals(bytes)).toBe(true);
      });
    });
  }

  describe('OCI artifacts (artifactType, subject)', () => {
    it('PUT of an artifact with a subject → 201 with OCI-Subject; GET returns it as pushed', async () => {
      const subject = buildImage();
      await client.pushImage('art/app', 'v1', subject);
      const sbom = buildArtifact({
        artifactType: 'application/vnd.example.sbom.v1+json',
        subject: manifestDescriptor(subject),
        annotations: { 'org.opencontainers.image.created': '2024-01-01T00:00:00Z' },
      });
      await pushBlobs('art/app', sbom);
      const res = await put('art/app', sbom.manifest.digest, sbom.manifest.data, MT.ociManifest);
      expect(res.status).toBe(201);
      expect(res.header('oci-subject')).toBe(subject.manifest.digest);
      expect(res.header('docker-content-digest')).toBe(sbom.manifest.digest);
      const get = await client.req(`/v2/art/app/manifests/${sbom.manifest.digest}`, { headers: { accept: MT.ociManifest } });
      expect(get.status).toBe(200);
      expect(get.body.equals(sbom.manifest.data)).toBe(true);
      expect(get.json().artifactType).toBe('application/vnd.example.sbom.v1+json');
    });

    it('a subject that is not (yet) in the repository is allowed, as OCI 1.1 requires', async () => {
      const absent = buildImage();
      const sig = buildArtifact({ artifactType: 'application/vnd.example.sig', subject: manifestDescriptor(absent) });
      await pushBlobs('art/early', sig);
      const res = await put('art/early', 'sig', sig.manifest.data, MT.ociManifest);
      expect(res.status).toBe(201);
      expect(res.header('oci-subject')).toBe(absent.manifest.digest);
    });

    it('an index with a subject also answers OCI-Subject', async () => {
      const subject = buildImage();
      const child = buildImage();
      await client.pushImage('art/idx', 'base', subject);
      await client.pushImage('art/idx', child.manifest.digest, child);
      const index = blobOf(
        JSON.stringify({
          schemaVersion: 2,
          mediaType: MT.ociIndex,
          artifactType: 'application/vnd.example.bundle',
          manifests: [manifestDescriptor(child)],
          subject: manifestDescriptor(subject),
        }),
      );
      const res = await put('art/idx', 'bundle', index.data, MT.ociIndex);
      expect(res.status).toBe(201);
      expect(res.header('oci-subject')).toBe(subject.manifest.digest);
    });

    it('an artifact with the empty config and no layers', async () => {
      const a = buildArtifact({ artifactType: 'application/vnd.example.empty', contents: [] });
      await client.pushBlob('art/empty', a.config);
      const res = await put('art/empty', 'e', a.manifest.data, MT.ociManifest);
      expect(res.status).toBe(201);
    });
  });

  describe('content negotiation', () => {
    let dockerList: IndexImage;
    let ociIndex: IndexImage;
    let armOnly: IndexImage;
    const oci = buildImage();
    const docker = buildImage({ docker: true });

    beforeAll(async () => {
      dockerList = buildIndex([buildImage({ docker: true, architecture: 'arm64' }), buildImage({ docker: true })], true);
      ociIndex = buildIndex([buildImage({ architecture: 'arm64' }), buildImage()]);
      armOnly = buildIndex([buildImage({ architecture: 'arm64' })]);
      await client.pushIndex('neg/app', 'list', dockerList);
      await client.pushIndex('neg/app', 'index', ociIndex);
      await client.pushIndex('neg/app', 'arm', armOnly);
      await client.pushImage('neg/app', 'oci', oci);
      await client.pushImage('neg/app', 'docker', docker);
    });

    const get = (ref: string, accept?: string) =>
      client.req(`/v2/neg/app/manifests/${ref}`, { headers: accept === undefined ? {} : { accept } });

    it('a manifest list requested with only image manifest types returns the linux/amd64 child', async () => {
      const amd64 = dockerList.images[1];
      expect(amd64.platform).toEqual({ architecture: 'amd64', os: 'linux' });
      const res = await get('list', MT.dockerManifest);
      expect(res.status).toBe(200);
      expect(res.header('content-type')).toBe(MT.dockerManifest);
      expect(res.header('docker-content-digest')).toBe(amd64.manifest.digest);
      expect(res.body.equals(amd64.manifest.data)).toBe(true);
    });

    it('an OCI index requested with only the OCI manifest type returns the linux/amd64 child', async () => {
      const amd64 = ociIndex.images[1];
      const res = await get('index', MT.ociManifest);
      expect(res.status).toBe(200);
      expect(res.header('docker-content-digest')).toBe(amd64.manifest.digest);
      expect(res.body.equals(amd64.manifest.data)).toBe(true);
    });

    it('an index with no linux/amd64 child and an Accept without index types → 404 MANIFEST_UNKNOWN', async () => {
      const res = await get('arm', MT.ociManifest);
      expect(res.status).toBe(404);
      expect(errorCodes(res)).toEqual(['MANIFEST_UNKNOWN']);
    });

    it('the list itself when its type is accepted, when there is no Accept, or for */*', async () => {
      for (const accept of [MT.dockerList, `${MT.dockerManifest}, ${MT.dockerList}`, undefined, '*/*', 'application/*']) {
        const res = await get('list', accept);
        expect(res.status, accept).toBe(200);
        expect(res.header('content-type'), accept).toBe(MT.dockerList);
        expect(res.header('docker-content-digest'), accept).toBe(dockerList.index.digest);
      }
    });

    it('Accept parameters (q=) and case are ignored when matching', async () => {
      const res = await get('index', `${MT.ociIndex.toUpperCase()};q=0.5, ${MT.ociManifest};q=0.9`);
      expect(res.status).toBe(200);
      expect(res.header('docker-content-digest')).toBe(ociIndex.index.digest);
    });

    it('an OCI manifest requested with only Docker types → 404 MANIFEST_UNKNOWN', async () => {
      const res = await get('oci', `${MT.dockerManifest}, ${MT.dockerList}`);
      expect(res.status).toBe(404);
      expect(errorCodes(res)).toEqual(['MANIFEST_UNKNOWN']);
      const byDigest = await get(oci.manifest.digest, MT.dockerManifest);
      expect(byDigest.status).toBe(404);
    });

    it('a Docker manifest requested with only OCI types → 404 MANIFEST_UNKNOWN; with both → 200', async () => {
      expect(errorCodes(await get('docker', `${MT.ociManifest}, ${MT.ociIndex}`))).toEqual(['MANIFEST_UNKNOWN']);
      const res = await get('docker', `${MT.ociManifest}, ${MT.dockerManifest}`);
      expect(res.status).toBe(200);
      expect(res.header('content-type')).toBe(MT.dockerManifest);
    });
  });

  describe('references to missing content → 400 MANIFEST_BLOB_UNKNOWN, nothing stored', () => {
    it('an image whose layer was never pushed', async () => {
      const image = buildImage({ files: [{ a: '1' }, { b: '2' }] });
      await client.pushBlob('miss/app', image.config);
      await client.pushBlob('miss/app', image.layers[0]);
      const res = await unchanged(() => put('miss/app', 'v1', image.manifest.data, MT.ociManifest));
      expect(res.status).toBe(400);
      expect(errorCodes(res)).toEqual(['MANIFEST_BLOB_UNKNOWN']);
      expect(res.json().errors[0].detail).toEqual({ digest: image.layers[1].digest });
    });

    it('an image whose config was never pushed', async () => {
      const image = buildImage();
      for (const l of image.layers) await client.pushBlob('miss/app', l);
      const res = await unchanged(() => put('miss/app', 'v1', image.manifest.data, MT.ociManifest));
      expect(errorCodes(res)).toEqual(['MANIFEST_BLOB_UNKNOWN']);
    });

    it('blobs stored only in another repository do not count', async () => {
      const image = buildImage();
      await client.pushImage('miss/other', 'v1', image);
      const res = await unchanged(() => put('miss/app', 'v1', image.manifest.data, MT.ociManifest));
      expect(res.status).toBe(400);
      expect(errorCodes(res)).toEqual(['MANIFEST_BLOB_UNKNOWN']);
    });

    it('an index with a child manifest that was never pushed', async () => {
      const present = buildImage();
      const absent = buildImage({ architecture: 'arm64' });
      await client.pushImage('miss/app', present.manifest.digest, present);
      const index = buildIndex([present, absent]);
      const res = await unchanged(() => put('miss/app', 'multi', index.index.data, MT.ociIndex));
      expect(res.status).toBe(400);
      expect(errorCodes(res)).toEqual(['MANIFEST_BLOB_UNKNOWN']);
    });

    it('a Docker list whose child is a plain blob, not a manifest, in the repository', async () => {
      const image = buildImage({ docker: true });
      await pushBlobs('miss/app', image);
      // The child's bytes are stored as a blob (a layer upload), but no manifest revision exists.
      await client.pushBlob('miss/app', image.manifest);
      const list = buildIndex([image], true);
      const res = await unchanged(() => put('miss/app', 'list', list.index.data, MT.dockerList));
      expect(errorCodes(res)).toEqual(['MANIFEST_BLOB_UNKNOWN']);
    });

    it('a foreign layer (with urls) need not be stored', async () => {
      const image = buildImage({ docker: true });
      await client.pushBlob('miss/foreign', image.config);
      const doc = JSON.parse(image.manifest.data.toString());
      doc.layers = [
        {
          mediaType: 'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip',
          digest: randomBlob(10).digest,
          size: 10,
          urls: ['https://example.com/layer.tar.gz'],
        },
      ];
      const res = await put('miss/foreign', 'v1', JSON.stringify(doc), MT.dockerManifest);
      expect(res.status).toBe(201);
    });
  });

  describe('invalid manifests → 400 MANIFEST_INVALID (413 when too large), nothing stored', () => {
    let image: Image;
    beforeAll(async () => {
      image = buildImage();
      await pushBlobs('bad/app', image);
      await client.pushManifest('bad/app', 'ok', image.manifest, MT.ociManifest);
    });

    const doc = () => JSON.parse(image.manifest.data.toString());
    const expectInvalid = async (body: string | Buffer, contentType: string | undefined, tag = 'v1') => {
      const res = await unchanged(() => put('bad/app', tag, body, contentType));
      expect(res.status).toBe(400);
      expect(errorCodes(res)).toEqual(['MANIFEST_INVALID']);
      return res;
    };

    it('larger than 4 MiB → 413 with code MANIFEST_INVALID', async () => {
      const big = doc();
      big.annotations = { pad: 'x'.repeat(4 * 1024 * 1024) };
      const res = await unchanged(() => put('bad/app', 'big', JSON.stringify(big), MT.ociManifest));
      expect(res.status).toBe(413);
      expect(errorCodes(res)).toEqual(['MANIFEST_INVALID']);
    });

    it('malformed JSON, and JSON that is not an object', async () => {
      for (const body of ['{', '{"schemaVersion": 2,', 'not json', '[]', '"a string"', 'null', '']) {
        await expectInvalid(body, MT.ociManifest);
      }
    });

    it('wrong or missing schemaVersion', async () => {
      for (const v of [1, 3, '2', null, undefined]) {
        const d = doc();
        d.schemaVersion = v;
        await expectInvalid(JSON.stringify(d), MT.ociManifest);
      }
    });

    it('unknown media types (in the body, or in Content-Type with a body that does not say)', async () => {
      const d = doc();
      d.mediaType = 'application/vnd.example.unknown+json';
      await expectInvalid(JSON.stringify(d), 'application/vnd.example.unknown+json');
      await expectInvalid(JSON.stringify(d), undefined);
      const noType = { schemaVersion: 2, something: true };
      await expectInvalid(JSON.stringify(noType), 'application/vnd.example.unknown+json');
    });

    it('Content-Type text/plain, application/json or none: refused (400 MANIFEST_INVALID) unless the body declares a known mediaType', async () => {
      const untyped = doc();
      delete untyped.mediaType;
      for (const contentType of ['text/plain', 'application/json', undefined]) {
        await expectInvalid(JSON.stringify(untyped), contentType, 'untyped');
      }
      // The body names its type: stored as that, and served with it.
      const typed = doc();
      expect(typed.mediaType).toBe(MT.ociManifest);
      for (const [i, contentType] of ['text/plain', undefined].entries()) {
        const res = await put('bad/app', `typed-${i}`, image.manifest.data, contentType);
        expect(res.status, String(contentType)).toBe(201);
        expect((await client.req(`/v2/bad/app/manifests/typed-${i}`, { headers: { accept: MT.ociManifest } })).header('content-type')).toBe(MT.ociManifest);
      }
      // A manifest media type in Content-Type still names an untyped body (OCI allows leaving mediaType out).
      expect((await put('bad/app', 'ct-typed', JSON.stringify(untyped), MT.ociManifest)).status).toBe(201);
    });

    it('Content-Type that contradicts the body’s mediaType', async () => {
      await expectInvalid(image.manifest.data, MT.dockerManifest);
      await expectInvalid(image.manifest.data, MT.ociIndex);
    });

    it('malformed descriptors: bad digest, negative or fractional size, missing mediaType, missing layers', async () => {
      const mutations: Array<(d: any) => void> = [
        (d) => (d.layers[0].digest = 'sha256:1234'),
        (d) => (d.layers[0].digest = d.layers[0].digest.toUpperCase()),
        (d) => (d.layers[0].size = -1),
        (d) => (d.layers[0].size = 1.5),
        (d) => (d.layers[0].size = String(d.layers[0].size)),
        (d) => delete d.layers[0].mediaType,
        (d) => delete d.layers,
        (d) => delete d.config,
        (d) => (d.config = 'sha256:abc'),
        (d) => (d.annotations = { a: 1 }),
        (d) => (d.subject = { mediaType: MT.ociManifest, digest: 'nope', size: 1 }),
      ];
      for (const mutate of mutations) {
        const d = doc();
        mutate(d);
        await expectInvalid(JSON.stringify(d), MT.ociManifest);
      }
    });

    it('a descriptor whose size does not match the stored blob', async () => {
      const d = doc();
      d.layers[0].size += 1;
      await expectInvalid(JSON.stringify(d), MT.ociManifest);
    });

    it('an index without a manifests array', async () => {
      await expectInvalid(JSON.stringify({ schemaVersion: 2, mediaType: MT.ociIndex }), MT.ociIndex);
    });

    it('PUT by a digest that does not match the body → 400 DIGEST_INVALID', async () => {
      const other = randomBlob(10).digest;
      const res = await unchanged(() => put('bad/app', other, image.manifest.data, MT.ociManifest));
      expect(res.status).toBe(400);
      expect(errorCodes(res)).toEqual(['DIGEST_INVALID']);
    });

    it('invalid tags → 400 TAG_INVALID', async () => {
      for (const tag of ['-leading-dash', '.leading-dot', 'x'.repeat(129), 'sp%20ace', 'a%2Bb', 'ümlaut']) {
        const res = await unchanged(() => put('bad/app', tag, image.manifest.data, MT.ociManifest));
        expect(res.status, tag).toBe(400);
        expect(errorCodes(res), tag).toEqual(['TAG_INVALID']);
      }
      // The longest valid tag is 128 characters.
      expect((await put('bad/app', 'x'.repeat(128), image.manifest.data, MT.ociManifest)).status).toBe(201);
    });

    it('GET and HEAD of a reference that is not a valid tag → 404 MANIFEST_UNKNOWN (as the OCI conformance suite expects); DELETE → 400 TAG_INVALID', async () => {
      for (const tag of ['.INVALID_MANIFEST_NAME', '-x', 'sp%20ace']) {
        for (const method of ['GET', 'HEAD']) {
          const res = await unchanged(() => client.req(`/v2/bad/app/manifests/${tag}`, { method }));
          expect(res.status, `${method} ${tag}`).toBe(404);
          if (method === 'GET') expect(errorCodes(res), tag).toEqual(['MANIFEST_UNKNOWN']);
        }
      }
      // PUT of the same reference keeps refusing it as a tag.
      const put400 = await unchanged(() => put('bad/app', '.INVALID_MANIFEST_NAME', image.manifest.data, MT.ociManifest));
      expect(put400.status).toBe(400);
      expect(errorCodes(put400)).toEqual(['TAG_INVALID']);
      const res = await unchanged(() => client.req('/v2/bad/app/manifests/-x', { method: 'DELETE' }));
      expect(res.status).toBe(400);
      expect(errorCodes(res)).toEqual(['TAG_INVALID']);
    });
  });

  describe('other behaviour', () => {
    it('stores the bytes exactly as pushed (whitespace and key order kept)', async () => {
      const image = buildImage();
      await pushBlobs('exact/app', image);
      const pretty = Buffer.from(`${JSON.stringify(JSON.parse(image.manifest.data.toString()), null, 3)}\n\n`);
      const digest = blobOf(pretty).digest;
      const res = await put('exact/app', 'pretty', pretty, MT.ociManifest);
      expect(res.header('docker-content-digest')).toBe(digest);
      const get = await client.req('/v2/exact/app/manifests/pretty', { headers: { accept: MT.ociManifest } });
      expect(get.body.equals(pretty)).toBe(true);
    });

    it('a Content-Type with parameters, and no Content-Type at all, are accepted', async () => {
      const image = buildImage();
      await pushBlobs('exact/app', image);
      expect((await put('exact/app', 'param', image.manifest.data, `${MT.ociManifest}; charset=utf-8`)).status).toBe(201);
      expect((await put('exact/app', 'none', image.manifest.data, undefined)).status).toBe(201);
    });

    it('pushing another manifest to a tag moves the tag; the old one stays reachable by digest', async () => {
      const a = buildImage();
      const b = buildImage();
      await client.pushImage('move/app', 'latest', a);
      await client.pushImage('move/app', 'latest', b);
      const res = await client.req('/v2/move/app/manifests/latest', { headers: { accept: MT.ociManifest } });
      expect(res.header('docker-content-digest')).toBe(b.manifest.digest);
      expect((await client.req(`/v2/move/app/manifests/${a.manifest.digest}`)).status).toBe(200);
      // Both revisions are in the tag's index, as distribution records them.
      for (const d of [a.manifest.digest, b.manifest.digest]) {
        expect(await exists(repoFile('move/app', `_manifests/tags/latest/index/sha256/${d.slice(7)}/link`))).toBe(true);
      }
    });

    it('a manifest is visible only in the repositories it was pushed to', async () => {
      const image = buildImage();
      await client.pushImage('vis/a', 'v1', image);
      await pushBlobs('vis/b', image);
      const res = await client.req(`/v2/vis/b/manifests/${image.manifest.digest}`);
      expect(res.status).toBe(404);
      expect(errorCodes(res)).toEqual(['MANIFEST_UNKNOWN']);
    });

    it('unknown tags, digests and repositories → 404 MANIFEST_UNKNOWN (HEAD: 404, no body)', async () => {
      for (const p of ['/v2/vis/a/manifests/nope', `/v2/vis/a/manifests/${randomBlob(3).digest}`, '/v2/no/such/manifests/v1']) {
        const res = await client.req(p);
        expect(res.status, p).toBe(404);
        expect(errorCodes(res), p).toEqual(['MANIFEST_UNKNOWN']);
        const head = await client.req(p, { method: 'HEAD' });
        expect(head.status, p).toBe(404);
        expect(head.body.length, p).toBe(0);
      }
    });

    it('DELETE of an unknown tag or digest → 404 MANIFEST_UNKNOWN, nothing changes', async () => {
      for (const ref of ['nope', randomBlob(3).digest]) {
        const res = await unchanged(() => client.req(`/v2/vis/a/manifests/${ref}`, { method: 'DELETE' }));
        expect(res.status).toBe(404);
        expect(errorCodes(res)).toEqual(['MANIFEST_UNKNOWN']);
      }
    });

    it('DELETE by digest leaves the layers (garbage collection removes them)', async () => {
      const image = buildImage();
      await client.pushImage('gc/app', 'v1', image);
      expect((await client.req(`/v2/gc/app/manifests/${image.manifest.digest}`, { method: 'DELETE' })).status).toBe(202);
      expect((await client.req(`/v2/gc/app/blobs/${image.layers[0].digest}`)).status).toBe(200);
    });
  });
});

describe('manifest DELETE with storage.delete.enabled: false', () => {
  let server: TestServer;
  let client: RegistryClient;
  beforeAll(async () => {
    server = await startTestServer({ deleteEnabled: false });
    client = new RegistryClient(server.url, server.auth);
  });
  afterAll(() => server.stop());

  it('405 UNSUPPORTED by tag and by digest; the manifest and tag stay', async () => {
    const image = buildImage();
    await client.pushImage('keep/app', 'v1', image);
    const before = await server.storage.snapshot();
    for (const ref of ['v1', image.manifest.digest]) {
      const res = await client.req(`/v2/keep/app/manifests/${ref}`, { method: 'DELETE' });
      expect(res.status).toBe(405);
      expect(errorCodes(res)).toEqual(['UNSUPPORTED']);
    }
    expect(await server.storage.snapshot()).toEqual(before);
    expect((await client.req('/v2/keep/app/manifests/v1')).status).toBe(200);
  });
});
