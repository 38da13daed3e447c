// scripts/prune.ts against a real mirror (our server, pulling through from
// one of our private servers) whose policy evicts everything: dry run, real
// run, and a private registry refusing to prune (409).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADMIN_TOKEN, type AdminServer, bigImage, blobOnDisk, clientFor, pull, startMirrorOf, startPrivate } from './admin-servers.ts';
import { runScript, startWebhookReceiver, type WebhookReceiver } from './helpers.ts';
import type { Image } from '../helpers/oci.ts';

let upstream: AdminServer;
let mirror: AdminServer;
let hook: WebhookReceiver;
let image: Image;

beforeAll(async () => {
  upstream = await startPrivate();
  // maxsize 1 byte: whatever is cached is over the limit, so the prune evicts it all (no clocks involved).
  mirror = await startMirrorOf(upstream, { maxsize: 1 });
  hook = await startWebhookReceiver();
  image = bigImage(128 * 1024);
  await clientFor(upstream).pushImage('team/app', '1.0', image);
  // Pull through the mirror: it caches the manifest, the config and the layer.
  expect(await pull(mirror, 'team/app', '1.0', image)).toEqual([200, 200, 200]);
  for (let i = 0; i < 50 && !blobOnDisk(mirror, image.layers[0].digest); i++) await new Promise((r) => setTimeout(r, 100));
  expect(blobOnDisk(mirror, image.layers[0].digest)).toBe(true);
});

afterAll(async () => {
  await hook?.close();
  await mirror?.stop();
  await upstream?.stop();
});

describe('prune', () => {
  it('--dry-run reports what the policy would evict and deletes nothing', async () => {
    const r = await runScript('prune', ['--admin-url', `mirror=${mirror.adminUrl}`, '--token', ADMIN_TOKEN, '--dry-run']);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    const done = r.lines.find((l) => l.msg === 'cache prune dry run done');
    expect(done?.fields).toMatchObject({ instance: 'mirror', dryRun: true, tagsDeleted: 1, manifestsDeleted: 1, cacheBytes: 0 });
    expect(done?.fields.bytesFreed).toBeGreaterThanOrEqual(image.layers[0].size);
    expect(blobOnDisk(mirror, image.layers[0].digest)).toBe(true);
    expect(r.summary.msg).toMatch(/^prune dry run done: mirror would free .* \(1 tags, \d+ blobs; cache now 0 B\)$/);
  });

  it("with the stack's OPS_* env file it prunes the mirror only", async () => {
    const r = await runScript('prune', ['--dry-run'], {
      OPS_PRIVATE_ADMIN_URL: upstream.adminUrl,
      OPS_MIRROR_ADMIN_URL: mirror.adminUrl,
      OPS_ADMIN_TOKEN: ADMIN_TOKEN,
    });
    expect(r.code, r.stdout).toBe(0);
    expect(r.lines.filter((l) => l.msg === 'cache prune started').map((l) => l.fields.instance)).toEqual(['mirror']);
  });

  it('prunes the cache with the configured policy and reports the bytes freed', async () => {
    const r = await runScript('prune', ['--admin-url', `mirror=${mirror.adminUrl}`], { REGISTRY_ADMIN_TOKEN: ADMIN_TOKEN, ALERT_WEBHOOK: hook.url });
    expect(r.code, r.stdout + r.stderr).toBe(0);
    const done = r.lines.find((l) => l.msg === 'cache prune done');
    expect(done?.fields).toMatchObject({ dryRun: false, tagsDeleted: 1, manifestsDeleted: 1, cacheBytes: 0 });
    expect(done?.fields.blobsDeleted).toBeGreaterThanOrEqual(2);
    expect(done?.fields.bytesFreed).toBeGreaterThanOrEqual(image.layers[0].size);
    expect(blobOnDisk(mirror, image.layers[0].digest)).toBe(false);
    expect(blobOnDisk(mirror, image.config.digest)).toBe(false);
    expect(hook.alerts).toEqual([]);
    // The upstream still has it, so the mirror fetches it again on the next pull.
    expect(await pull(mirror, 'team/app', '1.0', image)).toEqual([200, 200, 200]);
  });

  it('says what the grace period keeps: the blobs of evicted manifests, and when a prune frees them', async () => {
    const young = await startMirrorOf(upstream, { maxsize: 1 }, { graceperiod: '1h' });
    try {
      expect(await pull(young, 'team/app', '1.0', image)).toEqual([200, 200, 200]);
      for (let i = 0; i < 50 && !blobOnDisk(young, image.layers[0].digest); i++) await new Promise((r) => setTimeout(r, 100));
      const r = await runScript('prune', ['--admin-url', `mirror=${young.adminUrl}`, '--token', ADMIN_TOKEN]);
      expect(r.code, r.stdout + r.stderr).toBe(0);
      const done = r.lines.find((l) => l.msg === 'cache prune done');
      // The manifest, the config and the layer: unreferenced now, but written moments ago.
      expect(done?.fields).toMatchObject({ tagsDeleted: 1, manifestsDeleted: 1, blobsDeleted: 0, bytesFreed: 0, blobsInGrace: 3 });
      expect(r.summary.msg).toMatch(/the grace period keeps 3 unreferenced blob\(s\), .*, until \d{4}-\d\d-\d\dT[\d:.]+Z: a prune after that frees them$/);
      expect(blobOnDisk(young, image.layers[0].digest)).toBe(true);
    } finally {
      await young.stop();
    }
  });

  it('on a private registry the server answers 409: the script fails and alerts', async () => {
    hook.clear();
    const r = await runScript('prune', ['--admin-url', `private=${upstream.adminUrl}`, '--token', ADMIN_TOKEN, '--alert-webhook', hook.url]);
    expect(r.code).toBe(1);
    const failed = r.lines.find((l) => l.msg === 'cache prune failed');
    expect(failed?.fields).toMatchObject({ instance: 'private', status: 409 });
    expect(failed?.fields.error).toMatch(/not a mirror/);
    expect(hook.alerts).toHaveLength(1);
    expect(hook.alerts[0].body).toMatchObject({ script: 'prune', level: 'error' });
    expect(hook.alerts[0].body.summary).toMatch(/private FAILED: not a mirror/);
  });
});
