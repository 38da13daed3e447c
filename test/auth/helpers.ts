// Token-auth test rig: a real server (in this process, on a loopback port)
// with an access policy file, htpasswd users and a clock the test moves; and
// a client that speaks the Docker token protocol the way registry clients do
// (answer a Bearer challenge by fetching a token for the challenged scope,
// then retry).
import { rmSync, utimesSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { request } from 'undici';
import { loadConfigObject } from '../../server/src/config/load.ts';
import { type RunningServer, startServer } from '../../server/src/http/server.ts';
import { silentLogger, type Logger } from '../../server/src/log/logger.ts';
import { basicAuth, makeTempDir, writeHtpasswd } from '../helpers/server.ts';
import { RegistryClient, type RequestOptions, type Response } from '../helpers/client.ts';

export { basicAuth };

/** A clock the test moves by hand. */
export class TestClock {
  constructor(public ms = Date.now()) {}
  readonly now = () => this.ms;
  advance(ms: number): void {
    this.ms += ms;
  }
}

export interface TokenServerOptions {
  policy: string;
  users?: Record<string, string>;
  /** Extra keys of auth.token. */
  token?: Record<string, unknown>;
  /** Extra top-level config. */
  extra?: Record<string, unknown>;
  clock?: TestClock;
  logger?: Logger;
  /** Reuse a directory (keys, data, policy). */
  root?: string;
}

export interface TokenTestServer extends RunningServer {
  root: string;
  policyFile: string;
  htpasswdFile: string;
  clock: TestClock;
  /** Rewrites the policy file (with a new mtime, so the reload sees it at once). */
  writePolicy(text: string): void;
  stop(): Promise<void>;
}

let policyGeneration = 0;

export async function startTokenServer(options: TokenServerOptions): Promise<TokenTestServer> {
  const root = options.root ?? makeTempDir('rs-token-');
  const policyFile = path.join(root, 'access.yml');
  const htpasswdFile = path.join(root, 'htpasswd');
  const clock = options.clock ?? new TestClock();
  const writePolicy = (text: string) => {
    writeFileSync(policyFile, text);
    // Each version gets an mtime of its own: two writes within one tick must both count.
    const t = new Date(Date.now() + ++policyGeneration * 1000);
    utimesSync(policyFile, t, t);
  };
  writePolicy(options.policy);
  writeHtpasswd(htpasswdFile, options.users ?? {});
  const raw: Record<string, unknown> = {
    version: '0.1',
    log: { level: 'error', accesslog: { disabled: true } },
    storage: { filesystem: { rootdirectory: path.join(root, 'data') }, delete: { enabled: true } },
    http: { addr: '127.0.0.1:0' },
    auth: {
      htpasswd: { realm: 'test', path: htpasswdFile },
      access: policyFile,
      ...(options.token ? { token: options.token } : {}),
    },
    ...options.extra,
  };
  const { config } = loadConfigObject(raw, {});
  let running: RunningServer;
  try {
    running = await startServer(config, { logger: options.logger ?? silentLogger, now: clock.now, metrics: true });
  } catch (err) {
    if (!options.root) rmSync(root, { recursive: true, force: true });
    throw err;
  }
  return {
    ...running,
    root,
    policyFile,
    htpasswdFile,
    clock,
    writePolicy,
    async stop() {
      await running.close();
      if (!options.root) rmSync(root, { recursive: true, force: true });
    },
  };
}

export interface Challenge {
  scheme: string;
  params: Record<string, string>;
}

/** Parses a WWW-Authenticate header of one challenge. */
export function parseChallenge(header: string | undefined): Challenge | undefined {
  if (!header) return undefined;
  const m = /^(\w+)\s+(.*)$/.exec(header);
  if (!m) return undefined;
  const params: Record<string, string> = {};
  for (const p of m[2].matchAll(/(\w+)="([^"]*)"/g)) params[p[1]] = p[2];
  return { scheme: m[1], params };
}

export interface TokenResponse {
  status: number;
  body: any;
  headers: Record<string, string | string[] | undefined>;
}

/** GET <realm>?service=…&scope=… with optional Basic credentials, as docker and containers/image do. */
export async function fetchToken(
  realm: string,
  params: { service?: string; scope?: string[]; offline?: boolean; clientId?: string },
  auth?: string,
): Promise<TokenResponse> {
  const url = new URL(realm);
  if (params.service) url.searchParams.set('service', params.service);
  for (const s of params.scope ?? []) url.searchParams.append('scope', s);
  if (params.offline) url.searchParams.set('offline_token', 'true');
  if (params.clientId) url.searchParams.set('client_id', params.clientId);
  const res = await request(url, { headers: auth ? { authorization: auth } : {} });
  const text = await res.body.text();
  return { status: res.statusCode, body: text ? JSON.parse(text) : undefined, headers: res.headers };
}

/** POST <realm> with an OAuth2 form (grant_type=password or refresh_token). */
export async function postToken(realm: string, form: Record<string, string | string[]>): Promise<TokenResponse> {
  const body = new URLSearchParams();
  for (const [k, v] of Object.entries(form)) for (const x of Array.isArray(v) ? v : [v]) body.append(k, x);
  const res = await request(realm, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: body.toString(),
  });
  const text = await res.body.text();
  return { status: res.statusCode, body: text ? JSON.parse(text) : undefined, headers: res.headers };
}

/**
 * A RegistryClient that answers Bearer challenges: it fetches a token for
 * the challenged scope (with its Basic credentials, if any) and retries once,
 * keeping the token for later requests, as registry clients do.
 */
export class TokenClient extends RegistryClient {
  private bearer?: string;
  tokensFetched = 0;

  constructor(
    baseUrl: string,
    private readonly credentials?: string,
  ) {
    super(baseUrl, undefined);
  }

  /**
   * Fetches a token for `scopes` up front, as docker does before a push (a
   * request with a body answered by a challenge would have to be sent twice).
   */
  async login(...scopes: string[]): Promise<TokenResponse> {
    const probe = await super.req('/v2/');
    const challenge = parseChallenge(probe.header('www-authenticate'));
    if (!challenge) throw new Error(`/v2/ did not challenge: ${probe.status}`);
    const token = await fetchToken(challenge.params.realm, { service: challenge.params.service, scope: scopes }, this.credentials);
    this.tokensFetched++;
    if (token.status === 200) this.bearer = `Bearer ${token.body.token}`;
    return token;
  }

  /** The token in use (undefined before the first). */
  get token(): string | undefined {
    return this.bearer?.slice('Bearer '.length);
  }

  override withAuth(): RegistryClient {
    throw new Error('TokenClient manages its own Authorization');
  }

  override async req(pathOrUrl: string, options: RequestOptions = {}): Promise<Response> {
    const send = () =>
      super.req(pathOrUrl, { ...options, headers: { ...(this.bearer ? { authorization: this.bearer } : {}), ...options.headers } });
    const first = await send();
    const challenge = first.status === 401 ? parseChallenge(first.header('www-authenticate')) : undefined;
    if (!challenge || challenge.scheme !== 'Bearer') return first;
    // A streamed body cannot be sent twice; tests use buffers.
    const token = await fetchToken(
      challenge.params.realm,
      { service: challenge.params.service, scope: challenge.params.scope ? [challenge.params.scope] : [] },
      this.credentials,
    );
    this.tokensFetched++;
    if (token.status !== 200) return first;
    this.bearer = `Bearer ${token.body.token}`;
    return send();
  }
}
