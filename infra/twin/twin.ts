// The VPS twin: the stack deployed onto a real Docker engine on this machine,
// from the same stack config and the same renderers as `pulumi up`.
//
//   client engine ──► edge twin (Cloudflare) ──► Caddy ──► mirror ──► Docker Hub stand-in
//        │                                        ▲
//        └──────────── dcr (DNS only) ────────────┘   pebble (ACME) ◄─► Caddy
//
// What runs where:
//   - the VPS engine: a private dockerd whose /opt and /etc/docker are the twin
//     VPS's (it runs in its own mount namespace), so the stack's bind mounts and
//     daemon.json mean what they mean on the VPS;
//   - the twin VPS: a Debian container with sshd, ufw, cron and logrotate that
//     reaches that engine through /var/run/docker.sock; the host steps run on
//     it over SSH exactly as remote.Command runs them;
//   - the stack's containers: made from render/containers.ts, the description
//     the Pulumi component uses;
//   - the edge twin in front of mir, pebble as the ACME CA for dcr, a
//     distribution registry standing in for Docker Hub;
//   - the client engine: a second private dockerd that resolves dcr and mir to
//     the twin's addresses, trusts the twin's CAs and has registry-mirrors set
//     as the rendered client config says.
import { execFileSync, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, unlinkSync, utimesSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml } from 'yaml';
import { parseStackConfig, rawFromStackFile, type StackConfig } from '../config.ts';
import { serverImageName } from '../image.ts';
import { mirrorRulesets } from '../render/cloudflare.ts';
import { stackContainerSpecs, specVolumes } from '../render/containers.ts';
import { CONTAINERS, containerSysctls, hostFilesFrom, renderHostSteps, type HostStep } from '../render/host.ts';
import { IMAGE_PATHS } from '../render/layout.ts';
import { renderStack, type RenderedStack, type StackSecrets } from '../render/index.ts';
import { revokeRobotCommand, type RobotCommand, robotCommands } from '../render/robots.ts';
import { applyContainers, ensureNetworkAndVolumes } from './containers.ts';
import { type DockerCli, dockerCli } from './docker.ts';
import { engineApi } from './engine-api.ts';
import { type Engine, startEngine } from './engine.ts';
import { ensureTwinImages, inputsLabel, VPS_ENGINE_SOCKET_DIR } from './images.ts';
import { HUB_ALIAS, HUB_PORT, PUBLIC_NETWORK, TWIN_CONTAINERS, type TwinLayout, twinLayout } from './layout.ts';
import { ensureCa, ensureServerCert, keyAndCsr, pemBlocks } from './pki.ts';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const DEFAULT_STACK_FILE = path.join(ROOT, 'infra/twin/stack.yaml');
/** Base images are cached here by content, across twins and test runs. */
export const DEFAULT_CACHE_DIR = '/var/tmp/registry-stack-twin-cache';

export interface TwinUpOptions {
  dir: string;
  stackFile?: string;
  cacheDir?: string;
  log?: (line: string) => void;
}

export interface TwinEnv {
  TWIN_DOCKER_HOST: string;
  TWIN_VPS_DOCKER_HOST: string;
  TWIN_DCR: string;
  TWIN_MIR: string;
  TWIN_USER: string;
  TWIN_PASSWORD: string;
  TWIN_UPSTREAM: string;
  TWIN_SSH: string;
  TWIN_CA: string;
}

export interface TwinUpResult {
  env: TwinEnv;
  config: StackConfig;
  /** What this `up` changed: host steps that ran their apply, containers created or replaced, robots made or revoked. */
  changes: { steps: string[]; containers: string[]; robots: string[] };
  /** The stack config's robots: name → secret (log in as robot$<name>); `pulumi stack output robotSecrets` on the VPS. */
  robotSecrets: Record<string, string>;
}

interface Secrets extends StackSecrets {
  twinPassword: string;
}

function loadSecrets(l: TwinLayout): Secrets {
  if (existsSync(l.secrets)) return JSON.parse(readFileSync(l.secrets, 'utf8')) as Secrets;
  const r = (n: number) => randomBytes(n).toString('base64url');
  // Generated once and kept, as the Pulumi state keeps its random secrets.
  const s: Secrets = { originSecret: r(24), adminToken: r(32), htpasswdSeed: r(16), redisPassword: r(24), twinPassword: r(18) };
  writeFileSync(l.secrets, JSON.stringify(s, null, 2), { mode: 0o600 });
  return s;
}

/**
 * The stack config the twin deploys: the given stack file, with the VPS, the
 * subnet and the mirror's upstream pointed at the twin (the only keys it
 * overrides), and a user of its own when the file has none.
 */
export function twinStackConfig(stackFile: string, l: TwinLayout, secrets: Secrets, hostKey: string): StackConfig {
  const { raw, encrypted } = rawFromStackFile(parseYaml(readFileSync(stackFile, 'utf8')));
  if (encrypted.length) throw new Error(`${stackFile}: encrypted values (${encrypted.join(', ')}) cannot be read by the twin; give it plain test values`);
  const docker = (raw.docker ?? {}) as Record<string, unknown>;
  const mirror = (raw.mirror ?? {}) as Record<string, unknown>;
  return parseStackConfig(
    {
      ...raw,
      users: raw.users ?? { twin: secrets.twinPassword },
      vps: { ...(raw.vps as object), host: l.ips.vps, port: 22, user: 'root', publicIp: l.ips.caddy, hostKey },
      // Digest pins name images from a registry; the twin's are built here, so only their tags can match.
      docker: { ...docker, subnet: l.stackSubnet, caddyImageDigest: undefined, nodeImageDigest: undefined },
      mirror: { ...mirror, upstreams: [{ host: 'docker.io', url: `http://${HUB_ALIAS}:${HUB_PORT}` }], defaultHost: 'docker.io' },
    },
    `twin stack config (${stackFile})`,
  );
}

/** The rulesets the edge enforces, by phase: the same list the Pulumi component creates. */
export function edgeRulesets(cfg: StackConfig, originSecret: string) {
  return Object.fromEntries(mirrorRulesets(cfg, originSecret).map((r) => [r.phase, r.rules]));
}

// --- SSH: the host steps, as remote.Command runs them ---

function sshArgs(l: TwinLayout, cfg: StackConfig): string[] {
  return [
    '-o', 'BatchMode=yes',
    '-o', 'StrictHostKeyChecking=yes',
    '-o', `UserKnownHostsFile=${path.join(l.ssh, 'known_hosts')}`,
    '-o', 'ConnectTimeout=10',
    '-i', path.join(l.ssh, 'id_ed25519'),
    '-p', String(cfg.vps.port),
    `${cfg.vps.user}@${cfg.vps.host}`,
  ];
}

export function runOverSsh(l: TwinLayout, cfg: StackConfig, command: string, stdin: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('ssh', [...sshArgs(l, cfg), command], { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? 1, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() }));
    child.stdin.end(stdin);
  });
}

export class HostStepError extends Error {
  constructor(
    readonly step: string,
    readonly code: number,
    readonly stderr: string,
  ) {
    super(`host step ${step} failed (exit ${code}): ${stderr.trim().split('\n').slice(-4).join(' | ')}`);
    this.name = 'HostStepError';
  }
}

/** Runs the steps in their dependency order; after each, acts on a Docker restart the VPS asked for. */
async function runHostSteps(
  l: TwinLayout,
  cfg: StackConfig,
  steps: HostStep[],
  done: Set<string>,
  vpsEngine: Engine,
  log: (s: string) => void,
  /** Awaited before the engine restarts (work on the engine that must not be cut off). */
  beforeRestart: () => Promise<void> = async () => {},
): Promise<string[]> {
  const changed: string[] = [];
  const pending = [...steps];
  while (pending.length) {
    const i = pending.findIndex((s) => s.after.every((a) => done.has(a)));
    if (i < 0) throw new Error(`host steps: no runnable step among ${pending.map((s) => s.name).join(', ')}`);
    const [step] = pending.splice(i, 1);
    const r = await runOverSsh(l, cfg, step.create, step.stdin);
    if (r.code !== 0) throw new HostStepError(step.name, r.code, r.stderr);
    if (/registry-stack: (installed|applied) /.test(r.stderr)) changed.push(step.name);
    for (const line of r.stderr.trim().split('\n').filter(Boolean)) log(`  [${step.name}] ${line}`);
    done.add(step.name);
    const restart = path.join(l.vpsRun, 'docker-restart');
    if (existsSync(restart)) {
      log('the VPS asked for `systemctl restart docker`: restarting its engine');
      unlinkSync(restart);
      await beforeRestart();
      await vpsEngine.restart();
    }
  }
  return changed;
}

// --- robots: render/robots.ts's commands, run as the Pulumi program's remote commands run them ---

interface RobotState {
  /** What the robot was made from: its command and triggers (Pulumi's inputs). */
  stamp: string;
  secret: string;
}

const robotStamp = (c: RobotCommand) => createHash('sha256').update(JSON.stringify([c.stdin, c.triggers])).digest('hex');

/**
 * Makes the robots that are new or changed, revokes those gone from the stack
 * config, and keeps each secret in the state directory, as the Pulumi state
 * keeps the commands' stdout: an unchanged robot is left alone.
 */
async function applyRobots(l: TwinLayout, cfg: StackConfig, log: (s: string) => void): Promise<{ changed: string[]; secrets: Record<string, string> }> {
  const state: Record<string, RobotState> = existsSync(l.robots) ? (JSON.parse(readFileSync(l.robots, 'utf8')) as Record<string, RobotState>) : {};
  const commands = robotCommands(cfg);
  const changed: string[] = [];
  const save = () => writeFileSync(l.robots, JSON.stringify(state, null, 2), { mode: 0o600 });
  for (const [name, old] of Object.entries(state)) {
    const now = commands.find((c) => c.robot === name);
    if (now && robotStamp(now) === old.stamp) continue;
    // Gone, or made again: revoked first (deleteBeforeReplace).
    const r = await runOverSsh(l, cfg, now?.delete ?? revokeRobotCommand(cfg, name), '');
    if (r.code !== 0) throw new HostStepError(`robot ${name} (revoke)`, r.code, r.stderr);
    delete state[name];
    save();
    if (!now) {
      log(`revoked robot$${name}`);
      changed.push(name);
    }
  }
  for (const c of commands) {
    if (state[c.robot]) continue;
    const r = await runOverSsh(l, cfg, c.create, c.stdin);
    if (r.code !== 0 || !r.stdout.trim()) throw new HostStepError(`robot ${c.robot}`, r.code || 1, r.stderr);
    state[c.robot] = { stamp: robotStamp(c), secret: r.stdout.trim() };
    save();
    log(`made robot$${c.robot}`);
    changed.push(c.robot);
  }
  return { changed, secrets: Object.fromEntries(Object.entries(state).map(([name, s]) => [name, s.secret])) };
}

// --- the twin's own containers: VPS, pebble, edge, hub ---

async function running(docker: DockerCli, name: string): Promise<boolean> {
  const r = await docker.run(['inspect', '--format', '{{.State.Running}}', name], { allowFail: true });
  return r.code === 0 && r.stdout.trim() === 'true';
}

async function ensurePublicNetwork(docker: DockerCli, l: TwinLayout): Promise<void> {
  const r = await docker.run(['network', 'inspect', PUBLIC_NETWORK], { allowFail: true });
  if (r.code !== 0) await docker.run(['network', 'create', '--driver', 'bridge', '--subnet', l.publicSubnet, '--gateway', l.ips.gateway, PUBLIC_NETWORK]);
}

/** Runs `args` as container `name` unless it is already running (a second `up` keeps the twin's own containers). */
async function ensureContainer(docker: DockerCli, name: string, args: string[]): Promise<void> {
  if (await running(docker, name)) return;
  await docker.run(['rm', '-f', name], { allowFail: true });
  await docker.run(['run', '-d', '--name', name, '--restart', 'unless-stopped', ...args]);
}

async function startVps(docker: DockerCli, l: TwinLayout, image: string, engine: Engine): Promise<void> {
  mkdirSync(l.vpsOpt, { recursive: true });
  mkdirSync(l.vpsRun, { recursive: true });
  await ensureContainer(docker, TWIN_CONTAINERS.vps, [
    '--hostname', 'twin-vps',
    '--network', PUBLIC_NETWORK, '--ip', l.ips.vps,
    // ufw manages iptables in the VPS's own network namespace
    '--cap-add', 'NET_ADMIN',
    // The engine's socket directory (a restarted dockerd makes a new socket file); the VPS links /var/run/docker.sock to it.
    '-v', `${engine.socketDir}:${VPS_ENGINE_SOCKET_DIR}`,
    '-v', `${l.vpsOpt}:/opt`,
    '-v', `${l.vpsEtcDocker}:/etc/docker`,
    '-v', `${l.vpsRun}:/run/registry-stack-twin`,
    '-v', `${path.join(l.ssh, 'id_ed25519.pub')}:/etc/registry-stack-twin/authorized_keys:ro`,
    image,
  ]);
}

/** The VPS's SSH host key, once sshd made it: `<host> <type> <key>` for known_hosts and vps.hostKey. */
async function vpsHostKey(docker: DockerCli, l: TwinLayout): Promise<string> {
  for (let i = 0; i < 100; i++) {
    const r = await docker.run(['exec', TWIN_CONTAINERS.vps, 'cat', '/etc/ssh/ssh_host_ed25519_key.pub'], { allowFail: true });
    if (r.code === 0 && r.stdout.trim()) {
      const [type, key] = r.stdout.trim().split(/\s+/);
      return `${l.ips.vps} ${type} ${key}`;
    }
    await new Promise((res) => setTimeout(res, 200)); // the entrypoint writes it at start
  }
  throw new Error('twin VPS: no SSH host key after 20 s (see `docker logs twin-vps`)');
}

async function startPebble(docker: DockerCli, l: TwinLayout, image: string, webCa: { cert: string; key: string }): Promise<void> {
  mkdirSync(l.pebble, { recursive: true });
  // pebble's own HTTPS certificate, from the web PKI (Caddy trusts it through acme_ca_root).
  ensureServerCert(webCa, path.join(l.pebble, 'tls'), 'pebble', ['pebble', l.ips.pebble]);
  writeFileSync(
    path.join(l.pebble, 'pebble.json'),
    JSON.stringify({
      pebble: {
        listenAddress: '0.0.0.0:14000',
        managementListenAddress: '0.0.0.0:15000',
        certificate: '/etc/pebble/tls/pebble.crt',
        privateKey: '/etc/pebble/tls/pebble.key',
        httpPort: 80,
        tlsPort: 443,
        ocspResponderURL: '',
        externalAccountBindingRequired: false,
      },
    }),
  );
  await ensureContainer(docker, TWIN_CONTAINERS.pebble, [
    '--network', PUBLIC_NETWORK, '--ip', l.ips.pebble, '--network-alias', 'pebble',
    // Validation at once and no random nonce rejections: the twin wants issuance, not pebble's chaos testing.
    '-e', 'PEBBLE_VA_NOSLEEP=1', '-e', 'PEBBLE_WFE_NONCEREJECT=0',
    '-v', `${l.pebble}:/etc/pebble:ro`,
    image, 'pebble', '-config', '/etc/pebble/pebble.json',
  ]);
}

/** Pebble's root (new at each pebble start): what clients must trust for dcr, as they trust Let's Encrypt's. */
async function pebbleRoots(l: TwinLayout, webCa: string): Promise<string> {
  return `${(await fetchWithCa(`https://${l.ips.pebble}:15000/roots/0`, webCa, 'pebble')).trim()}\n`;
}

async function fetchWithCa(url: string, caFile: string, servername: string, retryMs = 60_000): Promise<string> {
  const https = await import('node:https');
  const deadline = Date.now() + retryMs;
  for (;;) {
    try {
      return await new Promise<string>((resolve, reject) => {
        const req = https.get(url, { ca: readFileSync(caFile), servername, headers: { host: servername }, timeout: 5000 }, (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => (res.statusCode === 200 ? resolve(Buffer.concat(chunks).toString()) : reject(new Error(`${url}: ${res.statusCode}`))));
        });
        req.on('error', reject);
        req.on('timeout', () => req.destroy(new Error(`${url}: timeout`)));
      });
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise((res) => setTimeout(res, 300)); // pebble is starting
    }
  }
}

async function startHub(docker: DockerCli, l: TwinLayout, image: string): Promise<void> {
  await ensureContainer(docker, TWIN_CONTAINERS.hub, [
    '--network', PUBLIC_NETWORK, '--ip', l.ips.hub,
    // Where tests seed `library/…` images (registries on 127.0.0.0/8 need no TLS for docker).
    '-p', `127.0.0.1::${HUB_PORT}`,
    image,
  ]);
}

/**
 * Joins one of the twin's containers to the stack's network under a public name. On the VPS the
 * mirror reaches Docker Hub, and the ops jobs reach mir through Cloudflare, by the host's NAT and
 * public DNS; here the stand-ins join the stack's network under those names.
 */
async function connectToStack(docker: DockerCli, cfg: StackConfig, container: string, alias: string): Promise<void> {
  const nets = await docker.out(['inspect', '--format', '{{json .NetworkSettings.Networks}}', container]);
  if (!Object.keys(JSON.parse(nets) as object).includes(cfg.docker.network)) {
    await docker.run(['network', 'connect', '--alias', alias, cfg.docker.network, container]);
  }
}

async function startEdge(docker: DockerCli, l: TwinLayout, cfg: StackConfig, secrets: Secrets, serverImage: string, originCa: string) {
  mkdirSync(path.join(l.edge, 'cache'), { recursive: true });
  const webCa = { cert: path.join(l.pki, 'web', 'ca.crt'), key: path.join(l.pki, 'web', 'ca.key') };
  ensureServerCert(webCa, path.join(l.edge, 'tls'), 'edge', [cfg.derived.mirHost]);
  const config = {
    hosts: [cfg.derived.mirHost],
    listen: { address: '0.0.0.0', http: 80, https: 443 },
    tls: { cert: '/etc/edge/tls/edge.crt', key: '/etc/edge/tls/edge.key' },
    origin: { host: cfg.derived.publicIp, httpPort: 80, httpsPort: 443 },
    originCa: ['/etc/edge/origin-ca.crt'],
    zoneSsl: 'full',
    cacheDir: '/var/cache/edge',
    rulesets: edgeRulesets(cfg, secrets.originSecret),
  };
  writeFileSync(path.join(l.edge, 'origin-ca.crt'), readFileSync(originCa));
  writeFileSync(path.join(l.edge, 'edge.json'), JSON.stringify(config, null, 2), { mode: 0o600 });
  const id = await docker.run(['inspect', '--format', '{{index .Config.Labels "registry-stack.twin.edge"}}', TWIN_CONTAINERS.edge], { allowFail: true });
  const stamp = createHash('sha256').update(`${serverImage}\n${JSON.stringify(config)}\nnode-strip`).digest('hex').slice(0, 16);
  if (id.code === 0 && id.stdout.trim() === stamp && (await running(docker, TWIN_CONTAINERS.edge))) return;
  await docker.run(['rm', '-f', TWIN_CONTAINERS.edge], { allowFail: true });
  await docker.run([
    'run', '-d', '--name', TWIN_CONTAINERS.edge, '--restart', 'unless-stopped',
    '--label', `registry-stack.twin.edge=${stamp}`,
    '--no-healthcheck', // the server image's healthcheck asks for a registry on :5000
    '--network', PUBLIC_NETWORK, '--ip', l.ips.edge,
    '-v', `${path.join(ROOT, 'infra/twin/edge')}:/opt/edge:ro`,
    '-v', `${l.edge}:/etc/edge:ro`,
    '-v', `${path.join(l.edge, 'cache')}:/var/cache/edge`,
    '--user', 'root',
    // Node 24 (the server image's) runs the edge's TypeScript itself; it imports only node:* modules.
    serverImage, 'node', '/opt/edge/main.ts', '/etc/edge/edge.json',
  ]);
}

// --- the server image ---

/** Certificates of NODE_EXTRA_CA_CERTS that the Node image does not trust, for npm inside the build. */
async function extraCaCerts(docker: DockerCli, nodeImage: string): Promise<string> {
  const file = process.env.NODE_EXTRA_CA_CERTS;
  if (!file || !existsSync(file)) return '';
  const base = new Set(pemBlocks(await docker.out(['run', '--rm', nodeImage, 'cat', '/etc/ssl/certs/ca-certificates.crt'])).map((b) => b.replace(/\s+/g, '')));
  return pemBlocks(readFileSync(file, 'utf8'))
    .filter((b) => !base.has(b.replace(/\s+/g, '')))
    .join('\n');
}

async function buildServerImage(docker: DockerCli, name: string, nodeImage: string, log: (s: string) => void): Promise<void> {
  // BuildKit, as the Pulumi provider builds: Debian's 20.10 CLI has it built in (the classic builder
  // copies the whole image per Dockerfile line on the vfs driver).
  const builder = dockerCli(docker.host, '/usr/bin/docker');
  log(`building ${name} from server/Dockerfile`);
  const extra = await extraCaCerts(docker, nodeImage);
  await builder.run(
    ['build', '--network', 'host', '-f', 'server/Dockerfile', '-t', name, '--build-arg', `NODE_IMAGE=${nodeImage}`, ...(extra ? ['--build-arg', `EXTRA_CA_CERTS=${extra}`] : []), '.'],
    { cwd: ROOT, env: { DOCKER_BUILDKIT: '1' } },
  );
}

/** Server images the cache keeps (the newest by time; each is a few hundred MB). */
const SERVER_IMAGES_KEPT = 3;

/**
 * The server image on the VPS engine: there already (a second `up`), or loaded from the cache, where
 * an earlier twin saved the image it built from the same sources (the name is their hash) on the
 * same Node image (its inputs hash), or built from server/Dockerfile and then saved there. The VPS
 * keeps what it built in its engine; a twin's engine is new, and the build (npm ci, esbuild, the
 * image's layers) took 27-65 s here (by the machine's load) against 3 s for the load. `saved` settles when the save
 * is over (it runs while the deploy goes on; a failed save only means the next twin builds).
 */
async function ensureServerImage(
  docker: DockerCli,
  name: string,
  nodeImage: string,
  cacheDir: string,
  log: (s: string) => void,
): Promise<{ built: boolean; loaded: boolean; saved: Promise<void> }> {
  const none = Promise.resolve();
  if ((await docker.run(['image', 'inspect', name], { allowFail: true })).code === 0) return { built: false, loaded: false, saved: none };
  const nodeInputs = await inputsLabel(docker, nodeImage);
  const dir = path.join(cacheDir, 'server-images');
  const file = nodeInputs ? path.join(dir, `${name.split(':').pop()}-${nodeInputs}.tar`) : undefined;
  if (file && existsSync(file)) {
    const r = await docker.run(['load', '--quiet', '--input', file], { allowFail: true });
    if (r.code === 0 && (await docker.run(['image', 'inspect', name], { allowFail: true })).code === 0) {
      log(`loaded ${name} from ${file} (built by an earlier twin from the same sources)`);
      utimesSync(file, new Date(), new Date()); // recently used: kept longest
      return { built: false, loaded: true, saved: none };
    }
    log(`could not load ${file} (${r.stderr.trim()}): building instead`);
    rmSync(file, { force: true });
  }
  await buildServerImage(docker, name, nodeImage, log);
  if (!file) return { built: true, loaded: false, saved: none };
  const saved = (async () => {
    mkdirSync(dir, { recursive: true });
    const tmp = `${file}.${process.pid}.tmp`;
    try {
      const started = Date.now();
      const r = await docker.run(['save', '--output', tmp, name], { allowFail: true });
      if (r.code !== 0) return log(`could not save ${name} to the cache: ${r.stderr.trim()}`);
      renameSync(tmp, file); // atomic: another twin never loads half a tar
      log(`saved ${name} to ${file} in ${((Date.now() - started) / 1000).toFixed(1)} s`);
      const tars = readdirSync(dir)
        .filter((f) => f.endsWith('.tar'))
        .map((f) => ({ f: path.join(dir, f), t: statSync(path.join(dir, f)).mtimeMs }))
        .sort((a, b) => b.t - a.t);
      for (const old of tars.slice(SERVER_IMAGES_KEPT)) rmSync(old.f, { force: true });
    } catch (err) {
      log(`could not save ${name} to the cache: ${String(err)}`);
    } finally {
      rmSync(tmp, { force: true });
    }
  })();
  return { built: true, loaded: false, saved };
}

// --- waiting for the stack ---

async function waitFor<T>(what: string, ms: number, probe: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + ms;
  let last: unknown;
  for (;;) {
    try {
      const v = await probe();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`twin: ${what} not ready after ${ms / 1000} s${last ? `: ${String(last)}` : ''}`);
    await new Promise((res) => setTimeout(res, 500)); // polling a service that answers when it is ready
  }
}

/** The issuer of the certificate Caddy presents for `host` on the VPS's public address. */
export async function certificateIssuer(ip: string, host: string, port = 443): Promise<string> {
  const tls = await import('node:tls');
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host: ip, port, servername: host, rejectUnauthorized: false, timeout: 5000 }, () => {
      const cert = s.getPeerCertificate();
      s.end();
      resolve(typeof cert.issuer?.CN === 'string' ? cert.issuer.CN : JSON.stringify(cert.issuer ?? {}));
    });
    s.on('error', reject);
    s.on('timeout', () => s.destroy(new Error('timeout')));
  });
}

// --- up and down ---

export async function twinUp(o: TwinUpOptions): Promise<TwinUpResult> {
  const started = Date.now();
  const out = o.log ?? ((s: string) => console.log(s));
  // Each line says when it happened since `up` began: where an up spends its time.
  const log = (s: string) => out(`[${((Date.now() - started) / 1000).toFixed(1).padStart(5)} s] ${s}`);
  const l = twinLayout(o.dir);
  for (const d of [l.dir, l.ssh, l.pki, l.vpsOpt, l.vpsRun, l.vpsEtcDocker, l.clientEtcDocker]) mkdirSync(d, { recursive: true });
  const secrets = loadSecrets(l);
  if (!existsSync(path.join(l.ssh, 'id_ed25519'))) {
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'registry-stack-twin', '-f', path.join(l.ssh, 'id_ed25519')]);
  }
  // The VPS's own daemon.json before the first deploy: the host step must merge into it, not replace it.
  const daemonJson = path.join(l.vpsEtcDocker, 'daemon.json');
  if (!existsSync(daemonJson)) writeFileSync(daemonJson, `${JSON.stringify({ 'live-restore': true, 'max-concurrent-downloads': 6 }, null, 2)}\n`);

  // CAs: the web PKI (edge, pebble), Cloudflare's Origin CA (mir's origin certificate).
  const webCa = ensureCa(path.join(l.pki, 'web'), 'registry-stack twin web CA');
  const originCa = ensureCa(path.join(l.pki, 'origin-ca'), 'registry-stack twin Cloudflare Origin CA');

  log(`VPS engine: ${l.vpsEngine}`);
  const vpsEngine = await startEngine({
    dir: l.vpsEngine,
    name: 'vps',
    configFile: daemonJson,
    binds: [{ source: l.vpsOpt, target: '/opt' }],
    privateRun: true,
  });
  log('the VPS engine answers');
  const docker = dockerCli(vpsEngine.host);
  const api = engineApi(vpsEngine.host);
  try {
    const stackFile = o.stackFile ?? DEFAULT_STACK_FILE;
    // Parse once without the host key to learn the image names, then again with it.
    const draft = twinStackConfig(stackFile, l, secrets, '');
    const images = await ensureTwinImages(docker, {
      cacheDir: o.cacheDir ?? DEFAULT_CACHE_DIR,
      nodeImage: draft.docker.nodeImage,
      caddyImage: draft.docker.caddyImage,
      log,
    });

    // The server image (built, or loaded from the cache) while the twin's own containers start.
    const serverImage = serverImageName(ROOT);
    const serverImageReady = ensureServerImage(docker, serverImage, draft.docker.nodeImage, o.cacheDir ?? DEFAULT_CACHE_DIR, log);
    serverImageReady.catch(() => {}); // awaited below; a failure before then must not go unhandled

    await ensurePublicNetwork(docker, l);
    log('starting the twin VPS, the Docker Hub stand-in and pebble');
    const [hostKey] = await Promise.all([
      startVps(docker, l, images.vps, vpsEngine).then(() => vpsHostKey(docker, l)),
      startHub(docker, l, images.distribution),
      startPebble(docker, l, images.pebble, webCa),
    ]);
    log('the twin VPS has its host key, the hub and pebble run');
    writeFileSync(path.join(l.ssh, 'known_hosts'), `${hostKey}\n`);
    const cfg = twinStackConfig(stackFile, l, secrets, hostKey);

    // mir's origin certificate: a key and CSR, signed by the Origin CA (Pulumi: tls.PrivateKey, tls.CertRequest, cloudflare.OriginCaCertificate).
    const originDir = path.join(l.pki, 'mir-origin');
    const { key: originKey } = keyAndCsr(originDir, 'mir', cfg.derived.mirHost);
    const originCert = ensureServerCert(originCa, originDir, 'mir', [cfg.derived.mirHost], 5475);
    const serverImageState = await serverImageReady;
    if (serverImageState.built) log(`built ${serverImage}`);

    // The twin's stand-ins for the public roots (its web CA, pebble's root) are what the VPS's
    // ops jobs must trust to check https://dcr and https://mir, as production's trust Let's Encrypt.
    const roots = await pebbleRoots(l, webCa.cert);
    const trustFile = '/opt/registry-stack/trust/twin-roots.pem';
    mkdirSync(path.join(l.vpsOpt, 'registry-stack/trust'), { recursive: true });
    writeFileSync(path.join(l.vpsOpt, trustFile.slice('/opt/'.length)), `${readFileSync(webCa.cert, 'utf8').trim()}\n${roots}`);
    const rendered: RenderedStack = renderStack(
      cfg,
      { ...secrets, mirOriginCert: readFileSync(originCert.cert, 'utf8'), mirOriginKey: readFileSync(originKey, 'utf8') },
      { image: serverImage, acme: { directory: 'https://pebble:14000/dir', rootCa: readFileSync(webCa.cert, 'utf8') }, opsExtraCaFile: trustFile },
    );

    // The host steps, then the containers, then the ops files that name the image.
    const steps = renderHostSteps(hostFilesFrom(rendered.files, { sshUser: cfg.vps.user, containerGid: IMAGE_PATHS.gid, serverImage }));
    const done = new Set<string>();
    log('host steps over SSH');
    const changedSteps = await runHostSteps(l, cfg, steps.filter((s) => s.phase === 'before-containers'), done, vpsEngine, log, () => serverImageState.saved);

    log('containers');
    const specs = stackContainerSpecs(cfg, rendered, { sysctls: containerSysctls() });
    await ensureNetworkAndVolumes(docker, cfg, specVolumes(specs));
    const applied = await applyContainers(api, docker, specs, rendered, {
      serverImage,
      publicAttachments: { [specs[0].name]: { network: PUBLIC_NETWORK, ip: l.ips.caddy, aliases: [cfg.derived.dcrHost] } },
      extraAliases: { [specs[0].name]: [cfg.derived.dcrHost] },
      log,
    });
    done.add(CONTAINERS);
    log('host steps after the containers');
    changedSteps.push(...(await runHostSteps(l, cfg, steps.filter((s) => s.phase === 'after-containers'), done, vpsEngine, log, () => serverImageState.saved)));
    log('robots');
    const robots = await applyRobots(l, cfg, log);
    log('the edge');
    await connectToStack(docker, cfg, TWIN_CONTAINERS.hub, HUB_ALIAS);
    await startEdge(docker, l, cfg, secrets, serverImage, originCa.cert);
    await connectToStack(docker, cfg, TWIN_CONTAINERS.edge, cfg.derived.mirHost);

    // The client machine.
    writeFileSync(l.clientHosts, `127.0.0.1 localhost\n${l.ips.caddy} ${cfg.derived.dcrHost}\n${l.ips.edge} ${cfg.derived.mirHost}\n`);
    for (const [host, pem] of [
      [cfg.derived.dcrHost, roots],
      [cfg.derived.mirHost, readFileSync(webCa.cert, 'utf8')],
    ] as const) {
      mkdirSync(path.join(l.clientEtcDocker, 'certs.d', host), { recursive: true });
      writeFileSync(path.join(l.clientEtcDocker, 'certs.d', host, 'ca.crt'), pem);
    }
    const clientDaemon = rendered.files['clients/docker-daemon.json']?.content ?? '{}\n';
    writeFileSync(path.join(l.clientEtcDocker, 'daemon.json'), clientDaemon);
    log('the client engine');
    const clientEngine = await startEngine({
      dir: l.clientEngine,
      name: 'client',
      configFile: path.join(l.clientEtcDocker, 'daemon.json'),
      binds: [
        { source: l.clientHosts, target: '/etc/hosts' },
        { source: l.clientEtcDocker, target: '/etc/docker' },
      ],
    });

    log('waiting for dcr\'s certificate from pebble (ACME) and mir through the edge');
    await waitFor('dcr certificate', 180_000, async () => {
      const issuer = await certificateIssuer(l.ips.caddy, cfg.derived.dcrHost);
      return /pebble/i.test(issuer) ? issuer : undefined;
    });
    log('dcr has its certificate');
    await waitFor('mir through the edge', 120_000, async () => {
      return fetchWithCa(`https://${l.ips.edge}/v2/`, webCa.cert, cfg.derived.mirHost, 5_000);
    });

    log('mir answers through the edge');
    const hubPort = (await docker.out(['port', TWIN_CONTAINERS.hub, `${HUB_PORT}/tcp`])).split('\n')[0].split(':').pop();
    const [user, password] = Object.entries(cfg.users)[0];
    const env: TwinEnv = {
      TWIN_DOCKER_HOST: clientEngine.host,
      TWIN_VPS_DOCKER_HOST: vpsEngine.host,
      TWIN_DCR: cfg.derived.dcrHost,
      TWIN_MIR: cfg.derived.mirHost,
      TWIN_USER: user,
      TWIN_PASSWORD: password,
      TWIN_UPSTREAM: `127.0.0.1:${hubPort}`,
      TWIN_SSH: `ssh ${sshArgs(l, cfg).join(' ')}`,
      TWIN_CA: webCa.cert,
    };
    await serverImageState.saved;
    writeFileSync(l.env, `${Object.entries(env).map(([k, v]) => `${k}=${shellWord(v)}`).join('\n')}\n`, { mode: 0o600 });
    return { env, config: cfg, changes: { steps: changedSteps, containers: applied.created, robots: robots.changed }, robotSecrets: robots.secrets };
  } finally {
    await api.close();
  }
}

const shellWord = (v: string) => (/^[A-Za-z0-9_./:@=,+-]*$/.test(v) ? v : `'${v.replace(/'/g, `'\\''`)}'`);

export async function twinDown(o: { dir: string; log?: (s: string) => void }): Promise<void> {
  const l = twinLayout(o.dir);
  const { stopEngineAt } = await import('./engine.ts');
  await stopEngineAt(l.clientEngine);
  await stopEngineAt(l.vpsEngine);
  rmSync(l.dir, { recursive: true, force: true });
  o.log?.(`removed the twin in ${l.dir}`);
}
