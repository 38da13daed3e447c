// Every relative link of the README and docs/*.md points at a file that
// exists, and every #anchor at a heading of that file (GitHub's slugs).
import { existsSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../helpers/process.ts';
import { docFiles, parseBlocks } from './blocks.ts';

/** GitHub's anchor for a heading: lower case, punctuation dropped, spaces as dashes; repeats get -1, -2. */
export function anchorsOf(markdown: string): Set<string> {
  const seen = new Map<string, number>();
  const anchors = new Set<string>();
  const blocks = parseBlocks(markdown, '');
  const inBlock = new Set<number>();
  for (const b of blocks) for (let i = b.line; i <= b.line + b.text.split('\n').length; i++) inBlock.add(i);
  markdown.split('\n').forEach((line, i) => {
    const m = /^#{1,6} (.+?)\s*#*\s*$/.exec(line);
    if (!m || inBlock.has(i + 1)) return;
    const slug = m[1].toLowerCase().replace(/[^\p{L}\p{N} _-]/gu, '').replace(/ /g, '-');
    const n = seen.get(slug) ?? 0;
    seen.set(slug, n + 1);
    anchors.add(n === 0 ? slug : `${slug}-${n}`);
  });
  return anchors;
}

/** Links outside fenced blocks and inline code: [text](target). */
function linksOf(markdown: string): string[] {
  const prose = markdown.replace(/^(```|~~~)[\s\S]*?^\1/gm, '').replace(/`[^`\n]*`/g, '');
  return [...prose.matchAll(/\]\(([^)\s]+)\)/g)].map((m) => m[1]);
}

describe('links in the README and docs', () => {
  it('computes anchors as GitHub does', () => {
    const anchors = anchorsOf('# Run a mirror\n## Try the whole stack: the VPS twin\n### `config/`\n### podman, skopeo, buildah\n## Metrics\n## Metrics\n');
    expect([...anchors]).toEqual(['run-a-mirror', 'try-the-whole-stack-the-vps-twin', 'config', 'podman-skopeo-buildah', 'metrics', 'metrics-1']);
  });

  it('resolve to files and headings that exist', () => {
    const broken: string[] = [];
    let checked = 0;
    for (const doc of docFiles(REPO_ROOT)) {
      const text = readFileSync(path.join(REPO_ROOT, doc), 'utf8');
      for (const link of linksOf(text)) {
        if (/^[a-z]+:/.test(link)) continue; // https:, mailto:
        checked++;
        const [target, anchor] = link.split('#');
        const file = target === '' ? path.join(REPO_ROOT, doc) : path.resolve(path.dirname(path.join(REPO_ROOT, doc)), target);
        if (!existsSync(file)) {
          broken.push(`${doc}: ${link} (no such file)`);
          continue;
        }
        if (anchor && file.endsWith('.md') && !anchorsOf(readFileSync(file, 'utf8')).has(anchor)) broken.push(`${doc}: ${link} (no such heading)`);
      }
    }
    expect(checked).toBeGreaterThan(50);
    expect(broken).toEqual([]);
  });
});
