// docs/architecture.md says, for each folder of server/src, which other
// folders its files may import ("May import", and the known exceptions under
// "Also imports"). This reads those lines and every relative import of the
// folder's files (type-only ones included): an import the map does not list,
// or a folder the map does not describe, fails.
import { readdirSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../helpers/process.ts';

const SRC = path.join(REPO_ROOT, 'server/src');
const MAP = readFileSync(path.join(REPO_ROOT, 'docs/architecture.md'), 'utf8');

/** folder → the folders its section allows, from the **May import** and **Also imports** lines. */
function allowedImports(markdown: string): Map<string, Set<string>> {
  const allowed = new Map<string, Set<string>>();
  let current: string | undefined;
  // Inside a **May import** / **Also imports** paragraph (it may wrap): every `folder/` it names counts.
  let inRule = false;
  for (const line of markdown.split('\n')) {
    const heading = /^### `([a-z-]+)\/`\s*$/.exec(line);
    if (heading) {
      current = heading[1];
      allowed.set(current, new Set());
      inRule = false;
      continue;
    }
    if (line.startsWith('#')) current = undefined;
    if (line.trim() === '' || line.startsWith('#')) inRule = false;
    else if (line.startsWith('**')) inRule = /^\*\*(?:May import|Also imports):\*\*/.test(line);
    if (current && inRule) for (const m of line.matchAll(/`([a-z-]+)\/`/g)) allowed.get(current)!.add(m[1]);
  }
  return allowed;
}

/** folder → imported folder → the files that import it. */
function actualImports(): Map<string, Map<string, string[]>> {
  const result = new Map<string, Map<string, string[]>>();
  for (const entry of readdirSync(SRC, { withFileTypes: true, recursive: true })) {
    if (!entry.isFile() || !/\.(ts|mjs)$/.test(entry.name)) continue;
    const file = path.join(entry.parentPath, entry.name);
    const folder = path.relative(SRC, file).split(path.sep)[0];
    const text = readFileSync(file, 'utf8');
    for (const m of text.matchAll(/(?:from|import)\s*\(?\s*['"](\.{1,2}\/[^'"]+)['"]/g)) {
      const target = path.relative(SRC, path.resolve(path.dirname(file), m[1])).split(path.sep)[0];
      if (target === folder || target.startsWith('..')) continue;
      const byTarget = result.get(folder) ?? new Map<string, string[]>();
      byTarget.set(target, [...(byTarget.get(target) ?? []), path.relative(SRC, file)]);
      result.set(folder, byTarget);
    }
  }
  return result;
}

describe('docs/architecture.md', () => {
  const allowed = allowedImports(MAP);

  it('describes every folder of server/src', () => {
    const folders = readdirSync(SRC, { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => e.name);
    expect(folders.length).toBeGreaterThan(5);
    expect(folders.filter((f) => !allowed.has(f))).toEqual([]);
  });

  it('lists every folder each folder imports', () => {
    const unlisted: string[] = [];
    for (const [folder, targets] of actualImports()) {
      for (const [target, files] of targets) {
        if (!allowed.get(folder)?.has(target)) unlisted.push(`${folder}/ imports ${target}/ (${[...new Set(files)].join(', ')})`);
      }
    }
    expect(unlisted).toEqual([]);
  });

  it('reads the map as written: an import outside a section is caught', () => {
    const map = allowedImports(
      '### `registry/`\n\nOwns `http/` nothing.\n\n**May import:** `storage/`.\n\n### `config/`\n\n**May import:** nothing.\n**Also imports:** `auth/`: why,\nand `ops/` on the next line.\n\nNot `cli/`.\n',
    );
    expect([...map.get('registry')!]).toEqual(['storage']);
    expect([...map.get('config')!]).toEqual(['auth', 'ops']);
  });
});
