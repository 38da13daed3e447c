// Executable documentation: every ```sh runnable block of the README and
// docs/*.md is run, in order, by bash -euo pipefail, and must succeed. Each
// doc gets its own directory (under the repository's .tmp/, so `npx registry`
// finds this checkout) and its own quick-start registry, started as `npm
// start` starts it (`registry serve` with no config, its data in ./data),
// holding one image, team/app:1.0. Addresses 127.0.0.1:<port> in the blocks
// are placeholders: each port the doc names is given a free one, 5000 the
// quick-start registry's and 5001 its admin listener's (REGISTRY_ADMIN_ADDR).
// ```yaml file=NAME blocks are written into the directory first; those marked
// `serve` are started as `registry serve NAME`. A line ending in `# => text`
// must print that text. Config examples (```yaml config) must load. Nothing
// here needs the network or Docker.
//
// The blocks' `npx registry …` runs this checkout's bin directly (an `npx` of
// our own first on PATH, handing anything else to the real one): npx itself
// costs about 1.4 CPU-seconds a call before it starts the bin, and the docs call
// it two dozen times. One test checks that the real npx, in a doc's directory,
// runs this checkout's `registry`, which is what the docs rely on.
import { type ChildProcess, spawn } from 'node:child_process';
import { accessSync, chmodSync, constants, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { parseAccessPolicy } from '../../server/src/auth/access-policy.ts';
import { loadConfigObject } from '../../server/src/config/load.ts';
import { RegistryClient } from '../helpers/client.ts';
import { buildImage } from '../helpers/oci.ts';
import { basicAuth, cleanEnv, freePort, REPO_ROOT } from '../helpers/process.ts';
import { type Block, blocksOf, docFiles } from './blocks.ts';

const REGISTRY_BIN = path.join(REPO_ROOT, 'server/bin/registry.mjs');
const DOCS = docFiles(REPO_ROOT);
const BLOCKS = new Map(DOCS.map((doc) => [doc, blocksOf(REPO_ROOT, doc)]));
const ALL = [...BLOCKS.values()].flat();
const where = (b: Block) => `${b.doc}:${b.line}`;
const QUICKSTART_PORT = '5000';
const QUICKSTART_ADMIN_PORT = '5001';
const ADDRESS = /127\.0\.0\.1:(\d{2,5})\b/g;
const VERSION = (JSON.parse(readFileSync(path.join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string }).version;

/**
 * `npx registry ARGS` as npx runs it in this checkout (the bin, with the Node flags of its
 * first line), without npx's own start-up; `npx` of anything else is the real npx.
 */
function writeNpxShim(binDir: string, realNpx: string): void {
  mkdirSync(binDir, { recursive: true });
  const shim = path.join(binDir, 'npx');
  writeFileSync(
    shim,
    `#!/bin/sh\nif [ "$1" = registry ]; then shift; exec '${REGISTRY_BIN}' "$@"; fi\nexec '${realNpx}' "$@"\n`,
  );
  chmodSync(shim, 0o755);
}

/** The npx that PATH finds (the shim hands everything but `registry` to it). */
function realNpxPath(env: NodeJS.ProcessEnv): string {
  for (const dir of (env.PATH ?? '').split(path.delimiter)) {
    const candidate = path.join(dir, 'npx');
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  throw new Error('npx is not on PATH');
}
const OUTPUT_LIMIT = 8000;
/** ```yaml file=NAME blocks that a config's auth.access names: access policies, not registry configs. */
const POLICY_FILES = new Set(
  ALL.filter((b) => b.file && b.lang === 'yaml').flatMap((b) => {
    try {
      const access = (parseYaml(b.text) as { auth?: { access?: unknown } } | null)?.auth?.access;
      return typeof access === 'string' ? [`${b.doc}:${path.basename(access)}`] : [];
    } catch {
      return [];
    }
  }),
);
const isPolicy = (b: Block) => b.file !== undefined && POLICY_FILES.has(`${b.doc}:${b.file}`);

describe('fenced blocks of the README and docs', () => {
  it('use only the attributes the runner knows, where they mean something', () => {
    const wrong: string[] = [];
    for (const b of ALL) {
      if (b.unknown.length > 0) wrong.push(`${where(b)}: unknown attribute ${b.unknown.join(' ')}`);
      if (b.runnable && b.lang !== 'sh') wrong.push(`${where(b)}: runnable is for sh blocks`);
      if (b.serve && !b.file) wrong.push(`${where(b)}: serve needs file=NAME`);
    }
    expect(wrong).toEqual([]);
  });

  it('include runnable examples where the docs promise them', () => {
    const withRunnable = new Set(ALL.filter((b) => b.runnable).map((b) => b.doc));
    for (const doc of ['README.md', 'docs/mirror.md', 'docs/operations.md', 'docs/troubleshooting.md', 'docs/security.md']) {
      expect(withRunnable, doc).toContain(doc);
    }
  });

  it('a `# =>` line fails its block when the command prints something else', async () => {
    const env = cleanEnv();
    expect((await bash(withExpectations('echo 200   # => 200\n'), REPO_ROOT, env)).code).toBe(0);
    const wrong = await bash(withExpectations("echo 200   # => 401\necho 'not reached'\n"), REPO_ROOT, env);
    expect(wrong.code).not.toBe(0);
    expect(wrong.stdout).not.toContain('not reached');
  });

  it('`npx registry` in a doc\'s directory runs this checkout\'s bin, offline (the real npx, as the docs use it)', async () => {
    mkdirSync(path.join(REPO_ROOT, '.tmp'), { recursive: true });
    const dir = mkdtempSync(path.join(REPO_ROOT, '.tmp', 'docs-npx-'));
    try {
      const env = cleanEnv({ HOME: dir, npm_config_offline: 'true', npm_config_update_notifier: 'false' });
      const ran = await bash('npx registry --version', dir, env);
      expect(ran, ran.stderr).toMatchObject({ code: 0, stdout: `${VERSION}\n` });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('every registry config example loads (a fragment with a storage driver added)', () => {
    const configs = ALL.filter((b) => b.config || (b.file && b.lang === 'yaml' && !isPolicy(b)));
    expect(configs.length).toBeGreaterThan(10);
    const failures: string[] = [];
    for (const b of configs) {
      let error: string | undefined;
      try {
        const raw = parseYaml(b.text) as Record<string, unknown>;
        // A fragment (`gc:` alone, or `storage: {delete: …}`) gets a driver; a whole config keeps its own.
        const storage = (raw.storage ?? {}) as Record<string, unknown>;
        const driver = 'filesystem' in storage || 's3' in storage ? {} : { filesystem: { rootdirectory: '/var/lib/registry' } };
        loadConfigObject({ ...raw, storage: { ...storage, ...driver } }, {}, where(b));
      } catch (err) {
        error = (err as Error).message;
      }
      if (b.invalid && !error) failures.push(`${where(b)}: shown as a mistake, but loads`);
      if (!b.invalid && error) failures.push(`${where(b)}: ${error}`);
    }
    expect(failures).toEqual([]);
  });
});

describe('access policy examples', () => {
  it('parse with the server\'s policy parser (the yaml file blocks a config names as auth.access)', () => {
    const policies = ALL.filter(isPolicy);
    expect(policies.length).toBeGreaterThan(0);
    for (const b of policies) expect(() => parseAccessPolicy(b.text, where(b)), where(b)).not.toThrow();
  });
});

interface Served {
  child: ChildProcess;
  exited: Promise<void>;
  output: () => string;
}

/** `registry serve [file]` in `cwd`, resolved once it logs that it listens. */
async function serve(cwd: string, args: string[], env: NodeJS.ProcessEnv, label: string): Promise<Served> {
  const child = spawn(process.execPath, [REGISTRY_BIN, 'serve', ...args], { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  const collect = (c: Buffer) => {
    log = (log + c.toString()).slice(-OUTPUT_LIMIT);
  };
  child.stderr!.on('data', collect);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  await new Promise<void>((resolve, reject) => {
    let pending = '';
    child.stdout!.on('data', (c: Buffer) => {
      collect(c);
      pending += c.toString();
      if (/"msg":"registry listening"/.test(pending)) resolve();
      pending = pending.slice(pending.lastIndexOf('\n') + 1);
    });
    void exited.then(() => reject(new Error(`${label} exited before listening:\n${log}`)));
  });
  return { child, exited, output: () => log };
}

interface Ran {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * A line `command   # => text` says what the command prints: the run checks
 * that its output contains the text, so an example cannot quietly drift from
 * what it shows.
 */
function withExpectations(script: string): string {
  const lines = script.split('\n');
  return lines
    .map((line, i) => {
      const m = /^(.*\S)\s+# => (.+?)\s*$/.exec(line);
      const continued = i > 0 && lines[i - 1].trimEnd().endsWith('\\');
      if (!m || continued || line.trimEnd().endsWith('\\')) return line;
      const expected = `'${m[2].replace(/'/g, `'\\''`)}'`;
      return `__out=$(${m[1]}); printf '%s\\n' "$__out"; grep -qF -- ${expected} <<<"$__out" || { echo "expected output containing: "${expected} >&2; exit 1; }`;
    })
    .join('\n');
}

function bash(script: string, cwd: string, env: NodeJS.ProcessEnv): Promise<Ran> {
  return new Promise((resolve) => {
    const child = spawn('bash', ['-euo', 'pipefail', '-c', script], { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout = (stdout + c.toString()).slice(-OUTPUT_LIMIT)));
    child.stderr.on('data', (c: Buffer) => (stderr = (stderr + c.toString()).slice(-OUTPUT_LIMIT)));
    child.once('close', (code) => resolve({ code, stdout, stderr }));
  });
}

for (const [doc, blocks] of BLOCKS) {
  const runnable = blocks.filter((b) => b.runnable);
  if (runnable.length === 0) continue;

  describe(`runnable blocks of ${doc}`, () => {
    let dir: string;
    let env: NodeJS.ProcessEnv;
    const ports = new Map<string, string>();
    const servers: Served[] = [];
    const substitute = (text: string) => text.replace(ADDRESS, (_, port: string) => `127.0.0.1:${ports.get(port) ?? port}`);

    beforeAll(async () => {
      mkdirSync(path.join(REPO_ROOT, '.tmp'), { recursive: true });
      dir = mkdtempSync(path.join(REPO_ROOT, '.tmp', 'docs-'));
      mkdirSync(path.join(dir, 'home'));
      // Every address the doc's blocks name gets a port of its own for this run.
      for (const b of blocks.filter((x) => x.runnable || x.file)) {
        for (const [, port] of b.text.matchAll(ADDRESS)) if (!ports.has(port)) ports.set(port, String(await freePort()));
      }
      for (const port of [QUICKSTART_PORT, QUICKSTART_ADMIN_PORT]) if (!ports.has(port)) ports.set(port, String(await freePort()));
      // npx must resolve `registry` from this checkout, never from the network; clients keep their logins here.
      env = cleanEnv({ HOME: path.join(dir, 'home'), XDG_RUNTIME_DIR: path.join(dir, 'home'), npm_config_offline: 'true', npm_config_update_notifier: 'false' });
      writeNpxShim(path.join(dir, 'bin'), realNpxPath(env));
      env.PATH = `${path.join(dir, 'bin')}${path.delimiter}${env.PATH ?? ''}`;

      const quickstart = await serve(
        dir,
        [],
        { ...env, REGISTRY_HTTP_ADDR: `127.0.0.1:${ports.get(QUICKSTART_PORT)}`, REGISTRY_ADMIN_ADDR: `127.0.0.1:${ports.get(QUICKSTART_ADMIN_PORT)}` },
        'the quick-start registry',
      );
      servers.push(quickstart);
      const password = readFileSync(path.join(dir, 'data/auth/admin.password'), 'utf8').trim();
      const client = new RegistryClient(`http://127.0.0.1:${ports.get(QUICKSTART_PORT)}`, basicAuth('admin', password));
      await client.pushImage('team/app', '1.0', buildImage({ files: [{ 'hello.txt': 'hello from team/app\n' }] }));

      for (const b of blocks.filter((x) => x.file)) writeFileSync(path.join(dir, b.file!), substitute(b.text));
      for (const b of blocks.filter((x) => x.serve)) servers.push(await serve(dir, [b.file!], env, `registry serve ${b.file} (${where(b)})`));
    });

    afterAll(async () => {
      for (const s of servers.reverse()) {
        s.child.kill('SIGTERM');
        await s.exited;
      }
      if (dir) rmSync(dir, { recursive: true, force: true });
    });

    for (const b of runnable) {
      it(`${where(b)} runs`, { timeout: 180_000 }, async () => {
        const script = withExpectations(substitute(b.text));
        const ran = await bash(script, dir, env);
        const report = `${where(b)} exited ${ran.code}\n--- block\n${script}--- stdout\n${ran.stdout}\n--- stderr\n${ran.stderr}\n--- servers\n${servers.map((s) => s.output()).join('\n')}`;
        expect(ran.code, report).toBe(0);
      });
    }
  });
}
