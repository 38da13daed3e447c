// The UI's status pages over real HTTP: the mirror page (cache size against
// its cap, hits and misses with their bytes, upstreams, the most pulled, the
// fills running) during and after a cold pull held mid-body by the upstream,
// and the operations page (the last GC with what it removed, disk use, a day of
// pulls and bytes) on a private registry. Waits are on the upstream's
// exchanges and on the page saying what it should, with a bound; never on time.
import { rmSync } from 'node:fs';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fetchManifest } from '../helpers/clients.ts';
import { RegistryClient } from '../helpers/client.ts';
import { Gate, HostileUpstream } from '../helpers/hostile-upstream.ts';
import { randomImage } from '../helpers/mirror/images.ts';
import { type LocalMirror, startMirror } from '../helpers/mirror/mirror.ts';
import { buildImage } from '../helpers/oci.ts';
import { runCli, writeConfig } from '../helpers/ops/servers.ts';
import { dataDir, makeTempDir, startTestServer, TEST_PASSWORD, TEST_USER, type TestServer } from '../helpers/server.ts';

const MiB = 1024 * 1024;

/** Polls `read` until `ok` says yes; the bound only keeps a failing test from hanging. */
async function until<T>(read: () => Promise<T>, ok: (v: T) => boolean, boundMs = 20_000): Promise<T> {
  const deadline = Date.now() + boundMs;
  for (;;) {
    const v = await read();
    if (ok(v) || Date.now() > deadline) return v;
    await new Promise((resolve) => setImmediate(resolve));
  }
}

describe('web UI: the mirror page', () => {
  let up: HostileUpstream;
  let mirror: LocalMirror;

  beforeAll(async () => {
    up = await HostileUpstream.start();
    mirror = await startMirror({ upstreams: [{ host: 'docker.io', url: up.url }] });
  });
  afterAll(async () => {
    await mirror?.stop();
    await up?.stop();
  });

  const status = async () => (await (await fetch(`${mirror.url}/ui/api/mirror`)).json()) as {
    cache: { bytes: number; blobs: number; maxBytes?: number };
    hits: number;
    misses: number;
    hitBytes: number;
    missBytes: number;
    upstreams: Array<{ host: string; state: string; requests: number }>;
    mostPulled: Array<{ name: string; pulls: number }>;
    fills: Array<{ digest: string; repository?: string; size?: number; received?: number }>;
  };

  it('shows a cold pull: its fill while the upstream holds the body, then the cache grown by the blob, the miss and the hit', async () => {
    const before = await status();
    expect(before.fills).toEqual([]);
    expect(before.upstreams.map((u) => [u.host, u.state])).toEqual([['docker.io', 'healthy']]);

    const image = randomImage([3 * MiB]);
    const layer = image.layers[0];
    up.serveImage('org/app', 'v1', image);
    const gate = new Gate();
    up.misbehave('org/app', layer.digest, { holdBodyAfter: { bytes: MiB, gate } });
    expect((await fetchManifest(mirror.url, undefined, 'org/app', 'v1')).status).toBe(200);
    const pull = request(`${mirror.url}/v2/org/app/blobs/${layer.digest}`).then(async (res) => {
      await res.body.arrayBuffer();
      return res.statusCode;
    });
    await up.waitFor((e) => e.repo === 'org/app' && e.held);

    const during = await until(status, (s) => s.fills.some((f) => f.digest === layer.digest && (f.received ?? 0) >= MiB));
    const fill = during.fills.find((f) => f.digest === layer.digest);
    expect(fill).toMatchObject({ size: layer.size });
    expect(fill!.repository).toMatch(/org\/app$/);
    expect(fill!.received).toBeGreaterThanOrEqual(MiB);
    const page = await (await fetch(`${mirror.url}/ui/mirror`)).text();
    expect(page).toContain('Fills in flight');
    expect(page).toContain(layer.digest.slice(0, 19));
    expect(page).toMatch(/of 3\.0 MB/);

    gate.open();
    expect(await pull).toBe(200);
    await mirror.settled();
    // A request is counted once the server is done with it, which may be a moment after the client has its last byte.
    await mirror.server.idle();
    const after = await until(status, (s) => s.fills.length === 0);
    expect(after.fills).toEqual([]);
    expect(after.cache.bytes - before.cache.bytes).toBeGreaterThanOrEqual(layer.size);
    expect(after.misses).toBeGreaterThan(before.misses);
    expect(after.missBytes - before.missBytes).toBeGreaterThanOrEqual(layer.size);

    // Pulled again: served from the cache.
    const again = await request(`${mirror.url}/v2/org/app/blobs/${layer.digest}`);
    await again.body.arrayBuffer();
    await mirror.server.idle();
    const hit = await status();
    expect(hit.hits).toBeGreaterThan(after.hits);
    expect(hit.hitBytes - after.hitBytes).toBe(layer.size);
    // Under the name the cache keeps it by, as the repository list shows it.
    expect(hit.mostPulled).toEqual([{ name: 'docker.io/org/app', pulls: 1 }]);
    expect(await (await fetch(`${mirror.url}/ui/mirror`)).text()).toContain('href="/ui/repo?name=docker.io%2Forg%2Fapp"');
    expect(hit.upstreams[0].requests).toBeGreaterThan(0);
  });

  it('offers the operations page too, with the prune row, and no mirror page on a private registry', async () => {
    const ops = await (await fetch(`${mirror.url}/ui/operations`)).text();
    expect(ops).toContain('Cache prune');
    expect(ops).not.toContain('Garbage collection');
    const nav = await (await fetch(`${mirror.url}/ui/`)).text();
    expect(nav).toMatch(/href="\/ui\/mirror">Mirror</);
  });
});

describe('web UI: the operations page', () => {
  let server: TestServer;
  let client: RegistryClient;

  beforeAll(async () => {
    // No grace period: a GC frees an image's blobs as soon as its manifest is deleted.
    server = await startTestServer({ anonymousPull: true, extra: { gc: { graceperiod: '0s' } } });
    client = new RegistryClient(server.url, server.auth);
  });
  afterAll(() => server?.stop());

  /** A logged-in visitor's cookie. */
  async function login(): Promise<string> {
    const form = await fetch(`${server.url}/ui/login`);
    const csrf = /name="csrf" value="([^"]+)"/.exec(await form.text())![1];
    const loginCookie = form.headers.getSetCookie()[0].split(';')[0];
    const res = await fetch(`${server.url}/ui/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', cookie: loginCookie },
      body: new URLSearchParams({ csrf, user: TEST_USER, password: TEST_PASSWORD, next: '' }).toString(),
      redirect: 'manual',
    });
    return res.headers.getSetCookie().find((c) => c.startsWith('rs_ui_session='))!.split(';')[0];
  }

  it('sends anonymous visitors to log in, where the server takes logins', async () => {
    const res = await fetch(`${server.url}/ui/operations`, { redirect: 'manual' });
    expect(res.status).toBe(303);
    expect(res.headers.get('location')).toBe('/ui/login?next=%2Fui%2Foperations');
    expect((await fetch(`${server.url}/ui/api/operations`)).status).toBe(401);
    expect((await fetch(`${server.url}/ui/mirror`)).status).toBe(404);
    expect(await (await fetch(`${server.url}/ui/`)).text()).not.toContain('>Operations<');
  });

  it('shows the last GC with what it removed and freed, the stored bytes, and the pulls of the last day', async () => {
    const cookie = await login();
    const get = async () => (await (await fetch(`${server.url}/ui/api/operations`, { headers: { cookie } })).json()) as {
      gc?: { finishedAt: string; result?: { blobsDeleted: number; manifestsDeleted: number; bytesFreed: number } };
      storage: { bytes: number; blobs: number; driver: string; disk?: { totalBytes: number; freeBytes: number } };
      series: Array<{ at: string; pulls: number; bytes: number }>;
    };
    const empty = await get();
    expect(empty.gc).toBeUndefined();
    expect(empty.series).toHaveLength(288);
    expect(empty.storage.driver).toBe('filesystem');
    expect(empty.storage.disk!.totalBytes).toBeGreaterThan(empty.storage.disk!.freeBytes);

    const image = buildImage();
    await client.pushImage('team/gone', 'v1', image);
    // A request is counted once the server is done with it, which may be a moment after the client has the answer.
    await server.idle();
    const pushed = await get();
    expect(pushed.storage.blobs - empty.storage.blobs).toBe(3);
    const pulls = pushed.series.reduce((n, b) => n + b.pulls, 0);
    expect((await client.req('/v2/team/gone/manifests/v1')).status).toBe(200);
    await server.idle();
    const pulled = await get();
    expect(pulled.series.reduce((n, b) => n + b.pulls, 0)).toBe(pulls + 1);
    expect(pulled.series[287].bytes).toBeGreaterThan(0);

    expect((await client.req('/v2/team/gone/manifests/v1', { method: 'DELETE' })).status).toBe(202);
    // The tag went; its manifest is untagged now, and goes with every blob only it named.
    await server.maintenance.gc({ dryRun: false, deleteUntagged: true });
    const ran = await get();
    const imageBytes = pushed.storage.bytes - empty.storage.bytes;
    expect(ran.gc?.result).toMatchObject({ manifestsDeleted: 1, blobsDeleted: 3, bytesFreed: imageBytes });
    expect(ran.storage.bytes).toBe(empty.storage.bytes);

    const page = await (await fetch(`${server.url}/ui/operations`, { headers: { cookie } })).text();
    expect(page).toContain('Garbage collection');
    expect(page).toContain('1 manifest, 3 blobs');
    expect(page).toMatch(/<svg[^>]*role="img"/);
    expect(page).toContain('Pulls per 5 minutes');
    expect(page).not.toMatch(/style=/);

    // Kept in the storage: another server on the same data (a restart, a replica) shows the run; a dry run is not kept.
    await server.maintenance.gc({ dryRun: true });
    const other = await startTestServer({ root: server.root, extra: { gc: { graceperiod: '0s' } } });
    try {
      const seen = await other.maintenance.lastRuns();
      expect(seen.gc).toEqual(ran.gc);
    } finally {
      await other.stop();
    }
    expect((await get()).gc?.result).toMatchObject({ dryRun: true });

    expect(await (await fetch(`${server.url}/ui/operations`, { headers: { cookie } })).text()).toMatch(/\(dry run\)/);
  });

  it('shows a run of the offline garbage-collect command, newer than the server\'s own', async () => {
    const work = makeTempDir('rs-ui-gc-cli-');
    try {
      await client.pushImage('team/offline', 'v1', buildImage());
      expect((await client.req('/v2/team/offline/manifests/v1', { method: 'DELETE' })).status).toBe(202);
      const config = writeConfig(work, { version: '0.1', storage: { filesystem: { rootdirectory: dataDir(server) } } });
      const run = await runCli(['garbage-collect', '--delete-untagged', config]);
      expect(run.code, run.stderr).toBe(0);
      const summary = run.lines.at(-1)!;
      expect(summary).toMatchObject({ manifestsDeleted: 1, blobsDeleted: 3 });
      const { gc } = await server.maintenance.lastRuns();
      expect(gc?.result).toMatchObject({ dryRun: false, manifestsDeleted: 1, blobsDeleted: 3, bytesFreed: summary.bytesFreed });
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  });
});
