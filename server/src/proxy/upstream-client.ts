// HTTP client for one upstream registry (undici): Docker token auth and
// Basic auth from the upstream's challenge, tokens cached per scope until they
// expire (at most maxTokens of them, least recently used evicted), redirects to
// blob storage followed (without our credentials when they leave the
// registry's origin), retries with backoff on 5xx and connection errors, 429
// with Retry-After honoured, and Docker Hub's ratelimit-remaining recorded.
//
// What a hostile upstream (or whatever it redirects to) cannot make it do:
// send the upstream credentials to a realm other than the one the upstream's
// own /v2/ challenge names (https unless the upstream itself is http), learn
// anything from a 401 of a host a redirect led to, reach internal addresses
// other than the upstream's own (egress-guard.ts), or have the connection
// errors of redirect targets repeated to clients (they are logged).
import type { Readable } from 'node:stream';
import { setTimeout as delay } from 'node:timers/promises';
import type { Dispatcher } from 'undici';
import { RegistryError } from '../registry/errors.ts';
import { LruCache } from '../registry/lru.ts';
import { MediaTypes } from '../registry/manifest.ts';
import { imageRef } from '../registry/names.ts';
import type { Logger } from '../log/logger.ts';
import { parseChallenges } from './challenge.ts';
import { EgressPolicy, EgressRefused, guardedConnector, type Resolver } from './egress-guard.ts';
import { Agent, request } from './undici-parts.ts';
import type { Upstream } from './upstreams.ts';

/** The upstream could not answer (down, erroring, rate limited, refusing our credentials). */
export class UpstreamUnavailable extends Error {
  constructor(
    readonly host: string,
    message: string,
  ) {
    super(`upstream ${host}: ${message}`);
    this.name = 'UpstreamUnavailable';
  }
}

export interface UpstreamStats {
  requests: number;
  errors: number;
  /** Docker Hub's ratelimit-remaining, when the upstream sends it. */
  rateLimitRemaining?: number;
}

export interface ManifestHead {
  digest?: string;
  mediaType?: string;
  size?: number;
}

export interface FetchedManifest {
  body: Buffer;
  mediaType?: string;
  digest?: string;
}

export interface FetchedBlob {
  size?: number;
  body: Readable;
}

export interface UpstreamClientOptions {
  logger: Logger;
  retries?: number;
  /** Base backoff; doubled per attempt, with jitter. */
  backoffMs?: number;
  /** Longest Retry-After we wait for before giving up (then stale-if-error takes over). */
  maxRetryAfterMs?: number;
  dispatcher?: Dispatcher;
  /** Most tokens kept (one per repository scope); the least recently used go first. */
  maxTokens?: number;
  /** How host names are resolved for the egress check (tests play DNS with it); the system resolver by default. */
  resolver?: Resolver;
}

const MANIFEST_ACCEPT = [MediaTypes.ociIndex, MediaTypes.ociManifest, MediaTypes.dockerManifestList, MediaTypes.dockerManifest].join(', ');
const MAX_REDIRECTS = 5;
const RETRYABLE = new Set([500, 502, 503, 504]);
/** Anonymous pulls of made-up names must not grow the cache without bound. */
const DEFAULT_MAX_TOKENS = 1000;

interface Token {
  value: string;
  expires: number;
}

type Scheme = { kind: 'none' } | { kind: 'basic' } | { kind: 'bearer'; realm: string; service?: string };

/** A redirect target failed: the detail is logged, never shown to clients (it would tell which internal ports are open). */
class RedirectTargetFailed extends Error {
  constructor() {
    super('a host the upstream redirected to could not be reached');
    this.name = 'RedirectTargetFailed';
  }
}

interface Followed {
  res: Dispatcher.ResponseData;
  /** The answer came from a host a redirect led to, not from the configured upstream. */
  foreign: boolean;
}

export class UpstreamClient {
  readonly stats: UpstreamStats = { requests: 0, errors: 0 };
  private scheme: Scheme = { kind: 'none' };
  /** Whether the scheme was learned from the upstream's /v2/ challenge yet; the pending probe. */
  private discovered = false;
  private discovering: Promise<void> | undefined;
  private readonly origin: string;
  private readonly tokens: LruCache<string, Token>;
  private readonly dispatcher: Dispatcher;
  private readonly retries: number;
  private readonly backoffMs: number;
  private readonly maxRetryAfterMs: number;

  constructor(
    readonly upstream: Upstream,
    private readonly options: UpstreamClientOptions,
  ) {
    this.origin = new URL(upstream.url).origin;
    const egress = new EgressPolicy(upstream.url, upstream.internalTargets, options.resolver);
    this.dispatcher =
      options.dispatcher ??
      new Agent({
        connections: 64,
        keepAliveTimeout: 30_000,
        headersTimeout: 30_000,
        bodyTimeout: 120_000,
        connect: guardedConnector(egress, { timeout: 10_000 }),
      });
    this.retries = options.retries ?? 3;
    this.backoffMs = options.backoffMs ?? 200;
    this.maxRetryAfterMs = options.maxRetryAfterMs ?? 10_000;
    this.tokens = new LruCache(Math.max(1, options.maxTokens ?? DEFAULT_MAX_TOKENS), () => 1);
  }

  /** Tokens cached now (for the metrics gauge). */
  get tokenCacheSize(): number {
    return this.tokens.size;
  }

  /** `retries` overrides the client's default (revalidating a cached tag needs no retries: stale is served instead). */
  async headManifest(remote: string, reference: string, retries = this.retries): Promise<ManifestHead> {
    const res = await this.send('HEAD', `/v2/${remote}/manifests/${reference}`, remote, { accept: MANIFEST_ACCEPT }, retries);
    await res.body.dump();
    this.notFound(res.statusCode, 'MANIFEST_UNKNOWN', remote, reference);
    this.expectOk(res.statusCode);
    const length = header(res.headers, 'content-length');
    return {
      digest: header(res.headers, 'docker-content-digest'),
      mediaType: header(res.headers, 'content-type')?.split(';')[0].trim(),
      size: length !== undefined ? Number(length) : undefined,
    };
  }

  async getManifest(remote: string, reference: string, maxBytes: number): Promise<FetchedManifest> {
    const res = await this.send('GET', `/v2/${remote}/manifests/${reference}`, remote, { accept: MANIFEST_ACCEPT });
    if (this.isNotFound(res.statusCode)) {
      await res.body.dump();
      this.notFound(res.statusCode, 'MANIFEST_UNKNOWN', remote, reference);
    }
    if (res.statusCode !== 200) {
      await res.body.dump();
      this.expectOk(res.statusCode);
    }
    const chunks: Buffer[] = [];
    let total = 0;
    for await (const chunk of res.body) {
      total += (chunk as Buffer).length;
      if (total > maxBytes) {
        res.body.destroy();
        throw new UpstreamUnavailable(this.upstream.host, `manifest ${imageRef(remote, reference)} is larger than ${maxBytes} bytes`);
      }
      chunks.push(chunk as Buffer);
    }
    return {
      body: Buffer.concat(chunks),
      mediaType: header(res.headers, 'content-type')?.split(';')[0].trim(),
      digest: header(res.headers, 'docker-content-digest'),
    };
  }

  async headBlob(remote: string, digest: string): Promise<number> {
    const res = await this.send('HEAD', `/v2/${remote}/blobs/${digest}`, remote, {});
    await res.body.dump();
    this.notFound(res.statusCode, 'BLOB_UNKNOWN', remote, digest);
    this.expectOk(res.statusCode);
    const length = header(res.headers, 'content-length');
    if (length === undefined) throw new UpstreamUnavailable(this.upstream.host, `no Content-Length for blob ${digest}`);
    return Number(length);
  }

  /**
   * `signal` cancels the request wherever it is (waiting for a token, an answer, a retry's
   * backoff, or reading the body): a fill drops the requests that lost to another
   * repository's answer, which would otherwise hold a connection until a timeout.
   */
  async getBlob(remote: string, digest: string, signal?: AbortSignal): Promise<FetchedBlob> {
    const res = await this.send('GET', `/v2/${remote}/blobs/${digest}`, remote, {}, this.retries, signal);
    if (res.statusCode !== 200) {
      await res.body.dump();
      this.notFound(res.statusCode, 'BLOB_UNKNOWN', remote, digest);
      this.expectOk(res.statusCode);
    }
    const length = header(res.headers, 'content-length');
    return { size: length !== undefined ? Number(length) : undefined, body: res.body };
  }

  /** Cheap reachability check for readiness probes. */
  async ping(): Promise<boolean> {
    try {
      const res = await request(`${this.upstream.url}/v2/`, { method: 'GET', dispatcher: this.dispatcher });
      await res.body.dump();
      return res.statusCode === 200 || res.statusCode === 401;
    } catch {
      return false;
    }
  }

  // ---- transport ----

  private isNotFound(status: number): boolean {
    // Docker Hub answers 401/403 (after a valid token) for repositories that do not exist.
    return status === 404 || status === 401 || status === 403;
  }

  private notFound(status: number, code: 'MANIFEST_UNKNOWN' | 'BLOB_UNKNOWN', remote: string, ref: string): void {
    if (this.isNotFound(status)) {
      throw new RegistryError(code, `${code === 'BLOB_UNKNOWN' ? 'blob' : 'manifest'} unknown upstream: ${this.upstream.host}/${imageRef(remote, ref.slice(0, 80))}`);
    }
  }

  private expectOk(status: number): void {
    if (status < 200 || status >= 300) {
      this.stats.errors++;
      throw new UpstreamUnavailable(this.upstream.host, `unexpected status ${status}`);
    }
  }

  /** One logical request: auth, redirects, retries. Resolves with the final response (body unread). */
  private async send(
    method: 'GET' | 'HEAD',
    path: string,
    remote: string,
    headers: Record<string, string>,
    retries = this.retries,
    signal?: AbortSignal,
  ): Promise<Dispatcher.ResponseData> {
    const scope = `repository:${remote}:pull`;
    let authRetried = false;
    for (let attempt = 0; ; attempt++) {
      signal?.throwIfAborted();
      let followed: Followed;
      try {
        if (!this.discovered) await this.discover();
        followed = await this.follow(method, `${this.upstream.url}${path}`, { ...headers, ...(await this.authHeader(scope, signal)) }, signal);
      } catch (err) {
        // Cancelled by the caller: not the upstream's failure, and nothing to retry.
        signal?.throwIfAborted();
        if (err instanceof UpstreamUnavailable) throw err;
        this.stats.errors++;
        if (attempt < retries) {
          await sleep(this.backoff(attempt), signal);
          continue;
        }
        throw new UpstreamUnavailable(this.upstream.host, (err as Error).message);
      }
      const { res, foreign } = followed;
      this.recordRateLimit(res.headers);
      if (res.statusCode === 401 && foreign) {
        // Not the upstream's word: a redirect target has no say in where our credentials go.
        await res.body.dump();
        this.stats.errors++;
        throw new UpstreamUnavailable(this.upstream.host, 'a host the upstream redirected to answered 401');
      }
      if (res.statusCode === 401 && !authRetried) {
        authRetried = true;
        let retry: boolean;
        try {
          retry = await this.relearn(res.headers, scope);
        } catch (err) {
          await res.body.dump();
          if (err instanceof UpstreamUnavailable) throw err;
          this.stats.errors++;
          throw new UpstreamUnavailable(this.upstream.host, (err as Error).message);
        }
        if (retry) {
          await res.body.dump();
          attempt--;
          continue;
        }
      }
      if (res.statusCode === 401 && this.scheme.kind !== 'bearer') {
        // With Bearer auth a 401 after a valid token means "no such repository"
        // (Docker Hub's way); with Basic or no auth it means our credentials are wrong or missing.
        await res.body.dump();
        this.stats.errors++;
        throw new UpstreamUnavailable(
          this.upstream.host,
          this.upstream.username ? 'the upstream refused our credentials' : 'the upstream requires credentials (proxy.username/password)',
        );
      }
      if (RETRYABLE.has(res.statusCode) && attempt < retries) {
        await res.body.dump();
        this.stats.errors++;
        await sleep(this.backoff(attempt), signal);
        continue;
      }
      if (res.statusCode === 429) {
        await res.body.dump();
        this.stats.errors++;
        const wait = retryAfterMs(header(res.headers, 'retry-after')) ?? this.backoff(attempt);
        if (attempt < retries && wait <= this.maxRetryAfterMs) {
          this.options.logger.warn({ upstream: this.upstream.host, waitMs: wait }, 'upstream rate limited us; waiting');
          await sleep(wait, signal);
          continue;
        }
        throw new UpstreamUnavailable(this.upstream.host, 'rate limited (429)');
      }
      return res;
    }
  }

  private async follow(method: 'GET' | 'HEAD', url: string, headers: Record<string, string>, signal?: AbortSignal): Promise<Followed> {
    let current = url;
    for (let i = 0; i <= MAX_REDIRECTS; i++) {
      this.stats.requests++;
      const target = new URL(current);
      const foreign = target.origin !== this.origin;
      const sent = foreign ? withoutAuth(headers) : headers;
      let res: Dispatcher.ResponseData;
      try {
        res = await request(current, { method, headers: sent, dispatcher: this.dispatcher, signal });
      } catch (err) {
        if (i === 0 || signal?.aborted) throw err;
        // Where a redirect led, and why it failed, is for our log only.
        const where = `${target.protocol}//${target.host}`;
        if (err instanceof EgressRefused) {
          this.options.logger.warn({ upstream: this.upstream.host, target: where, address: err.address }, 'refused a redirect to an internal address');
          this.stats.errors++;
          throw new UpstreamUnavailable(this.upstream.host, 'it redirected to an address this mirror does not fetch from');
        }
        this.options.logger.warn({ upstream: this.upstream.host, target: where, err: (err as Error).message }, 'a redirect target of the upstream failed');
        throw new RedirectTargetFailed();
      }
      const location = header(res.headers, 'location');
      if (res.statusCode >= 300 && res.statusCode < 400 && location) {
        await res.body.dump();
        let next: URL;
        try {
          next = new URL(location, current);
        } catch {
          throw new UpstreamUnavailable(this.upstream.host, 'it redirected to an invalid URL');
        }
        if (next.protocol !== 'http:' && next.protocol !== 'https:') {
          throw new UpstreamUnavailable(this.upstream.host, 'it redirected to a URL that is not http(s)');
        }
        current = next.toString();
        continue;
      }
      return { res, foreign };
    }
    throw new UpstreamUnavailable(this.upstream.host, 'too many redirects');
  }

  private async authHeader(scope: string, signal?: AbortSignal): Promise<Record<string, string>> {
    const { username, password } = this.upstream;
    switch (this.scheme.kind) {
      case 'basic':
        return username ? { authorization: `Basic ${Buffer.from(`${username}:${password ?? ''}`).toString('base64')}` } : {};
      case 'bearer': {
        const token = await this.token(this.scheme, scope, signal);
        return token ? { authorization: `Bearer ${token}` } : {};
      }
      default:
        return {};
    }
  }

  /**
   * After a 401 from the upstream: true when retrying can help. A challenge
   * naming the realm we already use means our token ran out (or lacks this
   * scope); anything else is checked against the upstream's /v2/ challenge,
   * so a realm named by one repository's answer is never adopted for all.
   */
  private async relearn(headers: Dispatcher.ResponseData['headers'], scope: string): Promise<boolean> {
    const bearer = parseChallenges(headers['www-authenticate']).find((c) => c.scheme === 'bearer');
    const current = this.scheme;
    if (bearer && current.kind === 'bearer' && bearer.params.realm === current.realm) {
      this.tokens.delete(scope);
      return true;
    }
    this.discovered = false;
    await this.discover();
    const now = this.scheme;
    if (now.kind === 'bearer') {
      this.tokens.delete(scope);
      return true;
    }
    return now.kind === 'basic' && current.kind !== 'basic';
  }

  /** Learns how to authenticate from the upstream's own /v2/ challenge (one probe at a time). */
  private discover(): Promise<void> {
    this.discovering ??= this.probe().finally(() => {
      this.discovering = undefined;
    });
    return this.discovering;
  }

  private async probe(): Promise<void> {
    // Unreachable now: the request that needed it fails (and is retried) with this error.
    this.stats.requests++;
    const res = await request(`${this.upstream.url}/v2/`, { method: 'GET', dispatcher: this.dispatcher });
    await res.body.dump();
    // An erroring /v2/ says nothing about auth: asked again when a request meets a 401.
    if (res.statusCode >= 500 || res.statusCode === 429) return;
    this.discovered = true;
    if (res.statusCode !== 401) {
      this.scheme = { kind: 'none' };
      return;
    }
    const challenges = parseChallenges(res.headers['www-authenticate']);
    const bearer = challenges.find((c) => c.scheme === 'bearer' && c.params.realm);
    if (bearer) {
      const problem = this.realmProblem(bearer.params.realm);
      if (problem) {
        this.options.logger.warn({ upstream: this.upstream.host, realm: bearer.params.realm.slice(0, 200) }, `not using the upstream's token realm: ${problem}`);
        this.scheme = { kind: 'none' };
        throw new UpstreamUnavailable(this.upstream.host, `its token realm ${problem}`);
      }
      this.scheme = { kind: 'bearer', realm: bearer.params.realm, service: bearer.params.service };
    } else if (challenges.some((c) => c.scheme === 'basic') && this.upstream.username) {
      this.scheme = { kind: 'basic' };
    } else {
      this.scheme = { kind: 'none' };
    }
  }

  /** Why a realm may not be sent our credentials (or asked for tokens at all), if it may not. */
  private realmProblem(realm: string): string | undefined {
    let url: URL;
    try {
      url = new URL(realm);
    } catch {
      return 'is not a URL';
    }
    if (url.protocol === 'https:') return undefined;
    if (url.protocol === 'http:' && new URL(this.upstream.url).protocol === 'http:') return undefined;
    return 'is not https';
  }

  private async token(scheme: Extract<Scheme, { kind: 'bearer' }>, scope: string, signal?: AbortSignal): Promise<string | undefined> {
    const cached = this.tokens.get(scope);
    if (cached && cached.expires > Date.now()) return cached.value;
    if (cached) this.tokens.delete(scope);
    const url = new URL(scheme.realm);
    if (scheme.service) url.searchParams.set('service', scheme.service);
    url.searchParams.set('scope', scope);
    const headers: Record<string, string> = {};
    const { username, password } = this.upstream;
    if (username) headers.authorization = `Basic ${Buffer.from(`${username}:${password ?? ''}`).toString('base64')}`;
    let res: Dispatcher.ResponseData;
    try {
      this.stats.requests++;
      res = await request(url, { method: 'GET', headers, dispatcher: this.dispatcher, signal });
    } catch (err) {
      signal?.throwIfAborted();
      this.stats.errors++;
      throw new UpstreamUnavailable(this.upstream.host, `token endpoint unreachable: ${(err as Error).message}`);
    }
    if (res.statusCode !== 200) {
      await res.body.dump();
      this.stats.errors++;
      throw new UpstreamUnavailable(this.upstream.host, `token endpoint answered ${res.statusCode}${username ? ' (check the upstream credentials)' : ''}`);
    }
    const doc = (await res.body.json()) as { token?: string; access_token?: string; expires_in?: number };
    const value = doc.token ?? doc.access_token;
    if (!value) throw new UpstreamUnavailable(this.upstream.host, 'token endpoint returned no token');
    // Docker's token spec: expires_in defaults to 60 s. Renew 10 s early.
    const lifetime = Math.max((doc.expires_in ?? 60) - 10, 5) * 1000;
    this.tokens.set(scope, { value, expires: Date.now() + lifetime });
    return value;
  }

  private recordRateLimit(headers: Dispatcher.ResponseData['headers']): void {
    const remaining = header(headers, 'ratelimit-remaining');
    if (remaining === undefined) return;
    const n = Number.parseInt(remaining, 10);
    if (Number.isFinite(n)) {
      this.stats.rateLimitRemaining = n;
      if (n < 10) this.options.logger.warn({ upstream: this.upstream.host, remaining: n }, 'upstream pull limit nearly used up');
    }
  }

  private backoff(attempt: number): number {
    const base = this.backoffMs * 2 ** attempt;
    return base / 2 + Math.random() * base;
  }

  async close(): Promise<void> {
    if (!this.options.dispatcher) await this.dispatcher.close();
  }
}

function header(headers: Dispatcher.ResponseData['headers'], name: string): string | undefined {
  const v = headers[name];
  return Array.isArray(v) ? v[0] : v;
}

function withoutAuth(headers: Record<string, string>): Record<string, string> {
  const { authorization: _drop, ...rest } = headers;
  return rest;
}

function retryAfterMs(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  if (/^\d+$/.test(value.trim())) return Number(value) * 1000;
  const at = Date.parse(value);
  return Number.isNaN(at) ? undefined : Math.max(0, at - Date.now());
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return delay(ms, undefined, { signal });
}
