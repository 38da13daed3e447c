// Signing keys, issued tokens and their verification, on a clock the test
// moves: key files (mode 0600), rotation without logging anyone out, keys put
// in by hand, refusal of tampered, expired, unsigned (alg none), HMAC,
// wrong-audience, wrong-issuer, unknown-kid and refresh tokens; grants as the
// intersection of the scope and the policy; an external issuer's keys from a
// certificate bundle (libtrust kid) or a JWK set.
import { execFileSync } from 'node:child_process';
import { createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { base64url, decodeJwt, exportJWK, SignJWT, UnsecuredJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseAccessPolicy } from '../../server/src/auth/access-policy.ts';
import { KeyStore } from '../../server/src/auth/keys.ts';
import { parseScopes } from '../../server/src/auth/scope.ts';
import { TokenIssuer } from '../../server/src/auth/token-issuer.ts';
import { InvalidToken, libtrustKeyId, loadExternalKeys, TokenVerifier } from '../../server/src/auth/token-verifier.ts';
import { makeTempDir } from '../helpers/server.ts';
import { TestClock } from './helpers.ts';

const HOUR = 3_600_000;
const DAY = 24 * HOUR;

const POLICY = parseAccessPolicy(`
repositories:
  "team/**": { users: { alice: [pull, push] } }
  "public/**": { anonymous: [pull] }
`);

let dir: string;
beforeAll(() => {
  dir = makeTempDir('rs-tokens-');
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

interface Rig {
  clock: TestClock;
  keys: KeyStore;
  issuer: TokenIssuer;
  verifier: TokenVerifier;
  stamps: Map<string, string>;
}

async function rig(name: string, options: { rotationMs?: number; overlapMs?: number } = {}): Promise<Rig> {
  const clock = new TestClock();
  const keys = await KeyStore.open({
    dir: path.join(dir, name),
    rotationMs: options.rotationMs ?? 30 * DAY,
    overlapMs: options.overlapMs ?? 30 * DAY,
    now: clock.now,
  });
  const stamps = new Map([['alice', 'stamp-1']]);
  const issuer = new TokenIssuer({
    issuer: 'test-issuer',
    service: 'test-service',
    keys,
    rights: async (subject) => (name) => POLICY.actions(subject, name),
    expiresInS: 300,
    refreshExpiresInS: 30 * 24 * 3600,
    now: clock.now,
    credentialStamp: (user) => stamps.get(user),
  });
  const verifier = new TokenVerifier({
    issuer: 'test-issuer',
    service: 'test-service',
    now: clock.now,
    keys: async (kid) => (await keys.verificationKey(kid))?.publicKey,
  });
  return { clock, keys, issuer, verifier, stamps };
}

const scope = (...s: string[]) => parseScopes(s);

async function refusal(verifier: TokenVerifier, token: string): Promise<string> {
  try {
    await verifier.verify(token);
  } catch (err) {
    if (err instanceof InvalidToken) return err.message;
    throw err;
  }
  throw new Error('the token was accepted');
}

describe('signing keys', () => {
  it('are made on first start with mode 0600 in a 0700 directory, and found again on the next', async () => {
    const { keys } = await rig('first');
    const files = readdirSync(path.join(dir, 'first'));
    expect(files).toHaveLength(1);
    expect(files[0]).toMatch(/^token-\d+-[0-9a-f]+\.pem$/);
    expect(statSync(path.join(dir, 'first', files[0])).mode & 0o777).toBe(0o600);
    expect(statSync(path.join(dir, 'first')).mode & 0o777).toBe(0o700);
    const again = await KeyStore.open({ dir: path.join(dir, 'first'), rotationMs: 0, overlapMs: 0 });
    expect((await again.signingKey()).kid).toBe((await keys.signingKey()).kid);
    expect(readdirSync(path.join(dir, 'first'))).toHaveLength(1);
  });

  it('rotate without logging anyone out, and retire the old key after the overlap', async () => {
    const r = await rig('rotate', { rotationMs: 10 * DAY, overlapMs: 2 * DAY });
    const before = await r.issuer.issue({ user: 'alice' }, scope('repository:team/app:pull'), { clientId: 'docker' });
    const oldKid = (await r.keys.signingKey()).kid;

    r.clock.advance(10 * DAY);
    const after = await r.issuer.issue({ user: 'alice' }, scope('repository:team/app:pull'));
    const newKid = (await r.keys.signingKey()).kid;
    expect(newKid).not.toBe(oldKid);
    expect(readdirSync(path.join(dir, 'rotate'))).toHaveLength(2);
    // An access token of the old key (the test's clock keeps it unexpired by moving back).
    r.clock.advance(-10 * DAY);
    expect((await r.verifier.verify(before.token)).user).toBe('alice');
    r.clock.advance(10 * DAY);
    expect(decodeJwtHeaderKid(after.token)).toBe(newKid);
    expect((await r.verifier.verify(after.token)).user).toBe('alice');
    // The refresh token of the old key still logs in during the overlap.
    expect(await r.issuer.redeem(before.refreshToken!)).toEqual({ user: 'alice' });

    r.clock.advance(2 * DAY);
    await r.keys.signingKey();
    expect((await r.keys.verificationKey(oldKid))).toBeUndefined();
    expect(readdirSync(path.join(dir, 'rotate'))).toHaveLength(1);
    await expect(r.issuer.redeem(before.refreshToken!)).rejects.toThrow(/unknown key/);
  });

  it('takes keys put in by hand (EC P-256 → ES256, RSA → RS256) and refuses unusable ones at start', async () => {
    const handDir = path.join(dir, 'hand');
    execFileSync('mkdir', ['-p', handDir]);
    execFileSync('openssl', ['genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048', '-out', path.join(handDir, 'rsa.pem')], { stdio: 'pipe' });
    const keys = await KeyStore.open({ dir: handDir, rotationMs: 0, overlapMs: HOUR });
    expect(readdirSync(handDir)).toEqual(['rsa.pem']);
    expect((await keys.signingKey()).alg).toBe('RS256');

    const p384 = generateKeyPairSync('ec', { namedCurve: 'P-384' }).privateKey.export({ type: 'pkcs8', format: 'pem' });
    writeFileSync(path.join(handDir, 'p384.pem'), p384);
    await expect(KeyStore.open({ dir: handDir, rotationMs: 0, overlapMs: HOUR })).rejects.toThrow(/p384\.pem: not an EC P-256 or RSA/);
    writeFileSync(path.join(handDir, 'p384.pem'), 'not a key\n');
    await expect(KeyStore.open({ dir: handDir, rotationMs: 0, overlapMs: HOUR })).rejects.toThrow(/p384\.pem/);
  });

  it('a replica sharing the directory finds a key it has not seen yet (unknown kid → the directory is read again)', async () => {
    const a = await rig('shared');
    const b = await KeyStore.open({ dir: path.join(dir, 'shared'), rotationMs: 30 * DAY, overlapMs: 30 * DAY, now: a.clock.now });
    a.clock.advance(31 * DAY);
    const fresh = await a.keys.signingKey();
    a.clock.advance(2_000);
    expect((await b.verificationKey(fresh.kid))?.kid).toBe(fresh.kid);
  });
});

function decodeJwtHeaderKid(token: string): string {
  return JSON.parse(Buffer.from(token.split('.')[0], 'base64url').toString()).kid;
}

describe('access tokens', () => {
  let r: Rig;
  let signing: { kid: string; privateKey: KeyObject };
  beforeAll(async () => {
    r = await rig('verify');
    signing = await r.keys.signingKey();
  });

  const sign = (claims: Record<string, unknown>, options: { kid?: string | null; iss?: string; aud?: string; expS?: number; key?: KeyObject; alg?: string } = {}) => {
    const nowS = Math.floor(r.clock.ms / 1000);
    const header: Record<string, unknown> = { alg: options.alg ?? 'ES256' };
    if (options.kid !== null) header.kid = options.kid ?? signing.kid;
    return new SignJWT({ access: [{ type: 'repository', name: 'team/app', actions: ['pull'] }], ...claims })
      .setProtectedHeader(header as never)
      .setIssuer(options.iss ?? 'test-issuer')
      .setAudience(options.aud ?? 'test-service')
      .setSubject('alice')
      .setIssuedAt(nowS)
      .setExpirationTime(nowS + (options.expS ?? 300))
      .sign(options.key ?? signing.privateKey);
  };

  it('grant what was asked and the policy allows, nothing more', async () => {
    const issued = await r.issuer.issue(
      { user: 'alice' },
      scope('repository:team/app:pull,push,delete repository:other/app:pull', 'repository:public/x:pull', 'registry:catalog:*', 'repository:BAD:pull'),
    );
    expect(issued.access).toEqual([
      { type: 'repository', name: 'team/app', actions: ['pull', 'push'] },
      { type: 'repository', name: 'public/x', actions: ['pull'] },
      { type: 'registry', name: 'catalog', actions: ['*'] },
    ]);
    const claims = decodeJwt(issued.token);
    expect(claims).toMatchObject({ iss: 'test-issuer', aud: 'test-service', sub: 'alice' });
    expect(claims.exp! - claims.iat!).toBe(300);
    const v = await r.verifier.verify(issued.token);
    expect([...v.repositories.get('team/app')!]).toEqual(['pull', 'push']);
    expect(v.catalog).toBe(true);
    const anon = await r.issuer.issue({}, scope('repository:team/app:pull', 'repository:public/x:*'));
    expect(anon.access).toEqual([{ type: 'repository', name: 'public/x', actions: ['pull'] }]);
    expect(anon.refreshToken).toBeUndefined();
    expect((await r.verifier.verify(anon.token)).user).toBeUndefined();
  });

  it('refuse a tampered payload or signature', async () => {
    const good = await sign({});
    const [h, p, s] = good.split('.');
    const claims = JSON.parse(Buffer.from(p, 'base64url').toString());
    claims.access[0].actions = ['pull', 'push'];
    const forged = `${h}.${base64url.encode(JSON.stringify(claims))}.${s}`;
    expect(await refusal(r.verifier, forged)).toMatch(/signature/);
    const sig = Buffer.from(s, 'base64url');
    sig[5] ^= 1;
    expect(await refusal(r.verifier, `${h}.${p}.${sig.toString('base64url')}`)).toMatch(/signature/);
    expect((await r.verifier.verify(good)).user).toBe('alice');
  });

  it('refuse an expired token, also once it was accepted (cached) before', async () => {
    const token = await sign({}, { expS: 60 });
    expect((await r.verifier.verify(token)).user).toBe('alice');
    r.clock.advance(61_000);
    expect(await refusal(r.verifier, token)).toMatch(/expired/);
    expect(await refusal(r.verifier, await sign({}, { expS: -1 }))).toMatch(/expired/);
  });

  it('refuse alg none, and HMAC signed with the public key as secret', async () => {
    const nowS = Math.floor(r.clock.ms / 1000);
    const unsigned = new UnsecuredJWT({ access: [{ type: 'repository', name: 'team/app', actions: ['push'] }] })
      .setIssuer('test-issuer')
      .setAudience('test-service')
      .setExpirationTime(nowS + 300)
      .encode();
    const [, payload] = unsigned.split('.');
    const withKid = `${base64url.encode(JSON.stringify({ alg: 'none', kid: signing.kid }))}.${payload}.`;
    expect(await refusal(r.verifier, withKid)).toMatch(/algorithm|not valid/);
    const pub = createPublicKey(signing.privateKey).export({ type: 'spki', format: 'pem' });
    const hmac = await new SignJWT({})
      .setProtectedHeader({ alg: 'HS256', kid: signing.kid })
      .setIssuer('test-issuer')
      .setAudience('test-service')
      .setExpirationTime(nowS + 300)
      .sign(Buffer.from(pub));
    expect(await refusal(r.verifier, hmac)).toMatch(/algorithm/);
  });

  it('refuse a wrong audience, a wrong issuer, an unknown or missing kid, and garbage', async () => {
    expect(await refusal(r.verifier, await sign({}, { aud: 'other-service' }))).toMatch(/aud/);
    expect(await refusal(r.verifier, await sign({}, { iss: 'someone-else' }))).toMatch(/iss/);
    expect(await refusal(r.verifier, await sign({}, { kid: 'no-such-key' }))).toMatch(/unknown key/);
    expect(await refusal(r.verifier, await sign({}, { kid: null }))).toMatch(/names no key/);
    const stranger = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
    expect(await refusal(r.verifier, await sign({}, { key: stranger }))).toMatch(/signature/);
    expect(await refusal(r.verifier, 'not.a.jwt')).toMatch(/JWT/);
  });

  it('refuse a refresh token used as an access token', async () => {
    const issued = await r.issuer.issue({ user: 'alice' }, scope('repository:team/app:pull'), {});
    expect(issued.refreshToken).toBeDefined();
    expect(await refusal(r.verifier, issued.refreshToken!)).toMatch(/aud/);
    expect(await refusal(r.verifier, await sign({ token_use: 'refresh' }))).toMatch(/refresh/);
  });
});

describe('refresh tokens', () => {
  it('log in again until they expire, or the password changes, or the user is removed', async () => {
    const r = await rig('refresh');
    const { refreshToken } = await r.issuer.issue({ user: 'alice' }, [], { clientId: 'docker' });
    expect(decodeJwt(refreshToken!)).toMatchObject({ client_id: 'docker', token_use: 'refresh', sub: 'alice' });
    r.clock.advance(29 * DAY);
    expect(await r.issuer.redeem(refreshToken!)).toEqual({ user: 'alice' });
    r.stamps.set('alice', 'stamp-2');
    await expect(r.issuer.redeem(refreshToken!)).rejects.toThrow(/log in again/);
    const second = (await r.issuer.issue({ user: 'alice' }, [], {})).refreshToken!;
    r.stamps.delete('alice');
    await expect(r.issuer.redeem(second)).rejects.toThrow(/log in again/);
    r.stamps.set('alice', 'stamp-2');
    r.clock.advance(31 * DAY);
    await expect(r.issuer.redeem(second)).rejects.toThrow(/expired/);
    const access = (await r.issuer.issue({ user: 'alice' }, [])).token;
    await expect(r.issuer.redeem(access)).rejects.toThrow(/not valid/);
  });
});

describe('an external token server', () => {
  it('is trusted by certificate (kid = libtrust key ID or JWK thumbprint) and by JWK set', async () => {
    const certKey = path.join(dir, 'ext.key');
    const certFile = path.join(dir, 'ext.crt');
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', certKey, '-out', certFile, '-days', '2', '-subj', '/CN=token-server'], { stdio: 'pipe' });
    const privateKey = createPrivateKey(readFileSync(certKey));
    const publicKey = createPublicKey(privateKey);
    const kid = libtrustKeyId(publicKey);
    expect(kid).toMatch(/^([A-Z2-7]{4}:){11}[A-Z2-7]{4}$/);

    const jwksKey = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const jwksFile = path.join(dir, 'ext.jwks.json');
    writeFileSync(jwksFile, JSON.stringify({ keys: [{ ...(await exportJWK(jwksKey.publicKey)), kid: 'rsa-1' }] }));

    const { keys } = await loadExternalKeys({ rootcertbundle: certFile, jwks: jwksFile });
    const verifier = new TokenVerifier({ issuer: 'ext', service: 'reg', keys: async (k) => keys.get(k) });
    const nowS = Math.floor(Date.now() / 1000);
    const token = (alg: string, k: string, key: KeyObject) =>
      new SignJWT({ access: [{ type: 'repository', name: 'a/b', actions: ['pull', '*'] }] })
        .setProtectedHeader({ alg, kid: k })
        .setIssuer('ext')
        .setAudience('reg')
        .setSubject('bob')
        .setExpirationTime(nowS + 60)
        .sign(key);
    const v = await verifier.verify(await token('ES256', kid, privateKey));
    expect([...v.repositories.get('a/b')!].sort()).toEqual(['delete', 'pull', 'push']);
    expect((await verifier.verify(await token('RS256', 'rsa-1', jwksKey.privateKey))).user).toBe('bob');

    writeFileSync(jwksFile, JSON.stringify({ keys: [{ ...(await exportJWK(jwksKey.privateKey)), kid: 'rsa-1' }] }));
    await expect(loadExternalKeys({ jwks: jwksFile })).rejects.toThrow(/private key/);
    writeFileSync(certFile, 'no certificate here\n');
    await expect(loadExternalKeys({ rootcertbundle: certFile })).rejects.toThrow(/no PEM certificate/);
    expect(existsSync(certKey)).toBe(true);
  });
});
