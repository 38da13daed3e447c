// Images made of chosen layers (so that several images share some), a push
// that behaves like docker/skopeo (HEAD each blob, upload only what is
// missing, then PUT the manifest), and a pull that verifies every digest.
import { createHash, randomBytes } from 'node:crypto';
import { gunzipSync, gzipSync } from 'node:zlib';
import { errorCodes, type RegistryClient } from '../client.ts';
import { type Blob, blobOf, type Image, type IndexImage, MT } from '../oci.ts';

/** A gzip-compressed layer of `size` random bytes (gzip of random data: what a registry sees of any layer). */
export function gzLayer(size: number): Blob {
  return blobOf(gzipSync(randomBytes(size), { level: 1 }));
}

/** An OCI image of exactly these layers, with a config that makes it unique (`label`). */
export function composeImage(layers: Blob[], label = randomBytes(6).toString('hex'), extra: Record<string, unknown> = {}): Image {
  const diffIds = layers.map((l) => `sha256:${createHash('sha256').update(gunzipSync(l.data)).digest('hex')}`);
  const config = blobOf(
    JSON.stringify({
      architecture: 'amd64',
      os: 'linux',
      config: { Labels: { 'test.label': label } },
      rootfs: { type: 'layers', diff_ids: diffIds },
    }),
  );
  const manifest = blobOf(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MT.ociManifest,
      config: { mediaType: MT.ociConfig, digest: config.digest, size: config.size },
      layers: layers.map((l) => ({ mediaType: MT.ociLayer, digest: l.digest, size: l.size })),
      ...extra,
    }),
  );
  return { config, layers, manifest, mediaType: MT.ociManifest, platform: { architecture: 'amd64', os: 'linux' } };
}

export class PushError extends Error {
  constructor(
    message: string,
    readonly status: number,
    readonly codes: string[],
  ) {
    super(message);
  }
}

/** HEAD each blob and upload only the missing ones, as real clients do. */
export async function pushBlobsLikeClient(client: RegistryClient, repo: string, blobs: Blob[]): Promise<void> {
  for (const blob of blobs) {
    const head = await client.req(`/v2/${repo}/blobs/${blob.digest}`, { method: 'HEAD' });
    if (head.status === 200) continue;
    if (head.status !== 404) throw new PushError(`HEAD ${repo}@${blob.digest}: ${head.status}`, head.status, []);
    const res = await client.req(`/v2/${repo}/blobs/uploads/?digest=${blob.digest}`, {
      method: 'POST',
      headers: { 'content-type': 'application/octet-stream', 'content-length': String(blob.size) },
      body: blob.data,
    });
    if (res.status !== 201) throw new PushError(`upload ${repo}@${blob.digest}: ${res.status} ${res.text}`, res.status, errorCodes(res));
  }
}

export async function putManifest(client: RegistryClient, repo: string, reference: string, manifest: Blob, mediaType: string): Promise<void> {
  const res = await client.req(`/v2/${repo}/manifests/${reference}`, {
    method: 'PUT',
    headers: { 'content-type': mediaType },
    body: manifest.data,
  });
  if (res.status !== 201) {
    throw new PushError(`PUT ${repo}:${reference}: ${res.status} ${res.text}`, res.status, errorCodes(res));
  }
  if (res.header('docker-content-digest') !== manifest.digest) {
    throw new Error(`PUT ${repo}:${reference}: digest ${res.header('docker-content-digest')}, expected ${manifest.digest}`);
  }
}

export async function pushImageLikeClient(client: RegistryClient, repo: string, reference: string, image: Image): Promise<void> {
  await pushBlobsLikeClient(client, repo, [image.config, ...image.layers]);
  await putManifest(client, repo, reference, image.manifest, image.mediaType);
}

/** Children by digest, then the index by `reference`. */
export async function pushIndexLikeClient(client: RegistryClient, repo: string, reference: string, index: IndexImage): Promise<void> {
  for (const img of index.images) await pushImageLikeClient(client, repo, img.manifest.digest, img);
  await putManifest(client, repo, reference, index.index, index.mediaType);
}

/**
 * Runs a push, retrying (up to `attempts` times) when the registry refused the
 * manifest because a blob or child it names is not there: what a client does
 * when garbage collection removed a blob between its HEAD and its PUT.
 * Resolves with the number of retries it took.
 */
export async function withPushRetry(push: () => Promise<void>, attempts = 8): Promise<number> {
  for (let i = 0; ; i++) {
    try {
      await push();
      return i;
    } catch (err) {
      const retryable =
        err instanceof PushError && err.status >= 400 && err.status < 500 && err.codes.some((c) => c === 'MANIFEST_BLOB_UNKNOWN' || c === 'MANIFEST_UNKNOWN' || c === 'BLOB_UNKNOWN');
      if (!retryable || i + 1 >= attempts) throw err;
    }
  }
}

const ACCEPT = [MT.ociIndex, MT.ociManifest, MT.dockerList, MT.dockerManifest].join(', ');

export interface PulledImage {
  /** The top manifest's digest. */
  digest: string;
  /** Every manifest and blob fetched, each verified against its digest. */
  digests: string[];
}

/**
 * Pulls `repo:reference` completely (an index's children too) and checks
 * every manifest and blob against its digest and size. Throws on anything
 * missing or wrong.
 */
export async function pullAndVerify(client: RegistryClient, repo: string, reference: string): Promise<PulledImage> {
  const digests: string[] = [];
  const pullManifest = async (ref: string): Promise<string> => {
    const res = await client.req(`/v2/${repo}/manifests/${ref}`, { headers: { accept: ACCEPT } });
    if (res.status !== 200) throw new Error(`GET ${repo}/manifests/${ref}: ${res.status} ${res.text}`);
    const digest = `sha256:${createHash('sha256').update(res.body).digest('hex')}`;
    if (res.header('docker-content-digest') !== digest) throw new Error(`${repo}:${ref}: Docker-Content-Digest ${res.header('docker-content-digest')} but the body is ${digest}`);
    if (ref.startsWith('sha256:') && ref !== digest) throw new Error(`${repo}@${ref}: body is ${digest}`);
    digests.push(digest);
    const doc = res.json() as { config?: { digest: string; size: number }; layers?: Array<{ digest: string; size: number }>; manifests?: Array<{ digest: string }> };
    for (const child of doc.manifests ?? []) await pullManifest(child.digest);
    for (const b of [...(doc.config ? [doc.config] : []), ...(doc.layers ?? [])]) {
      const blob = await client.req(`/v2/${repo}/blobs/${b.digest}`);
      if (blob.status !== 200) throw new Error(`GET ${repo}/blobs/${b.digest} (of ${repo}:${ref}): ${blob.status} ${blob.text.slice(0, 200)}`);
      const got = `sha256:${createHash('sha256').update(blob.body).digest('hex')}`;
      if (got !== b.digest || blob.body.length !== b.size) throw new Error(`${repo}@${b.digest}: got ${got}, ${blob.body.length} bytes (want ${b.size})`);
      digests.push(b.digest);
    }
    return digest;
  };
  const digest = await pullManifest(reference);
  return { digest, digests };
}

/** Every blob (config, layers) and manifest digest of an image or index. */
export function digestsOf(image: Image | IndexImage): string[] {
  if ('index' in image) return [image.index.digest, ...image.images.flatMap((i) => digestsOf(i))];
  return [image.manifest.digest, image.config.digest, ...image.layers.map((l) => l.digest)];
}
