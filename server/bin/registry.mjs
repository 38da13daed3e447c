#!/usr/bin/env -S MALLOC_MMAP_THRESHOLD_=131072 node --optimize-for-size --single-threaded-gc --heap-growing-percent=20
// The `registry` command: runs the compiled server (dist/, `npm run build`).
// Run as a program (the npm bin link), the line above gives it the flags and
// environment of server/bin/runtime.mjs, as `npm start` and the image do.
// In a checkout, the build is redone first when a source is newer than it
// (about 0.3 s, in a child process so that esbuild never sits in the
// server's memory), so a fresh clone and an edited one both start with just
// `npm start`. The container image holds dist/ without the sources and runs
// it as it is.
import { spawnSync } from 'node:child_process';
import { distState, ROOT, SERVER_ENTRY } from './dist.mjs';

if (distState() === 'stale') {
  const built = spawnSync(process.execPath, [`${ROOT}/server/bin/build.mjs`, '--if-stale'], { stdio: ['ignore', 2, 2] });
  if (built.status !== 0) process.exit(built.status ?? 1);
}
// Stack traces name the TypeScript sources (same as node --enable-source-maps).
process.setSourceMapsEnabled(true);
await import(SERVER_ENTRY);
