// GET and POST /auth/token: the built-in token server (Docker token protocol).
// GET takes Basic credentials (or none: an anonymous token), `scope` (any
// number), `service`, and `offline_token=true` for a refresh token, as
// `docker login` asks; POST is the OAuth2 form: grant_type=password
// (username, password, access_type=offline for a refresh token) or
// grant_type=refresh_token. Logins draw on the client's failed-login budget,
// like Basic credentials on registry requests.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Subject } from '../../auth/access-policy.ts';
import { parseScopes, type ResourceScope, ScopeError } from '../../auth/scope.ts';
import type { TokenService } from '../../auth/token-service.ts';
import { RegistryError } from '../../registry/errors.ts';
import { readBody } from '../context.ts';
import type { RateLimits } from '../rate-limit.ts';

const FORM_LIMIT = 64 * 1024;

export interface TokenRequest {
  req: IncomingMessage;
  res: ServerResponse;
  query: URLSearchParams;
  tokens: TokenService;
  client: string;
  rateLimits?: RateLimits;
}

/** Resolves with the user who got a token (undefined: anonymous), for the access log. */
export async function tokenEndpoint(r: TokenRequest): Promise<string | undefined> {
  const { req, tokens, rateLimits, client } = r;
  if (req.method !== 'GET' && req.method !== 'POST') {
    return oauthError(r.res, 405, 'invalid_request', 'use GET or POST', { Allow: 'GET, POST' });
  }
  await rateLimits?.beforeAuth(client);
  const budget = rateLimits?.loginBudget(client);
  let params = r.query;
  if (req.method === 'POST') {
    const type = String(req.headers['content-type'] ?? '').split(';')[0].trim().toLowerCase();
    if (type !== 'application/x-www-form-urlencoded') {
      return oauthError(r.res, 400, 'invalid_request', 'POST a form (application/x-www-form-urlencoded)');
    }
    const body = await readBody(req, FORM_LIMIT, () => new RegistryError('SIZE_INVALID', 'form too large'));
    params = new URLSearchParams(body.toString('utf8'));
  }
  const service = params.get('service');
  if (service !== null && service !== tokens.service) {
    return oauthError(r.res, 400, 'invalid_request', `this token server serves ${JSON.stringify(tokens.service)}, not ${JSON.stringify(service.slice(0, 100))}`);
  }
  let scopes: ResourceScope[];
  try {
    scopes = parseScopes(params.getAll('scope'));
  } catch (err) {
    if (err instanceof ScopeError) return oauthError(r.res, 400, 'invalid_scope', err.message);
    throw err;
  }

  let subject: Subject;
  let offline = false;
  let keepRefreshToken: string | undefined;
  try {
    if (req.method === 'GET') {
      subject = await tokens.fromAuthorization(req.headers.authorization, budget);
      offline = params.get('offline_token') === 'true';
    } else {
      const grant = params.get('grant_type');
      if (grant === 'password') {
        subject = await tokens.password(params.get('username') ?? '', params.get('password') ?? '', budget);
        offline = params.get('access_type') === 'offline';
      } else if (grant === 'refresh_token') {
        const refreshToken = params.get('refresh_token') ?? '';
        subject = await tokens.refresh(refreshToken);
        keepRefreshToken = refreshToken;
      } else {
        return oauthError(r.res, 400, 'unsupported_grant_type', 'grant_type must be password or refresh_token');
      }
    }
  } catch (err) {
    if (err instanceof RegistryError && err.code === 'UNAUTHORIZED') {
      return oauthError(r.res, 401, 'invalid_grant', err.message, { 'WWW-Authenticate': `Basic realm="${tokens.service.replace(/"/g, '')}"` });
    }
    throw err;
  }
  await rateLimits?.afterAuth(subject.user);

  const issued = await tokens.issue(subject, scopes, offline ? { clientId: params.get('client_id') ?? undefined } : undefined);
  const body: Record<string, unknown> = {
    token: issued.token,
    access_token: issued.token,
    expires_in: issued.expiresIn,
    issued_at: issued.issuedAt,
  };
  // A refresh grant keeps its token: redeeming it never extends a login.
  const refreshToken = issued.refreshToken ?? keepRefreshToken;
  if (refreshToken) body.refresh_token = refreshToken;
  if (req.method === 'POST') body.scope = issued.access.map((a) => `${a.type}:${a.name}:${a.actions.join(',')}`).join(' ');
  send(r.res, 200, body);
  return subject.user;
}

function send(res: ServerResponse, status: number, value: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(value);
  res.writeHead(status, {
    ...headers,
    'Content-Type': 'application/json; charset=utf-8',
    'Content-Length': Buffer.byteLength(text),
    // Tokens and refusals alike are for this client only, now.
    'Cache-Control': 'no-store',
  });
  res.end(text);
}

/** RFC 6749's error body, with the registry's `errors` list that Docker clients print. */
function oauthError(res: ServerResponse, status: number, error: string, description: string, headers: Record<string, string> = {}): undefined {
  const code = status === 401 ? 'UNAUTHORIZED' : 'UNSUPPORTED';
  send(res, status, { error, error_description: description, errors: [{ code, message: description }] }, headers);
  return undefined;
}
