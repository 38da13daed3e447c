// Helpers for the host scripts' tests: run a script as cron would (a child
// process), a webhook receiver, a fake Docker Engine API on a unix socket,
// and Caddy 2 with `tls internal` on high loopback ports.
import { type ChildProcess, type ExecFileSyncOptions, execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import * as tls from 'node:tls';
import { fileURLToPath, pathToFileURL } from 'node:url';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

export function tempDir(prefix = 'rs-scripts-'): string {
  return mkdtempSync(path.join(tmpdir(), prefix));
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

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

// ---- running a script -------------------------------------------------------

export interface LogLine {
  time: string;
  level: 'debug' | 'info' | 'warn' | 'error';
  script: string;
  msg: string;
  fields: Record<string, any>;
}

export interface ScriptResult {
  code: number | null;
  stdout: string;
  stderr: string;
  lines: LogLine[];
  /** The last line: the summary. */
  summary: LogLine;
}

/** Variables the scripts read; never inherited from the test's environment. */
const SCRIPT_ENV = /^(ALERT_WEBHOOK|MONITOR_|GC_|PRUNE_|RENEW_CERT_|REGISTRY_|OPS_|CADDY_ADMIN|DOCKER_HOST)/;

export interface RawResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

let building: Promise<void> | undefined;

/**
 * dist/ built from the sources as they are now, checked before every run as the `registry` bin
 * checks before it starts (server/bin/dist.mjs: a source newer than the build makes it stale);
 * when stale, `node server/bin/build.mjs --if-stale` rebuilds it, one build at a time across
 * processes (under its lock).
 */
export async function ensureBuilt(): Promise<void> {
  const dist = (await import(pathToFileURL(path.join(REPO_ROOT, 'server/bin/dist.mjs')).href)) as { distState(): 'fresh' | 'stale' | 'prebuilt' };
  if (dist.distState() !== 'stale') return;
  building ??= new Promise<void>((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(REPO_ROOT, 'server/bin/build.mjs'), '--if-stale'], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (c: Buffer) => (output += c.toString()));
    child.stderr.on('data', (c: Buffer) => (output += c.toString()));
    child.once('error', reject);
    child.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`build.mjs --if-stale exited ${code}:\n${output}`))));
  }).finally(() => {
    building = undefined;
  });
  await building;
}

/**
 * Runs an ops job as the crontab does (infra/render/ops.ts): `node --enable-source-maps
 * dist/scripts/<name>.js <args>`, compiled from scripts/<name>.ts (rebuilt first when a source
 * changed), with a clean environment plus `env`. A run takes about a quarter of the CPU time
 * that `node --import tsx scripts/<name>.ts` took (0.27 s against 1.0 s for --help).
 */
export async function runScriptRaw(name: string, args: string[], env: Record<string, string> = {}, timeoutMs = 90_000): Promise<RawResult> {
  await ensureBuilt();
  const childEnv: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!SCRIPT_ENV.test(k)) childEnv[k] = v;
  Object.assign(childEnv, env);
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--enable-source-maps', path.join(REPO_ROOT, 'dist', 'scripts', `${name}.js`), ...args], {
      cwd: REPO_ROOT,
      env: childEnv,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${name} ${args.join(' ')} did not finish within ${timeoutMs} ms\n${stdout}\n${stderr}`));
    }, timeoutMs);
    child.once('error', reject);
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/**
 * Runs the script and parses its stdout, checking that every line is one
 * JSON log object of the documented shape.
 */
export async function runScript(name: string, args: string[], env: Record<string, string> = {}, timeoutMs = 90_000): Promise<ScriptResult> {
  const { code, stdout, stderr } = await runScriptRaw(name, args, env, timeoutMs);
  const lines: LogLine[] = [];
  for (const raw of stdout.split('\n')) {
    if (raw.trim() === '') continue;
    let parsed: LogLine;
    try {
      parsed = JSON.parse(raw);
    } catch {
      throw new Error(`${name}: stdout line is not JSON: ${raw}\nstderr: ${stderr}`);
    }
    const keys = Object.keys(parsed).sort().join(',');
    if (keys !== 'fields,level,msg,script,time' || parsed.script !== name || Number.isNaN(Date.parse(parsed.time))) {
      throw new Error(`${name}: log line of the wrong shape: ${raw}`);
    }
    lines.push(parsed);
  }
  return { code, stdout, stderr, lines, summary: lines[lines.length - 1] };
}

// ---- webhook receiver -------------------------------------------------------

export interface ReceivedAlert {
  method: string;
  path: string;
  contentType?: string;
  body: any;
}

export interface WebhookReceiver {
  /** URL with a secret-looking path, e.g. http://127.0.0.1:1234/hooks/T0/B0/<token>. */
  url: string;
  /** The secret part of the path (must never appear in a script's output). */
  secret: string;
  alerts: ReceivedAlert[];
  /** HTTP status to answer with (default 200). */
  status: number;
  clear(): void;
  close(): Promise<void>;
}

export async function startWebhookReceiver(): Promise<WebhookReceiver> {
  const secret = `tok${Math.random().toString(36).slice(2)}${Math.random().toString(36).slice(2)}`;
  const receiver: WebhookReceiver = {
    url: '',
    secret,
    alerts: [],
    status: 200,
    clear() {
      this.alerts.length = 0;
    },
    close: () => new Promise((r) => server.close(() => r())),
  };
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      let body: unknown = text;
      try {
        body = JSON.parse(text);
      } catch {
        /* keep the text */
      }
      receiver.alerts.push({ method: req.method ?? '', path: req.url ?? '', contentType: req.headers['content-type'], body });
      res.writeHead(receiver.status, { 'content-type': 'text/plain' }).end('ok');
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const { port } = server.address() as net.AddressInfo;
  receiver.url = `http://127.0.0.1:${port}/hooks/T0/B0/${secret}`;
  return receiver;
}

// ---- fake Docker Engine API -------------------------------------------------

export interface FakeContainer {
  id: string;
  name: string;
  /** running, exited, created, paused, restarting, dead */
  state: string;
  /** healthy, unhealthy, starting; undefined = no health check */
  health?: string;
  memoryBytes?: number;
  /** Page cache the daemon reports (stats.inactive_file), subtracted like docker stats does. */
  inactiveFileBytes?: number;
  labels?: Record<string, string>;
}

export interface FakeDocker {
  socketPath: string;
  containers: FakeContainer[];
  /** Every request: "METHOD /path?query". */
  requests: string[];
  /** Container ids restarted (POST /containers/<id>/restart), in order. */
  restarts: string[];
  unpauses: string[];
  /** Answer restarts with this error status (e.g. 500) instead of restarting. */
  failRestart?: number;
  /** docker exec: what ran where. */
  execs: Array<{ container: string; cmd: string[] }>;
  /** Runs an exec'd command (default: exit 127, "not found"). */
  onExec?: (container: FakeContainer, cmd: string[]) => Promise<{ exitCode: number; output: string }>;
  close(): Promise<void>;
}

function statusText(c: FakeContainer): string {
  if (c.state === 'running') return `Up 2 hours${c.health ? ` (${c.health === 'starting' ? 'health: starting' : c.health})` : ''}`;
  if (c.state === 'paused') return 'Up 2 hours (Paused)';
  if (c.state === 'restarting') return 'Restarting (1) 5 seconds ago';
  if (c.state === 'created') return 'Created';
  return 'Exited (137) 10 minutes ago';
}

/** A Docker Engine API double on a unix socket in a temp dir (removed on close): list, inspect, restart, unpause, stats. */
export async function startFakeDocker(containers: FakeContainer[]): Promise<FakeDocker> {
  const dir = tempDir('rs-fake-docker-');
  const socketPath = path.join(dir, 'docker.sock');
  const fake: FakeDocker = {
    socketPath,
    containers,
    requests: [],
    restarts: [],
    unpauses: [],
    execs: [],
    close: () =>
      new Promise((r) =>
        server.close(() => {
          rmSync(dir, { recursive: true, force: true });
          r();
        }),
      ),
  };
  const json = (res: http.ServerResponse, status: number, body: unknown) => {
    const text = JSON.stringify(body);
    res.writeHead(status, { 'content-type': 'application/json', 'api-version': '1.43' }).end(text);
  };
  const execs = new Map<string, { container: FakeContainer; cmd: string[]; exitCode?: number }>();
  const server = http.createServer(async (req, res) => {
    fake.requests.push(`${req.method} ${req.url}`);
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const body = chunks.length ? JSON.parse(Buffer.concat(chunks).toString('utf8')) : undefined;
    const url = new URL(req.url ?? '/', 'http://docker');
    const pathname = url.pathname.replace(/^\/v1\.\d+/, '');
    const e = /^\/exec\/([^/]+)\/(start|json)$/.exec(pathname);
    if (e) {
      const ex = execs.get(e[1]);
      if (!ex) return json(res, 404, { message: `No such exec instance: ${e[1]}` });
      if (req.method === 'POST' && e[2] === 'start') {
        const run = fake.onExec ?? (async () => ({ exitCode: 127, output: `exec: "${ex.cmd[0]}": executable file not found in $PATH\n` }));
        const result = await run(ex.container, ex.cmd);
        ex.exitCode = result.exitCode;
        // The multiplexed stream: [1 (stdout), 0, 0, 0, size u32 BE] + payload.
        const payload = Buffer.from(result.output);
        const header = Buffer.alloc(8);
        header[0] = 1;
        header.writeUInt32BE(payload.length, 4);
        res.writeHead(200, { 'content-type': 'application/vnd.docker.raw-stream' }).end(Buffer.concat([header, payload]));
        return;
      }
      if (req.method === 'GET' && e[2] === 'json') return json(res, 200, { ID: e[1], Running: false, ExitCode: ex.exitCode ?? null });
    }
    if (req.method === 'GET' && pathname === '/containers/json') {
      const all = url.searchParams.get('all') === '1' || url.searchParams.get('all') === 'true';
      const list = fake.containers
        .filter((c) => all || c.state === 'running')
        .map((c) => ({
          Id: c.id,
          Names: [`/${c.name}`],
          Image: 'registry-stack:test',
          State: c.state,
          Status: statusText(c),
          Labels: c.labels ?? {},
        }));
      return json(res, 200, list);
    }
    const m = /^\/containers\/([^/]+)\/(json|restart|unpause|stats|exec)$/.exec(pathname);
    const c = m && fake.containers.find((x) => x.id === m[1] || x.id.startsWith(m[1]) || x.name === m[1]);
    if (!m || !c) return json(res, 404, { message: `No such container: ${m?.[1] ?? pathname}` });
    const action = m[2];
    if (req.method === 'GET' && action === 'json') {
      return json(res, 200, {
        Id: c.id,
        Name: `/${c.name}`,
        RestartCount: 0,
        State: {
          Status: c.state,
          Running: c.state === 'running' || c.state === 'paused' || c.state === 'restarting',
          Paused: c.state === 'paused',
          Restarting: c.state === 'restarting',
          ExitCode: c.state === 'exited' ? 137 : 0,
          ...(c.health ? { Health: { Status: c.health, FailingStreak: c.health === 'unhealthy' ? 3 : 0, Log: [] } } : {}),
        },
      });
    }
    if (req.method === 'POST' && action === 'restart') {
      if (fake.failRestart) return json(res, fake.failRestart, { message: 'cannot restart container: fake failure' });
      fake.restarts.push(c.id);
      c.state = 'running';
      if (c.health) c.health = 'starting';
      res.writeHead(204).end();
      return;
    }
    if (req.method === 'POST' && action === 'unpause') {
      fake.unpauses.push(c.id);
      c.state = 'running';
      res.writeHead(204).end();
      return;
    }
    if (req.method === 'POST' && action === 'exec') {
      if (c.state !== 'running') return json(res, 409, { message: `container ${c.id} is not running` });
      const id = `exec${execs.size + 1}`;
      const cmd = (body?.Cmd ?? []) as string[];
      execs.set(id, { container: c, cmd });
      fake.execs.push({ container: c.name, cmd });
      return json(res, 201, { Id: id });
    }
    if (req.method === 'GET' && action === 'stats') {
      if (c.state !== 'running') return json(res, 200, { memory_stats: {} });
      return json(res, 200, {
        read: new Date().toISOString(),
        memory_stats: {
          usage: c.memoryBytes ?? 64 * 1024 * 1024,
          limit: 2 * 1024 * 1024 * 1024,
          stats: { inactive_file: c.inactiveFileBytes ?? 0 },
        },
      });
    }
    return json(res, 405, { message: 'not supported by the fake' });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(socketPath, () => resolve());
  });
  return fake;
}

// ---- Caddy ------------------------------------------------------------------

export interface CaddySite {
  /** Host names of the site (all served on the same HTTPS port). */
  names: string[];
  /** Caddyfile directives inside the site block besides the address, e.g. "tls internal\nreverse_proxy 127.0.0.1:5000". */
  body: string;
}

export interface Caddy {
  child: ChildProcess;
  /** http://127.0.0.1:<port>, or unix/<path> with adminSocket. */
  adminUrl: string;
  httpsPort: number;
  dir: string;
  /** The Caddyfile it runs (its global options name the admin address). */
  caddyfile: string;
  /** Environment for running the `caddy` CLI against this instance. */
  env: NodeJS.ProcessEnv;
  /** Caddy's local CA root (tls internal). */
  rootCaFile: string;
  /** Everything Caddy logged so far. */
  output(): string;
  /** How many POST /load requests Caddy's admin API received so far. */
  loads(): number;
  /** How many loads Caddy skipped because the config had not changed. */
  unchangedSkips(): number;
  stop(): Promise<void>;
}

/**
 * Caddy 2 with its own XDG_DATA_HOME / XDG_CONFIG_HOME in a temp dir, its admin
 * API and HTTPS on free loopback ports, waiting until every site name gets a
 * certificate.
 */
export async function startCaddy(sites: CaddySite[], options: { adminSocket?: boolean } = {}): Promise<Caddy> {
  const dir = tempDir('rs-caddy-');
  const [adminPort, httpsPort, httpPort] = [await freePort(), await freePort(), await freePort()];
  const admin = options.adminSocket ? `unix/${path.join(dir, 'admin.sock')}` : `127.0.0.1:${adminPort}`;
  const caddyfile = [
    '{',
    `\tadmin ${admin}`,
    `\thttp_port ${httpPort}`,
    `\thttps_port ${httpsPort}`,
    '\tdefault_bind 127.0.0.1',
    '\tskip_install_trust',
    '\tauto_https disable_redirects',
    '\tlocal_certs',
    '}',
    ...sites.map((s) => `${s.names.map((n) => `${n}:${httpsPort}`).join(', ')} {\n${s.body.replace(/^/gm, '\t')}\n}`),
    '',
  ].join('\n');
  const file = path.join(dir, 'Caddyfile');
  writeFileSync(file, caddyfile);
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    HOME: dir,
    XDG_DATA_HOME: path.join(dir, 'data'),
    XDG_CONFIG_HOME: path.join(dir, 'config'),
  };
  delete env.CADDY_ADMIN;
  const child = spawn('caddy', ['run', '--config', file, '--adapter', 'caddyfile'], { cwd: dir, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout?.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr?.on('data', (c: Buffer) => (out += c.toString()));
  let exited = false;
  const exitedP = new Promise<void>((r) => child.once('exit', () => ((exited = true), r())));
  const caddy: Caddy = {
    child,
    adminUrl: options.adminSocket ? admin : `http://127.0.0.1:${adminPort}`,
    httpsPort,
    dir,
    caddyfile: file,
    env,
    rootCaFile: path.join(dir, 'data', 'caddy', 'pki', 'authorities', 'local', 'root.crt'),
    output: () => out,
    loads: () => out.split('\n').filter((l) => l.includes('"uri":"/load"')).length,
    unchangedSkips: () => out.split('\n').filter((l) => l.includes('config is unchanged')).length,
    async stop() {
      if (!exited) {
        child.kill('SIGTERM');
        const t = setTimeout(() => child.kill('SIGKILL'), 5000);
        await exitedP;
        clearTimeout(t);
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
  try {
    const deadline = Date.now() + 30_000;
    const names = sites.flatMap((s) => s.names);
    const pending = new Set(names);
    while (pending.size > 0) {
      if (exited) throw new Error(`caddy exited:\n${out}`);
      if (Date.now() > deadline) throw new Error(`caddy did not serve ${[...pending].join(', ')} in time:\n${out}`);
      for (const name of [...pending]) {
        if (await handshakeOk(httpsPort, name)) pending.delete(name);
      }
      if (pending.size > 0) await sleep(200);
    }
  } catch (err) {
    await caddy.stop();
    throw err;
  }
  return caddy;
}

function handshakeOk(port: number, servername: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = tls.connect({ host: '127.0.0.1', port, servername, rejectUnauthorized: false }, () => {
      const ok = s.getPeerX509Certificate()?.checkHost(servername) !== undefined;
      s.destroy();
      resolve(ok);
    });
    s.once('error', () => resolve(false));
    s.setTimeout(2000, () => {
      s.destroy();
      resolve(false);
    });
  });
}

/** The notAfter of the certificate a TLS server presents for `servername`. */
export function servedCertNotAfter(port: number, servername: string): Promise<Date> {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host: '127.0.0.1', port, servername, rejectUnauthorized: false }, () => {
      const cert = s.getPeerX509Certificate();
      s.destroy();
      if (!cert) reject(new Error('no certificate'));
      else resolve(new Date(cert.validTo));
    });
    s.once('error', reject);
  });
}

// ---- certificates (openssl) -------------------------------------------------

export interface TestCa {
  certFile: string;
  keyFile: string;
  /** Writes a leaf certificate for `name`, valid `days` days, to <base>.crt/.key; returns the paths. */
  issue(name: string, days: number, base: string): { certFile: string; keyFile: string };
}

export function makeTestCa(dir: string): TestCa {
  const certFile = path.join(dir, 'ca.crt');
  const keyFile = path.join(dir, 'ca.key');
  const quiet: ExecFileSyncOptions = { stdio: ['ignore', 'ignore', 'pipe'] };
  execFileSync(
    'openssl',
    ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', keyFile, '-out', certFile, '-days', '365', '-subj', '/CN=registry-stack test CA'],
    quiet,
  );
  return {
    certFile,
    keyFile,
    issue(name, days, base) {
      const key = `${base}.key`;
      const csr = `${base}.csr`;
      const crt = `${base}.crt`;
      const ext = `${base}.ext`;
      writeFileSync(ext, `subjectAltName=DNS:${name}\n`);
      execFileSync('openssl', ['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', key, '-out', csr, '-subj', `/CN=${name}`], quiet);
      execFileSync(
        'openssl',
        ['x509', '-req', '-in', csr, '-CA', certFile, '-CAkey', keyFile, '-set_serial', String(Date.now()), '-out', crt, '-days', String(days), '-extfile', ext],
        quiet,
      );
      return { certFile: crt, keyFile: key };
    },
  };
}

export function readText(file: string): string {
  return readFileSync(file, 'utf8');
}
