// `npm run stack:local` as a user runs it (infra/local/run.ts as a process):
// its banner's commands work as printed with skopeo, podman and curl (at
// 127.0.0.1, which every resolver knows), Caddy listens on loopback only, and
// bad ports are one line and exit 2.
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RegistryClient } from '../helpers/client.ts';
import { ContainersClients } from '../helpers/clients.ts';
import { buildImage, writeOciLayout } from '../helpers/oci.ts';
import { cleanEnv, freePort, makeTempDir, REPO_ROOT } from '../helpers/process.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { type Run, runNode } from './helpers.ts';

const RUN = ['--import', 'tsx', path.join(REPO_ROOT, 'infra/local/run.ts')];

function stackLocal(args: string[], env: Record<string, string | undefined>): Promise<Run> {
  return runNode([...RUN, ...args], { env, timeoutMs: 60_000 });
}

function expectOneLine(r: Run, ...mentions: string[]): void {
  expect(r.code, r.stderr).toBe(2);
  expect(r.stderr, r.stderr).toMatch(/^stack:local: [^\n]+\n$/);
  for (const m of mentions) expect(r.stderr).toContain(m);
}

describe('npm run stack:local: bad ports', () => {
  it('a port that is not a number is one line, exit 2 (not NaN in the Caddyfile)', async () => {
    const dir = makeTempDir('rs-cli-stack-bad-');
    for (const [name, value] of [['STACK_LOCAL_HTTPS_PORT', 'abc'], ['STACK_LOCAL_HTTP_PORT', '70000']]) {
      expectOneLine(await stackLocal([], { STACK_LOCAL_DIR: dir, [name]: value }), name, JSON.stringify(value));
    }
  });

  it('a port in use is one line naming it, exit 2, before anything starts', async () => {
    const blocker = net.createServer();
    await new Promise<void>((resolve) => blocker.listen({ host: '127.0.0.1', port: 0 }, resolve));
    const { port } = blocker.address() as net.AddressInfo;
    try {
      const dir = makeTempDir('rs-cli-stack-busy-');
      const r = await stackLocal([], { STACK_LOCAL_DIR: dir, STACK_LOCAL_HTTPS_PORT: String(port), STACK_LOCAL_HTTP_PORT: String(await freePort()) });
      expectOneLine(r, 'STACK_LOCAL_HTTPS_PORT', `127.0.0.1:${port}`, 'in use');
    } finally {
      blocker.close();
    }
  });

  it('an unknown option or a missing stack file is one line, exit 2', async () => {
    expectOneLine(await stackLocal(['--nope'], {}), '--nope');
    expectOneLine(await stackLocal(['/nonexistent/stack.yaml'], {}), '/nonexistent/stack.yaml', 'ENOENT');
  });
});

describe('npm run stack:local: the banner, run as printed', () => {
  let upstream: TestServer;
  let child: ChildProcess;
  let exited: Promise<void>;
  let banner = '';
  let work: string;
  let httpsPort: number;
  let httpPort: number;
  let clients: ContainersClients;
  const alpine = buildImage({ files: [{ 'etc/os-release': 'NAME=not-alpine\n' }] });

  beforeAll(async () => {
    work = makeTempDir('rs-cli-stack-');
    // The mirror's upstream: a registry on loopback with the image the banner pulls.
    upstream = await startTestServer({ anonymousPull: true });
    await new RegistryClient(upstream.url, upstream.auth).pushImage('library/alpine', '3.20', alpine);
    const host = new URL(upstream.url).host;
    const stackFile = path.join(work, 'Pulumi.local.yaml');
    writeFileSync(
      stackFile,
      [
        'config:',
        '  registry-stack:mirror:',
        '    upstreams:',
        `      - {host: "${host}", url: "${upstream.url}"}`,
        `    defaultHost: "${host}"`,
        '  registry-stack:docker:',
        '    bcryptCost: 4',
        '',
      ].join('\n'),
    );
    [httpsPort, httpPort] = [await freePort(), await freePort()];
    child = spawn(process.execPath, [...RUN, stackFile], {
      cwd: REPO_ROOT,
      env: cleanEnv({ STACK_LOCAL_DIR: path.join(work, 'stack'), STACK_LOCAL_HTTPS_PORT: String(httpsPort), STACK_LOCAL_HTTP_PORT: String(httpPort) }),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    exited = new Promise((resolve) => child.once('exit', () => resolve()));
    let stderr = '';
    child.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
    await new Promise<void>((resolve, reject) => {
      child.stdout!.on('data', (c: Buffer) => {
        banner += c.toString();
        if (banner.includes('Ctrl-C stops everything.')) resolve();
      });
      void exited.then(() => reject(new Error(`stack:local exited before its banner:\n${banner}\n${stderr}`)));
    });
    clients = new ContainersClients([], path.join(work, 'clients'));
  });

  afterAll(async () => {
    if (child && child.exitCode === null) {
      child.kill('SIGTERM');
      await exited;
    }
    await upstream?.stop();
  });

  /** The banner's command lines that start with `tool `. */
  const commands = (tool: string) =>
    banner
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l.startsWith(`${tool} `));

  /** Runs one banner line through the shell; asynchronously, as the mirror's upstream answers from this process. */
  function sh(line: string): Promise<{ code: number | null; out: string }> {
    return new Promise((resolve, reject) => {
      const c = spawn('sh', ['-c', line], { cwd: work, env: clients.env, stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      c.stdout.on('data', (d: Buffer) => (out += d.toString()));
      c.stderr.on('data', (d: Buffer) => (out += d.toString()));
      c.once('error', reject);
      c.once('exit', (code) => resolve({ code, out }));
    });
  }

  it('Caddy listens on 127.0.0.1 only', () => {
    for (const port of [httpsPort, httpPort]) {
      const ss = spawnSync('ss', ['-ltnH', `sport = :${port}`], { encoding: 'utf8' });
      const locals = ss.stdout.trim().split('\n').map((l) => l.trim().split(/\s+/)[3]);
      expect(locals, ss.stdout).toEqual([`127.0.0.1:${port}`]);
    }
  });

  it('skopeo: login and copy at 127.0.0.1 with Caddy\'s CA (no *.localhost name needed)', async () => {
    const [login, copy] = commands('skopeo');
    expect(login).toMatch(/^skopeo login --cert-dir \S+ -u admin --password-stdin < \S+admin\.password 127\.0\.0\.1:\d+$/);
    expect(banner).not.toMatch(/docker:\/\/dcr\.localhost/);
    const layout = path.join(work, 'layout');
    mkdirSync(layout);
    const image = buildImage({ files: [{ 'app.txt': 'through caddy\n' }] });
    writeOciLayout(layout, 'v1', image);
    let r = await sh(login);
    expect(r.code, r.out).toBe(0);
    r = await sh(copy.replace('oci:IMAGE_DIR:TAG', `oci:${layout}:v1`));
    expect(r.code, r.out).toBe(0);
    const inspect = await sh(`skopeo inspect --raw --cert-dir ${path.join(work, 'stack', 'certs.d')} docker://127.0.0.1:${httpsPort}/team/app:v1`);
    expect(inspect.code, inspect.out).toBe(0);
    expect(JSON.parse(inspect.out).config.digest).toBe(image.config.digest);
  });

  it('podman: login and pull the image skopeo pushed', async () => {
    const [login, pull] = commands('podman').filter((l) => !l.includes('--tls-verify=false'));
    for (const line of [login, pull]) {
      const r = await sh(line);
      expect(r.code, `${line}\n${r.out}`).toBe(0);
    }
  });

  it('curl: the private registry and the mirror host with the origin header', async () => {
    const [catalog, mirror] = commands('curl');
    const a = await sh(`${catalog} -fsS`);
    expect(a.code, a.out).toBe(0);
    expect(JSON.parse(a.out).repositories).toContain('team/app');
    const b = await sh(`${mirror} -fsS -o /dev/null -w '%{http_code}'`);
    expect(b.out).toBe('200');
  });

  it('the mirror for clients that cannot add a header: skopeo and podman at its loopback address', async () => {
    const lines = [...commands('skopeo'), ...commands('podman')].filter((l) => l.includes('alpine:3.20'));
    expect(lines).toHaveLength(2);
    for (const line of lines) {
      const r = await sh(line);
      expect(r.code, `${line}\n${r.out}`).toBe(0);
    }
    expect((await sh(lines[0])).out).toContain(alpine.manifest.digest);
  });
});
