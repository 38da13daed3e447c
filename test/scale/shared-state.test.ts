// The Redis-backed pieces one at a time, against a real redis-server, with
// two instances standing in for two replicas: the GC guard's pin/delete race
// in both orders, holds that expire when their replica dies, the maintenance
// lock, the mirror's fill claims, the descriptor cache's tombstones, and the
// config's redis section.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfigObject } from '../../server/src/config/load.ts';
import { silentLogger } from '../../server/src/log/logger.ts';
import { parseDigest } from '../../server/src/registry/digest.ts';
import { createSharedRedis, redisOptions, type SharedRedis } from '../../server/src/shared/redis.ts';
import { RedisDescriptorCache } from '../../server/src/shared/redis-descriptors.ts';
import { RedisFillCoordinator } from '../../server/src/shared/redis-fills.ts';
import { RedisGcGuard } from '../../server/src/shared/redis-gc-guard.ts';
import { RedisExclusive } from '../../server/src/shared/redis-lock.ts';
import { sleep } from '../helpers/process.ts';
import { startRedis, type TestRedis } from '../helpers/redis.ts';

const D1 = `sha256:${'1'.repeat(64)}`;
const D2 = `sha256:${'2'.repeat(64)}`;
const D3 = `sha256:${'3'.repeat(64)}`;

function config(addr: string, extra: Record<string, unknown> = {}) {
  return loadConfigObject({ storage: { filesystem: { rootdirectory: '/nonexistent' } }, redis: { addr, ...extra } }, {}).config.redis!;
}

describe('shared state in Redis', () => {
  let server: TestRedis;
  const clients: SharedRedis[] = [];
  const guards: RedisGcGuard[] = [];

  const connect = async (prefix = 'registry:') => {
    const r = createSharedRedis(config(server.addr, { prefix }), silentLogger);
    await r.connect();
    clients.push(r);
    return r;
  };
  const guard = (r: SharedRedis, holdTtlMs?: number) => {
    const g = new RedisGcGuard(r, holdTtlMs);
    guards.push(g);
    return g;
  };

  beforeAll(async () => {
    server = await startRedis();
  });

  afterAll(async () => {
    for (const g of guards) g.close();
    for (const c of clients) await c.close();
    await server?.stop();
  });

  it('a pin on one replica keeps the sweep of another off the digest, during the run and after the release', async () => {
    const [r1, r2] = [await connect('t1:'), await connect('t1:')];
    const sweeper = guard(r1);
    const pusher = guard(r2);
    await sweeper.beginRun();
    const release = await pusher.protect([D1]);
    expect(await sweeper.isPinned(D1)).toBe(true);
    let removed = 0;
    expect(await sweeper.deleteUnlessPinned(D1, async () => void removed++)).toBe(false);
    await release();
    // Released during the run: the push wrote links the mark phase may not have seen.
    expect(await sweeper.isPinned(D1)).toBe(true);
    expect(await sweeper.deleteUnlessPinned(D1, async () => void removed++)).toBe(false);
    expect(await sweeper.deleteUnlessPinned(D2, async () => void removed++)).toBe(true);
    expect(removed).toBe(1);
    await sweeper.endRun(0);
    // The next run starts clean.
    await sweeper.beginRun();
    expect(await sweeper.isPinned(D1)).toBe(false);
    await sweeper.endRun(0);
  });

  it('a push that pins a digest being deleted waits for the deletion to finish', async () => {
    const [r1, r2] = [await connect('t2:'), await connect('t2:')];
    const sweeper = guard(r1);
    const pusher = guard(r2);
    await sweeper.beginRun();
    let finishDelete!: () => void;
    const gate = new Promise<void>((resolve) => (finishDelete = resolve));
    const events: string[] = [];
    const deleting = sweeper.deleteUnlessPinned(D1, async () => {
      events.push('delete started');
      await gate;
      events.push('delete finished');
    });
    while (events.length === 0) await sleep(5);
    const protecting = pusher.protect([D1]).then((release) => {
      events.push('pinned');
      return release;
    });
    await sleep(200);
    expect(events).toEqual(['delete started']);
    finishDelete();
    const release = await protecting;
    expect(await deleting).toBe(true);
    expect(events).toEqual(['delete started', 'delete finished', 'pinned']);
    await release();
    await sweeper.endRun(0);
    expect(await r1.client.exists(`t2:gc:deleting:${D1}`)).toBe(0);
  });

  it("a replica that dies holding pins lets go once they expire; a live one's holds are renewed", async () => {
    const [r1, r2, r3] = [await connect('t3:'), await connect('t3:'), await connect('t3:')];
    const sweeper = guard(r1);
    const crashed = guard(r2, 1500);
    const alive = guard(r3, 1500);
    await crashed.protect([D1]);
    await alive.protect([D2]);
    crashed.close(); // its renewals stop, as when the process is gone
    await sweeper.beginRun();
    expect(await sweeper.isPinned(D1)).toBe(true);
    await sweeper.endRun(0);
    await sleep(2500);
    await sweeper.beginRun();
    expect(await sweeper.isPinned(D1)).toBe(false);
    expect(await sweeper.isPinned(D2)).toBe(true);
    await sweeper.endRun(0);
  });

  it('a run whose registration vanished (Redis restarted under it) deletes nothing more', async () => {
    const r1 = await connect('t8:');
    const sweeper = guard(r1);
    await sweeper.beginRun();
    expect(await sweeper.isPinned(D1)).toBe(false);
    await r1.client.del('t8:gc:runs'); // what a restart without persistence leaves
    let removed = 0;
    expect(await sweeper.deleteUnlessPinned(D1, async () => void removed++)).toBe(false);
    expect(await sweeper.isPinned(D1)).toBe(true);
    expect(removed).toBe(0);
    await sweeper.endRun(0);
  });

  it('recent use is shared: a blob looked at on one replica is kept by the sweep of another', async () => {
    const [r1, r2] = [await connect('t4:'), await connect('t4:')];
    const sweeper = guard(r1);
    const server2 = guard(r2);
    const before = Date.now() - 1;
    await server2.noteUse(parseDigest(D3));
    expect(await sweeper.usedSince(D3, before)).toBe(true);
    expect(await sweeper.usedSince(D3, Date.now() + 1000)).toBe(false);
    expect(await sweeper.usedSince(D1, 0)).toBe(false);
  });

  it('the maintenance lock lets one replica run at a time, and is taken over when its holder dies', async () => {
    const [r1, r2] = [await connect('t5:'), await connect('t5:')];
    const one = new RedisExclusive(r1, silentLogger);
    const two = new RedisExclusive(r2, silentLogger);
    const log: string[] = [];
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const first = one.run('gc', async () => {
      log.push('one in');
      await gate;
      log.push('one out');
    });
    while (log.length === 0) await sleep(5);
    const second = two.run('gc', async () => {
      log.push('two in');
    });
    await sleep(300);
    expect(log).toEqual(['one in']);
    release();
    await Promise.all([first, second]);
    expect(log).toEqual(['one in', 'one out', 'two in']);
    expect(await r1.client.exists('t5:lock:gc')).toBe(0);
    // A holder that died: its lock is only a key with a TTL; it goes, and the next run gets in.
    await r1.client.set('t5:lock:gc', 'dead-replica', 'PX', 800);
    let ran = false;
    await two.run('gc', async () => {
      ran = true;
    });
    expect(ran).toBe(true);
  });

  it('fill claims: one owner, followers see its progress, a failed or expired fill can be claimed again', async () => {
    const [r1, r2] = [await connect('t6:'), await connect('t6:')];
    const c1 = new RedisFillCoordinator(r1, silentLogger);
    const c2 = new RedisFillCoordinator(r2, silentLogger);
    const claim = await c1.claim(D1);
    expect('lease' in claim).toBe(true);
    const other = await c2.claim(D1);
    expect('following' in other && other.following.state).toBe('starting');
    if (!('lease' in claim)) throw new Error('unreachable');
    claim.lease.started('/docker/registry/v2/repositories/x/_uploads/u/data', 1234);
    claim.lease.progress(1000);
    let info = await c2.get(D1);
    for (let i = 0; i < 50 && info?.written !== 1000; i++) {
      await sleep(20);
      info = await c2.get(D1);
    }
    expect(info).toMatchObject({ state: 'running', size: 1234, written: 1000, key: '/docker/registry/v2/repositories/x/_uploads/u/data' });
    claim.lease.finished(false, 'upstream said no');
    for (let i = 0; i < 50 && info?.state !== 'failed'; i++) {
      await sleep(20);
      info = await c2.get(D1);
    }
    expect(info).toMatchObject({ state: 'failed', error: 'upstream said no' });
    // Failed: the next request claims it afresh.
    expect('lease' in (await c2.claim(D1))).toBe(true);
    // A filler that died mid-fill leaves only its hash, which nobody renews...
    await r1.client.hset('t6:fill:' + D2, 'owner', 'dead-replica', 'state', 'running', 'key', '/k', 'size', '10', 'written', '4');
    await r1.client.pexpire('t6:fill:' + D2, 800);
    const follower = await c1.claim(D2);
    expect('following' in follower && follower.following).toMatchObject({ owner: 'dead-replica', state: 'running', written: 4 });
    await sleep(1000);
    // ...so once it expired, the next request starts a new fill.
    expect('lease' in (await c1.claim(D2))).toBe(true);
  });

  it('the descriptor cache: a stat cannot bring back a blob that was just deleted; a commit can', async () => {
    const [r1, r2] = [await connect('t7:'), await connect('t7:')];
    const gcSide = new RedisDescriptorCache(r1);
    const statSide = new RedisDescriptorCache(r2);
    await statSide.fill(D1, 42);
    expect(await gcSide.get(D1)).toBe(42);
    await gcSide.invalidate(D1);
    // A stat that saw the blob before it went, finishing late:
    await statSide.fill(D1, 42);
    expect(await gcSide.get(D1)).toBeUndefined();
    // The same bytes pushed again (committed under a pin): authoritative.
    await statSide.put(D1, 42);
    expect(await gcSide.get(D1)).toBe(42);
  });

  it('the redis section: distribution keys map onto the client; bad values are refused by name', () => {
    const opts = redisOptions(config('redis.internal:6380', { password: 'pw', db: 2, dialtimeout: '2s', readtimeout: '3s', writetimeout: '1s', tls: { enabled: true }, pool: { maxidle: 16, maxactive: 64, idletimeout: '300s' } }));
    expect(opts).toMatchObject({ host: 'redis.internal', port: 6380, password: 'pw', db: 2, connectTimeout: 2000, commandTimeout: 3000, lazyConnect: true });
    expect(opts.tls).toMatchObject({ servername: 'redis.internal', rejectUnauthorized: true });
    expect(redisOptions(config('[::1]:6379'))).toMatchObject({ host: '::1', port: 6379 });
    const refuse = (raw: Record<string, unknown>) => () => loadConfigObject({ storage: { filesystem: { rootdirectory: '/x' } }, ...raw }, {});
    expect(refuse({ redis: { addr: 'localhost' } })).toThrow(/redis\.addr: must be host:port/);
    expect(refuse({ redis: { addr: 'a:1', poool: {} } })).toThrow(/unknown key "redis\.poool"/);
    expect(refuse({ storage: { filesystem: { rootdirectory: '/x' }, cache: { blobdescriptor: 'redis' } } })).toThrow(/storage\.cache\.blobdescriptor: "redis" needs a redis section/);
    // REGISTRY_REDIS_* environment overrides, as in distribution.
    const fromEnv = loadConfigObject({ storage: { filesystem: { rootdirectory: '/x' } }, redis: { addr: 'a:1' } }, { REGISTRY_REDIS_PASSWORD: 'secret', REGISTRY_REDIS_DB: '5' }).config.redis;
    expect(fromEnv).toMatchObject({ addr: 'a:1', password: 'secret', db: 5 });
  });
});
