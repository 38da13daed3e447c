// Real clients speaking the Docker token protocol to the built-in token
// server: skopeo and podman log in, push, pull, list and delete as the policy
// allows and are refused where it does not; containers/image redeems a
// refresh token (auth.json "identitytoken", what `docker login` stores) an
// hour of token time later; a policy reload refuses a client that was
// allowed a moment before, with no restart.
import { rmSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { ContainersClients, fetchManifest } from '../helpers/clients.ts';
import { buildImage, writeOciLayout } from '../helpers/oci.ts';
import { makeTempDir } from '../helpers/server.ts';
import { basicAuth, fetchToken, startTokenServer, type TokenTestServer } from './helpers.ts';

const USERS = { alice: 'alice-pw', bob: 'bob-pw', carol: 'carol-pw' };
const POLICY = `
groups:
  team: [alice, bob]
repositories:
  "team/**":
    groups: { team: [pull, push] }
    users: { bob: [delete] }
    default: [pull]
  "public/**":
    anonymous: [pull]
    groups: { team: [pull, push] }
`;
const HOUR = 3_600_000;

describe('real clients against the built-in token server', () => {
  let work: string;
  let server: TokenTestServer;
  let cli: ContainersClients;
  let host: string;
  let layout: string;
  const image = buildImage({ files: [{ 'etc/app.conf': 'token auth\n' }] });
  const creds = (user: keyof typeof USERS) => `${user}:${USERS[user]}`;
  const ref = (repoTag: string) => `docker://${host}/${repoTag}`;

  beforeAll(async () => {
    work = makeTempDir('rs-token-clients-');
    server = await startTokenServer({ policy: POLICY, users: USERS });
    host = new URL(server.url).host;
    cli = new ContainersClients([host], path.join(work, 'cli'));
    layout = path.join(work, 'layout');
    writeOciLayout(layout, 'v1', image);
  });
  afterAll(async () => {
    await server?.stop();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  test('skopeo: push, inspect, list-tags and delete as the policy allows; refused push and delete say "denied"', async () => {
    await cli.skopeo(['copy', '--dest-tls-verify=false', '--dest-creds', creds('alice'), `oci:${layout}:v1`, ref('team/app:v1')]);
    await cli.skopeo(['copy', '--dest-tls-verify=false', '--dest-creds', creds('alice'), `oci:${layout}:v1`, ref('team/app:v2')]);
    const info = JSON.parse((await cli.skopeo(['inspect', '--tls-verify=false', '--creds', creds('carol'), ref('team/app:v1')])).stdout);
    expect(info.Digest).toBe(image.manifest.digest);
    expect([...info.RepoTags].sort()).toEqual(['v1', 'v2']);

    const push = await cli.skopeo(['copy', '--dest-tls-verify=false', '--dest-creds', creds('carol'), `oci:${layout}:v1`, ref('team/app:carol')], { allowFailure: true });
    expect(push.code).not.toBe(0);
    expect(push.stderr).toMatch(/denied/i);

    const del = await cli.skopeo(['delete', '--tls-verify=false', '--creds', creds('alice'), ref('team/app:v2')], { allowFailure: true });
    expect(del.code).not.toBe(0);
    expect(del.stderr).toMatch(/denied/i);
    await cli.skopeo(['delete', '--tls-verify=false', '--creds', creds('bob'), ref('team/app:v2')]);
    expect((await fetchManifest(server.url, basicAuth('alice', USERS.alice), 'team/app', 'v1')).status).toBe(404);
  });

  test('skopeo without credentials: pulls what anonymous clients may, nothing else', async () => {
    await cli.skopeo(['copy', '--dest-tls-verify=false', '--dest-creds', creds('bob'), `oci:${layout}:v1`, ref('public/base:1')]);
    const out = path.join(work, 'anon-out');
    await cli.skopeo(['copy', '--src-tls-verify=false', ref('public/base:1'), `oci:${out}:1`]);
    const raw = await cli.skopeo(['inspect', '--tls-verify=false', '--raw', ref('public/base:1')]);
    expect(Buffer.from(raw.stdout).equals(image.manifest.data)).toBe(true);
    const refused = await cli.skopeo(['inspect', '--tls-verify=false', '--raw', ref('team/app:v1')], { allowFailure: true });
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toMatch(/unauthorized|authentication required/i);
    const push = await cli.skopeo(['copy', '--dest-tls-verify=false', `oci:${layout}:v1`, ref('public/base:2')], { allowFailure: true });
    expect(push.code).not.toBe(0);
    expect(push.stderr).toMatch(/unauthorized|authentication required/i);
  });

  test('podman: login refused with a wrong password; login, push and pull; a push outside the policy is denied', async () => {
    const bad = await cli.podman(['login', '--tls-verify=false', '-u', 'alice', '-p', 'wrong', host], { allowFailure: true });
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toMatch(/unauthorized|invalid/i);
    await cli.skopeo(['copy', '--dest-tls-verify=false', '--dest-creds', creds('alice'), `oci:${layout}:v1`, ref('team/podsrc:v1')]);
    await cli.podman(['login', '--tls-verify=false', '-u', 'alice', '-p', USERS.alice, host]);
    await cli.podman(['pull', '--tls-verify=false', `${host}/team/podsrc:v1`]);
    const local = `${host}/team/podman:v1`;
    await cli.podman(['tag', `${host}/team/podsrc:v1`, local]);
    await cli.podman(['push', '--tls-verify=false', local]);
    await cli.podman(['rmi', '-f', local]);
    await cli.podman(['pull', '--tls-verify=false', local]);
    await cli.podman(['tag', local, `${host}/elsewhere/app:v1`]);
    const denied = await cli.podman(['push', '--tls-verify=false', `${host}/elsewhere/app:v1`], { allowFailure: true });
    expect(denied.code).not.toBe(0);
    // A HEAD's 403 has no body to say "denied" in.
    expect(denied.stderr).toMatch(/denied|403 \(Forbidden\)/i);
    await cli.podman(['logout', host]);
  });

  test('containers/image with a refresh token (identitytoken) pushes an hour of token time later, and not after a new password', async () => {
    const login = await fetchToken(`${server.url}/auth/token`, { service: 'registry-stack', offline: true, clientId: 'docker' }, basicAuth('bob', USERS.bob));
    const authFile = path.join(work, 'identity-auth.json');
    // As docker writes it: the user with an empty password, and the refresh token.
    writeFileSync(authFile, JSON.stringify({ auths: { [host]: { auth: Buffer.from('bob:').toString('base64'), identitytoken: login.body.refresh_token } } }));
    const withIdentity = (args: string[]) =>
      cli.skopeo([args[0], args[0] === 'copy' ? '--dest-authfile' : '--authfile', authFile, ...args.slice(1)], { allowFailure: true });

    server.clock.advance(HOUR);
    const push = await withIdentity(['copy', '--dest-tls-verify=false', `oci:${layout}:v1`, ref('team/refresh:v1')]);
    expect(push.code, push.stderr).toBe(0);
    expect((await fetchManifest(server.url, basicAuth('bob', USERS.bob), 'team/refresh', 'v1')).status).toBe(200);

    const { writeHtpasswd } = await import('../helpers/server.ts');
    writeHtpasswd(server.htpasswdFile, { ...USERS, bob: 'bob-new-pw' });
    server.clock.advance(3_000);
    const after = await withIdentity(['inspect', '--tls-verify=false', '--raw', ref('team/refresh:v1')]);
    expect(after.code).not.toBe(0);
    expect(after.stderr).toMatch(/unauthorized|authentication required|log in again/i);
    writeHtpasswd(server.htpasswdFile, USERS);
    server.clock.advance(3_000);
  });

  test('a policy reload refuses a client allowed a moment before, without a restart', async () => {
    await cli.skopeo(['copy', '--dest-tls-verify=false', '--dest-creds', creds('alice'), `oci:${layout}:v1`, ref('team/reload:v1')]);
    server.writePolicy(POLICY.replace('team: [alice, bob]', 'team: [bob]'));
    server.clock.advance(3_000);
    const denied = await cli.skopeo(['copy', '--dest-tls-verify=false', '--dest-creds', creds('alice'), `oci:${layout}:v1`, ref('team/reload:v2')], { allowFailure: true });
    expect(denied.code).not.toBe(0);
    expect(denied.stderr).toMatch(/denied/i);
    server.writePolicy(POLICY);
    server.clock.advance(3_000);
    await cli.skopeo(['copy', '--dest-tls-verify=false', '--dest-creds', creds('alice'), `oci:${layout}:v1`, ref('team/reload:v2')]);
  });
});
