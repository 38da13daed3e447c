// The mirror against hostile upstreams (test/helpers/hostile-auth-upstream.ts):
// its upstream credentials go only to the realm the upstream's own /v2/
// challenge names (https unless the upstream is http), never to a realm named
// by a redirect target or by one repository's answer; redirects into the
// mirror's own network (other loopback hosts, names resolving there) are
// refused unless listed in proxy.internaltargets, while an upstream on
// loopback keeps its own same-host redirects; connection errors of redirect
// targets are logged, not told to clients. And a single proxy.remoteurl
// answers containerd's ?ns= whatever it names.
import { Writable } from 'node:stream';
import pino from 'pino';
import { Agent } from 'undici';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { errorCodes, RegistryClient } from '../helpers/client.ts';
import { fetchManifest, MANIFEST_ACCEPT, verifyPull } from '../helpers/clients.ts';
import {
  challengeWith,
  HostileAuthUpstream,
  issueTokens,
  selfSignedCert,
  serveBody,
  Trap,
} from '../helpers/hostile-auth-upstream.ts';
import { cachedBlob, cachedTag, type LocalMirror, startMirror } from '../helpers/mirror/mirror.ts';
import { freePort } from '../helpers/process.ts';
import { buildImage } from '../helpers/oci.ts';
import { ConfigError, loadConfigObject } from '../../server/src/config/load.ts';
import { silentLogger } from '../../server/src/log/logger.ts';
import { UpstreamClient, UpstreamUnavailable } from '../../server/src/proxy/upstream-client.ts';

const USER = 'mirror-bot';
const PASS = 'up-secret-Kq93';
const image = buildImage({ files: [{ 'a.txt': 'hostile auth one\n' }] });
const other = buildImage({ files: [{ 'b.txt': 'hostile auth two\n' }] });
const secret = buildImage({ files: [{ 'secret.txt': 'only on the internal network\n' }] });

const stops: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  await Promise.all(stops.splice(0).map((stop) => stop()));
});

async function started<T extends { stop(): Promise<unknown> }>(thing: Promise<T>): Promise<T> {
  const t = await thing;
  stops.push(() => t.stop());
  return t;
}

function mirrorOf(url: string, extra: { username?: string; password?: string; proxy?: Record<string, unknown> } = {}): Promise<LocalMirror> {
  return started(startMirror({ upstreams: [{ host: 'hostile.test', url, username: extra.username, password: extra.password }], proxy: extra.proxy }));
}

function client(url: string, options: Partial<ConstructorParameters<typeof UpstreamClient>[1]> = {}, username?: string, password?: string): UpstreamClient {
  const c = new UpstreamClient({ host: 'hostile.test', url, prefix: 'hostile.test', username, password }, { logger: silentLogger, retries: 0, ...options });
  stops.push(() => c.close());
  return c;
}

/** A pino logger whose lines the test can read. */
function capturingLogger(): { logger: pino.Logger; lines: () => string } {
  const chunks: string[] = [];
  const sink = new Writable({
    write(chunk, _enc, done) {
      chunks.push(String(chunk));
      done();
    },
  });
  return { logger: pino({ level: 'debug' }, sink), lines: () => chunks.join('') };
}

describe('mirror: upstream credentials go only to the realm of the upstream itself', () => {
  it('learns nothing from a 401 of a host a redirect led to: its realm never sees a request, other repositories keep working', async () => {
    const evilRealm = await started(Trap.start({ respond: issueTokens }));
    const cdn = await started(Trap.start({ respond: challengeWith(`${evilRealm.url}/token`) }));
    const up = await started(HostileAuthUpstream.start({ users: { [USER]: PASS } }));
    up.pushImage('team/app', 'v1', image);
    up.pushImage('team/other', 'v1', other);
    up.redirect(`/v2/team/app/blobs/${image.layers[0].digest}`, `${cdn.url}/blob?sig=1`);
    const m = await mirrorOf(up.url, { username: USER, password: PASS });

    // With a token for team/app in hand, the blob's redirect target is the first to answer 401.
    expect((await fetchManifest(m.url, undefined, 'team/app', 'v1')).status).toBe(200);
    const c = new RegistryClient(m.url);
    const blob = await c.req(`/v2/team/app/blobs/${image.layers[0].digest}`);
    expect(evilRealm.requests).toEqual([]);
    expect(blob.status).toBe(503);
    expect(errorCodes(blob)).toEqual(['UNAVAILABLE']);
    expect(cdn.requests.length).toBeGreaterThanOrEqual(1);
    expect(cdn.withAuthorization).toEqual([]);

    // The upstream's realm is still the one used, for this repository and the next.
    expect((await verifyPull(m.url, undefined, 'team/other', 'v1')).digest).toBe(other.manifest.digest);
    expect((await fetchManifest(m.url, undefined, 'team/app', 'v1')).status).toBe(200);
    expect(evilRealm.requests).toEqual([]);
    expect(up.tokenRequests.length).toBeGreaterThan(0);
    expect(up.tokenRequests.every((t) => t.user === USER && t.granted)).toBe(true);
  });

  it("does not adopt the realm one repository's 401 names: the credentials stay with the realm of /v2/", async () => {
    const evilRealm = await started(Trap.start({ respond: issueTokens }));
    const up = await started(HostileAuthUpstream.start({ users: { [USER]: PASS } }));
    up.pushImage('team/app', 'v1', image);
    up.pushImage('team/other', 'v1', other);
    up.foreignRealm('evil/bait', `${evilRealm.url}/token`);
    const m = await mirrorOf(up.url, { username: USER, password: PASS });

    // The bait is the first thing asked for, and asked for again between pulls.
    expect((await fetchManifest(m.url, undefined, 'evil/bait', 'latest')).status).not.toBe(200);
    expect((await verifyPull(m.url, undefined, 'team/app', 'v1')).digest).toBe(image.manifest.digest);
    expect((await fetchManifest(m.url, undefined, 'evil/bait', 'v2')).status).not.toBe(200);
    expect((await verifyPull(m.url, undefined, 'team/other', 'v1')).digest).toBe(other.manifest.digest);

    expect(evilRealm.requests).toEqual([]);
    expect(up.tokenRequests.every((t) => t.user === USER)).toBe(true);
  });

  it('sends no credentials (and no request) to a plain-http realm of an https upstream', async () => {
    const tls = selfSignedCert();
    const httpRealm = await started(Trap.start({ respond: issueTokens }));
    const up = await started(HostileAuthUpstream.start({ tls, users: { [USER]: PASS }, realm: `${httpRealm.url}/token` }));
    up.pushImage('team/app', 'v1', image);
    const trusting = new Agent({ connect: { ca: tls.cert } });
    stops.push(() => trusting.close());
    const c = client(up.url, { dispatcher: trusting }, USER, PASS);

    const failed = await c.getManifest('team/app', 'v1', 1 << 20).catch((e: Error) => e);
    expect(httpRealm.requests).toEqual([]);
    expect(failed).toBeInstanceOf(UpstreamUnavailable);
    expect((failed as Error).message).toMatch(/token realm is not https/);

    // The same upstream naming an https realm (its own) is used as before.
    up.setRealm(undefined);
    const fetched = await c.getManifest('team/app', 'v1', 1 << 20);
    expect(fetched.digest).toBe(image.manifest.digest);
    expect(up.tokenRequests).toEqual([{ scope: 'repository:team/app:pull', user: USER, granted: true }]);
  });
});

describe("mirror: redirects into the mirror's own network", () => {
  it('refuses a manifest redirected to another loopback host: nothing is asked there, cached or served', async () => {
    const internal = await started(Trap.start({ host: '127.0.0.2', respond: serveBody(secret.manifest.data, secret.mediaType, secret.manifest.digest) }));
    const up = await started(HostileAuthUpstream.start());
    up.pushImage('team/app', 'v1', image);
    up.redirect('/v2/team/app/manifests/v1', `${internal.url}/secret`);
    up.redirect(`/v2/team/app/manifests/${secret.manifest.digest}`, `${internal.url}/secret`);
    const m = await mirrorOf(up.url);

    for (const ref of ['v1', secret.manifest.digest]) {
      const res = await fetchManifest(m.url, undefined, 'team/app', ref);
      expect(res.status).toBe(503);
      expect(res.json?.errors?.[0]?.code).toBe('UNAVAILABLE');
      expect(res.body.toString()).not.toContain('127.0.0.2');
    }
    expect(internal.requests).toEqual([]);
    await m.settled();
    expect(cachedTag(m.dataDir, 'hostile.test/team/app', 'v1')).toBeUndefined();
    expect(cachedBlob(m.dataDir, secret.manifest.digest)).toBeUndefined();
  });

  it('treats a host name that resolves to loopback as loopback (the upstream on 127.0.0.3, the service on localhost)', async () => {
    // The service holds the very bytes asked for: only the address can tell it from the upstream.
    const internal = await started(Trap.start({ host: '127.0.0.1', respond: serveBody(image.config.data, 'application/octet-stream') }));
    const up = await started(HostileAuthUpstream.start({ host: '127.0.0.3' }));
    up.pushImage('team/app', 'v1', image);
    up.redirect(`/v2/team/app/blobs/${image.config.digest}`, `http://localhost:${internal.port}/config`);
    const m = await mirrorOf(up.url);

    const res = await new RegistryClient(m.url).req(`/v2/team/app/blobs/${image.config.digest}`);
    expect(internal.requests).toEqual([]);
    expect(res.status).toBe(503);
    // The upstream's own content is still served from it.
    const layer = await new RegistryClient(m.url).req(`/v2/team/app/blobs/${image.layers[0].digest}`);
    expect(layer.status).toBe(200);
  });

  it('checks the address each connection is made to, so a name answering loopback on its second lookup (DNS rebinding) gets nothing', async () => {
    const internal = await started(Trap.start({ host: '127.0.0.2', respond: serveBody(secret.manifest.data, secret.mediaType, secret.manifest.digest) }));
    const up = await started(HostileAuthUpstream.start());
    up.pushImage('team/app', 'v1', image);
    up.redirect('/v2/team/app/manifests/v1', `http://rebind.test:${internal.port}/secret`);
    let lookups = 0;
    const resolver = async (hostname: string) => {
      if (hostname !== 'rebind.test') throw Object.assign(new Error(`unknown host ${hostname}`), { code: 'ENOTFOUND' });
      // First the upstream's own address (allowed: its host), then the internal one.
      return [{ address: lookups++ === 0 ? '127.0.0.1' : '127.0.0.2', family: 4 }];
    };
    const c = client(up.url, { resolver, retries: 3, backoffMs: 1 });

    await expect(c.getManifest('team/app', 'v1', 1 << 20)).rejects.toBeInstanceOf(UpstreamUnavailable);
    expect(lookups).toBeGreaterThanOrEqual(2);
    expect(internal.requests).toEqual([]);
  });

  it('tells clients the same thing whether a redirect target is closed, open or refused, and logs the detail', async () => {
    const closedPort = await freePort();
    const open = await started(Trap.start({ respond: (req) => {
          req.socket.destroy();
        } }));
    const up = await started(HostileAuthUpstream.start());
    up.pushImage('team/app', 'v1', image);
    up.redirect('/v2/team/closed/manifests/v1', `http://127.0.0.1:${closedPort}/x`);
    up.redirect('/v2/team/open/manifests/v1', `${open.url}/x`);
    up.redirect('/v2/team/refused/manifests/v1', `http://127.0.0.2:${open.port}/x`);
    const log = capturingLogger();
    const c = client(up.url, { logger: log.logger });

    const messages: string[] = [];
    for (const repo of ['team/closed', 'team/open']) {
      const err = await c.getManifest(repo, 'v1', 1 << 20).catch((e: Error) => e);
      expect(err).toBeInstanceOf(UpstreamUnavailable);
      messages.push((err as Error).message);
    }
    expect(messages[0]).toBe(messages[1]);
    for (const msg of messages) {
      expect(msg).not.toMatch(/ECONNREFUSED|closed|socket|reset/i);
      expect(msg).not.toContain(String(closedPort));
      expect(msg).not.toContain(String(open.port));
    }
    const refused = await c.getManifest('team/refused', 'v1', 1 << 20).catch((e: Error) => e);
    expect((refused as Error).message).not.toContain('127.0.0.2');
    expect(open.requests).toHaveLength(1);
    expect(log.lines()).toContain('ECONNREFUSED');
    expect(log.lines()).toContain(`127.0.0.2:${open.port}`);
  });

  it('follows a redirect to an internal address listed in proxy.internaltargets', async () => {
    const lan = await started(Trap.start({ host: '127.0.0.2', respond: serveBody(image.manifest.data, image.mediaType, image.manifest.digest) }));
    const up = await started(HostileAuthUpstream.start());
    up.pushImage('team/app', 'v1', image);
    up.redirect('/v2/team/app/manifests/v1', `${lan.url}/manifest`);
    const m = await mirrorOf(up.url, { proxy: { internaltargets: ['127.0.0.2/32'] } });

    expect((await verifyPull(m.url, undefined, 'team/app', 'v1')).digest).toBe(image.manifest.digest);
    expect(lan.requests).toHaveLength(1);
    expect(lan.withAuthorization).toEqual([]);
  });

  it('refuses a proxy.internaltargets entry that is not an address or CIDR, naming it', () => {
    const load = (internaltargets: unknown) =>
      loadConfigObject({ storage: { filesystem: { rootdirectory: '/nonexistent' } }, proxy: { remoteurl: 'https://r.example', internaltargets } }, {});
    expect(load(['10.0.5.20', '192.168.1.0/24', 'fd00::/8']).config.proxy?.internaltargets).toEqual(['10.0.5.20', '192.168.1.0/24', 'fd00::/8']);
    for (const bad of ['s3.lan', '10.0.0.0/33', ' 10.0.0.1']) {
      expect(() => load(['10.0.0.1', bad])).toThrow(ConfigError);
      expect(() => load(['10.0.0.1', bad])).toThrow(`proxy.internaltargets.1: must be an IP address or CIDR such as 10.0.5.20 or 192.168.1.0/24, got ${JSON.stringify(bad)}`);
    }
  });

  it('keeps an upstream on loopback (named localhost) working with its own redirects to the same host (another port)', async () => {
    const up = await started(HostileAuthUpstream.start());
    up.pushImage('team/app', 'v1', image);
    const cdn = await started(
      Trap.start({
        respond: (req, res, url) => {
          const blob = [image.config, ...image.layers].find((b) => url.pathname.endsWith(b.digest));
          return blob ? serveBody(blob.data, 'application/octet-stream')(req, res, url) : void res.writeHead(404).end();
        },
      }),
    );
    for (const b of [image.config, ...image.layers]) up.redirect(`/v2/team/app/blobs/${b.digest}`, `${cdn.url}/cdn/${b.digest}`);
    // Named by a host name: the redirect target's address is the one that name resolves to.
    const m = await mirrorOf(`http://localhost:${up.port}`);
    expect((await verifyPull(m.url, undefined, 'team/app', 'v1')).digest).toBe(image.manifest.digest);
    expect(cdn.requests.length).toBeGreaterThanOrEqual(1);
    expect(cdn.withAuthorization).toEqual([]);
  });
});

describe('mirror: a single proxy.remoteurl and containerd ?ns=', () => {
  let up: HostileAuthUpstream;

  afterAll(async () => {
    await up?.stop();
  });

  it('answers any ?ns= with the one remoteurl upstream, and only the listed ones when upstreams is set', async () => {
    up = await HostileAuthUpstream.start();
    up.pushImage('team/app', 'v1', image);
    const single = await started(startMirror({ proxy: { remoteurl: up.url } }));
    const c = new RegistryClient(single.url);
    for (const ns of ['docker.io', 'other.example', up.host]) {
      const res = await c.req(`/v2/team/app/manifests/v1?ns=${ns}`, { headers: { accept: MANIFEST_ACCEPT } });
      expect(res.status, ns).toBe(200);
      expect(res.header('docker-content-digest')).toBe(image.manifest.digest);
    }

    const listed = await started(startMirror({ upstreams: [{ host: 'docker.io', url: up.url }] }));
    const refused = await new RegistryClient(listed.url).req('/v2/team/app/manifests/v1?ns=other.example');
    expect(refused.status).toBe(404);
    expect(errorCodes(refused)).toEqual(['NAME_UNKNOWN']);
  });
});
