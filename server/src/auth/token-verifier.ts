// Checks bearer tokens on registry requests: a JWT signed by a trusted key
// (ours, or an external token server's from auth.token.rootcertbundle /
// auth.token.jwks), from the configured issuer, for this service, within its
// lifetime. The signing key is found as distribution finds it, in this order:
// a certificate chain in the header (`x5c`) leading to a certificate of the
// bundle; a key in the header (`jwk`) that is one of the trusted keys or
// carries such a chain; a trusted key named by `kid` (libtrust key ID, JWK
// thumbprint or a JWK set's kid). `alg: none` and HMAC algorithms are never
// accepted; neither is a refresh token used as an access token.
// A verified token is remembered (keyed by its text) until it expires:
// clients send the same token with every request of a push.
import { createHash, createPublicKey, type KeyObject, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { decodeProtectedHeader, errors as joseErrors, jwtVerify, type JWTPayload, type ProtectedHeaderParameters } from 'jose';
import { LruCache } from '../registry/lru.ts';
import type { Action } from './access-policy.ts';
import { keyId } from './keys.ts';
import type { AccessEntry } from './scope.ts';
import { UntrustedChain, verifyCertChain } from './x5c.ts';

export const ACCESS_ALGORITHMS = ['ES256', 'ES384', 'ES512', 'RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'EdDSA'];

/** What a verified token says. */
export interface VerifiedToken {
  /** The subject (user or robot); undefined for an anonymous token. */
  readonly user?: string;
  /** Repository (as this registry names it) → actions granted. */
  readonly repositories: ReadonlyMap<string, ReadonlySet<Action>>;
  /** registry:catalog:* was granted. */
  readonly catalog: boolean;
  /** ms since the epoch. */
  readonly expires: number;
}

import { InvalidToken } from './token-errors.ts';

export { InvalidToken };

export type KeyResolver = (kid: string) => Promise<KeyObject | undefined>;

export interface TokenVerifierOptions {
  issuer: string;
  /** The service (audience) tokens must be for. */
  service: string;
  keys: KeyResolver;
  /** Certificates an `x5c` chain in a token may lead to (auth.token.rootcertbundle); none: such tokens are refused. */
  roots?: readonly X509Certificate[];
  now?: () => number;
  /** Maps a name in a token onto this registry's name for it (the mirror's canonical names). */
  canonicalName?: (name: string) => string;
  /** Seconds of clock difference tolerated with an external token server. */
  clockToleranceS?: number;
}

const CACHE_ENTRIES = 10_000;

export class TokenVerifier {
  private readonly now: () => number;
  private readonly cache = new LruCache<string, VerifiedToken>(CACHE_ENTRIES, () => 1);

  constructor(private readonly options: TokenVerifierOptions) {
    this.now = options.now ?? Date.now;
  }

  /** The token's grants; throws InvalidToken saying why not. */
  async verify(token: string): Promise<VerifiedToken> {
    const cached = this.cache.get(token);
    if (cached) {
      if (cached.expires > this.now()) return cached;
      this.cache.delete(token);
      throw new InvalidToken('the token has expired');
    }
    let header: ProtectedHeaderParameters;
    try {
      header = decodeProtectedHeader(token);
    } catch {
      throw new InvalidToken('not a JWT');
    }
    const key = await this.signingKey(header);
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, key, {
        issuer: this.options.issuer,
        audience: this.options.service,
        algorithms: ACCESS_ALGORITHMS,
        currentDate: new Date(this.now()),
        clockTolerance: this.options.clockToleranceS ?? 0,
        requiredClaims: ['exp'],
      }));
    } catch (err) {
      throw new InvalidToken(describe(err));
    }
    if (payload.token_use !== undefined) throw new InvalidToken('a refresh token is not an access token');
    const verified = this.grants(payload);
    this.cache.set(token, verified);
    return verified;
  }

  /** The key the header says signed the token, if it is trusted (distribution's order: x5c, jwk, kid). */
  private async signingKey(header: ProtectedHeaderParameters): Promise<KeyObject> {
    if (header.x5c !== undefined) return this.chainKey(header.x5c);
    if (header.jwk !== undefined) {
      let key: KeyObject;
      try {
        if ('d' in header.jwk) throw new Error('a private key');
        key = createPublicKey({ key: header.jwk as never, format: 'jwk' });
      } catch {
        throw new InvalidToken('the token header\'s jwk is not a public key');
      }
      if (header.jwk.x5c !== undefined) {
        if (!sameKey(this.chainKey(header.jwk.x5c), key)) throw new InvalidToken('the token header\'s jwk is not the key of its certificate');
        return key;
      }
      const trusted = await this.options.keys(libtrustKeyId(key));
      if (!trusted || !sameKey(trusted, key)) throw new InvalidToken('the token is signed by an unknown key');
      return key;
    }
    if (!header.kid) throw new InvalidToken('the token names no key (kid)');
    const key = await this.options.keys(header.kid);
    if (!key) throw new InvalidToken('the token is signed by an unknown key');
    return key;
  }

  private chainKey(x5c: unknown): KeyObject {
    const roots = this.options.roots ?? [];
    if (roots.length === 0) throw new InvalidToken('the token carries a certificate chain (x5c) and no auth.token.rootcertbundle is configured');
    try {
      return verifyCertChain(x5c, roots, this.now());
    } catch (err) {
      if (err instanceof UntrustedChain) throw new InvalidToken(`the token's certificate chain is not trusted: ${err.message}`);
      throw err;
    }
  }

  private grants(payload: JWTPayload): VerifiedToken {
    const repositories = new Map<string, Set<Action>>();
    let catalog = false;
    const entries = Array.isArray(payload.access) ? (payload.access as unknown[]) : [];
    for (const raw of entries) {
      const entry = raw as Partial<AccessEntry>;
      if (typeof entry?.name !== 'string' || !Array.isArray(entry.actions)) continue;
      const actions = entry.actions.filter((a): a is string => typeof a === 'string');
      if (entry.type === 'registry' && entry.name === 'catalog') {
        catalog ||= actions.includes('*');
        continue;
      }
      if (entry.type !== 'repository') continue;
      let name = entry.name;
      try {
        name = this.options.canonicalName ? this.options.canonicalName(name) : name;
      } catch {
        continue;
      }
      let set = repositories.get(name);
      if (!set) repositories.set(name, (set = new Set()));
      for (const a of actions) {
        // distribution's token servers wrote "*" for delete before "delete" existed.
        if (a === '*') ['pull', 'push', 'delete'].forEach((x) => set.add(x as Action));
        else if (a === 'pull' || a === 'push' || a === 'delete') set.add(a);
      }
    }
    const sub = typeof payload.sub === 'string' && payload.sub !== '' ? payload.sub : undefined;
    return { user: sub, repositories, catalog, expires: (payload.exp as number) * 1000 };
  }
}

function describe(err: unknown): string {
  if (err instanceof joseErrors.JWTExpired) return 'the token has expired';
  if (err instanceof joseErrors.JWTClaimValidationFailed) return `the token's ${err.claim} claim is not accepted here`;
  if (err instanceof joseErrors.JWSSignatureVerificationFailed) return 'the token signature does not verify';
  if (err instanceof joseErrors.JOSEAlgNotAllowed) return 'the token algorithm is not accepted';
  return 'the token is not valid';
}

function sameKey(a: KeyObject, b: KeyObject): boolean {
  return a.export({ type: 'spki', format: 'der' }).equals(b.export({ type: 'spki', format: 'der' }));
}

export interface ExternalKeys {
  /** kid → key. */
  keys: Map<string, KeyObject>;
  /** The bundle's certificates, which tokens' x5c chains may lead to. */
  roots: X509Certificate[];
}

/**
 * Keys of an external token server: the certificates of auth.token.rootcertbundle
 * (distribution's key; named by their libtrust key ID, as distribution's token
 * servers write `kid`, or by their JWK thumbprint) and the keys of a JWKS file
 * (named by their `kid`).
 */
export async function loadExternalKeys(files: { rootcertbundle?: string; jwks?: string }): Promise<ExternalKeys> {
  const keys = new Map<string, KeyObject>();
  const roots: X509Certificate[] = [];
  if (files.rootcertbundle) {
    const pem = readFileSync(files.rootcertbundle, 'utf8');
    const certs = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
    if (certs.length === 0) throw new Error(`${files.rootcertbundle}: no PEM certificate in it`);
    for (const pemCert of certs) {
      const cert = new X509Certificate(pemCert);
      roots.push(cert);
      const key = cert.publicKey;
      keys.set(libtrustKeyId(key), key);
      keys.set(await keyId(key), key);
    }
  }
  if (files.jwks) for (const [kid, key] of parseJwks(readFileSync(files.jwks, 'utf8'), files.jwks)) keys.set(kid, key);
  return { keys, roots };
}

/** The public keys of a JWK set document, by kid; throws naming `source`. */
export function parseJwks(text: string, source: string): Map<string, KeyObject> {
  const keys = new Map<string, KeyObject>();
  let doc: { keys?: Array<Record<string, unknown>> };
  try {
    doc = JSON.parse(text);
  } catch {
    throw new Error(`${source}: not JSON`);
  }
  if (!Array.isArray(doc?.keys)) throw new Error(`${source}: not a JWK set (no "keys" list)`);
  for (const jwk of doc.keys) {
    if (typeof jwk?.kid !== 'string') throw new Error(`${source}: a key has no "kid"`);
    if ('d' in jwk) throw new Error(`${source}: key ${jwk.kid} is a private key; give the public half`);
    try {
      keys.set(jwk.kid, createPublicKey({ key: jwk as never, format: 'jwk' }));
    } catch (err) {
      throw new Error(`${source}: key ${jwk.kid}: ${(err as Error).message}`);
    }
  }
  return keys;
}

/** docker/libtrust's key ID: the first 240 bits of SHA-256 of the DER public key, base32 in 12 groups of 4. */
export function libtrustKeyId(key: KeyObject): string {
  const der = key.export({ type: 'spki', format: 'der' });
  const b32 = base32(createHash('sha256').update(der).digest().subarray(0, 30));
  return b32.match(/.{4}/g)!.join(':');
}

function base32(data: Buffer): string {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = 0;
  let value = 0;
  let out = '';
  for (const byte of data) {
    value = (value << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      out += alphabet[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) out += alphabet[(value << (5 - bits)) & 31];
  return out;
}
