// What the browser tests share: Debian's chromium through playwright-core (no
// browser download; .ci/run installs it), the client bundle built as npm start
// builds it, and axe-core run in the page.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { type Browser, chromium, type Page } from 'playwright-core';
import { expect } from 'vitest';
import { REPO_ROOT } from '../helpers/process.ts';

export const CHROMIUM = '/usr/bin/chromium';
const AXE = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');

/** Builds the client bundle the server serves into dist/ui/ (what npm start does when a source changed). */
export function buildClient(): void {
  const built = spawnSync(process.execPath, ['--input-type=module', '-e', "await (await import('./server/bin/build.mjs')).buildUi()"], {
    cwd: REPO_ROOT,
    encoding: 'utf8',
  });
  expect(built.status, built.stderr).toBe(0);
}

export async function launchChromium(): Promise<Browser> {
  expect(existsSync(CHROMIUM), `${CHROMIUM} is missing: apt-get install chromium (.ci/run does)`).toBe(true);
  return chromium.launch({ executablePath: CHROMIUM, args: process.getuid?.() === 0 ? ['--no-sandbox'] : [] });
}

/** chromium with one page whose Content-Security-Policy violations are collected into `cspViolations`. */
export async function openWatchedPage(cspViolations: string[]): Promise<{ browser: Browser; page: Page }> {
  const browser = await launchChromium();
  const page = await browser.newPage();
  watchCsp(page, cspViolations);
  return { browser, page };
}

/** axe-core's violations on the page as it is now, as "rule: target" lines. */
export async function axeViolations(page: Page): Promise<string[]> {
  // Evaluated through the DevTools protocol, which the page's CSP does not govern (a <script> would be refused).
  await page.evaluate(AXE);
  return page.evaluate(async () => {
    const result = await (globalThis as unknown as { axe: { run(): Promise<{ violations: Array<{ id: string; nodes: Array<{ target: string[] }> }> }> } }).axe.run();
    return result.violations.map((v) => `${v.id}: ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`);
  });
}

/** Collects the page's Content-Security-Policy violations (chromium reports them on the console). */
export function watchCsp(page: Page, into: string[]): void {
  page.on('console', (msg) => {
    if (/Content Security Policy/i.test(msg.text())) into.push(msg.text());
  });
}
