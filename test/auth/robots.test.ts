// Robot accounts: the store (only a hash kept, scopes checked, expiry,
// revocation and rotation seen by other readers within the cache time), the
// `registry robot` command as a process, and robots on a running server:
// grants are the robot's scopes and the policy together, a revoked or expired
// robot is refused on its next request (tokens it already holds included),
// and skopeo logs in as robot$NAME.
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { decodeJwt } from 'jose';
import { stringify as toYaml } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseRobotScope, RobotStore, robotActions } from '../../server/src/auth/robots.ts';
import { FilesystemDriver } from '../../server/src/storage/filesystem.ts';
import { errorCodes, RegistryClient } from '../helpers/client.ts';
import { ContainersClients } from '../helpers/clients.ts';
import { buildImage, writeOciLayout } from '../helpers/oci.ts';
import { makeTempDir } from '../helpers/server.ts';
import { runRobot } from '../cli/helpers.ts';
import { basicAuth, fetchToken, parseChallenge, startTokenServer, TestClock, TokenClient, type TokenTestServer } from './helpers.ts';

const DAY = 86_400_000;

let dir: string;
beforeAll(() => {
  dir = makeTempDir('rs-robots-');
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('the robot store', () => {
  it('keeps only a hash of the secret; verifies it; refuses a second active robot of a name', async () => {
    const root = path.join(dir, 'store');
    const store = new RobotStore(new FilesystemDriver(root));
    const { record, secret } = await store.create('ci', ['repository:team/*:pull,push'], { description: 'CI' });
    expect(secret).toMatch(/^[A-Za-z0-9_-]{43}$/);
    const file = readFileSync(path.join(root, 'auth', 'robots', 'ci.json'), 'utf8');
    expect(file).not.toContain(secret);
    expect(JSON.parse(file)).toMatchObject({ name: 'ci', scopes: ['repository:team/*:pull,push'], description: 'CI', secretHash: record.secretHash });
    expect((await store.verify('ci', secret))?.name).toBe('ci');
    expect(await store.verify('ci', `${secret}x`)).toBeUndefined();
    expect(await store.verify('nobody', secret)).toBeUndefined();
    await expect(store.create('ci', ['repository:x:pull'])).rejects.toThrow(/exists/);
    expect((await store.list()).map((r) => r.name)).toEqual(['ci']);
  });

  it('refuses bad names and scopes', async () => {
    const store = new RobotStore(new FilesystemDriver(path.join(dir, 'bad')));
    await expect(store.create('CI', ['repository:a:pull'])).rejects.toThrow(/robot name/);
    await expect(store.create('ok', [])).rejects.toThrow(/at least one/);
    for (const s of ['team/*:pull', 'repository:Team/*:pull', 'repository:team/*:read', 'registry:catalog:*']) {
      expect(() => parseRobotScope(s), s).toThrow(/scope/);
    }
    const record = { scopes: ['repository:team/*:pull,push', 'repository:public/**:pull'] } as never;
    expect([...robotActions(record, 'team/app')].sort()).toEqual(['pull', 'push']);
    expect([...robotActions(record, 'team/a/b')]).toEqual([]);
    expect([...robotActions(record, 'public/a/b')]).toEqual(['pull']);
  });

  it('expiry, revocation and rotation reach another reader within its cache time', async () => {
    const root = path.join(dir, 'life');
    const clock = new TestClock();
    const admin = new RobotStore(new FilesystemDriver(root), { now: clock.now });
    const server = new RobotStore(new FilesystemDriver(root), { now: clock.now, cacheMs: 5_000 });
    const { secret } = await admin.create('ci', ['repository:team/*:pull'], { ttlMs: 90 * DAY });
    expect(await server.verify('ci', secret)).toBeDefined();

    const rotated = await admin.rotate('ci');
    expect(await server.verify('ci', secret)).toBeDefined();
    clock.advance(5_000);
    expect(await server.verify('ci', secret)).toBeUndefined();
    expect(await server.verify('ci', rotated.secret)).toBeDefined();

    await admin.revoke('robot$ci'.slice(6));
    clock.advance(5_000);
    expect(await server.verify('ci', rotated.secret)).toBeUndefined();
    await expect(admin.rotate('ci')).rejects.toThrow(/revoked/);

    const again = await admin.create('ci', ['repository:team/*:pull'], { ttlMs: DAY });
    clock.advance(5_000);
    expect(await server.verify('ci', again.secret)).toBeDefined();
    clock.advance(DAY);
    expect(await server.verify('ci', again.secret)).toBeUndefined();
  });
});

describe('registry robot (the command)', () => {
  let configFile: string;
  beforeAll(() => {
    configFile = path.join(dir, 'cli-config.yml');
    const config = { version: '0.1', storage: { filesystem: { rootdirectory: path.join(dir, 'cli-data') } }, auth: { access: path.join(dir, 'none.yml') } };
    writeFileSync(configFile, toYaml(config));
  });

  it('create prints the secret alone on stdout; list, rotate and revoke', async () => {
    const created = await runRobot(['create', 'ci', '--scope', 'repository:team/*:pull,push', '--ttl', '90d', '-d', 'the CI', '--config', configFile]);
    expect(created.code, created.stderr).toBe(0);
    const secret = created.stdout.trim();
    expect(secret).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(created.stderr).toMatch(/created robot\$ci +active +expires \S+ +repository:team\/\*:pull,push/);
    expect(created.stderr).toContain("docker login -u 'robot$ci'");
    const store = new RobotStore(new FilesystemDriver(path.join(dir, 'cli-data')));
    expect(await store.verify('ci', secret)).toBeDefined();

    const list = await runRobot(['list', '--json', '--config', configFile]);
    const listed = JSON.parse(list.stdout);
    expect(listed).toEqual([expect.objectContaining({ name: 'ci', login: 'robot$ci', status: 'active', description: 'the CI' })]);
    expect(list.stdout).not.toContain('secretHash');

    const rotated = await runRobot(['rotate', 'robot$ci', '--config', configFile]);
    expect(rotated.code).toBe(0);
    expect(rotated.stdout.trim()).not.toBe(secret);
    expect(await new RobotStore(new FilesystemDriver(path.join(dir, 'cli-data'))).verify('ci', rotated.stdout.trim())).toBeDefined();

    const revoked = await runRobot(['revoke', 'ci', '--config', configFile]);
    expect(revoked.code).toBe(0);
    expect(revoked.stderr).toMatch(/revoked robot\$ci +revoked/);
    expect((await runRobot(['list', '--config', configFile])).stdout).toMatch(/robot\$ci +revoked/);
  });

  it('refuses bad input with one line and exit 2', async () => {
    const cases: Array<[string[], RegExp]> = [
      [['create', 'ci2', '--scope', 'team/*:pull', '--config', configFile], /^registry robot: scope "team\/\*:pull": expected repository:<pattern>:<actions>/],
      [['create', 'ci2', '--scope', 'repository:a:pull', '--ttl', 'soon', '--config', configFile], /^registry robot: --ttl: "soon" is not a duration/],
      [['create', 'Bad', '--scope', 'repository:a:pull', '--config', configFile], /^registry robot: robot name "Bad"/],
      [['revoke', 'ghost', '--config', configFile], /^registry robot: no robot named ghost/],
      [['list', '--config', path.join(dir, 'missing.yml')], /^registry robot: cannot read config file/],
      [['create', 'ci3', '--config', configFile], /^registry: required option '-s, --scope/],
    ];
    for (const [args, message] of cases) {
      const r = await runRobot(args);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stderr.trim().split('\n'), args.join(' ')).toHaveLength(1);
      expect(r.stderr, args.join(' ')).toMatch(message);
    }
  });
});

describe('robots on a running server', () => {
  let server: TokenTestServer;
  let store: RobotStore;
  let realm: string;
  const POLICY = `
groups:
  ci: [robot$ci, robot$old]
repositories:
  "team/**": { groups: { ci: [pull, push] }, users: { alice: [pull, push, delete] } }
  "other/**": { default: [pull, push] }
`;

  beforeAll(async () => {
    server = await startTokenServer({ policy: POLICY, users: { alice: 'alice-pw' } });
    realm = `${server.url}/auth/token`;
    store = new RobotStore(server.registry.driver);
  });
  afterAll(() => server?.stop());

  it('a robot gets what its scopes and the policy both allow', async () => {
    const { secret } = await store.create('ci', ['repository:team/app:pull,push,delete', 'repository:other/**:pull']);
    const res = await fetchToken(realm, { service: 'registry-stack', scope: ['repository:team/app:pull,push,delete', 'repository:team/lib:pull', 'repository:other/x:pull,push'] }, basicAuth('robot$ci', secret));
    expect(res.status).toBe(200);
    expect(decodeJwt(res.body.token).access).toEqual([
      { type: 'repository', name: 'team/app', actions: ['pull', 'push'] },
      { type: 'repository', name: 'other/x', actions: ['pull'] },
    ]);
    const robot = new TokenClient(server.url, basicAuth('robot$ci', secret));
    await robot.login('repository:team/app:pull,push');
    await robot.pushImage('team/app', 'v1', buildImage());
    const catalog = new TokenClient(server.url, basicAuth('robot$ci', secret));
    expect((await catalog.req('/v2/_catalog')).json().repositories).toEqual(['team/app']);
    expect((await fetchToken(realm, { service: 'registry-stack' }, basicAuth('robot$ci', 'wrong'))).status).toBe(401);
  });

  it('a robot revoked mid-session is refused on its next request, with the token it holds', async () => {
    const { secret } = await store.create('old', ['repository:team/**:pull,push']);
    const robot = new TokenClient(server.url, basicAuth('robot$old', secret));
    await robot.login('repository:team/app:pull');
    expect((await robot.req('/v2/team/app/tags/list')).status).toBe(200);
    const token = robot.token!;
    await store.revoke('old');
    server.clock.advance(5_000);
    const res = await new RegistryClient(server.url, `Bearer ${token}`).req('/v2/team/app/tags/list');
    expect(res.status).toBe(401);
    expect(parseChallenge(res.header('www-authenticate'))?.params.error).toBe('invalid_token');
    expect(errorCodes(res)).toEqual(['UNAUTHORIZED']);
    expect((await fetchToken(realm, { service: 'registry-stack' }, basicAuth('robot$old', secret))).status).toBe(401);
    expect((await new RegistryClient(server.url, basicAuth('robot$old', secret)).req('/v2/team/app/tags/list')).status).toBe(401);
  });

  it('an expired robot is refused; its refresh token too', async () => {
    const { secret } = await store.create('temp', ['repository:other/**:pull'], { ttlMs: DAY });
    const login = await fetchToken(realm, { service: 'registry-stack', offline: true }, basicAuth('robot$temp', secret));
    expect(login.body.refresh_token).toBeTruthy();
    server.clock.advance(DAY);
    expect((await fetchToken(realm, { service: 'registry-stack' }, basicAuth('robot$temp', secret))).status).toBe(401);
    const { postToken } = await import('./helpers.ts');
    expect((await postToken(realm, { grant_type: 'refresh_token', refresh_token: login.body.refresh_token, service: 'registry-stack' })).status).toBe(401);
  });

  it('skopeo logs in as robot$NAME', async () => {
    const { secret } = await store.create('skopeo', ['repository:team/**:pull,push']);
    const work = makeTempDir('rs-robot-skopeo-');
    try {
      const host = new URL(server.url).host;
      const cli = new ContainersClients([host], path.join(work, 'cli'));
      writeOciLayout(path.join(work, 'l'), 'v1', buildImage());
      // Not a policy member: its scope alone gives nothing.
      const denied = await cli.skopeo(['copy', '--dest-tls-verify=false', '--dest-creds', `robot$skopeo:${secret}`, `oci:${path.join(work, 'l')}:v1`, `docker://${host}/team/skopeo:v1`], { allowFailure: true });
      expect(denied.code).not.toBe(0);
      expect(denied.stderr).toMatch(/denied|403 \(Forbidden\)/i);
      server.writePolicy(POLICY.replace('ci: [robot$ci, robot$old]', 'ci: [robot$ci, robot$old, robot$skopeo]'));
      server.clock.advance(3_000);
      await cli.skopeo(['copy', '--dest-tls-verify=false', '--dest-creds', `robot$skopeo:${secret}`, `oci:${path.join(work, 'l')}:v1`, `docker://${host}/team/skopeo:v1`]);
    } finally {
      server.writePolicy(POLICY);
      rmSync(work, { recursive: true, force: true });
    }
  });
});
