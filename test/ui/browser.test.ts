// The web UI in a real browser: Debian's chromium driven by playwright-core
// (no browser download; .ci/run installs it). Logs in, browses to a multi-arch image and its layers, deletes a
// tag and checks the registry API no longer has it, is refused a delete
// while anonymous, logs out; axe-core checks the main pages, and any
// Content-Security-Policy violation fails the test.
import { type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RegistryClient } from '../helpers/client.ts';
import { buildImage, buildIndex } from '../helpers/oci.ts';
import { startTestServer, TEST_PASSWORD, TEST_USER, type TestServer } from '../helpers/server.ts';
import { axeViolations, buildClient, openWatchedPage } from './browser-helpers.ts';

describe('web UI in chromium', () => {
  let server: TestServer;
  let client: RegistryClient;
  let browser: Browser;
  let page: Page;
  const cspViolations: string[] = [];

  beforeAll(async () => {
    // The client bundle the server serves (npm start builds it with the rest).
    buildClient();
    server = await startTestServer({ anonymousPull: true });
    client = new RegistryClient(server.url, server.auth);
    const index = buildIndex([buildImage({ architecture: 'amd64' }), buildImage({ architecture: 'arm64' })]);
    await client.pushIndex('team/app', 'v1', index);
    await client.pushImage('team/app', 'old', buildImage());
    await client.pushImage('other/tool', 'latest', buildImage());
    ({ browser, page } = await openWatchedPage(cspViolations));
  }, 60_000);

  afterAll(async () => {
    await browser?.close();
    await server?.stop();
  });

  it('shows anonymous visitors the repositories anonymous pull allows, searchable as they type', async () => {
    await page.goto(`${server.url}/ui/`);
    await expect.poll(() => page.getByRole('link', { name: 'other/tool' }).count()).toBe(1);
    await page.getByLabel('Search repositories').fill('team');
    await expect.poll(() => page.getByRole('link', { name: 'other/tool' }).count()).toBe(0);
    expect(await page.getByRole('link', { name: 'team/app' }).count()).toBe(1);
    expect(await axeViolations(page)).toEqual([]);
  });

  it('refuses an anonymous delete, and offers none', async () => {
    await page.goto(`${server.url}/ui/repo?name=team/app`);
    await page.getByRole('cell', { name: 'old', exact: true }).waitFor();
    expect(await page.getByRole('link', { name: /Delete tag/ }).count()).toBe(0);
    const res = await page.goto(`${server.url}/ui/delete?name=team/app&reference=old`);
    expect(res?.status()).toBe(403);
    expect(await page.getByText('Log in to delete.').count()).toBe(1);
    expect((await client.req('/v2/team/app/manifests/old', { method: 'HEAD' })).status).toBe(200);
  });

  it('logs in, shows the platforms and layers of a multi-arch image, deletes a tag after naming it, and logs out', async () => {
    await page.goto(`${server.url}/ui/`);
    await page.getByRole('link', { name: 'Log in', exact: true }).click();
    expect(await axeViolations(page)).toEqual([]);
    await page.getByLabel('User').fill(TEST_USER);
    await page.getByLabel('Password').fill(TEST_PASSWORD);
    await page.getByRole('button', { name: 'Log in' }).click();
    await page.getByText(`Logged in as ${TEST_USER}`).waitFor();

    await page.getByRole('link', { name: 'team/app' }).click();
    const v1 = page.getByRole('row').filter({ has: page.getByRole('cell', { name: 'v1', exact: true }) });
    await v1.waitFor();
    expect(await v1.getByRole('listitem').allTextContents()).toEqual(['linux/amd64', 'linux/arm64']);
    expect(await v1.getByRole('button', { name: 'Copy podman pull command for v1' }).count()).toBe(1);
    expect(await axeViolations(page)).toEqual([]);

    // The index's page, then one platform's image with its layers.
    await v1.getByRole('link', { name: 'v1', exact: true }).click();
    await page.getByRole('heading', { name: 'Platforms' }).waitFor();
    expect(await page.getByRole('cell', { name: 'linux/arm64', exact: true }).count()).toBe(1);
    expect(await axeViolations(page)).toEqual([]);
    await page.getByRole('link', { name: /\(linux\/arm64\)/ }).click();
    await page.getByRole('heading', { name: 'Layers' }).waitFor();
    const layers = page.getByRole('table', { name: 'Layers, base first' });
    expect(await layers.getByRole('rowheader', { name: 'Layers (1)' }).count()).toBe(1);
    expect(await page.getByText('linux/arm64', { exact: true }).count()).toBe(1);
    expect(await axeViolations(page)).toEqual([]);
    await page.goto(`${server.url}/ui/repo?name=team/app`);
    await page.getByRole('cell', { name: 'old', exact: true }).waitFor();

    await page.getByRole('link', { name: 'Delete tag old' }).click();
    expect(await page.getByRole('heading', { name: 'Delete tag?' }).count()).toBe(1);
    expect(await page.getByText(/This deletes the tag old of team\/app/).count()).toBe(1);
    await page.getByRole('button', { name: 'Delete tag old' }).click();
    await page.getByText('Deleted team/app:old.').waitFor();
    await page.getByRole('cell', { name: 'v1', exact: true }).waitFor();
    expect(await page.getByRole('cell', { name: 'old', exact: true }).count()).toBe(0);
    expect((await client.req('/v2/team/app/manifests/old', { method: 'HEAD' })).status).toBe(404);
    expect((await client.req('/v2/team/app/manifests/v1', { method: 'HEAD' })).status).toBe(200);

    await page.getByRole('button', { name: 'Log out' }).click();
    await page.getByRole('link', { name: 'Log in', exact: true }).waitFor();
    await page.goto(`${server.url}/ui/repo?name=team/app`);
    await page.getByRole('cell', { name: 'v1', exact: true }).waitFor();
    expect(await page.getByRole('link', { name: /Delete tag/ }).count()).toBe(0);
  });

  it('lists repositories and tags without JavaScript', async () => {
    const context = await browser.newContext({ javaScriptEnabled: false });
    try {
      const bare = await context.newPage();
      await bare.goto(`${server.url}/ui/?q=team`);
      expect(await bare.getByRole('link', { name: 'other/tool' }).count()).toBe(0);
      await bare.getByRole('link', { name: 'team/app' }).click();
      const v1 = bare.getByRole('row').filter({ has: bare.getByRole('cell', { name: 'v1', exact: true }) });
      expect(await v1.getByRole('listitem').allTextContents()).toEqual(['linux/amd64', 'linux/arm64']);
      expect(await v1.getByText(/^docker pull .*\/team\/app:v1$/).count()).toBe(1);
      await v1.getByRole('link', { name: 'linux/amd64' }).click();
      expect(await bare.getByRole('rowheader', { name: 'Layers (1)' }).count()).toBe(1);
    } finally {
      await context.close();
    }
  });

  it('broke no Content-Security-Policy rule on any page', () => {
    expect(cspViolations).toEqual([]);
  });
});
