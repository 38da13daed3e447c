// The twin's Cloudflare edge (infra/twin/edge) in front of a real HTTPS
// origin, over real sockets and real TLS, running the rules rendered for
// infra/examples/minimal.yaml. Certificates come from the openssl CLI: an
// "edge CA" the client trusts, an "origin CA" the edge trusts in Full
// (strict), and another CA nobody trusts.
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { parseStackConfig, rawFromStackFile } from '../../infra/config.ts';
import { cacheRules, originHeaderRule, strictTlsRule, wafRules } from '../../infra/render/cloudflare.ts';
import { parseRange, storeDecision } from '../../infra/twin/edge/cache.ts';
import { startEdge, type Edge, type EdgeConfig, type LogEntry } from '../../infra/twin/edge/edge.ts';
import { compileRulesets, requestFields } from '../../infra/twin/edge/rules.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const cfg = parseStackConfig(rawFromStackFile(parseYaml(readFileSync(path.join(ROOT, 'infra/examples/minimal.yaml'), 'utf8'))).raw);
const MIR = cfg.derived.mirHost;
const SECRET = 'origin-secret-0123456789abcdef';
const ORIGIN_HEADER = cfg.cloudflare.originHeader.toLowerCase();

// The rulesets as the twin writes them: JSON, the secret a plain string.
const RULESETS = JSON.parse(
  JSON.stringify({
    http_config_settings: [strictTlsRule(cfg)],
    http_request_firewall_custom: wafRules(cfg),
    http_request_cache_settings: cacheRules(cfg),
    http_request_late_transform: [originHeaderRule(cfg, SECRET)],
  }),
);
const BLOCK_RULE = wafRules(cfg).find((r) => r.action === 'block')!.ref;

// ---- certificates -------------------------------------------------------------

const dir = mkdtempSync(path.join(tmpdir(), 'rs-edge-'));

interface Ca {
  cert: string;
  /** A leaf certificate for `name`; returns the PEM file paths. */
  issue(name: string): { cert: string; key: string };
}

function makeCa(name: string): Ca {
  const quiet = { stdio: ['ignore', 'ignore', 'pipe'] as ('ignore' | 'pipe')[] };
  const cert = path.join(dir, `${name}.crt`);
  const key = path.join(dir, `${name}.key`);
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  execFileSync('openssl', ['req', '-x509', ...ec, '-keyout', key, '-out', cert, '-days', '2', '-subj', `/CN=${name}`], quiet);
  return {
    cert,
    issue(host) {
      const base = path.join(dir, `${name}-${host}`);
      writeFileSync(`${base}.ext`, `subjectAltName=DNS:${host}\n`);
      execFileSync('openssl', ['req', ...ec, '-keyout', `${base}.key`, '-out', `${base}.csr`, '-subj', `/CN=${host}`], quiet);
      execFileSync('openssl', ['x509', '-req', '-in', `${base}.csr`, '-CA', cert, '-CAkey', key, '-CAcreateserial', '-out', `${base}.crt`, '-days', '2', '-extfile', `${base}.ext`], quiet);
      return { cert: `${base}.crt`, key: `${base}.key` };
    },
  };
}

// ---- the origin -----------------------------------------------------------------

const digestOf = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const SMALL = randomBytes(100_000);
const EXPIRING = randomBytes(1000);
const MEDIUM = randomBytes(2 * 1024 * 1024);
const repo = (kind: 'blobs' | 'manifests', ref: string) => `/v2/library/alpine/${kind}/${ref}`;
const SMALL_BLOB = repo('blobs', digestOf(SMALL));
const EXPIRING_BLOB = repo('blobs', digestOf(EXPIRING));
const MEDIUM_BLOB = repo('blobs', digestOf(MEDIUM));
const MISSING_BLOB = repo('blobs', `sha256:${'0'.repeat(64)}`);
const REDIRECTED_BLOB = repo('blobs', `sha256:${'7'.repeat(64)}`);
const TAG = repo('manifests', 'latest');

// 50 MiB in 1 MiB chunks, each different; the origin sends the first, then
// waits until the client has received bytes before it sends the rest.
const CHUNK = randomBytes(1024 * 1024);
const CHUNKS = 50;
const chunk = (i: number) => {
  const c = Buffer.from(CHUNK);
  c.writeUInt32BE(i, 0);
  return c;
};
const BIG_SHA = (() => {
  const h = createHash('sha256');
  for (let i = 0; i < CHUNKS; i++) h.update(chunk(i));
  return h.digest('hex');
})();
const BIG_BLOB = repo('blobs', `sha256:${BIG_SHA}`);
let clientHasFirstBytes = deferred();

interface Seen {
  scheme: 'http' | 'https';
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
}
const seen: Seen[] = [];
const count = (url: string) => seen.filter((r) => r.url === url).length;

async function origin(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
  seen.push({ scheme: (req.socket as { encrypted?: boolean }).encrypted ? 'https' : 'http', method: req.method!, url: req.url!, headers: req.headers });
  req.resume();
  const blob = (b: Buffer) => {
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': b.length, etag: `"${digestOf(b)}"`, 'docker-content-digest': digestOf(b) });
    res.end(req.method === 'HEAD' ? undefined : b);
  };
  switch (req.url) {
    case '/v2/':
      res.writeHead(200, { 'content-type': 'application/json', 'docker-distribution-api-version': 'registry/2.0' });
      return void res.end('{}');
    case TAG: {
      // A registry answers a tag with the manifest the Accept header asks for.
      const type = req.headers.accept ?? 'application/vnd.oci.image.manifest.v1+json';
      res.writeHead(200, { 'content-type': type });
      return void res.end(JSON.stringify({ mediaType: type }));
    }
    case SMALL_BLOB:
      return blob(SMALL);
    case EXPIRING_BLOB:
      return blob(EXPIRING);
    case MEDIUM_BLOB:
      return blob(MEDIUM);
    case REDIRECTED_BLOB:
      res.writeHead(307, { location: 'https://r2.example.net/blob?X-Amz-Signature=abc' });
      return void res.end();
    case BIG_BLOB: {
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': CHUNKS * CHUNK.length });
      res.write(chunk(0));
      await clientHasFirstBytes.promise;
      for (let i = 1; i < CHUNKS; i++) {
        if (!res.write(chunk(i))) await new Promise((resolve) => res.once('drain', resolve));
      }
      return void res.end();
    }
    default:
      res.writeHead(404, { 'content-type': 'application/json' });
      res.end('{"errors":[{"code":"BLOB_UNKNOWN"}]}');
  }
}

function deferred() {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

// ---- the client -------------------------------------------------------------------

let edgeCa: Ca;

interface Got {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

/** A request to an edge, as a registry client on the internet would make it. */
function fetchEdge(
  port: number,
  url: string,
  o: { method?: string; headers?: Record<string, string>; body?: string; scheme?: 'http' | 'https'; onData?: () => void } = {},
): Promise<Got & { sha256: string }> {
  return new Promise((resolve, reject) => {
    const options = { host: '127.0.0.1', port, path: url, method: o.method ?? 'GET', headers: { host: MIR, ...o.headers }, agent: false as const };
    const req =
      o.scheme === 'http' ? http.request(options) : https.request({ ...options, servername: MIR, ca: readFileSync(edgeCa.cert) });
    req.on('response', (res) => {
      // Only small bodies are kept; every body is hashed.
      const hash = createHash('sha256');
      const kept: Buffer[] = [];
      let size = 0;
      res.on('data', (b: Buffer) => {
        o.onData?.();
        hash.update(b);
        size += b.length;
        if (size <= 4 * 1024 * 1024) kept.push(b);
      });
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(kept), sha256: hash.digest('hex') }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(o.body);
  });
}

// ---- the setup: origins and edges ----------------------------------------------------

const servers: http.Server[] = [];
const edges: Edge[] = [];
const logs: LogEntry[] = [];
let clockOffset = 0;

async function serve(server: http.Server): Promise<number> {
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return (server.address() as AddressInfo).port;
}

const handler = (req: http.IncomingMessage, res: http.ServerResponse) => void origin(req, res);

async function edge(name: string, o: Partial<EdgeConfig> & { originHttpsPort: number; originHttpPort?: number }): Promise<Edge> {
  const { originHttpsPort, originHttpPort, ...rest } = o;
  const started = await startEdge(
    {
      hosts: [MIR],
      listen: { http: 0, https: 0, address: '127.0.0.1' },
      tls: edgeTls,
      origin: { host: '127.0.0.1', httpsPort: originHttpsPort, httpPort: originHttpPort ?? 1 },
      originCa: originCa.cert,
      rulesets: RULESETS,
      cacheDir: path.join(dir, `cache-${name}`),
      ...rest,
    },
    { log: (e) => logs.push(e), now: () => Date.now() + clockOffset },
  );
  edges.push(started);
  return started;
}

let originCa: Ca;
let edgeTls: { cert: string; key: string };
/** Strict, in front of the origin with a certificate from the origin CA. */
let main: Edge;
/** Strict, in front of an origin whose certificate comes from another CA. */
let strictRogue: Edge;
/** Full (the zone's mode, no configuration rule), in front of that same origin; caches at most 1 MiB. */
let fullRogue: Edge;
/** Strict, in front of an origin certificate from the right CA for the wrong name. */
let strictWrongName: Edge;
/** In front of a port nobody listens on. */
let down: Edge;

beforeAll(async () => {
  edgeCa = makeCa('edge-ca');
  originCa = makeCa('origin-ca');
  const otherCa = makeCa('other-ca');
  edgeTls = edgeCa.issue(MIR);
  const tlsOf = (c: { cert: string; key: string }) => ({ cert: readFileSync(c.cert), key: readFileSync(c.key) });

  const originPort = await serve(https.createServer(tlsOf(originCa.issue(MIR)), handler));
  const originHttpPort = await serve(http.createServer(handler));
  const roguePort = await serve(https.createServer(tlsOf(otherCa.issue(MIR)), handler));
  const wrongNamePort = await serve(https.createServer(tlsOf(originCa.issue('wrong.example.com')), handler));
  const closed = http.createServer();
  const closedPort = await serve(closed);
  await new Promise<void>((resolve) => closed.close(() => resolve()));

  main = await edge('main', { originHttpsPort: originPort, originHttpPort });
  strictRogue = await edge('strict-rogue', { originHttpsPort: roguePort });
  fullRogue = await edge('full-rogue', {
    originHttpsPort: roguePort,
    rulesets: { ...RULESETS, http_config_settings: [] },
    zoneSsl: 'full',
    maxCacheableBytes: 1024 * 1024,
  });
  strictWrongName = await edge('wrong-name', { originHttpsPort: wrongNamePort });
  down = await edge('down', { originHttpsPort: closedPort });
});

afterAll(async () => {
  await Promise.all(edges.map((e) => e.close()));
  for (const s of servers) s.closeAllConnections();
  await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))));
  rmSync(dir, { recursive: true, force: true });
});

const lastLog = (url: string) => logs.filter((l) => l.path === url).at(-1);

// ---- the tests --------------------------------------------------------------------------

describe('the edge in front of the mirror, with the rules of infra/examples/minimal.yaml', () => {
  it('passes a GET to the origin with the origin header set and Cloudflare\'s headers added', async () => {
    // A client cannot forge the headers the edge sets.
    const r = await fetchEdge(main.ports.https, '/v2/', { headers: { 'cf-connecting-ip': '192.0.2.1', [ORIGIN_HEADER]: 'forged' } });
    expect(r.status).toBe(200);
    expect(r.body.toString()).toBe('{}');
    expect(r.headers['cf-ray']).toMatch(/^[0-9a-f]{16}-TWN$/);
    expect(r.headers.server).toBe('cloudflare');
    expect(r.headers['cf-cache-status']).toBe('DYNAMIC');
    expect(r.headers['docker-distribution-api-version']).toBe('registry/2.0');

    const got = seen.at(-1)!;
    expect(got).toMatchObject({ scheme: 'https', method: 'GET', url: '/v2/' });
    expect(got.headers[ORIGIN_HEADER]).toBe(SECRET);
    expect(got.headers['cf-connecting-ip']).toBe('127.0.0.1');
    expect(got.headers['x-forwarded-for']).toBe('127.0.0.1');
    expect(got.headers['x-forwarded-proto']).toBe('https');
    expect(got.headers['cf-visitor']).toBe('{"scheme":"https"}');
    expect(got.headers['cf-ray']).toBe(r.headers['cf-ray']);
    expect(got.headers.host).toBe(MIR);

    expect(lastLog('/v2/')).toMatchObject({ method: 'GET', host: MIR, status: 200, cache: 'DYNAMIC', ssl: 'strict', client: '127.0.0.1' });
  });

  it('blocks writes with 403 before they reach the origin', async () => {
    const before = seen.length;
    for (const method of ['PUT', 'POST', 'PATCH', 'DELETE']) {
      const r = await fetchEdge(main.ports.https, '/v2/library/alpine/blobs/uploads/', { method, body: 'layer bytes' });
      expect(r.status, method).toBe(403);
      expect(r.body.toString()).toBe('error code: 1020');
      expect(r.headers['cf-ray']).toBeDefined();
      expect(lastLog('/v2/library/alpine/blobs/uploads/')).toMatchObject({ method, status: 403, blockedBy: BLOCK_RULE });
    }
    // a browser gets a page, and paths outside the API are blocked too
    const page = await fetchEdge(main.ports.https, '/wp-login.php', { headers: { accept: 'text/html' } });
    expect(page.status).toBe(403);
    expect(page.body.toString()).toContain('Error 1020');
    expect(seen.length).toBe(before);
  });

  it('caches a blob by digest: the second GET, a HEAD and Range requests come from the cache', async () => {
    const first = await fetchEdge(main.ports.https, SMALL_BLOB);
    expect(first.status).toBe(200);
    expect(first.headers['cf-cache-status']).toBe('MISS');
    expect(first.body.equals(SMALL)).toBe(true);

    const second = await fetchEdge(main.ports.https, SMALL_BLOB);
    expect(second.headers['cf-cache-status']).toBe('HIT');
    expect(second.body.equals(SMALL)).toBe(true);
    expect(second.headers['content-length']).toBe(String(SMALL.length));
    expect(second.headers['docker-content-digest']).toBe(digestOf(SMALL));
    expect(second.headers.age).toBeDefined();

    const head = await fetchEdge(main.ports.https, SMALL_BLOB, { method: 'HEAD' });
    expect(head).toMatchObject({ status: 200, body: Buffer.alloc(0) });
    expect(head.headers['cf-cache-status']).toBe('HIT');
    expect(head.headers['content-length']).toBe(String(SMALL.length));

    const range = await fetchEdge(main.ports.https, SMALL_BLOB, { headers: { range: 'bytes=10-19' } });
    expect(range.status).toBe(206);
    expect(range.headers['content-range']).toBe(`bytes 10-19/${SMALL.length}`);
    expect(range.headers['cf-cache-status']).toBe('HIT');
    expect(range.body.equals(SMALL.subarray(10, 20))).toBe(true);

    const tail = await fetchEdge(main.ports.https, SMALL_BLOB, { headers: { range: 'bytes=-5' } });
    expect(tail.status).toBe(206);
    expect(tail.body.equals(SMALL.subarray(-5))).toBe(true);

    const beyond = await fetchEdge(main.ports.https, SMALL_BLOB, { headers: { range: `bytes=${SMALL.length}-` } });
    expect(beyond.status).toBe(416);
    expect(beyond.headers['content-range']).toBe(`bytes */${SMALL.length}`);

    const notModified = await fetchEdge(main.ports.https, SMALL_BLOB, { headers: { 'if-none-match': `"${digestOf(SMALL)}"` } });
    expect(notModified.status).toBe(304);

    expect(count(SMALL_BLOB)).toBe(1);
  });

  it('fetches an entry again once its TTL has passed (EXPIRED)', async () => {
    expect((await fetchEdge(main.ports.https, EXPIRING_BLOB)).headers['cf-cache-status']).toBe('MISS');
    expect((await fetchEdge(main.ports.https, EXPIRING_BLOB)).headers['cf-cache-status']).toBe('HIT');
    clockOffset = (cfg.cloudflare.immutableTtl + 1) * 1000;
    try {
      const again = await fetchEdge(main.ports.https, EXPIRING_BLOB);
      expect(again.headers['cf-cache-status']).toBe('EXPIRED');
      expect(again.body.equals(EXPIRING)).toBe(true);
      expect((await fetchEdge(main.ports.https, EXPIRING_BLOB)).headers['cf-cache-status']).toBe('HIT');
    } finally {
      clockOffset = 0;
    }
    expect(count(EXPIRING_BLOB)).toBe(2);
  });

  it('does not cache a 404 (status code TTL -1)', async () => {
    for (let i = 0; i < 2; i++) {
      const r = await fetchEdge(main.ports.https, MISSING_BLOB);
      expect(r.status).toBe(404);
      expect(r.headers['cf-cache-status']).toBe('MISS');
    }
    expect(count(MISSING_BLOB)).toBe(2);
  });

  it('keys the cache on the URL alone: what that does to a tag manifest asked for with another Accept', async () => {
    const tagRule = cacheRules(cfg).find((r) => r.ref === 'mirror_manifests_by_tag');
    const cachedByRule = tagRule?.actionParameters?.cache === true;
    const oci = await fetchEdge(main.ports.https, TAG, { headers: { accept: 'application/vnd.oci.image.index.v1+json' } });
    const docker = await fetchEdge(main.ports.https, TAG, { headers: { accept: 'application/vnd.docker.distribution.manifest.v2+json' } });
    expect(JSON.parse(oci.body.toString()).mediaType).toBe('application/vnd.oci.image.index.v1+json');
    if (cachedByRule) {
      // the second client gets the first client's media type
      expect(docker.headers['cf-cache-status']).toBe('HIT');
      expect(docker.headers['content-type']).toBe('application/vnd.oci.image.index.v1+json');
      expect(count(TAG)).toBe(1);
    } else {
      expect(docker.headers['cf-cache-status']).toBe('DYNAMIC');
      expect(JSON.parse(docker.body.toString()).mediaType).toBe('application/vnd.docker.distribution.manifest.v2+json');
      expect(count(TAG)).toBe(2);
    }
  });

  it('passes a redirect from the origin to the client unchanged', async () => {
    const r = await fetchEdge(main.ports.https, REDIRECTED_BLOB);
    expect(r.status).toBe(307);
    expect(r.headers.location).toBe('https://r2.example.net/blob?X-Amz-Signature=abc');
  });

  it('answers another host name with 403, error 1003, without asking the origin', async () => {
    const before = seen.length;
    const r = await fetchEdge(main.ports.https, '/v2/', { headers: { host: `dcr.${cfg.domain}` } });
    expect(r.status).toBe(403);
    expect(r.body.toString()).toBe('error code: 1003');
    expect(seen.length).toBe(before);
  });

  it('sends a plain-HTTP visitor to the origin over HTTP (Full strict matches the visitor\'s protocol)', async () => {
    const r = await fetchEdge(main.ports.http, '/v2/', { scheme: 'http' });
    expect(r.status).toBe(200);
    const got = seen.at(-1)!;
    expect(got.scheme).toBe('http');
    expect(got.headers['x-forwarded-proto']).toBe('http');
    expect(got.headers['cf-visitor']).toBe('{"scheme":"http"}');
    expect(got.headers[ORIGIN_HEADER]).toBe(SECRET);
  });

  it('streams a 50 MiB blob through without holding it, and caches it on the way', async () => {
    // The origin holds back all but the first MiB until the client has bytes:
    // an edge that buffered the body before sending it would never finish.
    clientHasFirstBytes = deferred();
    const first = await fetchEdge(main.ports.https, BIG_BLOB, { onData: () => clientHasFirstBytes.resolve() });
    expect(first.status).toBe(200);
    expect(first.headers['content-length']).toBe(String(CHUNKS * CHUNK.length));
    expect(first.headers['cf-cache-status']).toBe('MISS');
    expect(first.sha256).toBe(BIG_SHA);

    const second = await fetchEdge(main.ports.https, BIG_BLOB);
    expect(second.headers['cf-cache-status']).toBe('HIT');
    expect(second.sha256).toBe(BIG_SHA);
    expect(count(BIG_BLOB)).toBe(1);
  });
});

describe('the connection to the origin', () => {
  it('Full (strict) refuses an origin certificate from a CA it does not trust: 526', async () => {
    const r = await fetchEdge(strictRogue.ports.https, '/v2/');
    expect(r.status).toBe(526);
    expect(r.body.toString()).toBe('error code: 526');
  });

  it('Full (strict) refuses a certificate for another name: 526', async () => {
    expect((await fetchEdge(strictWrongName.ports.https, '/v2/')).status).toBe(526);
  });

  it('Full accepts the same certificate', async () => {
    const r = await fetchEdge(fullRogue.ports.https, '/v2/');
    expect(r.status).toBe(200);
    expect(lastLog('/v2/')).toMatchObject({ ssl: 'full', status: 200 });
  });

  it('an origin that refuses connections: 521', async () => {
    const r = await fetchEdge(down.ports.https, '/v2/');
    expect(r.status).toBe(521);
    expect(r.body.toString()).toBe('error code: 521');
  });

  it('streams a response larger than maxCacheableBytes through without storing it', async () => {
    for (let i = 0; i < 2; i++) {
      const r = await fetchEdge(fullRogue.ports.https, MEDIUM_BLOB);
      expect(r.status).toBe(200);
      expect(r.headers['cf-cache-status']).toBe('MISS');
      expect(r.body.equals(MEDIUM)).toBe(true);
    }
    expect(count(MEDIUM_BLOB)).toBe(2);
  });
});

// The decisions behind the behaviour above, without sockets.
describe('rules and cache policy', () => {
  const fields = requestFields({ scheme: 'https', host: MIR, method: 'GET', url: SMALL_BLOB, userAgent: 'docker', clientIp: '127.0.0.1' });

  it('merges matching cache rules setting by setting, the last one winning', () => {
    const rules = compileRulesets({
      http_request_cache_settings: [
        { ref: 'a', expression: 'ssl', action: 'set_cache_settings', actionParameters: { cache: true, edgeTtl: { mode: 'override_origin', default: 60 }, respectStrongEtags: true } },
        { ref: 'b', expression: 'http.request.method eq "GET"', action: 'set_cache_settings', actionParameters: { edgeTtl: { mode: 'respect_origin' } } },
        { ref: 'c', expression: 'http.request.method eq "PUT"', action: 'set_cache_settings', actionParameters: { cache: false } },
        { ref: 'd', expression: 'ssl', action: 'set_cache_settings', actionParameters: { cache: false }, enabled: false },
      ],
    });
    expect(rules.cacheSettings(fields)).toEqual({ cache: true, edgeTtl: { mode: 'respect_origin' }, respectStrongEtags: true, matched: ['a', 'b'] });
  });

  it('a skip of the current ruleset ends the custom phase; a skip of products goes on', () => {
    const block = { ref: 'block', expression: 'ssl', action: 'block' };
    const skipProducts = { ref: 'skip-products', expression: 'ssl', action: 'skip', actionParameters: { phases: ['http_request_sbfm'], products: ['bic'] } };
    const skipRest = { ref: 'skip-rest', expression: 'ssl', action: 'skip', actionParameters: { ruleset: 'current' } };
    expect(compileRulesets({ http_request_firewall_custom: [skipProducts, block] }).firewall(fields)).toMatchObject({ action: 'block', ref: 'block' });
    expect(compileRulesets({ http_request_firewall_custom: [skipRest, block] }).firewall(fields)).toMatchObject({ action: 'allow', matched: ['skip-rest'] });
  });

  it('refuses, naming the rule, what the twin would otherwise silently ignore', () => {
    const one = (phase: string, rule: object) => () => compileRulesets({ [phase]: [{ ref: 'r', expression: 'ssl', ...rule }] });
    expect(one('http_request_cache_settings', { action: 'set_cache_settings', actionParameters: { cacheKey: {} } })).toThrow(/\(r\): set_cache_settings parameters: cacheKey not modelled/);
    expect(one('http_request_firewall_custom', { action: 'execute' })).toThrow(/\(r\): action "execute"/);
    expect(one('http_request_late_transform', { action: 'rewrite', actionParameters: { uri: { path: { value: '/' } } } })).toThrow(/URI rewrites are not modelled/);
    expect(one('http_config_settings', { action: 'set_config', actionParameters: { ssl: 'sometimes' } })).toThrow(/ssl must be one of/);
    expect(() => compileRulesets({ http_request_firewall_custom: [{ ref: 'bad', expression: 'http.hots eq "x"', action: 'block' }] })).toThrow(/\(bad\): unknown field "http.hots".* at position 0/);
  });

  it('respect_origin follows the origin: no-store, private and Set-Cookie are not stored (BYPASS), max-age is the TTL', () => {
    const respect = { cache: true, edgeTtl: { mode: 'respect_origin' as const }, matched: [] };
    expect(storeDecision(respect, 200, { 'cache-control': 'no-store' })).toEqual({ store: false, reason: 'origin' });
    expect(storeDecision(respect, 200, { 'cache-control': 'private, max-age=60' })).toEqual({ store: false, reason: 'origin' });
    expect(storeDecision(respect, 200, { 'set-cookie': ['a=b'] })).toEqual({ store: false, reason: 'origin' });
    expect(storeDecision(respect, 200, { 'cache-control': 'public, s-maxage=30, max-age=60' })).toEqual({ store: true, ttlSeconds: 30 });
    expect(storeDecision(respect, 200, {})).toEqual({ store: true, ttlSeconds: 7200 }); // Cloudflare's default for 200
    expect(storeDecision(respect, 500, {})).toEqual({ store: false, reason: 'status' });
    // override_origin ignores Cache-Control, but not Set-Cookie
    const override = { cache: true, edgeTtl: { mode: 'override_origin' as const, default: 600, statusCodeTtls: [{ statusCodeRange: { from: 400, to: 599 }, value: -1 }] }, matched: [] };
    expect(storeDecision(override, 200, { 'cache-control': 'no-store' })).toEqual({ store: true, ttlSeconds: 600 });
    expect(storeDecision(override, 404, {})).toEqual({ store: false, reason: 'rule' });
    expect(storeDecision(override, 200, { 'set-cookie': ['a=b'] })).toEqual({ store: false, reason: 'origin' });
    expect(storeDecision(override, 206, {})).toEqual({ store: false, reason: 'partial' });
  });

  it('reads one byte range', () => {
    expect(parseRange('bytes=0-9', 100)).toEqual({ start: 0, end: 9 });
    expect(parseRange('bytes=90-', 100)).toEqual({ start: 90, end: 99 });
    expect(parseRange('bytes=-10', 100)).toEqual({ start: 90, end: 99 });
    expect(parseRange('bytes=50-500', 100)).toEqual({ start: 50, end: 99 });
    expect(parseRange('bytes=100-', 100)).toBe('unsatisfiable');
    expect(parseRange('bytes=0-1,5-6', 100)).toBeUndefined(); // several ranges: the whole body
    expect(parseRange('items=0-1', 100)).toBeUndefined();
  });
});
