// buildah and containerd's ctr against the built-in token server: each logs in
// (buildah login; ctr --user, which containerd turns into an OAuth2 password
// grant at /auth/token), pushes and pulls what the policy allows, and is
// refused where it does not, as a user, as a robot and without credentials.
// What was pushed is checked in the registry, not only in the client's exit code.
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { RobotStore } from '../../server/src/auth/robots.ts';
import { Containerd, ContainersClients, fetchManifest, run, verifyPull } from '../helpers/clients.ts';
import { buildImage, writeOciLayout } from '../helpers/oci.ts';
import { makeTempDir } from '../helpers/server.ts';
import { basicAuth, startTokenServer, type TokenTestServer } from './helpers.ts';

const USERS = { alice: 'alice-pw', carol: 'carol-pw' };
const POLICY = `
groups:
  team: [alice]
  ci: [robot$builder, robot$reader]
repositories:
  "team/**":
    groups: { team: [pull, push], ci: [pull, push] }
    default: [pull]
  "public/**":
    anonymous: [pull]
    groups: { team: [pull, push] }
`;
const ALICE = basicAuth('alice', USERS.alice);

describe('buildah and containerd against token auth', () => {
  let work: string;
  let server: TokenTestServer;
  let host: string;
  let cli: ContainersClients;
  let ctrd: Containerd | undefined;
  /** robot$builder: push and pull on team/**. */
  let builder: string;
  /** robot$reader: its scope allows pulls only, although the policy would let it push. */
  let reader: string;
  const ref = (repoTag: string) => `${host}/${repoTag}`;

  beforeAll(async () => {
    work = makeTempDir('rs-token-buildah-ctr-');
    server = await startTokenServer({ policy: POLICY, users: USERS });
    host = new URL(server.url).host;
    cli = new ContainersClients([host], path.join(work, 'cli'));
    const robots = new RobotStore(server.registry.driver);
    builder = (await robots.create('builder', ['repository:team/**:pull,push'])).secret;
    reader = (await robots.create('reader', ['repository:team/**:pull'])).secret;
  });
  afterAll(async () => {
    await ctrd?.stop();
    await server?.stop();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  test('buildah: login refused with a wrong password; build and push as a user and as a robot; a push outside the grant is denied', async () => {
    const bad = await cli.buildah(['login', '--tls-verify=false', '-u', 'alice', '-p', 'wrong', host], { allowFailure: true });
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toMatch(/unauthorized|invalid/i);

    const file = path.join(work, 'hello.txt');
    writeFileSync(file, 'built by buildah behind token auth\n');
    const container = (await cli.buildah(['from', 'scratch'])).stdout.trim();
    await cli.buildah(['copy', container, file, '/hello.txt']);
    await cli.buildah(['commit', '--format', 'oci', container, ref('team/built:v1')]);

    await cli.buildah(['login', '--tls-verify=false', '-u', 'alice', '-p', USERS.alice, host]);
    const digestFile = path.join(work, 'built.digest');
    await cli.buildah(['push', '--tls-verify=false', '--digestfile', digestFile, ref('team/built:v1')]);
    expect((await verifyPull(server.url, ALICE, 'team/built', 'v1')).digest).toBe(readFileSync(digestFile, 'utf8').trim());
    await cli.buildah(['logout', host]);

    // The robot, with --creds as CI passes them.
    await cli.buildah(['tag', ref('team/built:v1'), ref('team/built:robot')]);
    await cli.buildah(['push', '--tls-verify=false', '--creds', `robot$builder:${builder}`, ref('team/built:robot')]);
    expect((await fetchManifest(server.url, ALICE, 'team/built', 'robot')).status).toBe(200);

    // Refused: a user outside the team, a robot whose scope is pull only, and anyone on a name nobody may push.
    const refusals: Array<[string, string]> = [
      [`carol:${USERS.carol}`, 'team/built:carol'],
      [`robot$reader:${reader}`, 'team/built:reader'],
      [`robot$builder:${builder}`, 'public/built:robot'],
    ];
    for (const [creds, target] of refusals) {
      await cli.buildah(['tag', ref('team/built:v1'), ref(target)]);
      const denied = await cli.buildah(['push', '--tls-verify=false', '--creds', creds, ref(target)], { allowFailure: true });
      expect(denied.code, `${creds.split(':')[0]} → ${target}`).not.toBe(0);
      expect(denied.stderr).toMatch(/denied|403 \(Forbidden\)/i);
      const [repo, tag] = target.split(':');
      expect((await fetchManifest(server.url, ALICE, repo, tag)).status, target).toBe(404);
    }
  });

  test('buildah pulls as a robot and anonymously where the policy lets it, and not elsewhere', async () => {
    const layout = path.join(work, 'pub-layout');
    const image = buildImage({ files: [{ 'pub.txt': 'public\n' }] });
    writeOciLayout(layout, 'v1', image);
    await cli.skopeo(['copy', '--dest-tls-verify=false', '--dest-creds', `alice:${USERS.alice}`, `oci:${layout}:v1`, `docker://${ref('public/base:v1')}`]);
    await cli.skopeo(['copy', '--dest-tls-verify=false', '--dest-creds', `alice:${USERS.alice}`, `oci:${layout}:v1`, `docker://${ref('team/base:v1')}`]);

    const fresh = new ContainersClients([host], path.join(work, 'cli-pull'));
    const anon = await fresh.buildah(['pull', '--tls-verify=false', ref('public/base:v1')]);
    expect(anon.stdout.trim().split('\n').pop()).toBe(image.config.digest.slice(7));
    const refused = await fresh.buildah(['pull', '--tls-verify=false', ref('team/base:v1')], { allowFailure: true });
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toMatch(/unauthorized|authentication required/i);
    const byRobot = await fresh.buildah(['pull', '--tls-verify=false', '--creds', `robot$reader:${reader}`, ref('team/base:v1')]);
    expect(byRobot.stdout.trim().split('\n').pop()).toBe(image.config.digest.slice(7));
  });

  test('ctr: pull and push with --user as a user and a robot; wrong secrets, anonymous and out-of-grant requests refused', async () => {
    const image = buildImage({ files: [{ 'ctr.txt': 'for containerd behind token auth\n' }] });
    const layout = path.join(work, 'ctr-layout');
    writeOciLayout(layout, 'v1', image);
    await cli.skopeo(['copy', '--dest-tls-verify=false', '--dest-creds', `alice:${USERS.alice}`, `oci:${layout}:v1`, `docker://${ref('team/ctr:v1')}`]);
    ctrd = await Containerd.start(path.join(work, 'ctrd'));
    const pull = (user: string | undefined, target: string) =>
      ctrd!.ctr(['images', 'pull', '--plain-http', ...(user ? ['--user', user] : []), '--snapshotter', 'native', ref(target)], { allowFailure: true });

    const byUser = await pull(`alice:${USERS.alice}`, 'team/ctr:v1');
    expect(byUser.code, byUser.stderr).toBe(0);
    expect(await ctrd.imageDigest(ref('team/ctr:v1'))).toBe(image.manifest.digest);
    await ctrd.ctr(['images', 'rm', ref('team/ctr:v1')]);
    const byRobot = await pull(`robot$reader:${reader}`, 'team/ctr:v1');
    expect(byRobot.code, byRobot.stderr).toBe(0);
    expect(await ctrd.imageDigest(ref('team/ctr:v1'))).toBe(image.manifest.digest);
    await ctrd.ctr(['images', 'rm', ref('team/ctr:v1')]);

    // A wrong secret fails at the token endpoint (containerd's OAuth2 password grant); an anonymous
    // token grants nothing here, so the registry answers insufficient_scope.
    const refusals: Array<[string | undefined, RegExp]> = [
      ['alice:wrong', /failed to fetch oauth token: unexpected status: 401/],
      [`robot$reader:${builder}`, /failed to fetch oauth token: unexpected status: 401/],
      [undefined, /insufficient_scope/],
    ];
    for (const [user, message] of refusals) {
      const refused = await pull(user, 'team/ctr:v1');
      expect(refused.code, String(user)).not.toBe(0);
      expect(refused.stderr, String(user)).toMatch(message);
      expect(await ctrd.imageDigest(ref('team/ctr:v1'))).toBeUndefined();
    }

    // Pushes: an image imported from an OCI archive goes up through containerd's pusher.
    const archive = path.join(work, 'ctr-import.tar');
    await run('tar', ['-C', layout, '-cf', archive, '.']);
    await ctrd.ctr(['images', 'import', '--base-name', ref('team/ctr-pushed'), '--snapshotter', 'native', archive]);
    const push = (user: string, target: string) =>
      ctrd!.ctr(['images', 'push', '--plain-http', '--user', user, ref(target), ref('team/ctr-pushed:v1')], { allowFailure: true });
    const pushed = await push(`robot$builder:${builder}`, 'team/ctr-pushed:v1');
    expect(pushed.code, pushed.stderr).toBe(0);
    expect((await verifyPull(server.url, ALICE, 'team/ctr-pushed', 'v1')).digest).toBe(image.manifest.digest);
    for (const [user, target] of [
      [`robot$reader:${reader}`, 'team/ctr-reader:v1'],
      [`carol:${USERS.carol}`, 'team/ctr-carol:v1'],
      [`robot$builder:${builder}`, 'public/ctr:v1'],
    ]) {
      const denied = await push(user, target);
      expect(denied.code, `${user.split(':')[0]} → ${target}`).not.toBe(0);
      expect(denied.stderr).toMatch(/unexpected status: 403 Forbidden/);
      const [repo, tag] = target.split(':');
      expect((await fetchManifest(server.url, ALICE, repo, tag)).status, target).toBe(404);
    }
  });
});
