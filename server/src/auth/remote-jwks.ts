// auth.token.jwks as a URL: the JWK set another token server publishes (ours
// at /auth/jwks.json), fetched at start and again when a token names a key it
// does not hold (the issuer rotated; at most every MIN_REFETCH_MS, so tokens
// with made-up kids cannot make us hammer the issuer) and when the set is
// older than MAX_AGE_MS (a key the issuer removed stops being trusted). A
// failed refetch keeps the keys it had: the issuer being down for a moment
// must not refuse every client here.
import type { KeyObject } from 'node:crypto';
import type { Logger } from '../log/logger.ts';
import { parseJwks } from './token-verifier.ts';

const MIN_REFETCH_MS = 10_000;
const MAX_AGE_MS = 300_000;
const TIMEOUT_MS = 5_000;
/** A JWK set of a few keys is a few KB; anything much larger is not one. */
const MAX_BYTES = 256 * 1024;

export class RemoteJwks {
  private keys = new Map<string, KeyObject>();
  private fetchedAt = -Infinity;
  private attemptedAt = -Infinity;
  private inflight?: Promise<void>;

  constructor(
    readonly url: string,
    private readonly logger: Pick<Logger, 'info' | 'warn'>,
    private readonly now: () => number = Date.now,
  ) {}

  /** The first fetch; throws saying why it failed. */
  async load(): Promise<void> {
    await this.fetchNow();
  }

  async key(kid: string): Promise<KeyObject | undefined> {
    const now = this.now();
    const stale = now - this.fetchedAt >= MAX_AGE_MS;
    if ((stale || !this.keys.has(kid)) && now - this.attemptedAt >= MIN_REFETCH_MS) await this.refresh();
    return this.keys.get(kid);
  }

  private refresh(): Promise<void> {
    this.inflight ??= this.fetchNow()
      .catch((err: Error) => this.logger.warn({ url: this.url, err: err.message }, 'auth.token.jwks: refetch failed, keeping the keys we have'))
      .finally(() => {
        this.inflight = undefined;
      });
    return this.inflight;
  }

  private async fetchNow(): Promise<void> {
    this.attemptedAt = this.now();
    const res = await fetch(this.url, { redirect: 'error', signal: AbortSignal.timeout(TIMEOUT_MS), headers: { accept: 'application/jwk-set+json, application/json' } });
    if (res.status !== 200) throw new Error(`${this.url} answered ${res.status}`);
    const keys = parseJwks(await readCapped(res, this.url), this.url);
    const added = [...keys.keys()].filter((kid) => !this.keys.has(kid));
    this.keys = keys;
    this.fetchedAt = this.now();
    if (added.length > 0) this.logger.info({ url: this.url, kids: added }, 'auth.token.jwks: keys fetched');
  }
}

/** The body as text, refusing (and no longer reading) one past MAX_BYTES. */
async function readCapped(res: Response, url: string): Promise<string> {
  const chunks: Uint8Array[] = [];
  let size = 0;
  for await (const chunk of res.body ?? []) {
    size += chunk.length;
    if (size > MAX_BYTES) {
      await res.body?.cancel();
      throw new Error(`${url}: more than ${MAX_BYTES} bytes`);
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}
