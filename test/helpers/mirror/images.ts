// Images made of given blobs (e.g. large random ones) for HTTP-level mirror
// tests, where no client unpacks layers: layers are declared uncompressed, so
// their digests are their diff_ids.
import { randomBytes } from 'node:crypto';
import { type Blob, blobOf, type Image, MT, randomBlob } from '../oci.ts';

const LAYER_TAR = 'application/vnd.oci.image.layer.v1.tar';

export function imageOfBlobs(layers: Blob[]): Image {
  const config = blobOf(
    JSON.stringify({
      architecture: 'amd64',
      os: 'linux',
      config: { Labels: { nonce: randomBytes(8).toString('hex') } },
      rootfs: { type: 'layers', diff_ids: layers.map((l) => l.digest) },
    }),
  );
  const manifest = blobOf(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MT.ociManifest,
      config: { mediaType: MT.ociConfig, digest: config.digest, size: config.size },
      layers: layers.map((l) => ({ mediaType: LAYER_TAR, digest: l.digest, size: l.size })),
    }),
  );
  return { config, layers, manifest, mediaType: MT.ociManifest, platform: { architecture: 'amd64', os: 'linux' } };
}

/** An image of `sizes.length` layers of random bytes. */
export function randomImage(sizes: number[]): Image {
  return imageOfBlobs(sizes.map((s) => randomBlob(s)));
}
