// htpasswd files with bcrypt entries (as written by `htpasswd -B`), checked
// with bcryptjs. A bcrypt compare costs milliseconds to tens of milliseconds
// and clients send Basic credentials on every request, so successful
// verifications are remembered for a short time, keyed by an HMAC of the
// credentials under a per-process random key (the cache never holds a
// password or anything a password could be recovered from cheaply).
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import bcrypt from 'bcryptjs';
import { LruCache } from '../registry/lru.ts';

export interface HtpasswdOptions {
  path: string;
  /** How long a successful verification is trusted. */
  cacheTtlMs?: number;
  /** How often the file's mtime is checked for changes. */
  reloadCheckMs?: number;
}

// A valid hash of a random password, compared against when the user is unknown,
// so that an unknown user costs as much time as a wrong password.
let dummyHash: string | undefined;
const dummy = () => (dummyHash ??= bcrypt.hashSync(randomBytes(16).toString('hex'), 10));

export class Htpasswd {
  private users = new Map<string, string>();
  private readonly verified: LruCache<string, { user: string; expires: number }>;
  private readonly hmacKey = randomBytes(32);
  private readonly cacheTtlMs: number;
  private readonly reloadCheckMs: number;
  private loadedMtime = 0;
  private lastCheck = 0;

  constructor(private readonly options: HtpasswdOptions) {
    this.cacheTtlMs = options.cacheTtlMs ?? 60_000;
    this.reloadCheckMs = options.reloadCheckMs ?? 2_000;
    this.verified = new LruCache(10_000, () => 1);
    this.load();
  }

  get userCount(): number {
    return this.users.size;
  }

  /** The user name when the credentials are right, else undefined. */
  async verify(user: string, password: string): Promise<string | undefined> {
    this.maybeReload();
    const key = createHmac('sha256', this.hmacKey).update(user).update('\0').update(password).digest('base64');
    const hit = this.verified.get(key);
    if (hit && hit.expires > Date.now() && hit.user === user) return user;

    const hash = this.users.get(user);
    const ok = await bcrypt.compare(password, normalise(hash ?? dummy()));
    if (!ok || hash === undefined) return undefined;
    this.verified.set(key, { user, expires: Date.now() + this.cacheTtlMs });
    return user;
  }

  private maybeReload(): void {
    const now = Date.now();
    if (now - this.lastCheck < this.reloadCheckMs) return;
    this.lastCheck = now;
    try {
      if (statSync(this.options.path).mtimeMs !== this.loadedMtime) this.load();
    } catch {
      // The file went away: keep the users we have rather than lock everyone out.
    }
  }

  private load(): void {
    const stat = statSync(this.options.path);
    const text = readFileSync(this.options.path, 'utf8');
    this.users = parseHtpasswd(text, this.options.path);
    this.loadedMtime = stat.mtimeMs;
    this.verified.clear();
  }
}

export function parseHtpasswd(text: string, source = 'htpasswd'): Map<string, string> {
  const users = new Map<string, string>();
  text.split(/\r?\n/).forEach((line, i) => {
    const t = line.trim();
    if (t === '' || t.startsWith('#')) return;
    const colon = t.indexOf(':');
    if (colon <= 0) throw new Error(`${source}:${i + 1}: expected user:hash`);
    const user = t.slice(0, colon);
    const hash = t.slice(colon + 1);
    if (!/^\$2[abxy]\$\d\d\$[./A-Za-z0-9]{53}$/.test(hash)) {
      throw new Error(`${source}:${i + 1}: user ${user} has no bcrypt hash (create entries with htpasswd -B)`);
    }
    users.set(user, hash);
  });
  return users;
}

// bcryptjs reads $2a$/$2b$; Apache's $2y$ is the same algorithm under another name.
function normalise(hash: string): string {
  return hash.startsWith('$2y$') || hash.startsWith('$2x$') ? `$2b$${hash.slice(4)}` : hash;
}

export function hashPassword(password: string, cost = 10): string {
  return bcrypt.hashSync(password, cost);
}

/** Constant-time string comparison for shared secrets. */
export function safeEqual(a: string, b: string): boolean {
  const ka = createHmac('sha256', 'cmp').update(a).digest();
  const kb = createHmac('sha256', 'cmp').update(b).digest();
  return timingSafeEqual(ka, kb);
}
