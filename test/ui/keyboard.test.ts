// The UI by keyboard, in chromium: on every main page, pressing Tab from the
// top reaches every control (links, buttons, inputs) in turn, each showing a
// visible focus indicator when it has the focus; every input has a label; and
// axe-core (contrast included) finds nothing, logged in and anonymous.
import { type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RegistryClient } from '../helpers/client.ts';
import { MANIFEST_ACCEPT } from '../helpers/clients.ts';
import { type LocalMirror, startMirror } from '../helpers/mirror/mirror.ts';
import { FakeUpstream } from '../helpers/mirror/upstream.ts';
import { buildImage, buildIndex } from '../helpers/oci.ts';
import { startTestServer, TEST_PASSWORD, TEST_USER, type TestServer } from '../helpers/server.ts';
import { axeViolations, buildClient, openWatchedPage } from './browser-helpers.ts';

const CONTROLS = 'a[href], button, input:not([type=hidden]), select, textarea, [tabindex]:not([tabindex="-1"])';

/** Marks every visible control with data-k="<n>"; resolves with how many there are. */
function markControls(page: Page): Promise<number> {
  return page.evaluate((selector) => {
    let n = 0;
    for (const el of document.querySelectorAll<HTMLElement>(selector)) {
      const box = el.getBoundingClientRect();
      if (box.width === 0 && box.height === 0) continue;
      el.dataset.k = String(n++);
    }
    return n;
  }, CONTROLS);
}

/** What has the focus now: its data-k, and whether it shows a focus indicator (an outline or a box shadow). */
function focused(page: Page): Promise<{ k?: string; visible: boolean; what: string }> {
  return page.evaluate(() => {
    const el = document.activeElement as HTMLElement | null;
    if (!el || el === document.body) return { visible: false, what: 'body' };
    const style = getComputedStyle(el);
    const outline = style.outlineStyle !== 'none' && Number.parseFloat(style.outlineWidth) >= 1;
    const shadow = style.boxShadow !== 'none';
    return { k: el.dataset.k, visible: outline || shadow, what: `${el.tagName.toLowerCase()} "${(el.textContent ?? '').trim().slice(0, 40) || el.getAttribute('aria-label') || el.id}"` };
  });
}

/** Tabs through the page from the top: every control is reached once per round, each with a visible focus. */
async function tabThrough(page: Page): Promise<void> {
  const total = await markControls(page);
  expect(total).toBeGreaterThan(0);
  await page.evaluate(() => {
    (document.activeElement as HTMLElement | null)?.blur();
    window.scrollTo(0, 0);
  });
  const reached = new Set<string>();
  const invisible: string[] = [];
  const unmarked: string[] = [];
  // One press per control and a few more: past the last one, the focus leaves the page and comes back round.
  for (let i = 0; i < total + 3 && reached.size < total; i++) {
    await page.keyboard.press('Tab');
    const f = await focused(page);
    if (f.what === 'body') continue;
    if (f.k === undefined) unmarked.push(f.what);
    else reached.add(f.k);
    if (!f.visible) invisible.push(f.what);
  }
  expect(unmarked, 'focusable things that are not controls').toEqual([]);
  expect(invisible, 'controls without a visible focus').toEqual([]);
  const missed = await page.evaluate(
    (seen) => [...document.querySelectorAll<HTMLElement>('[data-k]')].filter((el) => !seen.includes(el.dataset.k!)).map((el) => el.outerHTML.slice(0, 80)),
    [...reached],
  );
  expect(missed, 'controls Tab never reaches').toEqual([]);
}

/** Inputs without a label (a <label for>, a wrapping label, aria-label or aria-labelledby). */
function unlabelledInputs(page: Page): Promise<string[]> {
  return page.evaluate(() =>
    [...document.querySelectorAll<HTMLInputElement>('input:not([type=hidden]), select, textarea')]
      .filter((el) => (el.labels?.length ?? 0) === 0 && !el.getAttribute('aria-label') && !el.getAttribute('aria-labelledby'))
      .map((el) => el.outerHTML),
  );
}

describe('web UI by keyboard', () => {
  let server: TestServer;
  let hub: FakeUpstream;
  let mirror: LocalMirror;
  let browser: Browser;
  let page: Page;
  const cspViolations: string[] = [];
  let childDigest: string;

  beforeAll(async () => {
    buildClient();
    server = await startTestServer({ anonymousPull: true });
    const client = new RegistryClient(server.url, server.auth);
    const index = buildIndex([buildImage({ architecture: 'amd64' }), buildImage({ architecture: 'arm64' })]);
    childDigest = index.images[0].manifest.digest;
    await client.pushIndex('team/app', 'v1', index);
    await client.pushImage('team/app', 'v2', buildImage());
    await client.pushImage('other/tool', 'latest', buildImage());
    hub = await FakeUpstream.start();
    await hub.pushImage('org/app', 'v1', buildImage());
    mirror = await startMirror({ upstreams: [{ host: 'docker.io', url: hub.url }] });
    expect((await new RegistryClient(mirror.url).req('/v2/org/app/manifests/v1', { headers: { accept: MANIFEST_ACCEPT } })).status).toBe(200);
    await mirror.settled();
    ({ browser, page } = await openWatchedPage(cspViolations));
  }, 60_000);

  afterAll(async () => {
    await browser?.close();
    await server?.stop();
    await mirror?.stop();
    await hub?.dispose();
  });

  /** Opens a page, waits for what shows it is complete (the client's part rendered), and checks it. */
  async function check(url: string, ready: () => Promise<unknown>): Promise<void> {
    await page.goto(url);
    await ready();
    expect(await unlabelledInputs(page)).toEqual([]);
    await tabThrough(page);
    expect(await axeViolations(page)).toEqual([]);
  }

  it('anonymous: the repository list, a repository, an image and the login form', async () => {
    // (The list is the client's once it says how many it shows: the server's rows are replaced by then.)
    await check(`${server.url}/ui/`, () => page.getByText(/repositories shown/).waitFor({ state: 'attached' }));
    await check(`${server.url}/ui/repo?name=team/app`, () => page.getByRole('button', { name: 'Copy docker pull command for v1' }).waitFor());
    await check(`${server.url}/ui/image?name=team/app&reference=${childDigest}`, () => page.getByRole('heading', { name: 'Layers' }).waitFor());
    await check(`${server.url}/ui/login`, () => page.getByLabel('Password').waitFor());
  });

  it('logged in: the list with the account controls, a repository with its deletes, the delete confirmation, operations', async () => {
    await page.goto(`${server.url}/ui/login`);
    await page.getByLabel('User').fill(TEST_USER);
    await page.getByLabel('Password').fill(TEST_PASSWORD);
    await page.keyboard.press('Enter');
    await page.getByText(`Logged in as ${TEST_USER}`).waitFor();
    await check(`${server.url}/ui/`, () => page.getByText(/repositories shown/).waitFor({ state: 'attached' }));
    // (The copy buttons are the client's: once they are there, so are its delete links.)
    await check(`${server.url}/ui/repo?name=team/app`, async () => {
      await page.getByRole('button', { name: 'Copy docker pull command for v2' }).waitFor();
      expect(await page.getByRole('link', { name: 'Delete tag v2' }).count()).toBe(1);
    });
    await check(`${server.url}/ui/delete?name=team/app&reference=v2`, () => page.getByRole('button', { name: 'Delete tag v2' }).waitFor());
    await check(`${server.url}/ui/operations`, () => page.getByRole('img', { name: /^Pulls per 5 minutes/ }).waitFor());
  });

  it('the mirror page', async () => {
    await check(`${mirror.url}/ui/mirror`, () => page.getByRole('link', { name: /org\/app$/ }).waitFor());
  });

  it('broke no Content-Security-Policy rule', () => {
    expect(cspViolations).toEqual([]);
  });
});
