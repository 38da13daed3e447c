// The UI's recent activity (server/src/ops/activity.ts): a day of five-minute
// buckets in a ring that forgets what is older, cache hits and misses with
// their bytes, the most pulled repositories, and the change signal the
// repository list is invalidated by. A clock the test moves.
import { describe, expect, it } from 'vitest';
import { Activity, BUCKET_MS, BUCKETS } from '../../server/src/ops/activity.ts';

describe('Activity', () => {
  it('counts pulls and bytes per five minutes over the last day, and forgets older buckets', () => {
    let now = Date.parse('2026-01-01T12:00:00Z');
    const a = new Activity(() => now);
    const pull = (repo: string, bytes = 0) => a.record({ route: 'manifest', method: 'GET', status: 200, repo, bytesOut: bytes });
    pull('a', 100);
    pull('a', 50);
    a.record({ route: 'blob', method: 'GET', status: 200, repo: 'a', bytesOut: 1000 });
    a.record({ route: 'manifest', method: 'GET', status: 404, repo: 'a' });
    let series = a.series();
    expect(series).toHaveLength(BUCKETS);
    expect(series.at(-1)).toEqual({ at: '2026-01-01T12:00:00.000Z', pulls: 2, bytes: 1150 });

    now += BUCKET_MS;
    pull('b');
    series = a.series();
    expect(series.slice(-2).map((b) => b.pulls)).toEqual([2, 1]);

    // A day later the first bucket's slot is reused: its counts are gone, not added to.
    now += (BUCKETS - 1) * BUCKET_MS;
    pull('c');
    series = a.series();
    expect(series.reduce((n, b) => n + b.pulls, 0)).toBe(2);
    expect(series[0]).toMatchObject({ at: '2026-01-01T12:05:00.000Z', pulls: 1 });
  });

  it('adds up hits and misses with their bytes, and ranks the most pulled', async () => {
    const a = new Activity();
    a.record({ route: 'blob', method: 'GET', status: 200, repo: 'x', bytesOut: 10, cache: 'miss' });
    a.record({ route: 'blob', method: 'GET', status: 200, repo: 'x', bytesOut: 10, cache: 'hit' });
    a.record({ route: 'blob', method: 'GET', status: 200, repo: 'x', bytesOut: 10, cache: 'hit' });
    expect(a.cache).toEqual({ hits: 2, misses: 1, hitBytes: 20, missBytes: 10 });
    for (const repo of ['p', 'q', 'q', 'r', 'r', 'r']) a.record({ route: 'manifest', method: 'GET', status: 200, repo });
    expect(await a.topPulled(2)).toEqual([
      { name: 'r', pulls: 3 },
      { name: 'q', pulls: 2 },
    ]);
    expect(await a.topPulled(5, async (name) => name !== 'r')).toEqual([
      { name: 'q', pulls: 2 },
      { name: 'p', pulls: 1 },
    ]);
  });

  it('keeps the pull counts of at most 5000 repositories, the most pulled among them', async () => {
    const a = new Activity();
    for (let i = 0; i < 3; i++) a.record({ route: 'manifest', method: 'GET', status: 200, repo: 'popular' });
    for (let i = 0; i < 20_000; i++) a.record({ route: 'manifest', method: 'GET', status: 200, repo: `once/${i}` });
    const all = await a.topPulled(100_000);
    expect(all.length).toBeLessThanOrEqual(5001);
    expect(all[0]).toEqual({ name: 'popular', pulls: 3 });
  });

  it('says which repository a push, a delete or a mirror fetch changed', () => {
    const a = new Activity();
    const changed: Array<string | undefined> = [];
    a.onChange((repo) => changed.push(repo));
    a.record({ route: 'manifest', method: 'PUT', status: 201, repo: 'pushed' });
    a.record({ route: 'manifest', method: 'DELETE', status: 202, repo: 'deleted' });
    a.record({ route: 'manifest', method: 'GET', status: 200, repo: 'fetched', cache: 'miss' });
    a.record({ route: 'manifest', method: 'GET', status: 200, repo: 'cached', cache: 'hit' });
    a.record({ route: 'manifest', method: 'PUT', status: 400, repo: 'refused' });
    expect(changed).toEqual(['pushed', 'deleted', 'fetched']);
  });
});
