// The JSON access log: one line per request with method, repo, reference,
// status, bytes, duration, user, client address (and cache hit/miss on a
// mirror); secrets (passwords, Authorization values, upstream credentials)
// never appear anywhere in the output; log.level and
// log.accesslog.disabled are honoured. In-process servers log into a sink the
// test reads; the production logger is checked through `registry serve`.
import { spawn } from 'node:child_process';
import { rmSync } from 'node:fs';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { RegistryClient } from '../helpers/client.ts';
import { cleanEnv, freePort, makeTempDir, OutputLog, REPO_ROOT, startServerProcess, waitForHttp } from '../helpers/process.ts';
import { basicAuth, startTestServer, TEST_PASSWORD, TEST_USER, type TestServer } from '../helpers/server.ts';
import { composeImage, gzLayer, pullAndVerify, pushImageLikeClient } from '../helpers/ops/images.ts';
import { type LoggedServer, startLoggedServer, writeConfig } from '../helpers/ops/servers.ts';

const cleanups: Array<() => Promise<void> | void> = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
});

const WRONG_PASSWORD = 'wrong-password-4711';

/** Every form a secret could take in a log line. */
function secretForms(user: string, password: string): string[] {
  const header = basicAuth(user, password);
  return [password, header, header.slice('Basic '.length)];
}

function expectNoSecrets(text: string, secrets: string[]): void {
  for (const s of secrets) expect(text.includes(s), `the log contains "${s}"`).toBe(false);
  expect(text).not.toMatch(/authorization/i);
}

describe('access log (in-process, private)', () => {
  it('logs every request with its fields, and never a credential', async () => {
    const s: LoggedServer = await startLoggedServer();
    cleanups.push(() => s.stop());
    const client = new RegistryClient(s.url, s.auth);
    const image = composeImage([gzLayer(3000)]);
    await pushImageLikeClient(client, 'logs/app', '1.0', image);
    await pullAndVerify(client, 'logs/app', '1.0');
    expect((await client.withAuth(basicAuth(TEST_USER, WRONG_PASSWORD)).req('/v2/logs/app/tags/list')).status).toBe(401);
    expect((await client.withAuth(undefined).req('/v2/')).status).toBe(401);
    expect((await client.req('/v2/logs/app/manifests/missing')).status).toBe(404);

    const lines = await eventually(() => {
      const all = s.sink.requests();
      return all.some((l) => l.path === '/v2/logs/app/manifests/missing') ? all : undefined;
    });
    const find = (method: string, p: string) => lines.filter((l) => l.method === method && l.path === p);
    const put = find('PUT', '/v2/logs/app/manifests/1.0');
    expect(put).toHaveLength(1);
    expect(put[0]).toMatchObject({ level: 30, repo: 'logs/app', reference: '1.0', status: 201, bytesIn: image.manifest.size, user: TEST_USER });
    expect(put[0].client).toMatch(/^(::ffff:)?127\.0\.0\.1$/);
    expect(typeof put[0].durationMs).toBe('number');
    expect(put[0].durationMs).toBeGreaterThanOrEqual(0);
    const layer = image.layers[0];
    const get = find('GET', `/v2/logs/app/blobs/${layer.digest}`);
    expect(get).toHaveLength(1);
    expect(get[0]).toMatchObject({ repo: 'logs/app', reference: layer.digest, status: 200, bytesOut: layer.size, user: TEST_USER });
    expect(get[0].cache).toBeUndefined();
    const head = find('HEAD', `/v2/logs/app/blobs/${layer.digest}`);
    expect(head[0]).toMatchObject({ status: 404, user: TEST_USER }); // before the upload
    expect(find('GET', '/v2/logs/app/manifests/missing')[0]).toMatchObject({ status: 404, reference: 'missing' });
    const denied = find('GET', '/v2/logs/app/tags/list');
    expect(denied[0]).toMatchObject({ status: 401 });
    expect(denied[0].user).toBeUndefined();
    expect(find('GET', '/v2/')[0]).toMatchObject({ status: 401 });

    expectNoSecrets(s.sink.text, [...secretForms(TEST_USER, TEST_PASSWORD), ...secretForms(TEST_USER, WRONG_PASSWORD)]);
  });

  it('log.accesslog.disabled turns the access log off', async () => {
    const s = await startLoggedServer({ extra: { log: { level: 'info', accesslog: { disabled: true } } } });
    cleanups.push(() => s.stop());
    expect((await new RegistryClient(s.url, s.auth).req('/v2/')).status).toBe(200);
    expect(s.sink.requests()).toEqual([]);
  });
});

describe('access log (in-process, mirror)', () => {
  it('records cache misses and hits, and never the upstream credentials, even when the upstream refuses them', async () => {
    const upstream: TestServer = await startTestServer();
    cleanups.push(() => upstream.stop());
    const upstreamHost = `127.0.0.1:${upstream.port}`;
    const image = composeImage([gzLayer(2000)]);
    await pushImageLikeClient(new RegistryClient(upstream.url, upstream.auth), 'lib/app', '1', image);

    const mirror = await startLoggedServer({
      users: {},
      extra: { proxy: { upstreams: [{ host: upstreamHost, url: upstream.url, username: TEST_USER, password: TEST_PASSWORD }] } },
    });
    cleanups.push(() => mirror.stop());
    const client = new RegistryClient(mirror.url);
    await pullAndVerify(client, 'lib/app', '1');
    await mirror.mirror!.settled(); // the second pull finds every blob committed: hits
    await pullAndVerify(client, 'lib/app', '1');
    // A request is logged once its response has been written: the client may be a step ahead.
    const blobLines = await eventually(() => {
      const found = mirror.sink.requests().filter((l) => l.method === 'GET' && l.path === `/v2/lib/app/blobs/${image.layers[0].digest}`);
      return found.length === 2 ? found : undefined;
    });
    expect(blobLines.map((l) => l.cache)).toEqual(['miss', 'hit']);
    expect(blobLines[0]).toMatchObject({ status: 200, bytesOut: image.layers[0].size, reference: image.layers[0].digest });
    expect(blobLines[0].repo).toMatch(/lib\/app$/);
    expect(blobLines[0].user).toBeUndefined();

    // A mirror configured with a wrong upstream password: the failure is logged, the password is not.
    const badSecret = 'upstream-secret-0815';
    const bad = await startLoggedServer({
      users: {},
      extra: { proxy: { upstreams: [{ host: upstreamHost, url: upstream.url, username: TEST_USER, password: badSecret }] } },
    });
    cleanups.push(() => bad.stop());
    const refused = await new RegistryClient(bad.url).req('/v2/lib/app/manifests/1');
    expect(refused.status).toBe(503);
    expect(await eventually(() => bad.sink.requests().find((l) => l.status === 503))).toMatchObject({ method: 'GET', reference: '1' });

    expectNoSecrets(mirror.sink.text, secretForms(TEST_USER, TEST_PASSWORD));
    expectNoSecrets(bad.sink.text, secretForms(TEST_USER, badSecret));
  });
});

describe('the production logger (registry serve)', () => {
  it('writes JSON access lines on stdout without secrets', async () => {
    const data = makeTempDir('rs-ops-logs-');
    cleanups.push(() => rmSync(data, { recursive: true, force: true }));
    const workDir = makeTempDir('rs-ops-logs-work-');
    cleanups.push(() => rmSync(workDir, { recursive: true, force: true }));
    const proc = await startServerProcess({ dataDir: data, workDir, users: { [TEST_USER]: TEST_PASSWORD }, accessLog: true });
    cleanups.push(() => proc.stop());
    const client = new RegistryClient(proc.url, basicAuth(TEST_USER, TEST_PASSWORD));
    await pushImageLikeClient(client, 'prod/app', 'v1', composeImage([gzLayer(1000)]));
    expect((await client.withAuth(basicAuth(TEST_USER, WRONG_PASSWORD)).req('/v2/prod/app/tags/list')).status).toBe(401);
    // Lines arrive in order, a little after the responses: wait for the last one.
    await waitForLine(proc.output, (l) => l.msg === 'request' && l.status === 401 && l.path === '/v2/prod/app/tags/list');
    const lines = jsonLines(proc.output.toString());
    const put = lines.find((l) => l.msg === 'request' && l.method === 'PUT');
    expect(put).toMatchObject({ repo: 'prod/app', reference: 'v1', status: 201, user: TEST_USER });
    expectNoSecrets(proc.output.toString(), [...secretForms(TEST_USER, TEST_PASSWORD), ...secretForms(TEST_USER, WRONG_PASSWORD)]);
  });

  it('log.level warn leaves out info lines (the access log among them)', async () => {
    const work = makeTempDir('rs-ops-logs-');
    cleanups.push(() => rmSync(work, { recursive: true, force: true }));
    const port = await freePort();
    const config = writeConfig(work, {
      version: '0.1',
      log: { level: 'warn' },
      storage: { filesystem: { rootdirectory: path.join(work, 'data') } },
      http: { addr: `127.0.0.1:${port}` },
    });
    const output = new OutputLog();
    const child = spawn(process.execPath, [path.join(REPO_ROOT, 'server', 'bin', 'registry.mjs'), 'serve', config], {
      cwd: REPO_ROOT,
      env: cleanEnv(),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const exited = new Promise((r) => child.once('exit', r));
    cleanups.push(async () => {
      child.kill('SIGKILL');
      await exited;
    });
    child.stdout.on('data', (c: Buffer) => output.push(c));
    child.stderr.on('data', (c: Buffer) => output.push(c));
    await waitForHttp(`http://127.0.0.1:${port}/v2/`, 30_000);
    const client = new RegistryClient(`http://127.0.0.1:${port}`);
    expect((await client.req('/v2/')).status).toBe(200);
    expect((await client.req('/v2/x/manifests/y')).status).toBe(404);
    child.kill('SIGTERM');
    await exited;
    const lines = jsonLines(output.toString());
    expect(lines.filter((l) => l.level < 40)).toEqual([]);
  });
});

function jsonLines(text: string): Array<Record<string, any>> {
  return text
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, any>);
}

/** Polls `probe` until it returns something (log lines are written just after the response). */
async function eventually<T>(probe: () => T | undefined, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error('the expected log lines did not appear');
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function waitForLine(output: OutputLog, match: (l: Record<string, any>) => boolean): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!jsonLines(output.toString()).some(match)) {
    if (Date.now() > deadline) throw new Error(`no such log line in:\n${output}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
