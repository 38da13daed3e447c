// Servers and processes for the operations tests: a mirror in front of one
// of our private servers, admin requests, Prometheus text parsing, the
// `registry` CLI as a child process, and an in-process server whose logs
// the test reads.
import { spawn } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import { request } from 'undici';
import { stringify as toYaml } from 'yaml';
import { loadConfigObject } from '../../../server/src/config/load.ts';
import { startServer } from '../../../server/src/http/server.ts';
import { cleanEnv, REPO_ROOT } from '../process.ts';
import { basicAuth, makeTempDir, startTestServer, TEST_PASSWORD, TEST_USER, type TestServer, waitIdle, writeHtpasswd } from '../server.ts';
import { createTestStorage } from '../storage.ts';

export const ADMIN = { admin: { addr: '127.0.0.1:0' } };

export interface AdminResponse {
  status: number;
  text: string;
  json: () => any;
  headers: Record<string, string | string[] | undefined>;
}

export async function adminReq(server: { adminUrl?: string }, method: 'GET' | 'POST', pathAndQuery: string, token?: string): Promise<AdminResponse> {
  if (!server.adminUrl) throw new Error('the server has no admin listener');
  const res = await request(`${server.adminUrl}${pathAndQuery}`, {
    method,
    headers: token ? { authorization: `Bearer ${token}` } : {},
  });
  const text = await res.body.text();
  return { status: res.statusCode, text, json: () => JSON.parse(text), headers: res.headers };
}

/** The value of one Prometheus sample (labels must match exactly the ones given, in any order); undefined when absent. */
export function metric(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)$/.exec(line.trim());
    if (!m || m[1] !== name) continue;
    const got: Record<string, string> = {};
    for (const part of (m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) got[part[1]] = part[2];
    const wanted = Object.entries(labels);
    if (wanted.length !== Object.keys(got).length) continue;
    if (wanted.every(([k, v]) => got[k] === v)) return Number(m[3]);
  }
  return undefined;
}

export interface MirrorPair {
  upstream: TestServer;
  mirror: TestServer;
  /** The upstream as the mirror names it (host:port). */
  upstreamHost: string;
  /** The mirror's cache name for an upstream repository. */
  cacheName: (repo: string) => string;
  stop: () => Promise<void>;
}

/**
 * A private server of ours (with a user) as the upstream, and a mirror of it
 * (no auth of its own) that logs in to the upstream with the user's
 * credentials. `mirrorExtra` is merged into the mirror's config.
 */
export async function startMirrorPair(mirrorExtra: Record<string, unknown> = {}, upstreamExtra: Record<string, unknown> = {}): Promise<MirrorPair> {
  const upstream = await startTestServer({ extra: upstreamExtra });
  const upstreamHost = `127.0.0.1:${upstream.port}`;
  const { proxy: proxyExtra, ...rest } = mirrorExtra as { proxy?: Record<string, unknown> };
  const mirror = await startTestServer({
    users: {},
    extra: {
      proxy: {
        upstreams: [{ host: upstreamHost, url: upstream.url, username: TEST_USER, password: TEST_PASSWORD }],
        ...proxyExtra,
      },
      ...rest,
    },
  });
  return {
    upstream,
    mirror,
    upstreamHost,
    cacheName: (repo) => `${upstreamHost.replace(':', '_')}/${repo}`,
    async stop() {
      await mirror.stop();
      await upstream.stop();
    },
  };
}

/** Writes `raw` as a YAML config file in `dir` and returns its path. */
export function writeConfig(dir: string, raw: Record<string, unknown>, name = 'config.yml'): string {
  const file = path.join(dir, name);
  writeFileSync(file, toYaml(raw));
  return file;
}

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
  /** stdout's JSON lines, parsed. */
  lines: Array<Record<string, any>>;
}

/** Runs `registry <args>` (server/bin/registry.mjs) as a child process. */
export function runCli(args: string[], timeoutMs = 60_000): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(REPO_ROOT, 'server', 'bin', 'registry.mjs'), ...args], {
      cwd: REPO_ROOT,
      env: cleanEnv(),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`registry ${args.join(' ')} did not finish within ${timeoutMs} ms\n${stderr}`));
    }, timeoutMs);
    child.once('error', reject);
    child.once('exit', (code) => {
      clearTimeout(timer);
      const lines = stdout
        .split('\n')
        .filter((l) => l.trim() !== '')
        .map((l) => JSON.parse(l) as Record<string, any>);
      resolve({ code, stdout, stderr, lines });
    });
  });
}

/** Collects everything a pino logger writes. */
export class LogSink extends Writable {
  text = '';
  override _write(chunk: Buffer, _enc: BufferEncoding, done: () => void): void {
    this.text += chunk.toString();
    done();
  }
  records(): Array<Record<string, any>> {
    return this.text
      .split('\n')
      .filter((l) => l.trim() !== '')
      .map((l) => JSON.parse(l) as Record<string, any>);
  }
  /** The access log lines ("request"). */
  requests(): Array<Record<string, any>> {
    return this.records().filter((r) => r.msg === 'request');
  }
}

export interface LoggedServer extends TestServer {
  sink: LogSink;
}

/**
 * Like startTestServer, but with a real pino logger (level from the config's
 * log.level, access log on) writing into a sink the test reads.
 */
export async function startLoggedServer(
  options: { users?: Record<string, string>; extra?: Record<string, unknown>; level?: string } = {},
): Promise<LoggedServer> {
  const users = options.users ?? { [TEST_USER]: TEST_PASSWORD };
  const root = makeTempDir('rs-ops-log-');
  const raw: Record<string, unknown> = {
    version: '0.1',
    log: { level: options.level ?? 'info' },
    storage: { filesystem: { rootdirectory: path.join(root, 'data') }, delete: { enabled: true } },
    http: { addr: '127.0.0.1:0' },
    ...options.extra,
  };
  if (Object.keys(users).length > 0) {
    const htpasswdPath = path.join(root, 'htpasswd');
    writeHtpasswd(htpasswdPath, users);
    raw.auth = { htpasswd: { realm: 'test-realm', path: htpasswdPath } };
  }
  const { config } = loadConfigObject(raw, {});
  const sink = new LogSink();
  const logger = pino({ level: config.log.level }, sink);
  const running = await startServer(config, { logger, metrics: true });
  const [firstUser, firstPassword] = Object.entries(users)[0] ?? ['', ''];
  return {
    ...running,
    metrics: running.metrics!,
    root,
    storage: await createTestStorage('ops', { dataDir: path.join(root, 'data'), kind: 'filesystem' }),
    sink,
    auth: basicAuth(firstUser, firstPassword),
    idle: () => waitIdle(running),
    async stop() {
      await running.close();
      rmSync(root, { recursive: true, force: true });
    },
  };
}
