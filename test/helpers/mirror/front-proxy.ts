// An HTTP front for a real upstream registry, on 127.0.0.1, that changes what
// the mirror sees in the ways the tests need:
//
// - tokenAuth: Docker's token flow, as Docker Hub does it. Registry requests
//   without a valid `Authorization: Bearer <token>` for their repository get
//   401 with `WWW-Authenticate: Bearer realm="<this>/token",service=...,scope=
//   repository:<name>:pull`; `GET /token?service=&scope=` hands out tokens
//   (optionally only to Basic-authenticated users). Token requests are counted.
// - corrupt: flips one byte in the middle of every blob body it forwards
//   (same length, so only the digest check can notice).
// - corruptManifests: the same for manifest bodies.
// - manifestDigestHeader: replaces the Docker-Content-Digest header of
//   manifest answers (HEAD and GET) with this value, garbage included.
// - holdBlobsAfter(n): forwards the first n bytes of each blob body, then
//   waits for release() before sending the rest (to disconnect a client in
//   the middle of a cache fill, deterministically).
// - failNext(n, status, headers): answers the next n registry requests with
//   that status (503s to retry, 429 with Retry-After).
// - redirectBlobsTo: answers blob GETs with a 307 to another origin (as
//   Docker Hub redirects to its CDN), e.g. a second FrontProxy.
import { randomUUID } from 'node:crypto';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Transform, type TransformCallback } from 'node:stream';

export interface TokenAuthOptions {
  /** The service name in the challenge (and required in token requests). */
  service?: string;
  /** user → password: token requests need Basic credentials of one of them. */
  users?: Record<string, string>;
  /** expires_in of issued tokens, seconds. */
  expiresIn?: number;
}

export interface FrontProxyOptions {
  /** Base URL of the registry behind (http://127.0.0.1:PORT). */
  target: string;
  tokenAuth?: TokenAuthOptions;
}

export interface TokenRequest {
  service: string | null;
  scopes: string[];
  user?: string;
  granted: boolean;
}

export interface Forwarded {
  method: string;
  path: string;
  status: number;
  /** Whether the request carried an Authorization header. */
  authorization: boolean;
}

const BLOB_PATH = /^\/v2\/(.+)\/blobs\/(sha256:[0-9a-f]{64})$/;
const REPO_PATH = /^\/v2\/(.+)\/(manifests|blobs|tags)\/[^/]+$/;

export class FrontProxy {
  /** Flip a byte in every blob body forwarded while true. */
  corrupt = false;
  /** Flip a byte in every manifest body forwarded while true. */
  corruptManifests = false;
  /** Docker-Content-Digest sent with every manifest answer while set (instead of the real one). */
  manifestDigestHeader: string | undefined;
  /** Base URL that blob GETs are redirected to (307), while set. */
  redirectBlobsTo: string | undefined;
  /** Requests answered by failNext, and redirects sent. */
  readonly failed: Forwarded[] = [];
  readonly redirected: Forwarded[] = [];
  private failures: Array<{ status: number; headers: Record<string, string> }> = [];
  readonly tokenRequests: TokenRequest[] = [];
  /** Registry requests answered 401 by the token check. */
  challenges = 0;
  readonly forwarded: Forwarded[] = [];
  /** Blob bodies that were corrupted. */
  corrupted = 0;

  private holdAfter: number | undefined;
  private gate: Promise<void> = Promise.resolve();
  private openGate: () => void = () => {};
  private heldWaiters: Array<() => void> = [];
  private held = 0;
  private readonly tokens = new Map<string, { scopes: Set<string>; expires: number }>();
  private readonly server: http.Server;
  private readonly target: URL;

  private constructor(private readonly options: FrontProxyOptions) {
    this.target = new URL(options.target);
    this.server = http.createServer((req, res) => {
      this.handle(req, res).catch((err) => {
        if (!res.headersSent) res.writeHead(502, { 'content-type': 'text/plain' });
        res.end(String(err));
      });
    });
  }

  static async start(options: FrontProxyOptions): Promise<FrontProxy> {
    const proxy = new FrontProxy(options);
    await new Promise<void>((resolve, reject) => {
      proxy.server.once('error', reject);
      proxy.server.listen({ host: '127.0.0.1', port: 0 }, () => resolve());
    });
    return proxy;
  }

  get port(): number {
    return (this.server.address() as AddressInfo).port;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  get host(): string {
    return `127.0.0.1:${this.port}`;
  }

  /** Answers the next `n` registry requests with `status` (and `headers`) instead of forwarding them. */
  failNext(n: number, status: number, headers: Record<string, string> = {}): void {
    for (let i = 0; i < n; i++) this.failures.push({ status, headers });
  }

  /** Forgets failures queued by failNext that were not used. */
  clearFailures(): void {
    this.failures = [];
  }

  /** From now on, blob bodies stop after `bytes` bytes until release(). */
  holdBlobsAfter(bytes: number): void {
    this.holdAfter = bytes;
    this.gate = new Promise((resolve) => {
      this.openGate = resolve;
    });
  }

  /** Lets held blob bodies continue, and stops holding new ones. */
  release(): void {
    this.holdAfter = undefined;
    this.openGate();
  }

  /** Resolves once `n` blob bodies (in total) have reached the hold point. */
  async waitHeld(n = 1): Promise<void> {
    while (this.held < n) await new Promise<void>((resolve) => this.heldWaiters.push(resolve));
  }

  async stop(): Promise<void> {
    this.release();
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://front');
    const auth = this.options.tokenAuth;
    if (auth && url.pathname === '/token') return this.issueToken(auth, url, req, res);
    if (auth && !this.authorized(url.pathname, req.headers.authorization)) {
      this.challenges++;
      const repo = REPO_PATH.exec(url.pathname)?.[1];
      const params = [`realm="${this.url}/token"`, `service="${auth.service ?? 'test-registry'}"`];
      if (repo) params.push(`scope="repository:${repo}:pull"`);
      res.writeHead(401, {
        'content-type': 'application/json',
        'www-authenticate': `Bearer ${params.join(',')}`,
      });
      res.end(JSON.stringify({ errors: [{ code: 'UNAUTHORIZED', message: 'authentication required' }] }));
      return;
    }
    const record = (status: number): Forwarded => ({
      method: req.method ?? 'GET',
      path: url.pathname,
      status,
      authorization: req.headers.authorization !== undefined,
    });
    const failure = url.pathname.startsWith('/v2/') ? this.failures.shift() : undefined;
    if (failure) {
      this.failed.push(record(failure.status));
      res.writeHead(failure.status, { 'content-type': 'application/json', ...failure.headers });
      res.end(JSON.stringify({ errors: [{ code: 'UNAVAILABLE', message: `test failure ${failure.status}` }] }));
      return;
    }
    if (this.redirectBlobsTo && req.method === 'GET' && BLOB_PATH.test(url.pathname)) {
      this.redirected.push(record(307));
      res.writeHead(307, { location: `${this.redirectBlobsTo}${url.pathname}?signature=test` });
      res.end();
      return;
    }
    await this.forward(req, res, url);
  }

  private authorized(pathname: string, header: string | undefined): boolean {
    const m = header ? /^Bearer\s+(\S+)$/i.exec(header) : null;
    const token = m ? this.tokens.get(m[1]) : undefined;
    if (!token || token.expires < Date.now()) return false;
    const repo = REPO_PATH.exec(pathname)?.[1];
    return repo === undefined || token.scopes.has(`repository:${repo}:pull`);
  }

  private issueToken(auth: TokenAuthOptions, url: URL, req: http.IncomingMessage, res: http.ServerResponse): void {
    const service = url.searchParams.get('service');
    const scopes = url.searchParams.getAll('scope').flatMap((s) => s.split(' ')).filter(Boolean);
    let user: string | undefined;
    let granted = service === (auth.service ?? 'test-registry');
    if (auth.users) {
      const m = /^Basic\s+(\S+)$/i.exec(req.headers.authorization ?? '');
      const [u, ...rest] = m ? Buffer.from(m[1], 'base64').toString('utf8').split(':') : [];
      user = u;
      if (u === undefined || auth.users[u] !== rest.join(':')) granted = false;
    }
    this.tokenRequests.push({ service, scopes, user, granted });
    if (!granted) {
      res.writeHead(401, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ details: 'bad service or credentials' }));
      return;
    }
    const value = `tok-${randomUUID()}`;
    const expiresIn = auth.expiresIn ?? 300;
    // Only pull is ever granted, as for an anonymous Docker Hub user.
    const pull = scopes.filter((s) => /^repository:[^:]+:pull(,|$)/.test(s)).map((s) => s.replace(/:pull,.*$/, ':pull'));
    this.tokens.set(value, { scopes: new Set(pull), expires: Date.now() + expiresIn * 1000 });
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ token: value, access_token: value, expires_in: expiresIn, issued_at: new Date().toISOString() }));
  }

  private forward(req: http.IncomingMessage, res: http.ServerResponse, url: URL): Promise<void> {
    const headers = { ...req.headers, host: this.target.host };
    if (this.options.tokenAuth) delete headers.authorization;
    return new Promise((resolve, reject) => {
      const upstream = http.request(
        { host: this.target.hostname, port: this.target.port, method: req.method, path: req.url, headers },
        (up) => {
          const status = up.statusCode ?? 502;
          this.forwarded.push({ method: req.method ?? 'GET', path: url.pathname, status, authorization: req.headers.authorization !== undefined });
          const outHeaders = { ...up.headers };
          if (this.manifestDigestHeader !== undefined && /\/manifests\/[^/]+$/.test(url.pathname)) {
            outHeaders['docker-content-digest'] = this.manifestDigestHeader;
          }
          res.writeHead(status, outHeaders);
          const isBlobBody = req.method === 'GET' && status === 200 && BLOB_PATH.test(url.pathname);
          let body: NodeJS.ReadableStream = up;
          if (isBlobBody && this.corrupt) {
            this.corrupted++;
            const length = Number(up.headers['content-length'] ?? 1);
            body = body.pipe(flipByteAt(Math.floor(length / 2)));
          }
          if (this.corruptManifests && req.method === 'GET' && status === 200 && /\/manifests\/[^/]+$/.test(url.pathname)) {
            this.corrupted++;
            body = body.pipe(flipByteAt(Math.floor(Number(up.headers['content-length'] ?? 1) / 2)));
          }
          if (isBlobBody && this.holdAfter !== undefined) body = body.pipe(this.holdAt(this.holdAfter, this.gate));
          body.pipe(res);
          // A client that goes away takes its upstream request with it.
          res.on('close', () => up.destroy());
          up.on('error', () => res.destroy());
          res.on('finish', () => resolve());
          res.on('close', () => resolve());
        },
      );
      upstream.on('error', reject);
      req.pipe(upstream);
    });
  }

  private holdAt(limit: number, gate: Promise<void>): Transform {
    let pos = 0;
    let reached = false;
    const onReached = () => {
      if (reached) return;
      reached = true;
      this.held++;
      const waiters = this.heldWaiters;
      this.heldWaiters = [];
      for (const w of waiters) w();
    };
    return new Transform({
      transform(chunk: Buffer, _enc, cb: TransformCallback) {
        if (pos + chunk.length <= limit) {
          pos += chunk.length;
          if (pos === limit) onReached();
          return cb(null, chunk);
        }
        const head = chunk.subarray(0, Math.max(0, limit - pos));
        const tail = chunk.subarray(head.length);
        pos += chunk.length;
        if (head.length > 0) this.push(head);
        onReached();
        gate.then(() => cb(null, tail), cb);
      },
    });
  }
}

/** A stream that passes bytes through, with the one at `offset` inverted. */
function flipByteAt(offset: number): Transform {
  let pos = 0;
  return new Transform({
    transform(chunk: Buffer, _enc, cb: TransformCallback) {
      if (offset >= pos && offset < pos + chunk.length) {
        const copy = Buffer.from(chunk);
        copy[offset - pos] ^= 0xff;
        chunk = copy;
      }
      pos += chunk.length;
      cb(null, chunk);
    },
  });
}
