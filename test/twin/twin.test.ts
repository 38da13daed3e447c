// The stack on a real Docker engine, deployed by `twinUp` from the same stack
// config and renderers as `pulumi up`, and used the way its users use it: the
// docker CLI against a client engine that knows only the twin's DNS names,
// CAs and the rendered registry-mirrors setting.
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { Agent, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dockerCli } from '../../infra/twin/docker.ts';
import { TWIN_CONTAINERS, twinLayout } from '../../infra/twin/layout.ts';
import { certificateIssuer, HostStepError, runOverSsh, twinDown, twinUp, type TwinUpResult } from '../../infra/twin/twin.ts';

const dir = mkdtempSync('/var/tmp/registry-stack-twin-test-');
const layout = twinLayout(dir);
const logs: string[] = [];
// TWIN_LOG=1 prints the deploys' lines (with their times) as they come.
const logLine = (s: string) => {
  logs.push(s);
  if (process.env.TWIN_LOG) console.error(s);
};
let up: TwinUpResult;
let dockerConfig: string;

/** The docker CLI on the client engine, with its own config (logins). */
function client(args: string[], input?: string) {
  const r = spawnSync('docker', args, {
    env: { ...process.env, DOCKER_HOST: up.env.TWIN_DOCKER_HOST, DOCKER_CONFIG: dockerConfig },
    input,
    encoding: 'utf8',
  });
  return { code: r.status ?? 1, stdout: r.stdout, stderr: r.stderr };
}

function clientOk(args: string[], input?: string): string {
  const r = client(args, input);
  expect(r.code, `docker ${args.join(' ')}: ${r.stderr}`).toBe(0);
  return r.stdout.trim();
}

const vps = () => dockerCli(up.env.TWIN_VPS_DOCKER_HOST);

/** A one-layer image made from a tar of one file, on the client engine. */
function makeImage(tag: string, content: string): string {
  const d = mkdtempSync(path.join(tmpdir(), 'twin-image-'));
  writeFileSync(path.join(d, 'hello.txt'), content);
  const tar = execFileSync('tar', ['-C', d, '-cf', '-', 'hello.txt']);
  rmSync(d, { recursive: true, force: true });
  clientOk(['import', '-', tag], tar.toString('latin1'));
  return clientOk(['image', 'inspect', '--format', '{{.Id}}', tag]);
}

const ssh = (script: string) => runOverSsh(layout, up.config, 'sh -s', script);

beforeAll(async () => {
  dockerConfig = mkdtempSync(path.join(tmpdir(), 'twin-docker-config-'));
  up = await twinUp({ dir, log: logLine });
}, 1_200_000);

afterAll(async () => {
  const started = Date.now();
  await twinDown({ dir });
  logLine(`twin down in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  rmSync(dockerConfig, { recursive: true, force: true });
}, 300_000);

describe('the private registry (dcr, DNS only)', () => {
  it('has a certificate from the ACME CA (pebble), as production gets one from Let\'s Encrypt', async () => {
    expect(await certificateIssuer(layout.ips.caddy, up.env.TWIN_DCR)).toMatch(/pebble/i);
  });

  it('takes docker login, push, and pull back', () => {
    clientOk(['login', up.env.TWIN_DCR, '-u', up.env.TWIN_USER, '--password-stdin'], up.env.TWIN_PASSWORD);
    const ref = `${up.env.TWIN_DCR}/team/app:1`;
    const id = makeImage(ref, 'pushed to dcr\n');
    clientOk(['push', ref]);
    clientOk(['rmi', ref]);
    clientOk(['pull', ref]);
    expect(clientOk(['image', 'inspect', '--format', '{{.Id}}', ref])).toBe(id);
  });

  it('refuses a push without a login', () => {
    client(['logout', up.env.TWIN_DCR]);
    const ref = `${up.env.TWIN_DCR}/team/anon:1`;
    makeImage(ref, 'anonymous\n');
    const r = client(['push', ref]);
    expect(r.code).not.toBe(0);
    // With the stack's access policy, docker fetches an anonymous token, which grants no push: it says "denied".
    expect(r.stderr + r.stdout).toMatch(/unauthorized|authentication required|requested access to the resource is denied/i);
  });
});

// infra/twin/stack.yaml's policy: the twin user's team may push team/ and public/, the CI robot
// (made by `registry robot create` in dcr's container) team/ only; anyone may pull public/.
describe('access control on dcr: a CI robot and a public read-only repository', () => {
  it('made the robot once and kept only its secret\'s hash in dcr\'s storage', async () => {
    expect(Object.keys(up.robotSecrets)).toEqual(['ci']);
    const record = await vps().out(['exec', 'registry', 'cat', '/var/lib/registry/auth/robots/ci.json']);
    expect(JSON.parse(record)).toMatchObject({ name: 'ci', scopes: ['repository:team/**:pull,push'], description: "the twin's CI" });
    expect(record).not.toContain(up.robotSecrets.ci);
  });

  it('the robot logs in with docker, pushes to team/, and is denied public/', () => {
    clientOk(['login', up.env.TWIN_DCR, '-u', 'robot$ci', '--password-stdin'], up.robotSecrets.ci);
    const ref = `${up.env.TWIN_DCR}/team/ci-built:1`;
    makeImage(ref, 'built by the CI robot\n');
    clientOk(['push', ref]);
    const refused = `${up.env.TWIN_DCR}/public/ci-built:1`;
    makeImage(refused, 'the robot may not publish\n');
    const r = client(['push', refused]);
    expect(r.code).not.toBe(0);
    expect(r.stderr + r.stdout).toMatch(/denied/i);
    client(['logout', up.env.TWIN_DCR]);
  });

  it('the team publishes to public/, which anonymous clients pull; team/ they may not', () => {
    clientOk(['login', up.env.TWIN_DCR, '-u', up.env.TWIN_USER, '--password-stdin'], up.env.TWIN_PASSWORD);
    const ref = `${up.env.TWIN_DCR}/public/tool:1`;
    const id = makeImage(ref, 'for everyone\n');
    clientOk(['push', ref]);
    client(['logout', up.env.TWIN_DCR]);
    clientOk(['rmi', ref]);
    clientOk(['pull', ref]);
    expect(clientOk(['image', 'inspect', '--format', '{{.Id}}', ref])).toBe(id);
    const r = client(['pull', `${up.env.TWIN_DCR}/team/ci-built:1`]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/unauthorized|authentication required|pull access denied/i);
  });
});

describe('the mirror (mir, through the Cloudflare edge twin)', () => {
  const edge = () =>
    new Agent({ connect: { ca: execFileSync('cat', [up.env.TWIN_CA]).toString(), servername: up.env.TWIN_MIR } });

  it('serves a library image to the client engine through registry-mirrors, and again with the upstream stopped', async () => {
    // Seed the Docker Hub stand-in, as Docker Hub would have the image.
    const seed = `${up.env.TWIN_UPSTREAM}/library/hello:1`;
    const id = makeImage(seed, 'from docker hub\n');
    clientOk(['push', seed]);
    clientOk(['rmi', seed]);

    // docker.io/library/hello:1: the client engine has no way to Docker Hub but its mirror.
    clientOk(['pull', 'hello:1']);
    expect(clientOk(['image', 'inspect', '--format', '{{.Id}}', 'hello:1'])).toBe(id);

    await vps().run(['stop', TWIN_CONTAINERS.hub]);
    try {
      clientOk(['rmi', 'hello:1']);
      clientOk(['pull', 'hello:1']);
      expect(clientOk(['image', 'inspect', '--format', '{{.Id}}', 'hello:1'])).toBe(id);
    } finally {
      await vps().run(['start', TWIN_CONTAINERS.hub]);
    }
  });

  it('refuses a push at the edge, before it reaches the origin', async () => {
    const res = await request(`https://${layout.ips.edge}/v2/library/hello/blobs/uploads/`, {
      method: 'POST',
      headers: { host: up.env.TWIN_MIR },
      dispatcher: edge(),
    });
    await res.body.dump();
    expect(res.statusCode).toBe(403);
    expect(res.headers['cf-ray']).toBeDefined();
  });

  it('cannot be reached around the edge: Caddy wants the origin header', async () => {
    const res = await request(`https://${layout.ips.caddy}/v2/`, {
      headers: { host: up.env.TWIN_MIR },
      dispatcher: new Agent({ connect: { rejectUnauthorized: false, servername: up.env.TWIN_MIR } }),
    });
    await res.body.dump();
    expect(res.statusCode).toBe(403);
  });

  it('never writes the origin secret to a log', async () => {
    const secrets = JSON.parse(execFileSync('cat', [layout.secrets]).toString()) as { originSecret: string };
    const caddyLog = await vps().run(['logs', 'caddy']);
    expect(caddyLog.stdout + caddyLog.stderr).toContain(up.env.TWIN_MIR); // the access log is on…
    expect(caddyLog.stdout + caddyLog.stderr).not.toContain(secrets.originSecret); // …without the secret
  });
});

describe('deploying again', () => {
  it('a second up changes nothing', async () => {
    // The long-lived containers by name (cron's ops jobs come and go with `docker run --rm` meanwhile).
    const names = ['caddy', 'registry', 'registry-cache', ...Object.values(TWIN_CONTAINERS)];
    const ids = () => Promise.all(names.map((n) => vps().out(['inspect', '--format', '{{.Id}} {{.State.StartedAt}}', n])));
    const before = await ids();
    const again = await twinUp({ dir, log: logLine });
    expect(again.changes).toEqual({ steps: [], containers: [], robots: [] });
    expect(again.robotSecrets).toEqual(up.robotSecrets);
    expect(await ids()).toEqual(before);
  }, 600_000);

  it('removes server images of earlier deploys, and names its own so no registry can answer it', async () => {
    const d = vps();
    // An image an earlier deploy built (any content will do: no container uses it).
    const tar = execFileSync('tar', ['-C', path.dirname(layout.secrets), '-cf', '-', 'secrets.json']);
    await d.run(['import', '-', 'localhost/registry-stack/server:0000000000000000'], { input: tar });
    await twinUp({ dir, log: logLine });
    const running = await d.out(['inspect', '--format', '{{.Config.Image}}', 'registry']);
    expect(running).toMatch(/^localhost\/registry-stack\/server:[0-9a-f]{16}$/);
    const tags = (await d.out(['image', 'ls', '--format', '{{.Repository}}:{{.Tag}}', 'localhost/registry-stack/server'])).split('\n');
    expect(tags).toEqual([running]);
  }, 600_000);

  it('a host step whose apply failed is applied by the next up', async () => {
    // As if the first deploy's firewall apply had failed (apt lock, a broken ufw):
    // the firewall was never enabled and the file is not there yet.
    const broke = await ssh(
      [
        'ufw --force disable >/dev/null',
        'rm -f /opt/registry-stack/bin/firewall.sh',
        "printf '#!/bin/sh\\necho ufw: simulated failure >&2\\nexit 1\\n' > /usr/local/sbin/ufw",
        'chmod 755 /usr/local/sbin/ufw',
      ].join('\n'),
    );
    expect(broke.code, broke.stderr).toBe(0);
    await expect(twinUp({ dir, log: logLine })).rejects.toThrow(HostStepError);

    expect((await ssh('rm -f /usr/local/sbin/ufw')).code).toBe(0);
    const again = await twinUp({ dir, log: logLine });
    expect(again.changes.steps).toContain('firewall');
    const status = await ssh('ufw status');
    expect(status.stdout).toMatch(/Status: active/);
  }, 900_000);
});

describe('the VPS', () => {
  it('merged our daemon.json keys into the VPS\'s own, and its engine runs with them', async () => {
    const r = await ssh('cat /etc/docker/daemon.json');
    const json = JSON.parse(r.stdout) as Record<string, unknown>;
    expect(json['max-concurrent-downloads']).toBe(6); // the VPS's own setting, kept
    expect(json['log-driver']).toBe('json-file'); // ours
    expect(await vps().out(['info', '--format', '{{.LoggingDriver}} {{.LiveRestoreEnabled}}'])).toBe('json-file true');
  });

  it('has ufw on, letting in only SSH, HTTP and HTTPS', async () => {
    const status = await ssh('ufw status');
    expect(status.stdout).toMatch(/Status: active/);
    const allowed = [...status.stdout.matchAll(/^(\S+)\s+ALLOW/gm)].map((m) => m[1]);
    // IPv4 rules (the IPv6 ones, "22/tcp (v6)", mirror them)
    expect(new Set(allowed)).toEqual(new Set(['22/tcp', '80/tcp', '443/tcp', '443/udp']));
  });

  it('brings a killed mirror container back by its restart policy', async () => {
    const d = vps();
    const before = Number(await d.out(['inspect', '--format', '{{.RestartCount}}', 'registry-cache']));
    const pid = await d.out(['inspect', '--format', '{{.State.Pid}}', 'registry-cache']);
    process.kill(Number(pid), 'SIGKILL');
    // The engine restarts it; wait for its healthcheck to pass again.
    const deadline = Date.now() + 120_000;
    let state = '';
    while (Date.now() < deadline) {
      state = await d.out(['inspect', '--format', '{{.RestartCount}} {{.State.Health.Status}}', 'registry-cache']);
      const [count, health] = state.split(' ');
      if (Number(count) > before && health === 'healthy') break;
      await new Promise((r) => setTimeout(r, 1000)); // polling the engine's view of the container
    }
    expect(state.split(' ')[1]).toBe('healthy');
    expect(Number(state.split(' ')[0])).toBeGreaterThan(before);
    clientOk(['rmi', '-f', 'hello:1']);
    clientOk(['pull', 'hello:1']);
  }, 180_000);

  it('runs each cron job once: exit 0, log written', async () => {
    const crontab = await ssh('cat /etc/cron.d/registry-stack');
    expect(crontab.code).toBe(0);
    const jobs = crontab.stdout.split('\n').filter((line) => /^\S+ \S+ \S+ \S+ \S+ root /.test(line) || /^@\w+ root /.test(line));
    expect(jobs.length).toBeGreaterThanOrEqual(4);
    for (const line of jobs) {
      // cron itself runs the monitor every 5 minutes: wait for its lock instead of skipping (-n) when it holds it.
      const command = line.replace(/^(@\w+|\S+ \S+ \S+ \S+ \S+) root /, '').replace(/^flock -n /, 'flock -w 600 ');
      const r = await ssh(`set -e\n${command}\n`);
      const job = /\/run\/lock\/registry-stack-([a-z-]+)\.lock/.exec(command)?.[1];
      const logFile = await ssh(`tail -n 20 /var/log/registry-stack/${job}.log`);
      expect(r.code, `${job}: ${logFile.stdout}`).toBe(0);
      expect(logFile.stdout.trim().length, `${job} wrote its log`).toBeGreaterThan(0);
    }
  }, 600_000);
});

