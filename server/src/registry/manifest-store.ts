// Manifests of one repository: stored as blobs, made visible by a revision
// link, named by tag links, and indexed by subject for the referrers API.
import { isNotFound, type StorageDriver } from '../storage/driver.ts';
import { paths } from '../storage/paths.ts';
import type { BlobStore } from './blob-store.ts';
import { type Digest, digestOf, looksLikeDigest, parseDigest } from './digest.ts';
import { RegistryError } from './errors.ts';
import type { GcGuard } from './gc-guard.ts';
import { listDigests } from './listing.ts';
import { LruCache } from './lru.ts';
import {
  accepts,
  type Descriptor,
  isIndexMediaType,
  MAX_MANIFEST_BYTES,
  type ManifestInfo,
  parseManifest,
} from './manifest.ts';
import { imageRef, isValidTag, validateTag } from './names.ts';
import type { ManifestResult, PutManifestResult, ReferrersResult } from './types.ts';

interface Parsed {
  body: Buffer;
  info: ManifestInfo;
}

export class ManifestStore {
  // Manifest bytes are immutable per digest, so the cache needs no invalidation;
  // whether a repository may see a digest is decided by its revision link.
  private readonly parsed = new LruCache<string, Parsed>(64 * 1024 * 1024, (p) => p.body.length + 512);

  constructor(
    private readonly driver: StorageDriver,
    private readonly blobs: BlobStore,
    private readonly guard: GcGuard,
  ) {}

  /** Resolves a tag or digest reference to a digest this repository holds. */
  async resolve(name: string, reference: string): Promise<Digest> {
    let digest: Digest | undefined;
    if (looksLikeDigest(reference)) {
      digest = parseDigest(reference);
    } else {
      validateTag(reference);
      digest = await this.blobs.readLink(paths.tagCurrentLink(name, reference));
      if (!digest) throw manifestUnknown(name, reference);
    }
    if (!(await this.blobs.hasLink(paths.revisionLink(name, digest)))) throw manifestUnknown(name, reference);
    return digest;
  }

  async get(name: string, reference: string, accept?: string): Promise<ManifestResult> {
    // A reference that cannot be a tag names no manifest: a read answers 404
    // MANIFEST_UNKNOWN, as distribution does and the OCI conformance suite
    // expects (GET/HEAD of ".INVALID_MANIFEST_NAME"). Writes and deletes still
    // refuse it as TAG_INVALID. Not in resolve(): the mirror relies on it
    // refusing such a reference before asking its upstream.
    if (!looksLikeDigest(reference) && !isValidTag(reference)) throw manifestUnknown(name, reference);
    return this.getResolved(name, await this.resolve(name, reference), reference, accept);
  }

  /** get() for a reference the caller has just resolved (to `digest`) itself. */
  async getResolved(name: string, digest: Digest, reference: string, accept?: string): Promise<ManifestResult> {
    const { body, info } = await this.load(digest, name, reference);
    if (!accepts(accept, info.mediaType)) {
      const fallback = isIndexMediaType(info.mediaType) ? await this.platformFallback(name, info, accept) : undefined;
      if (fallback) return fallback;
      throw new RegistryError(
        'MANIFEST_UNKNOWN',
        `manifest ${reference} is a ${info.mediaType}, which the request's Accept header does not allow`,
      );
    }
    return { digest, mediaType: info.mediaType, body, subject: info.subject };
  }

  /**
   * Stores a manifest under a tag or its digest. For the mirror's cache:
   * - `verifyReferences: false`: it fetches a manifest's blobs and children lazily;
   * - `overwrite: true`: it has just found the manifest missing, so the bytes are
   *   written without asking the storage whether they are there (rewriting identical
   *   bytes changes nothing, and on S3 asking costs more than writing).
   */
  async put(
    name: string,
    reference: string,
    contentType: string | undefined,
    body: Buffer,
    options: { verifyReferences?: boolean; overwrite?: boolean } = {},
  ): Promise<PutManifestResult> {
    if (body.length > MAX_MANIFEST_BYTES) {
      throw new RegistryError('MANIFEST_TOO_LARGE', `manifest is larger than ${MAX_MANIFEST_BYTES} bytes`);
    }
    const byDigest = looksLikeDigest(reference);
    const claimed = byDigest ? parseDigest(reference) : undefined;
    if (!byDigest) validateTag(reference);
    const info = parseManifest(body, contentType, { pushed: true });
    const digest = digestOf(body, claimed?.algorithm ?? 'sha256');
    if (claimed && claimed.hex !== digest.hex) {
      throw new RegistryError('DIGEST_INVALID', `manifest digest ${digest.value} does not match reference ${claimed.value}`);
    }
    // Pin what this manifest relies on before checking it, so a concurrent GC cannot delete it in between
    // (held until the links are written, even across the start of a new GC run).
    const release = await this.guard.protect([digest, ...info.blobs.map((b) => b.digest), ...info.children.map((c) => c.digest)]);
    try {
      if (options.verifyReferences !== false) await this.checkReferences(name, info);

      // Order matters only between steps: the bytes, then the links that name
      // them (written together), then the tag's current link, which is what
      // makes the tag move.
      if (options.overwrite) await this.blobs.overwriteVerified(digest, body);
      else await this.blobs.putVerified(digest, body);
      this.parsed.set(digest.value, { body, info });
      await Promise.all([
        this.blobs.writeLink(paths.revisionLink(name, digest), digest),
        info.subject && this.blobs.writeLink(paths.referrerLink(name, info.subject, digest), digest),
        !byDigest && this.blobs.writeLink(paths.tagIndexLink(name, reference, digest), digest),
      ]);
      if (!byDigest) await this.blobs.writeLink(paths.tagCurrentLink(name, reference), digest);
    } finally {
      await release();
    }
    return { digest, subject: info.subject };
  }

  /** By tag: removes the tag only. By digest: removes the manifest and every tag pointing at it. */
  async delete(name: string, reference: string): Promise<void> {
    if (!looksLikeDigest(reference)) {
      validateTag(reference);
      const current = await this.blobs.readLink(paths.tagCurrentLink(name, reference));
      if (!current) throw manifestUnknown(name, reference);
      await this.driver.delete(paths.tagDir(name, reference));
      return;
    }
    const digest = parseDigest(reference);
    if (!(await this.blobs.hasLink(paths.revisionLink(name, digest)))) throw manifestUnknown(name, reference);
    for (const tag of await this.tags(name)) {
      const current = await this.blobs.readLink(paths.tagCurrentLink(name, tag));
      if (current?.value === digest.value) await this.driver.delete(paths.tagDir(name, tag));
    }
    await this.deleteRevision(name, digest);
  }

  /**
   * Removes a manifest revision (and its referrers entry) without looking at
   * tags: for callers that dealt with the tags themselves (cache pruning, which
   * must not read, and so touch, the tag links it keeps).
   */
  async deleteRevision(name: string, digest: Digest): Promise<void> {
    const loaded = await this.tryLoad(digest);
    await this.blobs.deleteLinks(paths.revisionDir(name, digest));
    if (loaded?.info.subject) {
      await this.driver.delete(paths.referrerDir(name, loaded.info.subject, digest));
    }
  }

  /**
   * Tags of a repository that may have none left. Only "no such repository"
   * means none: any other failure must stop a GC or prune run, not make it
   * treat the repository as untagged.
   */
  async tagsIfAny(name: string): Promise<string[]> {
    try {
      return await this.tags(name);
    } catch (err) {
      if (err instanceof RegistryError && err.code === 'NAME_UNKNOWN') return [];
      throw err;
    }
  }

  /**
   * When `tag` was last written (pushed; on a mirror, also when its upstream last confirmed it): its link's
   * modification time. Undefined when there is no such tag.
   */
  async tagTime(name: string, tag: string): Promise<Date | undefined> {
    try {
      return (await this.driver.stat(paths.tagCurrentLink(name, tag))).modTime;
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  async tags(name: string): Promise<string[]> {
    try {
      return (await this.driver.list(paths.tagsDir(name))).sort();
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
    // No tags directory: an unknown repository, or one whose tags were all deleted.
    // A repository is known once it has manifests (as for the catalog): a blob or an
    // upload session alone (even a failed one) does not make it one.
    try {
      await this.driver.stat(paths.manifestsDir(name));
      return [];
    } catch (err) {
      if (isNotFound(err)) throw new RegistryError('NAME_UNKNOWN', `repository name not known to registry: ${name}`);
      throw err;
    }
  }

  async referrers(name: string, subject: Digest, artifactType?: string): Promise<ReferrersResult> {
    const dir = paths.referrersDir(name, subject);
    const manifests: Descriptor[] = [];
    for (const digest of await listDigests(this.driver, dir)) {
      if (!(await this.blobs.hasLink(paths.revisionLink(name, digest)))) continue;
      const loaded = await this.tryLoad(digest);
      if (!loaded) continue;
      const { body, info } = loaded;
      if (artifactType && info.artifactType !== artifactType) continue;
      const d: Descriptor = { mediaType: info.mediaType, digest: digest.value, size: body.length };
      if (info.artifactType) d.artifactType = info.artifactType;
      if (info.annotations) d.annotations = info.annotations;
      manifests.push(d);
    }
    manifests.sort((a, b) => (a.digest < b.digest ? -1 : 1));
    return { manifests, filtersApplied: artifactType ? ['artifactType'] : [] };
  }

  /**
   * Keeps verified manifest bytes at hand for serving before they are stored (the
   * mirror answers a fetched manifest while it writes it to the cache).
   */
  remember(digest: Digest, body: Buffer, info: ManifestInfo): void {
    this.parsed.set(digest.value, { body, info });
  }

  /** The parsed manifest for a digest, if its bytes are stored. */
  async tryLoad(digest: Digest): Promise<Parsed | undefined> {
    const cached = this.parsed.get(digest.value);
    if (cached) return cached;
    const body = await this.blobs.readAll(digest);
    if (!body) return undefined;
    const parsed = { body, info: parseManifest(body) };
    this.parsed.set(digest.value, parsed);
    return parsed;
  }

  private async load(digest: Digest, name: string, reference: string): Promise<Parsed> {
    const loaded = await this.tryLoad(digest).catch((err) => {
      if (err instanceof RegistryError) return undefined; // unreadable stored bytes
      throw err;
    });
    if (!loaded) throw manifestUnknown(name, reference);
    return loaded;
  }

  private async checkReferences(name: string, info: ManifestInfo): Promise<void> {
    const checks: Promise<void>[] = [];
    for (const blob of info.blobs) {
      // Foreign (non-distributable) layers live elsewhere, at their urls.
      if (blob.urls && blob.urls.length > 0) continue;
      checks.push(
        (async () => {
          const digest = parseDigest(blob.digest);
          const linked = await this.blobs.hasLink(paths.layerLink(name, digest));
          const stored = linked ? await this.blobs.stat(digest) : undefined;
          if (!stored) throw blobUnknown(blob.digest);
          if (stored.size !== blob.size) {
            throw new RegistryError(
              'MANIFEST_INVALID',
              `descriptor size ${blob.size} of ${blob.digest} does not match the stored blob (${stored.size} bytes)`,
            );
          }
        })(),
      );
    }
    for (const child of info.children) {
      checks.push(
        (async () => {
          const digest = parseDigest(child.digest);
          if (!(await this.blobs.hasLink(paths.revisionLink(name, digest)))) throw blobUnknown(child.digest);
        })(),
      );
    }
    const results = await Promise.allSettled(checks);
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
  }

  /** Distribution's behaviour for clients that cannot read a list: serve the linux/amd64 image. */
  private async platformFallback(name: string, info: ManifestInfo, accept?: string): Promise<ManifestResult | undefined> {
    const child = info.children.find(
      (c) => c.platform?.os === 'linux' && c.platform?.architecture === 'amd64' && accepts(accept, c.mediaType),
    );
    if (!child) return undefined;
    const digest = parseDigest(child.digest);
    if (!(await this.blobs.hasLink(paths.revisionLink(name, digest)))) return undefined;
    const loaded = await this.tryLoad(digest);
    if (!loaded || !accepts(accept, loaded.info.mediaType)) return undefined;
    return { digest, mediaType: loaded.info.mediaType, body: loaded.body, subject: loaded.info.subject };
  }
}

function manifestUnknown(name: string, reference: string): RegistryError {
  return new RegistryError('MANIFEST_UNKNOWN', `manifest unknown: ${imageRef(name, reference.slice(0, 140))}`);
}

function blobUnknown(digest: string): RegistryError {
  return new RegistryError('MANIFEST_BLOB_UNKNOWN', `blob unknown to registry: ${digest}`, { digest });
}
