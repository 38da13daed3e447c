// Built-in rate limits: per client IP and per user (token bucket with
// burst), the failed-login lockout, and X-Forwarded-For believed only from
// trusted proxies. Counts of accepted requests depend on the clock, so the
// tests send requests until the limit answers and assert what it answers,
// never how fast.
import { afterAll, describe, expect, it, vi } from 'vitest';
import { BcryptPool } from '../../server/src/auth/bcrypt-pool.ts';
import { loadConfigObject } from '../../server/src/config/load.ts';
import { RateLimits } from '../../server/src/http/rate-limit.ts';
import { errorCodes, RegistryClient, type Response } from '../helpers/client.ts';
import { basicAuth, startTestServer, type TestServer } from '../helpers/server.ts';
import { metric } from '../helpers/ops/servers.ts';

const USERS = { alice: 'alice-pw', bob: 'bob-pw' };
const servers: TestServer[] = [];
afterAll(async () => {
  for (const s of servers) await s.stop();
});

async function limited(ratelimit: Record<string, unknown>): Promise<TestServer> {
  const s = await startTestServer({ users: USERS, extra: { ratelimit: { enabled: true, ...ratelimit } } });
  servers.push(s);
  return s;
}

const as = (s: TestServer, user: keyof typeof USERS, password: string = USERS[user]) => new RegistryClient(s.url, basicAuth(user, password));

/** Sends GET /v2/ until one answers 429 (at most `max` requests); returns every response. */
async function untilLimited(client: RegistryClient, headers: Record<string, string> = {}, max = 60): Promise<Response[]> {
  const out: Response[] = [];
  for (let i = 0; i < max; i++) {
    const res = await client.req('/v2/', { headers });
    out.push(res);
    if (res.status === 429) break;
  }
  return out;
}

function expectTooMany(res: Response): void {
  expect(res.status).toBe(429);
  expect(errorCodes(res)).toEqual(['TOOMANYREQUESTS']);
  const retry = Number(res.header('retry-after'));
  expect(Number.isInteger(retry) && retry >= 1, `Retry-After: ${res.header('retry-after')}`).toBe(true);
}

async function waitUntil(check: () => Promise<boolean>, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 200));
  }
}

describe('rate limits', () => {
  it('per IP: a burst is served, then 429 TOOMANYREQUESTS with Retry-After', async () => {
    const s = await limited({ perip: { rate: 1, burst: 4 } });
    const responses = await untilLimited(as(s, 'alice'));
    const last = responses.at(-1)!;
    expectTooMany(last);
    const served = responses.filter((r) => r.status === 200).length;
    expect(served).toBe(responses.length - 1);
    expect(served).toBeGreaterThanOrEqual(5); // rate + burst
    // The same address is refused whoever it logs in as; probes are not limited.
    expectTooMany(await as(s, 'bob').req('/v2/'));
    expect((await new RegistryClient(s.url).req('/healthz')).status).toBe(200);
    expect(metric(await s.metrics.registry.metrics(), 'registry_rate_limited_total', { limit: 'ip' })).toBeGreaterThanOrEqual(2);
  });

  it('per user: one user is limited while another on the same address is not', async () => {
    const s = await limited({ perip: { rate: 1000, burst: 1000 }, peruser: { rate: 1, burst: 2 } });
    const responses = await untilLimited(as(s, 'alice'));
    expectTooMany(responses.at(-1)!);
    expect(responses.filter((r) => r.status === 200).length).toBeGreaterThanOrEqual(3);
    expect((await as(s, 'bob').req('/v2/')).status).toBe(200);
    expect(metric(await s.metrics.registry.metrics(), 'registry_rate_limited_total', { limit: 'user' })).toBeGreaterThanOrEqual(1);
  });

  it('failed logins lock the address out, right password or not, until the window has passed', async () => {
    const s = await limited({ failedlogins: { limit: 3, window: '2s' }, trustedproxies: ['127.0.0.1'] });
    const attacker = { 'x-forwarded-for': '10.1.1.1' };
    for (let i = 0; i < 3; i++) {
      const res = await as(s, 'alice', 'guess').req('/v2/', { headers: attacker });
      expect(res.status).toBe(401);
      expect(errorCodes(res)).toEqual(['UNAUTHORIZED']);
    }
    // Locked out: even the right password is refused, before it is checked.
    expectTooMany(await as(s, 'alice').req('/v2/', { headers: attacker }));
    // Another client (another address behind the same proxy) is not affected.
    expect((await as(s, 'alice').req('/v2/', { headers: { 'x-forwarded-for': '10.2.2.2' } })).status).toBe(200);
    // After the window the right password works again.
    await waitUntil(async () => (await as(s, 'alice').req('/v2/', { headers: attacker })).status === 200);
    expect(metric(await s.metrics.registry.metrics(), 'registry_rate_limited_total', { limit: 'failedlogins' })).toBeGreaterThanOrEqual(1);
  });

  it('failed logins sent concurrently: at most the limit is checked, the rest 429 before bcrypt', async () => {
    const s = await limited({ failedlogins: { limit: 5, window: '1m' }, trustedproxies: ['127.0.0.1'] });
    const compare = vi.spyOn(BcryptPool.prototype, 'compare');
    try {
      // Distinct passwords, so no cached or shared verification hides a check.
      const guesses = Array.from({ length: 60 }, (_, i) =>
        as(s, 'alice', `guess-${i}`).req('/v2/', { headers: { 'x-forwarded-for': '10.9.9.9' } }),
      );
      const statuses = (await Promise.all(guesses)).map((r) => r.status);
      expect(statuses.filter((st) => st !== 401 && st !== 429)).toEqual([]);
      expect(statuses.filter((st) => st === 401).length).toBeLessThanOrEqual(5);
      expect(statuses.filter((st) => st === 429).length).toBeGreaterThanOrEqual(55);
      expect(compare.mock.calls.length).toBeLessThanOrEqual(5);
      // A success gives its reservation back: good logins from another address are never locked out.
      for (let i = 0; i < 8; i++) expect((await as(s, 'alice').req('/v2/', { headers: { 'x-forwarded-for': '10.8.8.8' } })).status).toBe(200);
    } finally {
      compare.mockRestore();
    }
  });

  it('concurrent requests with the right password never spend the failed-login budget', async () => {
    // A docker push sends its layers in parallel, each with Basic credentials:
    // reserving a point per request locked a client out by its own concurrency.
    const s = await limited({ failedlogins: { limit: 2, window: '1m' }, trustedproxies: ['127.0.0.1'] });
    const client = { 'x-forwarded-for': '10.7.7.7' };
    const compare = vi.spyOn(BcryptPool.prototype, 'compare');
    try {
      const statuses = (await Promise.all(Array.from({ length: 40 }, () => as(s, 'alice').req('/v2/', { headers: client })))).map((r) => r.status);
      expect(statuses).toEqual(Array(40).fill(200));
      expect(compare.mock.calls.length).toBe(1);
    } finally {
      compare.mockRestore();
    }
    // The whole budget is still there: two wrong guesses are checked, the third is locked out.
    expect((await as(s, 'alice', 'guess-a').req('/v2/', { headers: client })).status).toBe(401);
    expect((await as(s, 'alice', 'guess-b').req('/v2/', { headers: client })).status).toBe(401);
    expectTooMany(await as(s, 'alice').req('/v2/', { headers: client }));
  });

  it('a wrong password repeated counts each time, although it is checked once', async () => {
    const s = await limited({ failedlogins: { limit: 3, window: '1m' }, trustedproxies: ['127.0.0.1'] });
    const client = { 'x-forwarded-for': '10.6.6.6' };
    for (let i = 0; i < 3; i++) expect((await as(s, 'alice', 'same-guess').req('/v2/', { headers: client })).status).toBe(401);
    expectTooMany(await as(s, 'alice', 'same-guess').req('/v2/', { headers: client }));
    expectTooMany(await as(s, 'alice').req('/v2/', { headers: client }));
  });

  it('X-Forwarded-For names the client only when the request came from a trusted proxy', async () => {
    const perip = { rate: 1, burst: 2 };
    const trusting = await limited({ perip, trustedproxies: ['127.0.0.1'] });
    const client = as(trusting, 'alice');
    expectTooMany((await untilLimited(client, { 'x-forwarded-for': '10.0.0.1' })).at(-1)!);
    // Each forwarded address has its own budget, and so has the proxy itself.
    expect((await client.req('/v2/', { headers: { 'x-forwarded-for': '10.0.0.2' } })).status).toBe(200);
    expect((await client.req('/v2/')).status).toBe(200);
    // A client cannot escape by prepending addresses: the rightmost untrusted one is the client.
    expectTooMany(await client.req('/v2/', { headers: { 'x-forwarded-for': '192.0.2.77, 10.0.0.1' } }));

    const untrusting = await limited({ perip });
    const direct = as(untrusting, 'alice');
    expectTooMany((await untilLimited(direct, { 'x-forwarded-for': '10.0.0.1' })).at(-1)!);
    // Without a trusted proxy the header is ignored: every request is 127.0.0.1's.
    expectTooMany(await direct.req('/v2/', { headers: { 'x-forwarded-for': '10.0.0.2' } }));
  });
});

describe('the failed-login limit by default', () => {
  /** A server with users and the given ratelimit section (none: the defaults), its own so that 127.0.0.1 is its only client. */
  async function withUsers(ratelimit?: Record<string, unknown>): Promise<TestServer> {
    const s = await startTestServer({ users: USERS, extra: ratelimit ? { ratelimit } : {} });
    servers.push(s);
    return s;
  }

  /** Sends `n` wrong passwords one after the other; returns their statuses. */
  async function guesses(s: TestServer, n: number): Promise<number[]> {
    const statuses: number[] = [];
    for (let i = 0; i < n; i++) statuses.push((await as(s, 'alice', `guess-${i}`).req('/v2/')).status);
    return statuses;
  }

  it('is on, at 20 failed logins per 15 minutes, on a server with users and no ratelimit section; the buckets are off', () => {
    const { config } = loadConfigObject({ storage: { filesystem: { rootdirectory: '/tmp/x' } } }, {});
    expect(config.ratelimit).toEqual({ enabled: true, failedlogins: { enabled: true, limit: 20, window: 15 * 60_000 }, trustedproxies: [] });
    const limits = new RateLimits(config.ratelimit, undefined, undefined, true);
    expect(limits.enabled).toBe(true);
    expect(limits.loginBudget('192.0.2.1')).toBeDefined();
    // Nobody logs in to a server without users: nothing to count, and no lookup per request.
    expect(new RateLimits(config.ratelimit, undefined, undefined, false).enabled).toBe(false);
  });

  it('locks the address out after 20 wrong passwords with the default config; good logins before, concurrent ones too, spend nothing', async () => {
    const s = await withUsers();
    const good = () => as(s, 'alice').req('/v2/');
    // A client pushing in parallel, each request with its credentials.
    expect((await Promise.all(Array.from({ length: 30 }, good))).map((r) => r.status)).toEqual(Array(30).fill(200));
    expect(await guesses(s, 19)).toEqual(Array(19).fill(401));
    expect((await good()).status).toBe(200);
    expect(await guesses(s, 1)).toEqual([401]);
    // The 21st: locked out, even with the right password.
    expectTooMany(await as(s, 'alice', 'guess-21').req('/v2/'));
    expectTooMany(await good());
    expect(metric(await s.metrics.registry.metrics(), 'registry_rate_limited_total', { limit: 'failedlogins' })).toBeGreaterThanOrEqual(2);
  });

  it('takes its limit from ratelimit.failedlogins without ratelimit.enabled', async () => {
    const s = await withUsers({ failedlogins: { limit: 3 } });
    expect(await guesses(s, 3)).toEqual([401, 401, 401]);
    expectTooMany(await as(s, 'alice').req('/v2/'));
  });

  it('is turned off by failedlogins.enabled: false or ratelimit.enabled: false', async () => {
    for (const ratelimit of [{ failedlogins: { enabled: false } }, { enabled: false }]) {
      const s = await withUsers(ratelimit);
      expect(await guesses(s, 25), JSON.stringify(ratelimit)).toEqual(Array(25).fill(401));
      expect((await as(s, 'alice').req('/v2/')).status).toBe(200);
    }
  });

  it('refuses a limit below 1', () => {
    expect(() => loadConfigObject({ storage: { filesystem: { rootdirectory: '/tmp/x' } }, ratelimit: { failedlogins: { limit: 0 } } }, {})).toThrow(
      /ratelimit\.failedlogins\.limit/,
    );
  });
});
