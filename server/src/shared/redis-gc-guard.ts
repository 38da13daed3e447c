// GC safety across replicas: the state of registry/gc-guard.ts, kept in Redis
// so that a sweep on one replica and a push on another still see each other.
//
// The race to close is the same as in one process: a push pins the digests it
// relies on, then checks that they exist and writes its links; a sweep checks
// for pins, then deletes. Each of the two steps is one Lua script, and Redis
// runs scripts one at a time, so one of them always sees the other:
//
//   pin(digests)        adds a hold per digest (a holder id with an expiry),
//                       adds the digests to the pin set of every GC run in
//                       progress, and returns the digests being deleted right
//                       now (the push waits for those marks to go, then its
//                       existence check fails cleanly);
//   markDeleting(d)     returns 0 if d is held or in the run's pin set,
//                       otherwise sets the "being deleted" mark and returns 1.
//
// Keys (all under redis.prefix):
//   gc:hold:<digest>    ZSET holder id → expiry (ms, Redis clock). A replica
//                       renews the holds of its pushes in flight; a crashed
//                       one's expire after HOLD_TTL_MS.
//   gc:runs             ZSET run id → expiry: GC/prune runs in progress
//                       (renewed while they run).
//   gc:run:<id>:pins    SET of digests pinned or released during that run
//                       (a push that released after the mark phase wrote links
//                       the mark did not see): kept until the run ends.
//   gc:deleting:<d>     the run deleting d (renewed while it deletes).
//   gc:used             ZSET digest → last use (ms): blobs clients looked at,
//                       kept by the sweep for the grace period.
// Pin sets are per run, so even two overlapping runs (a lost maintenance
// lock) stay safe, and a run that is no longer registered (Redis restarted
// under it) treats everything as pinned: it stops deleting. Redis Cluster is not supported (scripts touch keys they
// compute); one Redis (or a primary with replicas) is.
import type { Digest } from '../registry/digest.ts';
import type { GcGuard } from '../registry/gc-guard.ts';
import { randomUUID } from 'node:crypto';
import { LUA_NOW, type SharedRedis, sleep } from './redis.ts';

export const HOLD_TTL_MS = 60_000;
const RUN_TTL_MS = 60_000;
const MARK_TTL_MS = 60_000;
/** The most recent uses kept at most (oldest dropped first). */
const MAX_USED = 1_000_000;

// KEYS: runs. ARGV: prefix, holder, ttl, release (0|1), digests...
const PIN = `${LUA_NOW}
local prefix, holder, ttl, release = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4] == '1'
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local runs = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
local deleting = {}
for i = 5, #ARGV do
  local d = ARGV[i]
  local hk = prefix .. 'gc:hold:' .. d
  if release then
    redis.call('ZREM', hk, holder)
  else
    redis.call('ZADD', hk, now + ttl, holder)
    redis.call('PEXPIRE', hk, ttl)
    if redis.call('EXISTS', prefix .. 'gc:deleting:' .. d) == 1 then deleting[#deleting + 1] = d end
  end
  for j = 1, #runs, 2 do
    local rk = prefix .. 'gc:run:' .. runs[j] .. ':pins'
    redis.call('SADD', rk, d)
    redis.call('PEXPIREAT', rk, tonumber(runs[j + 1]))
  end
end
return deleting
`;

// ARGV: prefix, ttl, then holder, digest pairs.
const RENEW_HOLDS = `${LUA_NOW}
local prefix, ttl = ARGV[1], tonumber(ARGV[2])
for i = 3, #ARGV, 2 do
  local hk = prefix .. 'gc:hold:' .. ARGV[i + 1]
  -- Recreated if gone (a Redis restart): the push still relies on it.
  redis.call('ZADD', hk, now + ttl, ARGV[i])
  redis.call('PEXPIRE', hk, ttl)
end
return 1
`;

/**
 * Pinned = held by a live push, or pinned during the run. A run that is no
 * longer registered (Redis restarted, or its renewals stalled) has lost its
 * pins: then everything counts as pinned, and the sweep deletes nothing more.
 */
const PINNED_FN = `
local function pinned(prefix, run, d, now)
  if run ~= '' then
    local until_ = redis.call('ZSCORE', prefix .. 'gc:runs', run)
    if (not until_) or tonumber(until_) < now then return true end
    if redis.call('SISMEMBER', prefix .. 'gc:run:' .. run .. ':pins', d) == 1 then return true end
  end
  local hk = prefix .. 'gc:hold:' .. d
  redis.call('ZREMRANGEBYSCORE', hk, '-inf', now)
  return redis.call('ZCARD', hk) > 0
end
`;

// ARGV: prefix, run, digest
const IS_PINNED = `${LUA_NOW}${PINNED_FN}
if pinned(ARGV[1], ARGV[2], ARGV[3], now) then return 1 end
return 0
`;

// ARGV: prefix, run, digest, ttl
const MARK_DELETING = `${LUA_NOW}${PINNED_FN}
if pinned(ARGV[1], ARGV[2], ARGV[3], now) then return 0 end
redis.call('SET', ARGV[1] .. 'gc:deleting:' .. ARGV[3], ARGV[2], 'PX', tonumber(ARGV[4]))
return 1
`;

// KEYS: mark. ARGV: run, ttl (0: delete the mark)
const RENEW_OR_CLEAR_MARK = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == '0' then redis.call('DEL', KEYS[1]) else redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2])) end
return 1
`;

// KEYS: runs, pins of the run. ARGV: run, ttl
const BEGIN_RUN = `${LUA_NOW}
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('DEL', KEYS[2])
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
return 1
`;

// KEYS: runs, pins of the run. ARGV: run, ttl
const RENEW_RUN = `${LUA_NOW}
if redis.call('ZADD', KEYS[1], 'XX', 'CH', now + tonumber(ARGV[2]), ARGV[1]) == 1 then
  redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[2]))
  return 1
end
return 0
`;

// KEYS: runs, pins of the run, used. ARGV: run, cutoff, max used
const END_RUN = `
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', '(' .. ARGV[2])
local n = redis.call('ZCARD', KEYS[3])
if n > tonumber(ARGV[3]) then redis.call('ZREMRANGEBYRANK', KEYS[3], 0, n - tonumber(ARGV[3]) - 1) end
return 1
`;

interface Hold {
  digests: string[];
}

export class RedisGcGuard implements GcGuard {
  private readonly pin: (...args: Array<string | number>) => Promise<string[]>;
  private readonly renewHolds: (...args: Array<string | number>) => Promise<number>;
  private readonly pinned: (...args: Array<string | number>) => Promise<number>;
  private readonly markDeleting: (...args: Array<string | number>) => Promise<number>;
  private readonly renewOrClearMark: (...args: Array<string | number>) => Promise<number>;
  private readonly beginRunScript: (...args: Array<string | number>) => Promise<number>;
  private readonly renewRun: (...args: Array<string | number>) => Promise<number>;
  private readonly endRunScript: (...args: Array<string | number>) => Promise<number>;
  /** Holds of this process's pushes in flight, renewed until released. */
  private readonly holds = new Map<string, Hold>();
  private holdTimer: NodeJS.Timeout | undefined;
  private run: { id: string; timer: NodeJS.Timeout } | undefined;
  private uses = 0;

  constructor(
    private readonly redis: SharedRedis,
    private readonly holdTtlMs = HOLD_TTL_MS,
  ) {
    this.pin = redis.script('GcPin', 1, PIN);
    this.renewHolds = redis.script('GcRenewHolds', 0, RENEW_HOLDS);
    this.pinned = redis.script('GcPinned', 0, IS_PINNED);
    this.markDeleting = redis.script('GcMarkDeleting', 0, MARK_DELETING);
    this.renewOrClearMark = redis.script('GcMark', 1, RENEW_OR_CLEAR_MARK);
    this.beginRunScript = redis.script('GcBeginRun', 2, BEGIN_RUN);
    this.renewRun = redis.script('GcRenewRun', 2, RENEW_RUN);
    this.endRunScript = redis.script('GcEndRun', 3, END_RUN);
  }

  private get runsKey(): string {
    return this.redis.key('gc', 'runs');
  }

  private pinsKey(run: string): string {
    return this.redis.key('gc', 'run', run, 'pins');
  }

  async protect(digests: Iterable<Digest | string>): Promise<() => Promise<void>> {
    const keys = [...new Set([...digests].map((d) => (typeof d === 'string' ? d : d.value)))];
    const holder = randomUUID();
    const deleting = await this.pin(this.runsKey, this.redis.prefix, holder, this.holdTtlMs, 0, ...keys);
    this.holds.set(holder, { digests: keys });
    this.scheduleHoldRenewal();
    let released = false;
    const release = async () => {
      if (released) return;
      released = true;
      this.holds.delete(holder);
      // Still held until its expiry if this fails: the safe side.
      await this.pin(this.runsKey, this.redis.prefix, holder, this.holdTtlMs, 1, ...keys).catch(() => {});
    };
    try {
      // Deletions already under way: wait for them to finish (their marks go, or expire).
      for (const d of deleting) {
        while ((await this.redis.client.exists(this.redis.key('gc', 'deleting', d))) === 1) await sleep(20);
      }
    } catch (err) {
      await release();
      throw err;
    }
    return release;
  }

  private scheduleHoldRenewal(): void {
    if (this.holdTimer) return;
    this.holdTimer = setInterval(() => {
      if (this.holds.size === 0) {
        clearInterval(this.holdTimer);
        this.holdTimer = undefined;
        return;
      }
      const args: string[] = [];
      for (const [holder, hold] of this.holds) for (const d of hold.digests) args.push(holder, d);
      this.renewHolds(this.redis.prefix, this.holdTtlMs, ...args).catch(() => {});
    }, Math.max(1000, Math.floor(this.holdTtlMs / 3)));
    this.holdTimer.unref();
  }

  async noteUse(digest: Digest): Promise<void> {
    await this.redis.client.zadd(this.redis.key('gc', 'used'), Date.now(), digest.value);
    // Without GC runs (which trim it), keep the set bounded anyway.
    if (++this.uses % 10_000 === 0) {
      const key = this.redis.key('gc', 'used');
      const n = await this.redis.client.zcard(key);
      if (n > MAX_USED) await this.redis.client.zremrangebyrank(key, 0, n - MAX_USED - 1);
    }
  }

  async usedSince(digest: string, since: number): Promise<boolean> {
    const score = await this.redis.client.zscore(this.redis.key('gc', 'used'), digest);
    return score !== null && Number(score) >= since;
  }

  async beginRun(): Promise<void> {
    const id = randomUUID();
    await this.beginRunScript(this.runsKey, this.pinsKey(id), id, RUN_TTL_MS);
    const timer = setInterval(() => {
      this.renewRun(this.runsKey, this.pinsKey(id), id, RUN_TTL_MS).catch(() => {});
    }, RUN_TTL_MS / 3);
    timer.unref();
    this.run = { id, timer };
  }

  async endRun(graceMs: number): Promise<void> {
    const run = this.run;
    if (!run) return;
    this.run = undefined;
    clearInterval(run.timer);
    await this.endRunScript(this.runsKey, this.pinsKey(run.id), this.redis.key('gc', 'used'), run.id, Date.now() - graceMs, MAX_USED);
  }

  async isPinned(digest: string): Promise<boolean> {
    return (await this.pinned(this.redis.prefix, this.run?.id ?? '', digest)) === 1;
  }

  async deleteUnlessPinned(digest: string, remove: () => Promise<void>): Promise<boolean> {
    const run = this.run?.id ?? `adhoc-${randomUUID()}`;
    if ((await this.markDeleting(this.redis.prefix, run, digest, MARK_TTL_MS)) !== 1) return false;
    const mark = this.redis.key('gc', 'deleting', digest);
    const renew = setInterval(() => {
      this.renewOrClearMark(mark, run, MARK_TTL_MS).catch(() => {});
    }, MARK_TTL_MS / 3);
    renew.unref();
    try {
      await remove();
      return true;
    } finally {
      clearInterval(renew);
      await this.renewOrClearMark(mark, run, 0).catch(() => {});
    }
  }

  /** Stops the renewal timers (holds and a run in progress expire on their own). */
  close(): void {
    clearInterval(this.holdTimer);
    this.holdTimer = undefined;
    if (this.run) clearInterval(this.run.timer);
  }
}
