// The mirror and operations pages in chromium: during a cold pull whose body
// the upstream holds, the open mirror page (refreshed by its script) shows the
// fill, then the fill gone and the cache grown by the blob; axe-core finds
// nothing on either page, and no Content-Security-Policy rule is broken (the
// charts are inline SVG). Waits are on what the page shows, bounded.
import { type Browser, type Page } from 'playwright-core';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fetchManifest } from '../helpers/clients.ts';
import { Gate, HostileUpstream } from '../helpers/hostile-upstream.ts';
import { randomImage } from '../helpers/mirror/images.ts';
import { type LocalMirror, startMirror } from '../helpers/mirror/mirror.ts';
import { axeViolations, buildClient, openWatchedPage } from './browser-helpers.ts';

const MiB = 1024 * 1024;

describe('web UI in chromium: the mirror and operations pages', () => {
  let up: HostileUpstream;
  let mirror: LocalMirror;
  let browser: Browser;
  let page: Page;
  const cspViolations: string[] = [];

  beforeAll(async () => {
    buildClient();
    up = await HostileUpstream.start();
    mirror = await startMirror({ upstreams: [{ host: 'docker.io', url: up.url }] });
    ({ browser, page } = await openWatchedPage(cspViolations));
  }, 60_000);

  afterAll(async () => {
    await browser?.close();
    await mirror?.stop();
    await up?.stop();
  });

  it('shows a cold pull as it happens: the fill, then the cache grown by it', async () => {
    const image = randomImage([2 * MiB]);
    const layer = image.layers[0];
    up.serveImage('org/app', 'v1', image);
    const gate = new Gate();
    up.misbehave('org/app', layer.digest, { holdBodyAfter: { bytes: MiB, gate } });

    await page.goto(`${mirror.url}/ui/mirror`);
    await page.getByText('None: nothing is being fetched from an upstream now.').waitFor();
    const size = page.getByRole('definition').first();
    const sizeBefore = await size.textContent();
    expect(await page.getByRole('row', { name: /docker\.io healthy/ }).count()).toBe(1);
    expect(await axeViolations(page)).toEqual([]);

    expect((await fetchManifest(mirror.url, undefined, 'org/app', 'v1')).status).toBe(200);
    const pull = request(`${mirror.url}/v2/org/app/blobs/${layer.digest}`).then(async (res) => {
      await res.body.arrayBuffer();
      return res.statusCode;
    });
    await up.waitFor((e) => e.repo === 'org/app' && e.held);
    // The page's script refreshes it: the fill appears without a reload.
    const fill = page.getByRole('row').filter({ has: page.getByText(layer.digest.slice(0, 19)) });
    await fill.waitFor({ timeout: 30_000 });
    expect(await fill.textContent()).toMatch(/docker\.io\/org\/app.* of 2\.0 MB/);
    expect(await axeViolations(page)).toEqual([]);

    gate.open();
    expect(await pull).toBe(200);
    await mirror.settled();
    await page.getByText('None: nothing is being fetched from an upstream now.').waitFor({ timeout: 30_000 });
    await expect.poll(() => size.textContent(), { timeout: 30_000 }).not.toBe(sizeBefore);
    expect(await size.textContent()).toMatch(/^2\.\d MB in [1-9]\d* blobs?/);
    expect(await page.getByRole('link', { name: 'docker.io/org/app' }).count()).toBe(1);
  });

  it('shows the operations page with its charts', async () => {
    await page.getByRole('link', { name: 'Operations' }).click();
    await page.getByRole('heading', { name: 'Operations' }).waitFor();
    expect(await page.getByRole('img', { name: /^Pulls per 5 minutes/ }).count()).toBe(1);
    expect(await page.getByRole('img', { name: /^Bytes sent per 5 minutes/ }).count()).toBe(1);
    expect(await page.getByRole('rowheader', { name: 'Cache prune' }).count()).toBe(1);
    expect(await axeViolations(page)).toEqual([]);
  });

  it('broke no Content-Security-Policy rule', () => {
    expect(cspViolations).toEqual([]);
  });
});
