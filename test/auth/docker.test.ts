// The docker CLI with a real engine (a private dockerd: its own data root,
// exec root and socket, vfs, no bridge) against the built-in token server:
// `docker login` stores a refresh token (identitytoken), never the password;
// push and pull through it, also an hour of token time later; a push the
// policy refuses says "denied"; anonymous pulls; a new password ends the login.
// Needs root and Debian's docker.io (skipped without).
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { run, type RunResult } from '../helpers/clients.ts';
import { buildImage, writeOciLayout } from '../helpers/oci.ts';
import { cleanEnv, makeTempDir, OutputLog, sleep } from '../helpers/process.ts';
import { writeHtpasswd } from '../helpers/server.ts';
import { startTokenServer, type TokenTestServer } from './helpers.ts';

const USERS = { alice: 'alice-pw', carol: 'carol-pw' };
const POLICY = `
repositories:
  "team/**": { users: { alice: [pull, push, delete] }, default: [pull] }
  "public/**": { anonymous: [pull], users: { alice: [pull, push] } }
`;
const HOUR = 3_600_000;

const haveDocker = (() => {
  try {
    execFileSync('sh', ['-c', 'command -v dockerd && command -v docker && command -v containerd'], { stdio: 'ignore' });
    return process.getuid?.() === 0;
  } catch {
    return false;
  }
})();

/** A private engine; everything under one short directory (unix socket paths are short). */
class PrivateDockerd {
  private constructor(
    readonly dir: string,
    private readonly child: ChildProcess,
    readonly output: OutputLog,
    private readonly exited: Promise<void>,
  ) {}

  static async start(dir: string): Promise<PrivateDockerd> {
    const output = new OutputLog();
    const child = spawn(
      'dockerd',
      [
        '--data-root', path.join(dir, 'root'),
        '--exec-root', path.join(dir, 'x'),
        '--pidfile', path.join(dir, 'pid'),
        '-H', `unix://${dir}/sock`,
        '--storage-driver=vfs', '--iptables=false', '--ip6tables=false', '--bridge=none',
      ],
      { env: cleanEnv(), stdio: ['ignore', 'pipe', 'pipe'] },
    );
    child.stdout?.on('data', (c: Buffer) => output.push(c));
    child.stderr?.on('data', (c: Buffer) => output.push(c));
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    const engine = new PrivateDockerd(dir, child, output, exited);
    const deadline = Date.now() + 60_000;
    for (;;) {
      if (child.exitCode !== null) throw new Error(`dockerd exited at start:\n${output}`);
      if (existsSync(path.join(dir, 'sock')) && (await engine.docker(['version'], true)).code === 0) return engine;
      if (Date.now() > deadline) {
        await engine.stop();
        throw new Error(`dockerd did not answer within 60 s:\n${output}`);
      }
      await sleep(200);
    }
  }

  docker(args: string[], allowFailure = false, input?: string): Promise<RunResult> {
    const env = cleanEnv({ DOCKER_HOST: `unix://${this.dir}/sock`, DOCKER_CONFIG: path.join(this.dir, 'client') });
    if (input === undefined) return run('docker', args, { env, allowFailure, timeoutMs: 180_000 });
    // --password-stdin: the CLI reads the password from standard input.
    return run('sh', ['-c', `printf %s "$PW" | docker ${args.map((a) => `'${a}'`).join(' ')}`], { env: { ...env, PW: input }, allowFailure, timeoutMs: 60_000 });
  }

  get clientConfig(): any {
    return JSON.parse(readFileSync(path.join(this.dir, 'client', 'config.json'), 'utf8'));
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null) return;
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 20_000);
    await this.exited;
    clearTimeout(timer);
  }
}

describe.runIf(haveDocker)('docker CLI against the built-in token server', () => {
  let work: string;
  let server: TokenTestServer;
  let engine: PrivateDockerd;
  let host: string;
  const image = buildImage({ files: [{ 'hello.txt': 'docker token test\n' }] });

  beforeAll(async () => {
    work = makeTempDir('rs-dk-');
    server = await startTokenServer({ policy: POLICY, users: USERS });
    host = new URL(server.url).host;
    mkdirSync(path.join(work, 'e'));
    engine = await PrivateDockerd.start(path.join(work, 'e'));
    const layout = path.join(work, 'layout');
    writeOciLayout(layout, 'v1', image);
    const archive = path.join(work, 'app.tar');
    await run('skopeo', ['--insecure-policy', 'copy', `oci:${layout}:v1`, `docker-archive:${archive}:${host}/team/app:v1`], { env: cleanEnv() });
    await engine.docker(['load', '-i', archive]);
  }, 180_000);

  afterAll(async () => {
    await engine?.stop();
    await server?.stop();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  test('docker login keeps a refresh token, not the password; push and pull through it, an hour later too', async () => {
    const login = await engine.docker(['login', '-u', 'alice', '--password-stdin', host], false, USERS.alice);
    expect(login.stdout).toMatch(/Login Succeeded/);
    const stored = engine.clientConfig.auths[host];
    expect(stored.identitytoken).toBeTruthy();
    expect(Buffer.from(stored.auth ?? '', 'base64').toString()).not.toContain(USERS.alice);

    await engine.docker(['push', `${host}/team/app:v1`]);
    server.clock.advance(HOUR);
    await engine.docker(['tag', `${host}/team/app:v1`, `${host}/team/app:later`]);
    await engine.docker(['push', `${host}/team/app:later`]);
    await engine.docker(['rmi', `${host}/team/app:later`]);
    await engine.docker(['pull', `${host}/team/app:later`]);
    const tags = await fetch(`${server.url}/v2/team/app/tags/list`, { headers: { authorization: `Basic ${Buffer.from(`alice:${USERS.alice}`).toString('base64')}` } });
    expect((await tags.json()).tags.sort()).toEqual(['later', 'v1']);
  });

  test('a push the policy refuses says denied; anonymous clients pull only public repositories', async () => {
    await engine.docker(['login', '-u', 'carol', '--password-stdin', host], false, USERS.carol);
    await engine.docker(['tag', `${host}/team/app:v1`, `${host}/team/carol:v1`]);
    const denied = await engine.docker(['push', `${host}/team/carol:v1`], true);
    expect(denied.code).not.toBe(0);
    expect(denied.stderr + denied.stdout).toMatch(/denied/i);
    await engine.docker(['pull', `${host}/team/app:v1`]);

    await engine.docker(['login', '-u', 'alice', '--password-stdin', host], false, USERS.alice);
    await engine.docker(['tag', `${host}/team/app:v1`, `${host}/public/base:v1`]);
    await engine.docker(['push', `${host}/public/base:v1`]);
    await engine.docker(['logout', host]);
    await engine.docker(['rmi', `${host}/public/base:v1`, `${host}/team/app:v1`]);
    await engine.docker(['pull', `${host}/public/base:v1`]);
    const refused = await engine.docker(['pull', `${host}/team/app:v1`], true);
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toMatch(/unauthorized|authentication required|pull access denied/i);
  });

  test('a new password ends the login kept by docker login', async () => {
    await engine.docker(['login', '-u', 'alice', '--password-stdin', host], false, USERS.alice);
    writeHtpasswd(server.htpasswdFile, { ...USERS, alice: 'alice-new-pw' });
    server.clock.advance(3_000);
    const push = await engine.docker(['push', `${host}/public/base:v1`], true);
    expect(push.code).not.toBe(0);
    expect(push.stderr + push.stdout).toMatch(/unauthorized|authentication required|log in again/i);
    writeHtpasswd(server.htpasswdFile, USERS);
    server.clock.advance(3_000);
  });
});
