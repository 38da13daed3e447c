// scripts/monitor.ts against real local processes: a fake Docker Engine API
// on a unix socket (recording restarts), temp dirs for the disk check, and
// Caddy 2 (`tls internal`) in front of our servers for the HTTPS checks:
// dcr.test → a private registry, mir.test → a mirror of it, sick.test → a
// mirror whose upstream is down (/readyz 503), down.test → nothing (502).
import { rmSync, statfsSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, TEST_PASSWORD, TEST_USER, type TestServer } from '../helpers/server.ts';
import {
  type Caddy,
  type FakeContainer,
  type FakeDocker,
  freePort,
  runScript,
  startCaddy,
  startFakeDocker,
  startWebhookReceiver,
  tempDir,
  type WebhookReceiver,
} from './helpers.ts';

const MiB = 1024 * 1024;

let registry: TestServer;
let mirror: TestServer;
let sickMirror: TestServer;
let caddy: Caddy;
let hook: WebhookReceiver;
let dir: string;
let docker: FakeDocker | undefined;

function mirrorOf(url: string, port: number): Promise<TestServer> {
  return startTestServer({
    users: {},
    extra: { proxy: { upstreams: [{ host: `127.0.0.1:${port}`, url, username: TEST_USER, password: TEST_PASSWORD }] } },
  });
}

beforeAll(async () => {
  dir = tempDir('rs-monitor-');
  registry = await startTestServer();
  mirror = await mirrorOf(registry.url, registry.port);
  const deadPort = await freePort();
  sickMirror = await mirrorOf(`http://127.0.0.1:${deadPort}`, deadPort);
  const nothing = await freePort();
  caddy = await startCaddy([
    { names: ['dcr.test'], body: `tls internal\nreverse_proxy 127.0.0.1:${registry.port}` },
    { names: ['mir.test'], body: `tls internal\nreverse_proxy 127.0.0.1:${mirror.port}` },
    { names: ['sick.test'], body: `tls internal\nreverse_proxy 127.0.0.1:${sickMirror.port}` },
    { names: ['down.test'], body: `tls internal\nreverse_proxy 127.0.0.1:${nothing}` },
  ]);
  hook = await startWebhookReceiver();
});

afterAll(async () => {
  await docker?.close();
  await hook?.close();
  await caddy?.stop();
  await sickMirror?.stop();
  await mirror?.stop();
  await registry?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** A fresh fake Docker daemon holding `containers` (the previous one is closed). */
async function dockerWith(containers: FakeContainer[]): Promise<FakeDocker> {
  await docker?.close();
  docker = await startFakeDocker(containers);
  return docker;
}

const healthyStack = (): FakeContainer[] => [
  { id: 'c0ddee0000000000000000000000000000000000000000000000000000000001', name: 'caddy', state: 'running' },
  { id: 'a1b2c3d4e5f60000000000000000000000000000000000000000000000000002', name: 'registry', state: 'running', health: 'healthy', memoryBytes: 120 * MiB },
  { id: 'f6e5d4c3b2a10000000000000000000000000000000000000000000000000003', name: 'registry-cache', state: 'running', health: 'healthy', memoryBytes: 200 * MiB },
];

const url = (name: string) => `https://${name}:${caddy.httpsPort}`;
const resolve = (...names: string[]) => names.flatMap((n) => ['--resolve', `${n}:${caddy.httpsPort}:127.0.0.1`]);

describe('monitor: containers and memory (fake Docker Engine API)', () => {
  it('a healthy stack passes: exit 0, nothing restarted, no alert', async () => {
    const d = await dockerWith(healthyStack());
    hook.clear();
    const r = await runScript('monitor', ['--docker-socket', d.socketPath, '--skip', 'disk,http', '--alert-webhook', hook.url]);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    const containers = r.lines.filter((l) => l.fields.check === 'containers');
    expect(containers.map((l) => [l.fields.target, l.level])).toEqual([
      ['caddy', 'info'],
      ['registry', 'info'],
      ['registry-cache', 'info'],
    ]);
    const memory = r.lines.filter((l) => l.fields.check === 'memory');
    expect(memory.map((l) => [l.fields.target, l.fields.usedMiB])).toEqual([
      ['registry', 120],
      ['registry-cache', 200],
    ]);
    expect(d.restarts).toEqual([]);
    expect(d.requests.every((q) => !q.startsWith('POST'))).toBe(true);
    expect(r.summary.msg).toBe('all 5 checks passed');
    expect(hook.alerts).toEqual([]);
  });

  it('--dry-run reports an unhealthy, a stopped and a missing container, restarts nothing, and alerts', async () => {
    const stack = healthyStack();
    stack[1].health = 'unhealthy';
    stack[2].state = 'exited';
    const d = await dockerWith(stack);
    hook.clear();
    const r = await runScript('monitor', [
      '--docker-socket', d.socketPath,
      '--container', 'caddy,registry',
      '--container', 'registry-cache',
      '--container', 'worker',
      '--skip', 'disk', '--skip', 'http',
      '--dry-run',
      '--alert-webhook', hook.url,
    ]);
    expect(r.code).toBe(1);
    expect(d.restarts).toEqual([]);
    expect(d.requests.filter((q) => q.startsWith('POST'))).toEqual([]);
    const byTarget = Object.fromEntries(r.lines.filter((l) => l.fields.check === 'containers').map((l) => [l.fields.target, l]));
    expect(byTarget.caddy.level).toBe('info');
    expect(byTarget.registry.level).toBe('error');
    expect(byTarget.registry.msg).toBe('containers registry: unhealthy (dry run: would restart)');
    expect(byTarget['registry-cache'].msg).toMatch(/^containers registry-cache: exited .*\(dry run: would restart\)$/);
    expect(byTarget.worker.msg).toBe('containers worker: not found');
    expect(hook.alerts).toHaveLength(1);
    const { body } = hook.alerts[0];
    expect(body.script).toBe('monitor');
    expect(body.level).toBe('error');
    expect(body.summary).toMatch(/^3 of \d+ checks failed: /);
    expect(body.details.dryRun).toBe(true);
    expect(body.details.failures.map((f: any) => [f.target, f.action])).toEqual([
      ['registry', 'would restart'],
      ['registry-cache', 'would restart'],
      ['worker', undefined],
    ]);
  });

  it('restarts an unhealthy and a stopped container, unpauses a paused one, leaves a crash-looping one to Docker; alerts', async () => {
    const stack = healthyStack();
    stack[1].health = 'unhealthy';
    stack[2].state = 'exited';
    stack.push({ id: 'dd00000000000000000000000000000000000000000000000000000000000004', name: 'paused-one', state: 'paused' });
    stack.push({ id: 'ee00000000000000000000000000000000000000000000000000000000000005', name: 'looping', state: 'restarting' });
    const d = await dockerWith(stack);
    hook.clear();
    const r = await runScript(
      'monitor',
      ['--docker-socket', d.socketPath, '--container', 'caddy,registry,registry-cache,paused-one,looping', '--skip', 'disk,http', '--alert-webhook', hook.url],
    );
    expect(r.code).toBe(1);
    expect(d.restarts).toEqual([stack[1].id, stack[2].id]);
    expect(d.unpauses).toEqual([stack[3].id]);
    const byTarget = Object.fromEntries(r.lines.filter((l) => l.fields.check === 'containers').map((l) => [l.fields.target, l.fields]));
    expect(byTarget.registry).toMatchObject({ ok: false, action: 'restarted', stateAfter: 'running' });
    expect(byTarget['registry-cache']).toMatchObject({ ok: false, action: 'restarted', stateAfter: 'running' });
    expect(byTarget['paused-one']).toMatchObject({ ok: false, action: 'unpaused' });
    expect(byTarget.looping).toMatchObject({ ok: false });
    expect(byTarget.looping.action).toBeUndefined();
    expect(hook.alerts).toHaveLength(1);
    expect(hook.alerts[0].body.details.failures.map((f: any) => f.action)).toEqual(['restarted', 'restarted', 'unpaused', undefined]);
    expect(hook.alerts[0].body.summary).toContain('registry: unhealthy (restarted, now running)');

    // The next run finds them running again (health checks starting: a warning, not a failure).
    const next = await runScript('monitor', ['--docker-socket', d.socketPath, '--container', 'caddy,registry,registry-cache', '--skip', 'disk,http,memory']);
    expect(next.code, next.stdout).toBe(0);
    expect(next.lines.find((l) => l.fields.target === 'registry')?.level).toBe('warn');
    expect(d.restarts).toHaveLength(2);
  });

  it('a restart the daemon refuses is reported', async () => {
    const stack = healthyStack();
    stack[1].health = 'unhealthy';
    const d = await dockerWith(stack);
    d.failRestart = 500;
    const r = await runScript('monitor', ['--docker-socket', d.socketPath, '--skip', 'disk,http,memory']);
    expect(r.code).toBe(1);
    expect(r.lines.find((l) => l.fields.target === 'registry')?.msg).toMatch(/unhealthy \(restart failed: .*HTTP 500 cannot restart container/);
  });

  it('finds a container by its compose service label when no container has the name', async () => {
    const stack = healthyStack();
    stack[1].name = 'stack-registry-1';
    stack[1].labels = { 'com.docker.compose.service': 'registry' };
    const d = await dockerWith(stack);
    const r = await runScript('monitor', ['--docker-socket', d.socketPath, '--skip', 'disk,http']);
    expect(r.code, r.stdout).toBe(0);
  });

  it('memory: working set (usage minus inactive page cache) against --memory-threshold', async () => {
    const stack = healthyStack();
    stack[1].memoryBytes = 300 * MiB;
    stack[1].inactiveFileBytes = 250 * MiB; // working set 50 MiB
    stack[2].memoryBytes = 300 * MiB; // working set 300 MiB
    const d = await dockerWith(stack);
    hook.clear();
    const r = await runScript('monitor', ['--docker-socket', d.socketPath, '--skip', 'disk,http,containers', '--memory-threshold', '100'], {
      ALERT_WEBHOOK: hook.url,
    });
    expect(r.code).toBe(1);
    const mem = Object.fromEntries(r.lines.filter((l) => l.fields.check === 'memory').map((l) => [l.fields.target, l]));
    expect(mem.registry.level).toBe('info');
    expect(mem.registry.fields).toMatchObject({ usedMiB: 50, usageBytes: 300 * MiB });
    expect(mem['registry-cache'].level).toBe('error');
    expect(mem['registry-cache'].msg).toBe('memory registry-cache: 300 MiB ≥ 100 MiB');
    expect(d.restarts).toEqual([]);
    expect(hook.alerts).toHaveLength(1);
    expect(hook.alerts[0].body.summary).toBe('1 of 2 checks failed: memory registry-cache: 300 MiB ≥ 100 MiB');

    const ok = await runScript('monitor', ['--docker-socket', d.socketPath, '--skip', 'disk,http,containers'], { MONITOR_MEMORY_THRESHOLD: '512' });
    expect(ok.code).toBe(0);
  });

  it('an unreachable Docker socket is a failure', async () => {
    const r = await runScript('monitor', ['--docker-socket', `${dir}/no-such.sock`, '--skip', 'disk,http']);
    expect(r.code).toBe(1);
    expect(r.summary.msg).toMatch(/Docker API unreachable: .*ENOENT/);
  });

  it('reads the socket from DOCKER_HOST=unix://… when --docker-socket is not given', async () => {
    const d = await dockerWith(healthyStack());
    const r = await runScript('monitor', ['--skip', 'disk,http'], { DOCKER_HOST: `unix://${d.socketPath}` });
    expect(r.code, r.stdout).toBe(0);
    expect(d.requests.length).toBeGreaterThan(0);
  });
});

describe('monitor: disk usage (statfs)', () => {
  it('passes under the threshold and fails at or above it', async () => {
    const s = statfsSync(dir);
    const usedPct = ((s.blocks - s.bfree) / (s.blocks - s.bfree + s.bavail)) * 100;
    const inodesPct = s.files > 0 ? ((s.files - s.ffree) / s.files) * 100 : 0;
    const worst = Math.max(usedPct, inodesPct);
    expect(worst).toBeGreaterThan(0.02);

    const ok = await runScript('monitor', ['--skip', 'containers,memory,http', '--path', dir, '--disk-threshold', '100']);
    expect(ok.code, ok.stdout).toBe(0);
    const line = ok.lines.find((l) => l.fields.check === 'disk');
    expect(line?.fields.target).toBe(dir);
    expect(line?.fields.usedPercent).toBeCloseTo(usedPct, 0);

    hook.clear();
    const threshold = (worst / 2).toFixed(2);
    const bad = await runScript('monitor', ['--skip', 'containers,memory,http', '--alert-webhook', hook.url], {
      MONITOR_PATHS: `${dir},${dir}/nope`,
      MONITOR_DISK_THRESHOLD: threshold,
    });
    expect(bad.code).toBe(1);
    const disk = bad.lines.filter((l) => l.fields.check === 'disk');
    expect(disk).toHaveLength(2);
    expect(disk[0].level).toBe('error');
    // The threshold as the script prints it: a number (13.20 → "13.2").
    expect(disk[0].msg).toMatch(new RegExp(`≥ ${String(Number(threshold)).replace('.', '\\.')}%`));
    expect(disk[1].msg).toMatch(/statfs failed: .*ENOENT/);
    expect(hook.alerts).toHaveLength(1);
    expect(hook.alerts[0].body.details.failures.map((f: any) => f.target)).toEqual([dir, `${dir}/nope`]);
  });
});

describe('monitor: /v2/ and /readyz over HTTPS through Caddy', () => {
  it('both hosts answer: exit 0', async () => {
    const r = await runScript('monitor', [
      '--skip', 'containers,memory,disk',
      '--url', url('dcr.test'),
      '--url', url('mir.test'),
      ...resolve('dcr.test', 'mir.test'),
      '--ca-file', caddy.rootCaFile,
    ]);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    const http = r.lines.filter((l) => l.fields.check === 'http');
    expect(http.map((l) => [l.fields.target, l.fields.status])).toEqual([
      [`${url('dcr.test')}/v2/`, 401],
      [`${url('dcr.test')}/readyz`, 200],
      [`${url('mir.test')}/v2/`, 200],
      [`${url('mir.test')}/readyz`, 200],
    ]);
    expect(r.summary.msg).toBe('all 4 checks passed');
  });

  it('a mirror whose upstream is down is not ready (503), a dead backend is a 502, and both alert', async () => {
    hook.clear();
    const r = await runScript('monitor', [
      '--skip', 'containers,memory,disk',
      '--url', url('sick.test'),
      '--url', url('down.test'),
      ...resolve('sick.test', 'down.test'),
      '--ca-file', caddy.rootCaFile,
      '--alert-webhook', hook.url,
    ]);
    expect(r.code).toBe(1);
    const byTarget = Object.fromEntries(r.lines.filter((l) => l.fields.check === 'http').map((l) => [l.fields.target, l]));
    expect(byTarget[`${url('sick.test')}/v2/`].level).toBe('info');
    const sick = byTarget[`${url('sick.test')}/readyz`];
    expect(sick.level).toBe('error');
    expect(sick.fields.status).toBe(503);
    expect(sick.msg).toMatch(/HTTP 503: failing: upstream:127\.0\.0\.1:\d+ \(unreachable\)/);
    expect(byTarget[`${url('down.test')}/v2/`].fields.status).toBe(502);
    expect(byTarget[`${url('down.test')}/readyz`].fields.status).toBe(502);
    expect(hook.alerts).toHaveLength(1);
    expect(hook.alerts[0].body.details.failures).toHaveLength(3);
  });

  it('verifies certificates: without --ca-file the local CA is not trusted', async () => {
    const r = await runScript('monitor', ['--skip', 'containers,memory,disk', '--url', url('dcr.test'), ...resolve('dcr.test')]);
    expect(r.code).toBe(1);
    const http = r.lines.filter((l) => l.fields.check === 'http');
    expect(http).toHaveLength(2);
    for (const l of http) expect(l.msg).toMatch(/certificate|self.signed|UNABLE_TO_VERIFY|issuer/i);
  });

  it('env fallbacks: MONITOR_URLS, MONITOR_RESOLVE, MONITOR_CA_FILE, MONITOR_SKIP', async () => {
    const r = await runScript('monitor', [], {
      MONITOR_URLS: `${url('dcr.test')},${url('mir.test')}`,
      MONITOR_RESOLVE: `dcr.test:${caddy.httpsPort}:127.0.0.1,mir.test:${caddy.httpsPort}:127.0.0.1`,
      MONITOR_CA_FILE: caddy.rootCaFile,
      MONITOR_SKIP: 'containers,memory,disk',
    });
    expect(r.code, r.stdout).toBe(0);
    expect(r.lines.filter((l) => l.fields.check === 'http')).toHaveLength(4);
  });
});

describe('monitor: everything at once', () => {
  it("runs with no flags from the stack's OPS_* env file, as infra's cron job does", async () => {
    const d = await dockerWith(healthyStack());
    hook.clear();
    const r = await runScript('monitor', ['--ca-file', caddy.rootCaFile, ...resolve('dcr.test', 'mir.test')], {
      OPS_PRIVATE_URL: url('dcr.test'),
      OPS_MIRROR_URL: url('mir.test'),
      OPS_CONTAINERS: 'caddy,registry,registry-cache',
      OPS_DATA_DIRS: `${dir},${dir}`,
      OPS_DISK_THRESHOLD_PERCENT: '0.01',
      OPS_DOCKER_SOCKET: d.socketPath,
      OPS_ALERT_WEBHOOK: hook.url,
    });
    // Everything passes but the disk check, whose threshold came from OPS_DISK_THRESHOLD_PERCENT.
    expect(r.code).toBe(1);
    const failed = r.lines.filter((l) => l.level === 'error' && l.fields.check);
    expect(failed.map((l) => l.fields.check)).toEqual(['disk', 'disk']);
    expect(r.lines.filter((l) => l.fields.check === 'http')).toHaveLength(4);
    expect(r.lines.filter((l) => l.fields.check === 'containers')).toHaveLength(3);
    expect(d.requests.length).toBeGreaterThan(0);
    expect(hook.alerts).toHaveLength(1);
    // MONITOR_* (and flags) win over OPS_*.
    const r2 = await runScript('monitor', ['--skip', 'containers,memory,http', '--disk-threshold', '100'], {
      OPS_DATA_DIRS: dir,
      OPS_DISK_THRESHOLD_PERCENT: '0.01',
    });
    expect(r2.code, r2.stdout).toBe(0);
  });


  it('one run covers containers, memory, disk and both hosts', async () => {
    const d = await dockerWith(healthyStack());
    const r = await runScript('monitor', [
      '--docker-socket', d.socketPath,
      '--path', dir,
      '--disk-threshold', '100',
      '--url', url('dcr.test'),
      '--url', url('mir.test'),
      ...resolve('dcr.test', 'mir.test'),
      '--ca-file', caddy.rootCaFile,
    ]);
    expect(r.code, r.stdout).toBe(0);
    expect(new Set(r.lines.map((l) => l.fields.check).filter(Boolean))).toEqual(new Set(['containers', 'memory', 'disk', 'http']));
    expect(r.summary.msg).toBe('all 10 checks passed');
  });
});
