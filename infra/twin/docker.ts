// The twin drives Docker through the `docker` CLI, as a person at the VPS
// would: every call is one command line a newcomer can copy and run. The
// engine is chosen by DOCKER_HOST, so one process can drive several engines
// (the twin's VPS engine and its client engine).
import { spawn } from 'node:child_process';

export interface DockerResult {
  stdout: string;
  stderr: string;
  code: number;
}

export interface DockerRunOptions {
  /** Written to the command's stdin (a build context tar, a script). */
  input?: string | Buffer;
  /** Return a non-zero exit instead of throwing. */
  allowFail?: boolean;
  /** Extra environment (e.g. DOCKER_BUILDKIT=0). */
  env?: Record<string, string>;
  cwd?: string;
}

export class DockerError extends Error {
  constructor(
    readonly args: string[],
    readonly result: DockerResult,
  ) {
    super(`docker ${args.join(' ')} exited ${result.code}: ${result.stderr.trim().split('\n').slice(-3).join(' | ')}`);
    this.name = 'DockerError';
  }
}

export interface DockerCli {
  /** The engine, as DOCKER_HOST (unix:///path/docker.sock). */
  readonly host: string;
  run(args: string[], o?: DockerRunOptions): Promise<DockerResult>;
  /** run() and return stdout trimmed. */
  out(args: string[], o?: DockerRunOptions): Promise<string>;
}

/** Runs a command to its end, collecting its output; rejects only when it cannot start. */
export function runProcess(cmd: string, args: string[], o: { input?: string | Buffer; env?: NodeJS.ProcessEnv; cwd?: string } = {}): Promise<DockerResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: o.cwd, env: o.env ?? process.env, stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('error', reject);
    child.on('close', (code) => resolve({ stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString(), code: code ?? 1 }));
    child.stdin.on('error', () => {}); // a command that exits before reading all its input
    child.stdin.end(o.input ?? '');
  });
}

export function dockerCli(host: string, bin = 'docker'): DockerCli {
  const run = async (args: string[], o: DockerRunOptions = {}) => {
    const result = await runProcess(bin, args, { input: o.input, cwd: o.cwd, env: { ...process.env, DOCKER_HOST: host, ...o.env } });
    if (result.code !== 0 && !o.allowFail) throw new DockerError(args, result);
    return result;
  };
  return {
    host,
    run,
    out: async (args, o) => (await run(args, o)).stdout.trim(),
  };
}
