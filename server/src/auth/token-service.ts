// The built-in token server as the /auth/token handler uses it: who is
// logging in (Basic credentials or a password grant, checked against
// htpasswd on the client's failed-login budget; a refresh token; or nobody),
// and the token they get.
import type { Subject } from './access-policy.ts';
import { InvalidCredentials, parseBasic } from './authenticator.ts';
import type { Accounts } from './accounts.ts';
import type { LoginBudget } from './htpasswd.ts';
import type { ResourceScope } from './scope.ts';
import type { IssuedToken, TokenIssuer } from './token-issuer.ts';
import { InvalidToken } from './token-verifier.ts';

export class TokenService {
  constructor(
    private readonly issuer: TokenIssuer,
    private readonly accounts: Accounts,
  ) {}

  get service(): string {
    return this.issuer.service;
  }

  /** The JWK set of the keys that verify its tokens (no private parts: they are public keys). */
  publicKeys(): Promise<{ keys: object[] }> {
    return this.issuer.publicKeys();
  }

  /** The subject of an Authorization header: anonymous without one (or with the empty credentials of containers/image). */
  async fromAuthorization(authorization: string | undefined, budget?: LoginBudget): Promise<Subject> {
    if (!authorization) return {};
    const creds = parseBasic(authorization);
    if (!creds) {
      await budget?.charge();
      throw new InvalidCredentials();
    }
    if (creds.user === '' && creds.password === '') return {};
    return this.password(creds.user, creds.password, budget);
  }

  async password(user: string, password: string, budget?: LoginBudget): Promise<Subject> {
    const ok = await this.accounts.verify(user, password, budget);
    if (!ok) throw new InvalidCredentials();
    return { user: ok };
  }

  /** The subject of a refresh token; InvalidCredentials when it is not (or no longer) good. */
  async refresh(refreshToken: string): Promise<Subject> {
    try {
      return await this.issuer.redeem(refreshToken);
    } catch (err) {
      if (err instanceof InvalidToken) throw new InvalidCredentials(`authentication required: ${err.message}`);
      throw err;
    }
  }

  issue(subject: Subject, scopes: readonly ResourceScope[], refresh?: { clientId?: string }): Promise<IssuedToken> {
    return this.issuer.issue(subject, scopes, refresh);
  }
}
