// A careless config or a bad start: `registry serve` and `npm run render` say
// what to fix in one line on stderr (`registry: …` / `render: …`, naming the
// key and the bad value) and exit 2, instead of a stack trace or a start that
// only fails at the first push or pull.
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { cleanEnv, freePort, makeTempDir, REPO_ROOT } from '../helpers/process.ts';

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function run(args: string[], timeoutMs = 30_000): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, { cwd: REPO_ROOT, env: cleanEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    // A config that is wrongly accepted starts a server: stop it and let the assertions fail.
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('error', reject);
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

let dir: string;
beforeAll(() => {
  dir = makeTempDir('rs-serve-errors-');
});

let configs = 0;
async function serve(yaml: string): Promise<Run> {
  const file = path.join(dir, `config-${++configs}.yml`);
  writeFileSync(file, yaml);
  return run([path.join(REPO_ROOT, 'server/bin/registry.mjs'), 'serve', file], 15_000);
}

function render(args: string[]): Promise<Run> {
  return run(['--import', 'tsx', path.join(REPO_ROOT, 'infra/render-cli.ts'), ...args]);
}

/** Exactly one line on stderr, starting with the prefix, no stack trace; exit 2. */
function expectOneLine(r: Run, prefix: string, ...mentions: string[]): void {
  expect(r.code, r.stderr).toBe(2);
  expect(r.stderr.endsWith('\n'), r.stderr).toBe(true);
  const lines = r.stderr.slice(0, -1).split('\n');
  expect(lines, r.stderr).toHaveLength(1);
  expect(lines[0].startsWith(`${prefix}: `), r.stderr).toBe(true);
  expect(r.stderr).not.toMatch(/\n\s+at /);
  for (const m of mentions) expect(lines[0]).toContain(m);
}

function config(extra: string, root = path.join(dir, 'data')): string {
  return `version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: ${root}\n${extra}`;
}

describe('registry serve: bad input at start is one line and exit 2', () => {
  it('a port in use (found only at listen)', async () => {
    const blocker = net.createServer();
    await new Promise<void>((resolve) => blocker.listen({ host: '127.0.0.1', port: 0 }, resolve));
    const { port } = blocker.address() as net.AddressInfo;
    try {
      const r = await serve(config(`http:\n  addr: 127.0.0.1:${port}\n`));
      expectOneLine(r, 'registry', 'http.addr', `127.0.0.1:${port}`, 'in use');
    } finally {
      blocker.close();
    }
  });

  it('a port in use by the admin listener names admin.addr', async () => {
    const blocker = net.createServer();
    await new Promise<void>((resolve) => blocker.listen({ host: '127.0.0.1', port: 0 }, resolve));
    const { port } = blocker.address() as net.AddressInfo;
    try {
      const r = await serve(config(`http:\n  addr: 127.0.0.1:${await freePort()}\nadmin:\n  addr: 127.0.0.1:${port}\n`));
      expectOneLine(r, 'registry', 'admin.addr', `127.0.0.1:${port}`, 'in use');
    } finally {
      blocker.close();
    }
  });

  it('http.addr that is not host:port', async () => {
    expectOneLine(await serve(config('http:\n  addr: notaport\n')), 'registry', 'http.addr', 'notaport');
    expectOneLine(await serve(config('http:\n  addr: ":99999"\n')), 'registry', 'http.addr', ':99999');
  });

  it('admin.addr that is not host:port', async () => {
    expectOneLine(await serve(config('admin:\n  addr: localhost\n')), 'registry', 'admin.addr', 'localhost');
  });

  it('proxy.remoteurl with no scheme', async () => {
    const r = await serve(config('proxy:\n  remoteurl: registry-1.example.com\n'));
    expectOneLine(r, 'registry', 'proxy.remoteurl', 'registry-1.example.com');
  });

  it('proxy.remoteurl with a scheme other than http(s)', async () => {
    const r = await serve(config('proxy:\n  remoteurl: ftp://registry.example.com\n'));
    expectOneLine(r, 'registry', 'proxy.remoteurl', 'ftp://registry.example.com');
  });

  it('proxy.remoteurl with a path (which would be silently ignored)', async () => {
    const r = await serve(config('proxy:\n  remoteurl: https://registry.example.com/v2/library\n'));
    expectOneLine(r, 'registry', 'proxy.remoteurl', 'https://registry.example.com/v2/library');
  });

  it('proxy.upstreams[].url with a path', async () => {
    const r = await serve(config('proxy:\n  upstreams:\n    - host: ghcr.io\n      url: https://ghcr.io/v2\n'));
    expectOneLine(r, 'registry', 'proxy.upstreams.0.url', 'https://ghcr.io/v2');
  });

  it('an upstream host given twice (proxy.remoteurl is one too)', async () => {
    const twice = await serve(config('proxy:\n  upstreams:\n    - {host: ghcr.io, url: https://ghcr.io}\n    - {host: ghcr.io, url: https://mirror.example.com}\n'));
    expectOneLine(twice, 'registry', 'proxy.upstreams', 'ghcr.io', 'twice');
    const alsoRemote = await serve(config('proxy:\n  remoteurl: https://registry-1.docker.io\n  upstreams:\n    - {host: docker.io, url: https://mirror.gcr.io}\n'));
    expectOneLine(alsoRemote, 'registry', 'proxy.upstreams', 'docker.io', 'proxy.remoteurl');
  });

  it('proxy.defaulthost that is none of the upstreams', async () => {
    const r = await serve(config('proxy:\n  upstreams:\n    - {host: ghcr.io, url: https://ghcr.io}\n  defaulthost: quay.io\n'));
    expectOneLine(r, 'registry', 'proxy.defaulthost', 'quay.io');
  });

  it('http.tls files that are missing, alone, or not a certificate and its key', async () => {
    const cert = path.join(dir, 'tls.crt');
    const key = path.join(dir, 'tls.key');
    const otherKey = path.join(dir, 'other.key');
    const openssl = (args: string[]) => expect(spawnSync('openssl', args, { stdio: 'ignore' }).status).toBe(0);
    openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-subj', '/CN=localhost', '-days', '1', '-keyout', key, '-out', cert]);
    openssl(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', otherKey]);
    const tls = (lines: string) => serve(config(`http:\n  addr: 127.0.0.1:${0}\n  tls:\n${lines}`));
    expectOneLine(await tls(`    certificate: ${dir}/no-such.crt\n    key: ${key}\n`), 'registry', 'http.tls.certificate', 'no-such.crt', 'ENOENT');
    expectOneLine(await tls(`    certificate: ${cert}\n    key: ${dir}/no-such.key\n`), 'registry', 'http.tls.key', 'no-such.key', 'ENOENT');
    // One without the other would serve plain HTTP without a word.
    expectOneLine(await tls(`    certificate: ${cert}\n`), 'registry', 'http.tls.key', 'required');
    expectOneLine(await tls(`    key: ${key}\n`), 'registry', 'http.tls.certificate', 'required');
    expectOneLine(await tls(`    certificate: ${cert}\n    key: ${otherKey}\n`), 'registry', 'http.tls.certificate', 'http.tls.key');
    expectOneLine(await tls(`    certificate: ${key}\n    key: ${key}\n`), 'registry', 'http.tls.certificate');
  });

  it('a config that is not YAML', async () => {
    expectOneLine(await serve('storage: [unclosed\n'), 'registry', 'not valid YAML');
  });

  it('an htpasswd line that is not bcrypt', async () => {
    const file = path.join(dir, 'htpasswd-md5');
    writeFileSync(file, 'alice:$apr1$abcdefgh$0123456789abcdefghijkl\n');
    const r = await serve(config(`http:\n  addr: 127.0.0.1:${await freePort()}\nauth:\n  htpasswd:\n    realm: r\n    path: ${file}\n`));
    expectOneLine(r, 'registry', 'auth.htpasswd.path', 'no bcrypt hash');
  });

  it('an htpasswd file that is missing', async () => {
    const file = path.join(dir, 'no-such-htpasswd');
    const r = await serve(config(`http:\n  addr: 127.0.0.1:${await freePort()}\nauth:\n  htpasswd:\n    realm: r\n    path: ${file}\n`));
    expectOneLine(r, 'registry', 'auth.htpasswd.path', file, 'ENOENT');
  });
});

describe('registry serve: the data directory is checked at start', () => {
  const key = 'storage.filesystem.rootdirectory';

  it('an impossible directory (a file in the way): /etc/passwd/reg', async () => {
    const r = await serve(config(`http:\n  addr: 127.0.0.1:${await freePort()}\n`, '/etc/passwd/reg'));
    expectOneLine(r, 'registry', key, '/etc/passwd/reg', 'ENOTDIR');
  });

  it('a regular file as the directory', async () => {
    const file = path.join(dir, 'a-file');
    writeFileSync(file, 'not a directory\n');
    const r = await serve(config(`http:\n  addr: 127.0.0.1:${await freePort()}\n`, file));
    expectOneLine(r, 'registry', key, file);
  });

  // Tests run as root, where a chmod 0555 directory stays writable: /sys is a
  // directory in which not even root may create files (sysfs; read-only in
  // containers), so it stands for "a directory the process cannot write".
  it('an existing directory nobody may write (/sys)', async () => {
    const r = await serve(config(`http:\n  addr: 127.0.0.1:${await freePort()}\n`, '/sys'));
    expectOneLine(r, 'registry', key, '/sys');
  });

  it.skipIf(process.getuid?.() === 0)('a read-only directory (chmod 0555; not as root, which may write anyway)', async () => {
    const ro = path.join(dir, 'read-only');
    mkdirSync(ro);
    chmodSync(ro, 0o555);
    const r = await serve(config(`http:\n  addr: 127.0.0.1:${await freePort()}\n`, ro));
    expectOneLine(r, 'registry', key, ro, 'EACCES');
  });
});

describe('npm run render: a bad stack file is one line and exit 2', () => {
  let out: string;
  beforeAll(() => {
    out = path.join(dir, 'render-out');
  });

  it('a missing stack file', async () => {
    const file = path.join(dir, 'no-such-stack.yaml');
    expectOneLine(await render([out, file]), 'render', file, 'ENOENT');
  });

  it('a stack file that is not YAML', async () => {
    const file = path.join(dir, 'bad-yaml.yaml');
    writeFileSync(file, 'config:\n  registry-stack:domain: [unclosed\n');
    expectOneLine(await render([out, file]), 'render', file);
  });

  it('a stack file that is not a mapping', async () => {
    const file = path.join(dir, 'not-mapping.yaml');
    writeFileSync(file, '- a\n- b\n');
    expectOneLine(await render([out, file]), 'render');
  });

  it('a stack file with one invalid value names its key', async () => {
    const file = path.join(dir, 'bad-domain.yaml');
    const minimal = readFileSync(path.join(REPO_ROOT, 'infra/examples/minimal.yaml'), 'utf8');
    writeFileSync(file, minimal.replace('registry-stack:domain: example.com', 'registry-stack:domain: "not a domain!"'));
    expectOneLine(await render([out, file]), 'render', 'domain');
  });
});
