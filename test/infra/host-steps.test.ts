// The host steps (infra/render/host.ts) run for real: each script with `sh`
// in a temporary root, with stubs on PATH for the commands that would change
// the machine (ufw, apt-get, sysctl, systemctl, docker). Then the components
// that map them to remote commands, under Pulumi's mocks, and the SSH options
// against a real sshd.
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import * as command from '@pulumi/command';
import * as pulumi from '@pulumi/pulumi';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { HostSetup, OpsSetup } from '../../infra/components/host.ts';
import { parseStackConfig, rawFromStackFile } from '../../infra/config.ts';
import { serverImageName } from '../../infra/image.ts';
import {
  CONTAINERS,
  containerSysctls,
  HOST_FILE_NAMES,
  type HostFiles,
  hostFilesFrom,
  renderDaemonJson,
  renderFirewallScript,
  renderHostStep,
  renderHostSteps,
  renderImageCleanupScript,
  renderSysctl,
} from '../../infra/render/host.ts';
import { opsDataMounts, opsJobs, renderCrontab, renderEnvFile, renderLogrotate, renderOpsWrapper } from '../../infra/render/ops.ts';
import { dockerSsh, knownHostKey, parseHostKeys, renderKnownHosts, resolveHostKey } from '../../infra/ssh.ts';
import { isSecretValue, ROOT, unwrap } from './pulumi-harness.ts';
import { shellcheck } from './shell.ts';

const IMAGE = 'localhost/registry-stack/server:0123456789abcdef';

function minimalConfig() {
  const { raw } = rawFromStackFile(parseYaml(readFileSync(path.join(ROOT, 'infra/examples/minimal.yaml'), 'utf8')));
  return parseStackConfig(raw);
}

/** The host files of the minimal example stack, from the renderers renderStack() calls for them. */
function exampleFiles(sshUser = 'root'): HostFiles {
  const cfg = minimalConfig();
  const file = (content: string, mode = '0644') => ({ content, mode });
  const rendered = {
    [HOST_FILE_NAMES.firewallScript]: file(renderFirewallScript({ sshPort: cfg.vps.port }), '0755'),
    [HOST_FILE_NAMES.sysctl]: file(renderSysctl()),
    [HOST_FILE_NAMES.daemonJson]: file(renderDaemonJson({ logMaxSize: cfg.docker.logMaxSize, logMaxFile: cfg.docker.logMaxFile })),
    [HOST_FILE_NAMES.htpasswd]: file('alice:$2y$05$0123456789012345678901uJ0aZ7mP6sFZ1r7m3Wm1sQv3bq0xYbW\n', '0640'),
    [HOST_FILE_NAMES.opsWrapper]: file(renderOpsWrapper({ image: IMAGE, network: cfg.docker.network, mounts: opsDataMounts(cfg) }), '0755'),
    [HOST_FILE_NAMES.opsEnv]: file(renderEnvFile({ REGISTRY_ADMIN_TOKEN: 'admin-token-0123456789abcdef' }, 'ops settings'), '0600'),
    [HOST_FILE_NAMES.crontab]: file(renderCrontab(opsJobs(cfg))),
    [HOST_FILE_NAMES.logrotate]: file(renderLogrotate()),
  };
  return hostFilesFrom(rendered, { sshUser, containerGid: 1000, serverImage: IMAGE });
}

/** The harmless tools the scripts use; nothing else of the machine is on their PATH. */
const TOOLS = ['sh', 'mkdir', 'dirname', 'mktemp', 'cat', 'cmp', 'cp', 'chmod', 'chgrp', 'mv', 'rm', 'grep', 'tr', 'sed'];

function toolPath(tool: string): string {
  if (tool === 'python3') return spawnSync('python3', ['-c', 'import sys; print(sys.executable)'], { encoding: 'utf8' }).stdout.trim();
  const found = spawnSync('sh', ['-c', `command -v ${tool}`], { encoding: 'utf8' }).stdout.trim();
  if (!found.startsWith('/')) throw new Error(`no ${tool} on this machine`);
  return found;
}

/**
 * A temporary root for the scripts and their PATH: a bin directory holding
 * stubs for the commands that would change the machine (ufw, sysctl,
 * systemctl, docker: each logs its call) and links to `tools`, nothing else,
 * so that a script can never reach the machine's own ufw or systemctl.
 */
class Sandbox {
  readonly dir = mkdtempSync(path.join(tmpdir(), 'rs-host-'));
  readonly root = path.join(this.dir, 'root');
  readonly bin = path.join(this.dir, 'bin');
  readonly log = path.join(this.dir, 'calls.log');

  constructor(tools: string[] = TOOLS) {
    mkdirSync(this.root);
    mkdirSync(this.bin);
    writeFileSync(this.log, '');
    for (const tool of tools) symlinkSync(toolPath(tool), path.join(this.bin, tool));
  }

  stub(name: string, body: string): void {
    writeFileSync(path.join(this.bin, name), `#!/bin/sh\necho "${name} $*" >> "$STUB_LOG"\n${body}\n`, { mode: 0o755 });
  }

  /** Runs a step's script as remote.Command does: on the stdin of `sh -s`. */
  run(script: string): { status: number | null; stdout: string; stderr: string } {
    const r = spawnSync('/bin/sh', ['-s'], {
      input: script,
      encoding: 'utf8',
      env: { PATH: this.bin, STUB_LOG: this.log, STUB_DIR: this.dir, HOME: this.dir },
    });
    if (r.error) throw r.error;
    return { status: r.status, stdout: r.stdout, stderr: r.stderr };
  }

  calls(): string[] {
    return readFileSync(this.log, 'utf8').split('\n').filter(Boolean);
  }

  at(p: string): string {
    return path.join(this.root, p);
  }

  cleanup(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}

function step(files: HostFiles, name: string, root = ''): string {
  const s = renderHostSteps(files, { root }).find((x) => x.name === name);
  if (!s) throw new Error(`no step ${name}`);
  return s.stdin;
}

const STAMPS = '/var/lib/registry-stack/applied';

describe('the host steps: one description for the Pulumi program and the twin', () => {
  const files = exampleFiles('deploy');
  const steps = renderHostSteps(files);

  it('names the steps, their order and their commands', () => {
    expect(steps.map((s) => s.name)).toEqual(['prepare', 'sysctl', 'docker-daemon', 'auth', 'firewall', 'ops', 'image-cleanup']);
    const after = Object.fromEntries(steps.map((s) => [s.name, s.after]));
    // The firewall goes on after the Docker restart, not beside it.
    expect(after.firewall).toEqual(['prepare', 'docker-daemon']);
    // The ops files name the new image: they wait for it and the containers; old images go after.
    expect(after.ops).toEqual(['prepare', CONTAINERS]);
    expect(after['image-cleanup']).toEqual(['ops', CONTAINERS]);
    expect(steps.filter((s) => s.phase === 'after-containers').map((s) => s.name)).toEqual(['ops', 'image-cleanup']);
    for (const s of steps) {
      expect(s.create).toBe('sudo -n sh -s');
      // every dependency is an earlier step (or the containers): running them in list order is a valid order
      for (const dep of s.after) expect(dep === CONTAINERS || steps.findIndex((x) => x.name === dep) < steps.indexOf(s), `${s.name} after ${dep}`).toBe(true);
    }
    expect(steps.find((s) => s.name === 'sysctl')?.delete).toMatch(/^sudo -n sh -c '/);
    expect(renderHostSteps(exampleFiles('root')).every((s) => s.create === 'sh -s')).toBe(true);
  });

  it('every script passes shellcheck', () => {
    for (const s of steps) expect(shellcheck(s.stdin), s.name).toBe('');
  });

  it('builds each script from only the inputs it declares', () => {
    for (const s of steps) {
      const only = Object.fromEntries(s.reads.map((k) => [k, files[k]])) as Partial<HostFiles>;
      expect(renderHostStep(s.name, only), s.name).toBe(s.stdin);
    }
    expect(() => renderHostStep('sysctl', {})).toThrow(/sysctl is missing/);
  });

  it('no longer copies the ops scripts: the jobs run the image\'s own, which is never pulled', () => {
    const wrapper = files.opsWrapper.content;
    expect(wrapper).not.toContain('/opt/registry-stack/scripts:');
    expect(wrapper).toMatch(/^exec docker run --rm --pull never \\$/m);
    expect(wrapper).toContain(`${IMAGE} "$@"`);
    expect(files.crontab.content).toContain('node --enable-source-maps /opt/registry-stack/dist/scripts/monitor.js');
    // the copy an earlier version left on the host goes
    expect(step(files, 'prepare')).toContain("rm -rf '/opt/registry-stack/scripts'");
  });
});

describe('an apply step that failed runs again on the next deploy', () => {
  let box: Sandbox;
  beforeAll(() => {
    box = new Sandbox();
  });
  afterAll(() => box.cleanup());

  it('the firewall: apt lock held on the first run, ufw enabled on the second, nothing on the third', () => {
    // A fresh VPS: no ufw yet, and unattended-upgrades holds the apt lock the first time.
    box.stub(
      'apt-get',
      `if [ "$1" = install ] || [ "$2" = install ] || [ "$3" = install ]; then
  if [ ! -e "$STUB_DIR/apt-was-locked" ]; then
    : > "$STUB_DIR/apt-was-locked"
    echo 'E: Could not get lock /var/lib/dpkg/lock-frontend' >&2
    exit 100
  fi
  printf '#!/bin/sh\\necho "ufw $*" >> "$STUB_LOG"\\n' > "$(dirname "$0")/ufw"
  chmod +x "$(dirname "$0")/ufw"
fi`,
    );
    const script = step(exampleFiles(), 'firewall', box.root);
    const installed = box.at('/opt/registry-stack/bin/firewall.sh');
    const stamp = box.at(`${STAMPS}/opt__registry-stack__bin__firewall.sh`);

    const first = box.run(script);
    expect(first.status).not.toBe(0);
    expect(first.stderr).toContain('Could not get lock');
    expect(existsSync(installed)).toBe(true); // in place, but not applied
    expect(existsSync(stamp)).toBe(false);

    const second = box.run(script);
    expect(second.status, second.stderr).toBe(0);
    expect(box.calls()).toContain('ufw --force enable');
    expect(readFileSync(stamp, 'utf8')).toBe(readFileSync(installed, 'utf8'));
    expect(second.stderr).toContain('registry-stack: applied /opt/registry-stack/bin/firewall.sh');

    const calls = box.calls().length;
    const third = box.run(script);
    expect(third.status, third.stderr).toBe(0);
    expect(box.calls()).toHaveLength(calls);
  });
});

describe('sysctl', () => {
  let box: Sandbox;
  beforeAll(() => {
    box = new Sandbox();
    box.stub('modprobe', 'exit 0');
    // An LXC VPS: the host-wide keys are read-only or missing.
    box.stub(
      'sysctl',
      `[ "$1" = -q ] && shift
[ "$1" = -w ] && shift
case $1 in
  net.core.rmem_max=*) echo 'sysctl: setting key "net.core.rmem_max": Read-only file system' >&2; exit 255 ;;
  fs.nr_open=*) echo 'sysctl: cannot stat /proc/sys/fs/nr_open: No such file or directory' >&2; exit 255 ;;
esac`,
    );
  });
  afterAll(() => box.cleanup());

  it('sets each key, and names the keys the kernel refuses without failing the step', () => {
    const r = box.run(step(exampleFiles(), 'sysctl', box.root));
    expect(r.status, r.stderr).toBe(0);
    const set = box.calls().filter((c) => c.startsWith('sysctl '));
    expect(set).toContain('sysctl -q -w net.ipv4.tcp_congestion_control=bbr');
    expect(set).toContain('sysctl -q -w vm.swappiness=10');
    expect(set).toHaveLength(renderSysctl().split('\n').filter((l) => / = /.test(l)).length);
    expect(r.stderr).toMatch(/warning: sysctl keys not applied.* net\.core\.rmem_max fs\.nr_open$/m);
    expect(r.stderr).toContain('Read-only file system');
    expect(existsSync(box.at(`${STAMPS}/etc__sysctl.d__99-registry-stack.conf`))).toBe(true);
  });

  it('fails on a line that is not key = value, and tries again next time', () => {
    const bad = { ...exampleFiles(), sysctl: { content: 'vm.swappiness = 10\nnet.core.somaxconn 4096\n', mode: '0644' } };
    const r = box.run(step(bad, 'sysctl', box.root));
    expect(r.status).not.toBe(0);
    expect(r.stderr).toContain("not a 'key = value' line: net.core.somaxconn 4096");
    expect(readFileSync(box.at('/etc/sysctl.d/99-registry-stack.conf'), 'utf8')).toContain('net.core.somaxconn 4096');
    expect(box.run(step(bad, 'sysctl', box.root)).status).not.toBe(0);
  });

  it('keeps the settings for client connections off the host file: they go on the containers', () => {
    const hostKeys = renderSysctl()
      .split('\n')
      .filter((l) => / = /.test(l))
      .map((l) => l.split(' = ')[0]);
    const perContainer = Object.keys(containerSysctls());
    expect(perContainer.sort()).toEqual(
      [
        'net.core.somaxconn',
        'net.ipv4.ip_local_port_range',
        'net.ipv4.tcp_max_syn_backlog',
        'net.ipv4.tcp_mtu_probing',
        'net.ipv4.tcp_rmem',
        'net.ipv4.tcp_slow_start_after_idle',
        'net.ipv4.tcp_wmem',
      ].sort(),
    );
    for (const k of perContainer) expect(hostKeys, k).not.toContain(k);
    expect(hostKeys.filter((k) => k.startsWith('net.'))).toEqual([
      'net.core.default_qdisc',
      'net.ipv4.tcp_congestion_control',
      'net.core.rmem_max',
      'net.core.wmem_max',
      'net.core.netdev_max_backlog',
    ]);
  });

  // A fresh network namespace is what Docker gives a container: each key must exist there and take our value.
  const canUnshare = spawnSync('unshare', ['-n', 'true']).status === 0;
  it.runIf(canUnshare)('every container sysctl can be set in a fresh network namespace', () => {
    const sets = Object.entries(containerSysctls()).map(([k, v]) => `sysctl -q -w '${k}=${v}' && [ "$(sysctl -n '${k}' | tr -s '\\t ' '  ')" = '${v}' ]`);
    const r = spawnSync('unshare', ['-n', 'sh', '-ec', sets.join('\n')], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
  });
});

describe("Docker's daemon.json: merged into the host's own", () => {
  let box: Sandbox;
  const daemon = () => box.at('/etc/docker/daemon.json');
  const ours = JSON.parse(renderDaemonJson({ logMaxSize: '10m', logMaxFile: 3 }));
  const script = (files = exampleFiles()) => step(files, 'docker-daemon', box.root);
  const restarts = () => box.calls().filter((c) => c === 'systemctl restart docker').length;

  beforeAll(() => {
    box = new Sandbox([...TOOLS, 'python3']);
    box.stub('systemctl', 'if [ -e "$STUB_DIR/docker-will-fail" ]; then rm "$STUB_DIR/docker-will-fail"; echo "Job for docker.service failed" >&2; exit 1; fi');
  });
  afterAll(() => box.cleanup());

  it('keeps the host\'s settings, replaces ours, keeps the original once, and restarts Docker once', () => {
    mkdirSync(path.dirname(daemon()), { recursive: true });
    const own = { 'registry-mirrors': ['https://mirror.example'], 'data-root': '/srv/docker', 'log-driver': 'journald' };
    writeFileSync(daemon(), JSON.stringify(own));
    const r = box.run(script());
    expect(r.status, r.stderr).toBe(0);
    expect(JSON.parse(readFileSync(daemon(), 'utf8'))).toEqual({ ...own, ...ours });
    expect(JSON.parse(readFileSync(`${daemon()}.registry-stack.orig`, 'utf8'))).toEqual(own);
    expect(restarts()).toBe(1);

    // unchanged: no restart
    expect(box.run(script()).status).toBe(0);
    expect(restarts()).toBe(1);
  });

  it('restarts only when the merged result changed, and again after a restart that failed', () => {
    const bigger = { ...exampleFiles(), daemonJson: { content: renderDaemonJson({ logMaxSize: '50m', logMaxFile: 5 }), mode: '0644' } };
    writeFileSync(path.join(box.dir, 'docker-will-fail'), '');
    const failed = box.run(script(bigger));
    expect(failed.status).not.toBe(0);
    expect(restarts()).toBe(2);
    const retried = box.run(script(bigger));
    expect(retried.status, retried.stderr).toBe(0);
    expect(restarts()).toBe(3);
    expect(JSON.parse(readFileSync(daemon(), 'utf8'))['log-opts']).toEqual({ 'max-size': '50m', 'max-file': '5' });
    expect(JSON.parse(readFileSync(daemon(), 'utf8'))['data-root']).toBe('/srv/docker');
    expect(JSON.parse(readFileSync(`${daemon()}.registry-stack.orig`, 'utf8'))['log-driver']).toBe('journald');
  });

  it('refuses a daemon.json that is not JSON, leaving it as it is', () => {
    writeFileSync(daemon(), '{ "data-root": "/srv/docker", }');
    const r = box.run(script());
    expect(r.status).not.toBe(0);
    expect(r.stderr).toContain('is not valid JSON');
    expect(readFileSync(daemon(), 'utf8')).toBe('{ "data-root": "/srv/docker", }');
  });

  // Docker ≥ 23 can check a daemon.json without starting: the step asks it before installing one.
  const hasDockerd = spawnSync('sh', ['-c', 'command -v dockerd && dockerd --help | grep -q -e --validate']).status === 0;
  it.runIf(hasDockerd)('refuses a merged file dockerd would not start with', () => {
    const checked = new Sandbox([...TOOLS, 'python3', 'dockerd']);
    try {
      checked.stub('systemctl', 'exit 0');
      const target = checked.at('/etc/docker/daemon.json');
      mkdirSync(path.dirname(target), { recursive: true });
      writeFileSync(target, '{"no-such-option": true}\n');
      const r = checked.run(step(exampleFiles(), 'docker-daemon', checked.root));
      expect(r.status).not.toBe(0);
      expect(r.stderr).toContain('no-such-option');
      expect(readFileSync(target, 'utf8')).toBe('{"no-such-option": true}\n');
      expect(checked.calls()).toEqual([]);
    } finally {
      checked.cleanup();
    }
  });

  describe('without python3', () => {
    let bare: Sandbox;
    beforeAll(() => {
      bare = new Sandbox(); // TOOLS has no python3
      bare.stub('systemctl', 'exit 0');
    });
    afterAll(() => bare.cleanup());
    const target = () => bare.at('/etc/docker/daemon.json');

    it('writes ours on a host without a daemon.json, and replaces its own earlier file', () => {
      expect(bare.run(step(exampleFiles(), 'docker-daemon', bare.root)).status).toBe(0);
      expect(JSON.parse(readFileSync(target(), 'utf8'))).toEqual(ours);
      const bigger = { ...exampleFiles(), daemonJson: { content: renderDaemonJson({ logMaxSize: '20m', logMaxFile: 3 }), mode: '0644' } };
      const r = bare.run(step(bigger, 'docker-daemon', bare.root));
      expect(r.status, r.stderr).toBe(0);
      expect(JSON.parse(readFileSync(target(), 'utf8'))['log-opts']['max-size']).toBe('20m');
      expect(bare.calls().filter((c) => c === 'systemctl restart docker')).toHaveLength(2);
    });

    it('fails with one line when the host\'s file has settings of its own', () => {
      writeFileSync(target(), '{"data-root": "/srv/docker"}\n');
      const r = bare.run(step(exampleFiles(), 'docker-daemon', bare.root));
      expect(r.status).not.toBe(0);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).toMatch(/has settings of its own and python3, needed to merge ours .* is not installed/);
      expect(readFileSync(target(), 'utf8')).toBe('{"data-root": "/srv/docker"}\n');
    });
  });
});

describe('the server image: a local name, never pulled; old ones removed after a deploy', () => {
  it('is named under localhost/, which no registry but this host answers', () => {
    expect(serverImageName(ROOT)).toMatch(/^localhost\/registry-stack\/server:[0-9a-f]{16}$/);
  });

  describe('the cleanup step', () => {
    let box: Sandbox;
    beforeAll(() => {
      box = new Sandbox();
      box.stub(
        'docker',
        `case "$1 $2" in
  'image ls')
    [ -e "$STUB_DIR/docker-down" ] && { echo 'Cannot connect to the Docker daemon' >&2; exit 1; }
    case $5 in
      localhost/registry-stack/server) printf '%s\\n' localhost/registry-stack/server:new localhost/registry-stack/server:old1 localhost/registry-stack/server:old2 ;;
      registry-stack/server) printf '%s\\n' registry-stack/server:legacy ;;
    esac ;;
  'ps -a') [ "$5" = ancestor=localhost/registry-stack/server:old2 ] && echo 3f2a1b ;;
  'image rm') [ "$3" = registry-stack/server:legacy ] && { echo 'conflict' >&2; exit 1; } ;;
esac
exit 0`,
      );
    });
    afterAll(() => box.cleanup());

    it('removes every older tag no container uses, keeps the current one and those in use', () => {
      const script = step({ ...exampleFiles(), serverImage: 'localhost/registry-stack/server:new' }, 'image-cleanup');
      expect(script).toBe(renderImageCleanupScript({ keep: 'localhost/registry-stack/server:new', repos: ['localhost/registry-stack/server', 'registry-stack/server'] }));
      const r = box.run(script);
      expect(r.status, r.stderr).toBe(0);
      const removed = box.calls().filter((c) => c.startsWith('docker image rm '));
      expect(removed).toEqual(['docker image rm localhost/registry-stack/server:old1', 'docker image rm registry-stack/server:legacy']);
      expect(r.stdout).toContain('keeping localhost/registry-stack/server:old2: a container uses it');
      expect(r.stderr).toContain('warning: could not remove registry-stack/server:legacy');
    });

    it('fails when Docker cannot be asked', () => {
      writeFileSync(path.join(box.dir, 'docker-down'), '');
      const r = box.run(step(exampleFiles(), 'image-cleanup'));
      expect(r.status).not.toBe(0);
      expect(r.stderr).toContain('Cannot connect to the Docker daemon');
    });
  });
});

describe('the components under Pulumi mocks', () => {
  interface Registration {
    type: string;
    inputs: Record<string, any>;
    raw: Record<string, any>;
    deps: string[];
    aliasParents: string[];
  }
  const seen = new Map<string, Registration>();
  const files = exampleFiles('deploy');
  let hostUrn = '';

  beforeAll(async () => {
    await pulumi.runtime.setMocks(
      {
        newResource(a) {
          const r = seen.get(a.name);
          if (r) Object.assign(r, { inputs: unwrap(a.inputs), raw: a.inputs });
          return { id: `${a.name}-id`, state: a.inputs };
        },
        call: () => ({}),
      },
      'registry-stack',
      'test',
      false,
    );
    // The mock monitor's requests carry the dependencies and aliases the mock callbacks do not see.
    const monitor = pulumi.runtime.getMonitor() as any;
    const register = monitor.registerResource.bind(monitor);
    monitor.registerResource = (req: any, cb: any) => {
      seen.set(req.getName(), {
        type: req.getType(),
        inputs: {},
        raw: {},
        deps: req.getDependenciesList().map((u: string) => u.split('::').pop()),
        aliasParents: req.getAliasesList().map((a: any) => a.getSpec()?.getParenturn() ?? ''),
      });
      return register(req, cb);
    };

    const connection = { host: '203.0.113.10', user: 'deploy' };
    const file = (k: 'firewallScript' | 'sysctl' | 'daemonJson' | 'opsWrapper' | 'crontab' | 'logrotate') => ({ content: files[k].content, mode: files[k].mode });
    const secret = (k: 'htpasswd' | 'opsEnv') => ({ content: pulumi.secret(files[k].content), mode: files[k].mode });
    const host = new HostSetup('host', {
      connection,
      sshUser: 'deploy',
      containerGid: 1000,
      firewallScript: file('firewallScript'),
      sysctl: file('sysctl'),
      daemonJson: file('daemonJson'),
      htpasswd: secret('htpasswd'),
    });
    host.urn.apply((u) => (hostUrn = u));
    const image = new command.local.Command('server-image', { create: 'true' }, { dependsOn: host.steps });
    new OpsSetup('host', {
      host,
      serverImage: IMAGE,
      opsWrapper: file('opsWrapper'),
      opsEnv: secret('opsEnv'),
      crontab: file('crontab'),
      logrotate: file('logrotate'),
      after: [image],
    });
    await (pulumi.runtime as unknown as { waitForRPCs(): Promise<void> }).waitForRPCs();
  });

  it('runs each step\'s script as a remote command, in the steps\' order', () => {
    for (const s of renderHostSteps(files)) {
      const r = seen.get(`host-${s.name}`);
      expect(r?.type, s.name).toBe('command:remote:Command');
      expect(r?.inputs.stdin, s.name).toBe(s.stdin);
      expect(r?.inputs.create).toBe('sudo -n sh -s');
      expect(r?.inputs.delete).toBe(s.delete);
      const deps = s.after.map((d) => (d === CONTAINERS ? 'server-image' : `host-${d}`));
      expect([...(r?.deps ?? [])].sort(), s.name).toEqual(deps.sort());
    }
    expect(seen.get('server-image')?.deps.sort()).toEqual(['host-auth', 'host-docker-daemon', 'host-firewall', 'host-prepare', 'host-sysctl']);
    expect([...seen.values()].filter((r) => r.type === 'command:remote:CopyToRemote')).toEqual([]);
  });

  it('keeps the scripts without a secret in plain text (a preview shows their diffs)', () => {
    for (const name of ['prepare', 'sysctl', 'docker-daemon', 'firewall', 'image-cleanup']) expect(isSecretValue(seen.get(`host-${name}`)?.raw.stdin), name).toBe(false);
    for (const name of ['auth', 'ops']) expect(isSecretValue(seen.get(`host-${name}`)?.raw.stdin), name).toBe(true);
  });

  it('moves the ops command to OpsSetup with an alias to its state under HostSetup (else its delete would remove the new crontab)', () => {
    expect(hostUrn).toContain('registry-stack:index:HostSetup::host');
    expect(seen.get('host-ops')?.aliasParents).toContain(hostUrn);
  });
});

describe('SSH options for the Docker provider', () => {
  const KEY = 'AAAAC3NzaC1lZDI1NTE5AAAAIEi7m4YrlmDbXn1nq7+0000000000000000000000000000';

  it('pins vps.hostKey in a private known_hosts file and checks strictly', () => {
    const s = dockerSsh({ host: 'vps.example.net', port: 2222, hostKey: `[vps.example.net]:2222 ssh-ed25519 ${KEY}\n`, privateKey: 'PRIVATE' });
    try {
      const opt = (name: string) => s.sshOpts.find((o) => o.startsWith(`${name}=`))?.split('=')[1];
      expect(opt('StrictHostKeyChecking')).toBe('yes');
      expect(opt('GlobalKnownHostsFile')).toBe('/dev/null');
      const knownHosts = opt('UserKnownHostsFile') as string;
      expect(readFileSync(knownHosts, 'utf8')).toBe(`[vps.example.net]:2222 ssh-ed25519 ${KEY}\n`);
      // OpenSSH reads it as the key of that host and port
      const found = spawnSync('ssh-keygen', ['-F', '[vps.example.net]:2222', '-f', knownHosts], { encoding: 'utf8' });
      expect(found.status).toBe(0);
      const keyFile = s.sshOpts[s.sshOpts.indexOf('-i') + 1];
      expect(readFileSync(keyFile, 'utf8')).toBe('PRIVATE\n');
      expect(statSync(keyFile).mode & 0o777).toBe(0o600);
      expect(statSync(path.dirname(keyFile)).mode & 0o777).toBe(0o700);
      expect(path.dirname(keyFile)).toBe(path.dirname(knownHosts));
      s.cleanup();
      expect(existsSync(path.dirname(keyFile))).toBe(false);
    } finally {
      s.cleanup();
    }
  });

  it('without vps.hostKey, checks the user\'s known_hosts, strictly too, and writes no file', () => {
    const s = dockerSsh({ host: 'vps.example.net', port: 22 });
    expect(s.sshOpts).toEqual(['-o', 'StrictHostKeyChecking=yes', '-o', 'ServerAliveInterval=30', '-p', '22']);
  });

  it('removes the private key when the process exits', () => {
    const code = `import(${JSON.stringify(path.join(ROOT, 'infra/ssh.ts'))}).then((m) => { const s = m.dockerSsh({ host: 'h', port: 22, privateKey: 'K' }); console.log(s.sshOpts[s.sshOpts.indexOf('-i') + 1]); })`;
    const r = spawnSync(process.execPath, ['--import', 'tsx', '-e', code], { cwd: ROOT, encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    const keyFile = r.stdout.trim();
    expect(keyFile).toMatch(/registry-stack-ssh-/);
    expect(existsSync(path.dirname(keyFile))).toBe(false);
  });

  it('reads host keys as ssh-keyscan prints them, and refuses anything else', () => {
    expect(parseHostKeys(`# vps.example.net:22 SSH-2.0-OpenSSH_9.2\nvps.example.net ssh-ed25519 ${KEY}\n`)).toEqual([{ type: 'ssh-ed25519', key: KEY }]);
    expect(parseHostKeys(`ssh-ed25519 ${KEY} root@vps`)).toEqual([{ type: 'ssh-ed25519', key: KEY }]);
    expect(() => parseHostKeys('SHA256:abcdef')).toThrow(/ssh-keyscan -t ed25519 HOST/);
    expect(renderKnownHosts('203.0.113.10', 22, [{ type: 'ssh-ed25519', key: KEY }])).toBe(`203.0.113.10 ssh-ed25519 ${KEY}\n`);
  });

  it('finds the host key for the remote commands in known_hosts (hashed too), or says how to get one', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'rs-known-'));
    try {
      const file = path.join(dir, 'known_hosts');
      writeFileSync(file, `[vps.example.net]:2222 ecdsa-sha2-nistp256 AAAAE2VjZHNh\n[vps.example.net]:2222 ssh-ed25519 ${KEY}\n`);
      expect(spawnSync('ssh-keygen', ['-H', '-f', file]).status).toBe(0);
      expect(readFileSync(file, 'utf8')).not.toContain('vps.example.net');
      expect(knownHostKey('vps.example.net', 2222, file)).toBe(`ssh-ed25519 ${KEY}`);
      expect(resolveHostKey({ host: 'vps.example.net', port: 2222, knownHostsFile: file })).toBe(`ssh-ed25519 ${KEY}`);
      expect(resolveHostKey({ host: 'other', port: 22, hostKey: `other ssh-ed25519 ${KEY}`, knownHostsFile: file })).toBe(`ssh-ed25519 ${KEY}`);
      expect(() => resolveHostKey({ host: 'other.example.net', port: 2200, knownHostsFile: file })).toThrow(
        'set vps.hostKey to the output of `ssh-keyscan -t ed25519 -p 2200 other.example.net`',
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  // The options against a real sshd: the pinned key lets ssh in, any other key or an unknown host does not.
  const canRunSshd = existsSync('/usr/sbin/sshd') && process.getuid?.() === 0;
  describe.runIf(canRunSshd)('against a real sshd', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'rs-sshd-'));
    let sshd: ReturnType<typeof spawn> | undefined;
    let port = 0;
    const hostPub = () => readFileSync(path.join(dir, 'host_ed25519.pub'), 'utf8');
    const ssh = (opts: string[]) =>
      spawnSync('ssh', [...opts, '-o', 'BatchMode=yes', '-o', 'ConnectTimeout=5', 'root@127.0.0.1', 'echo', 'in'], { encoding: 'utf8', timeout: 20_000 });

    beforeAll(async () => {
      for (const [name, f] of [['host', 'host_ed25519'], ['client', 'id_ed25519']]) {
        expect(spawnSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', name, '-f', path.join(dir, f)]).status).toBe(0);
      }
      writeFileSync(path.join(dir, 'authorized_keys'), readFileSync(path.join(dir, 'id_ed25519.pub')));
      port = await new Promise<number>((resolve) => {
        const srv = createServer().listen(0, '127.0.0.1', () => {
          const p = (srv.address() as { port: number }).port;
          srv.close(() => resolve(p));
        });
      });
      writeFileSync(
        path.join(dir, 'sshd_config'),
        [
          `Port ${port}`,
          'ListenAddress 127.0.0.1',
          `HostKey ${path.join(dir, 'host_ed25519')}`,
          `AuthorizedKeysFile ${path.join(dir, 'authorized_keys')}`,
          `PidFile ${path.join(dir, 'sshd.pid')}`,
          'StrictModes no',
          'UsePAM no',
          'PasswordAuthentication no',
          'KbdInteractiveAuthentication no',
          'PermitRootLogin prohibit-password',
          '',
        ].join('\n'),
      );
      chmodSync(path.join(dir, 'host_ed25519'), 0o600);
      mkdirSync('/run/sshd', { recursive: true }); // sshd's privilege separation directory
      sshd = spawn('/usr/sbin/sshd', ['-D', '-e', '-f', path.join(dir, 'sshd_config')], { stdio: 'ignore' });
      for (let i = 0; i < 50; i++) {
        if (spawnSync('ssh-keyscan', ['-p', String(port), '-t', 'ed25519', '127.0.0.1'], { encoding: 'utf8' }).stdout.includes('ssh-ed25519')) break;
        await new Promise((r) => setTimeout(r, 100));
      }
    });
    afterAll(() => {
      sshd?.kill();
      rmSync(dir, { recursive: true, force: true });
    });

    it('connects with the pinned key (as ssh-keyscan -t ed25519 prints it)', () => {
      const scanned = spawnSync('ssh-keyscan', ['-p', String(port), '-t', 'ed25519', '127.0.0.1'], { encoding: 'utf8' }).stdout;
      expect(scanned.trim().split(' ').slice(1, 3)).toEqual(hostPub().trim().split(' ').slice(0, 2));
      const s = dockerSsh({ host: '127.0.0.1', port, hostKey: scanned, privateKey: readFileSync(path.join(dir, 'id_ed25519'), 'utf8') });
      try {
        const r = ssh(s.sshOpts);
        expect(r.status, r.stderr).toBe(0);
        expect(r.stdout.trim()).toBe('in');
      } finally {
        s.cleanup();
      }
    });

    it('refuses a host whose key is not the pinned one', () => {
      spawnSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', path.join(dir, 'other')]);
      const s = dockerSsh({ host: '127.0.0.1', port, hostKey: readFileSync(path.join(dir, 'other.pub'), 'utf8'), privateKey: readFileSync(path.join(dir, 'id_ed25519'), 'utf8') });
      try {
        const r = ssh(s.sshOpts);
        expect(r.status).not.toBe(0);
        expect(r.stderr).toContain('Host key verification failed');
      } finally {
        s.cleanup();
      }
    });

    it('without vps.hostKey, refuses a host known_hosts does not know, and does not add it', () => {
      const empty = path.join(dir, 'empty_known_hosts');
      writeFileSync(empty, '');
      const s = dockerSsh({ host: '127.0.0.1', port, privateKey: readFileSync(path.join(dir, 'id_ed25519'), 'utf8') });
      try {
        const r = ssh([...s.sshOpts, '-o', `UserKnownHostsFile=${empty}`, '-o', 'GlobalKnownHostsFile=/dev/null']);
        expect(r.status).not.toBe(0);
        expect(r.stderr).toContain('Host key verification failed');
        expect(readFileSync(empty, 'utf8')).toBe('');
      } finally {
        s.cleanup();
      }
    });
  });
});
