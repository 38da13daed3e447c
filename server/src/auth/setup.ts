// Builds the server's authentication from the config:
// - no auth.access and no auth.token: Basic over htpasswd, all-or-nothing (as always);
// - auth.access: bearer tokens from the built-in token server (/auth/token),
//   passwords from htpasswd, robots from the storage, rights from the policy
//   file; tokens of an external issuer are trusted too when auth.token names its keys;
// - auth.token alone: bearer tokens of an external token server only (distribution's token auth).
// A problem with a file it needs stops the start as one line naming the key.
import * as path from 'node:path';
import type { KeyObject, X509Certificate } from 'node:crypto';
import { ConfigError } from '../config/load.ts';
import type { RegistryConfig } from '../config/schema.ts';
import type { Logger } from '../log/logger.ts';
import type { StorageDriver } from '../storage/driver.ts';
import type { AccessPolicyFile } from './access-policy.ts';
import { type Access, Authenticator, type RequestAuthenticator } from './authenticator.ts';
import { Htpasswd } from './htpasswd.ts';
import type { KeyStore } from './keys.ts';
import type { RemoteJwks } from './remote-jwks.ts';
import type { RobotChanges } from './robots.ts';
import type { TokenService } from './token-service.ts';

export const DEFAULT_SERVICE = 'registry-stack';
export const DEFAULT_ISSUER = 'registry-stack';

export interface AuthSetup {
  authenticator: RequestAuthenticator;
  /** The built-in token server, when auth.access is configured. */
  tokens?: TokenService;
  /**
   * The account as it is now, for sessions that outlive a login (the web UI): a
   * stamp of its credentials and, with an access policy, what it may do; undefined
   * when it is gone, revoked or expired. Absent when no passwords are checked here.
   */
  account?: (user: string) => Promise<AccountState | undefined>;
  close(): Promise<void>;
}

export interface AccountState {
  /** Changes when the password (a robot's secret) does. */
  stamp: string;
  /** Absent: the account may do everything (htpasswd without a policy). */
  may?: (name: string, action: Access) => boolean;
}

export interface AuthSetupOptions {
  logger: Logger;
  /** This registry's name for a requested repository (the mirror's). */
  canonicalName?: (name: string) => string;
  /** The clock tokens are issued and checked by (tests move it). */
  now?: () => number;
  /** Where robot accounts are kept (the registry's storage). */
  driver?: StorageDriver;
  /** Announcements of robot changes by other processes (Redis), heard before createAuth resolves. */
  robotChanges?: RobotChanges;
}

/** Where the built-in token server keeps its keys unless auth.token.keydir says. */
export function defaultKeyDir(config: RegistryConfig): string | undefined {
  const root = config.storage.filesystem?.rootdirectory;
  return root === undefined ? undefined : path.join(root, 'auth', 'token-keys');
}

export async function createAuth(config: RegistryConfig, options: AuthSetupOptions): Promise<AuthSetup> {
  const { logger } = options;
  const auth = config.auth;
  const htpasswdConfig = auth?.htpasswd;
  const htpasswd = htpasswdConfig ? new Htpasswd({ path: htpasswdConfig.path, logger, now: options.now }) : undefined;
  const close = async () => {
    await htpasswd?.close();
  };
  if (!auth?.access && !auth?.token) {
    const authenticator = new Authenticator({
      htpasswd,
      realm: htpasswdConfig?.realm ?? 'Registry Realm',
      anonymousPull: auth?.anonymouspull ?? false,
    });
    const account = htpasswd && (async (user: string) => {
      const stamp = htpasswd.credentialStamp(user);
      return stamp === undefined ? undefined : { stamp };
    });
    return { authenticator, account, close };
  }

  try {
    // Loaded only here: jose and the token modules cost a private registry on
    // Basic auth a few megabytes of memory it would never use (issue 14).
    const [{ AccessPolicyFile }, { Accounts }, { KeyStore }, { RobotStore }, { TokenAuthenticator }, { TokenIssuer }, { TokenService }, { loadExternalKeys, TokenVerifier }] =
      await Promise.all([
        import('./access-policy.ts'),
        import('./accounts.ts'),
        import('./keys.ts'),
        import('./robots.ts'),
        import('./token-auth.ts'),
        import('./token-issuer.ts'),
        import('./token-service.ts'),
        import('./token-verifier.ts'),
      ]);
    const token = auth.token;
    const service = token?.service ?? DEFAULT_SERVICE;
    const issuerName = token?.issuer ?? DEFAULT_ISSUER;
    let external = new Map<string, KeyObject>();
    let roots: X509Certificate[] = [];
    const jwksUrl = token?.jwks !== undefined && /^https?:\/\//i.test(token.jwks) ? token.jwks : undefined;
    const jwksFile = jwksUrl ? undefined : token?.jwks;
    if (token?.rootcertbundle || jwksFile) {
      try {
        ({ keys: external, roots } = await loadExternalKeys({ rootcertbundle: token?.rootcertbundle, jwks: jwksFile }));
      } catch (err) {
        throw new ConfigError(`auth.token.${token?.rootcertbundle ? 'rootcertbundle' : 'jwks'}: ${(err as Error).message}`);
      }
    }
    let remote: RemoteJwks | undefined;
    if (jwksUrl) {
      remote = new (await import('./remote-jwks.ts')).RemoteJwks(jwksUrl, logger, options.now);
      try {
        await remote.load();
      } catch (err) {
        // As with Redis: refuse to start rather than refuse every token.
        throw new ConfigError(`auth.token.jwks: cannot fetch the JWK set: ${(err as Error).message}`);
      }
    }

    let policyFile: AccessPolicyFile | undefined;
    let keys: KeyStore | undefined;
    if (auth.access) {
      try {
        policyFile = new AccessPolicyFile({ path: auth.access, logger, now: options.now });
      } catch (err) {
        throw new ConfigError(`auth.access: ${(err as Error).message}`);
      }
      const dir = token?.keydir ?? defaultKeyDir(config);
      if (!dir) throw new ConfigError('auth.token.keydir: required when the storage is not a filesystem (a directory every replica shares)');
      const expiration = token?.expiration ?? 300_000;
      const refresh = token?.refreshexpiration ?? 720 * 3_600_000;
      try {
        keys = await KeyStore.open({
          dir,
          algorithm: token?.signingalgorithm,
          rotationMs: token?.keyrotation ?? 720 * 3_600_000,
          // A replaced key verifies what it signed for as long as that can live.
          overlapMs: Math.max(expiration, refresh),
          now: options.now,
          logger,
        });
      } catch (err) {
        throw new ConfigError(`auth.token.keydir: ${(err as Error).message}`);
      }
    }

    const verifier = new TokenVerifier({
      issuer: issuerName,
      service,
      now: options.now,
      canonicalName: options.canonicalName,
      // Only an external server's clock may differ from ours.
      clockToleranceS: external.size > 0 || remote ? 60 : 0,
      keys: async (kid) => external.get(kid) ?? (await keys?.verificationKey(kid))?.publicKey ?? (await remote?.key(kid)),
      roots,
    });
    const robots = options.driver && new RobotStore(options.driver, { now: options.now });
    if (robots && options.robotChanges) await options.robotChanges.subscribe((name) => robots.forget(name));
    const accounts = policyFile && new Accounts(() => policyFile.current(), htpasswd, robots, options.now);
    const authenticator = new TokenAuthenticator({ verifier, service, realm: token?.realm, accounts });
    const tokens =
      keys && accounts
        ? new TokenService(
            new TokenIssuer({
              issuer: issuerName,
              service,
              keys,
              rights: (subject) => accounts.rights(subject),
              expiresInS: Math.max(1, Math.round((token?.expiration ?? 300_000) / 1000)),
              refreshExpiresInS: Math.max(1, Math.round((token?.refreshexpiration ?? 720 * 3_600_000) / 1000)),
              now: options.now,
              canonicalName: options.canonicalName,
              credentialStamp: (user) => accounts.stamp(user),
            }),
            accounts,
          )
        : undefined;
    logger.info({ service, issuer: issuerName, builtin: tokens !== undefined, external: external.size, ...(jwksUrl ? { jwks: jwksUrl } : {}) }, 'token auth on');
    const account =
      accounts &&
      (async (user: string): Promise<AccountState | undefined> => {
        const stamp = await accounts.stamp(user);
        const rights = stamp === undefined ? undefined : await accounts.rights({ user });
        return rights && { stamp: stamp!, may: (name, action) => rights(name).has(action) };
      });
    return { authenticator, tokens, account, close };
  } catch (err) {
    await close();
    throw err;
  }
}
