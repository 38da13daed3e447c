// The README's pictures of the UI: every docs/img/ui-*.png the screenshot
// script makes is in the README and in the repository, and the script runs
// (its quick form, into a directory of its own: small layers, same pages).
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { SCREENSHOTS } from '../../scripts/ui-screenshots.ts';
import { REPO_ROOT } from '../helpers/process.ts';

const PNG = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

/** A PNG's width and height (its IHDR chunk). */
function pngSize(file: string): { width: number; height: number } {
  const data = readFileSync(file);
  expect(data.subarray(0, 8).equals(PNG), `${file} is not a PNG`).toBe(true);
  return { width: data.readUInt32BE(16), height: data.readUInt32BE(20) };
}

describe('the UI screenshots', () => {
  it('are all in the README and in docs/img/', () => {
    const readme = readFileSync(path.join(REPO_ROOT, 'README.md'), 'utf8');
    const shown = [...readme.matchAll(/!\[[^\]]*\]\((docs\/img\/ui-[^)]+\.png)\)/g)].map((m) => m[1]);
    expect(shown.sort()).toEqual(SCREENSHOTS.map((f) => `docs/img/${f}`).sort());
    for (const file of shown) expect(pngSize(path.join(REPO_ROOT, file)).width).toBe(1200);
  });

  it('are made by npm run ui:screenshots', () => {
    const out = mkdtempSync(path.join(tmpdir(), 'rs-shots-'));
    try {
      const run = spawnSync(process.execPath, ['--import', 'tsx', 'scripts/ui-screenshots.ts', out, '--quick'], { cwd: REPO_ROOT, encoding: 'utf8', timeout: 170_000 });
      expect(run.status, run.stderr).toBe(0);
      for (const file of SCREENSHOTS) {
        expect(existsSync(path.join(out, file)), file).toBe(true);
        const { width, height } = pngSize(path.join(out, file));
        expect(width).toBe(1200);
        expect(height).toBeGreaterThanOrEqual(720);
      }
      expect(JSON.parse(readFileSync(path.join(REPO_ROOT, 'package.json'), 'utf8')).scripts['ui:screenshots']).toBe('node --import tsx scripts/ui-screenshots.ts');
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  }, 180_000);
});
