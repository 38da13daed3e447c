// `registry mirror pull <image>...`: fills a running mirror's cache ahead of
// time by pulling images through it (manifests, index children, config and
// layers), exactly as a client would, so the next real pull is a cache hit.
//
// Output: in a terminal a progress bar, then one line per image and a summary;
// otherwise (cron, CI, a pipe) one JSON line per image as it completes, then
// the summary. Blobs shared by several images are fetched once.
import { type Options as BarOptions, SingleBar } from 'cli-progress';
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

/** One image as given on the command line, and how its pull went. */
interface ImageJob {
  image: string;
  digests: Set<string>;
  pending: number;
  bytes: number;
  errors: string[];
}

const ACCEPT = [MediaTypes.ociIndex, MediaTypes.ociManifest, MediaTypes.dockerManifestList, MediaTypes.dockerManifest].join(', ');

export async function mirrorPullCommand(images: string[], opts: Options): Promise<void> {
  const base = mirrorUrl(opts.url);
  const concurrency = positiveInt('--concurrency', opts.concurrency);
  if (opts.platform !== undefined && !/^[a-z0-9_.-]+\/[a-z0-9_.-]+(\/[a-z0-9_.-]+)?$/i.test(opts.platform)) {
    usage(`--platform must be os/arch (e.g. linux/amd64), got ${JSON.stringify(opts.platform)}`);
  }
  const auth = opts.user ? `Basic ${Buffer.from(opts.user).toString('base64')}` : undefined;
  const terminal = process.stderr.isTTY === true;
  const blobs = new Map<string, BlobRef>();
  const jobs: ImageJob[] = [];

  for (const image of images) {
    const job: ImageJob = { image, digests: new Set(), pending: 0, bytes: 0, errors: [] };
    jobs.push(job);
    try {
      const found = new Map<string, BlobRef>();
      await collect(base, auth, parseImage(image), opts.platform, found);
      for (const [digest, ref] of found) {
        job.digests.add(digest);
        job.bytes += ref.size;
        if (!blobs.has(digest)) blobs.set(digest, ref);
      }
      job.pending = job.digests.size;
    } catch (err) {
      job.errors.push((err as Error).message);
    }
    // An image whose manifests failed, or that has nothing to fetch, is done already.
    if (!terminal && job.pending === 0) reportImage(job);
  }

  const total = [...blobs.values()].reduce((n, b) => n + b.size, 0);
  const bar = terminal ? new SingleBar(barOptions(), undefined) : undefined;
  bar?.start(total, 0, { blobs: `0/${blobs.size}` });
  let done = 0;
  let received = 0;
  let failedBlobs = 0;
  const queue = [...blobs.values()];
  const worker = async () => {
    for (let b = queue.shift(); b; b = queue.shift()) {
      let error: string | undefined;
      try {
        await fetchBlob(base, auth, b, (n) => {
          received += n;
          bar?.update(received);
        });
      } catch (err) {
        failedBlobs++;
        error = `${b.name}@${b.digest}: ${(err as Error).message}`;
      }
      done++;
      bar?.update(received, { blobs: `${done}/${blobs.size}` });
      for (const job of jobs) {
        if (!job.digests.has(b.digest)) continue;
        if (error) job.errors.push(error);
        if (--job.pending === 0 && !terminal) reportImage(job);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, Math.max(queue.length, 1)) }, worker));
  bar?.stop();
  if (terminal) for (const job of jobs) reportImage(job);

  const failedImages = jobs.filter((j) => j.errors.length > 0).length;
  report(
    { event: 'summary', images: images.length, failedImages, blobs: blobs.size, failedBlobs, bytes: received },
    `warmed ${images.length - failedImages} of ${images.length} image(s): ${blobs.size} blob(s), ${mb(received)} MB${failedImages ? `; ${failedImages} failed` : ''}`,
  );
  if (failedImages > 0) process.exitCode = 1;
}

/** --url: where the mirror's /v2/ is. A bare host:port is refused here, not once per image as "Invalid URL". */
function mirrorUrl(value: string): string {
  let url: URL | undefined;
  try {
    url = new URL(value);
  } catch {
    // not a URL at all
  }
  if (!url || !/^https?:$/.test(url.protocol) || !/^[a-z][a-z0-9+.-]*:\/\//i.test(value)) {
    usage(`--url must be the mirror's http(s) URL, e.g. http://127.0.0.1:5000 or https://mir.example.com, got ${JSON.stringify(value.replace(/\/\/[^/@]*@/, '//…@'))}`);
  }
  if (url.username || url.password) usage('--url: give credentials with --user, not in the URL');
  if (url.search || url.hash) usage(`--url must not have a query or fragment, got ${JSON.stringify(value)}`);
  return `${url.origin}${url.pathname.replace(/\/+$/, '')}`;
}

function positiveInt(flag: string, value: string): number {
  if (!/^\d+$/.test(value) || Number(value) < 1 || Number(value) > 64) usage(`${flag} must be a whole number from 1 to 64, got ${JSON.stringify(value)}`);
  return Number(value);
}

function usage(message: string): never {
  process.stderr.write(`registry: ${message}\n`);
  process.exit(2);
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
    let matched = 0;
    for (const child of manifest.manifests as Array<{ digest: string; platform?: { os?: string; architecture?: string; variant?: string } }>) {
      if (platform && !platformMatches(platform, child.platform)) continue;
      matched++;
      await collect(base, auth, { name: target.name, reference: child.digest }, platform, out);
    }
    if (matched === 0 && platform) throw new Error(`no ${platform} image in the index`);
    return;
  }
  const descriptors = [manifest.config, ...(manifest.layers ?? [])] as Array<{ digest: string; size: number; urls?: string[] }>;
  for (const d of descriptors) {
    if (d && !d.urls && !out.has(d.digest)) out.set(d.digest, { name: target.name, digest: d.digest, size: d.size });
  }
}

function platformMatches(wanted: string, p: { os?: string; architecture?: string; variant?: string } | undefined): boolean {
  const [os, arch, variant] = wanted.split('/');
  return p?.os === os && p?.architecture === arch && (variant === undefined || p?.variant === variant);
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

/** Bytes counted exactly; MB shown to one decimal, so the finished bar reads 100% | 3.0/3.0 MB. */
function barOptions(): BarOptions {
  return {
    stream: process.stderr,
    format: 'warming {bar} {percentage}% | {value}/{total} MB | {blobs} blobs',
    formatValue: (v, _options, type) => (type === 'value' || type === 'total' ? mb(v) : String(v)),
    hideCursor: true,
  };
}

const mb = (bytes: number) => (bytes / 1e6).toFixed(1);

function reportImage(job: ImageJob): void {
  const ok = job.errors.length === 0;
  report(
    { event: 'image', image: job.image, ok, blobs: job.digests.size, bytes: job.bytes, ...(ok ? {} : { errors: job.errors }) },
    ok ? `pulled ${job.image}: ${job.digests.size} blob(s), ${mb(job.bytes)} MB` : `failed ${job.image}: ${job.errors.join('; ')}`,
  );
}

/** A JSON line on stdout for machines, or a sentence on stderr in a terminal. */
function report(fields: Record<string, unknown>, text: string): void {
  if (process.stderr.isTTY) process.stderr.write(`${text}\n`);
  else process.stdout.write(`${JSON.stringify({ time: new Date().toISOString(), ...fields })}\n`);
}
