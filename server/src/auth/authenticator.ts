// Who is asking, and may they do this? Parses Basic credentials, checks them
// against htpasswd, and applies the access policy: without auth configured
// everyone may read and nobody may write; with htpasswd, users may do
// everything and anonymous clients may pull only if auth.anonymouspull is on.
import { RegistryError } from '../registry/errors.ts';
import type { Htpasswd, LoginBudget } from './htpasswd.ts';

export type Access = 'pull' | 'push' | 'delete';

export interface Identity {
  /** The authenticated user, or undefined for an anonymous client. */
  readonly user?: string;
  /**
   * With an access policy: whether this client may do `action` on another
   * repository than the request's (the catalog, a mount's source). Absent:
   * whatever the request was let through for, it may do everywhere.
   */
  readonly may?: (name: string, action: Access) => boolean;
}

/** What the HTTP layer knows about a request when it asks who is asking. */
export interface AuthRequest {
  authorization?: string;
  /** What the endpoint needs; 'base' for /v2/. */
  access: Access | 'base';
  /** The repository, as the registry names it; undefined for /v2/ and the catalog. */
  repository?: string;
  catalog?: boolean;
  /** scheme://host[/prefix] the client reached us at (for a token realm on this server). */
  origin?: string;
  budget?: LoginBudget;
}

/** The authentication scheme of a server: Basic over htpasswd, or bearer tokens. */
export interface RequestAuthenticator {
  authenticateRequest(request: AuthRequest): Promise<Identity>;
  /** The WWW-Authenticate value of an UNAUTHORIZED answer. */
  challengeFor(request: AuthRequest | undefined, err: RegistryError): string;
}

/** Wrong user or password (as opposed to none given): what the failed-login limit counts. */
export class InvalidCredentials extends RegistryError {
  constructor(message = 'authentication required: invalid credentials') {
    super('UNAUTHORIZED', message);
  }
}

export interface AuthPolicy {
  htpasswd?: Htpasswd;
  realm: string;
  anonymousPull: boolean;
}

export class Authenticator implements RequestAuthenticator {
  constructor(private readonly policy: AuthPolicy) {}

  get challenge(): string {
    return `Basic realm="${this.policy.realm.replace(/"/g, '')}"`;
  }

  authenticateRequest(request: AuthRequest): Promise<Identity> {
    return this.authenticate(request.authorization, request.access, request.budget);
  }

  challengeFor(): string {
    return this.challenge;
  }

  /**
   * Resolves the identity of a request needing `access`, or throws UNAUTHORIZED
   * (which the HTTP layer answers with a Basic challenge).
   */
  async authenticate(authorization: string | undefined, access: Access | 'base', budget?: LoginBudget): Promise<Identity> {
    const { htpasswd } = this.policy;
    if (!htpasswd) {
      if (access === 'pull' || access === 'base') return {};
      throw new RegistryError(
        'DENIED',
        'this registry has no authentication configured, so it takes no pushes or deletes (configure auth.htpasswd)',
      );
    }
    // containers/image (skopeo, podman) answers a Basic challenge with empty
    // credentials when it has none: that is an anonymous client, not a bad login.
    const creds = authorization ? parseBasic(authorization) : undefined;
    const anonymous = !authorization || (creds?.user === '' && creds.password === '');
    if (!anonymous) {
      const user = creds ? await htpasswd.verify(creds.user, creds.password, budget) : undefined;
      if (!user) {
        // Unparseable credentials never reach a check; they still count as a failed login.
        if (!creds) await budget?.charge();
        throw new InvalidCredentials();
      }
      return { user };
    }
    // The base endpoint (/v2/) always challenges when there are users, even with
    // anonymous pull: clients learn from that challenge that they should send
    // credentials (skopeo and podman never send them to a registry whose /v2/
    // answered 200), and anonymous clients carry on without credentials.
    if (access === 'pull' && this.policy.anonymousPull) return {};
    throw new RegistryError('UNAUTHORIZED', 'authentication required');
  }
}

export function parseBasic(header: string): { user: string; password: string } | undefined {
  const m = /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(header);
  if (!m) return undefined;
  const decoded = Buffer.from(m[1], 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon < 0) return undefined;
  return { user: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
}
