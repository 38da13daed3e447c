// Online garbage collection under load (issue 4's key test): round after
// round, pushes of images that share layers across several repositories,
// tag and manifest deletes, pulls, and GC runs (with and without
// deleteUntagged, grace period 0) all run at once. A push may be refused with
// MANIFEST_BLOB_UNKNOWN when GC removed a blob between the client's HEAD and
// its PUT; the client then pushes again, as real clients do. What must never
// happen: a tag whose manifest or blobs are missing. Afterwards every tag
// pulls with the right digests, and one more GC leaves exactly the blobs
// that the stored manifests name.
import { randomInt } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RegistryClient } from '../helpers/client.ts';
import { type Blob, buildArtifact, buildIndex, type Image, type IndexImage, MT } from '../helpers/oci.ts';
import { dataDir, startTestServer, type TestServer } from '../helpers/server.ts';
import { composeImage, gzLayer, pullAndVerify, pushImageLikeClient, pushIndexLikeClient, withPushRetry } from '../helpers/ops/images.ts';
import { ADMIN, adminReq } from '../helpers/ops/servers.ts';
import { blobFile, inventory, revisions, storedBlobs, tags } from '../helpers/ops/store.ts';

const ROUNDS = 15;
const REPOS = ['app', 'team/api', 'team/web'];

interface Pushed {
  repo: string;
  tag: string;
  digest: string;
  /** Never deleted: referrers hang off these, and they are pulled while GC runs. */
  keeper: boolean;
}

describe('online GC under concurrent pushes, deletes and pulls', () => {
  let server: TestServer;
  let client: RegistryClient;

  beforeAll(async () => {
    server = await startTestServer({ extra: { ...ADMIN, gc: { graceperiod: '0s' } } });
    client = new RegistryClient(server.url, server.auth);
  });
  afterAll(() => server.stop());

  it(`${ROUNDS} rounds leave every tag pullable and, after a final GC, no unreferenced blob`, async () => {
    const pool: Blob[] = Array.from({ length: 8 }, (_, i) => gzLayer(1500 + i * 700));
    const pick = (n: number) => {
      const chosen = new Set<Blob>();
      while (chosen.size < n) chosen.add(pool[randomInt(pool.length)]);
      return [...chosen];
    };
    const live = new Map<string, Pushed>(); // "repo:tag" → what it must point at
    const deleted = new Set<string>();
    const referrers: Array<{ repo: string; subject: string; digest: string }> = [];
    let retries = 0;
    let gcRuns = 0;
    let manifestsCollected = 0;
    let blobsCollected = 0;

    const push = async (repo: string, tag: string, what: Image | IndexImage, keeper: boolean) => {
      retries += await withPushRetry(() =>
        'index' in what ? pushIndexLikeClient(client, repo, tag, what) : pushImageLikeClient(client, repo, tag, what),
      );
      const digest = 'index' in what ? what.index.digest : what.manifest.digest;
      live.set(`${repo}:${tag}`, { repo, tag, digest, keeper });
    };
    const gc = async (deleteUntagged: boolean) => {
      await new Promise((r) => setTimeout(r, randomInt(25)));
      const res = await adminReq(server, 'POST', `/admin/gc?deleteuntagged=${deleteUntagged}`);
      expect(res.status, res.text).toBe(200);
      const result = res.json();
      gcRuns++;
      manifestsCollected += result.manifestsDeleted;
      blobsCollected += result.blobsDeleted;
    };

    for (let round = 0; round < ROUNDS; round++) {
      const ops: Promise<unknown>[] = [];
      // Pushes: two images per repository (pool layers + one of their own), one keeper per round.
      REPOS.forEach((repo, r) => {
        for (let i = 0; i < 2; i++) {
          const image = composeImage([...pick(2), gzLayer(800)]);
          ops.push(push(repo, `r${round}-${i}`, image, r === 0 && i === 0));
        }
      });
      // A multi-arch index (children by digest, untagged until the index lands) in a rotating repository.
      const indexRepo = REPOS[round % REPOS.length];
      const index = buildIndex([composeImage([...pick(1), gzLayer(500)]), composeImage([...pick(1), gzLayer(500)])]);
      (index.images[1].platform as { architecture: string }).architecture = 'arm64';
      ops.push(push(indexRepo, `idx-${round}`, index, false));
      // A referrer (pushed by digest) of an earlier keeper.
      const keepers = [...live.values()].filter((p) => p.keeper);
      if (keepers.length > 0) {
        const subject = keepers[randomInt(keepers.length)];
        const subjectSize = (await client.req(`/v2/${subject.repo}/manifests/${subject.digest}`)).body.length;
        const real = buildArtifact({
          artifactType: 'application/vnd.test.signature',
          subject: { mediaType: MT.ociManifest, digest: subject.digest, size: subjectSize },
        });
        ops.push(
          (async () => {
            retries += await withPushRetry(() => pushImageLikeClient(client, subject.repo, real.manifest.digest, real));
            referrers.push({ repo: subject.repo, subject: subject.digest, digest: real.manifest.digest });
          })(),
        );
      }
      // Deletes of earlier, non-keeper tags: one by tag, one by digest.
      const candidates = [...live.values()].filter((p) => !p.keeper);
      for (const how of ['tag', 'digest'] as const) {
        if (candidates.length === 0) break;
        const victim = candidates.splice(randomInt(candidates.length), 1)[0];
        live.delete(`${victim.repo}:${victim.tag}`);
        deleted.add(`${victim.repo}:${victim.tag}`);
        ops.push(
          client.req(`/v2/${victim.repo}/manifests/${how === 'tag' ? victim.tag : victim.digest}`, { method: 'DELETE' }).then((res) => {
            expect(res.status, `round ${round}: DELETE ${victim.repo}:${victim.tag} by ${how}: ${res.text}; tag now ${tags(dataDir(server), victim.repo).get(victim.tag)}, revision ${revisions(dataDir(server), victim.repo).includes(victim.digest)}`).toBe(202);
          }),
        );
      }
      // Pulls of keepers from earlier rounds, while everything else goes on.
      for (const k of keepers.slice(-3)) ops.push(pullAndVerify(client, k.repo, k.tag));
      // GC runs, with and without deleteUntagged.
      ops.push(gc(round % 2 === 0), gc(round % 2 === 1), gc(true));

      await Promise.all(ops);
      // Between rounds the store is consistent: no tag or manifest points at anything missing.
      expect(inventory(dataDir(server)).problems, `after round ${round}`).toEqual([]);
    }

    // Every tag still there pulls, with the digest it was pushed with; deleted ones are gone.
    for (const p of live.values()) {
      const pulled = await pullAndVerify(client, p.repo, p.tag);
      expect(pulled.digest, `${p.repo}:${p.tag}`).toBe(p.digest);
    }
    for (const repo of REPOS) {
      const listed = (await client.req(`/v2/${repo}/tags/list`)).json().tags as string[];
      expect(listed.sort()).toEqual([...live.values()].filter((p) => p.repo === repo).map((p) => p.tag).sort());
    }
    for (const key of deleted) {
      const [repo, tag] = key.split(':');
      expect((await client.req(`/v2/${repo}/manifests/${tag}`)).status, key).toBe(404);
    }
    // Referrers of keepers survive every deleteUntagged run.
    for (const r of referrers) {
      const listed = (await client.req(`/v2/${r.repo}/referrers/${r.subject}`)).json().manifests.map((m: { digest: string }) => m.digest);
      expect(listed, `referrer ${r.digest} of ${r.repo}@${r.subject}`).toContain(r.digest);
      await pullAndVerify(client, r.repo, r.digest);
    }

    // A final GC leaves exactly what the stored manifests name.
    await gc(true);
    const data = dataDir(server);
    const { referenced, problems } = inventory(data);
    expect(problems).toEqual([]);
    expect([...storedBlobs(data)].sort()).toEqual([...referenced].sort());
    // And, with deleteUntagged, only tagged manifests, their children and referrers remain.
    const expectedRevisions = new Set<string>();
    for (const p of live.values()) expectedRevisions.add(`${p.repo}@${p.digest}`);
    for (const r of referrers) expectedRevisions.add(`${r.repo}@${r.digest}`);
    for (const repo of REPOS) {
      for (const d of revisions(data, repo)) {
        if (expectedRevisions.has(`${repo}@${d}`)) continue;
        // Otherwise it must be a child of a tagged index in the same repository.
        const parent = [...tags(data, repo).values()].some((top) => {
          const doc = JSON.parse(readFileSync(blobFile(data, top), 'utf8'));
          return (doc.manifests ?? []).some((m: { digest: string }) => m.digest === d);
        });
        expect(parent, `${repo}@${d} is neither tagged, a child of a tagged index, nor a referrer`).toBe(true);
      }
    }
    // The load really exercised GC: manifests and blobs were collected while pushes went on.
    expect(gcRuns).toBe(ROUNDS * 3 + 1);
    expect(manifestsCollected).toBeGreaterThan(0);
    expect(blobsCollected).toBeGreaterThan(0);
    console.info(`online GC: ${gcRuns} runs, ${manifestsCollected} manifests and ${blobsCollected} blobs collected, ${retries} push retries`);
  });
});
