// docs/architecture.md says how server/src is layered: a diagram of the
// layers (each line imports only the lines below it), and for each folder
// which other folders its files may import ("May import"), with any known
// exception under "Also imports". This reads those and every relative import
// of the folder's files (type-only ones included): an import the map does not
// list, a folder the map does not describe, a "May import" that points up the
// diagram, an exception that no longer exists, or files that import each other
// in a cycle, fails.
import { readdirSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../helpers/process.ts';

const SRC = path.join(REPO_ROOT, 'server/src');
const MAP = readFileSync(path.join(REPO_ROOT, 'docs/architecture.md'), 'utf8');

interface ImportMap {
  /** folder → the folders its **May import** line allows. */
  may: Map<string, Set<string>>;
  /** folder → the folders its **Also imports** line lists (edges against the grain). */
  also: Map<string, Set<string>>;
}

/** The **May import** and **Also imports** lines of each `### \`folder/\`` section. */
function importMap(markdown: string): ImportMap {
  const may = new Map<string, Set<string>>();
  const also = new Map<string, Set<string>>();
  let current: string | undefined;
  // Inside a **May import** / **Also imports** paragraph (it may wrap): every `folder/` it names counts.
  let rule: Map<string, Set<string>> | undefined;
  for (const line of markdown.split('\n')) {
    const heading = /^### `([a-z-]+)\/`\s*$/.exec(line);
    if (heading) {
      current = heading[1];
      may.set(current, new Set());
      also.set(current, new Set());
      rule = undefined;
      continue;
    }
    if (line.startsWith('#')) current = undefined;
    if (line.trim() === '' || line.startsWith('#')) rule = undefined;
    else if (line.startsWith('**')) rule = line.startsWith('**May import:**') ? may : line.startsWith('**Also imports:**') ? also : undefined;
    if (current && rule) for (const m of line.matchAll(/`([a-z-]+)\/`/g)) rule.get(current)!.add(m[1]);
  }
  return { may, also };
}

/**
 * folder → its line in the diagram under "## The layers" (0 at the top). A line
 * starts with the folders on it, separated by spaces, then says what they are.
 */
function layers(markdown: string, folders: Set<string>): Map<string, number> {
  const section = markdown.split(/^## The layers\s*$/m)[1] ?? '';
  const diagram = /```\n([\s\S]*?)```/.exec(section)?.[1] ?? '';
  const rank = new Map<string, number>();
  diagram
    .split('\n')
    .filter((line) => line.trim() !== '')
    .forEach((line, i) => {
      for (const word of line.trim().split(/\s+/)) {
        if (!folders.has(word)) break;
        rank.set(word, i);
      }
    });
  return rank;
}

interface SourceFile {
  /** Relative to server/src. */
  file: string;
  folder: string;
  /** The files it imports, relative to server/src. */
  imports: string[];
}

function sources(): SourceFile[] {
  const out: SourceFile[] = [];
  for (const entry of readdirSync(SRC, { withFileTypes: true, recursive: true })) {
    if (!entry.isFile() || !/\.(ts|mjs)$/.test(entry.name)) continue;
    const file = path.join(entry.parentPath, entry.name);
    const text = readFileSync(file, 'utf8');
    const imports = [...text.matchAll(/(?:from|import)\s*\(?\s*['"](\.{1,2}\/[^'"]+)['"]/g)].map((m) =>
      path.relative(SRC, path.resolve(path.dirname(file), m[1])),
    );
    const rel = path.relative(SRC, file);
    out.push({ file: rel, folder: rel.split(path.sep)[0], imports });
  }
  return out;
}

/** folder → imported folder → the files that import it. */
function folderImports(files: SourceFile[]): Map<string, Map<string, string[]>> {
  const result = new Map<string, Map<string, string[]>>();
  for (const { file, folder, imports } of files) {
    for (const imported of imports) {
      const target = imported.split(path.sep)[0];
      if (target === folder || target.startsWith('..')) continue;
      const byTarget = result.get(folder) ?? new Map<string, string[]>();
      byTarget.set(target, [...(byTarget.get(target) ?? []), file]);
      result.set(folder, byTarget);
    }
  }
  return result;
}

/** The import cycles among files, each as the files around it. */
function cycles(files: SourceFile[]): string[] {
  const graph = new Map(files.map((f) => [f.file, f.imports]));
  const state = new Map<string, 'open' | 'closed'>();
  const found: string[] = [];
  const visit = (file: string, stack: string[]): void => {
    state.set(file, 'open');
    stack.push(file);
    for (const next of graph.get(file) ?? []) {
      if (state.get(next) === 'open') found.push([...stack.slice(stack.indexOf(next)), next].join(' -> '));
      else if (!state.has(next)) visit(next, stack);
    }
    stack.pop();
    state.set(file, 'closed');
  };
  for (const file of graph.keys()) if (!state.has(file)) visit(file, []);
  return found;
}

describe('docs/architecture.md', () => {
  const { may, also } = importMap(MAP);
  const files = sources();
  const actual = folderImports(files);
  const folders = readdirSync(SRC, { withFileTypes: true })
    .filter((e) => e.isDirectory())
    .map((e) => e.name);
  const rank = layers(MAP, new Set(folders));

  it('describes every folder of server/src, and draws it in the layers', () => {
    expect(folders.length).toBeGreaterThan(5);
    expect(folders.filter((f) => !may.has(f))).toEqual([]);
    expect(folders.filter((f) => !rank.has(f))).toEqual([]);
  });

  it('lists every folder each folder imports', () => {
    const unlisted: string[] = [];
    for (const [folder, targets] of actual) {
      for (const [target, importers] of targets) {
        if (!may.get(folder)?.has(target) && !also.get(folder)?.has(target)) {
          unlisted.push(`${folder}/ imports ${target}/ (${[...new Set(importers)].join(', ')})`);
        }
      }
    }
    expect(unlisted).toEqual([]);
  });

  it('lets each folder import only folders on lower lines of the layers', () => {
    const upward: string[] = [];
    for (const [folder, targets] of may) {
      for (const target of targets) {
        if (!((rank.get(target) ?? -1) > (rank.get(folder) ?? Number.POSITIVE_INFINITY))) upward.push(`${folder}/ may import ${target}/`);
      }
    }
    expect(upward).toEqual([]);
  });

  it('lists no exception (Also imports) that the code no longer has', () => {
    const gone: string[] = [];
    for (const [folder, targets] of also) {
      for (const target of targets) if (!actual.get(folder)?.has(target)) gone.push(`${folder}/ no longer imports ${target}/`);
    }
    expect(gone).toEqual([]);
  });

  it('has no import cycles among the files of server/src', () => {
    expect(files.length).toBeGreaterThan(50);
    expect(cycles(files)).toEqual([]);
  });

  it('reads the map as written: an import outside a section is caught, exceptions apart', () => {
    const map = importMap(
      '### `registry/`\n\nOwns `http/` nothing.\n\n**May import:** `storage/`.\n\n### `config/`\n\n**May import:** nothing.\n**Also imports:** `auth/`: why,\nand `ops/` on the next line.\n\nNot `cli/`.\n',
    );
    expect([...map.may.get('registry')!]).toEqual(['storage']);
    expect([...map.also.get('registry')!]).toEqual([]);
    expect([...map.may.get('config')!]).toEqual([]);
    expect([...map.also.get('config')!]).toEqual(['auth', 'ops']);
  });

  it('reads the layers as drawn: folders first on each line, then what they are', () => {
    const drawn = layers(
      '## The layers\n\n```\nhttp         the API\nproxy  auth  the proxy over storage\nstorage      bytes\n```\n\n## Next\n\n```\nauth\n```\n',
      new Set(['http', 'proxy', 'auth', 'storage']),
    );
    expect(Object.fromEntries(drawn)).toEqual({ http: 0, proxy: 1, auth: 1, storage: 2 });
  });

  it('finds a cycle through several files, and none in a chain', () => {
    const file = (name: string, imports: string[]): SourceFile => ({ file: name, folder: 'x', imports });
    expect(cycles([file('a', ['b']), file('b', ['c']), file('c', ['a'])])).toEqual(['a -> b -> c -> a']);
    expect(cycles([file('a', ['b']), file('b', ['c']), file('c', [])])).toEqual([]);
  });
});
