// `registry htpasswd <file> <user>`: the `htpasswd -B` most users need,
// without installing apache2-utils.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { hashPassword, parseHtpasswd } from '../auth/htpasswd.ts';

export async function htpasswdCommand(file: string, user: string, opts: { password?: string; cost: string }): Promise<void> {
  if (!/^[^:\s]+$/.test(user)) fail('user names cannot contain ":" or spaces');
  const cost = Number(opts.cost);
  if (!Number.isInteger(cost) || cost < 4 || cost > 17) fail('--cost must be an integer from 4 to 17');
  const password = opts.password ?? (await readLine());
  if (!password) fail('empty password');
  const existed = existsSync(file);
  const users = existed ? parseHtpasswd(readFileSync(file, 'utf8'), file) : new Map<string, string>();
  users.set(user, hashPassword(password, cost));
  const text = [...users].map(([u, h]) => `${u}:${h}`).join('\n');
  writeFileSync(file, `${text}\n`, { mode: 0o600 });
  process.stderr.write(`${existed ? 'updated' : 'created'} ${file}: ${user}\n`);
}

async function readLine(): Promise<string> {
  const rl = createInterface({ input: process.stdin });
  for await (const line of rl) {
    rl.close();
    return line;
  }
  return '';
}

function fail(message: string): never {
  process.stderr.write(`registry htpasswd: ${message}\n`);
  process.exit(2);
}
