// What the UI shows, read from the registry's service layer (never over HTTP):
// a page of repository names matching a search, and a repository's tags with
// what each points to. Reads go to the local store (in mirror mode, the cache),
// so looking never makes the mirror ask an upstream.
import type { Readable } from 'node:stream';
import { tryParseDigest } from '../registry/digest.ts';
import { LruCache } from '../registry/lru.ts';
import { isIndexMediaType } from '../registry/manifest.ts';
import type { RegistryService } from '../registry/types.ts';

export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
  digest: string;
}

export interface ManifestSummary {
  digest: string;
  mediaType: string;
  /** The manifest, its config and layers; for an index, also its platforms' manifests and theirs. */
  size: number;
  /** From the image config (the newest of an index's platforms); undefined when none says. */
  created?: string;
  /** An index's platforms; an image's own platform. */
  platforms: Platform[];
  index: boolean;
}

export interface TagSummary extends ManifestSummary {
  tag: string;
}

/** Tags summarised per repository page at most (the rest are named, not read). */
export const MAX_TAGS = 500;
const MAX_CONFIG_BYTES = 1024 * 1024;

/** Summaries by digest: what a digest names never changes, so they never go stale. */
export class ManifestSummaries {
  private readonly cache = new LruCache<string, ManifestSummary>(5000, () => 1);

  constructor(private readonly store: RegistryService) {}

  /**
   * The tags of `name` with their summaries: all of them newest first when there are at most MAX_TAGS;
   * otherwise MAX_TAGS to a page in name order (sorting by age would read every tag), the page after `last`.
   */
  async tags(name: string, last?: string): Promise<{ tags: TagSummary[]; omitted: number; next?: string; paged: boolean }> {
    const all = (await this.store.listTags(name, {})).items;
    const paged = all.length > MAX_TAGS;
    const from = paged && last !== undefined ? all.findIndex((t) => t > last) : 0;
    const read = from < 0 ? [] : all.slice(from, from + MAX_TAGS);
    const tags: TagSummary[] = [];
    for (const tag of read) {
      const summary = await this.summary(name, tag).catch(() => undefined);
      if (summary) tags.push({ tag, ...summary });
    }
    if (!paged) tags.sort((a, b) => (b.created ?? '').localeCompare(a.created ?? '') || a.tag.localeCompare(b.tag));
    const omitted = from < 0 ? 0 : all.length - from - read.length;
    return { tags, omitted, next: omitted > 0 ? read[read.length - 1] : undefined, paged };
  }

  async summary(name: string, reference: string): Promise<ManifestSummary> {
    const byDigest = tryParseDigest(reference) ? this.cache.get(`${name}@${reference}`) : undefined;
    if (byDigest) return byDigest;
    const manifest = await this.store.getManifest(name, reference);
    const key = `${name}@${manifest.digest.value}`;
    const cached = this.cache.get(key);
    if (cached) return cached;
    const body = JSON.parse(manifest.body.toString('utf8')) as ManifestJson;
    let summary: ManifestSummary;
    if (isIndexMediaType(manifest.mediaType) || Array.isArray(body.manifests)) {
      const platforms: Platform[] = [];
      let size = manifest.body.length;
      let created: string | undefined;
      for (const child of body.manifests ?? []) {
        size += child.size ?? 0;
        const p = child.platform;
        // Attestations (buildx) ride in indexes as unknown/unknown: not a platform anyone pulls.
        if (p?.os && p.architecture && p.os !== 'unknown') {
          platforms.push({ os: p.os, architecture: p.architecture, variant: p.variant, digest: child.digest });
        }
        const inner = await this.summary(name, child.digest).catch(() => undefined);
        if (inner) {
          size += inner.size - (child.size ?? 0);
          if (inner.created && (!created || inner.created > created)) created = inner.created;
        }
      }
      summary = { digest: manifest.digest.value, mediaType: manifest.mediaType, size, created, platforms, index: true };
    } else {
      let size = manifest.body.length + (body.config?.size ?? 0);
      for (const layer of body.layers ?? []) size += layer.size ?? 0;
      const config = body.config?.digest ? await this.config(name, body.config.digest, body.config.size ?? 0) : undefined;
      const created = config?.created ?? body.annotations?.['org.opencontainers.image.created'];
      const platforms =
        config?.os && config.architecture
          ? [{ os: config.os, architecture: config.architecture, variant: config.variant, digest: manifest.digest.value }]
          : [];
      summary = { digest: manifest.digest.value, mediaType: manifest.mediaType, size, created, platforms, index: false };
    }
    this.cache.set(key, summary);
    return summary;
  }

  private config(name: string, digest: string, size: number): Promise<ImageConfig | undefined> {
    return readConfig(this.store, name, digest, size);
  }
}

/** An image's config blob, parsed; undefined when it is missing, too large (over 1 MiB) or not JSON. */
export async function readConfig(store: RegistryService, name: string, digest: string, size: number): Promise<ImageConfig | undefined> {
  const parsed = tryParseDigest(digest);
  if (!parsed || size > MAX_CONFIG_BYTES) return undefined;
  try {
    const handle = await store.getBlob(name, parsed);
    const text = await readSmall(await handle.open(), MAX_CONFIG_BYTES);
    const config = JSON.parse(text) as unknown;
    return config && typeof config === 'object' ? (config as ImageConfig) : undefined;
  } catch {
    return undefined;
  }
}

async function readSmall(stream: Readable, limit: number): Promise<string> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of stream) {
    total += (chunk as Buffer).length;
    if (total > limit) {
      stream.destroy();
      throw new Error('too large');
    }
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks).toString('utf8');
}

interface ManifestJson {
  manifests?: Array<{ digest: string; size?: number; platform?: { os?: string; architecture?: string; variant?: string } }>;
  config?: { digest?: string; size?: number };
  layers?: Array<{ size?: number }>;
  annotations?: Record<string, string>;
}

/** An image config as pushed: any field may be missing or of another type, so readers check. */
export interface ImageConfig {
  created?: string;
  os?: string;
  architecture?: string;
  variant?: string;
  config?: {
    Env?: unknown;
    Entrypoint?: unknown;
    Cmd?: unknown;
    WorkingDir?: unknown;
    User?: unknown;
    Labels?: unknown;
    ExposedPorts?: unknown;
  };
  history?: unknown;
}
