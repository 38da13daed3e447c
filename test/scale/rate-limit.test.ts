// Rate limits across replicas (issue 6): with Redis, the counters are shared
// (RateLimiterRedis, the same buckets as in memory), so a client that spreads
// its requests over both replicas has one budget, not one per replica. The
// client address comes from X-Forwarded-For (the replicas trust 127.0.0.1, as
// they trust Caddy), so each test is its own client.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request } from 'undici';
import { basicAuth } from '../helpers/process.ts';
import { startRedis, type TestRedis } from '../helpers/redis.ts';
import { createTestBucket, type TestBucket } from '../helpers/s3.ts';
import { type Replica, startReplica } from '../helpers/scale.ts';

const USERS = { rl: 'rate-limit-pw' };
const GOOD = basicAuth('rl', 'rate-limit-pw');
const BAD = basicAuth('rl', 'wrong-password');
const FAILED_LOGINS = 4;
const BURST = 30;

async function get(replica: Replica, client: string, auth: string): Promise<number> {
  const res = await request(`${replica.url}/v2/`, { headers: { authorization: auth, 'x-forwarded-for': client } });
  await res.body.dump();
  return res.statusCode;
}

describe('scale-out: rate limits shared by the replicas', () => {
  let redis: TestRedis;
  let bucket: TestBucket;
  let a: Replica;
  let b: Replica;

  beforeAll(async () => {
    [redis, bucket] = await Promise.all([startRedis(), createTestBucket('scale-ratelimit')]);
    const extra = {
      ratelimit: {
        enabled: true,
        perip: { rate: 1, burst: BURST },
        failedlogins: { limit: FAILED_LOGINS, window: '1h' },
        trustedproxies: ['127.0.0.1'],
      },
    };
    [a, b] = await Promise.all([
      startReplica({ label: 'a', bucket, redis, users: USERS, extra }),
      startReplica({ label: 'b', bucket, redis, users: USERS, extra }),
    ]);
  });

  afterAll(async () => {
    await Promise.allSettled([a?.dispose(), b?.dispose()]);
    await redis?.stop();
    await bucket?.destroy();
  });

  it('failed logins spread over both replicas lock the address out on both after one budget', async () => {
    const client = '10.0.0.1';
    const statuses: number[] = [];
    for (let i = 0; i < FAILED_LOGINS; i++) statuses.push(await get(i % 2 === 0 ? a : b, client, BAD));
    expect(statuses).toEqual(Array(FAILED_LOGINS).fill(401));
    // One budget for both: locked out everywhere, even with the right password.
    for (const replica of [a, b, a, b]) expect(await get(replica, client, BAD)).toBe(429);
    for (const replica of [a, b]) expect(await get(replica, client, GOOD)).toBe(429);
    // Another client is not affected.
    for (const replica of [a, b]) expect(await get(replica, '10.0.0.9', GOOD)).toBe(200);
    expect(await redis.client.exists(`registry:rl:login:${client}`)).toBe(1);
  });

  it('requests spread over both replicas draw on one per-IP budget', async () => {
    const client = '10.0.0.2';
    const started = Date.now();
    const statuses = await Promise.all(Array.from({ length: 2 * (BURST + 1) }, (_, i) => get(i % 2 === 0 ? a : b, client, GOOD)));
    const elapsedSeconds = (Date.now() - started) / 1000;
    const allowed = statuses.filter((s) => s === 200).length;
    const refused = statuses.filter((s) => s === 429).length;
    expect(allowed + refused).toBe(statuses.length);
    // Separate counters would let each replica take its own rate + burst: every request would pass.
    // Shared: one burst, plus the steady rate for each second that went by (it refills once a second).
    expect(allowed).toBeGreaterThanOrEqual(BURST + 1);
    expect(allowed).toBeLessThanOrEqual(BURST + 1 + Math.ceil(elapsedSeconds) + 1);
    expect(refused).toBeGreaterThan(0);
    // Each replica counted the refusals it made; together, all of them (whichever replica hit the shared limit).
    const counted = (await a.metric('registry_rate_limited_total', { limit: 'ip' })) + (await b.metric('registry_rate_limited_total', { limit: 'ip' }));
    expect(counted).toBe(refused);
    expect(await redis.client.exists(`registry:rl:ip-burst:${client}`)).toBe(1);
  });
});
