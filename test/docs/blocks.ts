// Fenced code blocks of the README and docs/, with the attributes that make
// them executable documentation:
//   ```sh runnable          run by test/docs/runnable.test.ts (bash -euo pipefail)
//   ```yaml file=NAME       written into the run's directory before its blocks run
//   ```yaml file=NAME serve also started as `registry serve NAME` for the blocks after it
//   ```yaml config          a registry config (or a fragment of one) that must load
//   ```yaml file=NAME invalid  a config shown for the error it gets: it must not load
import { readdirSync, readFileSync } from 'node:fs';
import * as path from 'node:path';

export interface Block {
  /** The markdown file, relative to the repository root. */
  doc: string;
  /** 1-based line of the opening fence. */
  line: number;
  lang: string;
  runnable: boolean;
  config: boolean;
  serve: boolean;
  /** A config that must be refused (an example of a mistake). */
  invalid: boolean;
  file?: string;
  /** Attribute words this parser does not know (a typo would silently make a block inert). */
  unknown: string[];
  text: string;
}

const FENCE = /^(\s*)(`{3,}|~{3,})(.*)$/;

export function parseBlocks(markdown: string, doc: string): Block[] {
  const blocks: Block[] = [];
  const lines = markdown.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const open = FENCE.exec(lines[i]);
    if (!open) continue;
    const [, indent, fence, info] = open;
    const body: string[] = [];
    let j = i + 1;
    for (; j < lines.length; j++) {
      const close = FENCE.exec(lines[j]);
      if (close && close[2][0] === fence[0] && close[2].length >= fence.length && close[3].trim() === '') break;
      body.push(lines[j].startsWith(indent) ? lines[j].slice(indent.length) : lines[j]);
    }
    const [lang = '', ...words] = info.trim().split(/\s+/).filter(Boolean);
    const block: Block = { doc, line: i + 1, lang, runnable: false, config: false, serve: false, invalid: false, unknown: [], text: `${body.join('\n')}\n` };
    for (const word of words) {
      if (word === 'runnable') block.runnable = true;
      else if (word === 'config') block.config = true;
      else if (word === 'serve') block.serve = true;
      else if (word === 'invalid') block.invalid = true;
      else if (word.startsWith('file=') && word.length > 5) block.file = word.slice(5);
      else block.unknown.push(word);
    }
    blocks.push(block);
    i = j;
  }
  return blocks;
}

/** README.md and every docs/*.md, relative to `root`. */
export function docFiles(root: string): string[] {
  const docs = readdirSync(path.join(root, 'docs'))
    .filter((f) => f.endsWith('.md'))
    .sort()
    .map((f) => `docs/${f}`);
  return ['README.md', ...docs];
}

export function blocksOf(root: string, doc: string): Block[] {
  return parseBlocks(readFileSync(path.join(root, doc), 'utf8'), doc);
}
