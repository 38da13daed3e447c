// What a server holds in memory, measured on the real process (the compiled
// build, run by the `registry` bin, with the flags and environment `npm start`
// and the image give it: server/bin/runtime.mjs) through /proc:
// - a mode loads no large module it does not use (the AWS SDK, ioredis);
// - clients that stop reading a large blob pin well under 2 MB each, and the
//   memory goes back when they leave (issue 13 item 10: 100 of them took
//   8.5 MB each, and it stayed).
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { request } from 'undici';
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import { NODE_ENV, NODE_FLAGS } from '../../server/bin/runtime.mjs';
import { RegistryClient, stalledDownloads } from '../helpers/client.ts';
import { randomBlob } from '../helpers/oci.ts';
import { basicAuth, makeTempDir, REPO_ROOT, type ServerProcess, type ServerProcessOptions, startServerProcess } from '../helpers/process.ts';

const MiB = 1024 * 1024;
const SERVER_SRC = path.join(REPO_ROOT, 'server/src');
const BLOB_SIZE = 50 * MiB;
const STALLED = 100;

/** VmRSS of a live process, in bytes. */
function rss(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no VmRSS for ${pid}`);
  return Number(m[1]) * 1024;
}

/** Starts the server as production does: runtime.mjs's flags on its command line and its environment. */
async function startAsDeployed(options: ServerProcessOptions, extraNodeOptions: string[] = []): Promise<ServerProcess> {
  const saved = { ...process.env };
  Object.assign(process.env, NODE_ENV, { NODE_OPTIONS: extraNodeOptions.join(' ') });
  try {
    return await startServerProcess({ ...options, nodeArgs: NODE_FLAGS });
  } finally {
    for (const key of Object.keys(process.env)) if (!(key in saved)) delete process.env[key];
    Object.assign(process.env, saved);
  }
}

/**
 * A module preloaded into the server (--import) that writes, when the process
 * exits, every module it loaded: ES modules as the loader resolved them,
 * CommonJS ones from require's cache, and Node's built-in modules (as
 * `node:<name>`, from process.moduleLoadList, which also sees those that
 * packages require).
 */
function moduleProbe(dir: string): { file: string; loaded: () => string[] } {
  const out = path.join(dir, 'modules.json');
  const hooks = `let port; export function initialize(data) { port = data.port; }
export async function resolve(specifier, context, next) { const r = await next(specifier, context); port.postMessage(r.url); return r; }`;
  const file = path.join(dir, 'probe.mjs');
  writeFileSync(
    file,
    `import { register, createRequire } from 'node:module';
import { MessageChannel } from 'node:worker_threads';
import { writeFileSync } from 'node:fs';
const { port1, port2 } = new MessageChannel();
const urls = new Set();
port1.on('message', (url) => urls.add(url));
port1.unref();
register('data:text/javascript,' + encodeURIComponent(${JSON.stringify(hooks)}), { data: { port: port2 }, transferList: [port2] });
const cache = createRequire(import.meta.url).cache;
const builtins = () => process.moduleLoadList.filter((m) => m.startsWith('NativeModule ')).map((m) => 'node:' + m.slice('NativeModule '.length));
process.on('exit', () => writeFileSync(${JSON.stringify(out)}, JSON.stringify([...urls, ...Object.keys(cache), ...builtins()])));
`,
  );
  return { file, loaded: () => JSON.parse(readFileSync(out, 'utf8')) as string[] };
}

/** Packages among the module paths or URLs. */
function packages(modules: string[]): Set<string> {
  const names = new Set<string>();
  for (const m of modules) {
    const match = /node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(m);
    if (match) names.add(match[1]);
  }
  return names;
}

describe('what a server loads', () => {
  let server: ServerProcess | undefined;

  afterEach(async () => {
    await server?.stop();
    server = undefined;
  });

  /** Every module a server started as deployed with `options` loaded, from its start to its stop. */
  async function modulesLoaded(options: Omit<ServerProcessOptions, 'dataDir'>): Promise<string[]> {
    const dir = mkdtempSync(path.join(tmpdir(), 'rs-mods-'));
    try {
      const probe = moduleProbe(dir);
      server = await startAsDeployed({ dataDir: path.join(dir, 'data'), ...options }, [`--import=${probe.file}`]);
      await server.stop();
      return probe.loaded();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }

  test('a private registry on the filesystem loads none of the modules only other modes and commands use', async () => {
    const modules = await modulesLoaded({ users: { u: 'p' }, anonymousPull: true });
    const loaded = packages(modules);
    // The probe sees the packages the server does use (else this test would prove nothing).
    expect(loaded).toContain('pino');
    expect(loaded).toContain('bcryptjs');
    expect(modules).toContain('node:http');
    // S3 storage; redis; replicas' resumable hashes; the mirror's HTTP client; token auth's JWTs (Basic auth
    // here); the maintenance and mirror-pull commands' progress bars; the build; the command-line parser
    // (`registry serve <config>` starts the server without it); zod (compiled into the build, what the
    // config schema uses of it only); Prometheus metrics (nothing reads them without an admin listener).
    for (const unused of [
      '@aws-sdk/client-s3',
      '@aws-sdk/s3-request-presigner',
      'ioredis',
      'hash-wasm',
      'undici',
      'jose',
      'cli-progress',
      'tsx',
      'esbuild',
      'commander',
      'zod',
      'prom-client',
    ]) {
      expect(loaded).not.toContain(unused);
    }
    // Packages whose entry loads more than is used: rate-limiter-flexible's every store (Mongo, MySQL,
    // cluster IPC, ...). Its files are loaded instead.
    expect(modules.filter((m) => m.endsWith('node_modules/rate-limiter-flexible/index.js'))).toEqual([]);
    // A plain HTTP server: no TLS stack, no gzip.
    for (const builtin of ['node:https', 'node:tls', 'node:zlib']) expect(modules).not.toContain(builtin);
  });

  test('with an admin listener it loads the parts of prom-client it uses, not its entry', async () => {
    const modules = await modulesLoaded({ extra: { admin: { addr: '127.0.0.1:0' } } });
    expect(packages(modules)).toContain('prom-client');
    // The entry also loads the Pushgateway client (and with it node:zlib and node:https) and the cluster aggregator.
    expect(modules.filter((m) => m.endsWith('node_modules/prom-client/index.js'))).toEqual([]);
    for (const builtin of ['node:https', 'node:zlib']) expect(modules).not.toContain(builtin);
  });

  test("a mirror loads undici's agent and request, not its entry (fetch, WebSocket, the HTTP cache, the mock agents)", async () => {
    const modules = await modulesLoaded({ extra: { proxy: { remoteurl: 'http://127.0.0.1:9' } } });
    expect(modules.filter((m) => m.endsWith('node_modules/undici/lib/dispatcher/agent.js'))).toHaveLength(1);
    expect(modules.filter((m) => m.endsWith('node_modules/undici/lib/api/api-request.js'))).toHaveLength(1);
    expect(modules.filter((m) => /node_modules\/undici\/(index\.js|lib\/(web|mock|cache)\/)/.test(m))).toEqual([]);
  });

  test('no server module imports node:http as an ES module (Node 22 and later then load undici, tls and http2)', () => {
    // The namespace of an ESM import of node:http reads its lazy WebSocket getters: on the image's
    // Node 24 that is about 14 MB of RSS at start. The server takes node:http through require.
    const esmImports = readdirSync(SERVER_SRC, { recursive: true, encoding: 'utf8' })
      .filter((f) => f.endsWith('.ts'))
      .filter((f) => /^import (?!type )[^;]*from 'node:http';|import\('node:http'\)/m.test(readFileSync(path.join(SERVER_SRC, f), 'utf8')));
    expect(esmImports).toEqual([]);
    expect(readFileSync(path.join(SERVER_SRC, 'http/server.ts'), 'utf8')).toContain("createRequire(import.meta.url)('node:http')");
  });

  test('a private registry starts under 100 MB of RSS', async () => {
    server = await startAsDeployed({ dataDir: makeTempDir('rs-rss-'), users: { u: 'p' }, anonymousPull: true });
    const atStart = rss(server.child.pid!);
    // 129 MB when the server ran through tsx and loaded every module of every mode (and tsx's
    // esbuild service, 17 MB more, ran beside it); 63 MB now, of which Node itself is 41 (34 of
    // them its binary's own pages), and a bare node:http server answering one request 46.
    expect(atStart, `RSS at start ${(atStart / MiB).toFixed(1)} MB`).toBeLessThan(100 * MiB);
  });
});

async function fullDownload(url: string): Promise<number> {
  const res = await request(url);
  let bytes = 0;
  for await (const chunk of res.body) bytes += (chunk as Buffer).length;
  return bytes;
}

describe('downloads that stop reading', () => {
  let server: ServerProcess;
  let blobPath: string;

  beforeAll(async () => {
    server = await startAsDeployed({ dataDir: makeTempDir('rs-mem-'), users: { pusher: 'secret' }, anonymousPull: true });
    const blob = randomBlob(BLOB_SIZE);
    await new RegistryClient(server.url, basicAuth('pusher', 'secret')).pushBlob('mem/big', blob);
    blobPath = `/v2/mem/big/blobs/${blob.digest}`;
  });

  afterAll(async () => {
    await server?.stop();
  });

  test(`${STALLED} of a ${BLOB_SIZE / MiB} MB blob pin under 2 MB each, and their memory goes back when they close`, async () => {
    const pid = server.child.pid!;
    // Whatever one download allocates for good (buffer pool, code) is in the baseline.
    expect(await fullDownload(server.url + blobPath)).toBe(BLOB_SIZE);
    const before = rss(pid);
    const sockets = await stalledDownloads(server.url + blobPath, STALLED);
    try {
      // A complete download behind them: each stalled response has read ahead
      // and written all the server lets it by the time this one is through.
      expect(await fullDownload(server.url + blobPath)).toBe(BLOB_SIZE);
      const perClient = (rss(pid) - before) / STALLED;
      expect(perClient, `RSS grew ${(perClient / MiB).toFixed(2)} MB per stalled download`).toBeLessThan(2 * MiB);
    } finally {
      for (const s of sockets) s.destroy();
    }
    // The buffers are freed when V8 next collects (its memory reducer runs within
    // about 20 s of the server going idle): wait for RSS to come back, up to a minute.
    const deadline = Date.now() + 60_000;
    let now = rss(pid);
    while (now > before + 10 * MiB && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 250));
      now = rss(pid);
    }
    expect(now, `RSS ${(now / MiB).toFixed(0)} MB a minute after the clients left, ${(before / MiB).toFixed(0)} MB before they came`).toBeLessThanOrEqual(
      before + 10 * MiB,
    );
  }, 120_000);
});
