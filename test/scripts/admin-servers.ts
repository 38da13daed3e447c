// Our registry server with its admin listener, for the gc and prune scripts'
// tests: a private registry, and a mirror whose upstream is a private one.
import { existsSync } from 'node:fs';
import * as path from 'node:path';
import { RegistryClient } from '../helpers/client.ts';
import { buildImage, type Image, randomBlob } from '../helpers/oci.ts';
import { dataDir, startTestServer, TEST_PASSWORD, TEST_USER, type TestServer } from '../helpers/server.ts';

export const ADMIN_TOKEN = 'adm-9f8e7d6c5b4a39281706';

export interface AdminServer extends TestServer {
  adminUrl: string;
}

function withAdmin(s: TestServer): AdminServer {
  const adminUrl = (s as TestServer & { adminUrl?: string }).adminUrl;
  if (!adminUrl) throw new Error('the server started without its admin listener');
  return Object.assign(s, { adminUrl });
}

/** A private registry with an admin listener (token required) and no GC grace period. */
export async function startPrivate(extra: Record<string, unknown> = {}): Promise<AdminServer> {
  return withAdmin(
    await startTestServer({
      extra: { admin: { addr: '127.0.0.1:0', token: ADMIN_TOKEN }, gc: { graceperiod: '0s' }, ...extra },
    }),
  );
}

/** A mirror of `upstream` (no auth of its own), with an admin listener and the given cache policy. */
export async function startMirrorOf(upstream: TestServer, cache: Record<string, unknown>, gc: Record<string, unknown> = { graceperiod: '0s' }): Promise<AdminServer> {
  return withAdmin(
    await startTestServer({
      users: {},
      extra: {
        proxy: {
          upstreams: [{ host: `127.0.0.1:${upstream.port}`, url: upstream.url, username: TEST_USER, password: TEST_PASSWORD }],
        },
        admin: { addr: '127.0.0.1:0', token: ADMIN_TOKEN },
        gc,
        cache,
      },
    }),
  );
}

/** An image with one layer of `layerBytes` random bytes. */
export function bigImage(layerBytes: number): Image {
  return buildImage({ files: [{ 'payload.bin': randomBlob(layerBytes).data }] });
}

export function clientFor(server: TestServer): RegistryClient {
  return new RegistryClient(server.url, server.auth);
}

/** Whether the blob's data file is in the server's storage. */
export function blobOnDisk(server: TestServer, digest: string): boolean {
  const hex = digest.replace(/^sha256:/, '');
  return existsSync(path.join(dataDir(server), 'docker', 'registry', 'v2', 'blobs', 'sha256', hex.slice(0, 2), hex, 'data'));
}

/** Pulls manifest and every blob of `image` (by tag) through `server`; returns the statuses. */
export async function pull(server: TestServer, name: string, tag: string, image: Image): Promise<number[]> {
  const c = clientFor(server);
  const statuses: number[] = [];
  const m = await c.req(`/v2/${name}/manifests/${tag}`, { headers: { accept: image.mediaType } });
  statuses.push(m.status);
  for (const b of [image.config, ...image.layers]) statuses.push((await c.req(`/v2/${name}/blobs/${b.digest}`)).status);
  return statuses;
}
