// Token auth over real sockets: Bearer challenges with the request's scope,
// the built-in token server (GET with Basic and offline_token, POST password
// and refresh_token grants), grants cut down to the policy, insufficient_scope
// versus DENIED, the catalog filtered per caller, mounts from repositories the
// caller may not read, Basic on registry requests, the failed-login budget
// shared with the token endpoint, refresh an hour of token time later, a
// policy reload taking effect on tokens already out, bad config at start, and
// the mirror's pull rules per upstream prefix.
import { writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { decodeJwt } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { errorCodes, RegistryClient } from '../helpers/client.ts';
import { FakeUpstream } from '../helpers/mirror/upstream.ts';
import { buildImage, MT } from '../helpers/oci.ts';
import { makeTempDir, writeHtpasswd } from '../helpers/server.ts';
import { basicAuth, fetchToken, parseChallenge, postToken, startTokenServer, TokenClient, type TokenTestServer } from './helpers.ts';

const USERS = { alice: 'alice-pw', bob: 'bob-pw', carol: 'carol-pw', root: 'root-pw' };
const POLICY = `
groups:
  team: [alice, bob]
admins: [root]
repositories:
  "team/secret":
    users: { alice: [pull, push] }
  "team/**":
    groups: { team: [pull, push, delete] }
    default: [pull]
  "public/**":
    anonymous: [pull]
    users: { carol: [pull, push] }
`;
const HOUR = 3_600_000;

describe('token auth: challenges and the token endpoint', () => {
  let server: TokenTestServer;
  let realm: string;
  const image = buildImage();

  beforeAll(async () => {
    server = await startTokenServer({ policy: POLICY, users: USERS });
    realm = `${server.url}/auth/token`;
    const alice = new TokenClient(server.url, basicAuth('alice', USERS.alice));
    await alice.login('repository:team/app:pull,push', 'repository:team/secret:pull,push');
    await alice.pushImage('team/app', 'v1', image);
    await alice.pushImage('team/secret', 'v1', image);
    const carol = new TokenClient(server.url, basicAuth('carol', USERS.carol));
    await carol.login('repository:public/tools:pull,push');
    await carol.pushImage('public/tools', 'v1', image);
    const bob = new TokenClient(server.url, basicAuth('bob', USERS.bob));
    await bob.login('repository:team/bob:pull,push');
    await bob.pushImage('team/bob', 'v1', image);
  });
  afterAll(() => server?.stop());

  const anon = () => new RegistryClient(server.url);

  it('/v2/ challenges with the realm on this server and the service; a proxy\'s scheme and host are followed', async () => {
    const res = await anon().req('/v2/');
    expect(res.status).toBe(401);
    expect(res.header('www-authenticate')).toBe(`Bearer realm="${realm}",service="registry-stack"`);
    expect(errorCodes(res)).toEqual(['UNAUTHORIZED']);
    const proxied = await anon().req('/v2/', { headers: { 'x-forwarded-proto': 'https', host: 'dcr.example.com' } });
    expect(parseChallenge(proxied.header('www-authenticate'))?.params.realm).toBe('https://dcr.example.com/auth/token');
  });

  it('challenges each request with the scope it needs', async () => {
    const cases: Array<[string, string, string]> = [
      ['GET', '/v2/team/app/manifests/v1', 'repository:team/app:pull'],
      ['HEAD', `/v2/team/app/blobs/${image.layers[0].digest}`, 'repository:team/app:pull'],
      ['POST', '/v2/team/app/blobs/uploads/', 'repository:team/app:pull,push'],
      ['DELETE', '/v2/team/app/manifests/v1', 'repository:team/app:delete'],
      ['GET', '/v2/_catalog', 'registry:catalog:*'],
    ];
    for (const [method, p, scope] of cases) {
      const res = await anon().req(p, { method });
      expect(res.status, p).toBe(401);
      expect(parseChallenge(res.header('www-authenticate'))?.params, p).toEqual({ realm, service: 'registry-stack', scope });
    }
  });

  it('GET /auth/token answers docker\'s fields, granting the intersection of scope and policy', async () => {
    const res = await fetchToken(realm, { service: 'registry-stack', scope: ['repository:team/app:pull,push,delete', 'repository:team/secret:pull'] }, basicAuth('carol', USERS.carol));
    expect(res.status).toBe(200);
    expect(res.headers['cache-control']).toBe('no-store');
    expect(res.body.token).toBe(res.body.access_token);
    expect(res.body.expires_in).toBe(300);
    expect(Date.parse(res.body.issued_at)).toBe(Math.floor(server.clock.ms / 1000) * 1000);
    expect(res.body.refresh_token).toBeUndefined();
    expect(decodeJwt(res.body.token)).toMatchObject({
      sub: 'carol',
      aud: 'registry-stack',
      access: [{ type: 'repository', name: 'team/app', actions: ['pull'] }],
    });
  });

  it('refuses wrong credentials with 401 and a Basic challenge; anonymous clients get an anonymous token', async () => {
    for (const auth of [basicAuth('alice', 'nope'), basicAuth('nobody', 'x'), 'Basic !!!']) {
      const res = await fetchToken(realm, { service: 'registry-stack', scope: ['repository:team/app:pull'] }, auth);
      expect(res.status, auth).toBe(401);
      expect(res.headers['www-authenticate']).toBe('Basic realm="registry-stack"');
      expect(res.body.errors[0].code).toBe('UNAUTHORIZED');
    }
    const res = await fetchToken(realm, { service: 'registry-stack', scope: ['repository:public/tools:pull', 'repository:team/app:pull'] });
    expect(res.status).toBe(200);
    expect(decodeJwt(res.body.token)).toMatchObject({ sub: '', access: [{ name: 'public/tools', actions: ['pull'] }] });
  });

  it('refuses another service, a malformed scope, and a form that is not one', async () => {
    expect((await fetchToken(realm, { service: 'other' })).status).toBe(400);
    const bad = await fetchToken(realm, { service: 'registry-stack', scope: ['repository-team'] });
    expect(bad.status).toBe(400);
    expect(bad.body.error).toBe('invalid_scope');
    expect((await postToken(realm, { grant_type: 'client_credentials' })).body.error).toBe('unsupported_grant_type');
  });

  it('a token lacking the scope the policy would allow → 401 insufficient_scope; one the policy refuses → 403 DENIED', async () => {
    const alice = await fetchToken(realm, { service: 'registry-stack', scope: ['repository:team/app:pull'] }, basicAuth('alice', USERS.alice));
    const bearer = new RegistryClient(server.url, `Bearer ${alice.body.token}`);
    const other = await bearer.req('/v2/team/other/tags/list');
    expect(other.status).toBe(401);
    expect(parseChallenge(other.header('www-authenticate'))?.params).toMatchObject({ scope: 'repository:team/other:pull', error: 'insufficient_scope' });
    const push = await bearer.req('/v2/team/app/blobs/uploads/', { method: 'POST' });
    expect(push.status).toBe(401);
    expect(parseChallenge(push.header('www-authenticate'))?.params.error).toBe('insufficient_scope');

    const carol = await fetchToken(realm, { service: 'registry-stack', scope: ['repository:team/app:pull,push'] }, basicAuth('carol', USERS.carol));
    const denied = await new RegistryClient(server.url, `Bearer ${carol.body.token}`).req('/v2/team/app/blobs/uploads/', { method: 'POST' });
    expect(denied.status).toBe(403);
    expect(errorCodes(denied)).toEqual(['DENIED']);
  });

  it('a bad token → 401 invalid_token', async () => {
    const res = await new RegistryClient(server.url, 'Bearer abc.def.ghi').req('/v2/team/app/tags/list');
    expect(res.status).toBe(401);
    expect(parseChallenge(res.header('www-authenticate'))?.params).toMatchObject({ error: 'invalid_token', scope: 'repository:team/app:pull' });
  });

  it('push, pull, list and delete as the policy allows, through challenges and tokens', async () => {
    const bob = new TokenClient(server.url, basicAuth('bob', USERS.bob));
    const m = await bob.req('/v2/team/app/manifests/v1', { headers: { accept: MT.ociManifest } });
    expect(m.status).toBe(200);
    expect(m.header('docker-content-digest')).toBe(image.manifest.digest);
    expect((await bob.req('/v2/team/app/tags/list')).json()).toEqual({ name: 'team/app', tags: ['v1'] });
    expect((await bob.req('/v2/team/secret/tags/list')).status).toBe(403);
    const other = buildImage();
    await bob.login('repository:team/bob:pull,push,delete');
    await bob.pushImage('team/bob', 'v2', other);
    expect((await bob.req(`/v2/team/bob/manifests/${other.manifest.digest}`, { method: 'DELETE' })).status).toBe(202);
    expect((await bob.req('/v2/team/bob/tags/list')).json().tags).toEqual(['v1']);

    const anonymous = new TokenClient(server.url);
    expect((await anonymous.req('/v2/public/tools/manifests/v1', { headers: { accept: MT.ociManifest } })).status).toBe(200);
    expect(anonymous.tokensFetched).toBe(0);
    expect((await anonymous.req('/v2/team/app/manifests/v1')).status).toBe(401);
  });

  it('lists in the catalog only what the caller may pull, paged after filtering', async () => {
    const catalogOf = async (client: RegistryClient) => (await client.req('/v2/_catalog')).json().repositories;
    expect(await catalogOf(new TokenClient(server.url, basicAuth('alice', USERS.alice)))).toEqual(['public/tools', 'team/app', 'team/bob', 'team/secret']);
    expect(await catalogOf(new TokenClient(server.url, basicAuth('bob', USERS.bob)))).toEqual(['public/tools', 'team/app', 'team/bob']);
    expect(await catalogOf(new TokenClient(server.url, basicAuth('root', USERS.root)))).toEqual(['public/tools', 'team/app', 'team/bob', 'team/secret']);
    expect(await catalogOf(new TokenClient(server.url))).toEqual(['public/tools']);
    expect(await catalogOf(new RegistryClient(server.url, basicAuth('bob', USERS.bob)))).toEqual(['public/tools', 'team/app', 'team/bob']);
    const bob = new TokenClient(server.url, basicAuth('bob', USERS.bob));
    const first = await bob.req('/v2/_catalog?n=1');
    expect(first.json().repositories).toEqual(['public/tools']);
    const next = /<([^>]+)>/.exec(first.header('link')!)![1];
    const second = await bob.req(next);
    expect(second.json().repositories).toEqual(['team/app']);
    const third = await bob.req(/<([^>]+)>/.exec(second.header('link')!)![1]);
    expect(third.json().repositories).toEqual(['team/bob']);
  });

  it('takes Basic credentials on registry requests too, with the same policy', async () => {
    const carol = new RegistryClient(server.url, basicAuth('carol', USERS.carol));
    expect((await carol.req('/v2/team/app/tags/list')).status).toBe(200);
    const push = await carol.req('/v2/team/app/blobs/uploads/', { method: 'POST' });
    expect(push.status).toBe(403);
    expect(errorCodes(push)).toEqual(['DENIED']);
    const wrong = await new RegistryClient(server.url, basicAuth('carol', 'x')).req('/v2/team/app/tags/list');
    expect(wrong.status).toBe(401);
    expect(parseChallenge(wrong.header('www-authenticate'))?.scheme).toBe('Bearer');
  });

  it('mounts only from a repository the caller may pull; otherwise starts a plain upload', async () => {
    const carol = new TokenClient(server.url, basicAuth('carol', USERS.carol));
    await carol.login('repository:public/tools:pull,push', 'repository:team/secret:pull');
    const layer = image.layers[0].digest;
    const refused = await carol.req(`/v2/public/tools/blobs/uploads/?mount=${layer}&from=team/secret`, { method: 'POST' });
    expect(refused.status).toBe(202);
    const alice = new TokenClient(server.url, basicAuth('alice', USERS.alice));
    await alice.login('repository:team/app:pull,push', 'repository:team/secret:pull');
    const mounted = await alice.req(`/v2/team/app/blobs/uploads/?mount=${layer}&from=team/secret`, { method: 'POST' });
    expect(mounted.status).toBe(201);
  });
});

describe('token auth: refresh tokens, the login budget, reloads', () => {
  let server: TokenTestServer;
  let realm: string;

  beforeAll(async () => {
    server = await startTokenServer({
      policy: POLICY,
      users: USERS,
      extra: { ratelimit: { enabled: true, failedlogins: { limit: 3, window: '1h' } } },
    });
    realm = `${server.url}/auth/token`;
  });
  afterAll(() => server?.stop());

  it('docker login\'s offline token still pushes an hour of token time later, through the refresh grant', async () => {
    const login = await fetchToken(realm, { service: 'registry-stack', offline: true, clientId: 'docker' }, basicAuth('alice', USERS.alice));
    expect(login.status).toBe(200);
    const refreshToken = login.body.refresh_token as string;
    expect(refreshToken).toBeTruthy();
    expect(decodeJwt(refreshToken)).toMatchObject({ client_id: 'docker', sub: 'alice' });

    const first = await postToken(realm, { grant_type: 'refresh_token', refresh_token: refreshToken, service: 'registry-stack', client_id: 'docker', scope: 'repository:team/app:pull,push' });
    expect(first.status).toBe(200);
    expect(first.body.scope).toBe('repository:team/app:pull,push');
    const old = new RegistryClient(server.url, `Bearer ${first.body.access_token}`);
    expect((await old.req('/v2/team/app/blobs/uploads/', { method: 'POST' })).status).toBe(202);

    server.clock.advance(HOUR);
    const expired = await old.req('/v2/team/app/blobs/uploads/', { method: 'POST' });
    expect(expired.status).toBe(401);
    expect(parseChallenge(expired.header('www-authenticate'))?.params.error).toBe('invalid_token');
    const later = await postToken(realm, { grant_type: 'refresh_token', refresh_token: refreshToken, service: 'registry-stack', client_id: 'docker', scope: 'repository:team/app:pull,push' });
    expect(later.status).toBe(200);
    const image = buildImage();
    await new RegistryClient(server.url, `Bearer ${later.body.access_token}`).pushImage('team/app', 'later', image);

    // A new password ends it.
    writeHtpasswd(server.htpasswdFile, { ...USERS, alice: 'new-pw' });
    server.clock.advance(3_000);
    const after = await postToken(realm, { grant_type: 'refresh_token', refresh_token: refreshToken, service: 'registry-stack' });
    expect(after.status).toBe(401);
    expect(after.body.error).toBe('invalid_grant');
    writeHtpasswd(server.htpasswdFile, USERS);
    server.clock.advance(3_000);
  });

  it('the password grant, with access_type=offline for a refresh token', async () => {
    const res = await postToken(realm, { grant_type: 'password', username: 'bob', password: USERS.bob, service: 'registry-stack', access_type: 'offline', client_id: 'x', scope: ['repository:team/app:pull', 'repository:team/secret:pull'] });
    expect(res.status).toBe(200);
    expect(res.body.refresh_token).toBeTruthy();
    expect(res.body.scope).toBe('repository:team/app:pull');
  });

  it('a policy change applies to tokens already issued', async () => {
    const client = new TokenClient(server.url, basicAuth('bob', USERS.bob));
    expect((await client.req('/v2/team/app/tags/list')).status).toBe(200);
    const fetched = client.tokensFetched;
    server.writePolicy(POLICY.replace('team: [alice, bob]', 'team: [alice]').replace('default: [pull]', 'default: []'));
    server.clock.advance(3_000);
    const res = await client.req('/v2/team/app/tags/list');
    expect(res.status).toBe(403);
    expect(errorCodes(res)).toEqual(['DENIED']);
    expect(client.tokensFetched).toBe(fetched);
    // A broken policy keeps the last good one.
    server.writePolicy('repositories: [broken');
    server.clock.advance(3_000);
    expect((await client.req('/v2/team/app/tags/list')).status).toBe(403);
    server.writePolicy(POLICY);
    server.clock.advance(3_000);
    expect((await client.req('/v2/team/app/tags/list')).status).toBe(200);
  });

  it('wrong passwords at /auth/token and on registry requests draw on one failed-login budget', async () => {
    expect((await fetchToken(realm, {}, basicAuth('carol', 'bad-1'))).status).toBe(401);
    expect((await postToken(realm, { grant_type: 'password', username: 'carol', password: 'bad-2' })).status).toBe(401);
    expect((await new RegistryClient(server.url, basicAuth('carol', 'bad-3')).req('/v2/')).status).toBe(401);
    const locked = await fetchToken(realm, {}, basicAuth('carol', USERS.carol));
    expect(locked.status).toBe(429);
    expect(locked.headers['retry-after']).toBeDefined();
    expect((await new RegistryClient(server.url, basicAuth('carol', USERS.carol)).req('/v2/')).status).toBe(429);
  });
});

describe('token auth: config', () => {
  it('a bad policy file, or a missing one, stops the start naming auth.access', async () => {
    await expect(startTokenServer({ policy: 'repositories:\n  "x/**": { default: [fly] }\n' })).rejects.toThrow(/^auth\.access: .*access\.yml: repositories\."x\/\*\*"\.default: unknown action "fly"/);
  });

  it('refuses anonymouspull beside auth.access, and an external token server without its keys', async () => {
    const { loadConfigObject } = await import('../../server/src/config/load.ts');
    const base = { storage: { filesystem: { rootdirectory: '/tmp/x' } } };
    expect(() => loadConfigObject({ ...base, auth: { access: '/p.yml', anonymouspull: true } }, {})).toThrow(/auth\.anonymouspull/);
    expect(() => loadConfigObject({ ...base, auth: { token: { realm: 'https://a/token', service: 's', issuer: 'i' } } }, {})).toThrow(/auth\.token\.rootcertbundle/);
    expect(() => loadConfigObject({ ...base, auth: { token: { service: 's', issuer: 'i', jwks: '/k.json' } } }, {})).toThrow(/auth\.token\.realm/);
    expect(() => loadConfigObject({ ...base, auth: { access: '/p.yml', token: { keyrotation: 'soon' } } }, {})).toThrow(/auth\.token\.keyrotation/);
  });

  it('keeps the keys in the data directory, and signs with the same key after a restart', async () => {
    const root = makeTempDir('rs-token-restart-');
    const first = await startTokenServer({ policy: POLICY, users: USERS, root });
    const a = await fetchToken(`${first.url}/auth/token`, { service: 'registry-stack' });
    await first.stop();
    const second = await startTokenServer({ policy: POLICY, users: USERS, root });
    try {
      const b = await fetchToken(`${second.url}/auth/token`, { service: 'registry-stack' });
      const kid = (t: string) => JSON.parse(Buffer.from(t.split('.')[0], 'base64url').toString()).kid;
      expect(kid(b.body.token)).toBe(kid(a.body.token));
      // A token from before the restart is still good.
      expect((await new RegistryClient(second.url, `Bearer ${a.body.token}`).req('/v2/')).status).toBe(200);
    } finally {
      await second.stop();
    }
    writeFileSync(path.join(root, 'done'), '');
  });
});

describe('token auth on a mirror: the same pull rules, per upstream prefix', () => {
  let upstream: FakeUpstream;
  let mirror: TokenTestServer;
  const image = buildImage({ files: [{ 'm.txt': 'mirror token test\n' }] });

  beforeAll(async () => {
    upstream = await FakeUpstream.start();
    await upstream.pushImage('library/alpine', '3.20', image);
    await upstream.pushImage('someone/app', 'v1', image);
    mirror = await startTokenServer({
      policy: `
repositories:
  "docker.io/library/**": { anonymous: [pull] }
  "docker.io/**": { default: [pull] }
`,
      users: USERS,
      extra: { proxy: { upstreams: [{ host: 'docker.io', url: upstream.url }] } },
    });
  });
  afterAll(async () => {
    await mirror?.stop();
    await upstream?.dispose();
  });

  it('anonymous clients pull docker.io/library/** only; logged-in users the rest', async () => {
    const anonymous = new TokenClient(mirror.url);
    for (const name of ['alpine', 'library/alpine', 'docker.io/library/alpine']) {
      expect((await anonymous.req(`/v2/${name}/manifests/3.20`, { headers: { accept: MT.ociManifest } })).status, name).toBe(200);
    }
    const refused = await anonymous.req('/v2/someone/app/manifests/v1', { headers: { accept: MT.ociManifest } });
    expect(refused.status).toBe(401);
    expect(parseChallenge(refused.header('www-authenticate'))?.params.scope).toBe('repository:docker.io/someone/app:pull');

    const alice = new TokenClient(mirror.url, basicAuth('alice', USERS.alice));
    expect((await alice.req('/v2/someone/app/manifests/v1', { headers: { accept: MT.ociManifest } })).status).toBe(200);
    // A token asked for by the name the client uses (docker asks for "someone/app") works as well.
    const token = await fetchToken(`${mirror.url}/auth/token`, { service: 'registry-stack', scope: ['repository:someone/app:pull'] }, basicAuth('alice', USERS.alice));
    expect((await new RegistryClient(mirror.url, `Bearer ${token.body.token}`).req('/v2/someone/app/manifests/v1', { headers: { accept: MT.ociManifest } })).status).toBe(200);
    await mirror.mirror!.settled();
    // Listed as clients pull them (the policy's names are the cached ones, docker.io/...).
    expect((await anonymous.req('/v2/_catalog')).json().repositories).toEqual(['library/alpine']);
    expect((await alice.req('/v2/_catalog')).json().repositories).toEqual(['library/alpine', 'someone/app']);
  });
});
