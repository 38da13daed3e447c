// What `registry serve` checks after the config loads and before it listens:
// things the schema cannot see because they live on disk. Without these a
// careless value is accepted and fails later, where it is hard to read: an
// unwritable data directory as a bare 500 on the first push (and EACCES only
// on /readyz), a non-bcrypt htpasswd line as a stack trace out of startServer.
// Each problem is a ConfigError naming the key, so it reaches the operator as
// the same one line as any other config mistake.
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { parseHtpasswd } from '../auth/htpasswd.ts';
import { ConfigError } from '../config/load.ts';
import type { RegistryConfig } from '../config/schema.ts';

export function preflight(config: RegistryConfig): void {
  checkDataDirectory(config);
  checkHtpasswd(config);
}

/** storage.filesystem.rootdirectory: created if missing, then proven writable with a probe file. */
function checkDataDirectory(config: RegistryConfig): void {
  const root = config.storage.filesystem?.rootdirectory;
  if (root === undefined) return;
  const key = 'storage.filesystem.rootdirectory';
  try {
    mkdirSync(root, { recursive: true });
  } catch (err) {
    throw new ConfigError(`${key}: cannot create the data directory ${JSON.stringify(root)}: ${osError(err)}`);
  }
  // Write access is what pushes need; only a write shows it (permissions, read-only mounts, ACLs, root's exemptions).
  const probe = path.join(root, `.registry-write-probe-${process.pid}`);
  try {
    writeFileSync(probe, 'probe\n');
  } catch (err) {
    throw new ConfigError(`${key}: cannot write to the data directory ${JSON.stringify(root)}: ${osError(err)}`);
  }
  rmSync(probe, { force: true });
}

/** auth.htpasswd.path: read and parsed now, so a bad line stops the start (the server would throw it anyway). */
function checkHtpasswd(config: RegistryConfig): void {
  const file = config.auth?.htpasswd?.path;
  if (file === undefined) return;
  const key = 'auth.htpasswd.path';
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(`${key}: cannot read ${JSON.stringify(file)}: ${osError(err)}`);
  }
  try {
    parseHtpasswd(text, file);
  } catch (err) {
    throw new ConfigError(`${key}: ${(err as Error).message}`);
  }
}

/** "EACCES: permission denied, open '/x/.probe'" → "permission denied (EACCES)": the path is named already. */
function osError(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  if (!e.code) return e.message;
  const text = e.message.replace(new RegExp(`^${e.code}: `), '').replace(/, \w+ '.*'$/, '');
  return `${text} (${e.code})`;
}
