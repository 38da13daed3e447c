// `npm run ui:screenshots [-- <dir>] [--quick]`: the README's pictures of the web UI,
// made, not drawn. Starts a private registry and a mirror (of another local
// registry standing in for Docker Hub) in this process on loopback ports,
// with sample content, drives Debian's chromium with playwright-core, and
// writes docs/img/ui-*.png (or into <dir>). A development tool: it borrows the
// test suite's image builders (test/helpers/oci.ts) and is not built.
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import bcrypt from 'bcryptjs';
import { chromium } from 'playwright-core';
import { loadConfigObject } from '../server/src/config/load.ts';
import { startServer, type RunningServer } from '../server/src/http/server.ts';
import { silentLogger } from '../server/src/log/logger.ts';
import { RegistryClient } from '../test/helpers/client.ts';
import { blobOf, buildIndex, type Image, MT, tarLayer } from '../test/helpers/oci.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const SCREENSHOT_DIR = path.join(ROOT, 'docs/img');
/** The pictures, in the README's order: file name → what it shows. */
export const SCREENSHOTS = ['ui-repositories.png', 'ui-repository.png', 'ui-image.png', 'ui-mirror.png', 'ui-operations.png'];
const CHROMIUM = '/usr/bin/chromium';
const USER = 'admin';
const PASSWORD = 'screenshots-only';

/** An image with a config that says when and how it was built, as a real one does. */
function sampleImage(options: { architecture: string; created: string; files: Record<string, string | Buffer>; labels?: Record<string, string>; cmd: string[] }): Image {
  const layer = tarLayer(options.files);
  const config = blobOf(
    JSON.stringify({
      architecture: options.architecture,
      os: 'linux',
      created: options.created,
      config: { Cmd: options.cmd, Env: ['PATH=/usr/local/bin:/usr/bin:/bin'], Labels: options.labels ?? {}, WorkingDir: '/app' },
      rootfs: { type: 'layers', diff_ids: [] },
      history: [{ created: options.created, created_by: 'COPY . /app' }],
    }),
  );
  const manifest = blobOf(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MT.ociManifest,
      config: { mediaType: MT.ociConfig, digest: config.digest, size: config.size },
      layers: [{ mediaType: MT.ociLayer, digest: layer.digest, size: layer.size }],
    }),
  );
  return { config, layers: [layer], manifest, mediaType: MT.ociManifest, platform: { architecture: options.architecture, os: 'linux' } };
}

/** The client bundle, as npm start builds it when a source changed. */
function buildClient(): void {
  const built = spawnSync(process.execPath, ['--input-type=module', '-e', "await (await import('./server/bin/build.mjs')).buildUi()"], { cwd: ROOT, encoding: 'utf8' });
  if (built.status !== 0) throw new Error(`building the UI failed: ${built.stderr}`);
}

async function start(raw: Record<string, unknown>): Promise<RunningServer> {
  const { config } = loadConfigObject({ version: '0.1', log: { level: 'error', accesslog: { disabled: true } }, http: { addr: '127.0.0.1:0' }, ...raw }, {});
  return startServer(config, { logger: silentLogger });
}

/** `quick`: layers of a few KB instead of MB (the test that checks the script runs; the sizes shown are then small). */
export async function takeScreenshots(outDir: string = SCREENSHOT_DIR, options: { quick?: boolean } = {}): Promise<string[]> {
  const scale = options.quick ? 1 / 256 : 1;
  const work = mkdtempSync(path.join(tmpdir(), 'rs-screenshots-'));
  const servers: RunningServer[] = [];
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: process.getuid?.() === 0 ? ['--no-sandbox'] : [] });
  try {
    buildClient();
    writeFileSync(path.join(work, 'htpasswd'), `${USER}:${bcrypt.hashSync(PASSWORD, 4)}\n`);
    const registry = await start({
      storage: { filesystem: { rootdirectory: path.join(work, 'registry') }, delete: { enabled: true } },
      auth: { htpasswd: { realm: 'registry', path: path.join(work, 'htpasswd') }, anonymouspull: true },
      gc: { graceperiod: '0s' },
    });
    servers.push(registry);
    const hub = await start({
      storage: { filesystem: { rootdirectory: path.join(work, 'hub') } },
      auth: { htpasswd: { realm: 'hub', path: path.join(work, 'htpasswd') }, anonymouspull: true },
    });
    servers.push(hub);
    const mirror = await start({
      storage: { filesystem: { rootdirectory: path.join(work, 'mirror') } },
      proxy: { upstreams: [{ host: 'docker.io', url: hub.url }] },
      cache: { maxsize: '20GiB' },
    });
    servers.push(mirror);

    const login = `Basic ${Buffer.from(`${USER}:${PASSWORD}`).toString('base64')}`;
    const push = new RegistryClient(registry.url, login);
    // Layers of random bytes (they do not compress), a few MB each, so sizes read as real ones do.
    const image = (architecture: string, created: string, app: string, mb = 2) =>
      sampleImage({
        architecture,
        created,
        files: { [`app/${app}`]: randomBytes(Math.round(mb * scale * 1024 * 1024)) },
        labels: { 'org.opencontainers.image.source': `https://git.example.com/team/${app}`, 'org.opencontainers.image.version': created.slice(0, 10) },
        cmd: [`/app/${app}`],
      });
    await push.pushIndex('team/api', '2.4.0', buildIndex([image('amd64', '2026-11-30T09:12:00Z', 'api'), image('arm64', '2026-11-30T09:12:00Z', 'api')]));
    await push.pushIndex('team/api', '2.3.1', buildIndex([image('amd64', '2026-11-12T16:40:00Z', 'api'), image('arm64', '2026-11-12T16:40:00Z', 'api')]));
    await push.pushImage('team/api', 'pr-1182', image('amd64', '2026-12-02T11:05:00Z', 'api'));
    await push.pushImage('team/web', '1.9.0', image('amd64', '2026-11-28T14:00:00Z', 'web'));
    await push.pushImage('team/web', 'latest', image('amd64', '2026-11-28T14:00:00Z', 'web'));
    await push.pushImage('tools/builder', '2026.11', image('amd64', '2026-11-03T08:00:00Z', 'builder', 6));
    await push.pushImage('base/debian', 'trixie', image('amd64', '2026-10-21T00:00:00Z', 'debian', 4));
    // Something for the GC to free: a tag deleted, then collected.
    await push.pushImage('team/api', 'scratch', image('amd64', '2026-12-01T10:00:00Z', 'scratch'));
    await push.req('/v2/team/api/manifests/scratch', { method: 'DELETE' });
    await registry.maintenance.gc({ dryRun: false, deleteUntagged: true });
    for (const [name, tag] of [['team/api', '2.4.0'], ['team/api', '2.3.1'], ['team/web', 'latest']]) await pullAll(push, name, tag);

    // The mirror: two images pulled through it from the stand-in Docker Hub, one of them twice.
    const hubPush = new RegistryClient(hub.url, login);
    await hubPush.pushIndex('library/alpine', '3.21', buildIndex([image('amd64', '2026-11-20T00:00:00Z', 'alpine'), image('arm64', '2026-11-20T00:00:00Z', 'alpine')]));
    await hubPush.pushImage('library/nginx', '1.27', image('amd64', '2026-11-25T00:00:00Z', 'nginx', 3));
    const pullThrough = new RegistryClient(mirror.url);
    for (const [name, tag] of [['library/alpine', '3.21'], ['library/nginx', '1.27'], ['library/nginx', '1.27']]) await pullAll(pullThrough, name, tag);
    await mirror.mirror!.settled();

    mkdirSync(outDir, { recursive: true });
    const page = await browser.newPage({ viewport: { width: 1200, height: 720 }, deviceScaleFactor: 1 });
    const shot = async (file: string, fullPage = false) => {
      await page.screenshot({ path: path.join(outDir, file), fullPage });
    };
    await page.goto(`${registry.url}/ui/login`);
    await page.getByLabel('User').fill(USER);
    await page.getByLabel('Password').fill(PASSWORD);
    await page.getByRole('button', { name: 'Log in' }).click();
    await page.getByRole('link', { name: 'team/api' }).waitFor();
    await shot('ui-repositories.png');
    await page.getByRole('link', { name: 'team/api' }).click();
    await page.getByRole('button', { name: 'Copy docker pull command for 2.4.0' }).waitFor();
    await shot('ui-repository.png');
    await page.getByRole('link', { name: 'linux/arm64' }).first().click();
    await page.getByRole('heading', { name: 'Layers' }).waitFor();
    await shot('ui-image.png');
    await page.goto(`${registry.url}/ui/operations`);
    await page.getByRole('heading', { name: 'Operations' }).waitFor();
    await shot('ui-operations.png', true);
    await page.goto(`${mirror.url}/ui/mirror`);
    await page.getByRole('heading', { name: 'Mirror' }).waitFor();
    await shot('ui-mirror.png', true);
    return SCREENSHOTS.map((f) => path.join(outDir, f));
  } finally {
    await browser.close();
    for (const s of servers.reverse()) await s.close();
    rmSync(work, { recursive: true, force: true });
  }
}

/** Pulls a tag as a client does: the manifest, an index's platforms, and every blob. */
async function pullAll(client: RegistryClient, name: string, tag: string): Promise<void> {
  const accept = [MT.ociIndex, MT.ociManifest, MT.dockerList, MT.dockerManifest].join(', ');
  const res = await client.req(`/v2/${name}/manifests/${tag}`, { headers: { accept } });
  const doc = JSON.parse(res.body.toString('utf8')) as { manifests?: Array<{ digest: string }>; config?: { digest: string }; layers?: Array<{ digest: string }> };
  for (const m of doc.manifests ?? []) await pullAll(client, name, m.digest);
  for (const b of [doc.config, ...(doc.layers ?? [])]) if (b) await client.req(`/v2/${name}/blobs/${b.digest}`);
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const args = process.argv.slice(2);
  const dir = args.find((a) => !a.startsWith('--'));
  takeScreenshots(dir ? path.resolve(dir) : SCREENSHOT_DIR, { quick: args.includes('--quick') }).then(
    (files) => {
      process.stdout.write(`${files.map((f) => path.relative(process.cwd(), f)).join('\n')}\n`);
      // Now, not when the mirror's idle fill workers stop (30 s after their last fill).
      process.exit(0);
    },
    (err) => {
      process.stderr.write(`ui-screenshots: ${(err as Error).stack ?? err}\n`);
      process.exit(1);
    },
  );
}
