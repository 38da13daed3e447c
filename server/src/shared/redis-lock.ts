// The maintenance lock across replicas (LocalRegistry.exclusive: GC and
// prune share the kind "gc"): "<prefix>lock:<kind>" holds a random token,
// set with NX and a TTL, renewed while the work runs and deleted by a script
// that checks the token, so a replica only ever removes its own lock. A
// replica that dies holding it lets go when the TTL runs out. Waiters poll;
// inside one process a KeyedLock queues them first, so only one of them
// polls Redis.
import { randomUUID } from 'node:crypto';
import { type Exclusive, KeyedLock } from '../registry/keyed-lock.ts';
import type { Logger } from '../log/logger.ts';
import { type SharedRedis, sleep } from './redis.ts';

const LOCK_TTL_MS = 30_000;

const RENEW_OR_RELEASE = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == '0' then redis.call('DEL', KEYS[1]) else redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2])) end
return 1
`;

export class RedisExclusive implements Exclusive {
  private readonly local = new KeyedLock();
  private readonly renewOrRelease: (...args: Array<string | number>) => Promise<number>;

  constructor(
    private readonly redis: SharedRedis,
    private readonly logger: Logger,
    private readonly ttlMs = LOCK_TTL_MS,
  ) {
    this.renewOrRelease = redis.script('LockRenew', 1, RENEW_OR_RELEASE);
  }

  run<T>(kind: string, fn: () => Promise<T>): Promise<T> {
    return this.local.run(kind, () => this.runLocked(kind, fn));
  }

  private async runLocked<T>(kind: string, fn: () => Promise<T>): Promise<T> {
    const key = this.redis.key('lock', kind);
    const token = randomUUID();
    let wait = 50;
    while ((await this.redis.client.set(key, token, 'PX', this.ttlMs, 'NX')) !== 'OK') {
      await sleep(wait);
      wait = Math.min(wait * 2, 1000);
    }
    const renew = setInterval(() => {
      this.renewOrRelease(key, token, this.ttlMs).then(
        (held) => {
          if (held !== 1) this.logger.error({ lock: kind }, 'lost the shared maintenance lock (redis); another replica may run at the same time');
        },
        (err: Error) => this.logger.warn({ lock: kind, err: err.message }, 'could not renew the shared maintenance lock'),
      );
    }, Math.floor(this.ttlMs / 3));
    renew.unref();
    try {
      return await fn();
    } finally {
      clearInterval(renew);
      await this.renewOrRelease(key, token, 0).catch(() => {});
    }
  }
}
