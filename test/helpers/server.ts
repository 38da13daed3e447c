// Starts a real registry server (in this process) on a random loopback port,
// storing in a fresh temp directory, or with RS_TEST_STORAGE=s3 (the "s3"
// vitest project) in a fresh bucket of the run's RGW, for API tests.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import bcrypt from 'bcryptjs';
import { loadConfigObject } from '../../server/src/config/load.ts';
import { type RunningServer, startServer } from '../../server/src/http/server.ts';
import { silentLogger } from '../../server/src/log/logger.ts';
import type { Metrics } from '../../server/src/ops/metrics.ts';
import { createTestStorage, type TestStorage } from './storage.ts';

export { snapshotTree } from './storage.ts';

export interface TestServer extends RunningServer {
  /** Always kept for tests (StartOptions.metrics), admin listener or not. */
  readonly metrics: Metrics;
  root: string;
  /** Where it stores (the data directory, or the bucket with RS_TEST_STORAGE=s3), and a view of it. */
  storage: TestStorage;
  /** Basic auth header for the test user (when users were configured). */
  auth: string;
  stop(): Promise<void>;
  /**
   * Resolves once no request is being handled (registry_http_requests_in_flight is 0), e.g.
   * after a raw request the client gave up on, whose handler may still be cleaning up.
   */
  idle(): Promise<void>;
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
   * Then `storage` describes the data directory, whatever the driver.
   */
  storageDriver?: Record<string, unknown>;
  /**
   * Store there (shared with other servers; not destroyed by stop()). Default:
   * `root`/data on the filesystem, or with RS_TEST_STORAGE=s3 a fresh bucket
   * that stop() removes (unless `root` or `storageDriver` is given).
   */
  storage?: TestStorage;
  /** Extra keys of the driver section (storage.filesystem / storage.s3) when it is not `storageDriver`. */
  driverExtra?: Record<string, unknown>;
  /** Extra keys of the storage section, e.g. `{ redirect: { disable: true } }`. */
  storageExtra?: Record<string, unknown>;
}

export const TEST_USER = 'tester';
export const TEST_PASSWORD = 'secret-pw';

/** Resolves once the server handles no request (registry_http_requests_in_flight is 0). */
export async function waitIdle(running: RunningServer): Promise<void> {
  // Generous: on a busy machine a handler's last storage write (an fsync behind other tests' gigabytes) can take seconds.
  const { metrics } = running;
  if (!metrics) throw new Error('waitIdle needs a server started with StartOptions.metrics');
  const deadline = Date.now() + 30_000;
  for (;;) {
    const inFlight = (await metrics.inFlight.get()).values[0]?.value;
    if (inFlight === 0) return;
    if (Date.now() > deadline) throw new Error(`the server is still handling ${inFlight} requests after 30 s`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

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
  // A given root keeps its data directory (shared with an earlier server), whatever the driver.
  const useDefault = options.storage === undefined && options.storageDriver === undefined;
  const storage =
    options.storage ??
    (await createTestStorage('api', {
      dataDir: path.join(root, 'data'),
      kind: useDefault && options.root === undefined ? undefined : 'filesystem',
    }));
  const ownsStorage = options.storage === undefined;
  const raw: Record<string, unknown> = {
    version: '0.1',
    log: { level: 'error', accesslog: { disabled: true } },
    storage: {
      ...(options.storageDriver ?? storage.driverConfig(options.driverExtra)),
      delete: { enabled: options.deleteEnabled ?? true },
      ...(options.readOnly ? { maintenance: { readonly: { enabled: true } } } : {}),
      ...options.storageExtra,
    },
    http: { addr: '127.0.0.1:0' },
    ...options.extra,
  };
  if (Object.keys(users).length > 0) {
    const htpasswdPath = path.join(root, 'htpasswd');
    writeHtpasswd(htpasswdPath, users);
    raw.auth = { htpasswd: { realm: 'test-realm', path: htpasswdPath }, anonymouspull: options.anonymousPull ?? false };
  }
  let running: RunningServer;
  try {
    const { config } = loadConfigObject(raw, {});
    running = await startServer(config, { logger: silentLogger, metrics: true });
  } catch (err) {
    if (ownsStorage) await storage.destroy();
    if (ownsRoot) rmSync(root, { recursive: true, force: true });
    throw err;
  }
  const [firstUser, firstPassword] = Object.entries(users)[0] ?? ['', ''];
  return {
    ...running,
    metrics: running.metrics!,
    root,
    storage,
    auth: basicAuth(firstUser, firstPassword),
    idle: () => waitIdle(running),
    async stop() {
      await running.close();
      if (ownsStorage) await storage.destroy();
      if (ownsRoot) rmSync(root, { recursive: true, force: true });
    },
  };
}

/** The data directory of a test server (storage.filesystem.rootdirectory). */
export function dataDir(server: { root: string }): string {
  return path.join(server.root, 'data');
}
