// htpasswd files with bcrypt entries (as written by `htpasswd -B`), checked
// with bcryptjs on worker threads. A bcrypt compare costs tens to hundreds of
// milliseconds and clients send Basic credentials on every request, so
// verifications are remembered for a short time (successes for a minute,
// failures for a few seconds), keyed by an HMAC of the credentials under a
// per-process random key (the cache never holds a password or anything a
// password could be recovered from cheaply), and concurrent checks of the
// same credentials share one compare.
//
// Under a flood of wrong passwords: the bcrypt queue is bounded (a compare
// beyond it is refused with TOOMANYREQUESTS, not queued), successes and
// failures are cached apart (failures cannot evict anyone's verified
// credentials), and a success is recorded with the hash it was checked
// against, so that while the queue is full even an expired success is
// answered without a compare as long as the user's hash has not changed.
import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import bcrypt from 'bcryptjs';
import type { Logger } from '../log/logger.ts';
import { RegistryError } from '../registry/errors.ts';
import { LruCache } from '../registry/lru.ts';
import { BcryptPool, BcryptPoolBusy } from './bcrypt-pool.ts';

export interface HtpasswdOptions {
  path: string;
  /** How long a successful verification is trusted. */
  cacheTtlMs?: number;
  /** How often the file's mtime is checked for changes. */
  reloadCheckMs?: number;
  /** Where a reload's bad lines are reported. */
  logger?: Pick<Logger, 'warn'>;
  /** The bcrypt pool (tests inject a small one); default: one per instance, DEFAULT_MAX_PENDING queued. */
  pool?: BcryptPool;
  /** The clock of reload checks (tests move it). */
  now?: () => number;
}

/** A failed-login point taken before a compare; given back when the password was right. */
export interface LoginReservation {
  refund(): Promise<void>;
}

/**
 * One client's failed-login budget (see http/rate-limit.ts). A point is
 * reserved before a bcrypt compare runs, so concurrent guesses cannot all be
 * checked before any of them has failed; wrong credentials answered without
 * a compare of the request's own (cached, or shared with a concurrent check
 * of the same credentials) are charged after. Right credentials never spend
 * it: 60 parallel requests of one `docker push` are one compare, refunded.
 */
export interface LoginBudget {
  /** Takes a point, or throws (TOOMANYREQUESTS) when none is left. */
  reserve(): Promise<LoginReservation>;
  charge(): Promise<void>;
}

/** A line of an htpasswd file that holds no usable entry. */
export interface HtpasswdProblem {
  /** 1-based. */
  line: number;
  user?: string;
  /** Names the file, line and user, never the hash. */
  message: string;
}

// A valid cost-10 hash of a random, discarded password. Unknown users are
// checked against it, so that an unknown user costs as much time as a wrong
// password; its cost is replaced by the file's (see dummyHashFor).
const DUMMY_HASH = '$2b$10$M1I/juEJ1t/V14r4RO4qu.uYoxfxZ.0Svt4864P5bR/fW/Erps2Rq';
const DEFAULT_COST = 10;
const FAILURE_TTL_MS = 5_000;
const CACHE_ENTRIES = 10_000;

export class Htpasswd {
  private users = new Map<string, string>();
  private dummyHash = DUMMY_HASH;
  /** Successes only: failures cannot push them out. */
  private readonly verified: LruCache<string, { user: string; hash: string; expires: number }>;
  private readonly failed: LruCache<string, { user: string; expires: number }>;
  private readonly inflight = new Map<string, Promise<boolean>>();
  private readonly pool: BcryptPool;
  private readonly hmacKey = randomBytes(32);
  private readonly cacheTtlMs: number;
  private readonly reloadCheckMs: number;
  private loadedMtime = 0;
  private lastCheck = 0;

  constructor(private readonly options: HtpasswdOptions) {
    this.cacheTtlMs = options.cacheTtlMs ?? 60_000;
    this.reloadCheckMs = options.reloadCheckMs ?? 2_000;
    this.pool = options.pool ?? new BcryptPool();
    this.verified = new LruCache(CACHE_ENTRIES, () => 1);
    this.failed = new LruCache(CACHE_ENTRIES, () => 1);
    this.load(true);
  }

  get userCount(): number {
    return this.users.size;
  }

  /**
   * A short fingerprint of the user's current hash, or undefined when the user
   * is gone: a refresh token carries it, so a new password or a removed user
   * ends the refresh tokens issued before. The same on every replica (no
   * per-process key); the bcrypt hash behind it keeps its salt, so it tells
   * nothing about the password.
   */
  credentialStamp(user: string): string | undefined {
    this.maybeReload();
    const hash = this.users.get(user);
    return hash === undefined ? undefined : createHash('sha256').update(hash).digest('base64url').slice(0, 16);
  }

  /** The bcrypt cost unknown users are checked at. */
  get dummyCost(): number {
    return costOf(this.dummyHash);
  }

  /**
   * The user name when the credentials are right, else undefined. `budget`
   * is the client's failed-login budget, drawn on only by wrong credentials
   * and by compares this call starts.
   */
  async verify(user: string, password: string, budget?: LoginBudget): Promise<string | undefined> {
    this.maybeReload();
    const key = createHmac('sha256', this.hmacKey).update(user).update('\0').update(password).digest('base64');
    const now = Date.now();
    // A success counts only against the hash it was checked with (a reload may have changed it).
    const good = this.verified.get(key);
    const proven = good !== undefined && good.user === user && good.hash === this.users.get(user);
    if (proven && good.expires > now) return user;
    const bad = this.failed.get(key);
    if (bad && bad.expires > now && bad.user === user) {
      await budget?.charge();
      return undefined;
    }

    let check = this.inflight.get(key);
    const leader = !check;
    if (!check) {
      check = this.reserveAndCompare(user, password, key, budget).finally(() => this.inflight.delete(key));
      this.inflight.set(key, check);
    }
    let ok: boolean;
    try {
      ok = await check;
    } catch (err) {
      if (!(err instanceof BcryptPoolBusy)) throw err;
      // bcrypt of the same password against the same hash gives the same answer:
      // an expired success is still right, and keeps the user off the full queue.
      if (proven) return user;
      // 429 rather than 503: it is the spec's code for "slow down, retry later",
      // clients back off on it, and it carries Retry-After; nothing is wrong with
      // the registry (a 503 would read as an outage to health checks, load
      // balancers and our own mirror's stale-if-error). No failed login is
      // counted: no password was tried.
      throw new RegistryError('TOOMANYREQUESTS', 'too many logins being checked, retry shortly', { retryAfterSeconds: 1 });
    }
    if (ok) return user;
    if (!leader) await budget?.charge();
    return undefined;
  }

  /** A compare, paid for by a reserved failed-login point that a right password gives back. */
  private async reserveAndCompare(user: string, password: string, key: string, budget?: LoginBudget): Promise<boolean> {
    // No await without a budget: the compare is queued synchronously, in call order.
    const reservation = budget ? await budget.reserve() : undefined;
    let wrong = false;
    try {
      const ok = await this.compare(user, password, key);
      wrong = !ok;
      return ok;
    } finally {
      // Kept only for a wrong password; a refused or failed compare tried none.
      if (!wrong) await reservation?.refund();
    }
  }

  private async compare(user: string, password: string, key: string): Promise<boolean> {
    const hash = this.users.get(user);
    const generation = this.users;
    const ok = (await this.pool.compare(password, normalise(hash ?? this.dummyHash))) && hash !== undefined;
    if (ok && hash !== undefined) {
      this.verified.set(key, { user, hash, expires: Date.now() + this.cacheTtlMs });
    } else if (generation === this.users) {
      // A reload while comparing may have changed the password: do not cache the old answer.
      this.failed.set(key, { user, expires: Date.now() + FAILURE_TTL_MS });
    }
    return ok;
  }

  close(): Promise<void> {
    return this.pool.close();
  }

  private maybeReload(): void {
    const now = (this.options.now ?? Date.now)();
    if (now - this.lastCheck < this.reloadCheckMs) return;
    this.lastCheck = now;
    try {
      if (statSync(this.options.path).mtimeMs !== this.loadedMtime) this.load(false);
    } catch {
      // The file went away: keep the users we have rather than lock everyone out.
    }
  }

  /**
   * At startup (strict) a bad line stops the server, as a bad config does. On
   * a reload it must not: dropping the whole file kept users added correctly
   * locked out because of someone else's MD5 line, silently. So a reload
   * takes the valid entries and warns about each bad line (once per version
   * of the file: the mtime is taken as loaded).
   */
  private load(strict: boolean): void {
    const stat = statSync(this.options.path);
    const text = readFileSync(this.options.path, 'utf8');
    const { users, problems } = readHtpasswd(text, this.options.path);
    if (strict && problems.length > 0) throw new Error(problems[0].message);
    for (const { line, user, message } of problems) {
      this.options.logger?.warn({ file: this.options.path, line, user }, `htpasswd reload: skipped a line: ${message}`);
    }
    this.users = users;
    this.dummyHash = dummyHashFor(this.users.values());
    this.loadedMtime = stat.mtimeMs;
    // Successes stay: each is checked against the user's current hash.
    this.failed.clear();
  }
}

/** The entries of an htpasswd file; throws on the first bad line. */
export function parseHtpasswd(text: string, source = 'htpasswd'): Map<string, string> {
  const { users, problems } = readHtpasswd(text, source);
  if (problems.length > 0) throw new Error(problems[0].message);
  return users;
}

/** The valid entries of an htpasswd file, and the lines that are not. */
export function readHtpasswd(text: string, source = 'htpasswd'): { users: Map<string, string>; problems: HtpasswdProblem[] } {
  const users = new Map<string, string>();
  const problems: HtpasswdProblem[] = [];
  text.split(/\r?\n/).forEach((line, i) => {
    const t = line.trim();
    if (t === '' || t.startsWith('#')) return;
    const colon = t.indexOf(':');
    if (colon <= 0) {
      problems.push({ line: i + 1, message: `${source}:${i + 1}: expected user:hash` });
      return;
    }
    const user = t.slice(0, colon);
    const hash = t.slice(colon + 1);
    if (!/^\$2[abxy]\$\d\d\$[./A-Za-z0-9]{53}$/.test(hash)) {
      problems.push({ line: i + 1, user, message: `${source}:${i + 1}: user ${user} has no bcrypt hash (create entries with htpasswd -B)` });
      return;
    }
    users.set(user, hash);
  });
  return { users, problems };
}

/**
 * The dummy hash for a file's entries: DUMMY_HASH at the file's most common
 * cost (the higher one on a tie; 10 for an empty file). With a fixed cost 10,
 * a file written by `htpasswd -B` (cost 5) answered an unknown user ~30x
 * slower than a known one, which told the names apart. The most common cost
 * rather than the highest: one admin entry at cost 14 must not make every
 * unknown user cost more than a wrong password for everyone else. Changing
 * only the cost field keeps a well-formed hash: a compare does the full work
 * at that cost and cannot match (the digest was made at another cost).
 */
export function dummyHashFor(hashes: Iterable<string>): string {
  const counts = new Map<number, number>();
  for (const hash of hashes) {
    const cost = costOf(hash);
    counts.set(cost, (counts.get(cost) ?? 0) + 1);
  }
  let best = DEFAULT_COST;
  let bestCount = 0;
  for (const [cost, count] of counts) {
    if (count > bestCount || (count === bestCount && cost > best)) [best, bestCount] = [cost, count];
  }
  // bcrypt costs are 4 to 31; anything else would fail the compare, not slow it.
  const cost = Math.min(31, Math.max(4, best));
  return `$2b$${String(cost).padStart(2, '0')}$${DUMMY_HASH.slice(7)}`;
}

function costOf(hash: string): number {
  return Number(hash.slice(4, 6));
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
