// Built-in rate limits (rate-limiter-flexible): a token bucket with burst
// per client IP and per user, and a stricter limit on failed logins per IP
// (brute force). Only the failed-login limit is on by default, and only on a
// server that checks passwords: elsewhere nothing could spend it, and asking it
// about every request would cost a Redis round trip. The client IP comes from
// X-Forwarded-For only when the connection came from a trusted proxy
// (proxy-addr, as Express does it).
// With Redis, the counters live there (RateLimiterRedis, same buckets), so
// replicas behind one load balancer share one budget per client; if Redis
// fails, each replica falls back to its own in-memory counters.
import type { IncomingMessage } from 'node:http';
import proxyAddr from 'proxy-addr';
import { createRequire } from 'node:module';
import type * as Flexible from 'rate-limiter-flexible';
import type { RateLimiterAbstract } from 'rate-limiter-flexible';
import type { LoginBudget, LoginReservation } from '../auth/htpasswd.ts';
import type { RegistryConfig } from '../config/schema.ts';
import { RegistryError } from '../registry/errors.ts';
import type { SharedRedis } from '../shared/redis.ts';

// The package's entry loads every store it supports (Mongo, MySQL, Postgres, DynamoDB, etcd, cluster IPC, ...:
// 25 modules, and node:cluster and child_process with them) for the four classes used here, each its own file.
const load = createRequire(import.meta.url);
const BurstyRateLimiter = load('rate-limiter-flexible/lib/BurstyRateLimiter.js') as typeof Flexible.BurstyRateLimiter;
type BurstyRateLimiter = Flexible.BurstyRateLimiter;
const RateLimiterMemory = load('rate-limiter-flexible/lib/RateLimiterMemory.js') as typeof Flexible.RateLimiterMemory;
const RateLimiterRedis = load('rate-limiter-flexible/lib/RateLimiterRedis.js') as typeof Flexible.RateLimiterRedis;
const RateLimiterRes = load('rate-limiter-flexible/lib/RateLimiterRes.js') as typeof Flexible.RateLimiterRes;

const NO_RESERVATION: LoginReservation = { refund: async () => {} };

type Bucket = { rate: number; burst: number };
type LimiterOptions = { keyPrefix: string; points: number; duration: number };

export class RateLimits {
  private readonly perIp?: BurstyRateLimiter;
  private readonly perUser?: BurstyRateLimiter;
  private readonly failedLogins?: RateLimiterAbstract;
  private readonly trust: (addr: string, i: number) => boolean;
  /** Some limit applies. */
  readonly enabled: boolean;

  constructor(
    config: RegistryConfig['ratelimit'],
    private readonly onLimited: (limit: string) => void = () => {},
    /** Shared counters (replicas); in memory when absent. */
    redis?: SharedRedis,
    /** Whether the server checks passwords at all (auth.htpasswd or auth.access). */
    checksPasswords = true,
  ) {
    this.trust = proxyAddr.compile(config?.trustedproxies ?? []);
    this.enabled = false;
    if (!config?.enabled) return;
    const make = (options: LimiterOptions): RateLimiterAbstract =>
      redis
        ? new RateLimiterRedis({
            ...options,
            storeClient: redis.client,
            keyPrefix: redis.key('rl', options.keyPrefix),
            rejectIfRedisNotReady: true,
            insuranceLimiter: new RateLimiterMemory(options),
          })
        : new RateLimiterMemory(options);
    if (config.perip) this.perIp = bucket(config.perip, 'ip', make);
    if (config.peruser) this.perUser = bucket(config.peruser, 'user', make);
    if (config.failedlogins.enabled && checksPasswords) {
      this.failedLogins = make({
        keyPrefix: 'login',
        points: config.failedlogins.limit,
        duration: Math.max(1, Math.ceil(config.failedlogins.window / 1000)),
      });
    }
    this.enabled = Boolean(this.perIp || this.perUser || this.failedLogins);
  }

  /** The client's address: X-Forwarded-For is believed only from trusted proxies. */
  clientIp(req: IncomingMessage): string {
    return proxyAddr(req, this.trust);
  }

  /** Before authentication: refuse clients over their IP budget or locked out by failed logins. */
  async beforeAuth(ip: string): Promise<void> {
    if (!this.enabled) return;
    if (this.failedLogins) {
      const state = await this.failedLogins.get(ip);
      if (state && state.remainingPoints <= 0) this.refuse('failedlogins', state.msBeforeNext);
    }
    if (this.perIp) await this.consume(this.perIp, ip, 'ip');
  }

  async afterAuth(user: string | undefined): Promise<void> {
    if (this.enabled && this.perUser && user) await this.consume(this.perUser, user, 'user');
  }

  /**
   * Before credentials are checked: takes one failed-login point up front and
   * refuses (429) when none is left. Counting only after the check let
   * concurrent guesses all pass the lockout test before any of them had failed,
   * so every one of them got a bcrypt check; reserving first bounds the checks
   * per window to the limit, however many arrive at once. `refund` gives the
   * point back when the login turned out not to be a failure.
   */
  async reserveLogin(ip: string): Promise<LoginReservation> {
    const limiter = this.failedLogins;
    if (!this.enabled || !limiter) return NO_RESERVATION;
    try {
      await limiter.consume(ip);
    } catch (res) {
      if (res instanceof RateLimiterRes) this.refuse('failedlogins', res.msBeforeNext);
      // The store failed (Redis without insurance): do not lock everyone out for it.
      return NO_RESERVATION;
    }
    let refunded = false;
    return {
      refund: async () => {
        if (refunded) return;
        refunded = true;
        await limiter.reward(ip, 1).catch(() => {});
      },
    };
  }

  /** The budget the password check draws on for requests from `ip`. */
  loginBudget(ip: string): LoginBudget | undefined {
    if (!this.enabled || !this.failedLogins) return undefined;
    return { reserve: () => this.reserveLogin(ip), charge: () => this.loginFailed(ip) };
  }

  /** Counts one failed login without a reservation. */
  async loginFailed(ip: string): Promise<void> {
    if (!this.enabled || !this.failedLogins) return;
    await this.failedLogins.consume(ip).catch(() => {});
  }

  private async consume(limiter: BurstyRateLimiter, key: string, limit: string): Promise<void> {
    try {
      await limiter.consume(key);
    } catch (res) {
      if (res instanceof RateLimiterRes) this.refuse(limit, res.msBeforeNext);
      throw res;
    }
  }

  private refuse(limit: string, msBeforeNext: number): never {
    this.onLimited(limit);
    throw new RegistryError('TOOMANYREQUESTS', `too many requests (${limit} limit)`, {
      retryAfterSeconds: Math.max(1, Math.ceil(msBeforeNext / 1000)),
    });
  }
}

/** rate requests/s sustained with `burst` extra: a steady limiter plus a burst allowance. */
function bucket({ rate, burst }: Bucket, prefix: string, make: (options: LimiterOptions) => RateLimiterAbstract): BurstyRateLimiter {
  const steady = make({ keyPrefix: `${prefix}-rate`, points: Math.max(1, Math.round(rate)), duration: 1 });
  const extra = make({
    keyPrefix: `${prefix}-burst`,
    points: burst,
    duration: Math.max(1, Math.ceil(burst / rate)),
  });
  return new BurstyRateLimiter(steady, extra);
}
