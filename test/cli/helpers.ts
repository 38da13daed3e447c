// The `registry` command as a child process, the way a user runs it: one-shot
// runs collected whole, and long-running ones (serve) read until a line shows.
import { type ChildProcess, spawn } from 'node:child_process';
import * as path from 'node:path';
import { cleanEnv, REPO_ROOT } from '../helpers/process.ts';

export const REGISTRY_BIN = path.join(REPO_ROOT, 'server', 'bin', 'registry.mjs');

export interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  cwd?: string;
  env?: Record<string, string | undefined>;
  /** A run that should have ended is killed after this, and the assertions see what it printed. */
  timeoutMs?: number;
}

/** Runs `node <script> args` to its end. */
export function runNode(script: string[], options: RunOptions = {}): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, script, { cwd: options.cwd ?? REPO_ROOT, env: cleanEnv(options.env), stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 30_000);
    child.once('error', reject);
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

export function runRegistry(args: string[], options: RunOptions = {}): Promise<Run> {
  return runNode([REGISTRY_BIN, ...args], options);
}

/** `registry robot …` as users run it: the bin, compiled (dist/, rebuilt first when a source changed). */
export function runRobot(args: string[]): Promise<Run> {
  return runRegistry(['robot', ...args], { timeoutMs: 60_000 });
}

export interface Running {
  child: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  stop: () => Promise<void>;
}

/** Starts `registry args` and resolves once stderr or stdout matches `ready` (rejects if it exits first). */
export function startRegistry(args: string[], ready: RegExp, options: RunOptions = {}): Promise<Running> {
  const child = spawn(process.execPath, [REGISTRY_BIN, ...args], { cwd: options.cwd ?? REPO_ROOT, env: cleanEnv(options.env), stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    await exited;
  };
  return new Promise((resolve, reject) => {
    const check = () => {
      if (ready.test(stderr) || ready.test(stdout)) resolve({ child, stdout: () => stdout, stderr: () => stderr, stop });
    };
    child.stdout!.on('data', (c: Buffer) => {
      stdout += c.toString();
      check();
    });
    child.stderr!.on('data', (c: Buffer) => {
      stderr += c.toString();
      check();
    });
    child.once('error', reject);
    void exited.then(() => reject(new Error(`registry ${args.join(' ')} exited (${child.exitCode}) before ${ready}:\n${stdout}\n${stderr}`)));
  });
}

/** Exactly one line on stderr, `registry: …`, no stack trace, nothing on stdout, exit 2. */
export function oneLineError(r: Run, ...mentions: string[]): string {
  const where = `stdout: ${r.stdout}\nstderr: ${r.stderr}`;
  if (r.code !== 2) throw new Error(`expected exit 2, got ${r.code}\n${where}`);
  const lines = r.stderr.replace(/\n$/, '').split('\n');
  if (lines.length !== 1 || !lines[0].startsWith('registry: ') || /\n\s+at /.test(r.stderr)) throw new Error(`expected one line "registry: …"\n${where}`);
  for (const m of mentions) if (!lines[0].includes(m)) throw new Error(`expected the line to mention ${JSON.stringify(m)}\n${where}`);
  return lines[0];
}
