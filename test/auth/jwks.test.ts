// The built-in token server's public keys at /auth/jwks.json, and a second
// registry that trusts its tokens with auth.token.jwks set to that URL: the
// set holds the keys that verify tokens (public halves only), a client
// logging in at the first registry pushes to and pulls from the second (the
// Basic-free TokenClient and skopeo), a rotated key is fetched when a token
// names it, tokens with made-up kids do not make it fetch more than once per
// interval, and an unreachable URL stops the start naming the key.
import { rmSync } from 'node:fs';
import * as path from 'node:path';
import { decodeProtectedHeader } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfigObject } from '../../server/src/config/load.ts';
import { type RunningServer, startServer } from '../../server/src/http/server.ts';
import { silentLogger } from '../../server/src/log/logger.ts';
import { RegistryClient } from '../helpers/client.ts';
import { ContainersClients } from '../helpers/clients.ts';
import { buildImage, writeOciLayout } from '../helpers/oci.ts';
import { makeTempDir } from '../helpers/server.ts';
import { basicAuth, fetchToken, parseChallenge, startTokenServer, TestClock, TokenClient, type TokenTestServer } from './helpers.ts';

const USERS = { alice: 'alice-pw' };
const POLICY = `
repositories:
  "team/**": { users: { alice: [pull, push] } }
`;
const HOUR = 3_600_000;
const ALICE = basicAuth('alice', USERS.alice);

function verifierConfig(root: string, issuerUrl: string) {
  return loadConfigObject(
    {
      version: '0.1',
      log: { level: 'error', accesslog: { disabled: true } },
      storage: { filesystem: { rootdirectory: path.join(root, 'data') } },
      http: { addr: '127.0.0.1:0' },
      auth: { token: { realm: `${issuerUrl}/auth/token`, service: 'registry-stack', issuer: 'registry-stack', jwks: `${issuerUrl}/auth/jwks.json` } },
    },
    {},
  ).config;
}

/** GETs of /auth/jwks.json `server` answered. */
async function jwksFetches(server: RunningServer): Promise<number> {
  const { values } = await server.metrics!.requests.get();
  return values.filter((v) => v.labels.route === 'jwks' && v.labels.method === 'GET').reduce((n, v) => n + v.value, 0);
}

describe('/auth/jwks.json and a registry that verifies with it', () => {
  let work: string;
  let clock: TestClock;
  let issuer: TokenTestServer;
  let second: RunningServer;

  beforeAll(async () => {
    work = makeTempDir('rs-jwks-');
    clock = new TestClock();
    issuer = await startTokenServer({ policy: POLICY, users: USERS, clock, token: { keyrotation: '24h', expiration: '5m' } });
    second = await startServer(verifierConfig(path.join(work, 'second'), issuer.url), { logger: silentLogger, now: clock.now, metrics: true });
  });
  afterAll(async () => {
    await second?.close();
    await issuer?.stop();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('serves the keys that verify its tokens, public halves only; GET and HEAD alone', async () => {
    const res = await fetch(`${issuer.url}/auth/jwks.json`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('application/jwk-set+json');
    expect(res.headers.get('cache-control')).toBe('public, max-age=60');
    const set = (await res.json()) as { keys: Array<Record<string, unknown>> };
    expect(set.keys).toHaveLength(1);
    expect(set.keys[0]).toMatchObject({ kty: 'EC', crv: 'P-256', alg: 'ES256', use: 'sig' });
    for (const k of set.keys) for (const secret of ['d', 'p', 'q', 'dp', 'dq', 'qi']) expect(k).not.toHaveProperty(secret);
    const token = await fetchToken(`${issuer.url}/auth/token`, { service: 'registry-stack' });
    expect(decodeProtectedHeader(token.body.token).kid).toBe(set.keys[0].kid);
    expect((await fetch(`${issuer.url}/auth/jwks.json`, { method: 'HEAD' })).status).toBe(200);
    expect((await fetch(`${issuer.url}/auth/jwks.json`, { method: 'POST' })).status).toBe(405);
  });

  it('the second registry sends clients to the first for tokens and accepts them; refuses what they do not grant', async () => {
    const res = await new RegistryClient(second.url).req('/v2/team/app/tags/list');
    expect(res.status).toBe(401);
    expect(parseChallenge(res.header('www-authenticate'))?.params).toMatchObject({ realm: `${issuer.url}/auth/token`, service: 'registry-stack' });
    const alice = new TokenClient(second.url, ALICE);
    await alice.login('repository:team/app:pull,push');
    await alice.pushImage('team/app', 'v1', buildImage());
    expect((await alice.req('/v2/team/app/tags/list')).json().tags).toEqual(['v1']);
    const anonymous = await fetchToken(`${issuer.url}/auth/token`, { service: 'registry-stack', scope: ['repository:team/app:pull'] });
    expect((await new RegistryClient(second.url, `Bearer ${anonymous.body.token}`).req('/v2/team/app/tags/list')).status).toBe(401);
  });

  it('skopeo pushes to the second registry with a login at the first', async () => {
    const host = new URL(second.url).host;
    const cli = new ContainersClients([host, new URL(issuer.url).host], path.join(work, 'cli'));
    const image = buildImage({ files: [{ 'jwks.txt': 'verified with a fetched JWK set\n' }] });
    writeOciLayout(path.join(work, 'layout'), 'v1', image);
    await cli.skopeo(['copy', '--dest-tls-verify=false', '--dest-creds', `alice:${USERS.alice}`, `oci:${path.join(work, 'layout')}:v1`, `docker://${host}/team/skopeo:v1`]);
    const inspected = JSON.parse((await cli.skopeo(['inspect', '--tls-verify=false', '--creds', `alice:${USERS.alice}`, `docker://${host}/team/skopeo:v1`])).stdout);
    expect(inspected.Digest).toBe(image.manifest.digest);
  });

  it('a rotated key is fetched when a token names it; made-up kids fetch at most once per interval', async () => {
    const before = await fetchToken(`${issuer.url}/auth/token`, { service: 'registry-stack', scope: ['repository:team/app:pull'] }, ALICE);
    clock.advance(24 * HOUR);
    const after = await fetchToken(`${issuer.url}/auth/token`, { service: 'registry-stack', scope: ['repository:team/app:pull'] }, ALICE);
    expect(decodeProtectedHeader(after.body.token).kid).not.toBe(decodeProtectedHeader(before.body.token).kid);
    const fetched = await jwksFetches(issuer);
    expect((await new RegistryClient(second.url, `Bearer ${after.body.token}`).req('/v2/team/app/tags/list')).status).toBe(200);
    expect(await jwksFetches(issuer)).toBe(fetched + 1);

    const [header, payload, signature] = after.body.token.split('.');
    const forged = (kid: string) => `${Buffer.from(JSON.stringify({ ...JSON.parse(Buffer.from(header, 'base64url').toString()), kid })).toString('base64url')}.${payload}.${signature}`;
    for (const kid of ['made-up-1', 'made-up-2', 'made-up-3']) {
      expect((await new RegistryClient(second.url, `Bearer ${forged(kid)}`).req('/v2/team/app/tags/list')).status).toBe(401);
    }
    // Within the 10 s interval (the clock stands still): not one more fetch for all three.
    expect(await jwksFetches(issuer)).toBe(fetched + 1);
    clock.advance(10_000);
    expect((await new RegistryClient(second.url, `Bearer ${forged('made-up-4')}`).req('/v2/team/app/tags/list')).status).toBe(401);
    expect(await jwksFetches(issuer)).toBe(fetched + 2);
  });

  it('an unreachable JWK set URL stops the start, naming auth.token.jwks', async () => {
    await expect(startServer(verifierConfig(path.join(work, 'third'), 'http://127.0.0.1:9'), { logger: silentLogger })).rejects.toThrow(
      /^auth\.token\.jwks: cannot fetch the JWK set: /,
    );
  });
});
