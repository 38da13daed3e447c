// The compiled build (server/bin/build.mjs) and the `registry` bin that runs
// it, on a copy of the checkout in a temp directory (its own dist/, so the
// builds here never race the other tests' servers): a fresh clone starts
// with no build step, an edit is rebuilt, concurrent starts share one build,
// stack traces name the TypeScript sources, the ops jobs exist compiled, and
// SIGTERM to `npm start` stops the server.
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { jobCommand } from '../../infra/render/ops.ts';
import { OPS_JOBS } from '../../infra/render/layout.ts';
import { cleanEnv, freePort, REPO_ROOT } from '../helpers/process.ts';
import { NODE_ENV, NODE_FLAGS } from '../../server/bin/runtime.mjs';

/** A checkout of the sources (no dist/), sharing this one's node_modules. */
function checkoutCopy(): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'rs-build-'));
  for (const entry of ['package.json', 'tsconfig.json', 'server', 'scripts']) {
    cpSync(path.join(REPO_ROOT, entry), path.join(dir, entry), { recursive: true });
  }
  symlinkSync(path.join(REPO_ROOT, 'node_modules'), path.join(dir, 'node_modules'));
  return dir;
}

function run(dir: string, args: string[]) {
  return spawnSync(process.execPath, [path.join(dir, 'server/bin/registry.mjs'), ...args], { cwd: dir, encoding: 'utf8', env: cleanEnv() });
}

function runAsync(dir: string, args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [path.join(dir, 'server/bin/registry.mjs'), ...args], { cwd: dir, env: cleanEnv() });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c));
    child.stderr.on('data', (c: Buffer) => (stderr += c));
    child.once('close', (code) => resolve({ code, stdout, stderr }));
  });
}

const buildInfo = (dir: string) => JSON.parse(readFileSync(path.join(dir, 'dist/build-info.json'), 'utf8')) as { startedAt: number; inputs: string[] };
const VERSION = (JSON.parse(readFileSync(path.join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string }).version;

describe('the compiled build', () => {
  let dir: string;

  beforeAll(() => {
    dir = checkoutCopy();
  });

  afterAll(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  test('a fresh checkout starts with no build step: the bin builds dist/, then reuses it until a source changes', () => {
    expect(existsSync(path.join(dir, 'dist'))).toBe(false);
    const first = run(dir, ['--version']);
    expect(first.stderr).toBe('');
    expect(first.stdout.trim()).toBe(VERSION);
    const built = buildInfo(dir);
    expect(built.inputs).toContain('server/src/cli/main.ts');
    expect(built.inputs).toContain('scripts/monitor.ts');

    expect(run(dir, ['--version']).stdout.trim()).toBe(VERSION);
    expect(buildInfo(dir).startedAt).toBe(built.startedAt);

    // An edit: the file is newer than the build.
    const later = new Date(Date.now() + 1000);
    utimesSync(path.join(dir, 'server/src/storage/filesystem.ts'), later, later);
    expect(run(dir, ['--version']).stdout.trim()).toBe(VERSION);
    expect(buildInfo(dir).startedAt).toBeGreaterThan(built.startedAt);
  });

  test('servers started together on a stale checkout all run (one build, the others wait for it)', async () => {
    rmSync(path.join(dir, 'dist'), { recursive: true, force: true });
    const runs = await Promise.all(Array.from({ length: 4 }, () => runAsync(dir, ['--version'])));
    for (const r of runs) expect({ code: r.code, stdout: r.stdout.trim(), stderr: r.stderr }).toEqual({ code: 0, stdout: VERSION, stderr: '' });
    expect(existsSync(`${path.join(dir, 'dist')}.lock`)).toBe(false);
  });

  test('a build killed half-way leaves a lock that the next start takes over', () => {
    rmSync(path.join(dir, 'dist'), { recursive: true, force: true });
    const lock = `${path.join(dir, 'dist')}.lock`;
    mkdirSync(lock);
    // A pid no process has: above the kernel's pid_max.
    writeFileSync(path.join(lock, 'pid'), String(2 ** 22 + 1));
    const r = run(dir, ['--version']);
    expect({ status: r.status, stdout: r.stdout.trim() }).toEqual({ status: 0, stdout: VERSION });
    expect(existsSync(lock)).toBe(false);
  });

  test('the ops jobs the crontab runs exist compiled and answer --help', () => {
    run(dir, ['--version']);
    for (const job of OPS_JOBS) {
      const rel = /\/opt\/registry-stack\/(\S+\.js)$/.exec(jobCommand(job.name))?.[1];
      expect(rel, jobCommand(job.name)).toBe(`dist/scripts/${job.name}.js`);
      const r = spawnSync(process.execPath, ['--enable-source-maps', path.join(dir, rel!), '--help'], { cwd: dir, encoding: 'utf8' });
      expect(r.status, `${job.name}: ${r.stderr}`).toBe(0);
      expect(r.stdout).toContain('Usage');
    }
  });

  test('a stack trace from the compiled server names the TypeScript file and line', () => {
    const copy = checkoutCopy();
    try {
      const main = path.join(copy, 'server/src/cli/main.ts');
      writeFileSync(main, `// line 1\nconst where: string = 'compiled';\nthrow new Error(\`boom from \${where}\`);\n`);
      const r = run(copy, ['--version']);
      expect(r.status).not.toBe(0);
      expect(r.stderr).toContain('boom from compiled');
      expect(r.stderr).toMatch(/server\/src\/cli\/main\.ts:3:7/);
    } finally {
      rmSync(copy, { recursive: true, force: true });
    }
  });

  test('a source that does not compile: the bin says where and exits 1', () => {
    const copy = checkoutCopy();
    try {
      writeFileSync(path.join(copy, 'server/src/cli/main.ts'), 'const x = ;\n');
      const r = run(copy, ['--version']);
      expect(r.status).toBe(1);
      expect(r.stderr).toContain('server/src/cli/main.ts:1');
    } finally {
      rmSync(copy, { recursive: true, force: true });
    }
  });
});

describe('npm start', () => {
  test('SIGTERM to the npm process stops the server (no orphan left running)', async () => {
    const dir = checkoutCopy();
    let npm: ChildProcess | undefined;
    try {
      const port = await freePort();
      npm = spawn('npm', ['start'], { cwd: dir, env: cleanEnv({ REGISTRY_HTTP_ADDR: `127.0.0.1:${port}` }), stdio: ['ignore', 'pipe', 'pipe'] });
      const exited = new Promise<void>((resolve) => npm!.once('exit', () => resolve()));
      await new Promise<void>((resolve, reject) => {
        let out = '';
        npm!.stdout!.on('data', (c: Buffer) => {
          out += c;
          if (out.includes('"registry listening"')) resolve();
        });
        npm!.once('exit', (code) => reject(new Error(`npm start exited (${code}) before the server listened: ${out}`)));
      });
      const tree = descendants(npm.pid!);
      expect(tree.some((pid) => readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('registry.mjs'))).toBe(true);
      npm.kill('SIGTERM');
      await exited;
      const left = tree.filter((pid) => running(pid));
      for (const pid of left) process.kill(pid, 'SIGKILL');
      expect(left, 'processes of `npm start` still running after npm exited').toEqual([]);
    } finally {
      if (npm && npm.exitCode === null) npm.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('npm start, the container image and the bin run node with the flags and environment of server/bin/runtime.mjs', () => {
    const start = (JSON.parse(readFileSync(path.join(REPO_ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string> }).scripts.start;
    const env = Object.entries(NODE_ENV).map(([k, v]) => `${k}=${v}`);
    expect(start).toBe(`${env.join(' ')} exec node ${NODE_FLAGS.join(' ')} server/bin/registry.mjs serve`);
    const dockerfile = readFileSync(path.join(REPO_ROOT, 'server/Dockerfile'), 'utf8');
    for (const e of env) expect(dockerfile).toMatch(new RegExp(`^ENV .*\\b${e}\\b`, 'm'));
    const cmd = JSON.parse(/^CMD (\[.*\])$/m.exec(dockerfile)![1]) as string[];
    expect(cmd).toEqual(['node', ...NODE_FLAGS, 'server/bin/registry.mjs', 'serve', '/etc/registry/config.yml']);
    // The bin run as a program (npm's bin link): its #! line.
    const shebang = readFileSync(path.join(REPO_ROOT, 'server/bin/registry.mjs'), 'utf8').split('\n')[0];
    expect(shebang).toBe(`#!/usr/bin/env -S ${env.join(' ')} node ${NODE_FLAGS.join(' ')}`);
  });
});

/** Every process below `pid`, read from /proc (children of each thread). */
function descendants(pid: number): number[] {
  const out: number[] = [];
  const walk = (p: number) => {
    for (const task of safeList(`/proc/${p}/task`)) {
      for (const child of safeRead(`/proc/${p}/task/${task}/children`).split(' ').filter(Boolean).map(Number)) {
        out.push(child);
        walk(child);
      }
    }
  };
  walk(pid);
  return out;
}

function running(pid: number): boolean {
  const status = safeRead(`/proc/${pid}/status`);
  return status !== '' && !/^State:\s+Z/m.test(status);
}

function safeRead(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}

function safeList(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}
