// Uploads across replicas (issue 6): two server processes on one Ceph RGW
// bucket and one Redis, as behind a load balancer that sends each request
// wherever it likes.
//
// - A chunked push whose PATCHes alternate between the replicas, finished on
//   the other one, commits a blob with the right digest, and no replica had to
//   re-read the upload: each one that took over loaded the running SHA-256
//   state the other saved (in Redis; or, without Redis, in the bucket).
// - A replica SIGKILLed in the middle of a PATCH: the client asks the other
//   replica where the upload stands and sends it the rest; the blob commits
//   with the right digest.
// - A replica whose Redis is unreachable refuses to start, naming redis.addr.
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RegistryClient } from '../helpers/client.ts';
import { basicAuth, cleanEnv, freePort, makeTempDir, REPO_ROOT, sleep, writeServerConfig } from '../helpers/process.ts';
import { startRedis, type TestRedis } from '../helpers/redis.ts';
import { createTestBucket, type TestBucket } from '../helpers/s3.ts';
import { MiB, type Replica, startReplica } from '../helpers/scale.ts';

const USER = 'scaler';
const PASSWORD = 'scale-out-pw';
const AUTH = basicAuth(USER, PASSWORD);
const USERS = { [USER]: PASSWORD };

const sha256 = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

interface Step {
  replica: Replica;
  /** PATCH with these bytes, or the final PUT (with these bytes as its body, possibly none). */
  kind: 'patch' | 'put';
  start: number;
  end: number;
}

/** Runs a chunked upload step by step (each on its replica); resolves with the upload id and the final response. */
async function chunkedPush(repo: string, blob: Buffer, steps: Step[]): Promise<{ id: string; location: string }> {
  const first = new RegistryClient(steps[0].replica.url, AUTH);
  const start = await first.req(`/v2/${repo}/blobs/uploads/`, { method: 'POST' });
  expect(start.status, start.text).toBe(202);
  let location = start.header('location') as string;
  expect(location.startsWith('/')).toBe(true); // relative: any replica can take it
  const id = location.split('/').pop() as string;
  const digest = sha256(blob);
  for (const [i, step] of steps.entries()) {
    const client = new RegistryClient(step.replica.url, AUTH);
    const body = blob.subarray(step.start, step.end);
    if (step.kind === 'patch') {
      const res = await client.req(location, {
        method: 'PATCH',
        headers: {
          'content-type': 'application/octet-stream',
          'content-range': `${step.start}-${step.end - 1}`,
          'content-length': String(body.length),
        },
        body,
      });
      expect(res.status, `step ${i} on ${step.replica.label}: ${res.text}`).toBe(202);
      expect(res.header('range')).toBe(`0-${step.end - 1}`);
      location = res.header('location') as string;
    } else {
      const url = `${location}${location.includes('?') ? '&' : '?'}digest=${digest}`;
      const res = await client.req(url, {
        method: 'PUT',
        headers: { 'content-type': 'application/octet-stream', 'content-length': String(body.length) },
        body: body.length > 0 ? body : undefined,
      });
      expect(res.status, `final PUT on ${step.replica.label}: ${res.text}`).toBe(201);
      expect(res.header('docker-content-digest')).toBe(digest);
    }
  }
  return { id, location };
}

/** Hash state events counted by both replicas' /metrics. */
async function hashEvents(replicas: Replica[]): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const event of ['saved', 'loaded', 'missing', 'rehashed']) {
    out[event] = 0;
    for (const r of replicas) out[event] += await r.metric('registry_upload_hash_states_total', { event });
  }
  return out;
}

/** How many times the serving replica changes from one request of the upload to the next (each change is one load). */
function switches(steps: Step[]): number {
  let n = 0;
  for (let i = 1; i < steps.length; i++) if (steps[i].replica !== steps[i - 1].replica) n++;
  return n;
}

async function expectBlob(replica: Replica, repo: string, blob: Buffer): Promise<void> {
  const res = await new RegistryClient(replica.url, AUTH).req(`/v2/${repo}/blobs/${sha256(blob)}`);
  expect(res.status, `${replica.label}: ${res.text.slice(0, 200)}`).toBe(200);
  expect(res.body.length).toBe(blob.length);
  expect(sha256(res.body)).toBe(sha256(blob));
}

describe('scale-out: uploads across two replicas sharing a bucket and Redis', () => {
  let redis: TestRedis;
  let bucket: TestBucket;
  let a: Replica;
  let b: Replica;

  beforeAll(async () => {
    [redis, bucket] = await Promise.all([startRedis(), createTestBucket('scale-uploads')]);
    [a, b] = await Promise.all([
      startReplica({ label: 'a', bucket, redis, users: USERS }),
      startReplica({ label: 'b', bucket, redis, users: USERS }),
    ]);
  });

  afterAll(async () => {
    await Promise.allSettled([a?.dispose(), b?.dispose()]);
    await redis?.stop();
    await bucket?.destroy();
  });

  it('a chunked push alternating between the replicas, finished on the other one, commits the right digest with no re-read', async () => {
    const blob = randomBytes(23 * MiB + 12345);
    const cut = [0, 4 * MiB, 9 * MiB, 13 * MiB + 7, 18 * MiB, 21 * MiB, blob.length];
    // a, b, a, b, b (same replica twice: no load), then the PUT with the last bytes on a.
    const order = [a, b, a, b, b];
    const steps: Step[] = order.map((replica, i) => ({ replica, kind: 'patch', start: cut[i], end: cut[i + 1] }));
    steps.push({ replica: a, kind: 'put', start: cut[5], end: cut[6] });
    const before = await hashEvents([a, b]);

    const { id } = await chunkedPush('team/chunked', blob, steps);

    const after = await hashEvents([a, b]);
    // Every change of replica loaded the state the other one saved; nothing was missing or re-read.
    expect(after.loaded - before.loaded).toBe(switches(steps));
    expect(after.missing - before.missing).toBe(0);
    expect(after.rehashed - before.rehashed).toBe(0);
    expect(after.saved - before.saved).toBeGreaterThanOrEqual(steps.length - 1);
    // The session's state is gone with the session.
    expect(await redis.client.exists(`registry:upload:${id}:sha256`)).toBe(0);
    await expectBlob(a, 'team/chunked', blob);
    await expectBlob(b, 'team/chunked', blob);
  });

  it('the hash state of a session in progress is in Redis, at the offset the upload has reached', async () => {
    const blob = randomBytes(3 * MiB);
    const client = new RegistryClient(a.url, AUTH);
    const start = await client.req('/v2/team/state/blobs/uploads/', { method: 'POST' });
    const location = start.header('location') as string;
    const id = location.split('/').pop() as string;
    const patch = await client.req(location, {
      method: 'PATCH',
      headers: { 'content-type': 'application/octet-stream', 'content-range': `0-${blob.length - 1}`, 'content-length': String(blob.length) },
      body: blob,
    });
    expect(patch.status).toBe(202);
    const stored = await redis.client.getBuffer(`registry:upload:${id}:sha256`);
    expect(stored).not.toBeNull();
    expect(Number(stored!.readBigUInt64BE(0))).toBe(blob.length);
    // b finishes it from that state.
    const before = await hashEvents([a, b]);
    const put = await new RegistryClient(b.url, AUTH).req(`${patch.header('location')}${patch.header('location')!.includes('?') ? '&' : '?'}digest=${sha256(blob)}`, {
      method: 'PUT',
    });
    expect(put.status, put.text).toBe(201);
    const after = await hashEvents([a, b]);
    expect(after.loaded - before.loaded).toBe(1);
    expect(after.rehashed - before.rehashed).toBe(0);
    await expectBlob(a, 'team/state', blob);
  });

  it('a replica killed in the middle of a PATCH: the client resumes on the other replica and the blob commits intact', async () => {
    const victim = await startReplica({ label: 'victim', bucket, redis, users: USERS });
    try {
      const blob = randomBytes(40 * MiB + 333);
      const repo = 'team/crash';
      const client = new RegistryClient(victim.url, AUTH);
      const start = await client.req(`/v2/${repo}/blobs/uploads/`, { method: 'POST' });
      expect(start.status).toBe(202);
      let location = start.header('location') as string;
      const first = blob.subarray(0, 8 * MiB);
      const patch = await client.req(location, {
        method: 'PATCH',
        headers: { 'content-type': 'application/octet-stream', 'content-range': `0-${first.length - 1}`, 'content-length': String(first.length) },
        body: first,
      });
      expect(patch.status).toBe(202);
      location = patch.header('location') as string;

      // The next PATCH (the whole rest) goes out only in part; the client is still sending when the replica dies.
      const rest = blob.subarray(first.length);
      const socket = await partialPatch(victim.url, location, first.length, rest, 12 * MiB);
      // Wait until the other replica sees stored bytes of that PATCH in the bucket, then kill.
      const status = async () => {
        const res = await new RegistryClient(b.url, AUTH).req(location);
        expect(res.status, res.text).toBe(204);
        return Number(/^0-(\d+)$/.exec(res.header('range') ?? '')?.[1] ?? -1) + 1;
      };
      let seen = await status();
      for (let i = 0; i < 600 && seen < first.length + 10 * MiB; i++) {
        await sleep(50);
        seen = await status();
      }
      expect(seen).toBeGreaterThanOrEqual(first.length + 10 * MiB);
      await victim.kill();
      socket.destroy();
      const exit = await victim.exited;
      expect(exit.signal).toBe('SIGKILL');

      // Not committed: nothing under the digest yet.
      expect((await new RegistryClient(b.url, AUTH).req(`/v2/${repo}/blobs/${sha256(blob)}`, { method: 'HEAD' })).status).toBe(404);

      // The client's retry: where does the upload stand (on b), then the rest, then the PUT.
      const offset = await status();
      expect(offset).toBeGreaterThanOrEqual(seen);
      expect(offset).toBeLessThanOrEqual(first.length + 12 * MiB);
      const retry = new RegistryClient(b.url, AUTH);
      const tail = blob.subarray(offset);
      const resumed = await retry.req(location, {
        method: 'PATCH',
        headers: { 'content-type': 'application/octet-stream', 'content-range': `${offset}-${blob.length - 1}`, 'content-length': String(tail.length) },
        body: tail,
      });
      expect(resumed.status, resumed.text).toBe(202);
      const next = resumed.header('location') as string;
      const put = await retry.req(`${next}${next.includes('?') ? '&' : '?'}digest=${sha256(blob)}`, { method: 'PUT' });
      expect(put.status, put.text).toBe(201);
      expect(put.header('docker-content-digest')).toBe(sha256(blob));
      await expectBlob(b, repo, blob);
      await expectBlob(a, repo, blob);
    } finally {
      await victim.dispose();
    }
  });

  it('a replica refuses to start when its Redis cannot be reached, and says which address it tried', async () => {
    const work = makeTempDir('rs-scale-noredis-');
    try {
      const deadPort = await freePort();
      const configFile = writeServerConfig({
        dataDir: path.join(work, 'data'),
        workDir: work,
        extra: { redis: { addr: `127.0.0.1:${deadPort}`, password: 'never-printed-pw', dialtimeout: '2s' } },
      });
      const child = spawn(process.execPath, [path.join(REPO_ROOT, 'server', 'bin', 'registry.mjs'), 'serve', configFile], {
        cwd: REPO_ROOT,
        env: cleanEnv(),
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let output = '';
      child.stdout.on('data', (c: Buffer) => (output += c.toString()));
      child.stderr.on('data', (c: Buffer) => (output += c.toString()));
      const code = await new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
      expect(code).toBe(1);
      expect(output).toContain(`cannot reach redis at 127.0.0.1:${deadPort} (redis.addr)`);
      expect(output).not.toContain('never-printed-pw');
      expect(output).not.toContain('registry listening');
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  });
});

describe('scale-out without Redis: replicas on S3 keep the fast native hash and re-read once at commit', () => {
  let bucket: TestBucket;
  let a: Replica;
  let b: Replica;

  beforeAll(async () => {
    bucket = await createTestBucket('scale-noredis');
    [a, b] = await Promise.all([
      startReplica({ label: 'a', bucket, users: USERS }),
      startReplica({ label: 'b', bucket, users: USERS }),
    ]);
  });

  afterAll(async () => {
    await Promise.allSettled([a?.dispose(), b?.dispose()]);
    await bucket?.destroy();
  });

  it('PATCHes alternating between replicas still commit the right digest, with no hash state saved anywhere', async () => {
    const blob = randomBytes(11 * MiB + 5);
    const cut = [0, 3 * MiB, 7 * MiB, blob.length];
    const steps: Step[] = [
      { replica: a, kind: 'patch', start: cut[0], end: cut[1] },
      { replica: b, kind: 'patch', start: cut[1], end: cut[2] },
      { replica: a, kind: 'patch', start: cut[2], end: cut[3] },
      { replica: b, kind: 'put', start: blob.length, end: blob.length },
    ];
    const before = await hashEvents([a, b]);
    const { id } = await chunkedPushWithProbe('team/nored', blob, steps, async (uploadId) => {
      const keys = await bucket.keys(`docker/registry/v2/repositories/team/nored/_uploads/${uploadId}/hashstates/`);
      expect(keys).toEqual([]);
    });
    const after = await hashEvents([a, b]);
    // The replica that commits has no running hash for bytes another replica received: it re-reads them once.
    expect(after.rehashed - before.rehashed).toBe(1);
    expect(after.loaded - before.loaded).toBe(0);
    expect(await bucket.keys(`docker/registry/v2/repositories/team/nored/_uploads/${id}/`)).toEqual([]);
    await expectBlob(b, 'team/nored', blob);
  });
});

/** chunkedPush, calling `probe(id, offset)` after every PATCH. */
async function chunkedPushWithProbe(
  repo: string,
  blob: Buffer,
  steps: Step[],
  probe: (id: string, offset: number) => Promise<void>,
): Promise<{ id: string }> {
  let id = '';
  for (let i = 0; i < steps.length; i++) {
    if (i === 0) {
      const r = await chunkedPush(repo, blob, steps.slice(0, 1));
      id = r.id;
      await probe(id, steps[0].end);
      continue;
    }
    const step = steps[i];
    const location = `/v2/${repo}/blobs/uploads/${id}`;
    const client = new RegistryClient(step.replica.url, AUTH);
    const body = blob.subarray(step.start, step.end);
    if (step.kind === 'patch') {
      const res = await client.req(location, {
        method: 'PATCH',
        headers: { 'content-type': 'application/octet-stream', 'content-range': `${step.start}-${step.end - 1}`, 'content-length': String(body.length) },
        body,
      });
      expect(res.status, res.text).toBe(202);
      await probe(id, step.end);
    } else {
      const res = await client.req(`${location}?digest=${sha256(blob)}`, {
        method: 'PUT',
        headers: { 'content-type': 'application/octet-stream', 'content-length': String(body.length) },
        body: body.length > 0 ? body : undefined,
      });
      expect(res.status, res.text).toBe(201);
    }
  }
  return { id };
}

/**
 * Starts a PATCH of `rest` (declared in full by Content-Length/Content-Range)
 * over a raw socket and sends only its first `stopAfter` bytes, then keeps the
 * connection open: a client in the middle of its upload.
 */
async function partialPatch(baseUrl: string, location: string, offset: number, rest: Buffer, stopAfter: number): Promise<net.Socket> {
  const url = new URL(baseUrl);
  const socket = net.connect({ host: url.hostname, port: Number(url.port) });
  socket.on('error', () => {});
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  const head = [
    `PATCH ${location} HTTP/1.1`,
    `Host: ${url.host}`,
    `Authorization: ${AUTH}`,
    'Content-Type: application/octet-stream',
    `Content-Range: ${offset}-${offset + rest.length - 1}`,
    `Content-Length: ${rest.length}`,
    '',
    '',
  ].join('\r\n');
  socket.write(head);
  const STEP = 256 * 1024;
  for (let sent = 0; sent < stopAfter; sent += STEP) {
    const piece = rest.subarray(sent, Math.min(sent + STEP, stopAfter));
    if (!socket.write(piece)) await new Promise((resolve) => socket.once('drain', resolve));
  }
  return socket;
}
