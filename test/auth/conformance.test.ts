// Token auth changes who may do what, never what the registry answers: the
// OCI distribution spec's workflows (pull, push monolithic / chunked /
// streamed, mount, content discovery with pagination and referrers, content
// management, the spec's errors) run against a server with htpasswd Basic auth
// and against one with token auth (an admin through the token protocol), and
// each answer (status, digests, media types, ranges, bodies, Location with
// upload ids blanked) must be the same.
import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { errorCodes, RegistryClient, type Response } from '../helpers/client.ts';
import { buildArtifact, buildImage, buildIndex, manifestDescriptor, MT, randomBlob } from '../helpers/oci.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { basicAuth, startTokenServer, TokenClient, type TokenTestServer } from './helpers.ts';

const image = buildImage({ files: [{ 'a.txt': 'conformance\n' }, { 'b.txt': 'second layer\n' }] });
const other = buildImage({ files: [{ 'c.txt': 'other\n' }] });
const index = buildIndex([image, other]);
const artifact = buildArtifact({ artifactType: 'application/vnd.example.sbom', subject: manifestDescriptor(image) });
const big = randomBlob(300_000);
const chunked = randomBlob(100_000);

type Observation = Record<string, unknown>;

function observe(label: string, res: Response): Observation {
  const type = res.header('content-type') ?? '';
  let body: unknown;
  if (res.status >= 400) body = errorCodes(res);
  else if (type.startsWith('application/json') || type === MT.ociIndex) body = res.text ? JSON.parse(res.text) : '';
  else body = res.body.length ? `sha256:${createHash('sha256').update(res.body).digest('hex')}` : '';
  return {
    label,
    status: res.status,
    digest: res.header('docker-content-digest'),
    type: type || undefined,
    range: res.header('range'),
    contentRange: res.header('content-range'),
    location: res.header('location')?.replace(/[0-9a-f-]{36}/g, '<id>').replace(/^https?:\/\/[^/]+/, ''),
    link: res.header('link'),
    subject: res.header('oci-subject'),
    filters: res.header('oci-filters-applied'),
    body,
  };
}

/** The spec's workflows, as one transcript. */
async function workflows(c: RegistryClient): Promise<Observation[]> {
  const out: Observation[] = [];
  const step = async (label: string, path: string, options: Parameters<RegistryClient['req']>[1] = {}) => {
    const res = await c.req(path, options);
    out.push(observe(label, res));
    return res;
  };
  const repo = 'conf/app';
  // Push: monolithic, POST+PUT, chunked, streamed.
  await step('monolithic', `/v2/${repo}/blobs/uploads/?digest=${image.config.digest}`, { method: 'POST', headers: { 'content-type': 'application/octet-stream' }, body: image.config.data });
  const start = await step('post', `/v2/${repo}/blobs/uploads/`, { method: 'POST' });
  await step('put', `${c.resolve(start.header('location')!)}${start.header('location')!.includes('?') ? '&' : '?'}digest=${image.layers[0].digest}`, { method: 'PUT', headers: { 'content-type': 'application/octet-stream' }, body: image.layers[0].data });
  let up = await step('post chunked', `/v2/${repo}/blobs/uploads/`, { method: 'POST' });
  const half = 50_000;
  up = await step('patch 1', c.resolve(up.header('location')!), { method: 'PATCH', headers: { 'content-type': 'application/octet-stream', 'content-range': `0-${half - 1}` }, body: chunked.data.subarray(0, half) });
  await step('patch out of order', c.resolve(up.header('location')!), { method: 'PATCH', headers: { 'content-type': 'application/octet-stream', 'content-range': `${half + 10}-${half + 20}` }, body: chunked.data.subarray(half + 10, half + 21) });
  await step('upload status', c.resolve(up.header('location')!));
  up = await step('patch 2', c.resolve(up.header('location')!), { method: 'PATCH', headers: { 'content-type': 'application/octet-stream', 'content-range': `${half}-${chunked.size - 1}` }, body: chunked.data.subarray(half) });
  const loc = c.resolve(up.header('location')!);
  await step('close chunked', `${loc}${loc.includes('?') ? '&' : '?'}digest=${chunked.digest}`, { method: 'PUT' });
  up = await step('post streamed', `/v2/${repo}/blobs/uploads/`, { method: 'POST' });
  up = await step('patch streamed', c.resolve(up.header('location')!), { method: 'PATCH', headers: { 'content-type': 'application/octet-stream' }, body: big.data });
  const sl = c.resolve(up.header('location')!);
  await step('close streamed', `${sl}${sl.includes('?') ? '&' : '?'}digest=${big.digest}`, { method: 'PUT' });
  await step('wrong digest', `/v2/${repo}/blobs/uploads/?digest=${image.layers[1].digest}`, { method: 'POST', headers: { 'content-type': 'application/octet-stream' }, body: Buffer.from('not that blob') });
  await step('layer 2', `/v2/${repo}/blobs/uploads/?digest=${image.layers[1].digest}`, { method: 'POST', headers: { 'content-type': 'application/octet-stream' }, body: image.layers[1].data });
  for (const b of [other.config, ...other.layers]) await step('other blob', `/v2/${repo}/blobs/uploads/?digest=${b.digest}`, { method: 'POST', headers: { 'content-type': 'application/octet-stream' }, body: b.data });

  // Manifests and an index.
  await step('manifest missing blob', `/v2/${repo}/manifests/broken`, { method: 'PUT', headers: { 'content-type': MT.ociManifest }, body: buildImage().manifest.data });
  await step('manifest', `/v2/${repo}/manifests/v1`, { method: 'PUT', headers: { 'content-type': image.mediaType }, body: image.manifest.data });
  await step('manifest by digest', `/v2/${repo}/manifests/${other.manifest.digest}`, { method: 'PUT', headers: { 'content-type': other.mediaType }, body: other.manifest.data });
  await step('index', `/v2/${repo}/manifests/multi`, { method: 'PUT', headers: { 'content-type': index.mediaType }, body: index.index.data });
  await step('bad manifest', `/v2/${repo}/manifests/bad`, { method: 'PUT', headers: { 'content-type': MT.ociManifest }, body: '{"schemaVersion":' });

  // Pull.
  await step('get manifest', `/v2/${repo}/manifests/v1`, { headers: { accept: MT.ociManifest } });
  await step('head manifest', `/v2/${repo}/manifests/${image.manifest.digest}`, { method: 'HEAD', headers: { accept: MT.ociManifest } });
  await step('get index', `/v2/${repo}/manifests/multi`, { headers: { accept: MT.ociIndex } });
  await step('unknown tag', `/v2/${repo}/manifests/nope`);
  await step('get blob', `/v2/${repo}/blobs/${big.digest}`);
  await step('head blob', `/v2/${repo}/blobs/${chunked.digest}`, { method: 'HEAD' });
  await step('range', `/v2/${repo}/blobs/${big.digest}`, { headers: { range: 'bytes=1000-1999' } });
  await step('unknown blob', `/v2/${repo}/blobs/${randomBlob(8).digest}`);
  await step('bad digest', `/v2/${repo}/blobs/sha256:xyz`);

  // Mount into a second repository; referrers.
  await step('mount', `/v2/conf/copy/blobs/uploads/?mount=${big.digest}&from=${repo}`, { method: 'POST' });
  await step('mount unknown', `/v2/conf/copy/blobs/uploads/?mount=${randomBlob(8).digest}&from=${repo}`, { method: 'POST' });
  for (const b of [artifact.config, ...artifact.layers]) await step('artifact blob', `/v2/${repo}/blobs/uploads/?digest=${b.digest}`, { method: 'POST', headers: { 'content-type': 'application/octet-stream' }, body: b.data });
  await step('artifact', `/v2/${repo}/manifests/${artifact.manifest.digest}`, { method: 'PUT', headers: { 'content-type': artifact.mediaType }, body: artifact.manifest.data });
  await step('referrers', `/v2/${repo}/referrers/${image.manifest.digest}`);
  await step('referrers filtered', `/v2/${repo}/referrers/${image.manifest.digest}?artifactType=application/vnd.example.other`);

  // Content discovery.
  await step('tags', `/v2/${repo}/tags/list`);
  const page = await step('tags n=1', `/v2/${repo}/tags/list?n=1`);
  await step('tags next', page.header('link')!.slice(1, page.header('link')!.indexOf('>')));
  await step('tags unknown repo', '/v2/conf/none/tags/list');
  await step('catalog', '/v2/_catalog');
  await step('catalog n=1', '/v2/_catalog?n=1');
  await step('bad name', '/v2/Conf/App/tags/list');

  // Content management.
  await step('delete tag', `/v2/${repo}/manifests/multi`, { method: 'DELETE' });
  await step('delete manifest', `/v2/${repo}/manifests/${other.manifest.digest}`, { method: 'DELETE' });
  await step('deleted manifest', `/v2/${repo}/manifests/${other.manifest.digest}`);
  await step('delete blob', `/v2/${repo}/blobs/${big.digest}`, { method: 'DELETE' });
  await step('deleted blob', `/v2/${repo}/blobs/${big.digest}`);
  await step('tags after', `/v2/${repo}/tags/list`);
  return out;
}

describe('the spec workflows answer the same with token auth as with Basic auth', () => {
  let basic: TestServer;
  let token: TokenTestServer;
  beforeAll(async () => {
    [basic, token] = await Promise.all([
      startTestServer({ users: { root: 'root-pw' } }),
      startTokenServer({ policy: 'admins: [root]\n', users: { root: 'root-pw' } }),
    ]);
  });
  afterAll(async () => {
    await Promise.all([basic?.stop(), token?.stop()]);
  });

  it('step by step', async () => {
    const viaBasic = await workflows(new RegistryClient(basic.url, basicAuth('root', 'root-pw')));
    const client = new TokenClient(token.url, basicAuth('root', 'root-pw'));
    await client.login('repository:conf/app:pull,push,delete', 'repository:conf/copy:pull,push');
    const viaToken = await workflows(client);
    expect(viaToken).toHaveLength(viaBasic.length);
    for (let i = 0; i < viaBasic.length; i++) expect(viaToken[i], String(viaBasic[i].label)).toEqual(viaBasic[i]);
    // The transcript is not trivially the same: it holds successes and the spec's errors.
    const statuses = new Set(viaBasic.map((o) => o.status));
    for (const s of [200, 201, 202, 206, 400, 404, 416]) expect(statuses.has(s), String(s)).toBe(true);
  });
});
