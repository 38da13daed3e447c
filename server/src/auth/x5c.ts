// Certificate chains in token headers (`x5c`), trusted as distribution trusts
// them (registry/auth/token): the first certificate is the signer's, the rest
// are intermediates, and the chain must lead to a certificate of
// auth.token.rootcertbundle, any key usage allowed. A token server can then sign
// with a key the registry has never seen (a leaf its CA issued) and rotate it
// without touching the registry. Node has no path builder, so this one is small
// and strict: a few certificates at most, each within its validity, each issuer
// a CA whose signature on the certificate below verifies.
import { type KeyObject, X509Certificate } from 'node:crypto';

/** Longer chains are refused before any signature is checked. */
export const MAX_CHAIN = 5;
const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;

export class UntrustedChain extends Error {}

/** The public key of the chain's first certificate when the chain leads to one of `roots` at `now`; throws UntrustedChain. */
export function verifyCertChain(x5c: unknown, roots: readonly X509Certificate[], now: number): KeyObject {
  if (!Array.isArray(x5c) || x5c.length === 0) throw new UntrustedChain('x5c is not a list of certificates');
  if (x5c.length > MAX_CHAIN) throw new UntrustedChain(`x5c holds more than ${MAX_CHAIN} certificates`);
  const chain = x5c.map((entry, i) => {
    // Standard base64 (not base64url), as RFC 7515 and distribution have it.
    if (typeof entry !== 'string' || !BASE64.test(entry)) throw new UntrustedChain(`x5c[${i}] is not base64 DER`);
    try {
      return new X509Certificate(Buffer.from(entry, 'base64'));
    } catch {
      throw new UntrustedChain(`x5c[${i}] is not a certificate`);
    }
  });
  const leaf = chain[0];
  const intermediates = chain.slice(1);
  let current = leaf;
  for (let depth = 0; depth <= MAX_CHAIN; depth++) {
    if (!within(current, now)) throw new UntrustedChain(`${describe(current)} is not valid at this time`);
    // A certificate of the bundle is trusted as it is (a token server's own self-signed certificate).
    if (roots.some((root) => root.raw.equals(current.raw))) return leaf.publicKey;
    const below = current;
    const issuer =
      roots.find((c) => issues(c, below, now)) ?? intermediates.find((c) => c !== below && issues(c, below, now));
    if (!issuer) throw new UntrustedChain(`${describe(current)} is not issued by a certificate of auth.token.rootcertbundle or of the chain`);
    current = issuer;
  }
  throw new UntrustedChain('the chain is too long');
}

/** `issuer` is a CA, valid now, named as `cert`'s issuer (and allowed to sign certificates), and its signature verifies. */
function issues(issuer: X509Certificate, cert: X509Certificate, now: number): boolean {
  return issuer.ca && within(issuer, now) && cert.checkIssued(issuer) && cert.verify(issuer.publicKey);
}

function within(cert: X509Certificate, now: number): boolean {
  return Date.parse(cert.validFrom) <= now && now <= Date.parse(cert.validTo);
}

function describe(cert: X509Certificate): string {
  return `the certificate "${cert.subject.replace(/\n/g, ', ')}"`;
}
