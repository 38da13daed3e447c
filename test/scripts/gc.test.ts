// scripts/gc.ts against our server's admin listener: a private registry with
// an unreferenced layer, and a mirror; dry run, real run, token handling,
// one instance down.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADMIN_TOKEN, type AdminServer, bigImage, blobOnDisk, clientFor, pull, startMirrorOf, startPrivate } from './admin-servers.ts';
import { freePort, runScript, startWebhookReceiver, type WebhookReceiver } from './helpers.ts';
import type { Image } from '../helpers/oci.ts';

let priv: AdminServer;
let mirror: AdminServer;
let hook: WebhookReceiver;
let keep: Image;
let drop: Image;
let tokenDir: string;

beforeAll(async () => {
  priv = await startPrivate();
  mirror = await startMirrorOf(priv, {});
  hook = await startWebhookReceiver();
  tokenDir = mkdtempSync(path.join(tmpdir(), 'rs-gc-token-'));
  const c = clientFor(priv);
  keep = bigImage(64 * 1024);
  drop = bigImage(256 * 1024);
  await c.pushImage('app', 'keep', keep);
  await c.pushImage('app', 'drop', drop);
  // Untag "drop" by deleting its manifest: its layer and config are now garbage.
  const del = await c.req(`/v2/app/manifests/${drop.manifest.digest}`, { method: 'DELETE' });
  expect(del.status).toBe(202);
});

afterAll(async () => {
  await hook?.close();
  await mirror?.stop();
  await priv?.stop();
  if (tokenDir) rmSync(tokenDir, { recursive: true, force: true });
});

describe('gc', () => {
  it('--dry-run reports what would be freed on each instance and deletes nothing', async () => {
    const r = await runScript('gc', ['--admin-url', `private=${priv.adminUrl}`, '--admin-url', `mirror=${mirror.adminUrl}`, '--token', ADMIN_TOKEN, '--dry-run']);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    const done = r.lines.filter((l) => l.msg === 'garbage collection dry run done');
    expect(done.map((l) => l.fields.instance)).toEqual(['private', 'mirror']);
    const p = done[0].fields;
    expect(p.dryRun).toBe(true);
    expect(p.blobsDeleted).toBeGreaterThanOrEqual(2);
    expect(p.bytesFreed).toBeGreaterThanOrEqual(drop.layers[0].size);
    expect(done[1].fields.bytesFreed).toBe(0);
    expect(blobOnDisk(priv, drop.layers[0].digest)).toBe(true);
    expect(r.summary.level).toBe('info');
    expect(r.summary.msg).toMatch(/private would free .*; mirror would free 0 B/);
    expect(r.summary.fields.alert).toBe('none');
    expect(r.stdout).not.toContain(ADMIN_TOKEN);
  });

  it('collects garbage and reports the bytes freed; tagged images still pull', async () => {
    const r = await runScript('gc', ['--admin-url', `private=${priv.adminUrl},mirror=${mirror.adminUrl}`], { REGISTRY_ADMIN_TOKEN: ADMIN_TOKEN });
    expect(r.code, r.stdout + r.stderr).toBe(0);
    const p = r.lines.find((l) => l.msg === 'garbage collection done' && l.fields.instance === 'private');
    expect(p?.fields.dryRun).toBe(false);
    expect(p?.fields.bytesFreed).toBeGreaterThanOrEqual(drop.layers[0].size);
    expect(r.summary.fields.bytesFreed).toBe(p?.fields.bytesFreed);
    expect(blobOnDisk(priv, drop.layers[0].digest)).toBe(false);
    expect(blobOnDisk(priv, drop.config.digest)).toBe(false);
    expect(blobOnDisk(priv, keep.layers[0].digest)).toBe(true);
    expect(await pull(priv, 'app', 'keep', keep)).toEqual([200, 200, 200]);

    // Nothing left to collect.
    const again = await runScript('gc', ['--admin-url', `private=${priv.adminUrl}`, '--token', ADMIN_TOKEN]);
    expect(again.code).toBe(0);
    expect(again.lines.find((l) => l.msg === 'garbage collection done')?.fields.bytesFreed).toBe(0);
  });

  it('reads the token from --token-file', async () => {
    const file = path.join(tokenDir, 'admin-token');
    writeFileSync(file, `${ADMIN_TOKEN}\n`, { mode: 0o600 });
    const r = await runScript('gc', ['--admin-url', priv.adminUrl, '--token-file', file, '--dry-run']);
    expect(r.code, r.stdout).toBe(0);
  });

  it("runs with no flags from the stack's OPS_* env file, as infra's cron job does", async () => {
    const r = await runScript('gc', ['--dry-run'], {
      OPS_PRIVATE_ADMIN_URL: priv.adminUrl,
      OPS_MIRROR_ADMIN_URL: mirror.adminUrl,
      OPS_ADMIN_TOKEN: ADMIN_TOKEN,
    });
    expect(r.code, r.stdout).toBe(0);
    expect(r.lines.filter((l) => l.msg === 'garbage collection started').map((l) => l.fields.instance)).toEqual(['private', 'mirror']);
  });

  it('token precedence: --token, then --token-file, then REGISTRY_ADMIN_TOKEN(_FILE), then OPS_ADMIN_TOKEN', async () => {
    const good = path.join(tokenDir, 'good');
    const bad = path.join(tokenDir, 'bad');
    writeFileSync(good, ADMIN_TOKEN);
    writeFileSync(bad, 'not-the-token');
    const run = async (args: string[], env: Record<string, string>) =>
      (await runScript('gc', ['--admin-url', priv.adminUrl, '--dry-run', ...args], env)).code;
    expect(await run(['--token', ADMIN_TOKEN], { OPS_ADMIN_TOKEN: 'nope', REGISTRY_ADMIN_TOKEN: 'nope' })).toBe(0);
    expect(await run(['--token-file', good], { REGISTRY_ADMIN_TOKEN: 'nope', OPS_ADMIN_TOKEN: 'nope' })).toBe(0);
    expect(await run([], { REGISTRY_ADMIN_TOKEN: ADMIN_TOKEN, REGISTRY_ADMIN_TOKEN_FILE: bad, OPS_ADMIN_TOKEN: 'nope' })).toBe(0);
    expect(await run([], { REGISTRY_ADMIN_TOKEN_FILE: good, OPS_ADMIN_TOKEN: 'nope' })).toBe(0);
    expect(await run([], { OPS_ADMIN_TOKEN: ADMIN_TOKEN })).toBe(0);
    expect(await run(['--token-file', bad], { REGISTRY_ADMIN_TOKEN: ADMIN_TOKEN })).toBe(1);
  });

  it('a refused token fails the instance, alerts, and never shows the token or the webhook secret', async () => {
    hook.clear();
    const wrong = 'wrong-token-0123456789';
    const r = await runScript('gc', ['--admin-url', `private=${priv.adminUrl}`, '--token', wrong, '--alert-webhook', hook.url]);
    expect(r.code).toBe(1);
    const failed = r.lines.find((l) => l.msg === 'garbage collection failed');
    expect(failed?.fields.status).toBe(401);
    expect(failed?.fields.error).toMatch(/unauthorized/);
    expect(r.stdout).not.toContain(wrong);
    expect(r.stdout).not.toContain(hook.secret);
    expect(r.lines.find((l) => l.msg === 'alert sent')?.fields.webhook).toBe(`${new URL(hook.url).origin}/…`);
    expect(r.summary.fields.alert).toBe('sent');
    expect(hook.alerts).toHaveLength(1);
    const { body, path: hookPath } = hook.alerts[0];
    expect(hookPath).toBe(new URL(hook.url).pathname);
    expect(body.script).toBe('gc');
    expect(body.level).toBe('error');
    expect(body.summary).toMatch(/gc failed on 1 of 1 instance\(s\): private FAILED: unauthorized/);
    expect(body.details.failures).toEqual([expect.objectContaining({ instance: 'private', status: 401 })]);
    expect(JSON.stringify(body)).not.toContain(wrong);
  });

  it('without a token the server answers 401 and the script says how to give one', async () => {
    const r = await runScript('gc', ['--admin-url', priv.adminUrl]);
    expect(r.code).toBe(1);
    expect(r.summary.msg).toMatch(/set --token or REGISTRY_ADMIN_TOKEN/);
  });

  it('one instance down: the others are still collected, and the run fails', async () => {
    hook.clear();
    const dead = `http://127.0.0.1:${await freePort()}`;
    const r = await runScript('gc', ['--admin-url', `down=${dead}`, '--admin-url', `private=${priv.adminUrl}`, '--token', ADMIN_TOKEN], {
      ALERT_WEBHOOK: hook.url,
    });
    expect(r.code).toBe(1);
    expect(r.lines.find((l) => l.msg === 'garbage collection failed')?.fields).toMatchObject({ instance: 'down', error: expect.stringMatching(/unreachable: .*ECONNREFUSED/) });
    expect(r.lines.find((l) => l.msg === 'garbage collection done')?.fields.instance).toBe('private');
    expect(r.summary.msg).toMatch(/gc failed on 1 of 2 instance\(s\)/);
    expect(hook.alerts).toHaveLength(1);
    expect(hook.alerts[0].body.details.instances).toEqual([
      expect.objectContaining({ instance: 'down', ok: false }),
      expect.objectContaining({ instance: 'private', ok: true }),
    ]);
  });

  it('a webhook that refuses the alert is logged (without its URL) and the run still fails', async () => {
    hook.clear();
    hook.status = 500;
    try {
      const r = await runScript('gc', ['--admin-url', `http://127.0.0.1:${await freePort()}`, '--alert-webhook', hook.url]);
      expect(r.code).toBe(1);
      const line = r.lines.find((l) => l.msg === 'alert webhook refused the alert');
      expect(line?.fields).toMatchObject({ status: 500 });
      expect(r.summary.fields.alert).toBe('failed');
      expect(r.stdout).not.toContain(hook.secret);
    } finally {
      hook.status = 200;
    }
  });
});
