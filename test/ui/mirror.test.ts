// The web UI in mirror mode: it shows what the cache holds, reads only the
// cache (looking never makes the mirror ask its upstream), and offers no deletes.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RegistryClient } from '../helpers/client.ts';
import { MANIFEST_ACCEPT } from '../helpers/clients.ts';
import { type LocalMirror, startMirror } from '../helpers/mirror/mirror.ts';
import { FakeUpstream } from '../helpers/mirror/upstream.ts';
import { buildImage, buildIndex } from '../helpers/oci.ts';

describe('web UI on a mirror', () => {
  let hub: FakeUpstream;
  let mirror: LocalMirror;

  beforeAll(async () => {
    hub = await FakeUpstream.start();
    await hub.pushIndex('org/multi', 'latest', buildIndex([buildImage({ architecture: 'amd64' }), buildImage({ architecture: 'arm64' })]));
    await hub.pushImage('org/notpulled', 'v1', buildImage());
    mirror = await startMirror({ upstreams: [{ host: 'docker.io', url: hub.url }] });
  }, 60_000);

  afterAll(async () => {
    await mirror?.stop();
    await hub?.dispose();
  });

  it('lists what was pulled, with the platforms of an index, and shows its image page, without asking the upstream', async () => {
    const client = new RegistryClient(mirror.url);
    expect((await client.req('/v2/org/multi/manifests/latest', { headers: { accept: MANIFEST_ACCEPT } })).status).toBe(200);
    await mirror.settled();
    await hub.sync();
    const asked = hub.requests().length;

    const page = await (await fetch(`${mirror.url}/ui/api/repositories`)).json();
    const names = page.repositories.map((r: { name: string }) => r.name);
    expect(names.some((n: string) => n.endsWith('org/multi'))).toBe(true);
    expect(names.some((n: string) => n.includes('notpulled'))).toBe(false);
    const name = names.find((n: string) => n.endsWith('org/multi'));
    const tags = await (await fetch(`${mirror.url}/ui/api/tags?name=${encodeURIComponent(name)}`)).json();
    expect(tags.tags[0].tag).toBe('latest');
    expect(tags.tags[0].platforms.map((p: { architecture: string }) => p.architecture)).toEqual(['amd64', 'arm64']);
    expect(tags.canDelete).toBe(false);
    const html = await (await fetch(`${mirror.url}/ui/repo?name=${encodeURIComponent(name)}`)).text();
    expect(html).not.toContain('Delete tag');
    // The image pages read the cache too: the index is there, its platforms' manifests were never pulled.
    const image = await fetch(`${mirror.url}/ui/image?${new URLSearchParams({ name, reference: 'latest' })}`);
    expect(image.status).toBe(200);
    expect(await image.text()).toContain('linux/arm64');
    const child = await fetch(`${mirror.url}/ui/image?${new URLSearchParams({ name, reference: tags.tags[0].platforms[0].digest })}`);
    expect(child.status).toBe(404);

    await hub.sync();
    expect(hub.requests().length).toBe(asked);
  });
});
