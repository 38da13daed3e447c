// The twin's building blocks on their own: a private Docker engine in its own
// mount namespace (infra/twin/engine.ts) and the images made offline for it
// (infra/twin/images.ts). One engine for the file; the images' expensive parts
// are cached in /var/tmp/registry-stack-twin-cache across runs (the first run
// takes a few minutes: mmdebstrap and npm pack).
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import * as https from 'node:https';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type DockerCli, dockerCli } from '../../infra/twin/docker.ts';
import { type Engine, engineRunning, startEngine } from '../../infra/twin/engine.ts';
import { type EnsuredImages, ensureTwinImages, VPS_ENGINE_SOCKET_DIR, VPS_RESTART_REQUEST, VPS_RUN_DIR } from '../../infra/twin/images.ts';

const CACHE_DIR = '/var/tmp/registry-stack-twin-cache';
const NODE_IMAGE = 'node:24.22.3-bookworm-slim';
const CADDY_IMAGE = 'caddy:2.10.2-alpine';
const NETWORK = 'twin-test';

// Under /var/tmp, short: containerd's socket lives deep under the engine dir (unix socket paths are short).
const dir = mkdtempSync('/var/tmp/rs-twin-engine-test-');
const engineDir = path.join(dir, 'engine');
const vpsOpt = path.join(dir, 'vps-opt'); // the twin VPS's /opt
const vpsRun = path.join(dir, 'vps-run'); // the VPS's /run/registry-stack-twin
const sshKey = path.join(dir, 'id_ed25519');
const realOptHadStack = existsSync('/opt/registry-stack');

let engine: Engine;
let docker: DockerCli;
let images: EnsuredImages;
let mntNs: string;

const log = (msg: string) => console.log(msg);

beforeAll(async () => {
  mkdirSync(path.join(vpsOpt, 'registry-stack'), { recursive: true });
  mkdirSync(vpsRun, { recursive: true });
  spawnSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'twin-test', '-f', sshKey]);
  writeFileSync(path.join(vpsRun, 'authorized_keys'), readFileSync(`${sshKey}.pub`));

  engine = await startEngine({
    dir: engineDir,
    name: 'test',
    binds: [{ source: vpsOpt, target: '/opt' }],
    // The VPS container must live through `systemctl restart docker`, as on the twin's VPS engine.
    liveRestore: true,
    logFile: path.join(dir, 'dockerd.log'),
  });
  mntNs = readlinkSync(`/proc/${engine.nsPid}/ns/mnt`);
  docker = dockerCli(engine.host);
  const started = Date.now();
  images = await ensureTwinImages(docker, { cacheDir: CACHE_DIR, nodeImage: NODE_IMAGE, caddyImage: CADDY_IMAGE, log });
  log(`images ready in ${((Date.now() - started) / 1000).toFixed(1)} s on a new engine`);
  await docker.run(['network', 'create', NETWORK]);
}, 1_200_000);

afterAll(async () => {
  if (engine && (await engineRunning(engineDir))) await engine.stop();
  rmSync(dir, { recursive: true, force: true });
}, 120_000);

/** The processes living in the engine's mount namespace. */
function nsProcesses(): number[] {
  return readdirSync('/proc')
    .filter((n) => /^\d+$/.test(n))
    .filter((n) => {
      try {
        return readlinkSync(`/proc/${n}/ns/mnt`) === mntNs;
      } catch {
        return false;
      }
    })
    .map(Number);
}

/** The pids whose command line mentions `text` (other than this process). */
function processesMentioning(text: string): number[] {
  return readdirSync('/proc')
    .filter((n) => /^\d+$/.test(n) && Number(n) !== process.pid)
    .filter((n) => {
      try {
        return readFileSync(`/proc/${n}/cmdline`, 'utf8').includes(text);
      } catch {
        return false;
      }
    })
    .map(Number);
}

/** Call `fn` every 200 ms until it returns a value (a service is starting); undefined after `ms`. */
async function eventually<T>(fn: () => Promise<T | undefined>, ms = 15_000): Promise<T | undefined> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn().catch(() => undefined);
    if (v !== undefined || Date.now() > deadline) return v;
    await new Promise((res) => setTimeout(res, 200));
  }
}

async function ipOf(name: string): Promise<string> {
  return docker.out(['inspect', '--format', `{{(index .NetworkSettings.Networks "${NETWORK}").IPAddress}}`, name]);
}

describe('the engine', () => {
  it('runs in a mount namespace of its own: -v /opt/… is the twin VPS /opt, the real /opt is untouched', async () => {
    writeFileSync(path.join(vpsOpt, 'registry-stack', 'x'), 'from the twin state\n');
    // Read the state dir's file through /opt, and write one back the same way.
    const seen = await docker.out(['run', '--rm', '-v', '/opt/registry-stack/x:/x:ro', '-v', '/opt/registry-stack:/o', images.debian, 'sh', '-c', 'cat /x; echo written > /o/y']);
    expect(seen).toBe('from the twin state');
    expect(readFileSync(path.join(vpsOpt, 'registry-stack', 'y'), 'utf8')).toBe('written\n');
    expect(existsSync('/opt/registry-stack')).toBe(realOptHadStack);
    expect(readlinkSync('/proc/self/ns/mnt')).not.toBe(mntNs);
  });

  it('runs with the storage driver it chose: overlay2 where overlayfs mounts work here, else vfs', async () => {
    expect(await docker.out(['info', '--format', '{{.Driver}}'])).toBe(engine.storageDriver);
    // Its data-root on a tmpfs only the engine's namespace sees, or on this machine's disk.
    const dataRoot = await docker.out(['info', '--format', '{{.DockerRootDir}}']);
    const fsType = (pid: number) => spawnSync('findmnt', ['-N', String(pid), '-n', '-o', 'FSTYPE', '--target', dataRoot], { encoding: 'utf8' }).stdout.trim();
    expect(fsType(engine.nsPid)).toBe(engine.dataOnTmpfs ? 'tmpfs' : fsType(process.pid));
  });

  it('is found again by engineRunning(), and startEngine() with the same options re-attaches', async () => {
    const again = await engineRunning(engineDir);
    expect(again?.pid).toBe(engine.pid);
    expect(again?.host).toBe(engine.host);
    const same = await startEngine({ dir: engineDir, name: 'test', binds: [{ source: vpsOpt, target: '/opt' }], liveRestore: true, logFile: path.join(dir, 'dockerd.log') });
    expect(same.pid).toBe(engine.pid);
  });
});

describe('the images', () => {
  // One container per image, and `docker exec` into it: on vfs, every new container costs two full copies of its image.
  it('node: Node 24.22.3 and npm, as user node', async () => {
    await docker.run(['run', '-d', '--name', 'node', '--user', 'node', images.node, 'sleep', 'infinity']);
    try {
      const [node, npm, user, home] = (await docker.out(['exec', 'node', 'sh', '-c', 'node -v; npm -v; id -un; echo "$HOME"'])).split('\n');
      expect(node).toBe('v24.22.3');
      expect(npm).toMatch(/^11\.\d+\.\d+$/);
      expect([user, home]).toEqual(['node', '/home/node']);
      // The official image's entrypoint: a flag as the first argument runs node.
      expect(await docker.out(['exec', 'node', 'docker-entrypoint.sh', '-p', 'process.version'])).toBe('v24.22.3');
    } finally {
      await docker.run(['rm', '-f', 'node']);
    }
  });

  it("caddy: Debian's caddy with the official image's CMD, and wget for the healthcheck", async () => {
    await docker.run(['run', '-d', '--name', 'caddy', images.caddy]);
    try {
      expect(await docker.out(['exec', 'caddy', 'caddy', 'version'])).toMatch(/^v?2\.6\./);
      await docker.run(['exec', 'caddy', 'wget', '--help']);
      const page = await eventually(async () => docker.out(['exec', 'caddy', 'wget', '-q', '-O', '-', 'http://127.0.0.1:80/']));
      expect(page).toContain('registry-stack twin');
      expect(await docker.out(['exec', 'caddy', 'sh', '-c', 'echo $XDG_DATA_HOME $XDG_CONFIG_HOME; pwd'])).toBe('/data /config\n/srv');
    } finally {
      await docker.run(['rm', '-f', 'caddy']);
    }
  });

  it('distribution: a registry on :5000 that answers /v2/', async () => {
    await docker.run(['run', '-d', '--name', 'hub', '--network', NETWORK, images.distribution]);
    try {
      const ip = await ipOf('hub');
      const status = await eventually(async () => (await fetch(`http://${ip}:5000/v2/`)).status);
      expect(status).toBe(200);
    } finally {
      await docker.run(['rm', '-f', 'hub']);
    }
  });

  it('pebble: an ACME directory over HTTPS with the CA the entrypoint made', async () => {
    await docker.run(['run', '-d', '--name', 'pebble', '--network', NETWORK, images.pebble]);
    try {
      const ip = await ipOf('pebble');
      const dirJson = await eventually(async () => {
        const ca = await docker.out(['exec', 'pebble', 'cat', '/etc/pebble/certs/ca.pem']);
        return new Promise<string>((resolve, reject) => {
          https
            .get({ host: ip, port: 14000, path: '/dir', servername: 'pebble', ca }, (res) => {
              let body = '';
              res.on('data', (c: Buffer) => (body += c));
              res.on('end', () => resolve(body));
            })
            .on('error', reject);
        });
      });
      expect(JSON.parse(dirJson ?? '{}')).toHaveProperty('newOrder');
      expect(await docker.out(['exec', 'pebble', 'sh', '-c', 'command -v pebble-challtestsrv'])).toBe('/usr/bin/pebble-challtestsrv');
    } finally {
      await docker.run(['rm', '-f', 'pebble']);
    }
  });

  it('a second ensureTwinImages on the same engine builds nothing', async () => {
    const started = Date.now();
    const again = await ensureTwinImages(docker, { cacheDir: CACHE_DIR, nodeImage: NODE_IMAGE, caddyImage: CADDY_IMAGE });
    expect(again.built).toEqual([]);
    expect(again.vps).toBe(images.vps);
    expect(Date.now() - started).toBeLessThan(10_000);
  });
});

describe('the twin VPS', () => {
  let port = '';
  let ip = '';
  let knownHosts = '';

  /** Run a script on the VPS as Pulumi's remote.Command does: `sh -s` over SSH, the script on stdin, host key checked. */
  function ssh(script: string, target: { host: string; port: string } = { host: '127.0.0.1', port }) {
    const r = spawnSync(
      'ssh',
      [
        '-o', 'StrictHostKeyChecking=yes',
        '-o', `UserKnownHostsFile=${knownHosts}`,
        '-o', 'BatchMode=yes',
        '-o', 'IdentitiesOnly=yes',
        '-o', 'ConnectTimeout=10',
        '-o', 'LogLevel=ERROR',
        '-i', sshKey,
        '-p', target.port,
        `root@${target.host}`,
        'sh -s',
      ],
      { input: script, encoding: 'utf8', timeout: 120_000 },
    );
    return { code: r.status ?? 1, stdout: r.stdout.trim(), stderr: r.stderr.trim() };
  }

  beforeAll(async () => {
    await docker.run([
      'run', '-d', '--name', 'vps', '--hostname', 'twin-vps',
      '--network', NETWORK,
      '-p', '127.0.0.1::22',
      '--cap-add', 'NET_ADMIN',
      '-v', `${vpsRun}:${VPS_RUN_DIR}`,
      '-v', `${engine.socketDir}:${VPS_ENGINE_SOCKET_DIR}`,
      images.vps,
    ]);
    port = (await docker.out(['port', 'vps', '22/tcp'])).split('\n')[0].split(':').pop()!;
    ip = await ipOf('vps');
    // The host key the container made at start is the only one ssh accepts.
    const pub = await eventually(async () => {
      const key = await docker.out(['exec', 'vps', 'cat', '/etc/ssh/ssh_host_ed25519_key.pub']);
      return key ? key.split(/\s+/).slice(0, 2).join(' ') : undefined;
    });
    knownHosts = path.join(dir, 'known_hosts');
    writeFileSync(knownHosts, `[127.0.0.1]:${port} ${pub}\n${ip} ${pub}\n`);
    await eventually(async () => (ssh('true').code === 0 ? true : undefined)); // sshd is up when it answers
  }, 120_000);

  it('answers SSH on its published port with the key it made, and runs a script from stdin', () => {
    const r = ssh('set -eu\nid -un\nhostname\necho "$((6 * 7))"\n');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.split('\n')).toEqual(['root', 'twin-vps', '42']);
    // Another host key is refused.
    writeFileSync(`${knownHosts}.wrong`, `[127.0.0.1]:${port} ${readFileSync(`${sshKey}.pub`, 'utf8').split(' ').slice(0, 2).join(' ')}\n`);
    const wrong = spawnSync('ssh', ['-o', 'StrictHostKeyChecking=yes', '-o', `UserKnownHostsFile=${knownHosts}.wrong`, '-o', 'BatchMode=yes', '-i', sshKey, '-p', port, 'root@127.0.0.1', 'true'], { encoding: 'utf8' });
    expect(wrong.status).not.toBe(0);
  });

  it('talks to the engine with its docker CLI, and enables ufw (NET_ADMIN)', () => {
    const r = ssh('set -eu\ndocker version --format "{{.Server.Version}}"\ndocker ps --format "{{.Names}}"\nufw allow 22/tcp >/dev/null\nufw --force enable >/dev/null\nufw status | head -n 1\n');
    expect(r.code, r.stderr).toBe(0);
    const [version, ...rest] = r.stdout.split('\n');
    expect(version).toMatch(/^20\.10\./);
    expect(rest).toContain('vps');
    expect(rest).toContain('Status: active');
  });

  it('systemctl: refuses an invalid daemon.json, records a restart for a valid one', () => {
    const request = path.join(vpsRun, VPS_RESTART_REQUEST);
    const bad = ssh("mkdir -p /etc/docker\necho '{\"live-restore\": true,' > /etc/docker/daemon.json\nsystemctl restart docker\n");
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain('unable to configure the Docker daemon');
    expect(existsSync(request)).toBe(false);

    const json = '{"live-restore": true}\n';
    const good = ssh(`printf '%s' '${json}' > /etc/docker/daemon.json\nsystemctl restart docker\nsystemctl daemon-reload\n`);
    expect(good.code, good.stderr).toBe(0);
    expect(readFileSync(request, 'utf8').trim()).toBe(createHash('sha256').update(json).digest('hex'));
  });

  it('lives through the engine restart the request asks for (live-restore), and reaches the new dockerd', async () => {
    const before = await docker.out(['inspect', '--format', '{{.State.StartedAt}} {{.State.Pid}}', 'vps']);
    const oldPid = engine.pid;
    rmSync(path.join(vpsRun, VPS_RESTART_REQUEST)); // as the orchestrator does, then:
    const started = Date.now();
    await engine.restart();
    log(`engine restart took ${((Date.now() - started) / 1000).toFixed(1)} s`);
    expect(engine.pid).not.toBe(oldPid);
    expect(await docker.out(['inspect', '--format', '{{.State.StartedAt}} {{.State.Pid}}', 'vps'])).toBe(before);
    // Over the bridge (no docker-proxy on the way), the VPS's docker CLI reaches the new dockerd through the socket directory.
    const r = ssh('docker info --format "{{.LiveRestoreEnabled}}"\n', { host: ip, port: '22' });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe('true');
  });
});

describe('stopping', () => {
  it('stops the containers, dockerd, containerd and the namespace holder: no process stays behind', async () => {
    const networkId = await docker.out(['network', 'inspect', '--format', '{{.Id}}', NETWORK]);
    const bridge = `/sys/class/net/br-${networkId.slice(0, 12)}`;
    expect(existsSync(bridge)).toBe(true);
    const pids = nsProcesses();
    expect(pids).toContain(engine.pid);
    expect(pids).toContain(engine.nsPid);
    await engine.stop();
    expect(nsProcesses()).toEqual([]);
    expect(await engineRunning(engineDir)).toBeUndefined();
    // Nothing else names the engine's directory on its command line (containerd, the shims, docker-proxy do).
    expect(processesMentioning(engineDir)).toEqual([]);
    // And its network's bridge is gone from the host.
    expect(existsSync(bridge)).toBe(false);
  }, 120_000);
});
