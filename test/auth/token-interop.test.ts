// Tokens of existing token servers, verified as distribution verifies them
// (auth.token.rootcertbundle): a certificate chain in the header (`x5c`, as
// Docker Hub's auth server signs) leading to a root of the bundle through an
// intermediate; a key in the header (`jwk`), trusted by its libtrust key ID or
// its own chain; and `kid` as libtrust's "ABCD:EFGH:…" key ID (cesanta/docker_auth,
// distribution's own token servers). Certificates are made here with openssl.
// Refused: a chain to another root, one missing its intermediate, one through a
// certificate that is not a CA, an expired signer, a signature by another key,
// malformed and overlong chains, and chains where no bundle is configured.
// Then the same tokens go to distribution 2.8.2 (Debian's docker-registry) with the
// same bundle, which must accept and refuse exactly the ones we do. Last, skopeo
// pushes and pulls through a registry behind a token server of the test's own
// that signs each way.
import { execFileSync } from 'node:child_process';
import { createPrivateKey, createPublicKey, type KeyObject, X509Certificate } from 'node:crypto';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';
import { exportJWK, type JWK, SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InvalidToken, libtrustKeyId, loadExternalKeys, TokenVerifier } from '../../server/src/auth/token-verifier.ts';
import { loadConfigObject } from '../../server/src/config/load.ts';
import { type RunningServer, startServer } from '../../server/src/http/server.ts';
import { silentLogger } from '../../server/src/log/logger.ts';
import { ContainersClients, verifyPull } from '../helpers/clients.ts';
import { type DistributionProcess, startDistribution } from '../helpers/distribution.ts';
import { buildImage, writeOciLayout } from '../helpers/oci.ts';
import { makeTempDir } from '../helpers/server.ts';
import { parseChallenge, TestClock } from './helpers.ts';

const DAY = 86_400_000;

interface Cert {
  key: KeyObject;
  pem: string;
  /** Standard base64 DER, as x5c holds it. */
  der: string;
}

let dir: string;
const openssl = (args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });

/** A certificate for `name`: self-signed, or issued by `issuer`; a CA or not. */
function makeCert(name: string, options: { issuer?: string; ca?: boolean; days?: number; rsa?: boolean } = {}): Cert {
  const keyArgs = options.rsa ? ['-newkey', 'rsa:2048'] : ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256'];
  const ext = path.join(dir, `${name}.ext`);
  writeFileSync(ext, options.ca ? 'basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n' : 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n');
  const days = String(options.days ?? 30);
  if (options.issuer) {
    openssl(['req', ...keyArgs, '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}`]);
    openssl(['x509', '-req', '-in', `${name}.csr`, '-CA', `${options.issuer}.crt`, '-CAkey', `${options.issuer}.key`, '-CAcreateserial', '-out', `${name}.crt`, '-days', days, '-extfile', ext]);
  } else {
    openssl(['req', '-x509', ...keyArgs, '-nodes', '-keyout', `${name}.key`, '-out', `${name}.crt`, '-days', days, '-subj', `/CN=${name}`, '-extensions', 'v3', '-config', writeReqConfig(name, ext)]);
  }
  const pem = readFileSync(path.join(dir, `${name}.crt`), 'utf8');
  return { key: createPrivateKey(readFileSync(path.join(dir, `${name}.key`))), pem, der: new X509Certificate(pem).raw.toString('base64') };
}

function writeReqConfig(name: string, ext: string): string {
  const file = path.join(dir, `${name}.cnf`);
  writeFileSync(file, `[req]\ndistinguished_name = dn\n[dn]\n[v3]\n${readFileSync(ext, 'utf8')}`);
  return file;
}

let root: Cert;
let intermediate: Cert;
let leaf: Cert;
let rsaLeaf: Cert;
let otherRoot: Cert;
let otherLeaf: Cert;
let notCa: Cert;
let underNotCa: Cert;
let shortLived: Cert;
/** A self-signed certificate in the bundle, as cesanta/docker_auth and distribution's examples use one. */
let selfSigned: Cert;
let bundle: string;

beforeAll(() => {
  dir = makeTempDir('rs-token-interop-');
  root = makeCert('root', { ca: true });
  intermediate = makeCert('intermediate', { issuer: 'root', ca: true });
  leaf = makeCert('leaf', { issuer: 'intermediate' });
  rsaLeaf = makeCert('rsa-leaf', { issuer: 'root', rsa: true });
  otherRoot = makeCert('other-root', { ca: true });
  otherLeaf = makeCert('other-leaf', { issuer: 'other-root' });
  notCa = makeCert('not-ca', { issuer: 'root' });
  underNotCa = makeCert('under-not-ca', { issuer: 'not-ca' });
  shortLived = makeCert('short', { issuer: 'intermediate', days: 1 });
  selfSigned = makeCert('docker-auth');
  bundle = path.join(dir, 'bundle.pem');
  writeFileSync(bundle, root.pem + selfSigned.pem);
});
afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

type Header = { alg: string; kid?: string; x5c?: string[]; jwk?: JWK };

function mint(header: Header, key: KeyObject, claims: { sub?: string; nowMs?: number; access?: unknown[] } = {}): Promise<string> {
  const nowS = Math.floor((claims.nowMs ?? Date.now()) / 1000);
  return new SignJWT({ access: claims.access ?? [{ type: 'repository', name: 'team/app', actions: ['pull', 'push'] }] })
    .setProtectedHeader({ typ: 'JWT', ...header })
    .setIssuer('auth.example.com')
    .setAudience('registry.example.com')
    .setSubject(claims.sub ?? 'alice')
    .setIssuedAt(nowS)
    .setNotBefore(nowS)
    .setExpirationTime(nowS + 300)
    .sign(key);
}

async function verifier(files: { rootcertbundle?: string; jwks?: string }, clock = new TestClock()): Promise<TokenVerifier> {
  const { keys, roots } = await loadExternalKeys(files);
  return new TokenVerifier({ issuer: 'auth.example.com', service: 'registry.example.com', keys: async (kid) => keys.get(kid), roots, now: clock.now, clockToleranceS: 60 });
}

async function refusal(v: TokenVerifier, token: string): Promise<string> {
  try {
    await v.verify(token);
  } catch (err) {
    if (err instanceof InvalidToken) return err.message;
    throw err;
  }
  throw new Error('the token was accepted');
}

describe('x5c: a certificate chain in the token header', () => {
  it('is trusted when it leads to a root of the bundle (through an intermediate, EC and RSA signers)', async () => {
    const v = await verifier({ rootcertbundle: bundle });
    const ok = await v.verify(await mint({ alg: 'ES256', x5c: [leaf.der, intermediate.der] }, leaf.key));
    expect(ok.user).toBe('alice');
    expect([...ok.repositories.get('team/app')!].sort()).toEqual(['pull', 'push']);
    expect((await v.verify(await mint({ alg: 'RS256', x5c: [rsaLeaf.der] }, rsaLeaf.key, { sub: 'bob' }))).user).toBe('bob');
    // The chain decides, not a kid beside it (distribution's order: x5c first).
    expect((await v.verify(await mint({ alg: 'ES256', kid: 'AAAA:BBBB', x5c: [leaf.der, intermediate.der, root.der] }, leaf.key))).user).toBe('alice');
    // A certificate of the bundle itself, sent as its own chain.
    expect((await v.verify(await mint({ alg: 'ES256', x5c: [selfSigned.der] }, selfSigned.key))).user).toBe('alice');
  });

  it('is refused when it does not lead to the bundle, passes through a non-CA, has expired, or another key signed', async () => {
    const clock = new TestClock();
    const v = await verifier({ rootcertbundle: bundle }, clock);
    const cases: Array<[string, Header, KeyObject, RegExp]> = [
      ['another root', { alg: 'ES256', x5c: [otherLeaf.der, otherRoot.der] }, otherLeaf.key, /certificate chain is not trusted: the certificate "CN=other-root" is not issued by/],
      ['no intermediate', { alg: 'ES256', x5c: [leaf.der] }, leaf.key, /"CN=leaf" is not issued by/],
      ['a root that is not in the bundle, sent along', { alg: 'ES256', x5c: [otherLeaf.der, otherRoot.der, root.der] }, otherLeaf.key, /"CN=other-root" is not issued by/],
      ['issued by a non-CA', { alg: 'ES256', x5c: [underNotCa.der, notCa.der] }, underNotCa.key, /"CN=under-not-ca" is not issued by/],
      ['signed by another key', { alg: 'ES256', x5c: [leaf.der, intermediate.der] }, otherLeaf.key, /signature does not verify/],
      ['not base64', { alg: 'ES256', x5c: ['not base64!'] }, leaf.key, /x5c\[0\] is not base64 DER/],
      ['not a certificate', { alg: 'ES256', x5c: [Buffer.from('junk').toString('base64')] }, leaf.key, /x5c\[0\] is not a certificate/],
      ['too long', { alg: 'ES256', x5c: Array(6).fill(leaf.der) }, leaf.key, /more than 5 certificates/],
    ];
    for (const [what, header, key, message] of cases) expect(await refusal(v, await mint(header, key)), what).toMatch(message);

    // A day and a half later: the one-day signer has expired (its token is fresh).
    clock.advance(1.5 * DAY);
    const late = await mint({ alg: 'ES256', x5c: [shortLived.der, intermediate.der] }, shortLived.key, { nowMs: clock.ms });
    expect(await refusal(v, late)).toMatch(/"CN=short" is not valid at this time/);
    expect((await v.verify(await mint({ alg: 'ES256', x5c: [leaf.der, intermediate.der] }, leaf.key, { nowMs: clock.ms }))).user).toBe('alice');
  });

  it('is refused where only a JWK set is trusted (no rootcertbundle)', async () => {
    const jwks = path.join(dir, 'only.jwks.json');
    writeFileSync(jwks, JSON.stringify({ keys: [{ ...(await exportJWK(createPublicKey(leaf.key))), kid: 'k1' }] }));
    const v = await verifier({ jwks });
    expect(await refusal(v, await mint({ alg: 'ES256', x5c: [leaf.der, intermediate.der] }, leaf.key))).toMatch(/no auth\.token\.rootcertbundle/);
    expect((await v.verify(await mint({ alg: 'ES256', kid: 'k1' }, leaf.key))).user).toBe('alice');
  });
});

describe('jwk and kid: a key named or carried in the header', () => {
  it('kid is the libtrust key ID of a bundle certificate ("ABCD:EFGH:…", 12 groups of 4)', async () => {
    const v = await verifier({ rootcertbundle: bundle });
    const kid = libtrustKeyId(createPublicKey(selfSigned.key));
    expect(kid).toMatch(/^([A-Z2-7]{4}:){11}[A-Z2-7]{4}$/);
    expect((await v.verify(await mint({ alg: 'ES256', kid }, selfSigned.key))).user).toBe('alice');
    // A leaf the root issued is trusted through a chain only, not by naming it.
    expect(await refusal(v, await mint({ alg: 'ES256', kid: libtrustKeyId(createPublicKey(leaf.key)) }, leaf.key))).toMatch(/unknown key/);
    expect(await refusal(v, await mint({ alg: 'ES256', kid: 'ABCD:EFGH:IJKL:MNOP:QRST:UVWX:YZ23:4567:ABCD:EFGH:IJKL:MNOP' }, selfSigned.key))).toMatch(/unknown key/);
  });

  it('jwk: trusted when it is a bundle key or carries a chain to the bundle, and only for its own key', async () => {
    const v = await verifier({ rootcertbundle: bundle });
    const jwkOf = async (c: Cert) => exportJWK(createPublicKey(c.key));
    expect((await v.verify(await mint({ alg: 'ES256', jwk: await jwkOf(selfSigned) }, selfSigned.key))).user).toBe('alice');
    expect((await v.verify(await mint({ alg: 'ES256', jwk: { ...(await jwkOf(leaf)), x5c: [leaf.der, intermediate.der] } }, leaf.key))).user).toBe('alice');
    expect(await refusal(v, await mint({ alg: 'ES256', jwk: await jwkOf(otherLeaf) }, otherLeaf.key))).toMatch(/unknown key/);
    expect(await refusal(v, await mint({ alg: 'ES256', jwk: { ...(await jwkOf(otherLeaf)), x5c: [leaf.der, intermediate.der] } }, otherLeaf.key))).toMatch(/not the key of its certificate/);
    const privateJwk = await exportJWK(selfSigned.key);
    expect(await refusal(v, await mint({ alg: 'ES256', jwk: privateJwk }, selfSigned.key))).toMatch(/not a public key/);
  });
});

describe('the same tokens at distribution 2.8.2 (its rootcertbundle verifier) and here', () => {
  let distribution: DistributionProcess;
  let ours: RunningServer;
  let work: string;

  beforeAll(async () => {
    work = makeTempDir('rs-token-interop-diff-');
    const auth = { token: { realm: 'http://127.0.0.1:9/token', service: 'registry.example.com', issuer: 'auth.example.com', rootcertbundle: bundle } };
    distribution = await startDistribution({ dataDir: path.join(work, 'dist'), workDir: path.join(work, 'dist-work'), extra: { auth } });
    const { config } = loadConfigObject(
      { version: '0.1', log: { level: 'error', accesslog: { disabled: true } }, storage: { filesystem: { rootdirectory: path.join(work, 'ours') } }, http: { addr: '127.0.0.1:0' }, auth },
      {},
    );
    ours = await startServer(config, { logger: silentLogger });
  });
  afterAll(async () => {
    await distribution?.stop();
    await ours?.close();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('accepts and refuses the same ones', async () => {
    const pub = (c: Cert) => createPublicKey(c.key);
    const cases: Array<[string, () => Promise<string>, 200 | 401]> = [
      ['x5c through an intermediate', () => mint({ alg: 'ES256', x5c: [leaf.der, intermediate.der] }, leaf.key), 200],
      ['x5c, RSA signer issued by the root', () => mint({ alg: 'RS256', x5c: [rsaLeaf.der] }, rsaLeaf.key), 200],
      ['x5c without its intermediate', () => mint({ alg: 'ES256', x5c: [leaf.der] }, leaf.key), 401],
      ['x5c to another root', () => mint({ alg: 'ES256', x5c: [otherLeaf.der, otherRoot.der] }, otherLeaf.key), 401],
      ['x5c through a non-CA', () => mint({ alg: 'ES256', x5c: [underNotCa.der, notCa.der] }, underNotCa.key), 401],
      ['x5c, signed by another key', () => mint({ alg: 'ES256', x5c: [leaf.der, intermediate.der] }, otherLeaf.key), 401],
      ['libtrust kid of a bundle certificate', () => mint({ alg: 'ES256', kid: libtrustKeyId(pub(selfSigned)) }, selfSigned.key), 200],
      ['libtrust kid of the root CA', () => mint({ alg: 'ES256', kid: libtrustKeyId(pub(root)) }, root.key), 200],
      ['libtrust kid of a leaf not in the bundle', () => mint({ alg: 'ES256', kid: libtrustKeyId(pub(leaf)) }, leaf.key), 401],
      ['libtrust kid, signed by another key', () => mint({ alg: 'ES256', kid: libtrustKeyId(pub(selfSigned)) }, otherLeaf.key), 401],
      ['jwk of a bundle certificate', async () => mint({ alg: 'ES256', jwk: await exportJWK(pub(selfSigned)) }, selfSigned.key), 200],
      ['jwk of an unknown key', async () => mint({ alg: 'ES256', jwk: await exportJWK(pub(otherLeaf)) }, otherLeaf.key), 401],
      ['jwk with its chain', async () => mint({ alg: 'ES256', jwk: { ...(await exportJWK(pub(leaf))), x5c: [leaf.der, intermediate.der] } }, leaf.key), 200],
      ['jwk with a chain of another key', async () => mint({ alg: 'ES256', jwk: { ...(await exportJWK(pub(otherLeaf))), x5c: [leaf.der, intermediate.der] } }, otherLeaf.key), 401],
    ];
    const answers: string[] = [];
    const expected: string[] = [];
    for (const [what, make, status] of cases) {
      const token = await make();
      const ask = async (url: string) => (await fetch(`${url}/v2/`, { headers: { authorization: `Bearer ${token}` } })).status;
      answers.push(`${what}: distribution ${await ask(distribution.url)}, ours ${await ask(ours.url)}`);
      expected.push(`${what}: distribution ${status}, ours ${status}`);
    }
    expect(answers).toEqual(expected);
  });
});

/**
 * A token server like Docker Hub's (x5c chain) or cesanta/docker_auth (libtrust kid):
 * GET /token with Basic alice:alice-pw grants what is asked on team/**, nothing elsewhere.
 */
async function startTokenServer(sign: (access: unknown[], sub: string) => Promise<string>): Promise<{ url: string; close: () => Promise<void> }> {
  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    const basic = req.headers.authorization?.startsWith('Basic ') ? Buffer.from(req.headers.authorization.slice(6), 'base64').toString() : undefined;
    if (basic !== undefined && basic !== 'alice:alice-pw') {
      res.writeHead(401).end();
      return;
    }
    const access = basic
      ? url.searchParams.getAll('scope').flatMap((s) => {
          const [type, name, actions] = s.split(':');
          return type === 'repository' && name.startsWith('team/') ? [{ type, name, actions: actions.split(',') }] : [];
        })
      : [];
    void sign(access, basic ? 'alice' : '').then((token) => {
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ token, access_token: token, expires_in: 300, issued_at: new Date().toISOString() }));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/token`,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

describe('a registry behind an existing token server (auth.token with rootcertbundle)', () => {
  for (const [style, header, key] of [
    ['x5c chain (Docker Hub style)', () => ({ alg: 'ES256', x5c: [leaf.der, intermediate.der] }), () => leaf.key],
    ['libtrust kid (docker_auth style)', () => ({ alg: 'ES256', kid: libtrustKeyId(createPublicKey(selfSigned.key)) }), () => selfSigned.key],
  ] as const) {
    it(`skopeo pushes and pulls with tokens signed by ${style}; refused where the token grants nothing`, async () => {
      const work = makeTempDir('rs-token-interop-srv-');
      const tokens = await startTokenServer(async (access, sub) => mint(header(), key(), { access, sub }));
      let registry: RunningServer | undefined;
      try {
        const { config } = loadConfigObject(
          {
            version: '0.1',
            log: { level: 'error', accesslog: { disabled: true } },
            storage: { filesystem: { rootdirectory: path.join(work, 'data') } },
            http: { addr: '127.0.0.1:0' },
            auth: { token: { realm: tokens.url, service: 'registry.example.com', issuer: 'auth.example.com', rootcertbundle: bundle } },
          },
          {},
        );
        registry = await startServer(config, { logger: silentLogger });
        const host = new URL(registry.url).host;
        const challenge = parseChallenge((await fetch(`${registry.url}/v2/`)).headers.get('www-authenticate') ?? undefined);
        expect(challenge?.params).toMatchObject({ realm: tokens.url, service: 'registry.example.com' });

        const cli = new ContainersClients([host], path.join(work, 'cli'));
        const image = buildImage({ files: [{ 'interop.txt': `${style}\n` }] });
        writeOciLayout(path.join(work, 'layout'), 'v1', image);
        await cli.skopeo(['copy', '--dest-tls-verify=false', '--dest-creds', 'alice:alice-pw', `oci:${path.join(work, 'layout')}:v1`, `docker://${host}/team/app:v1`]);
        const inspected = JSON.parse((await cli.skopeo(['inspect', '--tls-verify=false', '--creds', 'alice:alice-pw', `docker://${host}/team/app:v1`])).stdout);
        expect(inspected.Digest).toBe(image.manifest.digest);
        const token = await mint(header(), key(), { access: [{ type: 'repository', name: 'team/app', actions: ['pull'] }] });
        expect((await verifyPull(registry.url, `Bearer ${token}`, 'team/app', 'v1')).digest).toBe(image.manifest.digest);

        const elsewhere = await cli.skopeo(['copy', '--dest-tls-verify=false', '--dest-creds', 'alice:alice-pw', `oci:${path.join(work, 'layout')}:v1`, `docker://${host}/other/app:v1`], { allowFailure: true });
        expect(elsewhere.code).not.toBe(0);
        expect(elsewhere.stderr).toMatch(/denied|unauthorized|authentication required|insufficient_scope/i);
        const anonymous = await cli.skopeo(['inspect', '--tls-verify=false', `docker://${host}/team/app:v1`], { allowFailure: true });
        expect(anonymous.code).not.toBe(0);
        expect(anonymous.stderr).toMatch(/unauthorized|authentication required|insufficient_scope/i);
      } finally {
        await registry?.close();
        await tokens.close();
        rmSync(work, { recursive: true, force: true });
      }
    });
  }
});
