// Manifest parsing (Docker v2s2, Docker list, OCI manifest, OCI index, OCI
// 1.1 artifacts) and Accept-header negotiation.
import { describe, expect, it } from 'vitest';
import { RegistryError } from '../../server/src/registry/errors.ts';
import {
  accepts,
  isIndexMediaType,
  isManifestMediaType,
  MediaTypes,
  parseAccept,
  parseManifest,
} from '../../server/src/registry/manifest.ts';
import { blobOf, buildArtifact, buildImage, buildIndex, manifestDescriptor, MT } from '../helpers/oci.ts';

const enc = (v: unknown) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v));

function invalid(body: unknown, contentType?: string): string {
  try {
    parseManifest(enc(body), contentType);
  } catch (err) {
    expect(err).toBeInstanceOf(RegistryError);
    expect((err as RegistryError).code).toBe('MANIFEST_INVALID');
    return (err as RegistryError).message;
  }
  throw new Error(`expected MANIFEST_INVALID for ${JSON.stringify(body).slice(0, 200)}`);
}

const d = (mediaType: string, seed: string, size = 10) => ({ mediaType, digest: blobOf(seed).digest, size });

describe('parseManifest', () => {
  it('Docker v2 schema 2: config and layers are the blobs it needs', () => {
    const image = buildImage({ docker: true, files: [{ a: '1' }, { b: '2' }] });
    const info = parseManifest(image.manifest.data, MT.dockerManifest);
    expect(info.mediaType).toBe(MT.dockerManifest);
    expect(info.blobs.map((b) => b.digest)).toEqual([image.config.digest, ...image.layers.map((l) => l.digest)]);
    expect(info.blobs[0]).toEqual({ mediaType: MT.dockerConfig, digest: image.config.digest, size: image.config.size });
    expect(info.children).toEqual([]);
    expect(info.subject).toBeUndefined();
  });

  it('OCI image manifest: artifactType defaults to the config media type', () => {
    const image = buildImage();
    const info = parseManifest(image.manifest.data, MT.ociManifest);
    expect(info.mediaType).toBe(MT.ociManifest);
    expect(info.blobs).toHaveLength(2);
    expect(info.artifactType).toBe(MT.ociConfig);
  });

  it('Docker manifest list and OCI index: the children are manifests, with platforms', () => {
    const images = [buildImage({ docker: true }), buildImage({ docker: true, architecture: 'arm64' })];
    const list = parseManifest(buildIndex(images, true).index.data, MT.dockerList);
    expect(list.mediaType).toBe(MT.dockerList);
    expect(list.blobs).toEqual([]);
    expect(list.children.map((c) => c.digest)).toEqual(images.map((i) => i.manifest.digest));
    expect(list.children[1].platform).toEqual({ architecture: 'arm64', os: 'linux' });
    const index = parseManifest(buildIndex([buildImage()]).index.data, MT.ociIndex);
    expect(index.mediaType).toBe(MT.ociIndex);
    expect(index.children).toHaveLength(1);
    expect(index.artifactType).toBeUndefined();
  });

  it('OCI 1.1 artifact: artifactType, subject and annotations', () => {
    const subject = buildImage();
    const a = buildArtifact({
      artifactType: 'application/vnd.example.sbom',
      subject: manifestDescriptor(subject),
      annotations: { k: 'v' },
    });
    const info = parseManifest(a.manifest.data, MT.ociManifest);
    expect(info.artifactType).toBe('application/vnd.example.sbom');
    expect(info.subject?.value).toBe(subject.manifest.digest);
    expect(info.annotations).toEqual({ k: 'v' });
  });

  it('an index with subject and artifactType', () => {
    const info = parseManifest(
      enc({
        schemaVersion: 2,
        mediaType: MT.ociIndex,
        artifactType: 'application/vnd.example.bundle',
        manifests: [],
        subject: d(MT.ociManifest, 's'),
      }),
    );
    expect(info.artifactType).toBe('application/vnd.example.bundle');
    expect(info.subject?.value).toBe(blobOf('s').digest);
  });

  it('descriptor fields: urls, annotations and artifactType are kept', () => {
    const info = parseManifest(
      enc({
        schemaVersion: 2,
        mediaType: MT.ociManifest,
        config: d(MT.ociConfig, 'c'),
        layers: [{ ...d(MT.ociLayer, 'l'), urls: ['https://example.com/l'], annotations: { a: 'b' } }],
      }),
    );
    expect(info.blobs[1].urls).toEqual(['https://example.com/l']);
    expect(info.blobs[1].annotations).toEqual({ a: 'b' });
  });

  describe('media type', () => {
    const ociBody = { schemaVersion: 2, config: d(MT.ociConfig, 'c'), layers: [] };

    it('the body’s mediaType decides when there is no Content-Type (reading stored bytes)', () => {
      expect(parseManifest(buildImage({ docker: true }).manifest.data).mediaType).toBe(MT.dockerManifest);
    });

    it('without a mediaType in the body, Content-Type decides', () => {
      expect(parseManifest(enc(ociBody), MT.ociManifest).mediaType).toBe(MT.ociManifest);
      expect(parseManifest(enc({ ...ociBody, config: d(MT.dockerConfig, 'c') }), MT.dockerManifest).mediaType).toBe(
        MT.dockerManifest,
      );
      expect(parseManifest(enc({ schemaVersion: 2, manifests: [] }), MT.dockerList).mediaType).toBe(MT.dockerList);
    });

    it('without either, the shape decides (an OCI manifest has config, an OCI index manifests)', () => {
      expect(parseManifest(enc(ociBody)).mediaType).toBe(MT.ociManifest);
      expect(parseManifest(enc({ schemaVersion: 2, manifests: [] })).mediaType).toBe(MT.ociIndex);
      expect(parseManifest(enc(ociBody), 'application/json').mediaType).toBe(MT.ociManifest);
    });

    it('Content-Type parameters and case do not matter', () => {
      const body = buildImage().manifest.data;
      expect(parseManifest(body, `${MT.ociManifest}; charset=utf-8`).mediaType).toBe(MT.ociManifest);
      expect(parseManifest(body, MT.ociManifest.toUpperCase()).mediaType).toBe(MT.ociManifest);
    });

    it('a Content-Type that contradicts the body’s mediaType is invalid', () => {
      const body = buildImage().manifest.data.toString();
      expect(invalid(body, MT.dockerManifest)).toMatch(/does not match/);
      expect(invalid(body, MT.ociIndex)).toMatch(/does not match/);
    });

    it('unknown media types are invalid', () => {
      invalid({ ...ociBody, mediaType: 'application/vnd.example+json' });
      invalid({ ...ociBody, mediaType: 'application/vnd.docker.distribution.manifest.v1+prettyjws' });
      invalid({ schemaVersion: 2, layers: [] }, 'application/vnd.example+json');
      invalid({ schemaVersion: 2 });
      invalid({ ...ociBody, mediaType: 42 });
    });
  });

  it('rejects what is not a JSON object', () => {
    for (const body of ['', '{', 'nope', '[]', '[{}]', 'null', '2', '"s"', '{"schemaVersion": 2,}']) invalid(body);
  });

  it('requires schemaVersion 2', () => {
    const base = JSON.parse(buildImage().manifest.data.toString());
    for (const v of [1, 3, '2', 2.5, null, undefined]) invalid({ ...base, schemaVersion: v });
  });

  it('rejects malformed descriptors, naming where', () => {
    const base = () => JSON.parse(buildImage().manifest.data.toString());
    const cases: Array<[(m: any) => void, RegExp]> = [
      [(m) => (m.config = null), /config is not a descriptor/],
      [(m) => delete m.config, /config is not a descriptor/],
      [(m) => (m.config.digest = 'sha256:abc'), /config\.digest/],
      [(m) => (m.layers[0].digest = 'sha256:../../x'), /layers\[0\]\.digest/],
      [(m) => (m.layers[0].size = -1), /layers\[0\]\.size/],
      [(m) => (m.layers[0].size = 1.5), /layers\[0\]\.size/],
      [(m) => (m.layers[0].size = '10'), /layers\[0\]\.size/],
      [(m) => (m.layers[0].size = 2 ** 60), /layers\[0\]\.size/],
      [(m) => (m.layers[0].mediaType = ''), /layers\[0\]\.mediaType/],
      [(m) => delete m.layers[0].mediaType, /layers\[0\]\.mediaType/],
      [(m) => (m.layers = {}), /layers array/],
      [(m) => delete m.layers, /layers array/],
      [(m) => (m.layers[0].urls = 'https://x'), /layers\[0\]\.urls/],
      [(m) => (m.layers[0].urls = [1]), /layers\[0\]\.urls/],
      [(m) => (m.layers[0].annotations = { a: 1 }), /layers\[0\]\.annotations/],
      [(m) => (m.annotations = ['a']), /annotations/],
      [(m) => (m.artifactType = 5), /artifactType/],
      [(m) => (m.subject = 'sha256:abc'), /subject/],
      [(m) => (m.subject = { mediaType: MT.ociManifest, digest: 'bad', size: 1 }), /subject\.digest/],
    ];
    for (const [mutate, message] of cases) {
      const m = base();
      mutate(m);
      expect(invalid(m, MT.ociManifest)).toMatch(message);
    }
  });

  it('rejects an index without a manifests array, or with a bad child', () => {
    invalid({ schemaVersion: 2, mediaType: MT.ociIndex });
    invalid({ schemaVersion: 2, mediaType: MT.ociIndex, manifests: {} });
    expect(invalid({ schemaVersion: 2, mediaType: MT.ociIndex, manifests: [{ mediaType: MT.ociManifest, size: 1 }] })).toMatch(
      /manifests\[0\]\.digest/,
    );
  });
});

describe('media type helpers', () => {
  it('know the four manifest types and which are indexes', () => {
    for (const t of Object.values(MediaTypes)) expect(isManifestMediaType(t)).toBe(true);
    expect(isManifestMediaType('application/json')).toBe(false);
    expect(isIndexMediaType(MT.ociIndex)).toBe(true);
    expect(isIndexMediaType(MT.dockerList)).toBe(true);
    expect(isIndexMediaType(MT.ociManifest)).toBe(false);
  });
});

describe('Accept negotiation', () => {
  it('parseAccept lists the types, lowercased, without parameters', () => {
    expect(parseAccept(`${MT.ociManifest};q=0.9, ${MT.dockerList.toUpperCase()} , ,*/*;q=0.1`)).toEqual([
      MT.ociManifest,
      MT.dockerList,
      '*/*',
    ]);
    expect(parseAccept('')).toEqual([]);
  });

  it('no Accept, an empty one, or a wildcard admits everything', () => {
    for (const a of [undefined, '', ' , ', '*/*', 'application/*', `text/plain, */*;q=0.1`]) {
      expect(accepts(a, MT.ociIndex), String(a)).toBe(true);
    }
  });

  it('otherwise only the listed types are admitted', () => {
    expect(accepts(MT.dockerManifest, MT.dockerManifest)).toBe(true);
    expect(accepts(MT.dockerManifest, MT.ociManifest)).toBe(false);
    expect(accepts(`${MT.dockerManifest}, ${MT.dockerList}`, MT.ociIndex)).toBe(false);
    expect(accepts(`${MT.ociManifest};q=0.5`, MT.ociManifest)).toBe(true);
    expect(accepts('text/*', MT.ociManifest)).toBe(false);
  });
});
