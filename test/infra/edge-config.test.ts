// The edge of the stack, each finding checked against the real thing where
// there is one: mir's Origin CA certificate (resources, Caddy serving it, the
// renew-cert job's handling of it), the origin header kept out of every Caddy
// log (a running Caddy), failed-login limiting (the server's own limiter),
// tag manifests kept out of Cloudflare's cache, upstream keep-alive below the
// server's, the SDK's types on rule parameters (the TypeScript compiler), the
// pinned images, and the scale-out doc the project files point at.
import { type ChildProcess, spawn } from 'node:child_process';
import { X509Certificate, randomBytes } from 'node:crypto';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import * as tlsNode from 'node:tls';
import * as pulumi from '@pulumi/pulumi';
import ts from 'typescript';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { CloudflareEdge, ORIGIN_CA_REQUEST_TYPE, ORIGIN_CA_VALIDITY_DAYS } from '../../infra/components/cloudflare.ts';
import { DEFAULT_IMAGES, imageRefs, parseStackConfig, rawFromStackFile, type StackConfig, StackConfigError } from '../../infra/config.ts';
import { canonicalHeaderName, renderCaddyfile, UPSTREAM_KEEPALIVE } from '../../infra/render/caddyfile.ts';
import { cacheRules } from '../../infra/render/cloudflare.ts';
import { CADDY_ORIGIN_CERT } from '../../infra/render/layout.ts';
import { mirrorConfigObject, privateConfigObject, renderMirrorConfig, renderPrivateConfig, type RegistryTarget } from '../../infra/render/registry-config.ts';
import { loadConfigText } from '../../server/src/config/load.ts';
import { parseDuration } from '../../server/src/config/units.ts';
import { RateLimits } from '../../server/src/http/rate-limit.ts';
import { RegistryError } from '../../server/src/registry/errors.ts';
import { freePort, makeTestCa, runScript, startCaddy, startWebhookReceiver, type Caddy, type TestCa, type WebhookReceiver } from '../scripts/helpers.ts';
import { HOST_KEY, isSecretValue, ROOT, runProgram, unwrap } from './pulumi-harness.ts';
import { caddyValidate } from './shell.ts';

const MINIMAL = { domain: 'example.com', vps: { host: '203.0.113.10', hostKey: HOST_KEY }, users: { alice: 'alice-password-1' } };
const cfgOf = (extra: Record<string, unknown> = {}): StackConfig => parseStackConfig({ ...MINIMAL, ...extra });

const TARGET: RegistryTarget = {
  addr: ':5000',
  rootdirectory: '/var/lib/registry',
  htpasswdPath: '/etc/registry/auth/htpasswd',
  adminAddr: '0.0.0.0:5001',
  publicUrl: 'https://dcr.example.com',
  trustedProxies: ['172.30.0.0/24'],
  logFormatter: 'json',
};

const tmp = (prefix: string) => mkdtempSync(path.join(tmpdir(), prefix));

/** A self-signed certificate for `name` (openssl), as the files Caddy is given. */
function selfSigned(dir: string, name: string): { certFile: string; keyFile: string; fingerprint: string } {
  const ca = makeTestCa(dir);
  const leaf = ca.issue(name, 30, path.join(dir, name));
  return { ...leaf, fingerprint: new X509Certificate(readFileSync(leaf.certFile)).fingerprint256 };
}

// ---------------------------------------------------------------------------
// 1. mir's Cloudflare Origin CA certificate

/** The two sites every Caddyfile in this file serves. */
const SITES = {
  dcrHost: 'dcr.example.com',
  mirHost: 'mir.example.com',
  privateUpstream: 'registry:5000',
  mirrorUpstream: 'registry-cache:5000',
  originHeader: 'X-Origin-Secret',
  originSecret: 'abcabcabcabcabcabc',
};

describe('mir: a Cloudflare Origin CA certificate made by the program', () => {
  it('registers a P-256 key, a CSR for the mir host and a 15-year origin-ecc certificate', async () => {
    const run = await runProgram(MINIMAL, { secretKeys: ['users'] });
    if (run.error) throw run.error;
    expect(run.byName('edge-mir-origin-key')).toMatchObject({ type: 'tls:index/privateKey:PrivateKey', inputs: { algorithm: 'ECDSA', ecdsaCurve: 'P256' } });
    expect(run.byName('edge-mir-origin-csr')).toMatchObject({
      type: 'tls:index/certRequest:CertRequest',
      inputs: { subject: { commonName: 'mir.example.com' }, dnsNames: ['mir.example.com'] },
    });
    const cert = run.byName('edge-mir-origin-cert');
    expect(cert.type).toBe('cloudflare:index/originCaCertificate:OriginCaCertificate');
    expect(cert.inputs).toMatchObject({ hostnames: ['mir.example.com'], requestType: 'origin-ecc', requestedValidity: 5475 });
    // dcr keeps its ACME certificate: nothing is issued for it
    expect(run.ofType('cloudflare:index/originCaCertificate:OriginCaCertificate')).toHaveLength(1);
  });

  it('a higher cloudflare.originCertGeneration gives key, CSR and certificate new names (new ones first, the old revoked after)', async () => {
    const run = await runProgram({ ...MINIMAL, cloudflare: { originCertGeneration: 2 } }, { secretKeys: ['users'] });
    if (run.error) throw run.error;
    expect(run.resources.filter((r) => r.name.startsWith('edge-mir-origin')).map((r) => r.name).sort()).toEqual([
      'edge-mir-origin-cert-g2',
      'edge-mir-origin-csr-g2',
      'edge-mir-origin-key-g2',
    ]);
    expect(() => parseStackConfig({ ...MINIMAL, cloudflare: { originCertGeneration: 0 } })).toThrow(/registry-stack:cloudflare\.originCertGeneration/);
  });

  describe('CloudflareEdge.mirOriginCert', () => {
    const seen: Record<string, Record<string, unknown>> = {};
    let edge: CloudflareEdge;
    beforeAll(async () => {
      await pulumi.runtime.setMocks(
        {
          newResource(args) {
            seen[args.name] = args.inputs;
            const state: Record<string, unknown> = { ...args.inputs };
            if (args.type === 'tls:index/privateKey:PrivateKey') state.privateKeyPem = 'KEY-PEM';
            // The key arrives as a secret (the tls provider marks privateKeyPem so).
            if (args.type === 'tls:index/certRequest:CertRequest') state.certRequestPem = `CSR-FOR(${unwrap(args.inputs.privateKeyPem)})`;
            if (args.type === 'cloudflare:index/originCaCertificate:OriginCaCertificate') state.certificate = `CERT-FOR(${args.inputs.csr})`;
            return { id: `${args.name}-id`, state };
          },
          call: () => ({ id: 'f'.repeat(32) }),
        },
        'registry-stack',
        'edge-test',
        false,
      );
      edge = new CloudflareEdge('e', { config: cfgOf({ zone: '0123456789abcdef0123456789abcdef' }), originSecret: 'origin-secret-0123456789' });
      await (pulumi.runtime as unknown as { waitForRPCs(): Promise<void> }).waitForRPCs();
    });
    const value = <T>(o: pulumi.Output<T>) => new Promise<T>((r) => o.apply(r));

    it('chains key → CSR → certificate, and gives Caddy the certificate and the key (secret)', async () => {
      expect(await value(edge.mirOriginCert.certificate)).toBe('CERT-FOR(CSR-FOR(KEY-PEM))');
      expect(await value(edge.mirOriginCert.privateKey)).toBe('KEY-PEM');
      expect(await pulumi.isSecret(edge.mirOriginCert.privateKey)).toBe(true);
      expect(isSecretValue(seen['e-mir-origin-csr'].privateKeyPem)).toBe(true);
      expect(seen['e-mir-origin-cert']).toMatchObject({ requestType: ORIGIN_CA_REQUEST_TYPE, requestedValidity: ORIGIN_CA_VALIDITY_DAYS });
    });
  });

  it('the Caddyfile serves mir from the uploaded files; dcr alone goes to ACME (caddy validate)', () => {
    const dir = tmp('rs-edge-mirtls-');
    try {
      const cert = selfSigned(dir, 'mir.example.com');
      const text = renderCaddyfile({
        ...SITES,
        behindCloudflare: true,
        accessLog: true,
        mirTls: { certFile: cert.certFile, keyFile: cert.keyFile },
      });
      const mirSite = text.slice(text.indexOf('mir.example.com {'));
      const dcrSite = text.slice(text.indexOf('dcr.example.com {'), text.indexOf('mir.example.com {'));
      expect(mirSite).toContain(`\ttls ${cert.certFile} ${cert.keyFile}\n`);
      expect(dcrSite).not.toMatch(/\ttls /);
      const { ok, output, json } = caddyValidate(text);
      expect(ok, output).toBe(true);
      expect(json.apps.tls.certificates.load_files).toEqual([expect.objectContaining({ certificate: cert.certFile, key: cert.keyFile })]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    // the paths the program uploads to
    expect(CADDY_ORIGIN_CERT).toMatchObject({ cert: '/etc/caddy/origin/mir.crt', key: '/etc/caddy/origin/mir.key', keyMode: '0600' });
  });

  it('acme points the ACME sites at another directory (the twin\'s pebble), with its root', () => {
    const dir = tmp('rs-edge-acmeroot-');
    const root = selfSigned(dir, 'pebble').certFile;
    const text = renderCaddyfile({
      ...SITES,
      behindCloudflare: false,
      accessLog: false,
      acme: { directory: 'https://pebble:14000/dir', rootCaFile: root },
      local: { httpPort: 48080, httpsPort: 48443 },
    });
    expect(text).toContain(`\tacme_ca https://pebble:14000/dir\n\tacme_ca_root ${root}\n`);
    // with acme, local keeps its ports but not Caddy's own CA
    expect(text).not.toContain('local_certs');
    expect(text).not.toContain('tls internal');
    const { ok, output, json } = caddyValidate(text);
    rmSync(dir, { recursive: true, force: true });
    expect(ok, output).toBe(true);
    const issuers = json.apps.tls.automation.policies.flatMap((p: any) => p.issuers ?? []);
    expect(issuers).toContainEqual(expect.objectContaining({ module: 'acme', ca: 'https://pebble:14000/dir', trusted_roots_pem_files: [root] }));
  });
});

// ---------------------------------------------------------------------------
// A running Caddy on a rendered Caddyfile (high ports, `local`)

interface RunningCaddy {
  httpsPort: number;
  output(): string;
  stop(): Promise<string>;
}

async function runCaddy(caddyfile: string, httpsPort: number, ready: string[]): Promise<RunningCaddy> {
  const dir = tmp('rs-edge-caddy-');
  const file = path.join(dir, 'Caddyfile');
  writeFileSync(file, caddyfile);
  const env: NodeJS.ProcessEnv = { ...process.env, HOME: dir, XDG_DATA_HOME: path.join(dir, 'data'), XDG_CONFIG_HOME: path.join(dir, 'config') };
  delete env.CADDY_ADMIN;
  const child: ChildProcess = spawn('caddy', ['run', '--adapter', 'caddyfile', '--config', file], { cwd: dir, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout?.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr?.on('data', (c: Buffer) => (out += c.toString()));
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      await exited;
    }
    rmSync(dir, { recursive: true, force: true });
    return out;
  };
  const handshake = (name: string) =>
    new Promise<boolean>((resolve) => {
      const s = tlsNode.connect({ host: '127.0.0.1', port: httpsPort, servername: name, rejectUnauthorized: false }, () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
  const deadline = Date.now() + 30_000;
  for (const name of ready) {
    while (!(await handshake(name))) {
      if (child.exitCode !== null || Date.now() > deadline) {
        await stop();
        throw new Error(`caddy did not serve ${name}:\n${out}`);
      }
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  return { httpsPort, output: () => out, stop };
}

function request(port: number, host: string, urlPath: string, headers: Record<string, string>): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = https.request(
      { host: '127.0.0.1', port, servername: host, path: urlPath, headers: { host, ...headers }, rejectUnauthorized: false },
      (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      },
    );
    req.once('error', reject);
    req.end();
  });
}

function servedFingerprint(port: number, name: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = tlsNode.connect({ host: '127.0.0.1', port, servername: name, rejectUnauthorized: false }, () => {
      const fp = s.getPeerX509Certificate()?.fingerprint256 ?? '';
      s.destroy();
      resolve(fp);
    });
    s.once('error', reject);
  });
}

describe('a running Caddy on the rendered Caddyfile', () => {
  // ---- 2. the origin header in no log ----
  it('never writes the origin header to a log: access log, proxied requests, a dead upstream\'s error log', async () => {
    const secret = `origin-${randomBytes(12).toString('hex')}`;
    const seenHeaders: http.IncomingHttpHeaders[] = [];
    const upstream = http.createServer((req, res) => {
      seenHeaders.push(req.headers);
      res.setHeader('content-type', 'application/json');
      res.end('{}');
    });
    await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
    const upPort = (upstream.address() as AddressInfo).port;
    const deadPort = await freePort();
    const [httpPort, httpsPort] = [await freePort(), await freePort()];
    const dir = tmp('rs-edge-mircert-');
    const cert = selfSigned(dir, 'mir.localhost');
    const caddy = await runCaddy(
      renderCaddyfile({
        dcrHost: 'dcr.localhost',
        mirHost: 'mir.localhost',
        privateUpstream: `127.0.0.1:${deadPort}`,
        mirrorUpstream: `127.0.0.1:${upPort}`,
        // lower case, as a user may configure it: Caddy logs the canonical form
        originHeader: 'x-origin-secret',
        originSecret: secret,
        behindCloudflare: false,
        admin: 'off',
        local: { httpPort, httpsPort },
        mirTls: { certFile: cert.certFile, keyFile: cert.keyFile },
        accessLog: true,
      }),
      httpsPort,
      ['dcr.localhost', 'mir.localhost'],
    );
    let output = '';
    try {
      // mir serves the certificate from the files even in local mode
      expect(await servedFingerprint(httpsPort, 'mir.localhost')).toBe(cert.fingerprint);
      expect(await request(httpsPort, 'mir.localhost', '/v2/', { 'X-Origin-Secret': secret })).toBe(200);
      expect(await request(httpsPort, 'mir.localhost', '/v2/', { 'x-origin-secret': `${secret}-wrong` })).toBe(403);
      expect(await request(httpsPort, 'mir.localhost', '/v2/x/blobs/uploads/', { 'X-Origin-Secret': secret, 'content-length': '0' })).toBe(200);
      // a registry that is down: Caddy logs the error with the request's headers (default logger)
      expect(await request(httpsPort, 'dcr.localhost', '/v2/', { 'X-Origin-Secret': secret })).toBe(502);
      await new Promise<void>((r) => upstream.close(() => r()));
      expect(await request(httpsPort, 'mir.localhost', '/v2/', { 'X-Origin-Secret': secret })).toBe(502);
    } finally {
      output = await caddy.stop();
      upstream.close();
      rmSync(dir, { recursive: true, force: true });
    }
    // the requests were logged, with their other headers ...
    const lines = output.split('\n').filter((l) => l.startsWith('{'));
    const access = lines.filter((l) => l.includes('"logger":"http.log.access'));
    expect(access.length).toBeGreaterThanOrEqual(4);
    expect(lines.some((l) => l.includes('"logger":"http.log.error') && l.includes('"status":502'))).toBe(true);
    expect(access.every((l) => l.includes('"headers":{'))).toBe(true);
    // ... but never the origin header, under any spelling, nor its value
    expect(output).not.toContain(secret);
    expect(output.toLowerCase()).not.toContain('x-origin-secret');
    // the registry never sees it either (header_up)
    expect(seenHeaders.length).toBeGreaterThan(0);
    for (const h of seenHeaders) expect(h['x-origin-secret']).toBeUndefined();
  });

  it('with acme, mir stays on its file certificate and only dcr is sent to the ACME directory', async () => {
    const [httpPort, httpsPort, acmePort] = [await freePort(), await freePort(), await freePort()];
    const dir = tmp('rs-edge-acme-');
    const cert = selfSigned(dir, 'mir.example.com');
    const caddy = await runCaddy(
      renderCaddyfile({
        dcrHost: 'dcr.example.com',
        mirHost: 'mir.example.com',
        privateUpstream: '127.0.0.1:1',
        mirrorUpstream: '127.0.0.1:1',
        originHeader: 'X-Origin-Secret',
        originSecret: 'abcabcabcabcabcabc',
        behindCloudflare: true,
        admin: 'off',
        // nothing listens there: what matters is who is sent to it
        acme: { directory: `https://127.0.0.1:${acmePort}/dir` },
        local: { httpPort, httpsPort },
        mirTls: { certFile: cert.certFile, keyFile: cert.keyFile },
        accessLog: false,
      }),
      httpsPort,
      ['mir.example.com'],
    );
    let output = '';
    try {
      expect(await servedFingerprint(httpsPort, 'mir.example.com')).toBe(cert.fingerprint);
      const deadline = Date.now() + 15_000;
      while (!caddy.output().includes('"identifier":"dcr.example.com"') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
    } finally {
      output = await caddy.stop();
      rmSync(dir, { recursive: true, force: true });
    }
    expect(output).toMatch(/skipping automatic certificate management[^\n]*"domain":"mir\.example\.com"/);
    expect(output).toContain('"identifier":"dcr.example.com"');
    expect(output).not.toContain('"identifier":"mir.example.com"');
  });
});

// ---------------------------------------------------------------------------
// 1 (continued). renew-cert and an Origin CA host

describe('renew-cert with an --origin-ca-host', () => {
  let caddy: Caddy;
  let hook: WebhookReceiver;
  let ca: TestCa;
  let certDir: string;
  beforeAll(async () => {
    certDir = tmp('rs-edge-origin-');
    ca = makeTestCa(certDir);
    const site = (name: string, days: number) => {
      const c = ca.issue(name, days, path.join(certDir, name));
      copyFileSync(c.certFile, path.join(certDir, `${name}.crt`));
      return { names: [name], body: `tls ${path.join(certDir, `${name}.crt`)} ${c.keyFile}\nrespond "ok"` };
    };
    // The issuing CA is not given to the job: like Cloudflare's Origin CA, it is in no trust store.
    caddy = await startCaddy([site('origin-due.test', 1), site('origin-ok.test', 90), { names: ['dcr.test'], body: 'tls internal\nrespond "ok"' }]);
    hook = await startWebhookReceiver();
  });
  afterAll(async () => {
    await hook?.close();
    await caddy?.stop();
    if (certDir) rmSync(certDir, { recursive: true, force: true });
  });
  const at = (name: string) => `${name}:${caddy.httpsPort}`;
  const connectTo = () => `127.0.0.1:${caddy.httpsPort}`;

  it('passes a far-from-expiry Origin CA certificate whose chain no local store trusts', async () => {
    const r = await runScript('renew-cert', ['--origin-ca-host', at('origin-ok.test'), '--connect-to', connectTo(), '--caddy-admin', caddy.adminUrl, '--days', '14']);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    const check = r.lines.find((l) => l.fields.phase === 'check');
    expect(check?.fields).toMatchObject({ role: 'origin-ca', ok: true, trusted: false, nameMatches: true });
  });

  it('alerts that `pulumi up` re-issues a due one, and never reloads Caddy for it (also when listed as a Caddy host too)', async () => {
    hook.clear();
    const loadsBefore = caddy.loads();
    const r = await runScript('renew-cert', ['--connect-to', connectTo(), '--caddy-admin', caddy.adminUrl, '--days', '14', '--wait', '1'], {
      RENEW_CERT_HOSTS: `${at('origin-due.test')},${at('dcr.test')}`,
      RENEW_CERT_ORIGIN_CA_HOSTS: at('origin-due.test'),
      ALERT_WEBHOOK: hook.url,
    });
    expect(r.code).toBe(1);
    // dcr.test (a 12-hour internal certificate) is reloaded for, once; origin-due.test never
    expect(caddy.loads()).toBe(loadsBefore + 1);
    const rechecked = r.lines.filter((l) => l.fields.phase === 'recheck').map((l) => l.fields.host);
    expect(rechecked).toEqual([at('dcr.test')]);
    expect(r.summary.msg).toMatch(/Origin CA certificate failing: origin-due\.test:\d+: [\d.]+ days left < 14/);
    expect(r.summary.msg).toContain('cloudflare.originCertGeneration');
    expect(r.summary.msg).toContain('`pulumi up`');
    expect(hook.alerts).toHaveLength(1);
    expect(hook.alerts[0].body.level).toBe('error');
    expect(hook.alerts[0].body.details.originCa).toEqual({ failing: [at('origin-due.test')], renewal: 'pulumi up' });
  });

  it('with only an Origin CA host, a due certificate fails without touching Caddy', async () => {
    const loadsBefore = caddy.loads();
    const r = await runScript('renew-cert', ['--origin-ca-host', at('origin-due.test'), '--connect-to', connectTo(), '--caddy-admin', caddy.adminUrl, '--days', '14']);
    expect(r.code).toBe(1);
    expect(caddy.loads()).toBe(loadsBefore);
    expect(r.lines.some((l) => /Caddy/.test(l.msg) && l !== r.summary)).toBe(false);
    expect(r.summary.msg).toMatch(/^Origin CA certificate failing: origin-due\.test:\d+: /);
  });
});

// ---------------------------------------------------------------------------
// 3. failed-login limiting on by default

describe('failed-login limiting', () => {
  it('is on in the private config by default, with the proxy network trusted for X-Forwarded-For', () => {
    const priv = loadConfigText(renderPrivateConfig(cfgOf(), TARGET), {}).config;
    expect(priv.ratelimit).toEqual({ enabled: true, failedlogins: { enabled: true, limit: 20, window: 15 * 60_000 }, trustedproxies: ['172.30.0.0/24'] });
    // a public mirror checks no logins; one with requireAuth does
    expect(loadConfigText(renderMirrorConfig(cfgOf(), TARGET), {}).config.ratelimit).toMatchObject({ enabled: false });
    const authMirror = loadConfigText(renderMirrorConfig(cfgOf({ mirror: { requireAuth: true } }), TARGET), {}).config;
    expect(authMirror.ratelimit).toMatchObject({ enabled: true, failedlogins: { limit: 20 } });
  });

  it('is tuned or turned off with the failedLogins key; extraConfig still adds buckets', () => {
    expect(privateConfigObject(cfgOf({ failedLogins: { limit: 5, window: '1h' } }), TARGET).ratelimit).toMatchObject({
      enabled: true,
      failedlogins: { limit: 5, window: '1h' },
    });
    expect(privateConfigObject(cfgOf({ failedLogins: { enabled: false } }), TARGET).ratelimit).toEqual({ enabled: false, trustedproxies: ['172.30.0.0/24'] });
    expect(mirrorConfigObject(cfgOf({ failedLogins: { enabled: false }, mirror: { requireAuth: true } }), TARGET).ratelimit).toMatchObject({ enabled: false });
    const merged = privateConfigObject(cfgOf({ private: { extraConfig: { ratelimit: { perip: { rate: 5, burst: 10 } } } } }), TARGET).ratelimit;
    expect(merged).toMatchObject({ enabled: true, perip: { rate: 5, burst: 10 }, failedlogins: { limit: 20 } });
    expect(() => cfgOf({ failedLogins: { limit: 0 } })).toThrow(/registry-stack:failedLogins\.limit/);
  });

  it('the server, fed the rendered config, locks out the client behind Caddy, not Caddy', async () => {
    const config = loadConfigText(renderPrivateConfig(cfgOf({ failedLogins: { limit: 3 } }), TARGET), {}).config;
    const limits = new RateLimits(config.ratelimit);
    const viaCaddy = (client: string) =>
      ({ socket: { remoteAddress: '172.30.0.2' }, connection: { remoteAddress: '172.30.0.2' }, headers: { 'x-forwarded-for': client } }) as unknown as http.IncomingMessage;
    const guesser = limits.clientIp(viaCaddy('198.51.100.7'));
    const other = limits.clientIp(viaCaddy('203.0.113.99'));
    expect(guesser).toBe('198.51.100.7');
    for (let i = 0; i < 3; i++) {
      await limits.beforeAuth(guesser);
      await limits.loginFailed(guesser);
    }
    const refused = await limits.beforeAuth(guesser).then(() => undefined, (e: unknown) => e);
    expect(refused).toBeInstanceOf(RegistryError);
    expect((refused as RegistryError).code).toBe('TOOMANYREQUESTS');
    await expect(limits.beforeAuth(other)).resolves.toBeUndefined();
  });
});

// ---------------------------------------------------------------------------
// 4. tag manifests are not cached at the edge

describe('Cloudflare cache rules', () => {
  it('never cache manifests by tag (the answer depends on Accept), whatever tagMaxAge; digests stay cached', () => {
    for (const tagMaxAge of ['60s', '5m', '0']) {
      const [blobs, byDigest, byTag] = cacheRules(cfgOf({ mirror: { tagMaxAge } }));
      expect(byTag.ref).toBe('mirror_manifests_by_tag');
      expect(byTag.actionParameters).toEqual({ cache: false });
      expect(byTag.description).toMatch(/Accept/);
      for (const r of [blobs, byDigest]) expect(r.actionParameters).toMatchObject({ cache: true, edgeTtl: { mode: 'override_origin', default: 31_536_000 } });
    }
  });
});

// ---------------------------------------------------------------------------
// 5. Caddy lets go of idle upstream connections before the server does

describe('upstream keep-alive', () => {
  it('is set on every reverse_proxy, below the server\'s keepAliveTimeout', () => {
    const source = readFileSync(path.join(ROOT, 'server/src/http/server.ts'), 'utf8');
    const m = /keepAliveTimeout = config\.http\.timeout\?\.idle \?\? ([\d_]+)/.exec(source);
    expect(m, 'server.ts sets keepAliveTimeout').not.toBeNull();
    const serverMs = Number(m![1].replace(/_/g, ''));
    expect(parseDuration(UPSTREAM_KEEPALIVE)!).toBeLessThan(serverMs);
    const text = renderCaddyfile({
      dcrHost: 'dcr.example.com',
      mirHost: 'mir.example.com',
      privateUpstream: ['registry-1:5000', 'registry-2:5000'],
      mirrorUpstream: 'registry-cache:5000',
      loadBalancing: { policy: 'least_conn', healthUri: '/healthz', healthInterval: '10s', healthTimeout: '5s', failDuration: '30s', tryDuration: '10s', tryInterval: '250ms' },
      originHeader: 'X-Origin-Secret',
      originSecret: 'abcabcabcabcabcabc',
      behindCloudflare: true,
      accessLog: true,
    });
    const { ok, output, json } = caddyValidate(text);
    expect(ok, output).toBe(true);
    const proxies: any[] = [];
    const walk = (v: unknown) => {
      if (Array.isArray(v)) v.forEach(walk);
      else if (v && typeof v === 'object') {
        if ((v as any).handler === 'reverse_proxy') proxies.push(v);
        Object.values(v).forEach(walk);
      }
    };
    walk(json);
    expect(proxies).toHaveLength(2);
    for (const p of proxies) expect(p.transport).toMatchObject({ protocol: 'http', keep_alive: { idle_timeout: parseDuration(UPSTREAM_KEEPALIVE)! * 1e6 } });
  });
});

// ---------------------------------------------------------------------------
// 6. rule parameters have the SDK's type

describe('rule actionParameters', () => {
  it('are typed by the SDK: a misspelt field fails the compiler', () => {
    const dir = tmp('rs-edge-tsc-');
    try {
      const rule = (params: string) =>
        `import type { Rule } from ${JSON.stringify(path.join(ROOT, 'infra/render/cloudflare.ts'))};\n` +
        `export const r: Rule = { ref: 'r', description: 'd', expression: 'e', action: 'set_cache_settings', enabled: true, actionParameters: ${params} };\n`;
      const cases = [
        `{ cache: true, edgeTtl: { mode: 'override_origin', default: 60 } }`,
        `{ cache: true, edgeTTL: { mode: 'override_origin', default: 60 } }`,
        `{ cache: true, edgeTtl: { mode: 'override_origin', defualt: 60 } }`,
      ];
      const files = cases.map((params, i) => {
        const file = path.join(dir, `rule${i}.ts`);
        writeFileSync(file, rule(params));
        return file;
      });
      const { options } = ts.parseJsonConfigFileContent(JSON.parse(readFileSync(path.join(ROOT, 'tsconfig.json'), 'utf8')), ts.sys, ROOT);
      // One program for the three files (the SDK's declarations parsed and bound once), each file's diagnostics on its own.
      const program = ts.createProgram(files, { ...options, noEmit: true });
      const diagnose = (file: string) =>
        ts.getPreEmitDiagnostics(program, program.getSourceFile(file)).map((d) => ts.flattenDiagnosticMessageText(d.messageText, '\n'));
      expect(diagnose(files[0])).toEqual([]);
      expect(diagnose(files[1]).join('\n')).toMatch(/'edgeTTL' does not exist/);
      expect(diagnose(files[2]).join('\n')).toMatch(/'defualt' does not exist/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

// ---------------------------------------------------------------------------
// 7. pinned images

describe('images', () => {
  const digest = `sha256:${'ab'.repeat(32)}`;
  it('default to current tags and take a digest per image', () => {
    expect(imageRefs(cfgOf())).toEqual({ caddy: 'caddy:2.10.2-alpine', node: 'node:24.22.3-bookworm-slim' });
    expect(DEFAULT_IMAGES.caddy).toMatch(/^caddy:2\.\d+\.\d+-alpine$/);
    expect(imageRefs(cfgOf({ docker: { caddyImageDigest: digest, nodeImageDigest: digest } }))).toEqual({
      caddy: `caddy:2.10.2-alpine@${digest}`,
      node: `node:24.22.3-bookworm-slim@${digest}`,
    });
    expect(imageRefs(cfgOf({ docker: { caddyImage: 'registry.example.com:5000/caddy:custom' } })).caddy).toBe('registry.example.com:5000/caddy:custom');
  });

  it('refuses a bad digest with one line naming the key', () => {
    const err = (() => {
      try {
        cfgOf({ docker: { caddyImageDigest: 'sha256:abc' } });
      } catch (e) {
        return e as Error;
      }
    })();
    expect(err).toBeInstanceOf(StackConfigError);
    const lines = err!.message.split('\n').slice(1);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^ {2}registry-stack:docker\.caddyImageDigest: must be an image digest/);
    expect(() => cfgOf({ docker: { nodeImage: `node:24@${digest}`, nodeImageDigest: digest } })).toThrow(/registry-stack:docker\.nodeImageDigest: docker\.nodeImage already pins a digest/);
  });
});

// ---------------------------------------------------------------------------
// 8. the scale-out doc exists where the project files say

describe('scale-out documentation', () => {
  it('every doc Pulumi.yaml and the examples point at exists, and its links resolve', () => {
    const sources = ['Pulumi.yaml', 'infra/examples/minimal.yaml', 'infra/examples/full.yaml', 'infra/examples/scale-out.yaml'];
    const referenced = new Set<string>();
    for (const f of sources) {
      for (const m of readFileSync(path.join(ROOT, f), 'utf8').matchAll(/[\w./-]+\.md\b/g)) referenced.add(m[0]);
    }
    expect([...referenced]).toContain('docs/scale-out.md');
    for (const doc of referenced) expect(existsSync(path.join(ROOT, doc)), doc).toBe(true);
    const text = readFileSync(path.join(ROOT, 'docs/scale-out.md'), 'utf8');
    for (const key of ['storage.backend', 'replicas.private', 'loadBalancer.*', 'redis.persistence', 'r2Credentials']) expect(text).toContain(key);
    const readme = readFileSync(path.join(ROOT, 'README.md'), 'utf8');
    const anchors = new Set([...readme.matchAll(/^#+ (.+)$/gm)].map((m) => m[1].toLowerCase().replace(/[^a-z0-9 -]/g, '').replace(/ /g, '-')));
    for (const [, target, anchor] of text.matchAll(/\]\(([^)#]+)(?:#([^)]+))?\)/g)) {
      expect(existsSync(path.join(ROOT, 'docs', target)), target).toBe(true);
      if (anchor && target.endsWith('README.md')) expect(anchors.has(anchor), anchor).toBe(true);
    }
  });
});

it('the filtered header is the canonical name Caddy logs', () => {
  expect(canonicalHeaderName('x-origin-secret')).toBe('X-Origin-Secret');
  expect(canonicalHeaderName('X-ORIGIN-AUTH')).toBe('X-Origin-Auth');
});

// The examples still parse with the new keys.
it('infra/examples/full.yaml sets the new keys', () => {
  const { raw } = rawFromStackFile(parseYaml(readFileSync(path.join(ROOT, 'infra/examples/full.yaml'), 'utf8')));
  const cfg = parseStackConfig(raw);
  expect(cfg.failedLogins).toEqual({ enabled: true, limit: 30, window: '10m' });
  expect(cfg.docker.caddyImage).toBe(DEFAULT_IMAGES.caddy);
});
