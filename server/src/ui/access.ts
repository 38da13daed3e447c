// Who the UI's visitor is and what they may do, decided by the same
// authenticator as the API: a login checks the password as a registry
// request with Basic credentials would (same users, same failed-login
// budget), and an anonymous visitor may see a repository exactly when an
// anonymous pull of it would be let through.
import type { Access, Identity, RequestAuthenticator } from '../auth/authenticator.ts';
import type { LoginBudget } from '../auth/htpasswd.ts';

export class UiAccess {
  constructor(private readonly authenticator: RequestAuthenticator) {}

  /** The logged-in identity, or undefined when the user or password is wrong (or this server takes no passwords). */
  async login(user: string, password: string, budget: LoginBudget | undefined): Promise<(Identity & { user: string }) | undefined> {
    const authorization = `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;
    try {
      const identity = await this.authenticator.authenticateRequest({ authorization, access: 'base', budget });
      return identity.user === undefined ? undefined : { ...identity, user: identity.user };
    } catch (err) {
      if (isRefusal(err)) return undefined;
      throw err;
    }
  }

  /** Whether `identity` (undefined: anonymous) may do `action` on repository `name`. */
  async may(identity: Identity | undefined, name: string, action: Access): Promise<boolean> {
    if (identity?.user !== undefined) {
      // Without a per-repository rule (htpasswd alone), a user may do everything, as on the API.
      return identity.may ? identity.may(name, action) : true;
    }
    try {
      await this.authenticator.authenticateRequest({ access: action, repository: name });
      return true;
    } catch (err) {
      if (isRefusal(err)) return false;
      throw err;
    }
  }
}

/** A refusal of the authenticator (401, 403), as opposed to a failure (a store that cannot be read). */
function isRefusal(err: unknown): boolean {
  const code = (err as { code?: string } | undefined)?.code;
  return code === 'UNAUTHORIZED' || code === 'DENIED';
}
