// Token auth on registry requests (auth.access and/or auth.token): clients
// are challenged with `Bearer realm=…,service=…,scope=…` and come back with a
// token. What a request may do is what its token grants; with an access
// policy, also no more than the policy allows now (a reload takes effect at
// once, not when tokens expire). Basic credentials are still taken on
// registry requests when there is an htpasswd file (curl and scripts), and
// meet the same policy. Anonymous clients need no token for what the policy
// lets anonymous clients do.
//
// Refusals: no or a bad token → 401 with a challenge (error="invalid_token"
// for a bad one); a good token that lacks the scope while the policy would
// allow it → 401 error="insufficient_scope" (the client fetches a new token);
// a logged-in client the policy refuses → 403 DENIED.
import { RegistryError } from '../registry/errors.ts';
import type { Subject } from './access-policy.ts';
import type { Accounts } from './accounts.ts';
import { type Access, type AuthRequest, type Identity, InvalidCredentials, parseBasic, type RequestAuthenticator } from './authenticator.ts';
import { challengeActions, formatScope, type ResourceScope } from './scope.ts';
import { InvalidToken } from './token-errors.ts';
import type { TokenVerifier, VerifiedToken } from './token-verifier.ts';

/** A 401 that tells the client which token to fetch. */
export class BearerChallenge extends RegistryError {
  constructor(
    message: string,
    readonly error?: 'invalid_token' | 'insufficient_scope',
    readonly scopes: ResourceScope[] = [],
  ) {
    super('UNAUTHORIZED', message);
  }
}

export interface TokenAuthOptions {
  verifier: TokenVerifier;
  service: string;
  /** Where clients get tokens: a configured URL, or this server's /auth/token. */
  realm?: string;
  /** Users, robots and the access policy; absent: tokens alone decide (an external token server). */
  accounts?: Accounts;
}

export const TOKEN_PATH = '/auth/token';
/** The built-in token server's public keys, for registries that verify its tokens (auth.token.jwks). */
export const JWKS_PATH = '/auth/jwks.json';

export class TokenAuthenticator implements RequestAuthenticator {
  constructor(private readonly options: TokenAuthOptions) {}

  async authenticateRequest(request: AuthRequest): Promise<Identity> {
    const { authorization } = request;
    const bearer = authorization ? /^Bearer\s+(\S+)\s*$/i.exec(authorization) : null;
    if (bearer) return this.withToken(request, bearer[1]);
    // containers/image answers a challenge with empty Basic credentials when it has none.
    const basic = authorization ? parseBasic(authorization) : undefined;
    const anonymous = !authorization || (basic?.user === '' && basic.password === '');
    if (!anonymous) return this.withPassword(request, basic);
    return this.anonymous(request);
  }

  challengeFor(request: AuthRequest | undefined, err: RegistryError): string {
    const realm = this.options.realm ?? `${request?.origin ?? ''}${TOKEN_PATH}`;
    const params = [`realm="${quote(realm)}"`, `service="${quote(this.options.service)}"`];
    const scopes = err instanceof BearerChallenge ? err.scopes : request ? scopesOf(request) : [];
    if (scopes.length > 0) params.push(`scope="${quote(scopes.map(formatScope).join(' '))}"`);
    if (err instanceof BearerChallenge && err.error) params.push(`error="${err.error}"`);
    return `Bearer ${params.join(',')}`;
  }

  private async withToken(request: AuthRequest, token: string): Promise<Identity> {
    let verified: VerifiedToken;
    try {
      verified = await this.options.verifier.verify(token);
    } catch (err) {
      if (!(err instanceof InvalidToken)) throw err;
      throw new BearerChallenge(`authentication required: ${err.message}`, 'invalid_token', scopesOf(request));
    }
    const subject: Subject = { user: verified.user };
    const { accounts } = this.options;
    const rights = accounts && (await accounts.rights(subject));
    if (accounts && !rights) {
      throw new BearerChallenge('authentication required: this account is revoked, expired or gone', 'invalid_token', scopesOf(request));
    }
    const allowed = (name: string, action: Access) => !rights || rights(name).has(action);
    const granted = (name: string, action: Access) => (verified.repositories.get(name)?.has(action) ?? false) && allowed(name, action);
    // Other repositories (the catalog, a mount's source): with a policy, what it lets the
    // subject do (a token for that scope is theirs for the asking); else what the token grants.
    const identity: Identity = { user: verified.user, may: rights ? allowed : granted };
    if (request.access === 'base') return identity;
    if (request.catalog) {
      if (rights) return identity;
      // An external token server's catalog scope shows everything, as distribution does.
      if (verified.catalog) return { user: verified.user };
      throw new BearerChallenge('the token does not grant the catalog', 'insufficient_scope', scopesOf(request));
    }
    const name = request.repository!;
    if (granted(name, request.access)) return identity;
    if (rights && !allowed(name, request.access) && subject.user !== undefined) {
      throw new RegistryError('DENIED', `requested access to the resource is denied: ${request.access} on ${name}`);
    }
    throw new BearerChallenge(`the token does not grant ${request.access} on ${name}`, 'insufficient_scope', scopesOf(request));
  }

  private async withPassword(request: AuthRequest, creds: { user: string; password: string } | undefined): Promise<Identity> {
    const { accounts } = this.options;
    if (!accounts) {
      // An external token server checks passwords: a registry request with one is refused, not checked here.
      throw new BearerChallenge('authentication required: this registry takes bearer tokens');
    }
    const user = creds ? await accounts.verify(creds.user, creds.password, request.budget) : undefined;
    if (!user) {
      if (!creds) await request.budget?.charge();
      throw new InvalidCredentials();
    }
    const rights = await accounts.rights({ user });
    if (!rights) throw new InvalidCredentials();
    const identity: Identity = { user, may: (name, action) => rights(name).has(action) };
    if (request.access === 'base' || request.catalog) return identity;
    if (rights(request.repository!).has(request.access)) return identity;
    throw new RegistryError('DENIED', `requested access to the resource is denied: ${request.access} on ${request.repository}`);
  }

  private anonymous(request: AuthRequest): Identity {
    const policy = this.options.accounts?.policy();
    // /v2/ and the catalog always challenge a client without credentials: /v2/ is how
    // clients learn where to log in, and the catalog's answer depends on who asks (an
    // anonymous client gets an anonymous token and sees what anonymous clients may pull).
    if (policy && request.access !== 'base' && !request.catalog && policy.may({}, request.repository!, request.access)) {
      return { may: (name, action) => policy.may({}, name, action) };
    }
    throw new BearerChallenge('authentication required', undefined, scopesOf(request));
  }
}

/** The scopes a request needs, as its challenge states them. */
function scopesOf(request: AuthRequest): ResourceScope[] {
  if (request.catalog) return [{ type: 'registry', name: 'catalog', actions: ['*'] }];
  if (request.access === 'base' || request.repository === undefined) return [];
  return [{ type: 'repository', name: request.repository, actions: challengeActions(request.access) }];
}

function quote(value: string): string {
  return value.replace(/["\\]/g, '');
}
