// Built-in rate limits (rate-limiter-flexible): a token bucket with burst
// per client IP and per user, and a stricter limit on failed logins per IP
// (brute force). The client IP comes from X-Forwarded-For only when the
// connection came from a trusted proxy (proxy-addr, as Express does it).
// With Redis, the counters live there (RateLimiterRedis, same buckets), so
// replicas behind one load balancer share one budget per client; if Redis
// fails, each replica falls back to its own in-memory counters.
import type { IncomingMessage } from 'node:http';
import proxyAddr from 'proxy-addr';
import { BurstyRateLimiter, RateLimiterMemory, RateLimiterRedis, RateLimiterRes, type RateLimiterAbstract } from 'rate-limiter-flexible';
import type { RegistryConfig } from '../config/schema.ts';
import { RegistryError } from '../registry/errors.ts';
import type { SharedRedis } from '../shared/redis.ts';

type Bucket = { rate: number; burst: number };
type LimiterOptions = { keyPrefix: string; points: number; duration: number };

export class RateLimits {
  private readonly perIp?: BurstyRateLimiter;
  private readonly perUser?: BurstyRateLimiter;
  private readonly failedLogins?: RateLimiterAbstract;
  private readonly trust: (addr: string, i: number) => boolean;
  readonly enabled: boolean;

  constructor(
    config: RegistryConfig['ratelimit'],
    private readonly onLimited: (limit: string) => void = () => {},
    /** Shared counters (replicas); in memory when absent. */
    redis?: SharedRedis,
  ) {
    this.enabled = config?.enabled ?? false;
    this.trust = proxyAddr.compile(config?.trustedproxies ?? []);
    if (!this.enabled || !config) return;
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
    if (config.failedlogins) {
      this.failedLogins = make({
        keyPrefix: 'login',
        points: config.failedlogins.limit,
        duration: Math.max(1, Math.ceil(config.failedlogins.window / 1000)),
      });
    }
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
