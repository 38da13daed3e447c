// The repository list at scale and what it says of each repository: tag count,
// total size (a blob shared by tags counted once) and last push, kept and
// invalidated by pushes and deletes; a few thousand repositories paged on the
// server from a catalog read once; a repository of 1200 tags paged 500 at a
// time. The repositories and tags are made cheaply, as copies of a pushed one's
// tag and revision links in the data directory (distribution's layout),
// before the server reads its catalog.
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RegistryClient } from '../helpers/client.ts';
import { buildImage, type Image } from '../helpers/oci.ts';
import { dataDir, startTestServer, type TestServer } from '../helpers/server.ts';

const REPOS = 3000;
const TAGS = 1200;

interface Summary {
  name: string;
  tags: number;
  size: number;
  lastPush?: string;
}
interface Listing {
  repositories: Summary[];
  next?: string;
}

function imageBytes(image: Image): number {
  return image.manifest.size + image.config.size + image.layers.reduce((n, l) => n + l.size, 0);
}

/** Every file under `dir`: relative path → content. */
function filesUnder(dir: string): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  for (const entry of readdirSync(dir, { recursive: true, withFileTypes: true })) {
    if (entry.isFile()) out.set(path.relative(dir, path.join(entry.parentPath, entry.name)), readFileSync(path.join(entry.parentPath, entry.name)));
  }
  return out;
}

function writeFiles(dir: string, files: Map<string, Buffer>): void {
  for (const [rel, content] of files) {
    mkdirSync(path.dirname(path.join(dir, rel)), { recursive: true });
    writeFileSync(path.join(dir, rel), content);
  }
}

describe('web UI: the repository list at scale', () => {
  let server: TestServer;
  let client: RegistryClient;
  let seed: Image;
  let catalogReads = 0;
  const repositories = () => path.join(dataDir(server), 'docker/registry/v2/repositories');
  const list = async (query: string): Promise<Listing> => (await fetch(`${server.url}/ui/api/repositories?${query}`)).json() as Promise<Listing>;

  beforeAll(async () => {
    server = await startTestServer({ anonymousPull: true });
    client = new RegistryClient(server.url, server.auth);
    seed = buildImage();
    await client.pushImage('bulk/seed', 'v1', seed);
    // REPOS repositories holding the same image, and a repository of TAGS tags: copies of the seed's links.
    // What the catalog and a summary read: the tag's link and the manifest's revision link (the blobs are the seed's).
    const links = new Map([...filesUnder(path.join(repositories(), 'bulk/seed'))].filter(([rel]) => /_manifests\/(revisions|tags\/v1\/current)\//.test(rel)));
    for (let i = 0; i < REPOS; i++) writeFiles(path.join(repositories(), `bulk/r-${String(i).padStart(4, '0')}`), links);
    writeFiles(path.join(repositories(), 'many/tags'), links);
    const tag = new Map([...filesUnder(path.join(repositories(), 'bulk/seed/_manifests/tags/v1'))].filter(([rel]) => rel.startsWith('current/')));
    for (let i = 0; i < TAGS; i++) writeFiles(path.join(repositories(), `many/tags/_manifests/tags/t-${String(i).padStart(4, '0')}`), tag);
    // Counts how often the UI reads the whole catalog.
    const catalog = server.registry.catalog.bind(server.registry);
    server.registry.catalog = (page) => {
      catalogReads++;
      return catalog(page);
    };
  }, 120_000);
  afterAll(() => server?.stop());

  it('pages through every repository with its tags, size and last push, reading the catalog once, not per page', async () => {
    const first = await list('');
    expect(first.repositories).toHaveLength(50);
    expect(first.repositories[0]).toMatchObject({ name: 'bulk/r-0000', tags: 1, size: imageBytes(seed) });
    expect(Number.isNaN(Date.parse(first.repositories[0].lastPush!))).toBe(false);
    const names: string[] = [];
    let last: string | undefined;
    let pages = 0;
    while (pages++ < 100) {
      const page = await list(`n=200${last ? `&last=${encodeURIComponent(last)}` : ''}`);
      names.push(...page.repositories.map((r) => r.name));
      if (!page.next) break;
      last = page.next;
    }
    expect(names).toHaveLength(REPOS + 2);
    expect(names).toEqual([...names].sort());
    expect(new Set(names).size).toBe(names.length);
    const found = await list('q=r-29&n=200');
    expect(found.repositories.map((r) => r.name)).toEqual(Array.from({ length: 100 }, (_, i) => `bulk/r-29${String(i).padStart(2, '0')}`));
    expect(found.next).toBeUndefined();
    // Read once and kept (again only if this took longer than the 30 s it is kept for), not once per page.
    expect(pages).toBeGreaterThan(15);
    expect(catalogReads).toBeLessThan(pages / 4);

    // A push to a new repository is listed at once (the kept catalog is read again).
    const reads = catalogReads;
    await client.pushImage('bulk/r-9999', 'v1', buildImage());
    // The push is seen once the server is done with it, which may be a moment after the client has its answer.
    await server.idle();
    expect((await list('q=r-9999')).repositories.map((r) => r.name)).toEqual(['bulk/r-9999']);
    expect(catalogReads).toBe(reads + 1);
  });

  it('shows a push and a delete at once: a shared layer counts once, the newest push is the last push', async () => {
    expect((await list('q=bulk/seed')).repositories).toEqual([expect.objectContaining({ name: 'bulk/seed', tags: 1, size: imageBytes(seed) })]);
    await client.pushImage('bulk/seed', 'v1-again', seed);
    const other = buildImage();
    await client.pushImage('bulk/seed', 'v2', other);
    await server.idle();
    const [after] = (await list('q=bulk/seed')).repositories;
    expect(after).toMatchObject({ tags: 3, size: imageBytes(seed) + imageBytes(other) });
    const pushedAt = Date.parse(after.lastPush!);
    expect(pushedAt).toBeGreaterThan(Date.parse((await list('q=bulk/r-0000')).repositories[0].lastPush!));

    expect((await client.req('/v2/bulk/seed/manifests/v2', { method: 'DELETE' })).status).toBe(202);
    await server.idle();
    expect((await list('q=bulk/seed')).repositories[0]).toMatchObject({ tags: 2, size: imageBytes(seed) });
  });

  it('pages a repository of 1200 tags 500 at a time, by name', async () => {
    const tags = async (last?: string) =>
      (await (await fetch(`${server.url}/ui/api/tags?${new URLSearchParams({ name: 'many/tags', ...(last ? { last } : {}) })}`)).json()) as {
        tags: Array<{ tag: string; digest: string }>;
        omitted: number;
        next?: string;
        paged: boolean;
      };
    const all = [...Array.from({ length: TAGS }, (_, i) => `t-${String(i).padStart(4, '0')}`), 'v1'];
    const one = await tags();
    expect(one).toMatchObject({ paged: true, omitted: all.length - 500, next: all[499] });
    expect(one.tags.map((t) => t.tag)).toEqual(all.slice(0, 500));
    expect(one.tags[0].digest).toBe(seed.manifest.digest);
    const two = await tags(one.next);
    expect(two.tags.map((t) => t.tag)).toEqual(all.slice(500, 1000));
    const three = await tags(two.next);
    expect(three.tags.map((t) => t.tag)).toEqual(all.slice(1000));
    expect(three).toMatchObject({ omitted: 0 });
    expect(three.next).toBeUndefined();

    const html = await (await fetch(`${server.url}/ui/repo?${new URLSearchParams({ name: 'many/tags', last: one.next! })}`)).text();
    expect(html).toContain('>t-0500<');
    expect(html).not.toContain('>t-0499<');
    expect(html).toContain(`href="/ui/repo?name=many%2Ftags&#38;last=${two.next}" rel="next">Next tags</a> (201 more)`);
  });
});
