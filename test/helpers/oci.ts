// Test images built offline: real gzipped tar layers, image configs with
// matching diff_ids, manifests, multi-arch indexes, written as OCI image
// layouts that skopeo/podman/buildah can read, or pushed over HTTP.
import { createHash, randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { gunzipSync } from 'node:zlib';

export const MT = {
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  ociLayer: 'application/vnd.oci.image.layer.v1.tar+gzip',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerConfig: 'application/vnd.docker.container.image.v1+json',
  dockerLayer: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
  ociEmpty: 'application/vnd.oci.empty.v1+json',
} as const;

export interface Blob {
  digest: string;
  size: number;
  data: Buffer;
}

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  platform?: { architecture: string; os: string };
  annotations?: Record<string, string>;
  artifactType?: string;
}

export function sha256(data: Uint8Array | string): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

export function blobOf(data: Buffer | string): Blob {
  const buf = Buffer.isBuffer(data) ? data : Buffer.from(data);
  return { digest: sha256(buf), size: buf.length, data: buf };
}

export function randomBlob(size: number): Blob {
  return blobOf(randomBytes(size));
}

/** A real gzipped tar holding `files` (name → content), made with the system tar. */
export function tarLayer(files: Record<string, string | Buffer>): Blob {
  const dir = mkdtempSync(path.join(tmpdir(), 'rs-layer-'));
  try {
    const root = path.join(dir, 'root');
    mkdirSync(root);
    for (const [name, content] of Object.entries(files)) {
      mkdirSync(path.dirname(path.join(root, name)), { recursive: true });
      writeFileSync(path.join(root, name), content);
    }
    const out = path.join(dir, 'layer.tar.gz');
    execFileSync('tar', ['--sort=name', '--owner=0', '--group=0', '--mtime=@0', '-I', 'gzip -n', '-C', root, '-cf', out, '.']);
    return blobOf(readFileSync(out));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export interface Image {
  config: Blob;
  layers: Blob[];
  manifest: Blob;
  mediaType: string;
  platform: { architecture: string; os: string };
}

export interface ImageOptions {
  files?: Record<string, string | Buffer>[];
  architecture?: string;
  os?: string;
  docker?: boolean;
  /** Extra top-level manifest fields (subject, artifactType, annotations). */
  extra?: Record<string, unknown>;
}

export function buildImage(options: ImageOptions = {}): Image {
  const files = options.files ?? [{ 'hello.txt': `hello ${randomBytes(8).toString('hex')}\n` }];
  const layers = files.map((f) => tarLayer(f));
  const architecture = options.architecture ?? 'amd64';
  const os = options.os ?? 'linux';
  const diffIds = layers.map((l) => sha256(gunzipSync(l.data)));
  const config = blobOf(
    JSON.stringify({
      architecture,
      os,
      config: { Cmd: ['/bin/sh'] },
      rootfs: { type: 'layers', diff_ids: diffIds },
      history: layers.map(() => ({ created_by: 'registry-stack test' })),
    }),
  );
  const docker = options.docker ?? false;
  const mediaType = docker ? MT.dockerManifest : MT.ociManifest;
  const manifest = blobOf(
    JSON.stringify({
      schemaVersion: 2,
      mediaType,
      config: { mediaType: docker ? MT.dockerConfig : MT.ociConfig, digest: config.digest, size: config.size },
      layers: layers.map((l) => ({ mediaType: docker ? MT.dockerLayer : MT.ociLayer, digest: l.digest, size: l.size })),
      ...options.extra,
    }),
  );
  return { config, layers, manifest, mediaType, platform: { architecture, os } };
}

export interface IndexImage {
  index: Blob;
  mediaType: string;
  images: Image[];
}

export function buildIndex(images: Image[], docker = false): IndexImage {
  const mediaType = docker ? MT.dockerList : MT.ociIndex;
  const index = blobOf(
    JSON.stringify({
      schemaVersion: 2,
      mediaType,
      manifests: images.map((img) => ({
        mediaType: img.mediaType,
        digest: img.manifest.digest,
        size: img.manifest.size,
        platform: img.platform,
      })),
    }),
  );
  return { index, mediaType, images };
}

/** Writes an OCI image layout holding `tag` → image (or index). */
export function writeOciLayout(dir: string, tag: string, image: Image | IndexImage): void {
  mkdirSync(path.join(dir, 'blobs', 'sha256'), { recursive: true });
  writeFileSync(path.join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  const put = (b: Blob) => writeFileSync(path.join(dir, 'blobs', 'sha256', b.digest.slice(7)), b.data);
  const images = 'index' in image ? image.images : [image];
  for (const img of images) {
    put(img.config);
    img.layers.forEach(put);
    put(img.manifest);
  }
  const top = 'index' in image ? { blob: image.index, mediaType: image.mediaType } : { blob: image.manifest, mediaType: image.mediaType };
  put(top.blob);
  writeFileSync(
    path.join(dir, 'index.json'),
    JSON.stringify({
      schemaVersion: 2,
      manifests: [
        {
          mediaType: top.mediaType,
          digest: top.blob.digest,
          size: top.blob.size,
          annotations: { 'org.opencontainers.image.ref.name': tag },
        },
      ],
    }),
  );
}

/** The descriptor of an image's (or artifact's) manifest, for an index entry or a subject. */
export function manifestDescriptor(image: Image | IndexImage): Descriptor {
  const blob = 'index' in image ? image.index : image.manifest;
  return { mediaType: image.mediaType, digest: blob.digest, size: blob.size };
}

export interface ArtifactOptions {
  /** Top-level artifactType (omitted when undefined). */
  artifactType?: string;
  subject?: Descriptor;
  annotations?: Record<string, string>;
  /** Layer contents (default: one small random JSON file). */
  contents?: (Buffer | string)[];
  layerMediaType?: string;
  /** Config blob and media type (default: the OCI empty descriptor's `{}`). */
  config?: { mediaType: string; data: Buffer | string };
}

/**
 * An OCI 1.1 artifact: an image manifest with artifactType, the empty config
 * (or a given one), plain layers, and optionally a subject. Push it with
 * RegistryClient.pushImage (it has the Image shape).
 */
export function buildArtifact(options: ArtifactOptions = {}): Image {
  const config = blobOf(options.config?.data ?? '{}');
  const configType = options.config?.mediaType ?? MT.ociEmpty;
  const layers = (options.contents ?? [JSON.stringify({ random: randomBytes(8).toString('hex') })]).map((c) => blobOf(c));
  const doc: Record<string, unknown> = {
    schemaVersion: 2,
    mediaType: MT.ociManifest,
    ...(options.artifactType !== undefined ? { artifactType: options.artifactType } : {}),
    config: { mediaType: configType, digest: config.digest, size: config.size },
    layers: layers.map((l) => ({ mediaType: options.layerMediaType ?? 'application/json', digest: l.digest, size: l.size })),
    ...(options.subject ? { subject: options.subject } : {}),
    ...(options.annotations ? { annotations: options.annotations } : {}),
  };
  return {
    config,
    layers,
    manifest: blobOf(JSON.stringify(doc)),
    mediaType: MT.ociManifest,
    platform: { architecture: 'unknown', os: 'unknown' },
  };
}
