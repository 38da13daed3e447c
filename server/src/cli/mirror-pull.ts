// `registry mirror pull <image>...`: fills a running mirror's cache ahead of
// time by pulling images through it (manifests, index children, config and
// layers), exactly as a client would, so the next real pull is a cache hit.
import { SingleBar } from 'cli-progress';
import { request } from 'undici';
import { MediaTypes } from '../registry/manifest.ts';

interface Options {
  url: string;
  user?: string;
  platform?: string;
  concurrency: string;
}

interface Target {
  name: string;
  reference: string;
}

interface BlobRef {
  name: string;
  digest: string;
  size: number;
}

const ACCEPT = [MediaTypes.ociIndex, MediaTypes.ociManifest, MediaTypes.dockerManifestList, MediaTypes.dockerManifest].join(', ');

export async function mirrorPullCommand(images: string[], opts: Options): Promise<void> {
  const base = opts.url.replace(/\/+$/, '');
  const auth = opts.user ? `Basic ${Buffer.from(opts.user).toString('base64')}` : undefined;
  const concurrency = Math.max(1, Number(opts.concurrency) || 4);
  const blobs = new Map<string, BlobRef>();
  let failed = 0;

  for (const image of images) {
    try {
      const target = parseImage(image);
      await collect(base, auth, target, opts.platform, blobs);
    } catch (err) {
      failed++;
      log({ image, error: (err as Error).message }, `failed: ${image}: ${(err as Error).message}`);
    }
  }

  const total = [...blobs.values()].reduce((n, b) => n + b.size, 0);
  const bar = process.stderr.isTTY ? new SingleBar({ format: 'warming {bar} {percentage}% | {value}/{total} MB | {blobs} blobs' }) : undefined;
  bar?.start(Math.ceil(total / 1e6), 0, { blobs: `0/${blobs.size}` });
  let done = 0;
  let bytes = 0;
  const queue = [...blobs.values()];
  const worker = async () => {
    for (let b = queue.shift(); b; b = queue.shift()) {
      try {
        bytes += await fetchBlob(base, auth, b, (n) => bar?.increment(n / 1e6));
      } catch (err) {
        failed++;
        log({ digest: b.digest, error: (err as Error).message }, `failed: ${b.name}@${b.digest}: ${(err as Error).message}`);
      }
      done++;
      bar?.update({ blobs: `${done}/${blobs.size}` });
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  bar?.stop();
  log({ images: images.length, blobs: blobs.size, bytes, failed }, `warmed ${images.length} image(s): ${blobs.size} blobs, ${(bytes / 1e6).toFixed(1)} MB, ${failed} failure(s)`);
  if (failed > 0) process.exitCode = 1;
}

/** "alpine", "library/alpine:3.20", "ghcr.io/org/app@sha256:…" → repository name and reference. */
export function parseImage(image: string): Target {
  const at = image.indexOf('@');
  if (at > 0) return { name: image.slice(0, at), reference: image.slice(at + 1) };
  const colon = image.lastIndexOf(':');
  if (colon > image.lastIndexOf('/')) return { name: image.slice(0, colon), reference: image.slice(colon + 1) };
  return { name: image, reference: 'latest' };
}

async function collect(base: string, auth: string | undefined, target: Target, platform: string | undefined, out: Map<string, BlobRef>): Promise<void> {
  const manifest = await getJson(base, auth, `/v2/${target.name}/manifests/${target.reference}`);
  if (Array.isArray(manifest.manifests)) {
    for (const child of manifest.manifests as Array<{ digest: string; platform?: { os?: string; architecture?: string } }>) {
      if (platform && `${child.platform?.os}/${child.platform?.architecture}` !== platform) continue;
      await collect(base, auth, { name: target.name, reference: child.digest }, platform, out);
    }
    return;
  }
  const descriptors = [manifest.config, ...(manifest.layers ?? [])] as Array<{ digest: string; size: number; urls?: string[] }>;
  for (const d of descriptors) {
    if (d && !d.urls && !out.has(d.digest)) out.set(d.digest, { name: target.name, digest: d.digest, size: d.size });
  }
}

async function getJson(base: string, auth: string | undefined, path: string): Promise<any> {
  const res = await request(`${base}${path}`, { headers: { accept: ACCEPT, ...(auth ? { authorization: auth } : {}) } });
  const text = await res.body.text();
  if (res.statusCode !== 200) throw new Error(`GET ${path}: ${res.statusCode} ${text.slice(0, 200)}`);
  return JSON.parse(text);
}

async function fetchBlob(base: string, auth: string | undefined, blob: BlobRef, progress: (n: number) => void): Promise<number> {
  const res = await request(`${base}/v2/${blob.name}/blobs/${blob.digest}`, { headers: auth ? { authorization: auth } : {} });
  if (res.statusCode !== 200) {
    const text = await res.body.text();
    throw new Error(`${res.statusCode} ${text.slice(0, 200)}`);
  }
  let n = 0;
  for await (const chunk of res.body) {
    n += (chunk as Buffer).length;
    progress((chunk as Buffer).length);
  }
  if (n !== blob.size) throw new Error(`received ${n} bytes, expected ${blob.size}`);
  return n;
}

function log(fields: Record<string, unknown>, text: string): void {
  if (process.stderr.isTTY) process.stderr.write(`${text}\n`);
  else process.stdout.write(`${JSON.stringify({ time: new Date().toISOString(), ...fields })}\n`);
}
