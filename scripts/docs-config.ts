// `npm run docs:config`: writes docs/configuration.md from the config schema
// (server/src/config/reference.ts). `--check` only compares, exit 1 when the
// file is stale, for CI. Keys without a description fail both: the reference
// must say something about every key the server accepts.
import { readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { renderConfigReference, undescribedKeys } from '../server/src/config/reference.ts';

export const CONFIG_REFERENCE = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../docs/configuration.md');

function main(argv: string[]): number {
  const check = argv.includes('--check');
  const unknown = argv.filter((a) => a !== '--check');
  if (unknown.length > 0) {
    process.stderr.write(`docs-config: unknown argument ${unknown[0]} (usage: npm run docs:config [-- --check])\n`);
    return 2;
  }
  const missing = undescribedKeys();
  if (missing.length > 0) {
    process.stderr.write(`docs-config: no .describe() in server/src/config/schema.ts for: ${missing.join(', ')}\n`);
    return 1;
  }
  const text = renderConfigReference();
  let current: string | undefined;
  try {
    current = readFileSync(CONFIG_REFERENCE, 'utf8');
  } catch {
    current = undefined;
  }
  if (check) {
    if (current === text) return 0;
    process.stderr.write('docs-config: docs/configuration.md is stale: run npm run docs:config\n');
    return 1;
  }
  if (current !== text) writeFileSync(CONFIG_REFERENCE, text);
  process.stdout.write(`docs/configuration.md ${current === text ? 'is up to date' : 'written'}\n`);
  return 0;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  process.exitCode = main(process.argv.slice(2));
}
