// scripts/renew-cert.ts against a real Caddy 2: `tls internal` sites (12-hour
// certificates from Caddy's local CA) and a site with certificate files the
// test controls, to see a reload pick up a renewed certificate.
import { execFile } from 'node:child_process';
import { copyFileSync, rmSync } from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type Caddy,
  freePort,
  makeTestCa,
  runScript,
  servedCertNotAfter,
  startCaddy,
  startFakeDocker,
  startWebhookReceiver,
  type TestCa,
  tempDir,
  type WebhookReceiver,
} from './helpers.ts';

let caddy: Caddy;
let hook: WebhookReceiver;
let ca: TestCa;
let certDir: string;
/** Site names served from files: each scenario gets its own, so Caddy's certificate cache starts clean. */
const FILE_SITES = ['renewed.test', 'stuck.test', 'exec.test'];

beforeAll(async () => {
  certDir = tempDir('rs-renew-certs-');
  ca = makeTestCa(certDir);
  // The served files start as 1-day certificates: under any sensible threshold.
  for (const name of FILE_SITES) {
    const short = ca.issue(name, 1, path.join(certDir, `${name}-short`));
    copyFileSync(short.certFile, path.join(certDir, `${name}.crt`));
    copyFileSync(short.keyFile, path.join(certDir, `${name}.key`));
  }
  caddy = await startCaddy([
    { names: ['dcr.test', 'mir.test'], body: 'tls internal\nrespond "ok"' },
    ...FILE_SITES.map((name) => ({
      names: [name],
      body: `tls ${path.join(certDir, `${name}.crt`)} ${path.join(certDir, `${name}.key`)}\nrespond "ok"`,
    })),
  ]);
  hook = await startWebhookReceiver();
});

afterAll(async () => {
  await hook?.close();
  await caddy?.stop();
  if (certDir) rmSync(certDir, { recursive: true, force: true });
});

const connectTo = () => `127.0.0.1:${caddy.httpsPort}`;
const hosts = (...names: string[]) => names.flatMap((n) => ['--host', `${n}:${caddy.httpsPort}`]);

describe('renew-cert', () => {
  it('passes when every certificate has more days left than the threshold, and leaves Caddy alone', async () => {
    hook.clear();
    const loadsBefore = caddy.loads();
    // Caddy's internal certificates live 12 hours: 0.1 days (2.4 h) is comfortably below.
    const r = await runScript('renew-cert', [
      ...hosts('dcr.test', 'mir.test'),
      '--connect-to', connectTo(),
      '--ca-file', caddy.rootCaFile,
      '--caddy-admin', caddy.adminUrl,
      '--days', '0.1',
      '--alert-webhook', hook.url,
    ]);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    const checks = r.lines.filter((l) => l.fields.phase === 'check');
    expect(checks.map((l) => l.fields.host).sort()).toEqual([`dcr.test:${caddy.httpsPort}`, `mir.test:${caddy.httpsPort}`]);
    for (const c of checks) {
      expect(c.level).toBe('info');
      expect(c.fields.trusted).toBe(true);
      expect(c.fields.nameMatches).toBe(true);
      expect(c.fields.daysLeft).toBeGreaterThan(0.1);
      expect(c.fields.daysLeft).toBeLessThanOrEqual(0.5);
      expect(c.fields.issuer).toContain('Caddy Local Authority');
    }
    expect(r.summary.level).toBe('info');
    expect(caddy.loads()).toBe(loadsBefore);
    expect(hook.alerts).toEqual([]);
  });

  it('fails on a certificate it cannot trust, without --ca-file', async () => {
    const r = await runScript('renew-cert', [...hosts('dcr.test'), '--connect-to', connectTo(), '--caddy-admin', caddy.adminUrl, '--days', '0.1', '--wait', '0']);
    expect(r.code).toBe(1);
    const check = r.lines.find((l) => l.fields.phase === 'check');
    expect(check?.fields.trusted).toBe(false);
    expect(check?.msg).toMatch(/not trusted/);
  });

  it('--dry-run reports a certificate under the threshold and alerts, without touching Caddy', async () => {
    hook.clear();
    const loadsBefore = caddy.loads();
    const r = await runScript('renew-cert', [
      ...hosts('dcr.test', 'mir.test'),
      '--connect-to', connectTo(),
      '--ca-file', caddy.rootCaFile,
      '--caddy-admin', caddy.adminUrl,
      '--days', '14',
      '--dry-run',
      '--alert-webhook', hook.url,
    ]);
    expect(r.code).toBe(1);
    expect(r.lines.some((l) => l.msg.includes('dry run: would ask Caddy to reload'))).toBe(true);
    expect(caddy.loads()).toBe(loadsBefore);
    expect(hook.alerts).toHaveLength(1);
    const alert = hook.alerts[0];
    expect(alert.method).toBe('POST');
    expect(alert.contentType).toMatch(/^application\/json/);
    expect(Object.keys(alert.body).sort()).toEqual(['details', 'level', 'script', 'summary']);
    expect(alert.body.script).toBe('renew-cert');
    expect(alert.body.level).toBe('error');
    expect(alert.body.summary).toContain(`dcr.test:${caddy.httpsPort}`);
    expect(alert.body.summary).toContain('days left < 14');
    expect(alert.body.details.dryRun).toBe(true);
    expect(alert.body.details.hosts).toHaveLength(2);
    expect(r.stdout).not.toContain(hook.secret);
  });

  it('asks Caddy to reload when under the threshold, and alerts when the certificate is still not renewed', async () => {
    hook.clear();
    const loadsBefore = caddy.loads();
    // 14 days: a 12-hour internal certificate can never satisfy it, however often Caddy reloads.
    const r = await runScript('renew-cert', [
      ...hosts('dcr.test'),
      '--connect-to', connectTo(),
      '--ca-file', caddy.rootCaFile,
      '--caddy-admin', caddy.adminUrl,
      '--days', '14',
      '--wait', '1',
      '--alert-webhook', hook.url,
    ]);
    expect(r.code).toBe(1);
    expect(caddy.loads()).toBe(loadsBefore + 1);
    // Cache-Control: must-revalidate: Caddy really reloads the unchanged config.
    expect(caddy.unchangedSkips()).toBe(0);
    expect(r.lines.some((l) => l.msg === 'Caddy reloaded')).toBe(true);
    const recheck = r.lines.filter((l) => l.fields.phase === 'recheck');
    expect(recheck.length).toBeGreaterThan(0);
    expect(recheck.every((l) => l.level === 'error')).toBe(true);
    expect(r.summary.msg).toMatch(/still failing after the Caddy reload/);
    expect(hook.alerts).toHaveLength(1);
    expect(hook.alerts[0].body.level).toBe('error');
    expect(hook.alerts[0].body.summary).toMatch(/still failing/);
    expect(hook.alerts[0].body.details.reload).toEqual({ ok: true });
  });

  it('a reload that makes Caddy serve a renewed certificate clears the failure (exit 0, warning alert)', async () => {
    hook.clear();
    const name = 'renewed.test';
    expect((await servedCertNotAfter(caddy.httpsPort, name)).getTime() - Date.now()).toBeLessThan(2 * 86_400_000);
    // The renewed certificate is on disk, but Caddy keeps serving the one it
    // loaded until its config is loaded again (as with a renewal that did not
    // get picked up).
    const long = ca.issue(name, 90, path.join(certDir, `${name}-long`));
    copyFileSync(long.certFile, path.join(certDir, `${name}.crt`));
    copyFileSync(long.keyFile, path.join(certDir, `${name}.key`));
    expect((await servedCertNotAfter(caddy.httpsPort, name)).getTime() - Date.now()).toBeLessThan(2 * 86_400_000);

    const loadsBefore = caddy.loads();
    const r = await runScript('renew-cert', [
      ...hosts(name),
      '--connect-to', connectTo(),
      '--ca-file', ca.certFile,
      '--caddy-admin', caddy.adminUrl,
      '--days', '14',
      '--wait', '20',
      '--alert-webhook', hook.url,
    ]);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(caddy.loads()).toBe(loadsBefore + 1);
    expect(caddy.unchangedSkips()).toBe(0);
    const first = r.lines.find((l) => l.fields.phase === 'check');
    expect(first?.level).toBe('error');
    expect(first?.fields.daysLeft).toBeLessThan(2);
    const recheck = r.lines.filter((l) => l.fields.phase === 'recheck');
    expect(recheck.at(-1)?.level).toBe('info');
    expect(recheck.at(-1)?.fields.daysLeft).toBeGreaterThan(80);
    expect(r.summary.msg).toMatch(/renewed after a Caddy reload/);
    expect((await servedCertNotAfter(caddy.httpsPort, name)).getTime() - Date.now()).toBeGreaterThan(80 * 86_400_000);
    expect(hook.alerts).toHaveLength(1);
    expect(hook.alerts[0].body.level).toBe('warning');
    expect(hook.alerts[0].body.details.renewed).toEqual([`${name}:${caddy.httpsPort}`]);
  });

  it('alerts when Caddy\'s admin API cannot be reached', async () => {
    hook.clear();
    const deadPort = await freePort();
    const r = await runScript('renew-cert', [
      ...hosts('stuck.test'),
      '--connect-to', connectTo(),
      '--ca-file', ca.certFile,
      '--caddy-admin', `127.0.0.1:${deadPort}`,
      '--days', '14',
      '--alert-webhook', hook.url,
    ]);
    expect(r.code).toBe(1);
    expect(r.lines.some((l) => l.msg === 'Caddy reload failed' && /ECONNREFUSED/.test(l.fields.error))).toBe(true);
    expect(hook.alerts).toHaveLength(1);
    expect(hook.alerts[0].body.summary).toMatch(/Caddy reload failed/);
  });

  it('an unreachable host fails without a reload', async () => {
    hook.clear();
    const loadsBefore = caddy.loads();
    const deadPort = await freePort();
    const r = await runScript('renew-cert', [
      '--host', 'dcr.test',
      '--connect-to', `127.0.0.1:${deadPort}`,
      '--caddy-admin', caddy.adminUrl,
      '--alert-webhook', hook.url,
    ]);
    expect(r.code).toBe(1);
    expect(r.summary.msg).toMatch(/TLS connection failed: .*ECONNREFUSED/);
    expect(caddy.loads()).toBe(loadsBefore);
    expect(hook.alerts).toHaveLength(1);
  });

  it('in the deployed layout (OPS_* env, Caddy in a container) reloads through docker exec caddy reload --force', async () => {
    hook.clear();
    const name = 'exec.test';
    const long = ca.issue(name, 90, path.join(certDir, `${name}-long`));
    copyFileSync(long.certFile, path.join(certDir, `${name}.crt`));
    copyFileSync(long.keyFile, path.join(certDir, `${name}.key`));
    expect((await servedCertNotAfter(caddy.httpsPort, name)).getTime() - Date.now()).toBeLessThan(2 * 86_400_000);
    // The "container" is this host: the fake daemon runs the exec'd command here, against the test's Caddy.
    const docker = await startFakeDocker([{ id: 'cad0000000000000000000000000000000000000000000000000000000000001', name: 'caddy', state: 'running' }]);
    docker.onExec = (_c, cmd) =>
      new Promise((resolve) => {
        execFile(cmd[0], cmd.slice(1), { env: caddy.env }, (err, stdout, stderr) => {
          resolve({ exitCode: err ? Number((err as NodeJS.ErrnoException).code ?? 1) || 1 : 0, output: stdout + stderr });
        });
      });
    try {
      const loadsBefore = caddy.loads();
      const r = await runScript('renew-cert', ['--connect-to', connectTo(), '--ca-file', ca.certFile, '--caddy-config', caddy.caddyfile, '--wait', '20'], {
        OPS_PRIVATE_URL: `https://${name}:${caddy.httpsPort}`,
        OPS_CADDY_CONTAINER: 'caddy',
        OPS_DOCKER_SOCKET: docker.socketPath,
        OPS_CERT_MIN_DAYS: '14',
        OPS_ALERT_WEBHOOK: hook.url,
      });
      expect(r.code, r.stdout + r.stderr).toBe(0);
      expect(docker.execs).toEqual([
        { container: 'caddy', cmd: ['caddy', 'reload', '--config', caddy.caddyfile, '--adapter', 'caddyfile', '--force'] },
      ]);
      expect(r.lines.find((l) => l.msg === 'Caddy reloaded')?.fields).toMatchObject({ caddyContainer: 'caddy' });
      expect(caddy.loads()).toBe(loadsBefore + 1);
      expect(caddy.unchangedSkips()).toBe(0);
      expect((await servedCertNotAfter(caddy.httpsPort, name)).getTime() - Date.now()).toBeGreaterThan(80 * 86_400_000);
      expect(hook.alerts.map((a) => a.body.level)).toEqual(['warning']);
      expect(r.stdout).not.toContain(hook.secret);

      // A failing exec (here: no caddy binary in the "container") is a failed reload.
      docker.onExec = undefined;
      const failed = await runScript('renew-cert', ['--host', `stuck.test:${caddy.httpsPort}`, '--connect-to', connectTo(), '--ca-file', ca.certFile, '--caddy-container', 'caddy', '--docker-socket', docker.socketPath]);
      expect(failed.code).toBe(1);
      expect(failed.lines.find((l) => l.msg === 'Caddy reload failed')?.fields.error).toMatch(/exit 127: exec: "caddy": executable file not found/);
    } finally {
      await docker.close();
    }
  });

  it("reaches Caddy's admin API on a unix socket (CADDY_ADMIN=unix//path, as Caddy itself reads it)", async () => {
    const sockCaddy = await startCaddy([{ names: ['sock.test'], body: 'tls internal\nrespond "ok"' }], { adminSocket: true });
    try {
      expect(sockCaddy.adminUrl).toMatch(/^unix\//);
      const r = await runScript(
        'renew-cert',
        ['--host', `sock.test:${sockCaddy.httpsPort}`, '--connect-to', `127.0.0.1:${sockCaddy.httpsPort}`, '--ca-file', sockCaddy.rootCaFile, '--days', '14', '--wait', '0'],
        { CADDY_ADMIN: sockCaddy.adminUrl },
      );
      expect(r.code).toBe(1);
      expect(r.lines.some((l) => l.msg === 'Caddy reloaded')).toBe(true);
      expect(sockCaddy.loads()).toBe(1);
      expect(sockCaddy.unchangedSkips()).toBe(0);
      expect(r.summary.msg).toMatch(/still failing after the Caddy reload/);
    } finally {
      await sockCaddy.stop();
    }
  });

  it('needs at least one --host (usage error, exit 2)', async () => {
    const r = await runScript('renew-cert', ['--days', '3']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--host/);
    expect(r.lines).toEqual([]);
  });
});
