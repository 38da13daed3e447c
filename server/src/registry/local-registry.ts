// The registry over local storage (private mode, and the cache under the
// mirror). Composes the blob, upload and manifest stores behind the one
// RegistryService interface that handlers use.
import type { Readable } from 'node:stream';
import { type ByteRange, isNotFound, type StorageDriver } from '../storage/driver.ts';
import { paths } from '../storage/paths.ts';
import { type BlobInfo, BlobStore, type DescriptorCache } from './blob-store.ts';
import { type Digest, parseDigest } from './digest.ts';
import { RegistryError } from './errors.ts';
import { type GcGuard, InProcessGcGuard } from './gc-guard.ts';
import { type Exclusive, KeyedLock } from './keyed-lock.ts';
import { ManifestStore } from './manifest-store.ts';
import { validateName } from './names.ts';
import type {
  AppendOptions,
  BlobHandle,
  Capabilities,
  ManifestResult,
  Page,
  PageRequest,
  PutManifestResult,
  ReferrersResult,
  RegistryService,
  UploadStatus,
} from './types.ts';
import { type HashStateStore, type HashStateEvent, UploadStore } from './uploads.ts';

/** How long a redirect URL stays valid (distribution's s3 driver: 20 minutes). */
const REDIRECT_EXPIRY_S = 20 * 60;

export interface LocalRegistryOptions {
  deleteEnabled: boolean;
  readOnly: boolean;
  blobDescriptorCacheSize?: number;
  /** How long a link seen to exist is trusted without asking the storage again (0: always ask). */
  linkCacheMs?: number;
  /**
   * storage.redirect: answer blob GETs with a 307 to a presigned storage URL when
   * the driver has them (S3), so the bytes bypass this process. Off by default here;
   * the server turns it on unless storage.redirect.disable is set.
   */
  redirect?: boolean;
  /** State shared with other replicas (Redis, or the bucket); each piece stays in-process when absent. */
  shared?: SharedRegistryState;
}

export interface SharedRegistryState {
  /** Pins, deletion marks and recent use, coordinated with every replica's GC. */
  guard?: GcGuard;
  /** The maintenance lock (GC, prune): one run at a time across replicas. */
  exclusive?: Exclusive;
  /** Blob descriptor cache (digest → size) shared by the replicas. */
  descriptors?: DescriptorCache;
  /** Resumable SHA-256 state of upload sessions, so another replica can continue one. */
  hashStates?: HashStateStore;
  onHashState?: (event: HashStateEvent) => void;
}

export class LocalRegistry implements RegistryService {
  readonly capabilities: Capabilities;
  readonly blobs: BlobStore;
  readonly manifests: ManifestStore;
  readonly uploads: UploadStore;
  readonly guard: GcGuard;
  private readonly maintenance: Exclusive;
  private readonly redirect: boolean;

  constructor(
    readonly driver: StorageDriver,
    options: LocalRegistryOptions,
  ) {
    this.capabilities = { write: !options.readOnly, delete: options.deleteEnabled && !options.readOnly };
    const shared = options.shared ?? {};
    this.guard = shared.guard ?? new InProcessGcGuard();
    this.maintenance = shared.exclusive ?? new KeyedLock();
    this.blobs = new BlobStore(driver, options.blobDescriptorCacheSize, shared.descriptors, options.linkCacheMs);
    this.redirect = (options.redirect ?? false) && this.blobs.canRedirect;
    this.manifests = new ManifestStore(driver, this.blobs, this.guard);
    this.uploads = new UploadStore(driver, this.blobs, this.guard, { hashStates: shared.hashStates, onHashState: shared.onHashState });
    // The first URL a process signs costs ~10 ms of one-time setup (signer, credentials);
    // paid here rather than by the first client's GET. Signing is local: nothing is sent.
    if (this.redirect) this.blobs.redirectUrl(parseDigest(`sha256:${'0'.repeat(64)}`), 60).catch(() => {});
  }

  // ---- blobs ----

  async statBlob(name: string, digest: Digest): Promise<BlobInfo> {
    const linked = await this.blobs.hasLink(paths.layerLink(name, digest));
    const info = linked ? await this.blobs.stat(digest) : undefined;
    if (!info) throw blobUnknown(digest);
    // A client that finds the blob may skip uploading it and refer to it in a manifest soon.
    await this.guard.noteUse(digest);
    return info;
  }

  async getBlob(name: string, digest: Digest): Promise<BlobHandle> {
    const info = await this.statBlob(name, digest);
    return this.blobHandle(info);
  }

  /** A handle on a stored blob, using the driver's fast path when it has one. */
  blobHandle(info: BlobInfo, cache?: 'hit' | 'miss'): BlobHandle {
    const { digest } = info;
    return {
      info,
      cache,
      open: (range?: ByteRange) => this.blobs.open(digest, range),
      sender: this.blobs.canSend ? (range?: ByteRange) => this.blobs.sender(digest, range) : undefined,
      redirect: this.redirect ? () => this.blobs.redirectUrl(digest, REDIRECT_EXPIRY_S) : undefined,
    };
  }

  async deleteBlob(name: string, digest: Digest): Promise<void> {
    this.requireDelete();
    if (!(await this.blobs.hasLink(paths.layerLink(name, digest)))) throw blobUnknown(digest);
    // Only the repository's link goes; the data is shared and is garbage collection's to remove.
    await this.blobs.deleteLinks(paths.layerLinkDir(name, digest));
  }

  // ---- uploads ----

  startUpload(name: string): Promise<UploadStatus> {
    this.requireWrite();
    return this.uploads.start(name);
  }

  async mountBlob(name: string, from: string, digest: Digest): Promise<BlobInfo | undefined> {
    this.requireWrite();
    validateName(from);
    if (!(await this.blobs.hasLink(paths.layerLink(from, digest)))) return undefined;
    const release = await this.guard.protect([digest]);
    try {
      const info = await this.blobs.stat(digest);
      if (!info) return undefined;
      await this.guard.noteUse(digest);
      await this.blobs.writeLink(paths.layerLink(name, digest), digest);
      return info;
    } finally {
      await release();
    }
  }

  uploadStatus(name: string, id: string): Promise<UploadStatus> {
    return this.uploads.status(name, id);
  }

  appendUpload(name: string, id: string, body: Readable, options: AppendOptions): Promise<UploadStatus> {
    this.requireWrite();
    return this.uploads.append(name, id, body, options);
  }

  finishUpload(name: string, id: string, digest: Digest, body: Readable | undefined, options: AppendOptions): Promise<BlobInfo> {
    this.requireWrite();
    return this.uploads.finish(name, id, digest, body, options);
  }

  cancelUpload(name: string, id: string): Promise<void> {
    this.requireWrite();
    return this.uploads.cancel(name, id);
  }

  // ---- manifests ----

  getManifest(name: string, reference: string, accept?: string): Promise<ManifestResult> {
    return this.manifests.get(name, reference, accept);
  }

  putManifest(name: string, reference: string, contentType: string | undefined, body: Buffer): Promise<PutManifestResult> {
    this.requireWrite();
    return this.manifests.put(name, reference, contentType, body);
  }

  deleteManifest(name: string, reference: string): Promise<void> {
    this.requireDelete();
    return this.manifests.delete(name, reference);
  }

  // ---- listings ----

  async listTags(name: string, page: PageRequest): Promise<Page> {
    return paginate(await this.manifests.tags(name), page);
  }

  referrers(name: string, subject: Digest, artifactType?: string): Promise<ReferrersResult> {
    return this.manifests.referrers(name, subject, artifactType);
  }

  async catalog(page: PageRequest): Promise<Page> {
    return paginate(await this.repositories(), page);
  }

  /** Every repository name, sorted: directories holding a _manifests directory (as distribution's catalog). */
  repositories(): Promise<string[]> {
    return this.repositoriesWith('_manifests');
  }

  /** Names of the repository directories that hold `marker` (e.g. "_uploads"), sorted. */
  async repositoriesWith(marker: string): Promise<string[]> {
    const found: string[] = [];
    const visit = async (prefix: string): Promise<void> => {
      let children: string[];
      try {
        children = await this.driver.list(prefix ? `${paths.repositories}/${prefix}` : paths.repositories);
      } catch (err) {
        if (isNotFound(err)) return;
        throw err;
      }
      for (const child of children.sort()) {
        if (child === marker) found.push(prefix);
        else if (!child.startsWith('_') && !child.startsWith('.')) await visit(prefix ? `${prefix}/${child}` : child);
      }
    };
    await visit('');
    return found.sort();
  }

  /** Runs maintenance work (GC, prune) one at a time per kind. */
  exclusive<T>(kind: string, work: () => Promise<T>): Promise<T> {
    return this.maintenance.run(kind, work);
  }

  private requireWrite(): void {
    if (!this.capabilities.write) throw new RegistryError('UNSUPPORTED', 'this registry is read-only');
  }

  private requireDelete(): void {
    if (!this.capabilities.delete) throw new RegistryError('UNSUPPORTED', 'deletes are disabled on this registry (storage.delete.enabled)');
  }
}

function blobUnknown(digest: Digest): RegistryError {
  return new RegistryError('BLOB_UNKNOWN', `blob unknown to registry: ${digest.value}`, { digest: digest.value });
}

export function paginate(all: string[], { n, last }: PageRequest): Page {
  let items = last !== undefined ? all.filter((x) => x > last) : all;
  if (n === undefined || items.length <= n) return { items };
  items = items.slice(0, n);
  return { items, next: items[items.length - 1] };
}
