// Runs our registry as a real child process (`node server/bin/registry.mjs
// serve config.yml`), the way it runs in production: for end-to-end tests with
// real clients, and for crash tests that SIGKILL it.
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import * as net from 'node:net';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { request } from 'undici';
import { stringify as toYaml } from 'yaml';
import bcrypt from 'bcryptjs';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const REGISTRY_BIN = path.join(REPO_ROOT, 'server', 'bin', 'registry.mjs');

export function makeTempDir(prefix = 'rs-e2e-'): string {
  return mkdtempSync(path.join(tmpdir(), prefix));
}

// Own copies of the htpasswd/Basic helpers: importing ./server.ts would load
// the whole server into the test process, which the e2e suites never need.

/** An htpasswd file with bcrypt entries ($2y$, as `htpasswd -B` writes them). */
export function writeHtpasswd(file: string, users: Record<string, string>, cost = 5): void {
  const lines = Object.entries(users).map(([u, p]) => `${u}:${bcrypt.hashSync(p, cost).replace(/^\$2b\$/, '$2y$')}`);
  writeFileSync(file, `${lines.join('\n')}\n`);
}

export function basicAuth(user: string, password: string): string {
  return `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;
}

/** A port that was free a moment ago (listen on :0, read it, close). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen({ host: '127.0.0.1', port: 0 }, () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

/** The environment for a child: ours, minus REGISTRY_* overrides that would leak into its config. */
export function cleanEnv(extra: Record<string, string | undefined> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('REGISTRY_')) env[k] = v;
  for (const [k, v] of Object.entries(extra)) {
    if (v === undefined) delete env[k];
    else env[k] = v;
  }
  return env;
}

/** Polls `url` until it answers any HTTP status (connection refused = not yet). */
export async function waitForHttp(url: string, timeoutMs: number, alive: () => boolean = () => true): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  let lastErr: unknown;
  while (Date.now() < deadline) {
    if (!alive()) throw new Error(`process exited while waiting for ${url}`);
    try {
      const res = await request(url, { method: 'GET', headersTimeout: 2000, bodyTimeout: 2000 });
      await res.body.dump();
      return res.statusCode;
    } catch (err) {
      lastErr = err;
      await sleep(100);
    }
  }
  throw new Error(`${url} did not answer within ${timeoutMs} ms: ${String(lastErr)}`);
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Collects a child's output (bounded) for error messages. */
export class OutputLog {
  private text = '';
  constructor(private readonly limit = 256 * 1024) {}
  push(chunk: Buffer | string): void {
    this.text += chunk.toString();
    if (this.text.length > this.limit) this.text = this.text.slice(-this.limit);
  }
  toString(): string {
    return this.text;
  }
}

export interface ServerProcessOptions {
  /** storage.filesystem.rootdirectory; shared between restarts and with distribution. Ignored with `storageDriver`. */
  dataDir: string;
  /**
   * The storage driver section to use instead of storage.filesystem, e.g.
   * `storage.driverConfig()` of a TestStorage (test/helpers/storage.ts).
   */
  storageDriver?: Record<string, unknown>;
  /** user → password: htpasswd auth on (file written into `workDir`). */
  users?: Record<string, string>;
  /** An existing htpasswd file to use instead of writing one from `users`. */
  htpasswdFile?: string;
  anonymousPull?: boolean;
  deleteEnabled?: boolean;
  /** Extra top-level config keys (distribution's shape), merged over the defaults. */
  extra?: Record<string, unknown>;
  /** Where the config (and htpasswd) go; a fresh temp dir by default. */
  workDir?: string;
  /** http.addr; default 127.0.0.1:0 (the port is read back from the start-up log line). */
  addr?: string;
  accessLog?: boolean;
  /** Node flags on the server's command line (some, like --single-threaded-gc, are refused in NODE_OPTIONS). */
  nodeArgs?: string[];
}

export interface ServerProcess {
  readonly child: ChildProcess;
  readonly url: string;
  readonly port: number;
  /** host:port, for image references. */
  readonly host: string;
  readonly dataDir: string;
  readonly configFile: string;
  readonly output: OutputLog;
  /** Resolves when the process has exited. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** SIGTERM, then SIGKILL after `graceMs`. */
  stop(graceMs?: number): Promise<void>;
  /** SIGKILL: the process dies at once, with no chance to clean up. */
  kill(): Promise<void>;
}

/** Writes the config file for `options` and returns its path. */
export function writeServerConfig(options: ServerProcessOptions): string {
  const workDir = options.workDir ?? makeTempDir('rs-e2e-srv-');
  mkdirSync(workDir, { recursive: true });
  const config: Record<string, unknown> = {
    version: '0.1',
    log: { level: 'info', accesslog: { disabled: !(options.accessLog ?? false) } },
    storage: {
      ...(options.storageDriver ?? { filesystem: { rootdirectory: options.dataDir } }),
      delete: { enabled: options.deleteEnabled ?? true },
    },
    http: { addr: options.addr ?? '127.0.0.1:0' },
  };
  if (options.htpasswdFile || (options.users && Object.keys(options.users).length > 0)) {
    const htpasswdPath = options.htpasswdFile ?? path.join(workDir, 'htpasswd');
    if (!options.htpasswdFile) writeHtpasswd(htpasswdPath, options.users ?? {});
    config.auth = { htpasswd: { realm: 'e2e', path: htpasswdPath }, anonymouspull: options.anonymousPull ?? false };
  }
  Object.assign(config, options.extra);
  const configFile = path.join(workDir, 'config.yml');
  writeFileSync(configFile, toYaml(config));
  return configFile;
}

/** Starts the server as a child process and waits until /v2/ answers. */
export async function startServerProcess(options: ServerProcessOptions, timeoutMs = 30_000): Promise<ServerProcess> {
  const configFile = writeServerConfig(options);
  const output = new OutputLog();
  const child = spawn(process.execPath, [...(options.nodeArgs ?? []), REGISTRY_BIN, 'serve', configFile], {
    cwd: REPO_ROOT,
    env: cleanEnv(),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let alive = true;
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => {
      alive = false;
      resolve({ code, signal });
    });
  });
  child.stderr?.on('data', (c: Buffer) => output.push(c));

  // The start-up line ({"msg":"registry listening","url":...}) tells the bound port.
  const url = await new Promise<string>((resolve, reject) => {
    let buf = '';
    const timer = setTimeout(() => {
      reject(new Error(`registry did not start within ${timeoutMs} ms:\n${output}`));
    }, timeoutMs);
    const onData = (c: Buffer) => {
      output.push(c);
      buf += c.toString();
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        try {
          const rec = JSON.parse(line) as { msg?: string; url?: string };
          if (rec.msg === 'registry listening' && rec.url) {
            clearTimeout(timer);
            child.stdout?.off('data', onData);
            child.stdout?.on('data', (d: Buffer) => output.push(d));
            resolve(rec.url);
            return;
          }
        } catch {
          // not a JSON log line
        }
      }
    };
    child.stdout?.on('data', onData);
    void exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`registry exited before listening (code ${code}, signal ${signal}):\n${output}`));
    });
  });
  const port = Number(new URL(url).port);
  try {
    await waitForHttp(`${url}/v2/`, timeoutMs, () => alive);
  } catch (err) {
    child.kill('SIGKILL');
    throw new Error(`${(err as Error).message}\n${output}`);
  }

  const kill = async () => {
    if (alive) child.kill('SIGKILL');
    await exited;
  };
  return {
    child,
    url,
    port,
    host: `127.0.0.1:${port}`,
    dataDir: options.dataDir,
    configFile,
    output,
    exited,
    kill,
    async stop(graceMs = 5000) {
      if (!alive) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => {
        if (alive) child.kill('SIGKILL');
      }, graceMs);
      await exited;
      clearTimeout(timer);
    },
  };
}
