// The htpasswd file (bcrypt, as `htpasswd -B` writes it). bcrypt salts are
// random, so a hash made afresh on every `pulumi up` would change the file and
// redeploy the registry each time. Two things keep it stable:
//   - the salt is derived from a secret seed (kept in the Pulumi state) and the
//     user/password pair, so the same password always hashes the same way;
//   - a hash from an earlier file that still matches the password is reused.
// A changed password gets a new salt and a new hash.
import { createHmac } from 'node:crypto';
import bcrypt from 'bcryptjs';

export interface HtpasswdOptions {
  /** Secret seed the salts are derived from. */
  seed: string;
  /** bcrypt cost (work factor). */
  cost: number;
  /** An earlier htpasswd file whose matching hashes are kept. */
  previous?: string;
}

export function deterministicSalt(seed: string, user: string, password: string, cost: number): string {
  const bytes = createHmac('sha256', seed).update(`htpasswd\0${user}\0${password}`).digest().subarray(0, 16);
  return `$2b$${String(cost).padStart(2, '0')}$${bcrypt.encodeBase64(bytes, 16)}`;
}

export function parseHtpasswd(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of text.split('\n')) {
    const t = line.trim();
    if (!t || t.startsWith('#')) continue;
    const colon = t.indexOf(':');
    if (colon > 0) out.set(t.slice(0, colon), t.slice(colon + 1));
  }
  return out;
}

export function renderHtpasswd(users: Record<string, string>, o: HtpasswdOptions): string {
  const previous = o.previous ? parseHtpasswd(o.previous) : new Map<string, string>();
  const lines = Object.keys(users)
    .sort()
    .map((user) => {
      const password = users[user];
      const old = previous.get(user);
      if (old && /^\$2[aby]\$/.test(old) && bcrypt.getRounds(old) === o.cost && bcrypt.compareSync(password, old.replace(/^\$2y\$/, '$2b$'))) {
        return `${user}:${old}`;
      }
      const hash = bcrypt.hashSync(password, deterministicSalt(o.seed, user, password, o.cost));
      return `${user}:${hash.replace(/^\$2b\$/, '$2y$')}`;
    });
  return `${lines.join('\n')}\n`;
}
