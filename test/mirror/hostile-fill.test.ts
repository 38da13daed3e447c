// Cache fills against a hostile upstream (test/helpers/hostile-upstream.ts):
// - one repository's failing or stalled fetch of a blob must not fail or
//   stall another repository's pull of the same blob (fills are shared by
//   digest, the failures of a repository are its own);
// - a body trickled a byte at a time meets an overall deadline, and a body
//   larger than the manifest declares is refused or cut off, not written;
// - a Range request during a fill never gets a complete 206 of bytes that
//   have not been verified yet.
// Waits are on what the upstream saw (its exchanges), never on time; the
// bounds given to waits only matter when a test fails.
import { createHash } from 'node:crypto';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fetchManifest } from '../helpers/clients.ts';
import { Gate, HostileUpstream } from '../helpers/hostile-upstream.ts';
import { randomImage } from '../helpers/mirror/images.ts';
import { cachedBlob, type LocalMirror, startMirror } from '../helpers/mirror/mirror.ts';
import { randomBlob, sha256 } from '../helpers/oci.ts';

const MiB = 1024 * 1024;

interface Fetched {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  /** sha256 of the bytes received, complete or not. */
  digest: string;
  size: number;
  /** Set when the response did not arrive whole (the connection was cut, or the bound passed). */
  error?: string;
}

/** A blob GET through the mirror; `boundMs` only keeps a failing test from hanging. */
async function fetchBlob(base: string, repo: string, digest: string, options: { range?: string; boundMs?: number } = {}): Promise<Fetched> {
  const hash = createHash('sha256');
  let size = 0;
  let status = 0;
  let headers: Fetched['headers'] = {};
  try {
    const res = await request(`${base}/v2/${repo}/blobs/${digest}`, {
      headers: options.range ? { range: options.range } : {},
      signal: AbortSignal.timeout(options.boundMs ?? 30_000),
    });
    status = res.statusCode;
    headers = res.headers;
    for await (const chunk of res.body) {
      hash.update(chunk as Buffer);
      size += (chunk as Buffer).length;
    }
  } catch (err) {
    return { status, headers, digest: `sha256:${hash.digest('hex')}`, size, error: (err as Error).message || String(err) };
  }
  return { status, headers, digest: `sha256:${hash.digest('hex')}`, size };
}

describe('mirror: one repository failing a blob does not fail another repository pulling it', () => {
  let up: HostileUpstream;
  let mirror: LocalMirror;
  const never = new Gate();

  beforeAll(async () => {
    up = await HostileUpstream.start();
    mirror = await startMirror({ upstreams: [{ host: 'docker.io', url: up.url }] });
  });

  afterAll(async () => {
    never.open();
    await mirror?.stop();
    await up?.stop();
  });

  it("a slow 404 for one repository is that repository's answer; a repository that has the blob gets it (distribution: 200)", async () => {
    const blob = randomBlob(300_000);
    up.serveBlob('good/app', blob);
    const evil404 = new Gate();
    const goodAnswer = new Gate();
    up.misbehave('evil/notfound-slow', blob.digest, { notFound: true, holdHeaders: evil404 });
    up.misbehave('good/app', blob.digest, { holdHeaders: goodAnswer });

    const evil = fetchBlob(mirror.url, 'evil/notfound-slow', blob.digest);
    await up.waitFor((e) => e.repo === 'evil/notfound-slow' && e.kind === 'blob');
    const good = fetchBlob(mirror.url, 'good/app', blob.digest);
    // The good repository asks the upstream itself (it waited on the evil fetch before).
    const goodAsked = await up.waitFor((e) => e.repo === 'good/app' && e.kind === 'blob', 10_000);
    // The evil repository's 404 comes first, while the good repository's answer is still on its way.
    evil404.open();
    const evilGot = await evil;
    expect(evilGot.status).toBe(404);
    goodAnswer.open();
    const goodGot = await good;
    expect(goodGot.status).toBe(200);
    expect(goodGot.digest).toBe(blob.digest);
    expect(goodAsked).toBeDefined();
    await mirror.settled();
    expect(cachedBlob(mirror.dataDir, blob.digest)?.equals(blob.data)).toBe(true);
  });

  it('a stalled upstream answer for one repository does not hold up another repository that has the blob', async () => {
    const blob = randomBlob(200_000);
    up.serveBlob('good/other', blob);
    up.misbehave('evil/stalled', blob.digest, { holdHeaders: never });

    const evil = fetchBlob(mirror.url, 'evil/stalled', blob.digest, { boundMs: 20_000 });
    await up.waitFor((e) => e.repo === 'evil/stalled' && e.kind === 'blob');
    // Before: this waited for the stalled fetch (undici's 30 s headers timeout, three retries: minutes).
    const good = await fetchBlob(mirror.url, 'good/other', blob.digest, { boundMs: 15_000 });
    expect(good.error).toBeUndefined();
    expect(good.status).toBe(200);
    expect(good.digest).toBe(blob.digest);
    // The blob is shared by digest: the stalled repository's client gets the verified bytes too.
    const evilGot = await evil;
    expect(evilGot.status).toBe(200);
    expect(evilGot.digest).toBe(blob.digest);
  });

  it("cancels the losing repository's upstream request once another repository's answer won, instead of leaving it to time out", async () => {
    const blob = randomBlob(150_000);
    up.serveBlob('good/third', blob);
    up.misbehave('evil/stalled-too', blob.digest, { holdHeaders: never });
    const isLoser = (e: { repo?: string; kind: string }) => e.repo === 'evil/stalled-too' && e.kind === 'blob';

    const evil = fetchBlob(mirror.url, 'evil/stalled-too', blob.digest, { boundMs: 20_000 });
    await up.waitFor(isLoser);
    const good = await fetchBlob(mirror.url, 'good/third', blob.digest, { boundMs: 15_000 });
    expect(good.status).toBe(200);
    expect(good.digest).toBe(blob.digest);
    // Before: the request stayed open until undici's 30 s headers timeout (and was retried after it).
    const cut = await up.waitFor((e) => isLoser(e) && e.state === 'aborted', 10_000);
    expect(cut).toBeDefined();
    expect(up.exchanges.filter(isLoser)).toHaveLength(1);
    // Its client was served by the winning answer all the same.
    const evilGot = await evil;
    expect(evilGot.status).toBe(200);
    expect(evilGot.digest).toBe(blob.digest);
  });
});

describe('mirror: slow and oversized upstream bodies', () => {
  let up: HostileUpstream;
  let mirror: LocalMirror;

  beforeAll(async () => {
    up = await HostileUpstream.start();
    // A fill may take 1 s plus 1 s per MiB: the trickle below would take 200 s.
    mirror = await startMirror({ upstreams: [{ host: 'docker.io', url: up.url }], proxy: { filltimeout: '1s', fillminrate: '1MiB' } });
  });

  afterAll(async () => {
    await mirror?.stop();
    await up?.stop();
  });

  it('gives up on a body trickled a byte at a time at the deadline scaled to its size (proxy.filltimeout, proxy.fillminrate)', async () => {
    const blob = randomBlob(1000);
    up.serveBlob('slow/app', blob);
    up.misbehave('slow/app', blob.digest, { trickle: { bytes: 1, everyMs: 200 } });
    const got = fetchBlob(mirror.url, 'slow/app', blob.digest, { boundMs: 40_000 });
    // The mirror hangs up on the upstream (before: the body timeout restarted with every byte).
    const cut = await up.waitFor((e) => e.repo === 'slow/app' && e.kind === 'blob' && e.state === 'aborted', 20_000);
    expect(cut?.bytesSent).toBeLessThan(blob.size);
    const client = await got;
    expect(client.status).toBe(200);
    expect(client.error).toBeDefined();
    expect(client.size).toBeLessThan(blob.size);
    await mirror.settled();
    expect(cachedBlob(mirror.dataDir, blob.digest)).toBeUndefined();
  }, 90_000);

  it('refuses up front a Content-Length larger than the size the manifest declares (the upstream claims 100 GB)', async () => {
    const image = randomImage([64 * 1024]);
    const layer = image.layers[0];
    up.serveImage('big/app', 'v1', image);
    up.misbehave('big/app', layer.digest, { contentLength: 100_000_000_000, padTo: 64 * MiB });
    expect((await fetchManifest(mirror.url, undefined, 'big/app', 'v1')).status).toBe(200);

    const head = await request(`${mirror.url}/v2/big/app/blobs/${layer.digest}`, { method: 'HEAD' });
    await head.body.dump();
    expect(head.statusCode).toBe(503);
    const got = await fetchBlob(mirror.url, 'big/app', layer.digest);
    expect(got.status).toBe(503);
    expect(got.headers['content-length']).not.toBe('100000000000');
    const answered = await up.waitFor((e) => e.repo === 'big/app' && e.kind === 'blob' && e.method === 'GET' && e.state !== 'pending');
    expect(answered?.state).toBe('aborted');
    expect(answered?.bytesSent).toBeLessThan(64 * MiB);
    await mirror.settled();
    expect(cachedBlob(mirror.dataDir, layer.digest)).toBeUndefined();
  });

  it('stops reading a chunked body (no Content-Length) once it passes the size the manifest declares', async () => {
    const image = randomImage([64 * 1024]);
    const layer = image.layers[0];
    up.serveImage('big/chunked', 'v1', image);
    up.misbehave('big/chunked', layer.digest, { contentLength: 'none', padTo: 64 * MiB });
    expect((await fetchManifest(mirror.url, undefined, 'big/chunked', 'v1')).status).toBe(200);

    const got = await fetchBlob(mirror.url, 'big/chunked', layer.digest);
    expect(got.status).toBe(503);
    const answered = await up.waitFor((e) => e.repo === 'big/chunked' && e.kind === 'blob' && e.state !== 'pending');
    // Cut off (what the socket took is the declared size plus the kernel's buffers), not read to its end.
    expect(answered?.state).toBe('aborted');
    expect(answered?.bytesSent).toBeLessThan(64 * MiB);
    await mirror.settled();
    expect(cachedBlob(mirror.dataDir, layer.digest)).toBeUndefined();
  });
});

describe('mirror: Range requests while a blob is being filled', () => {
  let up: HostileUpstream;
  let mirror: LocalMirror;

  beforeAll(async () => {
    up = await HostileUpstream.start();
    mirror = await startMirror({ upstreams: [{ host: 'docker.io', url: up.url }] });
  });

  afterAll(async () => {
    await mirror?.stop();
    await up?.stop();
  });

  it('never completes a 206 with bytes that fail verification: the response is cut off', async () => {
    const blob = randomBlob(4 * MiB);
    const gate = new Gate();
    up.serveBlob('range/bad', blob);
    // The wrong byte is far past the range asked for: only the digest check can tell.
    up.misbehave('range/bad', blob.digest, { flipByteAt: -1, holdBodyAfter: { bytes: MiB, gate } });
    const got = fetchBlob(mirror.url, 'range/bad', blob.digest, { range: 'bytes=0-99' });
    await up.waitFor((e) => e.repo === 'range/bad' && e.held);
    gate.open();
    const client = await got;
    expect(client.status).toBe(206);
    expect(client.error).toBeDefined();
    expect(client.size).toBeLessThan(100);
    await mirror.settled();
    expect(cachedBlob(mirror.dataDir, blob.digest)).toBeUndefined();
  });

  it('serves the range whole once the blob is verified', async () => {
    const blob = randomBlob(4 * MiB);
    const gate = new Gate();
    up.serveBlob('range/good', blob);
    up.misbehave('range/good', blob.digest, { holdBodyAfter: { bytes: MiB, gate } });
    const got = fetchBlob(mirror.url, 'range/good', blob.digest, { range: 'bytes=100-1099' });
    await up.waitFor((e) => e.repo === 'range/good' && e.held);
    gate.open();
    const client = await got;
    expect(client.error).toBeUndefined();
    expect(client.status).toBe(206);
    expect(client.headers['content-range']).toBe(`bytes 100-1099/${blob.size}`);
    expect(client.digest).toBe(sha256(blob.data.subarray(100, 1100)));
  });
});
