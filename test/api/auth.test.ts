// The base endpoint and authentication over real sockets: htpasswd files made
// by Apache's own `htpasswd -B` ($2y$) and by bcryptjs ($2a$/$2b$), anonymous
// pull, the empty-credentials form containers/image sends, no-auth and
// read-only registries.
import { execFileSync } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import bcrypt from 'bcryptjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { errorCodes, RegistryClient } from '../helpers/client.ts';
import { buildImage, MT, randomBlob } from '../helpers/oci.ts';
import { basicAuth, makeTempDir, startTestServer, type TestServer } from '../helpers/server.ts';
import { createTestStorage, type TestStorage } from '../helpers/storage.ts';

const ANONYMOUS_EMPTY = 'Basic Og=='; // base64(":")

describe('GET /v2/', () => {
  let server: TestServer;
  let client: RegistryClient;
  beforeAll(async () => {
    server = await startTestServer();
    client = new RegistryClient(server.url, server.auth);
  });
  afterAll(() => server.stop());

  it('answers 200 with the API version header for an authenticated client', async () => {
    const res = await client.req('/v2/');
    expect(res.status).toBe(200);
    expect(res.header('docker-distribution-api-version')).toBe('registry/2.0');
    expect(res.json()).toEqual({});
  });

  it('also answers without the trailing slash and to HEAD', async () => {
    expect((await client.req('/v2')).status).toBe(200);
    const head = await client.req('/v2/', { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(head.header('docker-distribution-api-version')).toBe('registry/2.0');
    expect(head.body.length).toBe(0);
  });

  it('challenges a client without credentials with Basic and the configured realm', async () => {
    const res = await client.withAuth(undefined).req('/v2/');
    expect(res.status).toBe(401);
    expect(res.header('www-authenticate')).toBe('Basic realm="test-realm"');
    expect(res.header('docker-distribution-api-version')).toBe('registry/2.0');
    expect(errorCodes(res)).toEqual(['UNAUTHORIZED']);
  });

  it('challenges every API endpoint, not just the base', async () => {
    const anon = client.withAuth(undefined);
    for (const p of ['/v2/_catalog', '/v2/a/tags/list', '/v2/a/manifests/latest', `/v2/a/blobs/${randomBlob(1).digest}`]) {
      const res = await anon.req(p);
      expect(res.status, p).toBe(401);
      expect(res.header('www-authenticate'), p).toMatch(/^Basic realm="test-realm"$/);
      expect(errorCodes(res), p).toEqual(['UNAUTHORIZED']);
    }
  });

  it('refuses a malformed Authorization header as bad credentials', async () => {
    for (const header of ['Bearer abc', 'Basic !!!', 'Basic ' + Buffer.from('no-colon').toString('base64')]) {
      const res = await client.withAuth(header).req('/v2/');
      expect(res.status, header).toBe(401);
      expect(errorCodes(res), header).toEqual(['UNAUTHORIZED']);
    }
  });
});

describe('htpasswd files', () => {
  let dir: string;
  let server: TestServer;
  let url: string;
  const users = {
    apache: 'pw-from-apache', // $2y$, made by Apache's htpasswd -B
    jsa: 'pw-2a', // $2a$, bcryptjs
    jsb: 'pw:with:colons ünïcode', // $2b$, bcryptjs
  };

  beforeAll(async () => {
    dir = makeTempDir('rs-htpasswd-');
    const file = path.join(dir, 'htpasswd');
    execFileSync('htpasswd', ['-c', '-b', '-B', '-C', '4', file, 'apache', users.apache], { stdio: 'pipe' });
    const apacheLine = readFileSync(file, 'utf8').trim();
    expect(apacheLine).toMatch(/^apache:\$2y\$04\$/);
    const hash2b = bcrypt.hashSync(users.jsb, 4);
    expect(hash2b.startsWith('$2b$')).toBe(true);
    const hash2a = `$2a$${bcrypt.hashSync(users.jsa, 4).slice(4)}`;
    writeFileSync(
      file,
      `# made by htpasswd -B and bcryptjs\n${apacheLine}\n\njsa:${hash2a}\njsb:${hash2b}\n`,
    );
    server = await startTestServer({
      users: {},
      root: dir,
      extra: { auth: { htpasswd: { realm: 'files', path: file } } },
    });
    url = server.url;
  });
  afterAll(async () => {
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('accepts the $2y$ entry written by `htpasswd -B`', async () => {
    const res = await new RegistryClient(url, basicAuth('apache', users.apache)).req('/v2/');
    expect(res.status).toBe(200);
  });

  it('accepts $2a$ and $2b$ entries (bcryptjs), including passwords with colons and non-ASCII', async () => {
    expect((await new RegistryClient(url, basicAuth('jsa', users.jsa)).req('/v2/')).status).toBe(200);
    expect((await new RegistryClient(url, basicAuth('jsb', users.jsb)).req('/v2/')).status).toBe(200);
  });

  it('answers 401 UNAUTHORIZED with a challenge for a wrong password, an unknown user, and another user’s password', async () => {
    for (const auth of [
      basicAuth('apache', 'wrong'),
      basicAuth('apache', `${users.apache} `),
      basicAuth('nobody', users.apache),
      basicAuth('jsa', users.jsb),
    ]) {
      const res = await new RegistryClient(url, auth).req('/v2/');
      expect(res.status).toBe(401);
      expect(res.header('www-authenticate')).toBe('Basic realm="files"');
      expect(errorCodes(res)).toEqual(['UNAUTHORIZED']);
    }
  });

  it('lets a user of the file push and pull', async () => {
    const client = new RegistryClient(url, basicAuth('apache', users.apache));
    const image = buildImage();
    await client.pushImage('apache/app', 'v1', image);
    const res = await client.req('/v2/apache/app/manifests/v1', { headers: { accept: MT.ociManifest } });
    expect(res.status).toBe(200);
    expect(res.header('docker-content-digest')).toBe(image.manifest.digest);
  });

  it('a correct password keeps working on repeated requests (verification cache)', async () => {
    const good = new RegistryClient(url, basicAuth('jsb', users.jsb));
    for (let i = 0; i < 3; i++) expect((await good.req('/v2/')).status).toBe(200);
    // ...and a wrong one is not let in by the cache of the right one.
    expect((await new RegistryClient(url, basicAuth('jsb', 'pw:with:colons')).req('/v2/')).status).toBe(401);
  });
});

describe('anonymous pull', () => {
  let server: TestServer;
  let user: RegistryClient;
  let anon: RegistryClient;
  const image = buildImage();

  beforeAll(async () => {
    server = await startTestServer({ anonymousPull: true });
    user = new RegistryClient(server.url, server.auth);
    anon = user.withAuth(undefined);
    await user.pushImage('public/app', 'v1', image);
  });
  afterAll(() => server.stop());

  it('serves manifests, blobs, tags and the catalog to anonymous clients', async () => {
    const m = await anon.req('/v2/public/app/manifests/v1', { headers: { accept: MT.ociManifest } });
    expect(m.status).toBe(200);
    expect(m.body.equals(image.manifest.data)).toBe(true);
    const head = await anon.req(`/v2/public/app/manifests/${image.manifest.digest}`, { method: 'HEAD' });
    expect(head.status).toBe(200);
    const b = await anon.req(`/v2/public/app/blobs/${image.layers[0].digest}`);
    expect(b.status).toBe(200);
    expect(b.body.equals(image.layers[0].data)).toBe(true);
    expect((await anon.req('/v2/public/app/tags/list')).json()).toEqual({ name: 'public/app', tags: ['v1'] });
    expect((await anon.req('/v2/_catalog')).json().repositories).toContain('public/app');
  });

  it('still challenges on /v2/ so that clients learn to send credentials', async () => {
    const res = await anon.req('/v2/');
    expect(res.status).toBe(401);
    expect(res.header('www-authenticate')).toBe('Basic realm="test-realm"');
  });

  it('treats empty Basic credentials (Basic Og==) as anonymous', async () => {
    const empty = user.withAuth(ANONYMOUS_EMPTY);
    const res = await empty.req('/v2/public/app/manifests/v1', { headers: { accept: MT.ociManifest } });
    expect(res.status).toBe(200);
    const push = await empty.req('/v2/public/app/blobs/uploads/', { method: 'POST' });
    expect(push.status).toBe(401);
    expect(errorCodes(push)).toEqual(['UNAUTHORIZED']);
  });

  it('refuses anonymous pushes, tag writes and deletes with 401 and a challenge, changing nothing', async () => {
    const blob = randomBlob(64);
    const attempts = [
      anon.req('/v2/public/app/blobs/uploads/', { method: 'POST' }),
      anon.req(`/v2/public/app/blobs/uploads/?digest=${blob.digest}`, { method: 'POST', body: blob.data }),
      anon.req('/v2/public/app/manifests/v2', {
        method: 'PUT',
        headers: { 'content-type': MT.ociManifest },
        body: image.manifest.data,
      }),
      anon.req('/v2/public/app/manifests/v1', { method: 'DELETE' }),
      anon.req(`/v2/public/app/blobs/${image.layers[0].digest}`, { method: 'DELETE' }),
    ];
    for (const res of await Promise.all(attempts)) {
      expect(res.status).toBe(401);
      expect(res.header('www-authenticate')).toBe('Basic realm="test-realm"');
      expect(errorCodes(res)).toEqual(['UNAUTHORIZED']);
    }
    expect((await anon.req('/v2/public/app/tags/list')).json().tags).toEqual(['v1']);
    expect((await anon.req(`/v2/public/app/blobs/${blob.digest}`)).status).toBe(404);
    expect((await anon.req(`/v2/public/app/blobs/${image.layers[0].digest}`)).status).toBe(200);
  });

  it('refuses wrong credentials even for pulls (no silent downgrade to anonymous)', async () => {
    const res = await user.withAuth(basicAuth('tester', 'wrong')).req('/v2/public/app/tags/list');
    expect(res.status).toBe(401);
    expect(errorCodes(res)).toEqual(['UNAUTHORIZED']);
  });
});

describe('no auth configured (users: {})', () => {
  let server: TestServer;
  let client: RegistryClient;
  beforeAll(async () => {
    server = await startTestServer({ users: {} });
    client = new RegistryClient(server.url);
  });
  afterAll(() => server.stop());

  it('serves reads to everyone without a challenge', async () => {
    const base = await client.req('/v2/');
    expect(base.status).toBe(200);
    expect(base.header('www-authenticate')).toBeUndefined();
    expect((await client.req('/v2/_catalog')).json()).toEqual({ repositories: [] });
    expect(errorCodes(await client.req('/v2/some/repo/tags/list'))).toEqual(['NAME_UNKNOWN']);
  });

  it('refuses every write with 403 DENIED (there is nobody to authenticate), with or without credentials', async () => {
    const blob = randomBlob(16);
    for (const c of [client, client.withAuth(basicAuth('someone', 'pw')), client.withAuth(ANONYMOUS_EMPTY)]) {
      const attempts = await Promise.all([
        c.req('/v2/x/blobs/uploads/', { method: 'POST' }),
        c.req(`/v2/x/blobs/uploads/?digest=${blob.digest}`, { method: 'POST', body: blob.data }),
        c.req('/v2/x/manifests/v1', { method: 'PUT', headers: { 'content-type': MT.ociManifest }, body: '{}' }),
        c.req('/v2/x/manifests/v1', { method: 'DELETE' }),
        c.req(`/v2/x/blobs/${blob.digest}`, { method: 'DELETE' }),
      ]);
      for (const res of attempts) {
        expect(res.status).toBe(403);
        expect(errorCodes(res)).toEqual(['DENIED']);
      }
    }
    expect((await client.req('/v2/_catalog')).json()).toEqual({ repositories: [] });
  });
});

describe('read-only mode', () => {
  let storage: TestStorage;
  let server: TestServer;
  let client: RegistryClient;
  const image = buildImage();

  beforeAll(async () => {
    // Fill a data directory (or bucket) with a writable server, then serve it read-only.
    storage = await createTestStorage('readonly');
    const writer = await startTestServer({ storage });
    await new RegistryClient(writer.url, writer.auth).pushImage('ro/app', 'v1', image);
    await writer.stop();
    server = await startTestServer({ storage, readOnly: true });
    client = new RegistryClient(server.url, server.auth);
  });
  afterAll(async () => {
    await server.stop();
    await storage.destroy();
  });

  it('serves what is stored', async () => {
    const res = await client.req('/v2/ro/app/manifests/v1', { headers: { accept: MT.ociManifest } });
    expect(res.status).toBe(200);
    expect(res.body.equals(image.manifest.data)).toBe(true);
    expect((await client.req(`/v2/ro/app/blobs/${image.config.digest}`)).status).toBe(200);
  });

  it('refuses every write with 405 UNSUPPORTED', async () => {
    const blob = randomBlob(16);
    const attempts = await Promise.all([
      client.req('/v2/ro/app/blobs/uploads/', { method: 'POST' }),
      client.req(`/v2/ro/app/blobs/uploads/?digest=${blob.digest}`, { method: 'POST', body: blob.data }),
      client.req(`/v2/ro/app/blobs/uploads/?mount=${image.config.digest}&from=ro/app`, { method: 'POST' }),
      client.req('/v2/ro/app/manifests/v2', {
        method: 'PUT',
        headers: { 'content-type': MT.ociManifest },
        body: image.manifest.data,
      }),
      client.req('/v2/ro/app/manifests/v1', { method: 'DELETE' }),
      client.req(`/v2/ro/app/blobs/${image.config.digest}`, { method: 'DELETE' }),
      client.req('/v2/ro/app/blobs/uploads/00000000-0000-4000-8000-000000000000', { method: 'PATCH', body: 'x' }),
    ]);
    for (const res of attempts) {
      expect(res.status).toBe(405);
      expect(errorCodes(res)).toEqual(['UNSUPPORTED']);
    }
    expect((await client.req('/v2/ro/app/tags/list')).json().tags).toEqual(['v1']);
  });
});
