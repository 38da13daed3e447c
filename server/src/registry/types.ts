// The service interface every handler talks to. The local registry
// implements it over storage; the mirror (proxy/) decorates it with an
// upstream. Nothing here knows about HTTP.
import type { Readable, Writable } from 'node:stream';
import type { AppendSourceOptions, ByteRange } from '../storage/driver.ts';
import type { BlobInfo } from './blob-store.ts';
import type { Digest } from './digest.ts';
import type { Descriptor } from './manifest.ts';

export type { BlobInfo } from './blob-store.ts';

export interface Capabilities {
  /** Pushes (uploads, manifest PUT) are possible. */
  readonly write: boolean;
  /** Deletes of manifests, tags and blobs are enabled (storage.delete.enabled). */
  readonly delete: boolean;
}

export interface UploadStatus {
  readonly name: string;
  readonly id: string;
  /** Bytes received so far. */
  readonly offset: number;
}

/** freeChunks: the body is an HTTP request's, whose chunks nobody else holds (storage may free each once stored). */
export interface AppendOptions extends AppendSourceOptions {
  /** From Content-Range: where the client thinks this chunk starts and ends (inclusive). */
  readonly range?: ByteRange;
  /** From Content-Length, when the client sent one. */
  readonly contentLength?: number;
}

export interface ManifestResult {
  readonly digest: Digest;
  readonly mediaType: string;
  readonly body: Buffer;
  readonly subject?: Digest;
  /** Mirror only: served from the cache, or fetched from the upstream for this request. */
  readonly cache?: 'hit' | 'miss';
}

export interface PutManifestResult {
  readonly digest: Digest;
  readonly subject?: Digest;
}

export interface PageRequest {
  readonly n?: number;
  readonly last?: string;
}

export interface Page {
  readonly items: string[];
  /** Set when there may be more: the `last` value for the next page. */
  readonly next?: string;
}

export interface ReferrersResult {
  readonly manifests: Descriptor[];
  readonly filtersApplied: string[];
}

export interface BlobHandle {
  readonly info: BlobInfo;
  /** Served from local storage ('hit') or fetched from an upstream ('miss'); mirror only. */
  readonly cache?: 'hit' | 'miss';
  /** Opens the bytes (or one range of them). */
  open(range?: ByteRange): Promise<Readable>;
  /** Faster alternative to open() when the storage has one (see StorageDriver.sender). */
  sender?(range?: ByteRange): Promise<(dest: Writable) => Promise<void>>;
  /** storage.redirect: a URL where the client GETs the bytes from the storage directly, instead of through us. */
  redirect?(): Promise<string>;
}

export interface RegistryService {
  readonly capabilities: Capabilities;

  /**
   * The name under which the service stores a repository. The mirror maps
   * containerd's ?ns=<host> and a leading registry host onto its cache names;
   * the local registry uses names as they are.
   */
  canonicalName?(name: string, ns: string | undefined): string;

  statBlob(name: string, digest: Digest): Promise<BlobInfo>;
  /** For GET: the blob's size and a way to read it (a mirror may start filling its cache here). */
  getBlob(name: string, digest: Digest): Promise<BlobHandle>;
  deleteBlob(name: string, digest: Digest): Promise<void>;

  startUpload(name: string): Promise<UploadStatus>;
  /** Links a blob from another repository; undefined when it cannot (then an upload is started instead). */
  mountBlob(name: string, from: string, digest: Digest): Promise<BlobInfo | undefined>;
  uploadStatus(name: string, id: string): Promise<UploadStatus>;
  appendUpload(name: string, id: string, body: Readable, options: AppendOptions): Promise<UploadStatus>;
  finishUpload(
    name: string,
    id: string,
    digest: Digest,
    body: Readable | undefined,
    options: AppendOptions,
  ): Promise<BlobInfo>;
  cancelUpload(name: string, id: string): Promise<void>;

  getManifest(name: string, reference: string, accept?: string): Promise<ManifestResult>;
  putManifest(name: string, reference: string, contentType: string | undefined, body: Buffer): Promise<PutManifestResult>;
  deleteManifest(name: string, reference: string): Promise<void>;

  listTags(name: string, page: PageRequest): Promise<Page>;
  referrers(name: string, subject: Digest, artifactType?: string): Promise<ReferrersResult>;
  catalog(page: PageRequest): Promise<Page>;
}
