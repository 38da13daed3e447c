// Content-addressed blobs shared by all repositories, and the link files that
// make a blob (or manifest) visible in one repository. Blob data is immutable
// once committed, so sizes are cached by digest (distribution's "blob
// descriptor cache"); links are always read from storage, because another
// process (GC, a registry:2 on the same directory) may remove them.
import type { Readable, Writable } from 'node:stream';
import { type ByteRange, isNotFound, type StorageDriver } from '../storage/driver.ts';
import { paths } from '../storage/paths.ts';
import { type Digest, tryParseDigest } from './digest.ts';
import { RegistryError } from './errors.ts';
import { LruCache } from './lru.ts';

export interface BlobInfo {
  digest: Digest;
  size: number;
}

/**
 * A blob descriptor cache that replicas share (storage.cache.blobdescriptor:
 * redis). `fill` records what a stat saw and must not undo an invalidation
 * that happened meanwhile; `put` records a blob this process just committed
 * (under a GC pin, so it is authoritative); `invalidate` is called before and
 * after the data is deleted.
 */
export interface DescriptorCache {
  get(digest: string): Promise<number | undefined>;
  fill(digest: string, size: number): Promise<void>;
  put(digest: string, size: number): Promise<void>;
  invalidate(digest: string): Promise<void>;
}

export class BlobStore {
  private readonly sizes: LruCache<string, number>;
  /** Bumped before and after every deletion: a stat that overlapped one must not fill the cache. */
  private deletions = 0;

  /**
   * Links seen to exist (key → until when that is trusted), with storage.cache.blobdescriptor:
   * inmemory, which in distribution caches repository links too (for good). Here for
   * `linkTtlMs` at most, and forgotten at once when this process deletes a link; a deletion
   * by another process (a replica, an offline GC) shows after the TTL.
   */
  private readonly seenLinks: LruCache<string, number> | undefined;
  /** Bumped by every link deletion: a check or write of a link that overlapped one must not fill the cache. */
  private linkDeletions = 0;

  constructor(
    readonly driver: StorageDriver,
    descriptorCacheSize = 10_000,
    /** The shared cache, used instead of the in-process one when set. */
    private readonly shared?: DescriptorCache,
    private readonly linkTtlMs = 0,
  ) {
    this.sizes = new LruCache(descriptorCacheSize, () => 1);
    this.seenLinks = linkTtlMs > 0 ? new LruCache(descriptorCacheSize, () => 1) : undefined;
  }

  /** Global stat, ignoring repositories. Undefined when the blob is not stored. One HEAD on S3 (blob data is written whole). */
  async stat(digest: Digest): Promise<BlobInfo | undefined> {
    if (this.shared) return this.sharedStat(this.shared, digest);
    const cached = this.sizes.get(digest.value);
    if (cached !== undefined) return { digest, size: cached };
    const epoch = this.deletions;
    const size = await this.driver.objectSize(paths.blobData(digest));
    if (size === undefined) return undefined;
    if (epoch === this.deletions) this.sizes.set(digest.value, size);
    return { digest, size };
  }

  private async sharedStat(shared: DescriptorCache, digest: Digest): Promise<BlobInfo | undefined> {
    const cached = await shared.get(digest.value);
    if (cached !== undefined) return { digest, size: cached };
    const size = await this.driver.objectSize(paths.blobData(digest));
    if (size === undefined) return undefined;
    await shared.fill(digest.value, size);
    return { digest, size };
  }

  /** Records a size this process knows to be right (the blob was just stored). */
  private async remember(digest: Digest, size: number): Promise<void> {
    if (this.shared) await this.shared.put(digest.value, size);
    else this.sizes.set(digest.value, size);
  }

  private async invalidate(digest: Digest): Promise<void> {
    this.sizes.delete(digest.value);
    await this.shared?.invalidate(digest.value);
  }

  async open(digest: Digest, range?: ByteRange): Promise<Readable> {
    try {
      return await this.driver.reader(paths.blobData(digest), range);
    } catch (err) {
      if (isNotFound(err)) {
        await this.invalidate(digest);
        throw new RegistryError('BLOB_UNKNOWN', `blob unknown: ${digest.value}`);
      }
      throw err;
    }
  }

  /** The driver's fast path for serving a blob, when it has one. */
  get canSend(): boolean {
    return this.driver.sender !== undefined;
  }

  /** Whether the driver can hand out direct URLs to blob data (storage.redirect). */
  get canRedirect(): boolean {
    return this.driver.urlFor !== undefined;
  }

  /** A URL from which the client fetches the blob's bytes from the storage itself (presigned, expiring). */
  async redirectUrl(digest: Digest, expiresInS: number): Promise<string> {
    const urlFor = this.driver.urlFor;
    if (!urlFor) throw new Error(`the ${this.driver.name} driver has no direct URLs`);
    return urlFor.call(this.driver, paths.blobData(digest), expiresInS);
  }

  async sender(digest: Digest, range?: ByteRange): Promise<(dest: Writable) => Promise<void>> {
    const sender = this.driver.sender;
    if (!sender) throw new Error(`the ${this.driver.name} driver has no sender`);
    try {
      return await sender.call(this.driver, paths.blobData(digest), range);
    } catch (err) {
      if (isNotFound(err)) {
        await this.invalidate(digest);
        throw new RegistryError('BLOB_UNKNOWN', `blob unknown: ${digest.value}`);
      }
      throw err;
    }
  }

  async readAll(digest: Digest): Promise<Buffer | undefined> {
    try {
      return await this.driver.getContent(paths.blobData(digest));
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  /** Stores small, already verified content (manifests) under its digest. */
  async putVerified(digest: Digest, data: Uint8Array): Promise<void> {
    if ((await this.stat(digest)) === undefined) {
      await this.driver.putContent(paths.blobData(digest), data);
    }
    await this.remember(digest, data.length);
  }

  /** putVerified() without asking whether the bytes are stored already: for callers that just found them missing. */
  async overwriteVerified(digest: Digest, data: Uint8Array): Promise<void> {
    await this.driver.putContent(paths.blobData(digest), data);
    await this.remember(digest, data.length);
  }

  /** Moves verified upload data into place under its digest. */
  async commitFrom(uploadKey: string, digest: Digest, size: number): Promise<void> {
    if ((await this.stat(digest)) === undefined) {
      await this.driver.move(uploadKey, paths.blobData(digest));
    }
    await this.remember(digest, size);
  }

  /** Records a blob written in place under its digest by the caller (a verified cache fill). */
  async recordStored(digest: Digest, size: number): Promise<void> {
    await this.remember(digest, size);
  }

  /** Removes the blob data itself (garbage collection only). */
  async deleteData(digest: Digest): Promise<void> {
    this.deletions++;
    await this.invalidate(digest);
    try {
      await this.driver.delete(paths.blobDir(digest));
    } finally {
      // A stat that saw the file before it went may have cached it meanwhile.
      this.deletions++;
      await this.invalidate(digest);
    }
  }

  forget(digest: Digest): void {
    this.sizes.delete(digest.value);
    this.shared?.invalidate(digest.value).catch(() => {});
  }

  // ---- links ----

  async readLink(key: string): Promise<Digest | undefined> {
    try {
      const text = (await this.driver.getContent(key)).toString('utf8').trim();
      return tryParseDigest(text);
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  /** Whether a link exists (the driver's cheapest check: on S3 one HEAD). */
  async hasLink(key: string): Promise<boolean> {
    const until = this.seenLinks?.get(key);
    if (until !== undefined && until > Date.now()) return true;
    const epoch = this.linkDeletions;
    const exists = (await this.driver.objectSize(key)) !== undefined;
    if (exists && this.seenLinks && epoch === this.linkDeletions) this.seenLinks.set(key, Date.now() + this.linkTtlMs);
    return exists;
  }

  /** Deletes links (a directory of them) and forgets every link seen to exist. */
  async deleteLinks(key: string): Promise<void> {
    this.linkDeletions++;
    this.seenLinks?.clear();
    try {
      await this.driver.delete(key);
    } finally {
      this.linkDeletions++;
      this.seenLinks?.clear();
    }
  }

  /** Writes a link; with the link cache on, it is then known to exist (the next check of it asks no one). */
  async writeLink(key: string, digest: Digest): Promise<void> {
    const epoch = this.linkDeletions;
    await this.driver.putContent(key, Buffer.from(digest.value));
    if (this.seenLinks && epoch === this.linkDeletions) this.seenLinks.set(key, Date.now() + this.linkTtlMs);
  }
}
