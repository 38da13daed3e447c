// `registry` itself: --version, usage errors (exit 2, one line), the help of
// serve, and the built-in default's banner, whose commands are run as printed.
import { spawn } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ContainersClients } from '../helpers/clients.ts';
import { buildImage, writeOciLayout } from '../helpers/oci.ts';
import { freePort, makeTempDir, REPO_ROOT } from '../helpers/process.ts';
import { oneLineError, runRegistry, type Running, startRegistry } from './helpers.ts';

describe('registry: version and usage errors', () => {
  it('--version (and -v) prints the version of the package, exit 0', async () => {
    const { version } = JSON.parse(readFileSync(path.join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string };
    for (const flag of ['--version', '-v']) {
      const r = await runRegistry([flag]);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toBe(`${version}\n`);
    }
  });

  it.each([
    [['nope'], "unknown command 'nope'"],
    [['serv'], 'serve'],
    [['--no-such-flag'], "unknown option '--no-such-flag'"],
    [['serve', 'a.yml', 'b.yml'], 'too many arguments'],
    [['mirror', 'pull'], "missing required argument 'image'"],
    [['prune'], "missing required argument 'config'"],
  ])('%j is a usage error: one line, exit 2, nothing on stdout', async (args, mention) => {
    const r = await runRegistry(args);
    oneLineError(r, mention);
    expect(r.stdout).toBe('');
  });

  it('no command at all shows the help on stderr and exits 2', async () => {
    const r = await runRegistry([]);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/^Usage: registry /);
  });

  it('--help exits 0 with the help on stdout', async () => {
    const r = await runRegistry(['--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('--version');
  });

  it('serve --help says how REGISTRY_* overrides work and how to change the port', async () => {
    const r = await runRegistry(['serve', '--help']);
    expect(r.code).toBe(0);
    for (const m of ['REGISTRY_HTTP_ADDR=127.0.0.1:5001', 'http.addr', 'REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY', 'Exit codes:']) expect(r.stdout).toContain(m);
  });
});

describe('registry serve with no config: the banner', () => {
  let work: string;
  let server: Running;
  let host: string;
  let clients: ContainersClients;

  beforeAll(async () => {
    work = makeTempDir('rs-cli-quick-');
    host = `127.0.0.1:${await freePort()}`;
    server = await startRegistry(['serve'], /\n\n$/, { cwd: work, env: { REGISTRY_HTTP_ADDR: host, REGISTRY_LOG_LEVEL: 'warn' } });
    clients = new ContainersClients([], path.join(work, 'clients'));
  });
  afterAll(async () => {
    await server?.stop();
  });

  /** The banner's lines for `tool`: the first starts "  tool:", the next ones are indented under it. */
  function commandsOf(tool: string): string[] {
    const lines = server.stderr().split('\n');
    const at = lines.findIndex((l) => l.startsWith(`  ${tool}:`));
    expect(at, server.stderr()).toBeGreaterThanOrEqual(0);
    const out = [lines[at].slice(`  ${tool}:`.length).trim()];
    for (const l of lines.slice(at + 1)) {
      if (!/^ {5,}\S/.test(l)) break;
      out.push(l.trim());
    }
    return out;
  }

  /** Runs one banner line through the shell, as a user pastes it, in the directory the server was started from. */
  function sh(line: string): Promise<{ code: number | null; out: string }> {
    return new Promise((resolve, reject) => {
      const child = spawn('sh', ['-c', line], { cwd: work, env: clients.env, stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      child.stdout.on('data', (c: Buffer) => (out += c.toString()));
      child.stderr.on('data', (c: Buffer) => (out += c.toString()));
      child.once('error', reject);
      child.once('exit', (code) => resolve({ code, out }));
    });
  }

  it('puts no password on a command line: the clients read it from its file (--password-stdin)', () => {
    const banner = server.stderr();
    const password = readFileSync(path.join(work, 'data', 'auth', 'admin.password'), 'utf8').trim();
    expect(banner).not.toContain(password);
    expect(banner).not.toMatch(/ -p /);
    for (const tool of ['docker', 'podman', 'skopeo']) expect(commandsOf(tool)[0]).toMatch(/ login .*--password-stdin < \.\/data\/auth\/admin\.password$/);
    // Plain HTTP: Docker allows it on loopback, podman and skopeo must be told.
    for (const tool of ['podman', 'skopeo']) for (const line of commandsOf(tool)) expect(line).toMatch(/--(dest-)?tls-verify=false/);
  });

  it("skopeo's lines work as printed: login, then copy an OCI layout in", async () => {
    const [login, copy] = commandsOf('skopeo');
    const image = buildImage({ files: [{ 'hello.txt': 'from the banner\n' }] });
    const layout = /oci:(\S+):1\.0/.exec(copy)![1];
    mkdirSync(path.join(work, layout), { recursive: true });
    writeOciLayout(path.join(work, layout), '1.0', image);
    expect(await sh(login)).toMatchObject({ code: 0 });
    expect(await sh(copy)).toMatchObject({ code: 0 });
    const res = await request(`http://${host}/v2/app/manifests/1.0`, { headers: { accept: image.mediaType } });
    expect(res.headers['docker-content-digest']).toBe(image.manifest.digest);
    await res.body.dump();
  });

  it("podman's lines work as printed: login, push, pull", async () => {
    const [login, pushPull] = commandsOf('podman');
    expect(await sh(login)).toMatchObject({ code: 0 });
    // The banner pushes a local app:1.0: make one from what skopeo pushed.
    const local = await sh(`podman pull --tls-verify=false ${host}/app:1.0 && podman tag ${host}/app:1.0 app:1.0`);
    expect(local.code, local.out).toBe(0);
    const r = await sh(pushPull);
    expect(r.code, r.out).toBe(0);
  });
});

describe('registry serve: a data directory the built-in default cannot write', () => {
  it('is one line naming the directory, exit 2', async () => {
    const work = makeTempDir('rs-cli-quick-bad-');
    // ./data is a file: the default's directory cannot be made (as root too, unlike a chmod).
    writeFileSync(path.join(work, 'data'), 'not a directory\n');
    const r = await runRegistry(['serve'], { cwd: work, env: { REGISTRY_HTTP_ADDR: `127.0.0.1:${await freePort()}` }, timeoutMs: 15_000 });
    oneLineError(r, 'storage.filesystem.rootdirectory', path.join(work, 'data'), 'ENOTDIR');
  });
});

describe('registry garbage-collect and prune: a storage that fails', () => {
  it('S3 unreachable: one line naming the failure, exit 1, and no AWS SDK Node-version warning', async () => {
    const work = makeTempDir('rs-cli-gc-s3-');
    const config = path.join(work, 'config.yml');
    const endpoint = `http://127.0.0.1:${await freePort()}`;
    writeFileSync(config, `version: 0.1\nstorage:\n  s3: {bucket: b, regionendpoint: "${endpoint}", accesskey: a, secretkey: s}\n`);
    // The test processes turn the SDK's warning off themselves (vitest.config.ts): the command must not need it.
    const env = { AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: undefined };
    const r = await runRegistry(['garbage-collect', '--dry-run', config], { env, timeoutMs: 60_000 });
    expect(r.code, r.stderr).toBe(1);
    expect(r.stderr).not.toContain('NodeVersionSupportWarning');
    expect(r.stderr).toMatch(/^registry: garbage-collect: the storage failed: .*ECONNREFUSED.*\n$/);
  });

  it('--grace that is not a number of seconds is a usage error', async () => {
    const work = makeTempDir('rs-cli-gc-grace-');
    const config = path.join(work, 'config.yml');
    writeFileSync(config, `version: 0.1\nstorage:\n  filesystem: {rootdirectory: ${path.join(work, 'data')}}\n`);
    oneLineError(await runRegistry(['garbage-collect', '--grace', '1h', config]), '--grace', '"1h"');
  });
});

describe('registry serve with no config: its port in use', () => {
  it('is one line naming http.addr and how to choose another port, exit 2', async () => {
    const work = makeTempDir('rs-cli-quick-busy-');
    const blocker = net.createServer();
    await new Promise<void>((resolve) => blocker.listen({ host: '127.0.0.1', port: 0 }, resolve));
    const { port } = blocker.address() as net.AddressInfo;
    try {
      const r = await runRegistry(['serve'], { cwd: work, env: { REGISTRY_HTTP_ADDR: `127.0.0.1:${port}` }, timeoutMs: 15_000 });
      oneLineError(r, 'http.addr', `127.0.0.1:${port}`, 'in use', 'REGISTRY_HTTP_ADDR=127.0.0.1:5001');
    } finally {
      blocker.close();
    }
  });
});
