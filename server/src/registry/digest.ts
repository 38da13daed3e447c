// Digests as the OCI image spec defines them, restricted to the algorithms
// we can verify. Every digest that reaches storage went through parseDigest,
// which is what keeps "../" and friends out of storage keys.
import { createHash, type Hash } from 'node:crypto';
import { RegistryError } from './errors.ts';

export type Algorithm = 'sha256' | 'sha384' | 'sha512';

const HEX_LENGTH: Record<Algorithm, number> = { sha256: 64, sha384: 96, sha512: 128 };

export interface Digest {
  readonly algorithm: Algorithm;
  readonly hex: string;
  /** `algorithm:hex`, the canonical string form. */
  readonly value: string;
}

const DIGEST_RE = /^(sha256|sha384|sha512):([a-f0-9]+)$/;

export function tryParseDigest(input: string): Digest | undefined {
  const m = DIGEST_RE.exec(input);
  if (!m) return undefined;
  const algorithm = m[1] as Algorithm;
  if (m[2].length !== HEX_LENGTH[algorithm]) return undefined;
  return { algorithm, hex: m[2], value: input };
}

export function parseDigest(input: string): Digest {
  const d = tryParseDigest(input);
  if (!d) throw new RegistryError('DIGEST_INVALID', `invalid digest: ${truncate(input)}`);
  return d;
}

/** True when the string has the shape `<alg>:<something>` (so it is meant as a digest, not a tag). */
export function looksLikeDigest(reference: string): boolean {
  return reference.includes(':');
}

export function newHash(algorithm: Algorithm): Hash {
  return createHash(algorithm);
}

export function digestOf(data: Uint8Array, algorithm: Algorithm = 'sha256'): Digest {
  const hex = createHash(algorithm).update(data).digest('hex');
  return { algorithm, hex, value: `${algorithm}:${hex}` };
}

export function truncate(s: string, max = 100): string {
  return s.length > max ? `${s.slice(0, max)}…` : s;
}
