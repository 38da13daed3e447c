// A flood of wrong passwords must not delay everyone's login: the bcrypt
// queue is bounded (the excess is refused with TOOMANYREQUESTS rather than
// queued), credentials verified once are answered without the pool, and
// failures cannot evict them from the cache.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { BcryptPool } from '../../server/src/auth/bcrypt-pool.ts';
import { Htpasswd, hashPassword } from '../../server/src/auth/htpasswd.ts';
import { isRegistryError } from '../../server/src/registry/errors.ts';

let dir: string;
let file: string;
beforeAll(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'rs-auth-flood-'));
  file = path.join(dir, 'users.htpasswd');
  writeFileSync(file, [`alice:${hashPassword('alice-pw', 4)}`, `bob:${hashPassword('bob-pw', 4)}`].join('\n'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function settle(calls: Promise<string | undefined>[]) {
  const results = await Promise.allSettled(calls);
  return {
    refused: results.filter((r) => r.status === 'rejected' && isRegistryError(r.reason, 'TOOMANYREQUESTS')).length,
    wrong: results.filter((r) => r.status === 'fulfilled' && r.value === undefined).length,
    other: results.filter((r) => !(r.status === 'fulfilled' && r.value === undefined) && !(r.status === 'rejected' && isRegistryError(r.reason, 'TOOMANYREQUESTS'))),
  };
}

describe('the bcrypt queue under a flood of wrong passwords', () => {
  it('holds at most N compares; the other wrong logins are refused with TOOMANYREQUESTS', async () => {
    const pool = new BcryptPool(1, 4);
    const htpasswd = new Htpasswd({ path: file, pool });
    try {
      const calls = Array.from({ length: 30 }, (_, i) => htpasswd.verify(i % 2 ? 'alice' : 'nobody', `guess-${i}`));
      expect(pool.pendingCount).toBe(4);
      const { refused, wrong, other } = await settle(calls);
      expect(other).toEqual([]);
      expect(wrong).toBe(4);
      expect(refused).toBe(26);
      // Refused attempts never reached a worker.
      expect(pool.comparesRun).toBe(4);
    } finally {
      await htpasswd.close();
    }
  });

  it('credentials verified once are answered without touching the pool while it is saturated', async () => {
    const pool = new BcryptPool(1, 3);
    const htpasswd = new Htpasswd({ path: file, pool });
    try {
      expect(await htpasswd.verify('alice', 'alice-pw')).toBe('alice');
      const flood = Array.from({ length: 10 }, (_, i) => htpasswd.verify('alice', `guess-${i}`));
      expect(pool.pendingCount).toBe(3);
      const compare = vi.spyOn(pool, 'compare');
      expect(await htpasswd.verify('alice', 'alice-pw')).toBe('alice');
      expect(compare).not.toHaveBeenCalled();
      // A user never verified is refused (not queued) meanwhile.
      expect(pool.pendingCount).toBe(3);
      await expect(htpasswd.verify('bob', 'bob-pw')).rejects.toMatchObject({ code: 'TOOMANYREQUESTS' });
      await settle(flood);
    } finally {
      await htpasswd.close();
    }
  });

  it('failures do not evict verified credentials from the cache', async () => {
    const htpasswd = new Htpasswd({ path: file });
    // The pool the instance uses (injected or its own).
    const pool = (htpasswd as unknown as { pool: BcryptPool }).pool;
    try {
      expect(await htpasswd.verify('alice', 'alice-pw')).toBe('alice');
      // More distinct failures than the cache holds entries (10k); the compares are stubbed to keep it quick.
      const stub = vi.spyOn(pool, 'compare').mockResolvedValue(false);
      for (let i = 0; i < 10_050; i++) expect(await htpasswd.verify('alice', `guess-${i}`)).toBeUndefined();
      expect(stub).toHaveBeenCalledTimes(10_050);
      stub.mockRestore();
      const compare = vi.spyOn(pool, 'compare');
      expect(await htpasswd.verify('alice', 'alice-pw')).toBe('alice');
      expect(compare).not.toHaveBeenCalled();
    } finally {
      await htpasswd.close();
    }
  });
});
