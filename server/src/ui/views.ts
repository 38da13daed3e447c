// What the UI shows, read from the registry's service layer (never over HTTP):
// a page of repository names matching a search, and a repository's tags with
// what each points to. Reads go to the local store (in mirror mode, the cache),
// so looking never makes the mirror ask an upstream.
import type { Readable } from 'node:stream';
import { tryParseDigest } from '../registry/digest.ts';
import { LruCache } from '../registry/lru.ts';
import { isIndexMediaType } from '../registry/manifest.ts';
import type { RegistryService } from '../registry/types.ts';

export interface RepositoryPage {
  repositories: Array<{ name: string; tags: number }>;
  /** Pass as `last` for the next page; absent on the last page. */
  next?: string;
}

/** Catalog names read per step while searching: a bound on memory, not on the result. */
const SCAN_STEP = 1000;

/**
 * Up to `n` repositories after `last` whose name contains `q` and that
 * `visible` lets this client see, scanning the catalog in pages.
 */
export async function searchRepositories(
  store: RegistryService,
  options: { q?: string; last?: string; n: number; visible: (name: string) => Promise<boolean> },
): Promise<RepositoryPage> {
  const q = (options.q ?? '').toLowerCase();
  const found: string[] = [];
  let last = options.last;
  let more = true;
  while (more && found.length <= options.n) {
    const page = await store.catalog({ n: SCAN_STEP, last });
    for (const name of page.items) {
      if (q && !name.toLowerCase().includes(q)) continue;
      if (!(await options.visible(name))) continue;
      found.push(name);
      if (found.length > options.n) break;
    }
    more = page.next !== undefined;
    last = page.next;
  }
  const shown = found.slice(0, options.n);
  const repositories = await Promise.all(
    shown.map(async (name) => ({ name, tags: (await store.listTags(name, {}).catch(() => ({ items: [] }))).items.length })),
  );
  return { repositories, next: found.length > options.n ? shown[shown.length - 1] : undefined };
}

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

  /** Every tag of `name` (up to MAX_TAGS) with its summary, newest first. */
  async tags(name: string): Promise<{ tags: TagSummary[]; omitted: number }> {
    const all = (await this.store.listTags(name, {})).items;
    const read = all.slice(0, MAX_TAGS);
    const tags: TagSummary[] = [];
    for (const tag of read) {
      const summary = await this.summary(name, tag).catch(() => undefined);
      if (summary) tags.push({ tag, ...summary });
    }
    tags.sort((a, b) => (b.created ?? '').localeCompare(a.created ?? '') || a.tag.localeCompare(b.tag));
    return { tags, omitted: all.length - read.length };
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
