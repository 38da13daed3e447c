// The token server's signing keys: PEM private keys (PKCS#8 or SEC1/PKCS#1)
// in one directory, made on first start (mode 0600) or put there by the
// operator. The newest key signs; an older one keeps verifying for `overlapMs`
// after a newer one appeared (the longest a token it signed can live), so a
// rotation logs nobody out. A key's age is its file's mtime. Replicas sharing
// the directory find each other's keys: an unknown `kid` makes the directory
// be read again (at most once a second).
import { createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject, randomBytes } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { calculateJwkThumbprint, exportJWK, type JWK } from 'jose';
import type { Logger } from '../log/logger.ts';

export type SigningAlgorithm = 'ES256' | 'RS256';

export interface SigningKey {
  readonly kid: string;
  readonly alg: SigningAlgorithm;
  readonly privateKey: KeyObject;
  readonly publicKey: KeyObject;
  /** ms since the epoch (the file's mtime). */
  readonly created: number;
  readonly file: string;
}

export interface KeyStoreOptions {
  dir: string;
  /** The algorithm of keys made here; keys put in by hand sign with their own (EC P-256: ES256, RSA: RS256). */
  algorithm?: SigningAlgorithm;
  /** A new key is made when the newest is this old (0: never). */
  rotationMs: number;
  /** How long a replaced key still verifies. */
  overlapMs: number;
  now?: () => number;
  logger?: Pick<Logger, 'info' | 'warn'>;
}

/** Files we made ourselves, and may delete once they no longer verify anything. */
const GENERATED = /^token-\d+-[0-9a-f]+\.pem$/;
const RESCAN_MS = 1_000;

export class KeyStore {
  private keys: SigningKey[] = [];
  private lastScan = -Infinity;
  private readonly now: () => number;
  private making?: Promise<SigningKey>;

  private constructor(private readonly options: KeyStoreOptions) {
    this.now = options.now ?? Date.now;
  }

  /** Opens the directory, making it and a first key when there is none. Throws when a key file is unusable. */
  static async open(options: KeyStoreOptions): Promise<KeyStore> {
    const store = new KeyStore(options);
    mkdirSync(options.dir, { recursive: true, mode: 0o700 });
    await store.scan(true);
    if (store.keys.length === 0) await store.make();
    return store;
  }

  /** The key to sign with now, rotating first when it is due. */
  async signingKey(): Promise<SigningKey> {
    let newest = this.keys[this.keys.length - 1];
    if (this.rotationDue(newest)) {
      // Another replica may have rotated already.
      await this.scan(false);
      newest = this.keys[this.keys.length - 1];
      if (this.rotationDue(newest)) newest = await this.make();
    }
    return newest;
  }

  /** The public key for `kid`, if it still verifies. */
  async verificationKey(kid: string): Promise<SigningKey | undefined> {
    let key = this.trusted().find((k) => k.kid === kid);
    if (!key && this.now() - this.lastScan >= RESCAN_MS) {
      await this.scan(false);
      key = this.trusted().find((k) => k.kid === kid);
    }
    return key;
  }

  /** The keys that verify tokens now, oldest first. */
  trusted(): SigningKey[] {
    const now = this.now();
    return this.keys.filter((k, i) => i === this.keys.length - 1 || now < this.keys[i + 1].created + this.options.overlapMs);
  }

  /** The public keys that verify tokens now, as a JWK set. */
  async jwks(): Promise<{ keys: JWK[] }> {
    return { keys: await Promise.all(this.trusted().map(async (k) => ({ ...(await exportJWK(k.publicKey)), kid: k.kid, alg: k.alg, use: 'sig' }))) };
  }

  private rotationDue(key: SigningKey | undefined): boolean {
    return !key || (this.options.rotationMs > 0 && this.now() - key.created >= this.options.rotationMs);
  }

  /**
   * Reads every *.pem in the directory. At start a bad file stops the server;
   * later it is skipped with a warning (someone may be writing it right now).
   */
  private async scan(strict: boolean): Promise<void> {
    this.lastScan = this.now();
    const found: SigningKey[] = [];
    for (const name of readdirSync(this.options.dir).filter((n) => n.endsWith('.pem')).sort()) {
      const file = path.join(this.options.dir, name);
      try {
        found.push(await loadKey(file));
      } catch (err) {
        if (strict) throw new Error(`${file}: ${(err as Error).message}`);
        this.options.logger?.warn({ file, error: (err as Error).message }, 'token key skipped');
      }
    }
    found.sort((a, b) => a.created - b.created || a.kid.localeCompare(b.kid));
    this.keys = found;
    this.removeRetired();
  }

  private make(): Promise<SigningKey> {
    this.making ??= this.generate().finally(() => {
      this.making = undefined;
    });
    return this.making;
  }

  private async generate(): Promise<SigningKey> {
    const alg = this.options.algorithm ?? 'ES256';
    const { privateKey } =
      alg === 'ES256' ? generateKeyPairSync('ec', { namedCurve: 'P-256' }) : generateKeyPairSync('rsa', { modulusLength: 2048 });
    const created = this.now();
    const name = `token-${created}-${randomBytes(4).toString('hex')}.pem`;
    const file = path.join(this.options.dir, name);
    const tmp = `${file}.tmp`;
    writeFileSync(tmp, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600, flag: 'wx' });
    // The key's age is its mtime: set it from our clock, so that rotation and overlap follow one time.
    utimesSync(tmp, created / 1000, created / 1000);
    renameSync(tmp, file);
    const key = await loadKey(file);
    this.keys = [...this.keys, key].sort((a, b) => a.created - b.created || a.kid.localeCompare(b.kid));
    this.options.logger?.info({ kid: key.kid, alg: key.alg }, 'token signing key made');
    this.removeRetired();
    return key;
  }

  /** Deletes keys we made that verify nothing any more; keys put here by hand are left alone. */
  private removeRetired(): void {
    const trusted = new Set(this.trusted());
    for (const key of this.keys) {
      if (trusted.has(key) || !GENERATED.test(path.basename(key.file))) continue;
      rmSync(key.file, { force: true });
      this.options.logger?.info({ kid: key.kid }, 'token signing key retired');
    }
    this.keys = this.keys.filter((k) => trusted.has(k) || !GENERATED.test(path.basename(k.file)));
  }
}

async function loadKey(file: string): Promise<SigningKey> {
  const privateKey = createPrivateKey(readFileSync(file));
  const publicKey = createPublicKey(privateKey);
  let alg: SigningAlgorithm;
  if (privateKey.asymmetricKeyType === 'ec' && privateKey.asymmetricKeyDetails?.namedCurve === 'prime256v1') {
    alg = 'ES256';
  } else if (privateKey.asymmetricKeyType === 'rsa' && (privateKey.asymmetricKeyDetails?.modulusLength ?? 0) >= 2048) {
    alg = 'RS256';
  } else {
    throw new Error('not an EC P-256 or RSA (2048 bits or more) private key');
  }
  return { kid: await keyId(publicKey), alg, privateKey, publicKey, created: statSync(file).mtimeMs, file };
}

/** The RFC 7638 thumbprint of a public key: its `kid`. */
export async function keyId(publicKey: KeyObject): Promise<string> {
  return calculateJwkThumbprint(await exportJWK(publicKey));
}
