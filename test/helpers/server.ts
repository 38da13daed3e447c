// Starts a real registry server (in this process) on a random loopback port,
// storing in a fresh temp directory, for API tests.
import { createHash } from 'node:crypto';
import { type Dirent, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import bcrypt from 'bcryptjs';
import { loadConfigObject } from '../../server/src/config/load.ts';
import { type RunningServer, startServer } from '../../server/src/http/server.ts';
import { silentLogger } from '../../server/src/ops/logger.ts';

export interface TestServer extends RunningServer {
  root: string;
  /** Basic auth header for the test user (when users were configured). */
  auth: string;
  stop(): Promise<void>;
}

export interface TestServerOptions {
  /** user → password; when set, htpasswd auth is on. */
  users?: Record<string, string>;
  anonymousPull?: boolean;
  deleteEnabled?: boolean;
  readOnly?: boolean;
  /** Extra raw config merged over the defaults (distribution's shape). */
  extra?: Record<string, unknown>;
  /** Reuse an existing data directory. */
  root?: string;
  /**
   * The storage driver section(s) to use instead of storage.filesystem, e.g.
   * `{ s3: bucket.storageConfig() }`; delete/maintenance settings stay as above.
   */
  storageDriver?: Record<string, unknown>;
}

export const TEST_USER = 'tester';
export const TEST_PASSWORD = 'secret-pw';

export function makeTempDir(prefix = 'rs-test-'): string {
  return mkdtempSync(path.join(tmpdir(), prefix));
}

export function writeHtpasswd(file: string, users: Record<string, string>, cost = 4): void {
  const lines = Object.entries(users).map(([u, p]) => `${u}:${bcrypt.hashSync(p, cost).replace(/^\$2b\$/, '$2y$')}`);
  writeFileSync(file, `${lines.join('\n')}\n`);
}

export function basicAuth(user: string, password: string): string {
  return `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;
}

export async function startTestServer(options: TestServerOptions = {}): Promise<TestServer> {
  const users = options.users ?? { [TEST_USER]: TEST_PASSWORD };
  const root = options.root ?? makeTempDir();
  const ownsRoot = options.root === undefined;
  const raw: Record<string, unknown> = {
    version: '0.1',
    log: { level: 'error', accesslog: { disabled: true } },
    storage: {
      ...(options.storageDriver ?? { filesystem: { rootdirectory: path.join(root, 'data') } }),
      delete: { enabled: options.deleteEnabled ?? true },
      ...(options.readOnly ? { maintenance: { readonly: { enabled: true } } } : {}),
    },
    http: { addr: '127.0.0.1:0' },
    ...options.extra,
  };
  if (Object.keys(users).length > 0) {
    const htpasswdPath = path.join(root, 'htpasswd');
    writeHtpasswd(htpasswdPath, users);
    raw.auth = { htpasswd: { realm: 'test-realm', path: htpasswdPath }, anonymouspull: options.anonymousPull ?? false };
  }
  const { config } = loadConfigObject(raw, {});
  const running = await startServer(config, { logger: silentLogger });
  const [firstUser, firstPassword] = Object.entries(users)[0] ?? ['', ''];
  return {
    ...running,
    root,
    auth: basicAuth(firstUser, firstPassword),
    async stop() {
      await running.close();
      if (ownsRoot) rmSync(root, { recursive: true, force: true });
    },
  };
}

/**
 * Every file and directory under `dir` (recursively, nothing ignored), as
 * relative path → "dir", "file <size> <sha256>" or "symlink <target>". Two
 * snapshots are equal exactly when the tree's names and file contents are.
 * A missing `dir` is an empty tree.
 */
export function snapshotTree(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (rel: string) => {
    const full = rel ? path.join(dir, rel) : dir;
    let entries: Dirent[];
    try {
      entries = readdirSync(full, { withFileTypes: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT' && rel === '') return;
      throw err;
    }
    for (const e of entries) {
      const childRel = rel ? `${rel}/${e.name}` : e.name;
      const childFull = path.join(dir, childRel);
      if (e.isSymbolicLink()) out[childRel] = `symlink ${readlinkSync(childFull)}`;
      else if (e.isDirectory()) {
        out[childRel] = 'dir';
        walk(childRel);
      } else {
        const data = readFileSync(childFull);
        out[childRel] = `file ${data.length} ${createHash('sha256').update(data).digest('hex')}`;
      }
    }
  };
  walk('');
  return out;
}

/** The data directory of a test server (storage.filesystem.rootdirectory). */
export function dataDir(server: { root: string }): string {
  return path.join(server.root, 'data');
}
