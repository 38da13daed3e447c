// The small concurrency and caching primitives the registry is built on:
// LruCache (weighted), KeyedLock (one at a time per key), SingleFlight (one
// run per key for concurrent callers).
import { describe, expect, test } from 'vitest';
import { SingleFlight } from '../../server/src/proxy/single-flight.ts';
import { KeyedLock } from '../../server/src/registry/keyed-lock.ts';
import { LruCache } from '../../server/src/registry/lru.ts';

const tick = () => new Promise((resolve) => setTimeout(resolve, 5));

describe('LruCache', () => {
  test('evicts the least recently used entries until the weight fits; a read makes an entry recent', () => {
    const lru = new LruCache<string, Buffer>(10, (b) => b.length);
    lru.set('a', Buffer.alloc(4));
    lru.set('b', Buffer.alloc(4));
    expect(lru.get('a')?.length).toBe(4); // a is now more recent than b
    lru.set('c', Buffer.alloc(4)); // 12 > 10: b goes
    expect(lru.get('b')).toBeUndefined();
    expect(lru.get('a')).toBeDefined();
    expect(lru.get('c')).toBeDefined();
    expect(lru.size).toBe(2);
  });

  test('a value heavier than the whole cache is not stored; replacing a key re-weighs it', () => {
    const lru = new LruCache<string, Buffer>(10, (b) => b.length);
    lru.set('big', Buffer.alloc(11));
    expect(lru.get('big')).toBeUndefined();
    lru.set('k', Buffer.alloc(6));
    lru.set('k', Buffer.alloc(2));
    lru.set('m', Buffer.alloc(8)); // 2 + 8 fits: k stays
    expect(lru.get('k')?.length).toBe(2);
    lru.delete('k');
    lru.clear();
    expect(lru.size).toBe(0);
  });
});

describe('KeyedLock', () => {
  test('runs work for one key one at a time, in order, and other keys alongside', async () => {
    const lock = new KeyedLock();
    const log: string[] = [];
    const job = (key: string, name: string) =>
      lock.run(key, async () => {
        log.push(`${name} start`);
        await tick();
        log.push(`${name} end`);
        return name;
      });
    const results = await Promise.all([job('x', 'x1'), job('x', 'x2'), job('y', 'y1')]);
    expect(results).toEqual(['x1', 'x2', 'y1']);
    expect(log.indexOf('x1 end')).toBeLessThan(log.indexOf('x2 start'));
    expect(log.indexOf('y1 start')).toBeLessThan(log.indexOf('x1 end'));
  });

  test('a failing run releases the key for the next one', async () => {
    const lock = new KeyedLock();
    const failed = lock.run('k', async () => {
      throw new Error('boom');
    });
    const next = lock.run('k', async () => 'ran');
    await expect(failed).rejects.toThrow('boom');
    await expect(next).resolves.toBe('ran');
  });
});

describe('SingleFlight', () => {
  test('concurrent callers of one key share one run; a later call runs again', async () => {
    const flight = new SingleFlight<number>();
    let runs = 0;
    const work = async () => {
      runs++;
      await tick();
      return runs;
    };
    const [a, b] = await Promise.all([flight.run('k', work), flight.run('k', work)]);
    expect([a, b, runs]).toEqual([1, 1, 1]);
    expect(await flight.run('k', work)).toBe(2);
    // A failure reaches every caller of that run, and does not stick.
    const fail = () => Promise.reject(new Error('nope'));
    await expect(Promise.all([flight.run('f', fail), flight.run('f', fail)])).rejects.toThrow('nope');
    expect(await flight.run('f', async () => 7)).toBe(7);
  });
});
