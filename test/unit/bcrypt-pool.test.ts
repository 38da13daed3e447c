// The bcrypt pool's worker threads end once it has been idle for a while (each
// costs about 10 MB of RSS) and start again for the next compare, without
// failing a compare that arrives while the idle ones are ending.
import { afterEach, describe, expect, it, vi } from 'vitest';
import { BcryptPool } from '../../server/src/auth/bcrypt-pool.ts';
import { hashPassword } from '../../server/src/auth/htpasswd.ts';

const HASH = hashPassword('right-pw', 4);
let pool: BcryptPool | undefined;
afterEach(async () => {
  await pool?.close();
  pool = undefined;
});

describe('the bcrypt pool when idle', () => {
  it('ends its workers after idleMs without a compare; the next compare starts them again', async () => {
    pool = new BcryptPool(1, 8, 20);
    expect(pool.workerCount).toBe(0);
    expect(await pool.compare('right-pw', HASH)).toBe(true);
    await vi.waitFor(() => expect(pool!.workerCount).toBe(0), { timeout: 10_000, interval: 5 });
    expect(await pool.compare('right-pw', HASH)).toBe(true);
    expect(pool.workerCount).toBe(1);
    expect(await pool.compare('wrong-pw', HASH)).toBe(false);
    expect(pool.comparesRun).toBe(3);
  });

  it('keeps its workers while compares are pending, however short idleMs is', async () => {
    pool = new BcryptPool(1, 8, 1);
    const slow = hashPassword('right-pw', 8);
    const answers = await Promise.all([pool.compare('right-pw', slow), pool.compare('wrong-pw', slow), pool.compare('right-pw', slow)]);
    expect(answers).toEqual([true, false, true]);
  });

  it('a compare that arrives while idle workers are ending is answered, not failed by their exit', async () => {
    pool = new BcryptPool(1, 8, 60_000);
    expect(await pool.compare('right-pw', HASH)).toBe(true);
    // What the idle timer does, called directly so that the compare below comes before the old worker has exited.
    (pool as unknown as { retire(): void }).retire();
    expect(pool.workerCount).toBe(0);
    expect(await pool.compare('right-pw', HASH)).toBe(true);
    expect(await pool.compare('wrong-pw', HASH)).toBe(false);
  });
});
