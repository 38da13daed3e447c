// The mirror records last use (for pruning) by access times it writes itself:
// throttled per file, put off a few seconds and written a few at a time, so a
// pull's own storage traffic goes first. flush() writes what is queued now.
import { mkdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { AccessTracker } from '../../server/src/proxy/access-tracker.ts';
import { FilesystemDriver } from '../../server/src/storage/filesystem.ts';
import { makeTempDir } from '../helpers/server.ts';

const root = makeTempDir('rs-access-');
afterAll(() => rmSync(root, { recursive: true, force: true }));
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const LONG_AGO = new Date('2020-01-01T00:00:00Z');

/** A filesystem driver over `dir` holding `n` files last used long ago, counting touches and how many ran at once. */
function setup(dir: string, n: number) {
  const base = path.join(root, dir);
  const keys = Array.from({ length: n }, (_, i) => `/f${i}`);
  mkdirSync(base, { recursive: true });
  for (const key of keys) writeFileSync(path.join(base, key), 'x');
  const driver = new FilesystemDriver(base);
  const stats = { calls: 0, running: 0, maxRunning: 0 };
  const touch = driver.touch.bind(driver);
  driver.touch = async (key, times) => {
    stats.calls++;
    stats.running++;
    stats.maxRunning = Math.max(stats.maxRunning, stats.running);
    try {
      await sleep(5);
      return await touch(key, times);
    } finally {
      stats.running--;
    }
  };
  const atime = (key: string) => statSync(path.join(base, key)).atime.getTime();
  return { driver, keys, stats, atime, base };
}

describe('AccessTracker', () => {
  test('writes nothing at the use; writes it after the delay', async () => {
    const { driver, keys, stats, atime } = setup('delay', 1);
    await driver.touch(keys[0], { accessed: LONG_AGO });
    stats.calls = 0;
    const tracker = new AccessTracker(driver, { delayMs: 200 });
    const before = Date.now();
    tracker.touch(keys[0]);
    await sleep(50);
    expect(stats.calls).toBe(0);
    expect(atime(keys[0])).toBe(LONG_AGO.getTime());
    // Written by the timer alone (no flush): wait for it, however busy the machine is.
    for (const deadline = Date.now() + 10_000; (stats.calls === 0 || stats.running > 0) && Date.now() < deadline; ) await sleep(20);
    expect(stats.calls).toBe(1);
    expect(atime(keys[0])).toBeGreaterThanOrEqual(before - 1000);
  });

  test('flush() writes every queued use at once, a few at a time, each file once per throttle window', async () => {
    const { driver, keys, stats, atime } = setup('flush', 10);
    for (const key of keys) await driver.touch(key, { accessed: LONG_AGO });
    stats.calls = 0;
    const tracker = new AccessTracker(driver, { delayMs: 60_000, concurrency: 3 });
    const before = Date.now();
    for (const key of keys) tracker.touch(key);
    for (const key of keys) tracker.touch(key); // within the throttle window: not queued again
    await tracker.flush();
    expect(stats.calls).toBe(10);
    expect(stats.maxRunning).toBe(3);
    for (const key of keys) expect(atime(key)).toBeGreaterThanOrEqual(before - 1000);
    tracker.touch(keys[0]);
    await tracker.flush();
    expect(stats.calls).toBe(10);
  });

  test('a use queued while a flush runs is written by that flush', async () => {
    const { driver, keys, stats } = setup('during', 6);
    const tracker = new AccessTracker(driver, { delayMs: 60_000, concurrency: 2 });
    for (const key of keys.slice(0, 4)) tracker.touch(key);
    const flushing = tracker.flush();
    for (const key of keys.slice(4)) tracker.touch(key);
    await flushing;
    expect(stats.calls).toBe(6);
  });

  test('a failed write (the file is gone) is dropped, and the next use is recorded again', async () => {
    const { driver, keys, stats, base, atime } = setup('gone', 1);
    const tracker = new AccessTracker(driver, { delayMs: 60_000 });
    rmSync(path.join(base, keys[0]));
    tracker.touch(keys[0]);
    await tracker.flush();
    expect(stats.calls).toBe(1);
    writeFileSync(path.join(base, keys[0]), 'x');
    await driver.touch(keys[0], { accessed: LONG_AGO });
    const before = Date.now();
    tracker.touch(keys[0]);
    await tracker.flush();
    expect(stats.calls).toBe(3);
    expect(atime(keys[0])).toBeGreaterThanOrEqual(before - 1000);
  });
});
