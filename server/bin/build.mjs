#!/usr/bin/env node
// `npm run build`: compiles the server and the ops jobs (scripts/) to
// JavaScript in dist/, with source maps, so nothing runs through a TypeScript
// loader in production (tsx is for development and tests).
//
//   node server/bin/build.mjs            build now
//   node server/bin/build.mjs --if-stale build only when a source changed (what the bin runs)
//
// esbuild, not tsc: 0.2 s instead of 6-9 s and 550 MB, which is what lets the
// bin build on demand. `npx tsc --noEmit` stays the type check. Our own code
// is bundled, one file per entry point; packages stay in node_modules;
// modules loaded with import() get their own chunks, so a mode that never
// loads the S3 SDK or ioredis never reads them.
//
// `new URL('<relative path>', import.meta.url)` in a source (a worker script,
// package.json) is rewritten to point from the compiled file to the same
// target: JavaScript and TypeScript targets are compiled as entry points of
// their own (dist/workers/), anything else is referenced where it is.
import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { BUILD_INFO, DIST, distState, ROOT } from './dist.mjs';

/**
 * The server and the ops jobs the crontab runs (infra/render/layout.ts OPS_JOBS;
 * test/unit/build.test.ts fails when one is missing here). Development tools
 * in scripts/ (docs-config.ts) run through tsx and are not built.
 */
const ENTRIES = {
  'server/registry': 'server/src/cli/main.ts',
  'scripts/gc': 'scripts/gc.ts',
  'scripts/monitor': 'scripts/monitor.ts',
  'scripts/prune': 'scripts/prune.ts',
  'scripts/renew-cert': 'scripts/renew-cert.ts',
};
/** Directories whose sources may name files with new URL(…, import.meta.url). */
const SOURCE_DIRS = ['server/src', 'scripts'];
const ASSET_URL = /new URL\(\s*(['"])([^'"]+)\1\s*,\s*import\.meta\.url\s*\)/g;
/**
 * Packages compiled into the build instead of imported from node_modules at run time.
 * zod: its package entry loads all of it (every locale, JSON Schema conversion: 820 KB of
 * source V8 keeps in the heap); bundled, and imported as `import * as z`, only what the
 * config schema uses is in the build (200 KB), and the server starts 1.9 MB smaller.
 * Everything else stays external (whole CommonJS packages gain nothing from bundling).
 */
const BUNDLED = new Set(['zod']);
const PACKAGE = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8'));
const EXTERNAL = Object.keys({ ...PACKAGE.dependencies, ...PACKAGE.devDependencies })
  .filter((name) => !BUNDLED.has(name))
  .flatMap((name) => [name, `${name}/*`]);
const LOCK = `${DIST}.lock`;
/** A lock older than this was left by a build that died. */
const LOCK_STALE_MS = 120_000;

/** Every output file sits two levels under dist/ (dist/<dir>/<file>.js), so one relative prefix fits them all. */
const OUT_TO_ROOT = '../..';

function sourceFiles(dir, out = []) {
  for (const entry of readdirSync(path.join(ROOT, dir), { withFileTypes: true })) {
    const rel = path.posix.join(dir, entry.name);
    if (entry.isDirectory()) {
      if (entry.name !== 'node_modules') sourceFiles(rel, out);
    } else if (/\.(ts|mts|mjs|js)$/.test(entry.name)) {
      out.push(rel);
    }
  }
  return out;
}

/** The files named by new URL(…, import.meta.url) in the sources: target (relative to ROOT) → rewritten URL. */
function assetUrls() {
  const entries = {};
  const urls = new Map();
  for (const dir of SOURCE_DIRS) {
    for (const file of sourceFiles(dir)) {
      for (const m of readFileSync(path.join(ROOT, file), 'utf8').matchAll(ASSET_URL)) {
        const target = path.posix.normalize(path.posix.join(path.posix.dirname(file), m[2]));
        if (target.startsWith('..')) throw new Error(`${file}: new URL('${m[2]}', import.meta.url) leaves the repository`);
        if (/\.(ts|mts|mjs|js)$/.test(target)) {
          const name = `workers/${path.posix.basename(target).replace(/\.(ts|mts|mjs|js)$/, '')}`;
          if (entries[name] && entries[name] !== target) throw new Error(`two workers named ${name}: ${entries[name]} and ${target}`);
          entries[name] = target;
          urls.set(target, `${OUT_TO_ROOT}/dist/${name}.js`);
        } else {
          urls.set(target, `${OUT_TO_ROOT}/${target}`);
        }
      }
    }
  }
  return { entries, urls };
}

function rewriteAssetUrls(urls) {
  return {
    name: 'asset-urls',
    setup(build) {
      build.onLoad({ filter: /\.(ts|mts|mjs|js)$/ }, (args) => {
        const rel = path.relative(ROOT, args.path).split(path.sep).join('/');
        if (rel.startsWith('..') || rel.includes('node_modules/')) return undefined;
        const text = readFileSync(args.path, 'utf8');
        if (!text.includes('import.meta.url')) return undefined;
        const contents = text.replace(ASSET_URL, (_all, _q, spec) => {
          const target = path.posix.normalize(path.posix.join(path.posix.dirname(rel), spec));
          return `new URL(${JSON.stringify(urls.get(target))}, import.meta.url)`;
        });
        return { contents, loader: args.path.endsWith('ts') ? 'ts' : 'js' };
      });
    },
  };
}

export async function build() {
  const esbuild = await import('esbuild');
  const startedAt = Date.now();
  const assets = assetUrls();
  // The previous build-info goes first: a build that dies half-way leaves dist/ stale, never "fresh".
  rmSync(BUILD_INFO, { force: true });
  const result = await esbuild.build({
    absWorkingDir: ROOT,
    entryPoints: { ...ENTRIES, ...assets.entries },
    outdir: DIST,
    bundle: true,
    splitting: true,
    chunkNames: 'chunks/[name]-[hash]',
    format: 'esm',
    platform: 'node',
    target: 'node20',
    external: EXTERNAL,
    // Stack traces name the TypeScript files and lines (node --enable-source-maps, set by the bin);
    // the maps don't carry the sources, which would only cost memory when they are loaded.
    sourcemap: 'linked',
    sourcesContent: false,
    // Names in stack traces and logs stay as written; the rest is minified, because V8 keeps every
    // module's source text in the heap (0.6 MB less RSS at start; the source maps still name the lines).
    keepNames: true,
    minify: true,
    metafile: true,
    // Written below, each file by a rename: a server starting meanwhile reads whole files, old or new.
    write: false,
    logLevel: 'warning',
    plugins: [rewriteAssetUrls(assets.urls)],
  });
  writeOutputs(result.outputFiles);
  const ui = await buildUi();
  pruneOldOutputs(new Set([...result.outputFiles, ...ui.outputFiles].map((f) => f.path)));
  const inputs = [...Object.keys(result.metafile.inputs), ...Object.keys(ui.metafile.inputs)].filter((f) => !f.includes('node_modules/'));
  inputs.push('server/bin/build.mjs', 'server/bin/dist.mjs', 'package.json', 'tsconfig.json');
  writeFileSync(`${BUILD_INFO}.tmp-${process.pid}`, `${JSON.stringify({ startedAt, inputs: inputs.sort() }, null, 1)}\n`);
  renameSync(`${BUILD_INFO}.tmp-${process.pid}`, BUILD_INFO);
}

function writeOutputs(files) {
  for (const file of files) {
    mkdirSync(path.dirname(file.path), { recursive: true });
    const tmp = `${file.path}.tmp-${process.pid}`;
    writeFileSync(tmp, file.contents);
    renameSync(tmp, file.path);
  }
}

/**
 * The web UI's client (server/src/ui/client/) for the browser: dist/ui/app.js
 * (Preact included, minified) and app.css, which the server serves at /ui/assets/.
 */
export async function buildUi(outdir = path.join(DIST, 'ui')) {
  const esbuild = await import('esbuild');
  const result = await esbuild.build({
    absWorkingDir: ROOT,
    entryPoints: [
      { in: 'server/src/ui/client/main.jsx', out: 'app' },
      { in: 'server/src/ui/client/app.css', out: 'app' },
    ],
    outdir,
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: ['chrome110', 'firefox110', 'safari16'],
    jsx: 'automatic',
    jsxImportSource: 'preact',
    minify: true,
    metafile: true,
    write: false,
    logLevel: 'warning',
  });
  writeOutputs(result.outputFiles);
  return result;
}

/**
 * Removes what earlier builds wrote and this one did not, once it is a day old:
 * a server started before this build may still import its chunks (the S3
 * driver is imported when the server starts), so they are not removed at once.
 */
function pruneOldOutputs(keep) {
  const cutoff = Date.now() - 86_400_000;
  for (const dir of readdirSync(DIST, { withFileTypes: true })) {
    if (!dir.isDirectory()) continue;
    for (const file of readdirSync(path.join(DIST, dir.name))) {
      const full = path.join(DIST, dir.name, file);
      if (!keep.has(full) && !keep.has(full.replace(/\.map$/, '')) && statSync(full).mtimeMs < cutoff) rmSync(full, { force: true });
    }
  }
}

/** One build at a time: servers started together (tests, replicas on one host) all find dist/ stale at once. */
async function withLock(fn) {
  mkdirSync(path.dirname(LOCK), { recursive: true });
  for (;;) {
    try {
      mkdirSync(LOCK);
      writeFileSync(path.join(LOCK, 'pid'), String(process.pid));
      break;
    } catch (err) {
      if (err.code !== 'EEXIST') throw err;
    }
    if (lockAbandoned()) rmSync(LOCK, { recursive: true, force: true });
    else await new Promise((resolve) => setTimeout(resolve, 50));
  }
  try {
    return await fn();
  } finally {
    rmSync(LOCK, { recursive: true, force: true });
  }
}

/** The builder holding the lock is gone (killed mid-build), or the lock is too old to be anyone's. */
function lockAbandoned() {
  try {
    if (Date.now() - statSync(LOCK).mtimeMs > LOCK_STALE_MS) return true;
    const pid = Number(readFileSync(path.join(LOCK, 'pid'), 'utf8'));
    process.kill(pid, 0);
    return false;
  } catch (err) {
    // ESRCH: no such process. ENOENT: the lock went meanwhile, or its pid is not written yet.
    return err.code === 'ESRCH';
  }
}

if (process.argv[1] && path.resolve(process.argv[1]) === path.join(ROOT, 'server/bin/build.mjs')) {
  const ifStale = process.argv.includes('--if-stale');
  try {
    await withLock(async () => {
      // A waiter finds the build another process just finished.
      if (ifStale && distState() !== 'stale') return;
      await build();
    });
  } catch (err) {
    // esbuild has printed the errors it found, with file and line.
    if (!err?.errors) process.stderr.write(`registry: build failed: ${err?.message ?? err}\n`);
    process.exit(1);
  }
}
