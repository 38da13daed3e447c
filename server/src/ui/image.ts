// One manifest as the image page shows it, read from the service layer: the
// manifest itself, an image's config and layers, an index's platforms, and
// the manifests that name it as their subject (the referrers API's answer).
// Everything here comes from whoever pushed the image: fields are checked for
// their type, never trusted, and the page escapes them.
import { tryParseDigest } from '../registry/digest.ts';
import { isIndexMediaType } from '../registry/manifest.ts';
import type { RegistryService } from '../registry/types.ts';
import { type ImageConfig, readConfig } from './views.ts';

export interface Blob {
  mediaType: string;
  digest: string;
  size: number;
}

export interface ChildManifest extends Blob {
  /** "linux/arm64/v8"; undefined for an entry without a platform (or buildx's unknown/unknown attestations). */
  platform?: string;
}

export interface HistoryStep {
  created?: string;
  createdBy?: string;
  comment?: string;
  emptyLayer: boolean;
}

export interface ConfigView {
  platform?: string;
  created?: string;
  entrypoint?: string[];
  cmd?: string[];
  workingDir?: string;
  user?: string;
  env: string[];
  labels: Array<[string, string]>;
  ports: string[];
  history: HistoryStep[];
}

export interface Referrer extends Blob {
  artifactType?: string;
  annotations: Array<[string, string]>;
}

export interface ImageView {
  name: string;
  digest: string;
  mediaType: string;
  /** The manifest's own bytes. */
  size: number;
  artifactType?: string;
  annotations: Array<[string, string]>;
  subject?: Blob;
  index: boolean;
  /** An index's manifests. */
  manifests: ChildManifest[];
  /** An image's config blob, and what it says (undefined: missing, too large or not JSON). */
  configBlob?: Blob;
  config?: ConfigView;
  layers: Blob[];
  referrers: Referrer[];
}

export async function loadImage(store: RegistryService, name: string, reference: string): Promise<ImageView> {
  const manifest = await store.getManifest(name, reference);
  const digest = manifest.digest.value;
  let body: Record<string, unknown> = {};
  try {
    const parsed = JSON.parse(manifest.body.toString('utf8')) as unknown;
    if (isObject(parsed)) body = parsed;
  } catch {
    // Not JSON: the page shows what the registry knows (type, digest, size) and nothing else.
  }
  const index = isIndexMediaType(manifest.mediaType) || Array.isArray(body.manifests);
  const view: ImageView = {
    name,
    digest,
    mediaType: manifest.mediaType,
    size: manifest.body.length,
    artifactType: str(body.artifactType),
    annotations: pairs(body.annotations),
    subject: blob(body.subject),
    index,
    manifests: [],
    layers: [],
    referrers: [],
  };
  if (index) {
    for (const entry of arr(body.manifests)) {
      const child = blob(entry);
      if (!child) continue;
      const p = isObject(entry) && isObject(entry.platform) ? entry.platform : {};
      const os = str(p.os);
      const arch = str(p.architecture);
      view.manifests.push({ ...child, platform: os && arch && os !== 'unknown' ? [os, arch, str(p.variant)].filter(Boolean).join('/') : undefined });
    }
  } else {
    view.layers = arr(body.layers).map(blob).filter((b): b is Blob => b !== undefined);
    view.configBlob = blob(body.config);
    if (view.configBlob) {
      const config = await readConfig(store, name, view.configBlob.digest, view.configBlob.size);
      if (config) view.config = configView(config);
    }
  }
  const subject = tryParseDigest(digest);
  if (subject) {
    // A repository the referrers API cannot answer for shows none, not an error page.
    const found = await store.referrers(name, subject).catch(() => ({ manifests: [] }));
    view.referrers = found.manifests.map((d) => ({
      mediaType: d.mediaType,
      digest: d.digest,
      size: d.size,
      artifactType: d.artifactType,
      annotations: pairs(d.annotations),
    }));
  }
  return view;
}

function configView(config: ImageConfig): ConfigView {
  const c = isObject(config.config) ? config.config : {};
  const os = str(config.os);
  const arch = str(config.architecture);
  return {
    platform: os && arch ? [os, arch, str(config.variant)].filter(Boolean).join('/') : undefined,
    created: str(config.created),
    entrypoint: strings(c.Entrypoint),
    cmd: strings(c.Cmd),
    workingDir: str(c.WorkingDir) || undefined,
    user: str(c.User) || undefined,
    env: strings(c.Env) ?? [],
    labels: pairs(c.Labels),
    ports: isObject(c.ExposedPorts) ? Object.keys(c.ExposedPorts) : [],
    history: arr(config.history)
      .filter(isObject)
      .map((h) => ({ created: str(h.created), createdBy: str(h.created_by), comment: str(h.comment), emptyLayer: h.empty_layer === true })),
  };
}

function blob(value: unknown): Blob | undefined {
  if (!isObject(value) || typeof value.digest !== 'string') return undefined;
  return { mediaType: str(value.mediaType) ?? '', digest: value.digest, size: typeof value.size === 'number' ? value.size : 0 };
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

const str = (value: unknown): string | undefined => (typeof value === 'string' ? value : undefined);
const arr = (value: unknown): unknown[] => (Array.isArray(value) ? value : []);
const strings = (value: unknown): string[] | undefined => (Array.isArray(value) ? value.map(String) : undefined);
const pairs = (value: unknown): Array<[string, string]> =>
  isObject(value) ? Object.entries(value).map(([k, v]) => [k, typeof v === 'string' ? v : JSON.stringify(v)]) : [];
