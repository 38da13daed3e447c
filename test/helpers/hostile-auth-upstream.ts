// Hostile upstreams for the mirror's auth and redirect tests: small node:http
// (or https) servers that speak enough of the distribution API and Docker's
// token flow to serve images, and misbehave the ways an upstream (or whatever
// it redirects to) can to steal the mirror's upstream credentials or make it
// fetch from the mirror's own network:
//
// - HostileAuthUpstream: a token-protected registry. /v2/ names its realm
//   (its own /token by default, or any URL given: a foreign or plain-http
//   realm); `foreignRealm(repo, realm)` makes one repository's requests
//   answer 401 naming another realm, whatever token they carry; `redirect()`
//   answers a path with a 307 to any URL (another port, another loopback
//   address, a host name, a closed port).
// - Trap: a server that records every request (and its Authorization header)
//   and answers with what the test gives it: the "internal service" a
//   redirect points at, a foreign token realm, a redirect target that
//   answers 401.
//
// Both listen on any local address (127.0.0.2 plays an internal host that is
// not the upstream's), and everything is recorded so tests assert on what
// reached whom, never on time.
import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';
import type { Image } from './oci.ts';
import { makeTempDir } from './process.ts';

export interface Recorded {
  method: string;
  path: string;
  query: string;
  authorization?: string;
}

export interface TlsFiles {
  key: Buffer;
  cert: Buffer;
}

/** A self-signed certificate for an IP address (openssl), to serve https on 127.0.0.1. */
export function selfSignedCert(ip = '127.0.0.1'): TlsFiles & { certFile: string } {
  const dir = makeTempDir('rs-hostile-tls-');
  const key = path.join(dir, 'key.pem');
  const cert = path.join(dir, 'cert.pem');
  execFileSync(
    'openssl',
    ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', cert, '-days', '2', '-subj', `/CN=${ip}`, '-addext', `subjectAltName=IP:${ip}`],
    { stdio: 'ignore' },
  );
  return { key: readFileSync(key), cert: readFileSync(cert), certFile: cert };
}

type Handler = (req: http.IncomingMessage, res: http.ServerResponse, url: URL) => void | Promise<void>;

class Listener {
  readonly requests: Recorded[] = [];
  private server!: http.Server;
  private listenHost = '127.0.0.1';
  private scheme = 'http';

  protected constructor(private readonly handler: Handler) {}

  protected async listen(host: string, tls?: TlsFiles): Promise<void> {
    this.listenHost = host;
    const onRequest = (req: http.IncomingMessage, res: http.ServerResponse) => {
      const url = new URL(req.url ?? '/', 'http://x');
      this.requests.push({ method: req.method ?? 'GET', path: url.pathname, query: url.search.slice(1), authorization: req.headers.authorization });
      Promise.resolve(this.handler(req, res, url)).catch((err) => {
        if (!res.headersSent) res.writeHead(500);
        res.end(String(err));
      });
    };
    this.server = tls ? https.createServer({ key: tls.key, cert: tls.cert }, onRequest) : http.createServer(onRequest);
    this.scheme = tls ? 'https' : 'http';
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen({ host, port: 0 }, () => resolve());
    });
  }

  get port(): number {
    return (this.server.address() as AddressInfo).port;
  }

  get host(): string {
    return `${this.listenHost}:${this.port}`;
  }

  get url(): string {
    return `${this.scheme}://${this.host}`;
  }

  /** Requests that carried an Authorization header. */
  get withAuthorization(): Recorded[] {
    return this.requests.filter((r) => r.authorization !== undefined);
  }

  async stop(): Promise<void> {
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }
}

/** A server that records what reaches it and answers as the test says. */
export class Trap extends Listener {
  static async start(options: { host?: string; tls?: TlsFiles; respond?: Handler } = {}): Promise<Trap> {
    const trap = new Trap(
      options.respond ??
        ((_req, res) => {
          res.writeHead(404).end();
        }),
    );
    await trap.listen(options.host ?? '127.0.0.1', options.tls);
    return trap;
  }
}

/** A Trap's answer: this body with this content type (a manifest an internal service happens to hold). */
export function serveBody(body: Buffer, contentType: string, digest?: string): Handler {
  return (req, res) => {
    res.writeHead(200, { 'content-type': contentType, 'content-length': body.length, ...(digest ? { 'docker-content-digest': digest } : {}) });
    res.end(req.method === 'HEAD' ? undefined : body);
  };
}

/** A Trap's answer: 401 with a Bearer challenge naming `realm`. */
export function challengeWith(realm: string): Handler {
  return (_req, res) => {
    res.writeHead(401, { 'content-type': 'application/json', 'www-authenticate': `Bearer realm="${realm}",service="trap"` });
    res.end(JSON.stringify({ errors: [{ code: 'UNAUTHORIZED', message: 'authentication required' }] }));
  };
}

/** A Trap's answer: a token endpoint that hands a token to anyone (and records the credentials it was sent). */
export const issueTokens: Handler = (_req, res) => {
  res.writeHead(200, { 'content-type': 'application/json' });
  res.end(JSON.stringify({ token: `trap-${randomUUID()}`, expires_in: 300 }));
};

const MANIFEST = /^\/v2\/(.+)\/manifests\/([^/]+)$/;
const BLOB = /^\/v2\/(.+)\/blobs\/(sha256:[0-9a-f]{64})$/;

export interface HostileAuthOptions {
  /** Listen address (default 127.0.0.1). */
  host?: string;
  tls?: TlsFiles;
  /** user → password: the token endpoint wants Basic credentials of one of them. */
  users?: Record<string, string>;
  /** The realm /v2/ (and every repository's 401) names; default: this server's own /token. */
  realm?: string;
}

/** A token-protected registry serving images from memory, with the misbehaviours above. */
export class HostileAuthUpstream extends Listener {
  /** Token requests that reached this server's own /token. */
  readonly tokenRequests: Array<{ scope: string | null; user?: string; granted: boolean }> = [];
  private readonly manifests = new Map<string, { data: Buffer; mediaType: string; digest: string }>();
  private readonly blobs = new Map<string, Buffer>();
  private readonly tokens = new Map<string, string>();
  private readonly foreignRealms = new Map<string, string>();
  private readonly redirects: Array<{ match: (path: string) => boolean; location: string }> = [];
  private realm: string | undefined;

  private constructor(private readonly options: HostileAuthOptions) {
    super((req, res, url) => this.handle(req, res, url));
    this.realm = options.realm;
  }

  static async start(options: HostileAuthOptions = {}): Promise<HostileAuthUpstream> {
    const up = new HostileAuthUpstream(options);
    await up.listen(options.host ?? '127.0.0.1', options.tls);
    return up;
  }

  /** The realm named by challenges from now on. */
  setRealm(realm: string | undefined): void {
    this.realm = realm;
  }

  pushImage(repo: string, tag: string, image: Image): void {
    const m = { data: image.manifest.data, mediaType: image.mediaType, digest: image.manifest.digest };
    this.manifests.set(`${repo}:${tag}`, m);
    this.manifests.set(`${repo}:${image.manifest.digest}`, m);
    for (const b of [image.config, ...image.layers]) this.blobs.set(`${repo}@${b.digest}`, b.data);
  }

  /** Requests for this repository answer 401 naming `realm`, whatever token they carry. */
  foreignRealm(repo: string, realm: string): void {
    this.foreignRealms.set(repo, realm);
  }

  /** Authorized GET/HEAD of `path` (exact, or matching) answer 307 to `location`. */
  redirect(path: string | RegExp, location: string): void {
    this.redirects.push({ match: typeof path === 'string' ? (p) => p === path : (p) => path.test(p), location });
  }

  private challenge(res: http.ServerResponse, realm: string, repo?: string): void {
    const params = [`realm="${realm}"`, 'service="hostile"', ...(repo ? [`scope="repository:${repo}:pull"`] : [])];
    res.writeHead(401, { 'content-type': 'application/json', 'www-authenticate': `Bearer ${params.join(',')}` });
    res.end(JSON.stringify({ errors: [{ code: 'UNAUTHORIZED', message: 'authentication required' }] }));
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse, url: URL): void {
    const realm = this.realm ?? `${this.url}/token`;
    if (url.pathname === '/token') return this.issue(req, res, url);
    const repo = (MANIFEST.exec(url.pathname) ?? BLOB.exec(url.pathname))?.[1];
    const foreign = repo !== undefined ? this.foreignRealms.get(repo) : undefined;
    if (foreign) return this.challenge(res, foreign, repo);
    const bearer = /^Bearer\s+(\S+)$/i.exec(req.headers.authorization ?? '')?.[1];
    const granted = bearer ? this.tokens.get(bearer) : undefined;
    if (granted === undefined || (repo !== undefined && granted !== `repository:${repo}:pull`)) return this.challenge(res, realm, repo);
    if (url.pathname === '/v2/') {
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
      return;
    }
    const redirect = this.redirects.find((r) => r.match(url.pathname));
    if (redirect) {
      res.writeHead(307, { location: redirect.location }).end();
      return;
    }
    const m = MANIFEST.exec(url.pathname);
    if (m) {
      const found = this.manifests.get(`${m[1]}:${m[2]}`);
      if (!found) return notFound(res, 'MANIFEST_UNKNOWN');
      res.writeHead(200, { 'content-type': found.mediaType, 'content-length': found.data.length, 'docker-content-digest': found.digest });
      res.end(req.method === 'HEAD' ? undefined : found.data);
      return;
    }
    const b = BLOB.exec(url.pathname);
    const data = b ? this.blobs.get(`${b[1]}@${b[2]}`) : undefined;
    if (!b || !data) return notFound(res, 'BLOB_UNKNOWN');
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': data.length, 'docker-content-digest': b[2] });
    res.end(req.method === 'HEAD' ? undefined : data);
  }

  private issue(req: http.IncomingMessage, res: http.ServerResponse, url: URL): void {
    const scope = url.searchParams.get('scope');
    const basic = /^Basic\s+(\S+)$/i.exec(req.headers.authorization ?? '')?.[1];
    const [user, password] = basic ? Buffer.from(basic, 'base64').toString().split(/:(.*)/s) : [];
    const users = this.options.users;
    const ok = !users || (user !== undefined && users[user] === password);
    this.tokenRequests.push({ scope, user, granted: ok });
    if (!ok) {
      res.writeHead(401, { 'content-type': 'application/json' }).end('{"details":"bad credentials"}');
      return;
    }
    const token = randomUUID();
    this.tokens.set(token, scope ?? '');
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ token, expires_in: 300 }));
  }
}

function notFound(res: http.ServerResponse, code: string): void {
  res.writeHead(404, { 'content-type': 'application/json' });
  res.end(JSON.stringify({ errors: [{ code, message: 'not found' }] }));
}
