// Parsing and validating manifest bodies: Docker v2 schema 2, Docker manifest
// list, OCI image manifest and OCI image index (with OCI 1.1 artifactType and
// subject). Pure functions: no storage, no HTTP.
import { type Digest, tryParseDigest } from './digest.ts';
import { RegistryError } from './errors.ts';

export const MediaTypes = {
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerManifestList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
} as const;

export type ManifestMediaType = (typeof MediaTypes)[keyof typeof MediaTypes];

const KNOWN = new Set<string>(Object.values(MediaTypes));
const INDEX_TYPES = new Set<string>([MediaTypes.dockerManifestList, MediaTypes.ociIndex]);

export const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;

export function isManifestMediaType(t: string): t is ManifestMediaType {
  return KNOWN.has(t);
}

export function isIndexMediaType(t: string): boolean {
  return INDEX_TYPES.has(t);
}

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  urls?: string[];
  annotations?: Record<string, string>;
  artifactType?: string;
  platform?: { architecture?: string; os?: string; variant?: string };
}

/** What the registry needs to know about a stored manifest. */
export interface ManifestInfo {
  mediaType: ManifestMediaType;
  /** Blobs the manifest needs in the same repository (config and layers). */
  blobs: Descriptor[];
  /** Manifests the manifest needs in the same repository (index children). */
  children: Descriptor[];
  subject?: Digest;
  /** artifactType as the referrers API reports it. */
  artifactType?: string;
  annotations?: Record<string, string>;
}

/**
 * Parses a manifest body. `contentType` is the request's Content-Type (undefined
 * when reading back stored bytes, where the body's own mediaType decides);
 * `pushed` for a manifest being stored, which must name its media type.
 */
export function parseManifest(body: Uint8Array, contentType?: string, options: { pushed?: boolean } = {}): ManifestInfo {
  let doc: unknown;
  try {
    doc = JSON.parse(Buffer.from(body).toString('utf8'));
  } catch {
    throw new RegistryError('MANIFEST_INVALID', 'manifest is not valid JSON');
  }
  if (!isObject(doc)) throw new RegistryError('MANIFEST_INVALID', 'manifest is not a JSON object');
  if (doc.schemaVersion !== 2) {
    throw new RegistryError('MANIFEST_INVALID', `unsupported manifest schemaVersion: ${JSON.stringify(doc.schemaVersion)}`);
  }
  const declared = typeof doc.mediaType === 'string' ? doc.mediaType : undefined;
  if (doc.mediaType !== undefined && declared === undefined) {
    throw new RegistryError('MANIFEST_INVALID', 'manifest mediaType must be a string');
  }
  const requested = contentType ? contentType.split(';')[0].trim().toLowerCase() : undefined;
  if (declared && requested && isManifestMediaType(requested) && declared !== requested) {
    throw new RegistryError(
      'MANIFEST_INVALID',
      `Content-Type ${requested} does not match the manifest's mediaType ${declared}`,
    );
  }
  // A push must say what it pushes, as distribution requires: either the
  // Content-Type is a supported manifest media type (a mediaType in the body
  // must then be the same, above), or, when the Content-Type is missing or
  // another type (text/plain, application/json, ...), the body declares a
  // supported mediaType and is stored as that. Otherwise 400 MANIFEST_INVALID:
  // guessing from the shape would store a Docker manifest as OCI (their shapes
  // are alike) and serve it later under the wrong Content-Type. Stored bytes
  // read back (no Content-Type, not a push) may still be typed by their shape.
  if (options.pushed && !declared && !(requested && isManifestMediaType(requested))) {
    throw new RegistryError(
      'MANIFEST_INVALID',
      `a manifest push needs a manifest media type: Content-Type is ${requested?.slice(0, 100) ?? 'missing'} and the body has no mediaType`,
    );
  }
  const mediaType = declared ?? (requested && isManifestMediaType(requested) ? requested : inferMediaType(doc));
  if (!mediaType || !isManifestMediaType(mediaType)) {
    throw new RegistryError('MANIFEST_INVALID', `unsupported manifest media type: ${mediaType ?? requested ?? 'none'}`);
  }

  const info: ManifestInfo = { mediaType, blobs: [], children: [] };
  if (doc.subject !== undefined) {
    const subject = descriptor(doc.subject, 'subject');
    info.subject = tryParseDigest(subject.digest);
  }
  if (doc.annotations !== undefined) info.annotations = annotations(doc.annotations, 'annotations');
  if (doc.artifactType !== undefined) {
    if (typeof doc.artifactType !== 'string') throw new RegistryError('MANIFEST_INVALID', 'artifactType must be a string');
    info.artifactType = doc.artifactType;
  }

  if (isIndexMediaType(mediaType)) {
    if (!Array.isArray(doc.manifests)) throw new RegistryError('MANIFEST_INVALID', 'index has no manifests array');
    info.children = doc.manifests.map((m, i) => descriptor(m, `manifests[${i}]`));
  } else {
    const config = descriptor(doc.config, 'config');
    if (!Array.isArray(doc.layers)) throw new RegistryError('MANIFEST_INVALID', 'manifest has no layers array');
    const layers = doc.layers.map((l, i) => descriptor(l, `layers[${i}]`));
    info.blobs = [config, ...layers];
    // OCI 1.1: an image manifest's artifactType defaults to its config's media type.
    info.artifactType ??= config.mediaType;
  }
  return info;
}

function inferMediaType(doc: Record<string, unknown>): string | undefined {
  if (Array.isArray(doc.manifests)) return MediaTypes.ociIndex;
  if (isObject(doc.config)) return MediaTypes.ociManifest;
  return undefined;
}

function descriptor(v: unknown, where: string): Descriptor {
  if (!isObject(v)) throw new RegistryError('MANIFEST_INVALID', `${where} is not a descriptor object`);
  if (typeof v.mediaType !== 'string' || v.mediaType === '') {
    throw new RegistryError('MANIFEST_INVALID', `${where}.mediaType is missing`);
  }
  if (typeof v.digest !== 'string' || !tryParseDigest(v.digest)) {
    throw new RegistryError('MANIFEST_INVALID', `${where}.digest is not a valid digest`);
  }
  if (typeof v.size !== 'number' || !Number.isSafeInteger(v.size) || v.size < 0) {
    throw new RegistryError('MANIFEST_INVALID', `${where}.size is not a non-negative integer`);
  }
  const d: Descriptor = { mediaType: v.mediaType, digest: v.digest, size: v.size };
  if (v.urls !== undefined) {
    if (!Array.isArray(v.urls) || !v.urls.every((u) => typeof u === 'string')) {
      throw new RegistryError('MANIFEST_INVALID', `${where}.urls must be an array of strings`);
    }
    d.urls = v.urls as string[];
  }
  if (v.annotations !== undefined) d.annotations = annotations(v.annotations, `${where}.annotations`);
  if (typeof v.artifactType === 'string') d.artifactType = v.artifactType;
  if (isObject(v.platform)) d.platform = v.platform as Descriptor['platform'];
  return d;
}

function annotations(v: unknown, where: string): Record<string, string> {
  if (!isObject(v) || !Object.values(v).every((x) => typeof x === 'string')) {
    throw new RegistryError('MANIFEST_INVALID', `${where} must map strings to strings`);
  }
  return v as Record<string, string>;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * Content negotiation: does an Accept header admit this media type?
 * No Accept header (or a wildcard) admits everything, as distribution does.
 */
export function accepts(accept: string | undefined, mediaType: string): boolean {
  if (!accept) return true;
  const types = parseAccept(accept);
  if (types.length === 0) return true;
  return types.some((t) => t === mediaType || t === '*/*' || t === 'application/*');
}

export function parseAccept(accept: string): string[] {
  return accept
    .split(',')
    .map((p) => p.split(';')[0].trim().toLowerCase())
    .filter((p) => p !== '');
}
