// The local twin of the VPS stack: the same renderers, run on this machine
// with no Docker. Caddy serves the rendered Caddyfile with `tls internal` on
// high ports under *.localhost names, in front of the private registry and
// the mirror, both started from their rendered configs on loopback.
//
// Differences from the VPS, and only these: loopback addresses instead of
// container names (Caddy too listens on 127.0.0.1 only), temp paths instead of
// volumes, Caddy's own CA instead of Let's Encrypt, the private registry also
// answering at 127.0.0.1:<https port> (for clients that cannot resolve
// *.localhost, such as skopeo, podman and docker on Debian), and no Cloudflare
// (clients add the origin header themselves to reach the mirror host, as
// Cloudflare's transform rule does in production; clients that cannot add a
// header use the mirror's loopback address, as Caddy does).
//
// With `replicas` > 1 each registry runs that many processes behind Caddy's
// load balancer (the rendered lb_policy and health checks), sharing their data
// directory (on one machine a directory is shared storage, which the VPS gets
// from R2) and a local redis-server started from the rendered redis.conf.
// Storage is always the local directory: the twin never touches R2.
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createWriteStream, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Agent, request } from 'undici';
import { parseStackConfig, type StackConfig } from '../config.ts';
import { renderAccessPolicy } from '../render/access.ts';
import { renderCaddyfile } from '../render/caddyfile.ts';
import { renderHtpasswd } from '../render/htpasswd.ts';
import { loadBalancingFor } from '../render/index.ts';
import { replicaNames } from '../render/layout.ts';
import { renderRedisConf } from '../render/redis.ts';
import { ACCESS_POLICY_FILE, registryEnv, renderMirrorConfig, renderPrivateConfig } from '../render/registry-config.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const SERVER_BIN = path.join(ROOT, 'server/bin/registry.mjs');

export interface LocalStackOptions {
  /** State directory (data, configs, Caddy's CA, logs); created if missing. */
  dir: string;
  /** Caddy's HTTPS and HTTP ports (default: free random ports). */
  httpsPort?: number;
  httpPort?: number;
  /** Stack config values (as in Pulumi.<stack>.yaml, without the prefix); domain/vps/users get local defaults. */
  stackConfig?: Record<string, unknown>;
  /** Registry users (default: the stack config's, else "admin" with a password kept in <dir>/admin.password). */
  users?: Record<string, string>;
  /** Mirror upstreams (default: the stack config's, else Docker Hub). */
  upstreams?: Array<{ host: string; url: string }>;
  /** The mirror's default upstream host. */
  mirrorDefaultHost?: string;
  /** Where the processes' output goes: log files under <dir>/logs (default) or this process's stdio. */
  output?: 'files' | 'inherit';
  caddyBin?: string;
  /** How long to wait for each process to come up (ms). */
  startTimeoutMs?: number;
  /** Processes per registry behind Caddy (default 1); more than one also starts redis-server. */
  replicas?: number;
  redisBin?: string;
}

export interface LocalStack {
  dir: string;
  /** Caddy's HTTPS port: dcr.localhost, mir.localhost and 127.0.0.1 (the private registry) on it. */
  httpsPort: number;
  /** The private registry through Caddy by address (https://127.0.0.1:<httpsPort>), for clients that cannot resolve *.localhost. */
  privateAddressUrl: string;
  /** A directory holding Caddy's CA root as ca.crt, for --cert-dir (skopeo, podman) and Docker's certs.d. */
  certDir: string;
  /** user → file holding the password (the generated admin user's), for --password-stdin. */
  passwordFiles: Record<string, string>;
  config: StackConfig;
  privateUrl: string;
  mirrorUrl: string;
  /** Caddy's local CA root (trust it to talk TLS to the stack). */
  caRootPath: string;
  caRoot: string;
  /** The header Cloudflare would add; required by the mirror host. */
  originHeader: { name: string; value: string };
  users: Record<string, string>;
  /** Loopback addresses of the servers behind Caddy (the first replica of each). */
  backends: { private: string; mirror: string };
  /** Every replica: name → loopback URL, e.g. registry-2 → http://127.0.0.1:41235. */
  replicas: { private: Record<string, string>; mirror: Record<string, string> };
  /** The local Redis (host:port) when there are replicas. */
  redisAddr?: string;
  files: { caddyfile: string; privateConfig: string; mirrorConfig: string; htpasswd: string; redisConf?: string };
  /** Stops one replica (e.g. registry-2), to watch Caddy route around it. */
  stopReplica(name: string): Promise<void>;
  /** An undici dispatcher that trusts the CA and resolves *.localhost to 127.0.0.1. */
  dispatcher: Agent;
  /** Resolves with a message when one of the processes exits on its own. */
  exited: Promise<string>;
  stop(): Promise<void>;
}

export const LOCAL_DOMAIN = 'localhost';

/** A mistake in what the local stack was asked for (a bad or busy port): one line for the user, exit 2. */
export class LocalStackError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'LocalStackError';
  }
}

/** Throws a LocalStackError unless `port` can be listened on at 127.0.0.1 now (Caddy would fail on it later, in its log). */
async function checkPortFree(name: string, port: number): Promise<void> {
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new LocalStackError(`${name} must be a port number from 1 to 65535, got ${JSON.stringify(port)}`);
  await new Promise<void>((resolve, reject) => {
    const srv = createServer();
    srv.once('error', (err: NodeJS.ErrnoException) => {
      const why = err.code === 'EADDRINUSE' ? 'in use by another process' : err.code === 'EACCES' ? 'not allowed (ports below 1024 need privileges)' : err.message;
      reject(new LocalStackError(`${name}: cannot listen on 127.0.0.1:${port}: ${why} (${err.code ?? 'error'})`));
    });
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve()));
  });
}

/**
 * The rendered Caddyfile, adjusted for this machine: every site bound to
 * loopback (default_bind), and the private registry also at 127.0.0.1, which
 * clients use when they cannot resolve *.localhost (a TLS connection to an
 * address carries no server name; Caddy then picks the certificate for it).
 */
export function localCaddyfile(rendered: string, dcrHost: string): string {
  const lines = rendered.split('\n');
  const global = lines.indexOf('{');
  const site = lines.indexOf(`${dcrHost} {`);
  if (global < 0 || site < 0) throw new Error('local stack: the rendered Caddyfile has no global block or no private registry site');
  lines[site] = `${dcrHost}, 127.0.0.1 {`;
  lines.splice(global + 1, 0, '\tdefault_bind 127.0.0.1');
  return lines.join('\n');
}

/** Resolves every *.localhost name to 127.0.0.1 (glibc does not always), for undici's connect options. */
export function localhostLookup(
  hostname: string,
  options: unknown,
  callback: (err: NodeJS.ErrnoException | null, address: string | Array<{ address: string; family: number }>, family?: number) => void,
): void {
  const all = typeof options === 'object' && options !== null && (options as { all?: boolean }).all;
  if (hostname === 'localhost' || hostname.endsWith('.localhost')) {
    if (all) callback(null, [{ address: '127.0.0.1', family: 4 }]);
    else callback(null, '127.0.0.1', 4);
    return;
  }
  callback(Object.assign(new Error(`localhostLookup: ${hostname} is not a *.localhost name`), { code: 'ENOTFOUND' }), '', 4);
}

export function localDispatcher(caRoot: string): Agent {
  return new Agent({ connect: { ca: caRoot, lookup: localhostLookup as never } });
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}

function persistentPassword(dir: string, user: string): string {
  const file = path.join(dir, `${user}.password`);
  if (existsSync(file)) return readFileSync(file, 'utf8').trim();
  const pw = randomBytes(12).toString('base64url');
  writeFileSync(file, `${pw}\n`, { mode: 0o600 });
  return pw;
}

function persistentSecret(dir: string, name: string): string {
  const file = path.join(dir, `${name}.secret`);
  if (existsSync(file)) return readFileSync(file, 'utf8').trim();
  const v = randomBytes(24).toString('hex');
  writeFileSync(file, `${v}\n`, { mode: 0o600 });
  return v;
}

async function waitFor<T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined>, alive: () => string | undefined): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    const dead = alive();
    if (dead) throw new Error(`${what}: ${dead}`);
    try {
      const v = await probe();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`${what} did not come up${last ? `: ${(last as Error).message}` : ''}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

export async function startLocalStack(o: LocalStackOptions): Promise<LocalStack> {
  const dir = path.resolve(o.dir);
  mkdirSync(path.join(dir, 'logs'), { recursive: true, mode: 0o700 });
  const timeout = o.startTimeoutMs ?? 60_000;

  // The stack config, as for a deploy, with local defaults for what only a VPS needs.
  const base = { ...(o.stackConfig ?? {}) };
  const generated = o.users === undefined && base.users === undefined;
  const users = o.users ?? (base.users as Record<string, string> | undefined) ?? { admin: persistentPassword(dir, 'admin') };
  const passwordFiles: Record<string, string> = {};
  for (const [user, password] of Object.entries(users)) {
    // Clients read it with --password-stdin, so the banner's commands put no password on a command line.
    if (!/^[A-Za-z0-9._-]+$/.test(user)) continue;
    const file = path.join(dir, `${user}.password`);
    if (!generated) writeFileSync(file, `${password}\n`, { mode: 0o600 });
    passwordFiles[user] = file;
  }
  const mirror = { ...((base.mirror as Record<string, unknown>) ?? {}) };
  if (o.upstreams) mirror.upstreams = o.upstreams;
  if (o.mirrorDefaultHost) mirror.defaultHost = o.mirrorDefaultHost;
  const replicas = o.replicas ?? 1;
  if (!Number.isInteger(replicas) || replicas < 1 || replicas > 16) throw new Error(`replicas must be 1 to 16, got ${o.replicas}`);
  // Locally the data directory is the shared storage: the stack config's storage
  // and replica keys (which a VPS needs R2 for) are replaced by the twin's own.
  const { storage: _storage, replicas: _replicas, r2Credentials: _r2, ...rest } = base;
  const parsed = parseStackConfig(
    { ...rest, domain: base.domain ?? 'example.com', vps: base.vps ?? { host: '127.0.0.1' }, users, mirror, redis: { ...((base.redis as object) ?? {}), enabled: false } },
    'local stack config',
  );
  const cfg: StackConfig = {
    ...parsed,
    replicas: { private: replicas, mirror: replicas },
    derived: {
      ...parsed.derived,
      dcrHost: `${parsed.hostnames.private}.${LOCAL_DOMAIN}`,
      mirHost: `${parsed.hostnames.mirror}.${LOCAL_DOMAIN}`,
      storage: { private: 'filesystem', mirror: 'filesystem' },
      redis: replicas > 1,
    },
  };

  if (o.httpsPort !== undefined) await checkPortFree('STACK_LOCAL_HTTPS_PORT', o.httpsPort);
  if (o.httpPort !== undefined) await checkPortFree('STACK_LOCAL_HTTP_PORT', o.httpPort);
  if (o.httpsPort !== undefined && o.httpsPort === o.httpPort) throw new LocalStackError(`STACK_LOCAL_HTTPS_PORT and STACK_LOCAL_HTTP_PORT must differ, both are ${o.httpsPort}`);
  const ports = (n: number) => Promise.all(Array.from({ length: n }, () => freePort()));
  const [[httpsPort, httpPort, redisPort], privatePorts, mirrorPorts, privateAdmins, mirrorAdmins] = await Promise.all([
    Promise.all([o.httpsPort ?? freePort(), o.httpPort ?? freePort(), freePort()]),
    ports(replicas),
    ports(replicas),
    ports(replicas),
    ports(replicas),
  ]);
  const privateNames = replicaNames('registry', replicas);
  const mirrorNames = replicaNames('registry-cache', replicas);
  const privateUrl = `https://${cfg.derived.dcrHost}:${httpsPort}`;
  const mirrorUrl = `https://${cfg.derived.mirHost}:${httpsPort}`;
  const originSecret = cfg.originSecret ?? persistentSecret(dir, 'origin');
  const adminToken = cfg.adminToken ?? persistentSecret(dir, 'admin-token');
  const seed = persistentSecret(dir, 'htpasswd-seed');
  const redisPassword = cfg.derived.redis ? persistentSecret(dir, 'redis') : undefined;
  const redisAddr = cfg.derived.redis ? `127.0.0.1:${redisPort}` : undefined;

  const files = {
    caddyfile: path.join(dir, 'Caddyfile'),
    privateConfig: path.join(dir, 'registry.yml'),
    mirrorConfig: path.join(dir, 'registry-cache.yml'),
    htpasswd: path.join(dir, 'htpasswd'),
    ...(cfg.derived.redis ? { redisConf: path.join(dir, 'redis.conf') } : {}),
  };
  writeFileSync(
    files.htpasswd,
    renderHtpasswd(users, {
      seed,
      cost: cfg.docker.bcryptCost,
      previous: existsSync(files.htpasswd) ? readFileSync(files.htpasswd, 'utf8') : undefined,
    }),
    { mode: 0o600 },
  );
  // dcr's access policy (registry-stack:access) beside the htpasswd, where its rendered config looks for it.
  if (cfg.access) writeFileSync(path.join(dir, ACCESS_POLICY_FILE), renderAccessPolicy(cfg.access));
  const target = (name: string, port: number, adminPort: number, url: string) => ({
    addr: `127.0.0.1:${port}`,
    rootdirectory: path.join(dir, name, 'data'),
    htpasswdPath: files.htpasswd,
    adminAddr: `127.0.0.1:${adminPort}`,
    publicUrl: url,
    trustedProxies: ['127.0.0.1/32'],
    logFormatter: 'json' as const,
    ...(redisAddr ? { redisAddr } : {}),
  });
  // One config per replica (each listens on its own ports); replicas of a registry share its data directory.
  const configFile = (name: string) => path.join(dir, `${name}.yml`);
  privateNames.forEach((n, i) => writeFileSync(configFile(n), renderPrivateConfig(cfg, target('registry', privatePorts[i], privateAdmins[i], privateUrl))));
  mirrorNames.forEach((n, i) => writeFileSync(configFile(n), renderMirrorConfig(cfg, target('registry-cache', mirrorPorts[i], mirrorAdmins[i], mirrorUrl))));
  files.privateConfig = configFile(privateNames[0]);
  files.mirrorConfig = configFile(mirrorNames[0]);
  if (files.redisConf && redisPassword) {
    mkdirSync(path.join(dir, 'redis'), { recursive: true, mode: 0o700 });
    writeFileSync(
      files.redisConf,
      renderRedisConf({ password: redisPassword, port: redisPort, memoryLimit: cfg.redis.memory, persistence: false, dir: path.join(dir, 'redis'), bind: '127.0.0.1' }),
      { mode: 0o600 },
    );
  }
  writeFileSync(
    files.caddyfile,
    localCaddyfile(renderCaddyfile({
      dcrHost: cfg.derived.dcrHost,
      mirHost: cfg.derived.mirHost,
      privateUpstream: privatePorts.map((p) => `127.0.0.1:${p}`),
      mirrorUpstream: mirrorPorts.map((p) => `127.0.0.1:${p}`),
      loadBalancing: loadBalancingFor(cfg),
      originHeader: cfg.cloudflare.originHeader,
      originSecret,
      behindCloudflare: false,
      admin: 'off',
      local: { httpPort, httpsPort },
      accessLog: false,
    }), cfg.derived.dcrHost),
  );

  const children: Array<{ name: string; proc: ChildProcess; exit?: string; stopped?: boolean }> = [];
  let stopping = false;
  let reportExit: (msg: string) => void = () => {};
  const exited = new Promise<string>((resolve) => {
    reportExit = resolve;
  });
  const baseEnv: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('REGISTRY_')) baseEnv[k] = v;
  const start = (name: string, cmd: string, args: string[], env: NodeJS.ProcessEnv) => {
    const inherit = o.output === 'inherit';
    const proc = spawn(cmd, args, { cwd: ROOT, env, stdio: ['ignore', inherit ? 'inherit' : 'pipe', inherit ? 'inherit' : 'pipe'] });
    if (!inherit) {
      const log = createWriteStream(path.join(dir, 'logs', `${name}.log`), { flags: 'a' });
      proc.stdout?.pipe(log);
      proc.stderr?.pipe(log);
    }
    const entry: { name: string; proc: ChildProcess; exit?: string; stopped?: boolean } = { name, proc };
    proc.once('exit', (code, signal) => {
      entry.exit = `exited (${signal ?? code}); see ${path.join(dir, 'logs', `${name}.log`)}`;
      if (!stopping && !entry.stopped) reportExit(`${name} ${entry.exit}`);
    });
    proc.once('error', (err) => {
      entry.exit = `could not start: ${err.message}`;
    });
    children.push(entry);
    return entry;
  };
  const stop = async () => {
    stopping = true;
    await Promise.all(
      children.map(
        (c) =>
          new Promise<void>((resolve) => {
            if (c.exit !== undefined || c.proc.exitCode !== null || c.proc.signalCode !== null) return resolve();
            c.proc.once('exit', () => resolve());
            c.proc.kill('SIGTERM');
          }),
      ),
    );
    await dispatcher?.close();
  };
  const stopReplica = async (name: string) => {
    const c = children.find((x) => x.name === name && (privateNames.includes(name) || mirrorNames.includes(name)));
    if (!c) throw new Error(`no replica named ${name}`);
    c.stopped = true;
    if (c.exit !== undefined || c.proc.exitCode !== null || c.proc.signalCode !== null) return;
    await new Promise<void>((resolve) => {
      c.proc.once('exit', () => resolve());
      c.proc.kill('SIGTERM');
    });
  };
  let dispatcher: Agent | undefined;

  try {
    const plain = new Agent();
    const up = async (url: string) => {
      const res = await request(url, { dispatcher: plain });
      await res.body.dump();
      return res.statusCode < 500 ? true : undefined;
    };
    if (files.redisConf && redisAddr && redisPassword) {
      const redis = start('redis', o.redisBin ?? 'redis-server', [files.redisConf], baseEnv);
      await waitFor('redis-server', timeout, () => redisPing(redisPort, redisPassword), () => redis.exit);
    }
    const priv = privateNames.map((n) =>
      start(n, process.execPath, [SERVER_BIN, 'serve', configFile(n)], { ...baseEnv, ...registryEnv(cfg, { adminToken, redisPassword }, 'private') }),
    );
    const mir = mirrorNames.map((n) =>
      start(n, process.execPath, [SERVER_BIN, 'serve', configFile(n)], { ...baseEnv, ...registryEnv(cfg, { adminToken, redisPassword }, 'mirror') }),
    );
    const caddyData = path.join(dir, 'caddy');
    const caddy = start('caddy', o.caddyBin ?? 'caddy', ['run', '--config', files.caddyfile, '--adapter', 'caddyfile'], {
      ...baseEnv,
      XDG_DATA_HOME: path.join(caddyData, 'data'),
      XDG_CONFIG_HOME: path.join(caddyData, 'config'),
      HOME: caddyData,
    });
    for (const [i, p] of privatePorts.entries()) await waitFor(`the private registry (${privateNames[i]})`, timeout, () => up(`http://127.0.0.1:${p}/v2/`), () => priv[i].exit);
    for (const [i, p] of mirrorPorts.entries()) await waitFor(`the mirror (${mirrorNames[i]})`, timeout, () => up(`http://127.0.0.1:${p}/v2/`), () => mir[i].exit);

    const caRootPath = path.join(caddyData, 'data', 'caddy', 'pki', 'authorities', 'local', 'root.crt');
    const caRoot = await waitFor('Caddy\'s local CA', timeout, async () => (existsSync(caRootPath) ? readFileSync(caRootPath, 'utf8') : undefined), () => caddy.exit);
    // --cert-dir for skopeo and podman takes a directory of CA files.
    const certDir = path.join(dir, 'certs.d');
    mkdirSync(certDir, { recursive: true });
    writeFileSync(path.join(certDir, 'ca.crt'), caRoot);
    dispatcher = localDispatcher(caRoot);
    const tlsUp = dispatcher;
    await waitFor('Caddy (TLS)', timeout, async () => {
      const res = await request(`${privateUrl}/v2/`, { dispatcher: tlsUp });
      await res.body.dump();
      return res.statusCode < 500 ? true : undefined;
    }, () => caddy.exit);
    await plain.close();

    return {
      dir,
      httpsPort,
      privateAddressUrl: `https://127.0.0.1:${httpsPort}`,
      certDir,
      passwordFiles,
      config: cfg,
      privateUrl,
      mirrorUrl,
      caRootPath,
      caRoot,
      originHeader: { name: cfg.cloudflare.originHeader, value: originSecret },
      users,
      backends: { private: `http://127.0.0.1:${privatePorts[0]}`, mirror: `http://127.0.0.1:${mirrorPorts[0]}` },
      replicas: {
        private: Object.fromEntries(privateNames.map((n, i) => [n, `http://127.0.0.1:${privatePorts[i]}`])),
        mirror: Object.fromEntries(mirrorNames.map((n, i) => [n, `http://127.0.0.1:${mirrorPorts[i]}`])),
      },
      ...(redisAddr ? { redisAddr } : {}),
      files,
      dispatcher,
      exited,
      stop,
      stopReplica,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}

/** AUTH + PING over RESP; resolves true on PONG (undefined while Redis is not up yet). */
function redisPing(port: number, password: string): Promise<true | undefined> {
  return new Promise((resolve) => {
    const sock = connect({ host: '127.0.0.1', port });
    let buf = '';
    const done = (v: true | undefined) => {
      sock.destroy();
      resolve(v);
    };
    sock.setTimeout(2000, () => done(undefined));
    sock.once('error', () => done(undefined));
    sock.on('data', (d) => {
      buf += d.toString('utf8');
      if (buf.includes('+PONG')) done(true);
      else if (buf.includes('-')) done(undefined);
    });
    const bulk = (s: string) => `$${Buffer.byteLength(s)}\r\n${s}\r\n`;
    sock.write(`*2\r\n${bulk('AUTH')}${bulk(password)}*1\r\n${bulk('PING')}`);
  });
}

/**
 * What to tell a user about a running local stack. Every command in it is run
 * by test/cli/stack-local.test.ts as printed.
 */
export function localStackBanner(s: LocalStack): string {
  const [user] = Object.keys(s.users).sort();
  const dcr = new URL(s.privateUrl);
  const mir = new URL(s.mirrorUrl);
  const port = dcr.port;
  const byAddress = new URL(s.privateAddressUrl).host;
  const mirrorDirect = new URL(s.backends.mirror).host;
  const ca = path.join(s.certDir, 'ca.crt');
  const file = s.passwordFiles[user];
  const stdin = file ? `--password-stdin < ${file}` : `-p '${s.users[user]}'`;
  const curlUser = file ? `"${user}:$(cat ${file})"` : `'${user}:${s.users[user]}'`;
  return [
    '',
    'registry-stack local twin: the rendered Caddyfile and registry configs, on loopback, with no Docker',
    `  private registry  ${s.privateUrl}, also ${s.privateAddressUrl}   (user ${user}, password ${file ? `in ${file}` : s.users[user]})`,
    `  mirror            ${s.mirrorUrl}   (requires header ${s.originHeader.name}: ${s.originHeader.value}, as Cloudflare adds it)`,
    `                    ${s.backends.mirror}   (the mirror itself, behind Caddy: for clients that cannot add a header)`,
    ...(Object.keys(s.replicas.private).length > 1
      ? [
          `  replicas          ${[...Object.entries(s.replicas.private), ...Object.entries(s.replicas.mirror)].map(([n, u]) => `${n} ${u}`).join(', ')}`,
          `  redis             ${s.redisAddr} (password in ${path.join(s.dir, 'redis.secret')})`,
        ]
      : []),
    `  Caddy's CA root   ${ca} (also in ${s.caRootPath})`,
    `  files and data    ${s.dir}`,
    '',
    `With curl (--resolve, in case your resolver does not map *.localhost to 127.0.0.1):`,
    `  curl --cacert ${ca} --resolve ${dcr.hostname}:${port}:127.0.0.1 -u ${curlUser} ${s.privateUrl}/v2/_catalog`,
    `  curl --cacert ${ca} --resolve ${mir.hostname}:${port}:127.0.0.1 -H '${s.originHeader.name}: ${s.originHeader.value}' ${s.mirrorUrl}/v2/`,
    `With skopeo and podman (at ${byAddress}: they cannot be told where *.localhost is; --cert-dir trusts Caddy's CA):`,
    `  skopeo login --cert-dir ${s.certDir} -u ${user} ${stdin} ${byAddress}`,
    `  skopeo copy --dest-cert-dir ${s.certDir} oci:IMAGE_DIR:TAG docker://${byAddress}/team/app:v1`,
    `  podman login --cert-dir ${s.certDir} -u ${user} ${stdin} ${byAddress}`,
    `  podman pull --cert-dir ${s.certDir} ${byAddress}/team/app:v1`,
    `With docker: trust the CA for that address first (as root), then log in the same way:`,
    `  mkdir -p /etc/docker/certs.d/${byAddress} && cp ${ca} /etc/docker/certs.d/${byAddress}/ca.crt`,
    `  docker login -u ${user} ${stdin} ${byAddress}`,
    `Through the mirror: skopeo, podman and docker cannot send the header Cloudflare adds, and Caddy refuses requests`,
    `without it (403). Pull from the mirror itself instead (plain HTTP on loopback), which is where Caddy sends them:`,
    `  skopeo inspect --tls-verify=false docker://${mirrorDirect}/library/alpine:3.20`,
    `  podman pull --tls-verify=false ${mirrorDirect}/library/alpine:3.20`,
    '',
    'Ctrl-C stops everything.',
    '',
  ].join('\n');
}
