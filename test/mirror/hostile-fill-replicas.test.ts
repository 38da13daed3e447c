// One repository's failing or stalled upstream fetch of a blob must not fail
// or stall another repository's pull of it when the mirror runs as replicas
// sharing their fills through Redis (shared/redis-fills.ts): a replica asked
// for the blob by another repository while the first repository's upstream
// has not answered yet fetches it from its own repository's upstream instead
// of following that fill. Two mirror processes on one RGW bucket and one
// Redis, in front of the hostile upstream (test/helpers/hostile-upstream.ts).
import { createHash } from 'node:crypto';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Gate, HostileUpstream } from '../helpers/hostile-upstream.ts';
import { randomBlob } from '../helpers/oci.ts';
import { startRedis, type TestRedis } from '../helpers/redis.ts';
import { createTestBucket, type TestBucket } from '../helpers/s3.ts';
import { type Replica, startReplica } from '../helpers/scale.ts';

/** A blob GET; `boundMs` only keeps a failing test from hanging. */
async function fetchBlob(base: string, repo: string, digest: string, boundMs = 30_000): Promise<{ status: number; digest: string; error?: string }> {
  const hash = createHash('sha256');
  let status = 0;
  try {
    const res = await request(`${base}/v2/${repo}/blobs/${digest}`, { signal: AbortSignal.timeout(boundMs) });
    status = res.statusCode;
    for await (const chunk of res.body) hash.update(chunk as Buffer);
  } catch (err) {
    return { status, digest: `sha256:${hash.digest('hex')}`, error: (err as Error).message };
  }
  return { status, digest: `sha256:${hash.digest('hex')}` };
}

describe('mirror replicas: one repository failing a blob does not fail another repository pulling it on another replica', () => {
  let up: HostileUpstream;
  let redis: TestRedis;
  let bucket: TestBucket;
  let replicas: Replica[] = [];
  const never = new Gate();

  beforeAll(async () => {
    [up, redis, bucket] = await Promise.all([HostileUpstream.start(), startRedis(), createTestBucket('hostile-fill')]);
    const mirror = { proxy: { upstreams: [{ host: 'docker.io', url: up.url }] } };
    replicas = await Promise.all(['h1', 'h2'].map((label) => startReplica({ label, bucket, redis, extra: mirror })));
  });

  afterAll(async () => {
    never.open();
    await Promise.allSettled(replicas.map((r) => r.dispose()));
    await up?.stop();
    await redis?.stop();
    await bucket?.destroy();
  });

  it("a slow 404 on one replica is that repository's answer; the other replica's repository that has the blob gets it", async () => {
    const [r1, r2] = replicas;
    const blob = randomBlob(300_000);
    up.serveBlob('good/app', blob);
    const evil404 = new Gate();
    up.misbehave('evil/notfound-slow', blob.digest, { notFound: true, holdHeaders: evil404 });

    const evil = fetchBlob(r1.url, 'evil/notfound-slow', blob.digest);
    await up.waitFor((e) => e.repo === 'evil/notfound-slow' && e.kind === 'blob');
    const good = fetchBlob(r2.url, 'good/app', blob.digest);
    // The good repository's replica asks the upstream itself, or (following) after the 404.
    await up.waitFor((e) => e.repo === 'good/app' && e.kind === 'blob', 10_000);
    evil404.open();
    expect((await evil).status).toBe(404);
    const got = await good;
    expect(got.status).toBe(200);
    expect(got.digest).toBe(blob.digest);
  });

  it('a stalled upstream answer on one replica does not hold up another repository on the other replica', async () => {
    const [r1, r2] = replicas;
    const blob = randomBlob(200_000);
    up.serveBlob('good/other', blob);
    up.misbehave('evil/stalled', blob.digest, { holdHeaders: never });

    void fetchBlob(r1.url, 'evil/stalled', blob.digest, 20_000);
    await up.waitFor((e) => e.repo === 'evil/stalled' && e.kind === 'blob');
    const good = await fetchBlob(r2.url, 'good/other', blob.digest, 15_000);
    expect(good.error).toBeUndefined();
    expect(good.status).toBe(200);
    expect(good.digest).toBe(blob.digest);
  });
});
