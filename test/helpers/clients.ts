// Real registry clients for end-to-end tests: skopeo, podman, buildah (the
// containers/image family) and containerd's ctr. Each runs with its own temp
// config and storage, so tests running in parallel share nothing but the
// machine-wide blob-info cache that containers/image keeps for root
// (/var/lib/containers/cache), which only holds hints that the registry
// re-checks.
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { type Dispatcher, request } from 'undici';
import { cleanEnv, makeTempDir, OutputLog, sleep } from './process.ts';
import { requestFollowing } from './client.ts';

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  timeoutMs?: number;
  /** Resolve with the result instead of rejecting when the exit code is not 0. */
  allowFailure?: boolean;
}

export class CommandError extends Error {
  constructor(
    readonly command: string,
    readonly result: RunResult,
  ) {
    super(`${command} exited with ${result.code}\nstdout: ${result.stdout.slice(-4000)}\nstderr: ${result.stderr.slice(-4000)}`);
  }
}

/** Runs a command to completion (no shell), collecting its output. */
export function run(cmd: string, args: string[], options: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    execFile(
      cmd,
      args,
      {
        env: options.env ?? cleanEnv(),
        cwd: options.cwd,
        timeout: options.timeoutMs ?? 120_000,
        killSignal: 'SIGKILL',
        maxBuffer: 64 * 1024 * 1024,
        encoding: 'utf8',
      },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
        const result = { code, stdout, stderr };
        if (code !== 0 && !options.allowFailure) {
          reject(new CommandError(`${cmd} ${args.join(' ')}`, result));
        } else if (err && typeof err.code !== 'number' && !options.allowFailure) {
          reject(err);
        } else {
          resolve(result);
        }
      },
    );
  });
}

/**
 * One isolated containers/image client environment: its own registries.conf
 * (the given registries marked insecure, i.e. plain HTTP), storage.conf (vfs
 * under the temp dir), containers.conf, auth file and TMPDIR. skopeo, podman
 * and buildah run with it.
 */
export class ContainersClients {
  readonly dir: string;
  readonly authFile: string;
  private readonly insecure = new Set<string>();

  constructor(insecureRegistries: string[] = [], dir = makeTempDir('rs-e2e-cli-')) {
    this.dir = dir;
    for (const sub of ['tmp', 'runroot', 'graphroot', 'volumes', 'libpod-tmp']) mkdirSync(path.join(dir, sub), { recursive: true });
    this.authFile = path.join(dir, 'auth.json');
    // buildah refuses a REGISTRY_AUTH_FILE that does not exist.
    writeFileSync(this.authFile, '{"auths":{}}\n');
    writeFileSync(
      path.join(dir, 'storage.conf'),
      ['[storage]', 'driver = "vfs"', `runroot = "${dir}/runroot"`, `graphroot = "${dir}/graphroot"`, ''].join('\n'),
    );
    writeFileSync(
      path.join(dir, 'containers.conf'),
      [
        '[engine]',
        `tmp_dir = "${dir}/libpod-tmp"`,
        `volume_path = "${dir}/volumes"`,
        'events_logger = "none"',
        '',
      ].join('\n'),
    );
    for (const r of insecureRegistries) this.insecure.add(r);
    this.writeRegistriesConf();
  }

  /** Marks `host` (host:port) as a plain-HTTP registry for podman/buildah. */
  addInsecureRegistry(host: string): void {
    this.insecure.add(host);
    this.writeRegistriesConf();
  }

  private writeRegistriesConf(): void {
    const lines = ['unqualified-search-registries = []', ''];
    for (const host of this.insecure) lines.push('[[registry]]', `location = "${host}"`, 'insecure = true', '');
    writeFileSync(path.join(this.dir, 'registries.conf'), lines.join('\n'));
  }

  get env(): NodeJS.ProcessEnv {
    return cleanEnv({
      CONTAINERS_REGISTRIES_CONF: path.join(this.dir, 'registries.conf'),
      CONTAINERS_STORAGE_CONF: path.join(this.dir, 'storage.conf'),
      CONTAINERS_CONF: path.join(this.dir, 'containers.conf'),
      REGISTRY_AUTH_FILE: this.authFile,
      TMPDIR: path.join(this.dir, 'tmp'),
      XDG_RUNTIME_DIR: path.join(this.dir, 'runroot'),
      DOCKER_CONFIG: path.join(this.dir, 'docker-config'),
    });
  }

  /** `skopeo --insecure-policy ARGS` */
  skopeo(args: string[], options: Omit<RunOptions, 'env'> = {}): Promise<RunResult> {
    return run('skopeo', ['--insecure-policy', ...args], { ...options, env: this.env });
  }

  /** `podman --root … --runroot … --storage-driver vfs ARGS` */
  podman(args: string[], options: Omit<RunOptions, 'env'> = {}): Promise<RunResult> {
    return run(
      'podman',
      [
        '--root',
        path.join(this.dir, 'graphroot'),
        '--runroot',
        path.join(this.dir, 'runroot'),
        '--storage-driver',
        'vfs',
        '--tmpdir',
        path.join(this.dir, 'libpod-tmp'),
        '--events-backend',
        'none',
        ...args,
      ],
      { ...options, env: this.env },
    );
  }

  /** `buildah --root … --runroot … --storage-driver vfs ARGS` */
  buildah(args: string[], options: Omit<RunOptions, 'env'> = {}): Promise<RunResult> {
    return run(
      'buildah',
      ['--root', path.join(this.dir, 'graphroot'), '--runroot', path.join(this.dir, 'runroot'), '--storage-driver', 'vfs', ...args],
      { ...options, env: this.env },
    );
  }
}

/**
 * A private containerd (own root, state and sockets under a temp dir, CRI off)
 * and `ctr` against it.
 */
export class Containerd {
  private constructor(
    readonly dir: string,
    readonly socket: string,
    private readonly child: ChildProcess,
    readonly output: OutputLog,
    private readonly exited: Promise<void>,
    private readonly isAlive: () => boolean,
  ) {}

  static async start(dir = makeTempDir('rs-e2e-ctrd-'), timeoutMs = 30_000): Promise<Containerd> {
    mkdirSync(dir, { recursive: true });
    const socket = path.join(dir, 'containerd.sock');
    const configFile = path.join(dir, 'config.toml');
    writeFileSync(
      configFile,
      [
        'version = 2',
        `root = "${dir}/root"`,
        `state = "${dir}/state"`,
        'disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]',
        '[grpc]',
        `  address = "${socket}"`,
        '[ttrpc]',
        `  address = "${dir}/containerd-ttrpc.sock"`,
        '[debug]',
        `  address = "${dir}/debug.sock"`,
        '[metrics]',
        '  address = ""',
        '',
      ].join('\n'),
    );
    const output = new OutputLog();
    const child = spawn('containerd', ['--config', configFile], { env: cleanEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout?.on('data', (c: Buffer) => output.push(c));
    child.stderr?.on('data', (c: Buffer) => output.push(c));
    let alive = true;
    const exited = new Promise<void>((resolve) => {
      child.once('exit', () => {
        alive = false;
        resolve();
      });
      child.once('error', (err) => {
        output.push(String(err));
        alive = false;
        resolve();
      });
    });
    const ctrd = new Containerd(dir, socket, child, output, exited, () => alive);
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (!alive) throw new Error(`containerd exited at start:\n${output}`);
      if (existsSync(socket)) {
        const r = await ctrd.ctr(['version'], { allowFailure: true, timeoutMs: 10_000 });
        if (r.code === 0) return ctrd;
      }
      if (Date.now() > deadline) {
        await ctrd.stop();
        throw new Error(`containerd did not come up within ${timeoutMs} ms:\n${output}`);
      }
      await sleep(100);
    }
  }

  /** `ctr -a SOCKET ARGS` */
  ctr(args: string[], options: Omit<RunOptions, 'env'> = {}): Promise<RunResult> {
    return run('ctr', ['-a', this.socket, ...args], { ...options, env: cleanEnv() });
  }

  /** The digest `ctr images ls` reports for `ref`, or undefined. */
  async imageDigest(ref: string): Promise<string | undefined> {
    const { stdout } = await this.ctr(['images', 'ls']);
    for (const line of stdout.split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols[0] === ref) return cols.find((c) => /^sha256:[0-9a-f]{64}$/.test(c));
    }
    return undefined;
  }

  /** Raw bytes of a blob in containerd's content store. */
  async content(digest: string): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      execFile(
        'ctr',
        ['-a', this.socket, 'content', 'get', digest],
        { env: cleanEnv(), encoding: 'buffer', maxBuffer: 256 * 1024 * 1024, timeout: 60_000 },
        (err, stdout, stderr) => {
          if (err) reject(new Error(`ctr content get ${digest}: ${err.message}\n${stderr.toString()}`));
          else resolve(stdout);
        },
      );
    });
  }

  async stop(): Promise<void> {
    if (!this.isAlive()) return;
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => {
      if (this.isAlive()) this.child.kill('SIGKILL');
    }, 5000);
    await this.exited;
    clearTimeout(timer);
  }
}

// ---- checks over plain HTTP: what a registry really serves ----

export const MANIFEST_ACCEPT = [
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
  'application/vnd.docker.distribution.manifest.v2+json',
].join(', ');

export interface FetchedManifest {
  status: number;
  digest: string;
  /** sha256 of the bytes served. */
  actualDigest: string;
  mediaType: string;
  body: Buffer;
  json: any;
}

function sha256Of(data: Uint8Array): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

/** GET /v2/<repo>/manifests/<ref> with every manifest type accepted. */
export async function fetchManifest(baseUrl: string, auth: string | undefined, repo: string, ref: string): Promise<FetchedManifest> {
  const res = await request(`${baseUrl}/v2/${repo}/manifests/${ref}`, {
    headers: { accept: MANIFEST_ACCEPT, ...(auth ? { authorization: auth } : {}) },
  });
  const body = Buffer.from(await res.body.arrayBuffer());
  let json: any;
  try {
    json = JSON.parse(body.toString('utf8'));
  } catch {
    json = undefined;
  }
  return {
    status: res.statusCode,
    digest: String(res.headers['docker-content-digest'] ?? ''),
    actualDigest: sha256Of(body),
    mediaType: String(res.headers['content-type'] ?? ''),
    body,
    json,
  };
}

/** GET a blob, streaming, and return its sha256 and size (undefined digest when not 200). */
export async function fetchBlobDigest(
  baseUrl: string,
  auth: string | undefined,
  repo: string,
  digest: string,
): Promise<{ status: number; digest?: string; size: number }> {
  const res = await requestFollowing(`${baseUrl}/v2/${repo}/blobs/${digest}`, { headers: auth ? { authorization: auth } : {} });
  if (res.statusCode !== 200) {
    await res.body.dump();
    return { status: res.statusCode, size: 0 };
  }
  const hash = createHash('sha256');
  let size = 0;
  for await (const chunk of res.body) {
    hash.update(chunk as Buffer);
    size += (chunk as Buffer).length;
  }
  return { status: 200, digest: `sha256:${hash.digest('hex')}`, size };
}

/**
 * Pulls `repo:ref` over HTTP like a client does, the whole tree (index →
 * manifests → config and layers), and checks every digest and size. Returns
 * the top manifest's digest and every blob digest seen.
 */
export async function verifyPull(
  baseUrl: string,
  auth: string | undefined,
  repo: string,
  ref: string,
): Promise<{ digest: string; mediaType: string; blobs: string[]; manifests: string[] }> {
  const top = await fetchManifest(baseUrl, auth, repo, ref);
  if (top.status !== 200) throw new Error(`GET ${repo}:${ref} from ${baseUrl}: ${top.status} ${top.body.toString().slice(0, 500)}`);
  if (top.digest !== top.actualDigest) throw new Error(`${repo}:${ref}: Docker-Content-Digest ${top.digest} but the bytes hash to ${top.actualDigest}`);
  if (ref.startsWith('sha256:') && ref !== top.actualDigest) throw new Error(`${repo}@${ref}: served bytes hash to ${top.actualDigest}`);
  const blobs: string[] = [];
  const manifests: string[] = [top.actualDigest];
  const checkBlob = async (d: { digest: string; size: number }) => {
    const got = await fetchBlobDigest(baseUrl, auth, repo, d.digest);
    if (got.status !== 200 || got.digest !== d.digest || got.size !== d.size) {
      throw new Error(`blob ${d.digest} (${d.size} bytes) in ${repo} from ${baseUrl}: ${got.status} ${got.digest} ${got.size} bytes`);
    }
    blobs.push(d.digest);
  };
  const walk = async (m: any) => {
    if (Array.isArray(m.manifests)) {
      for (const child of m.manifests) {
        const c = await fetchManifest(baseUrl, auth, repo, child.digest);
        if (c.status !== 200 || c.actualDigest !== child.digest || c.body.length !== child.size) {
          throw new Error(`child manifest ${child.digest} in ${repo}: ${c.status} ${c.actualDigest}`);
        }
        manifests.push(child.digest);
        await walk(c.json);
      }
      return;
    }
    if (m.config) await checkBlob(m.config);
    for (const layer of m.layers ?? []) await checkBlob(layer);
  };
  await walk(top.json);
  return { digest: top.actualDigest, mediaType: top.mediaType, blobs, manifests };
}

/** GET /v2/<repo>/tags/list → sorted tags ([] on 404). */
export async function listTags(baseUrl: string, auth: string | undefined, repo: string): Promise<string[]> {
  const res = await request(`${baseUrl}/v2/${repo}/tags/list`, { headers: auth ? { authorization: auth } : {} });
  const text = await res.body.text();
  if (res.statusCode === 404) return [];
  if (res.statusCode !== 200) throw new Error(`tags/list ${repo}: ${res.statusCode} ${text}`);
  return [...((JSON.parse(text) as { tags?: string[] | null }).tags ?? [])].sort();
}

/** GET /v2/_catalog (following Link pages) → sorted repository names. */
export async function catalog(baseUrl: string, auth: string | undefined): Promise<string[]> {
  const out: string[] = [];
  let next: string | undefined = `${baseUrl}/v2/_catalog?n=1000`;
  while (next) {
    const res: Dispatcher.ResponseData = await request(next, { headers: auth ? { authorization: auth } : {} });
    const text = await res.body.text();
    if (res.statusCode !== 200) throw new Error(`_catalog: ${res.statusCode} ${text}`);
    out.push(...((JSON.parse(text) as { repositories?: string[] }).repositories ?? []));
    const link: unknown = res.headers.link;
    const m: RegExpExecArray | null = typeof link === 'string' ? /<([^>]+)>/.exec(link) : null;
    next = m ? new URL(m[1], baseUrl).toString() : undefined;
  }
  return out.sort();
}
