// Starts the two registries under test as child processes: ours
// (`node <server/bin/runtime.mjs flags> server/bin/registry.mjs serve config.yml`, as `npm start` runs it) and CNCF distribution
// 2.8.2 (Debian's `docker-registry serve config.yml`). Both get the very same
// config.yml apart from the data directory (or bucket) and port, so every
// setting the bench depends on (logging, storage driver and its options,
// delete, cache, auth, proxy.remoteurl for the mirror rows) is identical.
import { type ChildProcess, spawn } from 'node:child_process';
import { closeSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { request } from 'undici';
import { stringify } from 'yaml';
import { NODE_ENV, NODE_FLAGS } from '../../server/bin/runtime.mjs';

export type Kind = 'ours' | 'dist';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

export interface ServerSpec {
  kind: Kind;
  /** Data directory (storage.filesystem.rootdirectory); reused across restarts. Ignored when `s3` is set. */
  dataDir: string;
  /** storage.s3 (distribution's keys): the server stores in this bucket instead of `dataDir`. */
  s3?: Record<string, unknown>;
  /** Where config.yml and the server's stderr/stdout go. */
  workDir: string;
  /** htpasswd file; no auth section when undefined. */
  htpasswd?: string;
  /** proxy.remoteurl: run as a pull-through cache of this registry (distribution's key, loaded unchanged by ours). */
  proxyRemoteUrl?: string;
  /**
   * Extra node command-line flags for our server, e.g. ["--cpu-prof", "--cpu-prof-dir=/tmp/prof"]
   * (node 20 refuses --cpu-prof in NODE_OPTIONS, so these go on the command line).
   */
  nodeArgs?: string[];
  /** Label used for file names (phase). */
  label: string;
  /** Checkout whose server/bin/registry.mjs is run as "ours" (default: this repository). */
  oursRoot?: string;
  /**
   * Instead of our server, the least a Node server can be (BARE_NODE_SERVER), on the same Node with
   * the same flags and environment: what RSS at start cannot go below (kind 'ours' only).
   */
  bareNode?: boolean;
}

/** node:http answering every request with 200 and `{}`, on the port given as its argument. */
const BARE_NODE_SERVER =
  "require('node:http').createServer((q, s) => { s.setHeader('content-type', 'application/json'); s.end('{}'); })" +
  ".listen(Number(process.argv[1]), '127.0.0.1')";

export interface RunningRegistry {
  kind: Kind;
  pid: number;
  url: string;
  port: number;
  logFile: string;
  /** Peak resident set size so far (VmHWM), bytes. */
  peakRss(): number;
  /** Current resident set size (VmRSS), bytes. */
  rss(): number;
  /** SIGTERM (then SIGKILL after 15 s); resolves with the peak RSS read just before. */
  stop(): Promise<number>;
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

/** The config both servers load: distribution's config.yml shape, only keys both understand. */
export function configFor(
  dataDir: string,
  port: number,
  htpasswd?: string,
  proxyRemoteUrl?: string,
  s3?: Record<string, unknown>,
): Record<string, unknown> {
  const config: Record<string, unknown> = {
    version: '0.1',
    // Access logs off on both, and a level at which neither logs per request
    // (distribution logs "response completed" at info even without access logs).
    log: { level: 'error', accesslog: { disabled: true } },
    storage: {
      ...(s3 ? { s3 } : { filesystem: { rootdirectory: dataDir } }),
      delete: { enabled: true },
      // distribution's usual registry:2 config; ours has its descriptor cache always on.
      cache: { blobdescriptor: 'inmemory' },
    },
    http: { addr: `127.0.0.1:${port}` },
  };
  if (htpasswd) config.auth = { htpasswd: { realm: 'bench', path: htpasswd } };
  if (proxyRemoteUrl) config.proxy = { remoteurl: proxyRemoteUrl };
  return config;
}

/** VmHWM / VmRSS of a live process, in bytes (0 when it is gone). */
export function procStatus(pid: number): { hwm: number; rss: number } {
  try {
    const text = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? 0) * 1024;
    return { hwm: kb('VmHWM'), rss: kb('VmRSS') };
  } catch {
    return { hwm: 0, rss: 0 };
  }
}

export async function startRegistry(spec: ServerSpec): Promise<RunningRegistry> {
  const port = await freePort();
  const configFile = path.join(spec.workDir, `${spec.kind}-${spec.label}.yml`);
  writeFileSync(configFile, stringify(configFor(spec.dataDir, port, spec.htpasswd, spec.proxyRemoteUrl, spec.s3)));
  const logFile = path.join(spec.workDir, `${spec.kind}-${spec.label}.log`);
  const logFd = openSync(logFile, 'w');

  const env: NodeJS.ProcessEnv = { ...process.env };
  // distribution's compiled-in s3 driver panics at start when AWS_CA_BUNDLE is set (see CLIENTS.md).
  delete env.AWS_CA_BUNDLE;
  // The bench itself runs under `node --import tsx`; don't leak our own NODE_OPTIONS into the servers.
  delete env.NODE_OPTIONS;
  let child: ChildProcess;
  if (spec.kind === 'ours') {
    const root = spec.oursRoot ?? REPO_ROOT;
    // As `npm start` and the image start it (server/bin/runtime.mjs).
    const main = spec.bareNode ? ['-e', BARE_NODE_SERVER, String(port)] : [path.join(root, 'server/bin/registry.mjs'), 'serve', configFile];
    child = spawn(process.execPath, [...NODE_FLAGS, ...(spec.nodeArgs ?? []), ...main], {
      cwd: root,
      env: { ...env, ...NODE_ENV },
      stdio: ['ignore', logFd, logFd],
    });
  } else {
    child = spawn('docker-registry', ['serve', configFile], { cwd: spec.workDir, env, stdio: ['ignore', logFd, logFd] });
  }
  closeSync(logFd);
  const pid = child.pid;
  if (pid === undefined) throw new Error(`could not start ${spec.kind}`);

  let exited = false;
  let exitInfo = '';
  const exitPromise = new Promise<void>((resolve) => {
    child.once('exit', (code, signal) => {
      exited = true;
      exitInfo = `code ${code} signal ${signal}`;
      resolve();
    });
  });

  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (exited) throw new Error(`${spec.kind} exited at start (${exitInfo}):\n${tail(logFile)}`);
    try {
      const res = await request(`${url}/v2/`, { headersTimeout: 2_000, bodyTimeout: 2_000 });
      await res.body.dump();
      if (res.statusCode === 200 || res.statusCode === 401) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`${spec.kind} did not answer /v2/ within 30 s:\n${tail(logFile)}`);
    }
    await sleep(50);
  }

  let lastHwm = 0;
  const peakRss = () => {
    const { hwm } = procStatus(pid);
    if (hwm > lastHwm) lastHwm = hwm;
    return lastHwm;
  };
  return {
    kind: spec.kind,
    pid,
    url,
    port,
    logFile,
    peakRss,
    rss: () => procStatus(pid).rss,
    async stop() {
      const peak = peakRss();
      if (!exited) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => {
          if (!exited) child.kill('SIGKILL');
        }, 15_000);
        await exitPromise;
        clearTimeout(timer);
      }
      return peak;
    },
  };
}

export function tail(file: string, lines = 30): string {
  try {
    return readFileSync(file, 'utf8').split('\n').slice(-lines).join('\n');
  } catch {
    return '';
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

export interface RunningRelay {
  pid: number;
  url: string;
  port: number;
  stop(): Promise<void>;
}

/** relay.ts as a child process: 127.0.0.1:<new port> → 127.0.0.1:<targetPort>, answers limited to `bytesPerSecond`. */
export async function startRelay(targetPort: number, bytesPerSecond: number): Promise<RunningRelay> {
  const env: NodeJS.ProcessEnv = { ...process.env };
  delete env.NODE_OPTIONS;
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(REPO_ROOT, 'test/bench/relay.ts'), String(targetPort), String(bytesPerSecond)], {
    cwd: REPO_ROOT,
    env,
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const pid = child.pid;
  if (pid === undefined) throw new Error('could not start the relay');
  let exited = false;
  const exitPromise = new Promise<void>((resolve) =>
    child.once('exit', () => {
      exited = true;
      resolve();
    }),
  );
  const port = await new Promise<number>((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error('the relay did not start within 30 s')), 30_000);
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /^(\d+)\n/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`the relay exited at start (code ${code})`));
    });
  });
  return {
    pid,
    port,
    url: `http://127.0.0.1:${port}`,
    async stop() {
      if (!exited) {
        child.kill('SIGTERM');
        await exitPromise;
      }
      child.stdout?.destroy();
    },
  };
}
