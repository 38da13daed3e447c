// Our server in mirror mode, for the mirror suite: in this process
// (startTestServer) or as a child process (`node server/bin/registry.mjs
// serve config.yml`, with its own environment, e.g. REGISTRY_PROXY_USERNAME),
// plus small helpers to look into its data directory.
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import * as path from 'node:path';
import { cleanEnv, freePort, makeTempDir, OutputLog, REPO_ROOT, waitForHttp, writeServerConfig } from '../process.ts';
import { basicAuth, startTestServer, type TestServer } from '../server.ts';

export interface UpstreamEntry {
  host: string;
  url: string;
  username?: string;
  password?: string;
}

export interface MirrorOptions {
  /** proxy.upstreams */
  upstreams?: UpstreamEntry[];
  /** Other proxy keys (remoteurl, username, password, defaulthost, tagfreshness, tagmaxage, ttl). */
  proxy?: Record<string, unknown>;
  /** user → password: htpasswd auth on the mirror. */
  users?: Record<string, string>;
  anonymousPull?: boolean;
}

export interface Mirror {
  readonly url: string;
  /** host:port, for image references. */
  readonly host: string;
  /** storage.filesystem.rootdirectory */
  readonly dataDir: string;
  /** Basic auth header for the first user, when users were given. */
  readonly auth?: string;
  stop(): Promise<void>;
}

/** An in-process mirror: its cache fills can be awaited. */
export interface LocalMirror extends Mirror {
  server: TestServer;
  /**
   * Resolves once the cache fills running now are committed (or failed). A client has
   * its last byte once the bytes are verified, a moment before the commit, so a test
   * that looks at the cache right after a pull waits for this first.
   */
  settled(): Promise<void>;
}

function proxySection(options: MirrorOptions): Record<string, unknown> {
  return { ...(options.upstreams ? { upstreams: options.upstreams } : {}), ...options.proxy };
}

/** The mirror in this process. */
export async function startMirror(options: MirrorOptions): Promise<LocalMirror> {
  const server = await startTestServer({
    users: options.users ?? {},
    anonymousPull: options.anonymousPull,
    extra: { proxy: proxySection(options) },
  });
  const first = options.users && Object.entries(options.users)[0];
  return {
    server,
    url: server.url,
    host: new URL(server.url).host,
    dataDir: path.join(server.root, 'data'),
    auth: first ? basicAuth(first[0], first[1]) : undefined,
    stop: () => server.stop(),
    settled: () => server.mirror!.settled(),
  };
}

export interface MirrorProcess extends Mirror {
  readonly child: ChildProcess;
  readonly output: OutputLog;
  readonly configFile: string;
}

/** The mirror as a child process, the way it runs in production. `env` is added to a clean environment. */
export async function startMirrorProcess(options: MirrorOptions & { env?: Record<string, string> }): Promise<MirrorProcess> {
  const workDir = makeTempDir('rs-mirror-srv-');
  const dataDir = path.join(workDir, 'data');
  const port = await freePort();
  const configFile = writeServerConfig({
    dataDir,
    workDir,
    addr: `127.0.0.1:${port}`,
    users: options.users,
    anonymousPull: options.anonymousPull,
    extra: { proxy: proxySection(options) },
  });
  const output = new OutputLog();
  const child = spawn(process.execPath, [path.join(REPO_ROOT, 'server', 'bin', 'registry.mjs'), 'serve', configFile], {
    cwd: REPO_ROOT,
    env: cleanEnv(options.env ?? {}),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout?.on('data', (c: Buffer) => output.push(c));
  child.stderr?.on('data', (c: Buffer) => output.push(c));
  let alive = true;
  const exited = new Promise<void>((resolve) => {
    child.once('exit', () => {
      alive = false;
      resolve();
    });
  });
  const stop = async () => {
    if (alive) {
      child.kill('SIGTERM');
      const timer = setTimeout(() => {
        if (alive) child.kill('SIGKILL');
      }, 5000);
      await exited;
      clearTimeout(timer);
    }
    rmSync(workDir, { recursive: true, force: true });
  };
  const url = `http://127.0.0.1:${port}`;
  try {
    await waitForHttp(`${url}/v2/`, 30_000, () => alive);
  } catch (err) {
    await stop();
    throw new Error(`mirror did not start: ${(err as Error).message}\n${output}`);
  }
  const first = options.users && Object.entries(options.users)[0];
  return {
    child,
    output,
    configFile,
    url,
    host: `127.0.0.1:${port}`,
    dataDir,
    auth: first ? basicAuth(first[0], first[1]) : undefined,
    stop,
  };
}

const V2 = ['docker', 'registry', 'v2'];

/** Where a committed blob lives in a registry:2 data directory. */
export function blobDataPath(dataDir: string, digest: string): string {
  const hex = digest.replace(/^sha256:/, '');
  return path.join(dataDir, ...V2, 'blobs', 'sha256', hex.slice(0, 2), hex, 'data');
}

/** The bytes of a committed blob, or undefined when it is not in the cache. */
export function cachedBlob(dataDir: string, digest: string): Buffer | undefined {
  const file = blobDataPath(dataDir, digest);
  return existsSync(file) ? readFileSync(file) : undefined;
}

/** The repository directory for a cache name (e.g. docker.io/library/alpine). */
export function repoDir(dataDir: string, cacheName: string): string {
  return path.join(dataDir, ...V2, 'repositories', ...cacheName.split('/'));
}

/** The digest a cached tag points to, or undefined. */
export function cachedTag(dataDir: string, cacheName: string, tag: string): string | undefined {
  const link = path.join(repoDir(dataDir, cacheName), '_manifests', 'tags', tag, 'current', 'link');
  return existsSync(link) ? readFileSync(link, 'utf8').trim() : undefined;
}

/** Whether a manifest revision is cached in a repository. */
export function hasRevision(dataDir: string, cacheName: string, digest: string): boolean {
  const hex = digest.replace(/^sha256:/, '');
  return existsSync(path.join(repoDir(dataDir, cacheName), '_manifests', 'revisions', 'sha256', hex, 'link'));
}
