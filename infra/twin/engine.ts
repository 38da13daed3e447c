// A private Docker engine for the twin: one dockerd (with the containerd it
// starts for itself) per twin machine, all its state under one directory.
//
// The twist is the mount namespace. Containers ask their engine for bind
// mounts by host path (`-v /opt/registry-stack/auth:/auth`), and the engine
// resolves that path in *its own* view of the filesystem. To make /opt be the
// twin VPS's /opt (and /etc/hosts, /etc/docker the twin client's), the engine
// runs in a mount namespace of its own in which those host paths are
// bind-mounted over with directories of the twin's state. The real /opt,
// /etc/hosts and /etc/docker are never touched.
//
// That namespace must outlive a dockerd restart: with live-restore, running
// containers keep their network namespaces bind-mounted under the exec-root,
// and those mounts exist only inside the engine's namespace. So the namespace
// is held by a tiny process of its own (`sleep infinity`, renamed
// `twin-engine-ns:<name>` in ps), made by `unshare`, and dockerd is started
// inside it with `nsenter`, as often as it is restarted:
//
//   unshare --mount --propagation private bash -c 'mount --bind … && exec sleep infinity'   (the holder)
//   nsenter --mount=/proc/<holder>/ns/mnt dockerd --storage-driver=overlay2 …              (the engine)
//
// The storage driver is overlay2, as on a VPS, where this machine lets us mount
// overlayfs on the engine's data-root (tried once, when the engine is made);
// else vfs, which needs no privileges but keeps every image layer and every
// container as a full copy of its filesystem (a container create copies its
// whole image twice). TWIN_STORAGE_DRIVER=vfs|overlay2 chooses.
//
// With overlay2 and memory to spare, the data-root is a tmpfs mounted in the
// engine's namespace (the holder mounts it): images, containers and volumes
// are a GB or two, and on this machine's disk (ext4 with discard) unpacking
// them was slow and removing them took 35 s. The tmpfs goes with the
// namespace, whatever ends the engine. TWIN_ENGINE_DATA=tmpfs|disk chooses.
//
// Every process of the engine (dockerd, containerd, the shims, docker-proxy)
// lives in that namespace, which is how stop() finds them all: it kills every
// process whose /proc/<pid>/ns/mnt is the engine's, and their descendants
// (the containers' processes, which have namespaces of their own).
//
// The engine's description (pids, options) is kept in <dir>/engine.json, so a
// later process (a second `npm run twin -- up`) can re-attach with
// engineRunning(dir) and still restart or stop it.
import { spawn, spawnSync } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, readdirSync, readlinkSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import { type DockerCli, dockerCli } from './docker.ts';

export interface Bind {
  /** A file or directory of the twin's state. */
  source: string;
  /** The host path it replaces in the engine's view (must exist, of the same kind). */
  target: string;
}

export interface EngineOptions {
  /** The engine's state: data-root, exec-root, socket, pidfile, engine.json. */
  dir: string;
  /** A short name for logs and ps (e.g. "vps", "client"). */
  name: string;
  /**
   * dockerd's daemon.json (--config-file), e.g. the twin VPS's /etc/docker/daemon.json.
   * Read at every (re)start; while it does not exist the engine starts with an empty one,
   * as a real dockerd without /etc/docker/daemon.json does.
   */
  configFile?: string;
  /** Host paths replaced in the engine's view: containers' `-v /opt/…` then resolve to the source. */
  binds?: Bind[];
  /** dockerd's (and its containerd's) output (default <dir>/dockerd.log). */
  logFile?: string;
  /**
   * Pass --live-restore unless the config file sets "live-restore" itself. The twin VPS
   * engine needs it from the start: the VPS is a container on the engine that its own
   * `systemctl restart docker` restarts, and without live-restore it would be stopped too.
   */
  liveRestore?: boolean;
  /**
   * Give the engine a /run of its own (a directory of its state) and have it also
   * listen on /run/docker.sock there: a container that bind-mounts
   * /var/run/docker.sock (the VPS's ops jobs do) then gets this engine, as on the VPS.
   */
  privateRun?: boolean;
  /** How long to wait for the engine to answer (default 60 s). */
  readyTimeoutMs?: number;
  /** overlay2 or vfs (default: TWIN_STORAGE_DRIVER, else overlay2 where overlayfs mounts work on the data-root, else vfs). */
  storageDriver?: StorageDriver;
  /**
   * Keep the data-root on a tmpfs of the engine's namespace (default: TWIN_ENGINE_DATA=tmpfs|disk,
   * else tmpfs with overlay2 when the machine has 8 GiB of memory available).
   */
  dataOnTmpfs?: boolean;
}

export type StorageDriver = 'overlay2' | 'vfs';

export interface Engine {
  readonly name: string;
  readonly dir: string;
  /** DOCKER_HOST for this engine: unix://<dir>/sock/docker.sock. */
  readonly host: string;
  /** The directory holding only docker.sock. Mount this (not the socket file) into a container: a restart makes a new socket file. */
  readonly socketDir: string;
  /** dockerd's pid (changes on restart). */
  readonly pid: number;
  /** The pid of the process holding the engine's mount namespace. */
  readonly nsPid: number;
  /** The storage driver dockerd runs with. */
  readonly storageDriver: StorageDriver;
  /** Whether the data-root is a tmpfs (it lives as long as the engine's namespace). */
  readonly dataOnTmpfs: boolean;
  /** SIGTERM dockerd, wait for it to exit, start it again with the same options (the twin's `systemctl restart docker`). */
  restart(): Promise<void>;
  /**
   * Teardown: stop the running containers (`docker stop`, so `unless-stopped` ones stay down), then
   * dockerd, then kill whatever is left in the engine's namespace, and remove its networks' bridges
   * from the host. No process stays behind; on disk, the data-root stays (a later startEngine resumes it); on a tmpfs, it goes with the namespace.
   */
  stop(): Promise<void>;
}

/** What engine.json keeps, so a later process can re-attach. */
interface EngineState {
  name: string;
  dir: string;
  nsPid: number;
  /** The namespace's identity, `mnt:[4026532175]`: pids are reused, this is how we recognise the engine's processes. */
  mntNs: string;
  configFile?: string;
  binds: Bind[];
  logFile: string;
  liveRestore: boolean;
  privateRun?: boolean;
  readyTimeoutMs: number;
  /** Chosen when the engine is made, kept across restarts (the data-root is in that driver's format). */
  storageDriver?: StorageDriver;
  /** The data-root is a tmpfs the holder mounted. */
  dataOnTmpfs?: boolean;
}

/** The flags this module passes to dockerd (as daemon.json keys): a config file must not set them too, or dockerd refuses to start. */
const FLAG_KEYS = ['storage-driver', 'iptables', 'bridge', 'data-root', 'exec-root', 'hosts', 'pidfile'];

/** dockerd, containerd, runc, docker-proxy and the shims live in these. */
const SYSTEM_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

function layout(dir: string) {
  const socketDir = path.join(dir, 'sock');
  return {
    socketDir,
    socket: path.join(socketDir, 'docker.sock'),
    dataRoot: path.join(dir, 'data'),
    execRoot: path.join(dir, 'exec'),
    pidfile: path.join(dir, 'docker.pid'),
    stateFile: path.join(dir, 'engine.json'),
    defaultConfig: path.join(dir, 'daemon.default.json'),
    effectiveConfig: path.join(dir, 'daemon.effective.json'),
    /** Hidden over the host's /run/containerd, see nsBinds(). */
    containerdRun: path.join(dir, 'run-containerd'),
    /** The engine's own /run, with privateRun. */
    run: path.join(dir, 'run'),
  };
}

// ---------------------------------------------------------------------------
// Starting

export async function startEngine(o: EngineOptions): Promise<Engine> {
  const dir = path.resolve(o.dir);
  const st: EngineState = {
    name: o.name,
    dir,
    nsPid: 0,
    mntNs: '',
    configFile: o.configFile && path.resolve(o.configFile),
    binds: (o.binds ?? []).map((b) => ({ source: path.resolve(b.source), target: path.resolve(b.target) })),
    logFile: path.resolve(o.logFile ?? path.join(dir, 'dockerd.log')),
    liveRestore: o.liveRestore ?? false,
    privateRun: o.privateRun ?? false,
    readyTimeoutMs: o.readyTimeoutMs ?? 60_000,
  };
  // A second `twin up` finds the engine the first one left running: re-use it, if it was started the same way.
  const running = await engineRunning(dir);
  if (running) {
    const was = readState(dir)!;
    const same = (x: EngineState) => JSON.stringify([x.configFile, x.binds, x.liveRestore, Boolean(x.privateRun)]);
    if (same(was) === same(st)) return running;
    throw new Error(`an engine runs in ${dir} with other options (config file, binds, live-restore): stop() it first`);
  }
  // Leftovers of an engine that died or was half-stopped (a holder without dockerd, orphaned shims).
  await killLeftovers(dir);

  const l = layout(dir);
  for (const d of [dir, l.socketDir, l.dataRoot, l.execRoot, l.containerdRun, path.dirname(st.logFile)]) mkdirSync(d, { recursive: true });
  checkPaths(st);
  const storage = o.storageDriver ? { driver: o.storageDriver, tmpfs: o.dataOnTmpfs ?? false } : engineStorage(l.dataRoot, o.dataOnTmpfs);
  st.storageDriver = storage.driver;
  st.dataOnTmpfs = storage.tmpfs;

  st.nsPid = await startHolder(st);
  st.mntNs = readlinkSync(`/proc/${st.nsPid}/ns/mnt`);
  writeState(st);
  try {
    await startDockerd(st);
  } catch (e) {
    await stopEngine(st);
    throw e;
  }
  return handle(st);
}

/** Unix socket paths are limited to 107 bytes; containerd's lives deepest, under the exec-root. */
function checkPaths(st: EngineState): void {
  const l = layout(st.dir);
  const deepest = path.join(l.execRoot, 'containerd', 'containerd.sock.ttrpc');
  if (Buffer.byteLength(deepest) > 107) throw new Error(`engine dir ${st.dir} is too long for unix sockets (${deepest}): use a shorter path`);
  for (const b of nsBinds(st)) {
    if (!existsSync(b.source)) throw new Error(`bind source ${b.source} does not exist`);
    if (!existsSync(b.target)) throw new Error(`bind target ${b.target} does not exist on this machine (mount --bind needs it)`);
    if (statSync(b.source).isDirectory() !== statSync(b.target).isDirectory()) {
      throw new Error(`bind ${b.source} -> ${b.target}: one is a file, the other a directory`);
    }
    // The engine's own files must not disappear under a bind it makes.
    for (const p of [st.dir, st.logFile, ...(st.configFile ? [st.configFile] : [])]) {
      if (p === b.target || p.startsWith(`${b.target}/`)) throw new Error(`${p} lies under bind target ${b.target}: it would be hidden from the engine`);
    }
  }
}

/**
 * The caller's binds plus one of our own: an empty directory over /run/containerd.
 * dockerd uses a system containerd instead of starting its own whenever
 * /run/containerd/containerd.sock exists, and a system containerd resolves bind
 * mounts in the host's namespace; hiding it keeps every engine on a containerd of
 * its own (and keeps each engine's shim sockets, /run/containerd/s, apart).
 */
function nsBinds(st: EngineState): Bind[] {
  mkdirSync('/run/containerd', { recursive: true });
  const l = layout(st.dir);
  const binds = [...st.binds, { source: l.containerdRun, target: '/run/containerd' }];
  if (st.privateRun) {
    // /run/containerd is bound again inside it (mount points must exist there too).
    mkdirSync(path.join(l.run, 'containerd'), { recursive: true });
    binds.push({ source: l.run, target: '/run' });
  }
  // Parents before children (/opt before /opt/x), else the parent's bind would hide the child's.
  return binds.sort((a, b) => a.target.split('/').length - b.target.split('/').length);
}

/** Start the namespace holder; resolves once its binds are mounted. */
function startHolder(st: EngineState): Promise<number> {
  const log = openSync(st.logFile, 'a');
  // $1 is the data-root to mount a tmpfs on (or ''), $2.. are source/target pairs; `exec -a` names
  // the sleep so ps shows whose namespace it holds.
  const script = [
    'set -e',
    'if [ -n "$1" ]; then mount -t tmpfs -o mode=0710 twin-engine-data "$1"; fi',
    'shift',
    'while [ $# -gt 0 ]; do mount --bind "$1" "$2"; shift 2; done',
    'echo mounted',
    `exec -a ${shq(`twin-engine-ns:${st.name}`)} sleep infinity >/dev/null`,
  ].join('\n');
  const args = ['--mount', '--propagation', 'private', 'bash', '-c', script, 'holder', st.dataOnTmpfs ? layout(st.dir).dataRoot : '', ...nsBinds(st).flatMap((b) => [b.source, b.target])];
  const child = spawn('unshare', args, { detached: true, stdio: ['ignore', 'pipe', log], env: { ...process.env, PATH: SYSTEM_PATH } });
  closeSync(log);
  return new Promise((resolve, reject) => {
    let out = '';
    child.on('error', reject);
    child.on('exit', (code) => reject(new Error(`the engine's namespace holder exited ${code} before mounting: ${logTail(st.logFile)}`)));
    child.stdout!.on('data', (b: Buffer) => {
      out += b.toString();
      if (!out.includes('mounted')) return;
      child.removeAllListeners('exit');
      child.stdout!.destroy();
      child.unref();
      resolve(child.pid!);
    });
  });
}

/** This process's hard limit of open files (what dockerd, started from here, may give containers). */
function hardNofile(): number {
  const line = readFileSync('/proc/self/limits', 'utf8')
    .split('\n')
    .find((x) => x.startsWith('Max open files'));
  const hard = line?.trim().split(/\s+/)[4];
  return hard && /^\d+$/.test(hard) ? Number(hard) : Number.MAX_SAFE_INTEGER;
}

/** daemon.json with default-ulimits.nofile capped at `cap`, or undefined when it is within it. */
export function capNofile(config: Record<string, unknown>, cap: number): Record<string, unknown> | undefined {
  const ulimits = config['default-ulimits'] as Record<string, { Name?: string; Soft?: number; Hard?: number }> | undefined;
  const nofile = ulimits?.nofile;
  if (!nofile || ((nofile.Soft ?? 0) <= cap && (nofile.Hard ?? 0) <= cap)) return undefined;
  return {
    ...config,
    'default-ulimits': { ...ulimits, nofile: { ...nofile, Soft: Math.min(nofile.Soft ?? cap, cap), Hard: Math.min(nofile.Hard ?? cap, cap) } },
  };
}

/** The dockerd command line for the current state of the config file. */
function dockerdArgs(st: EngineState): string[] {
  const l = layout(st.dir);
  let configFile = st.configFile;
  let config: Record<string, unknown> = {};
  if (configFile && existsSync(configFile)) {
    try {
      config = JSON.parse(readFileSync(configFile, 'utf8')) as Record<string, unknown>;
    } catch (e) {
      throw new Error(`${configFile} is not valid JSON, dockerd would not start: ${(e as Error).message}`);
    }
    const clash = FLAG_KEYS.filter((k) => k in config);
    if (clash.length) throw new Error(`${configFile} sets ${clash.join(', ')}, which the twin passes as flags; dockerd refuses a key given both ways`);
    const capped = capNofile(config, hardNofile());
    if (capped) {
      // Raising the open-files limit above our own hard limit needs CAP_SYS_RESOURCE, which this
      // sandbox lacks: every container start would fail. The engine reads a copy with the cap.
      writeFileSync(l.effectiveConfig, `${JSON.stringify(capped, null, 2)}\n`);
      configFile = l.effectiveConfig;
    }
  } else {
    // No daemon.json yet (a fresh VPS has none): defaults, but never the host's /etc/docker/daemon.json.
    writeFileSync(l.defaultConfig, '{}\n');
    configFile = l.defaultConfig;
  }
  return [
    `--config-file=${configFile}`,
    `--storage-driver=${st.storageDriver ?? 'vfs'}`,
    '--iptables=false', // we may not own the host's iptables; published ports go through docker-proxy
    '--bridge=none', // no docker0: the twin makes its own networks
    `--data-root=${l.dataRoot}`,
    `--exec-root=${l.execRoot}`,
    `--host=unix://${l.socket}`,
    ...(st.privateRun ? ['--host=unix:///run/docker.sock'] : []),
    `--pidfile=${l.pidfile}`,
    ...(st.liveRestore && !('live-restore' in config) ? ['--live-restore'] : []),
  ];
}

async function startDockerd(st: EngineState): Promise<void> {
  const args = dockerdArgs(st);
  const log = openSync(st.logFile, 'a');
  writeFileSync(log, `--- ${new Date().toISOString()} twin engine ${st.name}: dockerd ${args.join(' ')}\n`);
  // nsenter execs dockerd in place, so child.pid is dockerd's. detached: a process group of its own,
  // out of reach of a Ctrl-C meant for the caller (engines outlive `twin up`).
  const child = spawn('nsenter', [`--mount=/proc/${st.nsPid}/ns/mnt`, '--', 'dockerd', ...args], {
    detached: true,
    stdio: ['ignore', log, log],
    env: { ...process.env, PATH: SYSTEM_PATH },
  });
  closeSync(log);
  let exited: string | undefined;
  child.on('exit', (code, signal) => (exited = `dockerd exited (${signal ?? code})`));
  child.on('error', (e) => (exited = `dockerd could not start: ${e.message}`));
  child.unref();
  await waitFor(
    async () => {
      if (exited) throw new Error(`${exited}: ${logTail(st.logFile)}`);
      return ping(layout(st.dir).socket);
    },
    st.readyTimeoutMs,
    () => `engine ${st.name} did not answer on ${layout(st.dir).socket} within ${st.readyTimeoutMs} ms: ${logTail(st.logFile)}`,
  );
}

const GiB = 1024 ** 3;

function memAvailable(): number {
  const m = /^MemAvailable:\s+(\d+) kB/m.exec(readFileSync('/proc/meminfo', 'utf8'));
  return m ? Number(m[1]) * 1024 : 0;
}

/**
 * Where and how an engine keeps its data. The storage driver: TWIN_STORAGE_DRIVER when set, else
 * overlay2 if an overlayfs mount with an upper dir on the data-root's filesystem works here (it needs
 * CAP_SYS_ADMIN and a kernel and filesystem that allow it: not in every sandbox), else vfs. The
 * data-root on a tmpfs: `tmpfs` when given, else TWIN_ENGINE_DATA when set, else with overlay2 when
 * 8 GiB of memory are available (vfs's full copies would be many GB of memory).
 */
export function engineStorage(dataRoot: string, tmpfs?: boolean): { driver: StorageDriver; tmpfs: boolean } {
  const wantedData = process.env.TWIN_ENGINE_DATA;
  if (wantedData && wantedData !== 'tmpfs' && wantedData !== 'disk') throw new Error(`TWIN_ENGINE_DATA=${wantedData}: expected tmpfs or disk`);
  const wantedDriver = process.env.TWIN_STORAGE_DRIVER;
  if (wantedDriver && wantedDriver !== 'overlay2' && wantedDriver !== 'vfs') throw new Error(`TWIN_STORAGE_DRIVER=${wantedDriver}: expected overlay2 or vfs`);
  const explicit = tmpfs ?? (wantedData ? wantedData === 'tmpfs' : undefined);
  const candidate = explicit ?? memAvailable() >= 8 * GiB;
  const driver = (wantedDriver as StorageDriver | undefined) ?? (overlayWorks(dataRoot, candidate) ? 'overlay2' : 'vfs');
  return { driver, tmpfs: explicit ?? (candidate && driver === 'overlay2') };
}

/** Does an overlayfs mount work with its dirs under `dir` (on a tmpfs mounted there, with `tmpfs`)? */
function overlayWorks(dir: string, tmpfs: boolean): boolean {
  const probe = mkdtempSync(path.join(dir, '.overlay-probe-'));
  try {
    // In a mount namespace of its own, so nothing is left mounted on the host whatever happens.
    const script = [
      'set -e',
      ...(tmpfs ? ['mount -t tmpfs twin-probe "$1"'] : []),
      'mkdir "$1/lower" "$1/upper" "$1/work" "$1/merged"',
      'echo lower > "$1/lower/f"',
      'mount -t overlay overlay -o "lowerdir=$1/lower,upperdir=$1/upper,workdir=$1/work" "$1/merged"',
      'echo upper > "$1/merged/f"',
      'cat "$1/lower/f" "$1/upper/f"',
    ].join('\n');
    const r = spawnSync('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', script, 'probe', probe], { encoding: 'utf8', env: { ...process.env, PATH: SYSTEM_PATH } });
    return r.status === 0 && r.stdout === 'lower\nupper\n';
  } finally {
    rmSync(probe, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------
// Re-attaching

/** The engine a previous process started in `dir`, if its namespace holder lives and its socket answers. */
export async function engineRunning(dir: string): Promise<Engine | undefined> {
  const st = readState(path.resolve(dir));
  if (!st || !nsAlive(st)) return undefined;
  if (!dockerdPid(st) || !(await ping(layout(st.dir).socket))) return undefined;
  return handle(st);
}

function handle(st: EngineState): Engine {
  const l = layout(st.dir);
  return {
    name: st.name,
    dir: st.dir,
    host: `unix://${l.socket}`,
    socketDir: l.socketDir,
    get pid() {
      return dockerdPid(st) ?? 0;
    },
    nsPid: st.nsPid,
    storageDriver: st.storageDriver ?? 'vfs',
    dataOnTmpfs: st.dataOnTmpfs ?? false,
    restart: () => restartEngine(st),
    stop: () => stopEngine(st),
  };
}

// ---------------------------------------------------------------------------
// Restarting and stopping

async function restartEngine(st: EngineState): Promise<void> {
  if (!nsAlive(st)) throw new Error(`engine ${st.name}: its namespace holder (${st.nsPid}) is gone; start it anew`);
  await stopDockerd(st);
  await startDockerd(st);
}

/** SIGTERM dockerd (it stops its containerd; with live-restore the containers stay up) and wait until it is gone. */
async function stopDockerd(st: EngineState): Promise<void> {
  const pid = dockerdPid(st);
  if (!pid) return;
  process.kill(pid, 'SIGTERM');
  // Without live-restore dockerd stops each container first (10 s grace each, in parallel).
  const gone = await waitFor(async () => !alive(pid), 45_000, () => '').then(
    () => true,
    () => false,
  );
  if (!gone) {
    process.kill(pid, 'SIGKILL');
    await waitFor(async () => !alive(pid), 10_000, () => `dockerd ${pid} survived SIGKILL`);
  }
}

async function stopEngine(st: EngineState): Promise<void> {
  const l = layout(st.dir);
  let bridges: string[] = [];
  if (dockerdPid(st) && (await ping(l.socket))) {
    const docker = dockerCli(`unix://${l.socket}`);
    // Containers first: with live-restore they would outlive dockerd. One `docker stop` stops them in parallel.
    const ids = (await docker.out(['ps', '-q'], { allowFail: true })).split('\n').filter(Boolean);
    if (ids.length) await docker.run(['stop', '--time', '2', ...ids], { allowFail: true });
    bridges = await bridgeInterfaces(docker);
  }
  await stopDockerd(st);
  // Whatever is left in the namespace (the holder, a shim whose container would not stop) and below it.
  await killTree(nsProcesses(st.mntNs));
  // The engine runs in the host's network namespace, and dockerd leaves its networks' bridges up when it
  // stops. Left there, they keep routing their subnets to nothing, and a later engine given the same
  // subnet would compete with them. dockerd makes them again when it starts on this data-root.
  for (const bridge of bridges) await run('ip', ['link', 'delete', bridge]);
  rmSync(l.stateFile, { force: true });
}

/** The host interfaces of the engine's bridge networks: br-<id> unless the network names its bridge. */
async function bridgeInterfaces(docker: DockerCli): Promise<string[]> {
  const ids = (await docker.out(['network', 'ls', '--quiet', '--filter', 'driver=bridge'], { allowFail: true })).split('\n').filter(Boolean);
  if (!ids.length) return [];
  const format = '{{.Id}} {{with index .Options "com.docker.network.bridge.name"}}{{.}}{{end}}';
  const lines = (await docker.out(['network', 'inspect', '--format', format, ...ids], { allowFail: true })).split('\n').filter(Boolean);
  return lines.map((line) => {
    const [id, name] = line.split(' ');
    return name || `br-${id.slice(0, 12)}`;
  });
}

/** Stop the engine in `dir`, if one (or what is left of one) runs there: for a teardown that has no Engine handle. */
export async function stopEngineAt(dir: string): Promise<void> {
  const st = readState(path.resolve(dir));
  if (st) await stopEngine(st);
}

/** Kill the processes of an engine that is no longer (or only half) there. */
async function killLeftovers(dir: string): Promise<void> {
  const st = readState(dir);
  if (!st) return;
  if (dockerdPid(st)) await stopDockerd(st);
  await killTree(nsProcesses(st.mntNs));
  rmSync(layout(dir).stateFile, { force: true });
}

// ---------------------------------------------------------------------------
// Small helpers

function writeState(st: EngineState): void {
  const file = layout(st.dir).stateFile;
  writeFileSync(`${file}.tmp`, `${JSON.stringify(st, null, 2)}\n`);
  renameSync(`${file}.tmp`, file);
}

function readState(dir: string): EngineState | undefined {
  try {
    return JSON.parse(readFileSync(layout(dir).stateFile, 'utf8')) as EngineState;
  } catch {
    return undefined;
  }
}

/** Is the pid a running process (not a zombie waiting for its parent to reap it)? */
function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

function mntNs(pid: number): string | undefined {
  try {
    return readlinkSync(`/proc/${pid}/ns/mnt`);
  } catch {
    return undefined;
  }
}

function nsAlive(st: EngineState): boolean {
  return alive(st.nsPid) && mntNs(st.nsPid) === st.mntNs;
}

/** dockerd's pid from its pidfile, if that process lives in the engine's namespace. */
function dockerdPid(st: EngineState): number | undefined {
  try {
    const pid = Number(readFileSync(layout(st.dir).pidfile, 'utf8').trim());
    return pid && alive(pid) && mntNs(pid) === st.mntNs ? pid : undefined;
  } catch {
    return undefined;
  }
}

function allPids(): number[] {
  return readdirSync('/proc')
    .filter((n) => /^\d+$/.test(n))
    .map(Number);
}

function nsProcesses(ns: string): number[] {
  return ns ? allPids().filter((pid) => pid !== process.pid && mntNs(pid) === ns) : [];
}

/** SIGKILL the given processes and all their descendants, and wait until they are gone. */
async function killTree(roots: number[]): Promise<void> {
  if (!roots.length) return;
  const children = new Map<number, number[]>();
  for (const pid of allPids()) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      children.set(ppid, [...(children.get(ppid) ?? []), pid]);
    } catch {
      // gone meanwhile
    }
  }
  const all = new Set<number>();
  const visit = (pid: number) => {
    if (all.has(pid)) return;
    all.add(pid);
    for (const c of children.get(pid) ?? []) visit(c);
  };
  roots.forEach(visit);
  for (const pid of all) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone meanwhile
    }
  }
  await waitFor(async () => [...all].every((p) => !alive(p)), 10_000, () => `processes ${[...all].filter(alive).join(' ')} survived SIGKILL`);
}

/** GET /_ping on the engine's socket: true when dockerd answers OK. */
function ping(socket: string): Promise<boolean> {
  return new Promise((resolve) => {
    const req = http.get({ socketPath: socket, path: '/_ping', timeout: 2000 }, (res) => {
      res.resume();
      resolve(res.statusCode === 200);
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(false));
  });
}

/** Poll `check` every 100 ms until it returns true; reject with `message()` after `timeoutMs`. */
async function waitFor(check: () => Promise<boolean>, timeoutMs: number, message: () => string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(message());
    await new Promise((r) => setTimeout(r, 100));
  }
}

function logTail(file: string, lines = 15): string {
  try {
    return `\n--- last lines of ${file}:\n${readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n')}`;
  } catch {
    return `(no log at ${file})`;
  }
}

/** Run a command, best effort: resolves with its exit code. */
function run(cmd: string, args: string[]): Promise<number> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { stdio: 'ignore', env: { ...process.env, PATH: SYSTEM_PATH } });
    child.on('error', () => resolve(127));
    child.on('close', (code) => resolve(code ?? 1));
  });
}

function shq(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}
