// Where the compiled build lives and whether it still matches the sources.
// Shared by the `registry` bin (which must decide in a few milliseconds on
// every start, so this module imports nothing but node:fs and node:path) and
// by build.mjs. Plain JavaScript: it runs before anything is compiled.
import { readFileSync, statSync } from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const DIST = path.join(ROOT, 'dist');
/** Written last by a build: the inputs it read (relative to ROOT) and when it started reading them. */
export const BUILD_INFO = path.join(DIST, 'build-info.json');
/** The server's entry in the build, and its source. */
export const SERVER_ENTRY = path.join(DIST, 'server', 'registry.js');
export const SERVER_SOURCE = path.join(ROOT, 'server', 'src', 'cli', 'main.ts');

/**
 * - `fresh`: dist/ was built from the sources as they are now;
 * - `stale`: a source changed, went away, or nothing was built yet;
 * - `prebuilt`: there are no sources to compare with (the container image,
 *   which holds only dist/), so dist/ is what runs.
 */
export function distState() {
  let info;
  try {
    info = JSON.parse(readFileSync(BUILD_INFO, 'utf8'));
  } catch {
    return exists(SERVER_SOURCE) || !exists(SERVER_ENTRY) ? 'stale' : 'prebuilt';
  }
  if (!exists(SERVER_SOURCE)) return 'prebuilt';
  // An input newer than the moment the build began reading is an edit the build may have missed.
  for (const rel of info.inputs) {
    let mtime;
    try {
      mtime = statSync(path.join(ROOT, rel)).mtimeMs;
    } catch {
      return 'stale';
    }
    if (mtime >= info.startedAt) return 'stale';
  }
  return 'fresh';
}

function exists(file) {
  try {
    statSync(file);
    return true;
  } catch {
    return false;
  }
}
