// The web UI's server side over real HTTP: headers, login, sessions, CSRF,
// who may see and delete what, and ui.enabled: false.
import { readFileSync, utimesSync, writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTokenServer } from '../auth/helpers.ts';
import { RegistryClient } from '../helpers/client.ts';
import { blobOf, buildArtifact, buildImage, buildIndex, manifestDescriptor, MT, tarLayer } from '../helpers/oci.ts';
import { basicAuth, startTestServer, TEST_PASSWORD, TEST_USER, type TestServer, writeHtpasswd } from '../helpers/server.ts';

interface Page {
  status: number;
  headers: Headers;
  text: string;
}

/** A browser's cookie jar in miniature: what Set-Cookie said, sent back on every request. */
class Visitor {
  readonly cookies = new Map<string, string>();
  constructor(private readonly base: string) {}

  async go(path: string, init: { method?: string; form?: Record<string, string>; headers?: Record<string, string> } = {}): Promise<Page> {
    const headers: Record<string, string> = { ...init.headers };
    if (this.cookies.size) headers.cookie = [...this.cookies].map(([k, v]) => `${k}=${v}`).join('; ');
    if (init.form) headers['content-type'] = 'application/x-www-form-urlencoded';
    const res = await fetch(`${this.base}${path}`, {
      method: init.method ?? (init.form ? 'POST' : 'GET'),
      headers,
      body: init.form && new URLSearchParams(init.form).toString(),
      redirect: 'manual',
    });
    for (const c of res.headers.getSetCookie()) {
      const [pair] = c.split(';');
      const [k, v] = [pair.slice(0, pair.indexOf('=')), pair.slice(pair.indexOf('=') + 1)];
      if (/Max-Age=0/.test(c)) this.cookies.delete(k);
      else this.cookies.set(k, v);
    }
    return { status: res.status, headers: res.headers, text: await res.text() };
  }

  async login(user = TEST_USER, password = TEST_PASSWORD): Promise<Page> {
    const form = await this.go('/ui/login');
    const csrf = /name="csrf" value="([^"]+)"/.exec(form.text)![1];
    return this.go('/ui/login', { form: { csrf, user, password, next: '' } });
  }
}

function csrfOf(page: Page): string {
  return /data-csrf="([^"]+)"/.exec(page.text)![1];
}

describe('web UI (server side)', () => {
  let server: TestServer;
  let client: RegistryClient;

  beforeAll(async () => {
    server = await startTestServer({ anonymousPull: true });
    client = new RegistryClient(server.url, server.auth);
    await client.pushIndex('team/app', 'v1', buildIndex([buildImage({ architecture: 'amd64' }), buildImage({ architecture: 'arm64' })]));
    await client.pushImage('team/app', 'v2', buildImage());
    await client.pushImage('other', 'latest', buildImage());
  });
  afterAll(() => server?.stop());

  it('serves pages with a strict CSP and no inline script', async () => {
    const page = await new Visitor(server.url).go('/ui/');
    expect(page.status).toBe(200);
    expect(page.headers.get('content-security-policy')).toMatch(/default-src 'self'; script-src 'self'/);
    expect(page.headers.get('content-security-policy')).not.toMatch(/unsafe-inline/);
    expect(page.text).not.toMatch(/<script(?![^>]*\bsrc=)/);
    expect(page.text).toContain('team/app');
  });

  it('pages and searches the catalog on the server', async () => {
    const v = new Visitor(server.url);
    // (Sizes and last pushes: catalog.test.ts.)
    const brief = (page: { repositories: Array<{ name: string; tags: number }>; next?: string }) => ({
      repositories: page.repositories.map(({ name, tags }) => ({ name, tags })),
      ...(page.next ? { next: page.next } : {}),
    });
    const found = await v.go('/ui/api/repositories?q=APP');
    expect(brief(JSON.parse(found.text))).toEqual({ repositories: [{ name: 'team/app', tags: 2 }] });
    const first = JSON.parse((await v.go('/ui/api/repositories?n=1')).text);
    expect(brief(first)).toEqual({ repositories: [{ name: 'other', tags: 1 }], next: 'other' });
    const second = JSON.parse((await v.go(`/ui/api/repositories?n=1&last=${first.next}`)).text);
    expect(brief(second)).toEqual({ repositories: [{ name: 'team/app', tags: 2 }] });
  });

  it('lists tags newest first with the platforms of an index', async () => {
    const tags = JSON.parse((await new Visitor(server.url).go('/ui/api/tags?name=team/app')).text);
    expect(tags.tags.map((t: { tag: string }) => t.tag).sort()).toEqual(['v1', 'v2']);
    const v1 = tags.tags.find((t: { tag: string }) => t.tag === 'v1');
    expect(v1.index).toBe(true);
    expect(v1.platforms.map((p: { architecture: string }) => p.architecture)).toEqual(['amd64', 'arm64']);
    expect(v1.size).toBeGreaterThan(1000);
    expect(tags.canDelete).toBe(false);
  });

  it('logs in with a session cookie that is HttpOnly and SameSite=Strict, Secure only over TLS', async () => {
    const v = new Visitor(server.url);
    const bad = await v.login(TEST_USER, 'wrong');
    expect(bad.status).toBe(401);
    const ok = await v.login();
    expect(ok.status).toBe(303);
    const cookie = ok.headers.getSetCookie().find((c) => c.startsWith('rs_ui_session='))!;
    expect(cookie).toMatch(/HttpOnly/);
    expect(cookie).toMatch(/SameSite=Strict/);
    // Plain HTTP, and X-Forwarded-Proto from an untrusted address: not Secure.
    expect(cookie).not.toMatch(/Secure/);
    const home = await v.go('/ui/');
    expect(home.text).toContain(`Logged in as <strong>${TEST_USER}</strong>`);
  });

  it('refuses a login form without its CSRF token', async () => {
    const v = new Visitor(server.url);
    await v.go('/ui/login');
    const res = await v.go('/ui/login', { form: { csrf: 'forged', user: TEST_USER, password: TEST_PASSWORD } });
    expect(res.status).toBe(403);
    expect(v.cookies.has('rs_ui_session')).toBe(false);
  });

  it('deletes a tag with the session and its CSRF token, and nothing without', async () => {
    await client.pushImage('team/app', 'doomed', buildImage());
    const anonymous = new Visitor(server.url);
    expect((await anonymous.go('/ui/delete', { form: { name: 'team/app', reference: 'doomed', csrf: 'x' } })).status).toBe(403);
    const v = new Visitor(server.url);
    await v.login();
    const page = await v.go('/ui/repo?name=team/app');
    expect((await v.go('/ui/delete', { form: { name: 'team/app', reference: 'doomed', csrf: 'wrong' } })).status).toBe(403);
    expect((await client.req('/v2/team/app/manifests/doomed', { method: 'HEAD' })).status).toBe(200);
    const done = await v.go('/ui/delete', { form: { name: 'team/app', reference: 'doomed', csrf: csrfOf(page) } });
    expect(done.status).toBe(303);
    expect((await client.req('/v2/team/app/manifests/doomed', { method: 'HEAD' })).status).toBe(404);
  });

  it('shows an image: manifest, config, layers with their total, and referrers, with every pushed value escaped', async () => {
    const layers = [tarLayer({ 'a.txt': 'a' }), tarLayer({ 'b.txt': 'b'.repeat(5000) })];
    const config = blobOf(
      JSON.stringify({
        architecture: 'arm64',
        os: 'linux',
        variant: 'v8',
        created: '2026-01-02T03:04:05Z',
        config: {
          Env: ['PATH=/usr/bin', 'EVIL=<img src=x onerror=alert(1)>'],
          Entrypoint: ['/entry'],
          Cmd: ['--serve'],
          Labels: { 'org.example.evil': '<script>alert(1)</script>', '"><script>x</script>': 'key' },
        },
        history: [{ created_by: 'RUN echo </td><script>alert(2)</script>' }, { created_by: 'CMD ["--serve"]', empty_layer: true }],
      }),
    );
    const manifest = blobOf(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MT.ociManifest,
        config: { mediaType: MT.ociConfig, digest: config.digest, size: config.size },
        layers: layers.map((l) => ({ mediaType: MT.ociLayer, digest: l.digest, size: l.size })),
      }),
    );
    const img = { config, layers, manifest, mediaType: MT.ociManifest, platform: { architecture: 'arm64', os: 'linux' } };
    await client.pushImage('team/labels', 'v1', img);
    const sbom = buildArtifact({ artifactType: 'application/spdx+json', subject: manifestDescriptor(img), annotations: { note: '<b>sbom</b>' } });
    await client.pushImage('team/labels', sbom.manifest.digest, sbom);

    const repo = await new Visitor(server.url).go('/ui/repo?name=team/labels');
    const url = `/ui/image?name=team%2Flabels&reference=${encodeURIComponent(manifest.digest)}`;
    expect(repo.text).toContain(`href="${url.replace(/&/g, '&#38;')}"`);
    const page = await new Visitor(server.url).go(url);
    expect(page.status).toBe(200);
    expect(page.headers.get('content-security-policy')).toMatch(/script-src 'self'/);
    const text = page.text;
    expect(text).toContain(manifest.digest);
    expect(text).toContain(MT.ociManifest);
    expect(text).toContain('linux/arm64/v8');
    expect(text).toContain('PATH=/usr/bin');
    expect(text).toContain('org.example.evil');
    expect(text).toContain('[&#34;/entry&#34;]');
    for (const l of layers) expect(text).toContain(l.digest.slice(0, 'sha256:'.length + 12));
    expect(text).toMatch(/Layers \(2\)<\/th><td>[\d.]+ (B|KB)</);
    // The referrer, by its artifact type, linking to its own page.
    expect(text).toContain('application/spdx+json');
    expect(text).toContain(`reference=${encodeURIComponent(sbom.manifest.digest)}`);
    // Nothing pushed became markup: the only scripts are the page's own.
    expect(text.match(/<script/g)).toHaveLength(1);
    expect(text).not.toMatch(/<img|<b>/);
    expect(text).toContain('&#60;script&#62;alert(1)&#60;/script&#62;');
  });

  it('shows an index with its platforms linking to their manifests, and says no for what is not there', async () => {
    const v = new Visitor(server.url);
    const tags = JSON.parse((await v.go('/ui/api/tags?name=team/app')).text);
    const v1 = tags.tags.find((t: { tag: string }) => t.tag === 'v1');
    const page = await v.go(`/ui/image?name=team/app&reference=v1`);
    expect(page.status).toBe(200);
    expect(page.text).toContain(MT.ociIndex);
    for (const p of v1.platforms) {
      expect(page.text).toContain(`linux/${p.architecture}`);
      expect(page.text).toContain(`reference=${encodeURIComponent(p.digest)}`);
      const child = await v.go(`/ui/image?name=team/app&reference=${encodeURIComponent(p.digest)}`);
      expect(child.text).toContain(`linux/${p.architecture}`);
      expect(child.text).toContain('Layers (1)');
    }
    expect((await v.go('/ui/image?name=team/app&reference=nope')).status).toBe(404);
    expect((await v.go(`/ui/image?name=team/app&reference=sha256:${'0'.repeat(64)}`)).status).toBe(404);
    expect((await v.go('/ui/image?name=team/app&reference=<x>')).status).toBe(404);
  });

  it('logs out: the session is gone on the server, not just the cookie', async () => {
    const v = new Visitor(server.url);
    await v.login();
    const session = v.cookies.get('rs_ui_session')!;
    const page = await v.go('/ui/');
    expect((await v.go('/ui/logout', { form: { csrf: csrfOf(page) } })).status).toBe(303);
    const replay = await fetch(`${server.url}/ui/`, { headers: { cookie: `rs_ui_session=${session}` } });
    expect(await replay.text()).not.toContain('Logged in as');
  });
});

describe('web UI access and switches', () => {
  it('shows anonymous visitors nothing where anonymous pull is off, and answers 404 with ui.enabled: false', async () => {
    const server = await startTestServer({ anonymousPull: false });
    try {
      await new RegistryClient(server.url, basicAuth(TEST_USER, TEST_PASSWORD)).pushImage('secret', 'v1', buildImage());
      const v = new Visitor(server.url);
      expect((await v.go('/ui/')).text).not.toContain('secret');
      expect((await v.go('/ui/api/tags?name=secret')).status).toBe(404);
      // The image page: anonymous visitors are sent to log in, and see it once they have.
      const image = await v.go('/ui/image?name=secret&reference=v1');
      expect(image.status).toBe(303);
      expect(image.headers.get('location')).toMatch(/^\/ui\/login\?next=/);
      await v.login();
      expect((await v.go('/ui/')).text).toContain('secret');
      const seen = await v.go('/ui/image?name=secret&reference=v1');
      expect(seen.status).toBe(200);
      expect(seen.text).toContain('Layers (1)');
    } finally {
      await server.stop();
    }
    const off = await startTestServer({ extra: { ui: { enabled: false } } });
    try {
      const res = await fetch(`${off.url}/ui/`);
      expect(res.status).toBe(404);
    } finally {
      await off.stop();
    }
  });
});

describe('web UI behind a TLS proxy', () => {
  it('marks the session cookie Secure when a trusted proxy says the client came over https', async () => {
    const server = await startTestServer({ extra: { ratelimit: { trustedproxies: ['loopback'] } } });
    try {
      const v = new Visitor(server.url);
      const https = { 'x-forwarded-proto': 'https' };
      const form = await v.go('/ui/login', { headers: https });
      const csrf = /name="csrf" value="([^"]+)"/.exec(form.text)![1];
      const ok = await v.go('/ui/login', { headers: https, form: { csrf, user: TEST_USER, password: TEST_PASSWORD } });
      expect(ok.status).toBe(303);
      expect(ok.headers.getSetCookie().find((c) => c.startsWith('rs_ui_session='))).toMatch(/; Secure/);
    } finally {
      await server.stop();
    }
  });
});

describe('web UI sessions follow the account', () => {
  it('with an access policy: shows and deletes only what the policy allows now; a new password ends old sessions', async () => {
    const policy = (aliceMay: string) => `
repositories:
  "team/**": { anonymous: [pull], users: { alice: [${aliceMay}], bob: [pull] } }
  "secret/**": { users: { alice: [pull, push] } }
`;
    const server = await startTokenServer({ policy: policy('pull, push, delete'), users: { alice: 'alice-pw', bob: 'bob-pw' } });
    try {
      const pusher = new RegistryClient(server.url, basicAuth('alice', 'alice-pw'));
      await pusher.pushImage('team/app', 'v1', buildImage());
      await pusher.pushImage('team/app', 'v2', buildImage());
      await pusher.pushImage('secret/thing', 'v1', buildImage());

      const anonymous = new Visitor(server.url);
      const list = await anonymous.go('/ui/');
      expect(list.text).toContain('team/app');
      expect(list.text).not.toContain('secret/thing');

      const bob = new Visitor(server.url);
      expect((await bob.login('bob', 'bob-pw')).status).toBe(303);
      const bobPage = await bob.go('/ui/repo?name=team/app');
      expect(bobPage.text).not.toContain('Delete tag');
      const refused = await bob.go('/ui/delete', { form: { name: 'team/app', reference: 'v1', csrf: csrfOf(bobPage) } });
      expect(refused.status).toBe(403);
      expect((await pusher.req('/v2/team/app/manifests/v1', { method: 'HEAD' })).status).toBe(200);

      const alice = new Visitor(server.url);
      await alice.login('alice', 'alice-pw');
      const alicePage = await alice.go('/ui/repo?name=team/app');
      expect(alicePage.text).toContain('Delete tag');
      expect((await alice.go('/ui/')).text).toContain('secret/thing');
      // The policy changes under a live session: its next request has the new rights.
      server.writePolicy(policy('pull'));
      server.clock.advance(3_000);
      const after = await alice.go('/ui/delete', { form: { name: 'team/app', reference: 'v2', csrf: csrfOf(alicePage) } });
      expect(after.status).toBe(403);
      expect((await new RegistryClient(server.url, basicAuth('bob', 'bob-pw')).req('/v2/team/app/manifests/v2', { method: 'HEAD' })).status).toBe(200);

      // A new password ends the sessions of the old one (htpasswd is re-read every 2 s of the server's clock).
      expect((await bob.go('/ui/')).text).toContain('Logged in as');
      // Only bob's line changes (writing alice's anew would give her a new hash, and end her session too).
      writeHtpasswd(`${server.root}/bob-only`, { bob: 'bob-new-pw' });
      const aliceLine = readFileSync(server.htpasswdFile, 'utf8').split('\n').find((l) => l.startsWith('alice:'));
      writeFileSync(server.htpasswdFile, `${aliceLine}\n${readFileSync(`${server.root}/bob-only`, 'utf8')}`);
      const later = new Date(Date.now() + 60_000);
      utimesSync(server.htpasswdFile, later, later);
      server.clock.advance(3_000);
      expect((await bob.go('/ui/')).text).not.toContain('Logged in as');
      expect((await alice.go('/ui/')).text).toContain('Logged in as');
    } finally {
      await server.stop();
    }
  });
});

describe('web UI logins and the failed-login limit', () => {
  it('spends the same failed-login budget as the API: once it is gone, the address gets 429 on the UI and the API', async () => {
    const server = await startTestServer({ extra: { ratelimit: { failedlogins: { limit: 2, window: '1h' } } } });
    try {
      const v = new Visitor(server.url);
      expect((await v.login(TEST_USER, 'wrong-1')).status).toBe(401);
      expect((await v.login(TEST_USER, 'wrong-2')).status).toBe(401);
      // Locked out: the UI refuses the address altogether, as the API does (the login form included).
      const locked = await v.go('/ui/login');
      expect(locked.status).toBe(429);
      expect(locked.headers.get('retry-after')).toMatch(/^\d+$/);
      // The API's own limit: the same address is locked out there too.
      expect((await fetch(`${server.url}/v2/`, { headers: { authorization: basicAuth(TEST_USER, TEST_PASSWORD) } })).status).toBe(429);
    } finally {
      await server.stop();
    }
  });
});
