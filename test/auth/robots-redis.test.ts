// Robot changes across replicas through Redis: two servers share a storage and
// a real redis-server; `registry robot revoke|rotate` (the CLI, with the same
// config) announces the change, and the other replica refuses the robot on its
// next request, its tokens included. With the servers' clocks frozen the
// record cache never runs out, so only the announcement can explain the
// refusal; after a lost subscription a server drops every cached record. The
// tests wait for events (a log line, a refusal) under a deadline; they never
// sleep for a time.
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { stringify as toYaml } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RobotStore } from '../../server/src/auth/robots.ts';
import { FilesystemDriver } from '../../server/src/storage/filesystem.ts';
import { RegistryClient } from '../helpers/client.ts';
import { buildImage } from '../helpers/oci.ts';
import { makeTempDir, type ServerProcess, sleep, startServerProcess } from '../helpers/process.ts';
import { startRedis, type TestRedis } from '../helpers/redis.ts';
import { runRobot } from '../cli/helpers.ts';
import { basicAuth, fetchToken, startTokenServer, TestClock, TokenClient, type TokenTestServer } from './helpers.ts';

const POLICY = `
groups: { ci: ['robot$ci', 'robot$ci2', 'robot$ci3', 'robot$lost'] }
repositories:
  "team/**": { groups: { ci: [pull, push] } }
`;
const SERVICE = 'registry-stack';

/** Polls `check` until it returns true; fails after `deadlineMs` with `what`. Never a fixed wait. */
async function until(what: string, check: () => Promise<boolean> | boolean, deadlineMs = 30_000): Promise<void> {
  const deadline = Date.now() + deadlineMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`not within ${deadlineMs} ms: ${what}`);
    await sleep(50);
  }
}

const status = async (url: string, auth: string, pathName = '/v2/team/app/tags/list') => (await new RegistryClient(url, auth).req(pathName)).status;

let redis: TestRedis;
let work: string;
beforeAll(async () => {
  redis = await startRedis();
  work = makeTempDir('rs-robots-redis-');
});
afterAll(async () => {
  await redis?.stop();
  if (work) rmSync(work, { recursive: true, force: true });
});

describe('two server processes sharing a storage and Redis', () => {
  let a: ServerProcess;
  let b: ServerProcess;
  let dataDir: string;

  beforeAll(async () => {
    dataDir = path.join(work, 'proc-data');
    const policy = path.join(work, 'proc-access.yml');
    writeFileSync(policy, POLICY);
    const extra = { auth: { access: policy }, redis: { addr: redis.addr, prefix: 'procs:' } };
    // One after the other: the first makes the signing key both use.
    a = await startServerProcess({ dataDir, workDir: path.join(work, 'a'), extra });
    b = await startServerProcess({ dataDir, workDir: path.join(work, 'b'), extra });
  }, 60_000);
  afterAll(async () => {
    await a?.stop();
    await b?.stop();
  });

  /** Output of `server` from now on. */
  const logFrom = (server: ServerProcess) => {
    const start = server.output.toString().length;
    return () => server.output.toString().slice(start);
  };
  const dropped = (log: string, robot: string) =>
    log.split('\n').some((l) => l.includes('"robot changed: cached record dropped"') && l.includes(`"robot":"${robot}"`));

  it('a robot revoked with the CLI is refused by both replicas, with the token one of them issued', async () => {
    const created = await runRobot(['create', 'ci', '--scope', 'repository:team/**:pull,push', '-c', a.configFile]);
    expect(created.code, created.stderr).toBe(0);
    expect(created.stderr).not.toContain('were not told');
    const secret = created.stdout.trim();
    const creds = basicAuth('robot$ci', secret);

    const pusher = new TokenClient(a.url, creds);
    expect((await pusher.login('repository:team/app:pull,push')).status).toBe(200);
    await pusher.pushImage('team/app', 'v1', buildImage());
    const bearer = `Bearer ${pusher.token}`;
    // B trusts A's token and has the robot's record cached now.
    expect(await status(b.url, bearer)).toBe(200);
    expect(await status(b.url, creds)).toBe(200);

    const seenByB = logFrom(b);
    const revoked = await runRobot(['revoke', 'robot$ci', '-c', a.configFile]);
    expect(revoked.code, revoked.stderr).toBe(0);
    expect(revoked.stderr).not.toContain('were not told');
    await until('B hears that robot$ci changed', () => dropped(seenByB(), 'robot$ci'));
    // Its next requests, right after, are refused: nothing cached survives the announcement.
    expect(await status(b.url, creds)).toBe(401);
    expect(await status(b.url, bearer)).toBe(401);
    expect(await status(a.url, bearer)).toBe(401);
    expect((await fetchToken(`${b.url}/auth/token`, { service: SERVICE }, creds)).status).toBe(401);
  });

  it('a rotated robot: the old secret is refused by the other replica, the new one works there', async () => {
    const created = await runRobot(['create', 'ci2', '--scope', 'repository:team/**:pull', '-c', a.configFile]);
    const old = basicAuth('robot$ci2', created.stdout.trim());
    expect(await status(b.url, old)).toBe(200);

    const seenByB = logFrom(b);
    const rotated = await runRobot(['rotate', 'ci2', '-c', b.configFile]);
    expect(rotated.code, rotated.stderr).toBe(0);
    await until('B hears that robot$ci2 changed', () => dropped(seenByB(), 'robot$ci2'));
    expect(await status(b.url, old)).toBe(401);
    expect(await status(b.url, basicAuth('robot$ci2', rotated.stdout.trim()))).toBe(200);
  });

  it('the CLI says so when Redis cannot be reached, and still makes the change', async () => {
    const config = path.join(work, 'no-redis.yml');
    writeFileSync(config, toYaml({ version: '0.1', storage: { filesystem: { rootdirectory: dataDir } }, auth: { access: 'x.yml' }, redis: { addr: '127.0.0.1:1', dialtimeout: '1s' } }));
    const created = await runRobot(['create', 'ci3', '--scope', 'repository:team/**:pull', '-c', config]);
    expect(created.code, created.stderr).toBe(0);
    expect(created.stderr).toMatch(/note: running servers were not told through redis \(cannot reach redis at 127\.0\.0\.1:1 \(redis\.addr\)/);
    expect(await new RobotStore(new FilesystemDriver(dataDir)).verify('ci3', created.stdout.trim())).toBeDefined();
  });
});

describe('servers whose record cache never runs out (frozen clocks)', () => {
  let a: TokenTestServer;
  let b: TokenTestServer;
  let root: string;
  let configFile: string;

  beforeAll(async () => {
    root = path.join(work, 'frozen');
    mkdirSync(root);
    const clock = new TestClock();
    const extra = { redis: { addr: redis.addr, prefix: 'frozen:' } };
    a = await startTokenServer({ policy: POLICY, root, clock, extra });
    b = await startTokenServer({ policy: POLICY, root, clock, extra });
    configFile = path.join(work, 'frozen.yml');
    writeFileSync(configFile, toYaml({ version: '0.1', storage: { filesystem: { rootdirectory: path.join(root, 'data') } }, auth: { access: a.policyFile }, redis: { addr: redis.addr, prefix: 'frozen:' } }));
  });
  afterAll(async () => {
    await a?.stop();
    await b?.stop();
  });

  it('only the announcement can make the other replica refuse: it does', async () => {
    const created = await runRobot(['create', 'ci', '--scope', 'repository:team/**:pull', '-c', configFile]);
    const creds = basicAuth('robot$ci', created.stdout.trim());
    expect(await status(b.url, creds, '/v2/team/x/tags/list')).toBe(404);
    const token = await fetchToken(`${a.url}/auth/token`, { service: SERVICE, scope: ['repository:team/x:pull'] }, creds);
    expect(token.status).toBe(200);
    const bearer = `Bearer ${token.body.token}`;
    expect(await status(b.url, bearer, '/v2/team/x/tags/list')).toBe(404);

    expect((await runRobot(['revoke', 'ci', '-c', configFile])).code).toBe(0);
    await until('B refuses the revoked robot', async () => (await status(b.url, creds, '/v2/team/x/tags/list')) === 401);
    expect(await status(b.url, bearer, '/v2/team/x/tags/list')).toBe(401);
    expect(await status(a.url, bearer, '/v2/team/x/tags/list')).toBe(401);
  });

  it('a server whose subscription was cut drops every cached record once it is back', async () => {
    const store = new RobotStore(new FilesystemDriver(path.join(root, 'data')));
    const { secret } = await store.create('lost', ['repository:team/**:pull']);
    const creds = basicAuth('robot$lost', secret);
    expect(await status(b.url, creds, '/v2/team/x/tags/list')).toBe(404);
    // Revoked behind the servers' backs (no announcement), while their subscriptions are cut.
    await store.revoke('lost');
    expect(await status(b.url, creds, '/v2/team/x/tags/list')).toBe(404);
    expect(Number(await redis.client.call('CLIENT', 'KILL', 'TYPE', 'pubsub'))).toBeGreaterThanOrEqual(2);
    await until('B refuses after resubscribing', async () => (await status(b.url, creds, '/v2/team/x/tags/list')) === 401);
  });
});
