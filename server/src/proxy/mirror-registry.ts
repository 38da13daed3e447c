// Mirror mode: the registry service as a read-only pull-through cache. It
// decorates the local registry (the cache) and falls back to the upstream
// inside each read, as distribution's registry/proxy does, so handlers have
// one code path for both modes.
//
// - Blobs: a cache hit is the local registry's own path. A miss starts (or
//   joins) one BlobFill per digest: one upstream GET however many clients of
//   a repository ask (a repository's failing upstream fails only its own
//   clients: see blob-fill.ts). With a fill coordinator (Redis), replicas
//   share that: one of them fetches, the others follow its fill through the
//   shared storage (SharedFill).
// - Manifests by digest are immutable: served from the cache with no upstream
//   request. By tag: revalidated with a HEAD once the tag's freshness window
//   has passed, re-fetched only when the digest moved, and served stale when
//   the upstream fails.
import type { Readable } from 'node:stream';
import { isNotFound } from '../storage/driver.ts';
import { paths } from '../storage/paths.ts';
import { type Digest, digestOf, looksLikeDigest, parseDigest, tryParseDigest } from '../registry/digest.ts';
import { isRegistryError, RegistryError } from '../registry/errors.ts';
import type { Exclusive } from '../registry/keyed-lock.ts';
import { type LocalRegistry, paginate } from '../registry/local-registry.ts';
import { MAX_MANIFEST_BYTES, parseManifest } from '../registry/manifest.ts';
import { imageRef, isValidTag } from '../registry/names.ts';
import type {
  BlobHandle,
  BlobInfo,
  Capabilities,
  ManifestResult,
  Page,
  PageRequest,
  PutManifestResult,
  ReferrersResult,
  RegistryService,
  UploadStatus,
} from '../registry/types.ts';
import { LruCache } from '../registry/lru.ts';
import type { Logger } from '../log/logger.ts';
import { AccessTracker } from './access-tracker.ts';
import { BlobFill, type Fill, FillEnded, type FillLimits, type FillSource } from './blob-fill.ts';
import type { FillCoordinator } from './fill-coordinator.ts';
import { SharedFill } from './shared-fill.ts';
import { SingleFlight } from './single-flight.ts';
import { UpstreamClient, UpstreamUnavailable } from './upstream-client.ts';
import type { Upstreams } from './upstreams.ts';

/** After an upstream failure, cached tags are served stale without asking it for this long. */
const UPSTREAM_DOWN_MS = 10_000;
/** Blob sizes remembered from the manifests served (repository and digest → size), most recent first. */
const DECLARED_SIZES = 20_000;
/** A client whose fill ended without the blob for another repository's reasons starts a new one; this many times at most. */
const FILL_STARTS = 3;

export interface MirrorOptions {
  /** How long a cached tag is trusted without asking the upstream. */
  tagFreshnessMs: number;
  logger: Logger;
  /** One upstream fetch per blob across replicas (shared/redis-fills.ts); per process when absent. */
  fills?: FillCoordinator;
  /** One upstream fetch per manifest across replicas (a lock in Redis, shared/redis-lock.ts); per process when absent. */
  manifestLocks?: Exclusive;
  /** A blob fill's deadline (proxy.filltimeout, proxy.fillminrate). */
  fillLimits?: FillLimits;
}

export class MirrorRegistry implements RegistryService {
  readonly capabilities: Capabilities = { write: false, delete: false };
  readonly clients: Map<string, UpstreamClient>;
  private readonly fills = new Map<string, Fill>();
  /** `name@digest` → the size a manifest of `name` declares: a fill reads no more than that. */
  private readonly declaredSizes = new LruCache<string, number>(DECLARED_SIZES, () => 1);
  private readonly access: AccessTracker;
  private readonly manifestFetches = new SingleFlight<Digest>();
  /** Manifests fetched and answered, still being written to the cache: `name@tag` and `name@digest` → the write. */
  private readonly manifestWrites = new Map<string, Promise<void>>();
  /** When each upstream last failed: for a short while after, cached tags are served without asking it. */
  private readonly downSince = new Map<string, number>();
  /** What this process's fills committed since the start (the UI's mirror page: how the cache grew). */
  readonly filled = { blobs: 0, bytes: 0 };
  /** The cache repository each running fill was started for (the UI's mirror page). */
  private readonly fillNames = new WeakMap<Fill, string>();

  constructor(
    readonly local: LocalRegistry,
    readonly upstreams: Upstreams,
    private readonly options: MirrorOptions,
  ) {
    this.clients = new Map(upstreams.all().map((u) => [u.host, new UpstreamClient(u, { logger: options.logger })]));
    this.access = new AccessTracker(local.driver);
  }

  canonicalName(name: string, ns: string | undefined): string {
    return this.upstreams.canonicalName(name, ns);
  }

  // ---- blobs ----

  async statBlob(name: string, digest: Digest): Promise<BlobInfo> {
    const local = await this.localBlob(name, digest);
    if (local) return local;
    const fill = this.fills.get(digest.value);
    if (fill?.size !== undefined) return { digest, size: fill.size };
    const { client, remoteName, upstream } = this.upstreamFor(name);
    const size = await this.upstreamCall(() => client.headBlob(remoteName, digest.value));
    const declared = this.declaredSizes.get(`${name}@${digest.value}`);
    if (declared !== undefined && size > declared) {
      // As a fill would refuse it: the client would not get the size it is told.
      throw new RegistryError('UNAVAILABLE', `upstream ${upstream.host}: blob ${remoteName}@${digest.value} comes as ${size} bytes where its manifest declares ${declared}`);
    }
    return { digest, size };
  }

  async getBlob(name: string, digest: Digest): Promise<BlobHandle> {
    const { client, remoteName } = this.upstreamFor(name);
    const source: FillSource = { cacheName: name, remoteName, client, declaredSize: this.declaredSizes.get(`${name}@${digest.value}`) };
    let fill: Fill | undefined;
    let size: number | undefined;
    for (let starts = 1; ; starts++) {
      // A fill of this process already running: join it without asking the storage.
      fill = this.fills.get(digest.value);
      const local = fill ? undefined : await this.localBlob(name, digest);
      if (local) {
        this.access.touch(paths.blobData(digest));
        return this.local.blobHandle(local, 'hit');
      }
      fill ??= this.fills.get(digest.value) ?? this.startFill(digest, source);
      try {
        size = await fill.join(source);
        break;
      } catch (err) {
        if (!(err instanceof FillEnded) || starts >= FILL_STARTS) throw this.mapUpstreamError(err);
        if (this.fills.get(digest.value) === fill) this.fills.delete(digest.value);
      }
    }
    if (size === undefined) {
      // No Content-Length upstream: wait for the whole blob, then serve it from the cache.
      await this.upstreamCall(() => fill.done);
      // (The fill may have run for another repository, or on another replica: link it here.)
      return this.local.blobHandle((await this.localBlob(name, digest)) ?? (await this.local.statBlob(name, digest)), 'miss');
    }
    const filling = fill;
    return {
      info: { digest, size },
      cache: 'miss',
      open: async (range) => filling.stream(range) as Readable,
      sender: filling.send ? async (range) => filling.send!(range) : undefined,
    };
  }

  private startFill(digest: Digest, source: FillSource): Fill {
    const deps = {
      driver: this.local.driver,
      blobs: this.local.blobs,
      client: source.client,
      logger: this.options.logger,
      declaredSize: source.declaredSize,
      limits: this.options.fillLimits,
    };
    const coordinator = this.options.fills;
    const started: Fill = coordinator
      ? new SharedFill(digest, source.cacheName, source.remoteName, { ...deps, coordinator })
      : new BlobFill(digest, source.cacheName, source.remoteName, deps);
    this.fills.set(digest.value, started);
    this.fillNames.set(started, source.cacheName);
    started.done
      .then(() => {
        this.filled.blobs++;
        this.filled.bytes += started.size ?? 0;
      })
      .finally(() => {
        if (this.fills.get(digest.value) === started) this.fills.delete(digest.value);
      })
      .catch(() => {});
    return started;
  }

  /** Remembers the blob sizes a manifest served from `name` declares, for the fills of its blobs. */
  private async noteDeclaredSizes(name: string, digest: Digest): Promise<void> {
    const parsed = await this.local.manifests.tryLoad(digest).catch(() => undefined);
    for (const blob of parsed?.info.blobs ?? []) this.declaredSizes.set(`${name}@${blob.digest}`, blob.size);
  }

  /** A blob already in the cache: linked in this repository, or stored for another one (blobs are shared by digest). */
  private async localBlob(name: string, digest: Digest): Promise<BlobInfo | undefined> {
    // Both questions at once: on S3 each is a round trip or two, and a miss asks both.
    const [linked, stored] = await Promise.all([this.local.blobs.hasLink(paths.layerLink(name, digest)), this.local.blobs.stat(digest)]);
    if (!stored) return undefined;
    if (!linked) await this.local.blobs.writeLink(paths.layerLink(name, digest), digest);
    await this.local.guard.noteUse(digest);
    return stored;
  }

  // ---- manifests ----

  async getManifest(name: string, reference: string, accept?: string): Promise<ManifestResult> {
    // A reference that cannot be a tag names no manifest, here as in the private
    // registry (404, as distribution answers): nothing to ask the upstream about.
    if (!looksLikeDigest(reference) && !isValidTag(reference)) {
      throw new RegistryError('MANIFEST_UNKNOWN', `manifest unknown: ${imageRef(name, reference.slice(0, 140))}`);
    }
    const result = await this.manifest(name, reference, accept);
    await this.noteDeclaredSizes(name, result.digest);
    // Last use, for pruning: the manifest in this repository, and the tag that named it.
    this.access.touch(paths.revisionLink(name, result.digest));
    if (!looksLikeDigest(reference)) this.access.touch(paths.tagCurrentLink(name, reference));
    return result;
  }

  private async manifest(name: string, reference: string, accept?: string): Promise<ManifestResult> {
    // Fetched a moment ago and still being stored: wait for that instead of fetching it again.
    await this.manifestWrites.get(`${name}@${reference}`);
    const cached = await this.cachedDigest(name, reference);
    // Served from a digest already resolved here (the cached one, or the one a fetch verified): no second lookup.
    const serve = async (digest: Digest, cache: 'hit' | 'miss') => ({
      ...(await this.local.manifests.getResolved(name, digest, reference, accept)),
      cache,
    });
    if (looksLikeDigest(reference)) {
      if (cached) return serve(cached, 'hit');
      return serve(await this.upstreamCall(() => this.fetchManifest(name, reference)), 'miss');
    }
    if (cached && (await this.isFresh(name, reference))) return serve(cached, 'hit');
    const { upstream } = this.upstreamFor(name);
    if (cached && this.recentlyDown(upstream.host)) return serve(cached, 'hit');
    try {
      if (cached && (await this.stillCurrent(name, reference, cached))) {
        // The upstream confirmed the cached digest: record that while the manifest is served.
        const [result] = await Promise.all([serve(cached, 'hit'), this.markValidated(name, reference)]);
        return result;
      }
      return await serve(await this.fetchManifest(name, reference, cached), 'miss');
    } catch (err) {
      if (err instanceof UpstreamUnavailable) this.downSince.set(upstream.host, Date.now());
      if (!cached || !(err instanceof UpstreamUnavailable)) throw this.mapUpstreamError(err);
      this.options.logger.warn(
        { repo: name, tag: reference, digest: cached.value, err: err.message },
        'upstream unavailable; serving the cached manifest (stale-if-error)',
      );
      return serve(cached, 'hit');
    }
  }

  /**
   * Asks the upstream whether a cached tag still names `cached`. HEAD does not count
   * against Docker Hub's pull limit; a GET follows only when the tag moved. No retries:
   * if the upstream is struggling, the cached copy is served at once.
   */
  private async stillCurrent(name: string, tag: string, cached: Digest): Promise<boolean> {
    const { client, remoteName } = this.upstreamFor(name);
    const head = await client.headManifest(remoteName, tag, 0);
    return head.digest === cached.value;
  }

  /**
   * Fetches a manifest from the upstream and verifies it. The caller answers from
   * the verified bytes at once; storing them (and the tag) in the cache goes on
   * behind the answer, as a blob fill's commit does: on S3 that is four or five
   * requests one after another, which the client need not wait for. `stale`: the
   * digest the cache holds for a tag the upstream moved.
   */
  private fetchManifest(name: string, reference: string, stale?: Digest): Promise<Digest> {
    return this.manifestFetches.run(`${name}@${reference}`, async () => {
      const locks = this.options.manifestLocks;
      if (locks) return this.fetchOnceAcrossReplicas(locks, name, reference, stale);
      return (await this.fetchAndStore(name, reference)).digest;
    });
  }

  /**
   * fetchAndStore() under a lock the replicas share, held until the manifest is stored:
   * a replica that waited for it finds the manifest in the shared cache instead of
   * fetching it again (Docker Hub counts every manifest GET as a pull).
   */
  private fetchOnceAcrossReplicas(locks: Exclusive, name: string, reference: string, stale?: Digest): Promise<Digest> {
    return new Promise<Digest>((resolve, reject) => {
      let locked = false;
      locks
        .run(`manifest:${name}@${reference}`, async () => {
          locked = true;
          const cached = await this.cachedDigest(name, reference);
          if (cached && cached.value !== stale?.value) return resolve(cached);
          const fetched = await this.fetchAndStore(name, reference);
          resolve(fetched.digest);
          await fetched.stored;
        })
        .catch((err: Error) => {
          if (locked) return reject(err);
          // The lock is out of reach (Redis down): this replica fetches on its own.
          this.options.logger.warn({ repo: name, reference, err: err.message }, 'could not take the shared manifest lock; fetching without it');
          this.fetchAndStore(name, reference).then((f) => resolve(f.digest), reject);
        });
    });
  }

  /** Fetches and verifies a manifest; `stored` settles once it is in the cache (or failed to get there, logged). */
  private async fetchAndStore(name: string, reference: string): Promise<{ digest: Digest; stored: Promise<void> }> {
    const { client, remoteName } = this.upstreamFor(name);
    const fetched = await client.getManifest(remoteName, reference, MAX_MANIFEST_BYTES);
    const byDigest = looksLikeDigest(reference);
    let claimed: Digest | undefined;
    if (byDigest) claimed = parseDigest(reference);
    else if (fetched.digest !== undefined) {
      // The upstream's header, not the client's input: garbage there is an upstream failure.
      claimed = tryParseDigest(fetched.digest);
      if (!claimed) {
        throw new UpstreamUnavailable(
          this.upstreamFor(name).upstream.host,
          `manifest ${imageRef(remoteName, reference)} came with an invalid Docker-Content-Digest ${JSON.stringify(fetched.digest.slice(0, 80))}; not cached`,
        );
      }
    }
    const actual = digestOf(fetched.body, claimed?.algorithm ?? 'sha256');
    if (claimed && claimed.hex !== actual.hex) {
      throw new UpstreamUnavailable(
        this.upstreamFor(name).upstream.host,
        `manifest ${imageRef(remoteName, reference)} does not match its digest ${claimed.value}; not cached`,
      );
    }
    let info;
    try {
      info = parseManifest(fetched.body, fetched.mediaType);
    } catch (err) {
      throw new UpstreamUnavailable(this.upstreamFor(name).upstream.host, `invalid manifest ${imageRef(remoteName, reference)}: ${(err as Error).message}`);
    }
    this.local.manifests.remember(actual, fetched.body, info);
    const stored = this.storeBehind(name, [reference, actual.value], () =>
      this.local.manifests.put(name, reference, info.mediaType, fetched.body, { verifyReferences: false, overwrite: true }),
    );
    return { digest: actual, stored };
  }

  /** Runs a manifest's cache write; requests for `references` in `name` wait for it until it ends. */
  private storeBehind(name: string, references: string[], write: () => Promise<unknown>): Promise<void> {
    const keys = [...new Set(references)].map((r) => `${name}@${r}`);
    const stored = write().then(
      () => undefined,
      (err: Error) => {
        // Nothing is lost: the next request for it finds it missing and fetches it again.
        this.options.logger.warn({ repo: name, reference: references[0], err: err.message }, 'could not store a fetched manifest in the cache');
      },
    );
    for (const key of keys) this.manifestWrites.set(key, stored);
    void stored.finally(() => {
      for (const key of keys) if (this.manifestWrites.get(key) === stored) this.manifestWrites.delete(key);
    });
    return stored;
  }

  private recentlyDown(host: string): boolean {
    const since = this.downSince.get(host);
    if (since === undefined) return false;
    if (Date.now() - since < UPSTREAM_DOWN_MS) return true;
    this.downSince.delete(host);
    return false;
  }

  private async cachedDigest(name: string, reference: string): Promise<Digest | undefined> {
    try {
      return await this.local.manifests.resolve(name, reference);
    } catch (err) {
      if (isRegistryError(err, 'MANIFEST_UNKNOWN')) return undefined;
      throw err;
    }
  }

  private async isFresh(name: string, tag: string): Promise<boolean> {
    if (this.options.tagFreshnessMs <= 0) return false;
    try {
      const info = await this.local.driver.stat(paths.tagCurrentLink(name, tag));
      return Date.now() - info.modTime.getTime() < this.options.tagFreshnessMs;
    } catch (err) {
      if (isNotFound(err)) return false;
      throw err;
    }
  }

  /**
   * The tag link's mtime records when the upstream last confirmed it: what isFresh()
   * goes by. With proxy.tagfreshness 0 nothing does, so nothing is written.
   */
  private async markValidated(name: string, tag: string): Promise<void> {
    if (this.options.tagFreshnessMs <= 0) return;
    await this.local.driver.touch(paths.tagCurrentLink(name, tag), { modified: new Date() }).catch(() => {});
  }

  // ---- listings: answered from the cache ----

  async listTags(name: string, page: PageRequest): Promise<Page> {
    await this.manifestsStored(name);
    return this.local.listTags(name, page);
  }

  async referrers(name: string, subject: Digest, artifactType?: string): Promise<ReferrersResult> {
    await this.manifestsStored(name);
    return this.local.referrers(name, subject, artifactType);
  }

  /** Names as clients pull them (Upstreams.pullName), not as they are stored; paged in their own order. */
  async catalog(page: PageRequest): Promise<Page> {
    await this.manifestsStored();
    const names = (await this.local.repositories()).map((name) => this.upstreams.pullName(name));
    return paginate(names.sort(), page);
  }

  /** Waits for the manifests answered but not stored yet (of one repository, or all): listings show what was served. */
  private async manifestsStored(name?: string): Promise<void> {
    const prefix = name === undefined ? '' : `${name}@`;
    await Promise.all([...this.manifestWrites].filter(([key]) => key.startsWith(prefix)).map(([, stored]) => stored));
  }

  // ---- writes: a mirror takes none ----

  deleteBlob(): Promise<void> {
    return readOnly();
  }
  startUpload(): Promise<UploadStatus> {
    return readOnly();
  }
  mountBlob(): Promise<BlobInfo | undefined> {
    return readOnly();
  }
  uploadStatus(): Promise<UploadStatus> {
    return readOnly();
  }
  appendUpload(): Promise<UploadStatus> {
    return readOnly();
  }
  finishUpload(): Promise<BlobInfo> {
    return readOnly();
  }
  cancelUpload(): Promise<void> {
    return readOnly();
  }
  putManifest(): Promise<PutManifestResult> {
    return readOnly();
  }
  deleteManifest(): Promise<void> {
    return readOnly();
  }

  // ---- helpers ----

  private upstreamFor(name: string) {
    const { upstream, remoteName } = this.upstreams.resolve(name);
    const client = this.clients.get(upstream.host);
    if (!client) throw new Error(`no client for upstream ${upstream.host}`);
    return { upstream, client, remoteName };
  }

  /** Runs an upstream call, turning "the upstream is down" into the API's 503. */
  private async upstreamCall<T>(call: () => Promise<T>): Promise<T> {
    try {
      return await call();
    } catch (err) {
      throw this.mapUpstreamError(err);
    }
  }

  private mapUpstreamError(err: unknown): unknown {
    if (err instanceof UpstreamUnavailable) return new RegistryError('UNAVAILABLE', err.message);
    if (err instanceof RegistryError) return err;
    if (err instanceof Error) return new RegistryError('UNAVAILABLE', `upstream fetch failed: ${err.message}`);
    return err;
  }

  /**
   * Resolves once every cache fill and manifest write running now has ended (stored or failed).
   * A client has its last byte as soon as the bytes are verified, a moment before
   * the commit (a manifest is answered before it is stored), and last-use times
   * are written a few seconds later; this is for
   * whoever needs the cache itself settled (tests, tools), and writes those times now.
   */
  async settled(): Promise<void> {
    while (this.fills.size > 0 || this.manifestWrites.size > 0) {
      await Promise.allSettled([...this.fills.values()].map((f) => f.done));
      await Promise.all(this.manifestWrites.values());
    }
    await this.flushAccessTimes();
  }

  /** The fills running in this process: the repository that started each, its size once known, the bytes received so far. */
  fillsInFlight(): Array<{ digest: string; repository?: string; size?: number; received?: number }> {
    return [...this.fills].map(([digest, fill]) => {
      const progress = fill as { available?: number; written?: number };
      return { digest, repository: this.fillNames.get(fill), size: fill.size, received: progress.available ?? progress.written };
    });
  }

  /** Each upstream as this process has seen it, asking none of them; `downSince` while cached tags are served without asking it. */
  upstreamStates(): Array<{ host: string; requests: number; errors: number; rateLimitRemaining?: number; downSince?: string }> {
    return [...this.clients.values()].map((c) => {
      const host = c.upstream.host;
      const down = this.recentlyDown(host) ? this.downSince.get(host) : undefined;
      return { host, ...c.stats, downSince: down === undefined ? undefined : new Date(down).toISOString() };
    });
  }

  /** Writes the last-use times still queued (for pruning, which goes by them). */
  flushAccessTimes(): Promise<void> {
    return this.access.flush();
  }

  async close(): Promise<void> {
    // Fills whose clients are served may still be committing, and last-use times may wait to be
    // written: give them a moment to finish (an unfinished fill is cleaned up like any abandoned upload).
    await Promise.race([this.settled(), new Promise((resolve) => setTimeout(resolve, CLOSE_GRACE_MS).unref())]);
    await Promise.all([...this.clients.values()].map((c) => c.close()));
  }
}

/** How long close() waits for running cache fills. */
const CLOSE_GRACE_MS = 5000;

function readOnly(): Promise<never> {
  return Promise.reject(new RegistryError('UNSUPPORTED', 'this registry is a read-only mirror'));
}
