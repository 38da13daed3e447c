// The built-in token server's core: what a subject gets for the scopes it
// asked for (the intersection with the access policy), the signed access
// token (distribution's claims: iss, sub, aud, exp, nbf, iat, jti, access),
// and refresh tokens for offline logins (`docker login`), which are JWTs too
// so that every replica can redeem them without shared state. A refresh
// token carries the user's credential stamp: a new password or a removed
// user ends it.
import { randomBytes } from 'node:crypto';
import { errors as joseErrors, type JWK, jwtVerify, SignJWT } from 'jose';
import { isValidName } from '../registry/names.ts';
import { ACTIONS, type Action, type Subject } from './access-policy.ts';
import type { Rights } from './accounts.ts';
import type { KeyStore } from './keys.ts';
import type { AccessEntry, ResourceScope } from './scope.ts';
import { InvalidToken } from './token-verifier.ts';

export interface TokenIssuerOptions {
  issuer: string;
  service: string;
  keys: KeyStore;
  /** What a subject may do now (the access policy, a robot's scopes); undefined: nothing, the account is gone. */
  rights: (subject: Subject) => Promise<Rights | undefined>;
  /** Access token lifetime. */
  expiresInS: number;
  refreshExpiresInS: number;
  now?: () => number;
  /** This registry's name for a requested repository (the mirror's canonical names); throws for names it refuses. */
  canonicalName?: (name: string) => string;
  /** The account's current credential stamp; undefined when there is no such account any more. */
  credentialStamp: (user: string) => Promise<string | undefined> | string | undefined;
}

export interface IssuedToken {
  token: string;
  expiresIn: number;
  /** RFC 3339. */
  issuedAt: string;
  access: AccessEntry[];
  refreshToken?: string;
}

/** Leeway for replicas whose clocks differ a little. */
const NOT_BEFORE_LEEWAY_S = 60;
const REFRESH_USE = 'refresh';

export class TokenIssuer {
  private readonly now: () => number;

  constructor(private readonly options: TokenIssuerOptions) {
    this.now = options.now ?? Date.now;
  }

  get service(): string {
    return this.options.service;
  }

  /** The public keys that verify what this issuer signs now, as a JWK set. */
  publicKeys(): Promise<{ keys: JWK[] }> {
    return this.options.keys.jwks();
  }

  /** What `subject` gets of `scopes`: each asked action the policy allows, nothing else. */
  async grant(subject: Subject, scopes: readonly ResourceScope[]): Promise<AccessEntry[]> {
    const rights = await this.options.rights(subject);
    if (!rights) return [];
    const byKey = new Map<string, AccessEntry>();
    for (const scope of scopes) {
      let actions: string[] = [];
      if (scope.type === 'registry' && scope.name === 'catalog') {
        // The catalog lists only what the caller may pull, so anyone may ask for it.
        actions = scope.actions.includes('*') ? ['*'] : [];
      } else if (scope.type === 'repository') {
        const name = this.canonical(scope.name);
        if (name === undefined) continue;
        const allowed = rights(name);
        const asked = new Set<Action>(scope.actions.includes('*') ? ACTIONS : (scope.actions.filter((a) => (ACTIONS as readonly string[]).includes(a)) as Action[]));
        actions = ACTIONS.filter((a) => asked.has(a) && allowed.has(a));
      }
      if (actions.length === 0) continue;
      const key = `${scope.type}:${scope.name}`;
      const entry = byKey.get(key);
      if (entry) entry.actions = [...new Set([...entry.actions, ...actions])];
      else byKey.set(key, { type: scope.type, name: scope.name, actions });
    }
    return [...byKey.values()];
  }

  /** A signed access token for `subject`, and a refresh token when asked for one (never for anonymous clients). */
  async issue(subject: Subject, scopes: readonly ResourceScope[], refresh?: { clientId?: string }): Promise<IssuedToken> {
    const key = await this.options.keys.signingKey();
    const nowS = Math.floor(this.now() / 1000);
    const access = await this.grant(subject, scopes);
    const token = await new SignJWT({ access })
      .setProtectedHeader({ alg: key.alg, kid: key.kid, typ: 'JWT' })
      .setIssuer(this.options.issuer)
      .setSubject(subject.user ?? '')
      .setAudience(this.options.service)
      .setIssuedAt(nowS)
      .setNotBefore(nowS - NOT_BEFORE_LEEWAY_S)
      .setExpirationTime(nowS + this.options.expiresInS)
      .setJti(randomBytes(16).toString('base64url'))
      .sign(key.privateKey);
    const issued: IssuedToken = { token, expiresIn: this.options.expiresInS, issuedAt: new Date(nowS * 1000).toISOString(), access };
    const stamp = subject.user !== undefined ? await this.options.credentialStamp(subject.user) : undefined;
    if (refresh && stamp !== undefined) {
      issued.refreshToken = await new SignJWT({ token_use: REFRESH_USE, cst: stamp, ...(refresh.clientId ? { client_id: refresh.clientId } : {}) })
        .setProtectedHeader({ alg: key.alg, kid: key.kid, typ: 'JWT' })
        .setIssuer(this.options.issuer)
        .setSubject(subject.user!)
        .setAudience(this.refreshAudience)
        .setIssuedAt(nowS)
        .setNotBefore(nowS - NOT_BEFORE_LEEWAY_S)
        .setExpirationTime(nowS + this.options.refreshExpiresInS)
        .setJti(randomBytes(16).toString('base64url'))
        .sign(key.privateKey);
    }
    return issued;
  }

  /** The subject of a refresh token that is still good; throws InvalidToken. */
  async redeem(refreshToken: string): Promise<Subject> {
    let payload;
    try {
      ({ payload } = await jwtVerify(
        refreshToken,
        async (header) => {
          const key = header.kid ? await this.options.keys.verificationKey(header.kid) : undefined;
          if (!key) throw new InvalidToken('the refresh token is signed by an unknown key');
          return key.publicKey;
        },
        {
          issuer: this.options.issuer,
          audience: this.refreshAudience,
          algorithms: ['ES256', 'RS256'],
          currentDate: new Date(this.now()),
          requiredClaims: ['exp', 'sub'],
        },
      ));
    } catch (err) {
      if (err instanceof InvalidToken) throw err;
      throw new InvalidToken(err instanceof joseErrors.JWTExpired ? 'the refresh token has expired' : 'the refresh token is not valid');
    }
    if (payload.token_use !== REFRESH_USE || typeof payload.sub !== 'string') throw new InvalidToken('not a refresh token');
    const stamp = await this.options.credentialStamp(payload.sub);
    if (stamp === undefined || stamp !== payload.cst) throw new InvalidToken('the login behind this refresh token has changed; log in again');
    return { user: payload.sub };
  }

  /** Refresh tokens are for the token server, never for the registry: another audience. */
  private get refreshAudience(): string {
    return `${this.options.service}/refresh`;
  }

  private canonical(name: string): string | undefined {
    try {
      if (this.options.canonicalName) return this.options.canonicalName(name);
      return isValidName(name) ? name : undefined;
    } catch {
      return undefined;
    }
  }
}
