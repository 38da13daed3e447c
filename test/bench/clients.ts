// The load generators, identical for both servers: a push client over undici
// (POST, one streamed PATCH, PUT ?digest=), wrk for manifest GETs, autocannon
// for blob HEADs (undici loops that follow redirects with --storage s3), curl
// for blob GETs.
import { execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';
import type { Readable } from 'node:stream';
import { promisify } from 'node:util';
import { Agent, type Dispatcher, interceptors, request } from 'undici';

export { stalledDownloads } from '../helpers/client.ts';

const execFileP = promisify(execFile);
const require = createRequire(import.meta.url);

export const MANIFEST_ACCEPT = [
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.docker.distribution.manifest.v2+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
].join(', ');

export function basic(user: string, password: string): string {
  return `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;
}

export function sha256(data: Uint8Array): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

// ---------------------------------------------------------------- push

export interface PushOptions {
  auth?: string;
  /** Send the PATCH body with Content-Length instead of chunked. */
  contentLength?: boolean;
  /** Size of the pieces the body is streamed in. */
  chunkSize?: number;
}

const pushAgent = new Agent({ connections: 4, headersTimeout: 600_000, bodyTimeout: 600_000 });

function headers(auth: string | undefined, extra: Record<string, string> = {}): Record<string, string> {
  return auth ? { authorization: auth, ...extra } : extra;
}

async function expectStatus(res: Awaited<ReturnType<typeof request>>, want: number, what: string): Promise<void> {
  if (res.statusCode !== want) {
    const text = await res.body.text().catch(() => '');
    throw new Error(`${what}: HTTP ${res.statusCode} (wanted ${want}) ${text.slice(0, 300)}`);
  }
  await res.body.dump();
}

/** Streamed upload: POST to start, one PATCH with the whole body, PUT ?digest= to finish. */
/** PUT an OCI image manifest under a tag (201 expected). */
async function putManifest(base: string, repo: string, tag: string, manifest: Buffer, auth?: string): Promise<void> {
  const res = await request(`${base}/v2/${repo}/manifests/${tag}`, {
    method: 'PUT',
    headers: headers(auth, { 'content-type': 'application/vnd.oci.image.manifest.v1+json' }),
    body: manifest,
    dispatcher: pushAgent,
  });
  await expectStatus(res, 201, `PUT manifest ${repo}:${tag}`);
}

export async function pushBlobStreamed(
  base: string,
  repo: string,
  data: Buffer,
  digest: string,
  options: PushOptions = {},
): Promise<void> {
  const chunkSize = options.chunkSize ?? 1024 * 1024;
  const post = await request(`${base}/v2/${repo}/blobs/uploads/`, {
    method: 'POST',
    headers: headers(options.auth, { 'content-length': '0' }),
    dispatcher: pushAgent,
  });
  const location = post.headers.location as string | undefined;
  await expectStatus(post, 202, `POST upload ${repo}`);
  if (!location) throw new Error('POST upload: no Location');
  const patchUrl = new URL(location, base);

  async function* pieces() {
    for (let off = 0; off < data.length; off += chunkSize) yield data.subarray(off, Math.min(off + chunkSize, data.length));
  }
  const patchHeaders: Record<string, string> = { 'content-type': 'application/octet-stream' };
  if (options.contentLength) patchHeaders['content-length'] = String(data.length);
  const patch = await request(patchUrl, {
    method: 'PATCH',
    headers: headers(options.auth, patchHeaders),
    // undici streams an async iterable body (chunked unless content-length is given).
    body: pieces() as unknown as Readable,
    dispatcher: pushAgent,
  });
  const next = patch.headers.location as string | undefined;
  await expectStatus(patch, 202, `PATCH upload ${repo}`);
  if (!next) throw new Error('PATCH upload: no Location');

  const putUrl = new URL(next, base);
  putUrl.searchParams.set('digest', digest);
  const put = await request(putUrl, {
    method: 'PUT',
    headers: headers(options.auth, { 'content-length': '0' }),
    dispatcher: pushAgent,
  });
  await expectStatus(put, 201, `PUT upload ${repo}`);
}

/** Small blob in one POST ?digest= (for the image's config and layer). */
export async function pushBlobMonolithic(base: string, repo: string, data: Buffer, auth?: string): Promise<string> {
  const digest = sha256(data);
  // distribution 2.8 does not take a body on POST ?digest=: use POST + PUT with the body.
  const post = await request(`${base}/v2/${repo}/blobs/uploads/`, {
    method: 'POST',
    headers: headers(auth, { 'content-length': '0' }),
    dispatcher: pushAgent,
  });
  const location = post.headers.location as string | undefined;
  await expectStatus(post, 202, `POST upload ${repo}`);
  const putUrl = new URL(location!, base);
  putUrl.searchParams.set('digest', digest);
  const put = await request(putUrl, {
    method: 'PUT',
    headers: headers(auth, { 'content-type': 'application/octet-stream', 'content-length': String(data.length) }),
    body: data,
    dispatcher: pushAgent,
  });
  await expectStatus(put, 201, `PUT blob ${repo}`);
  return digest;
}

export interface PushedImage {
  repo: string;
  tag: string;
  manifestDigest: string;
  layerDigest: string;
  manifestSize: number;
}

/** A small OCI image (config + one layer + manifest) under repo:tag. */
export async function pushSmallImage(base: string, repo: string, tag: string, auth?: string): Promise<PushedImage> {
  const config = Buffer.from(
    JSON.stringify({
      architecture: 'amd64',
      os: 'linux',
      rootfs: { type: 'layers', diff_ids: [`sha256:${'0'.repeat(64)}`] },
      config: { Env: ['PATH=/usr/bin'] },
    }),
  );
  // Deterministic pseudo-random layer bytes, the same for both servers.
  const layer = Buffer.alloc(64 * 1024);
  let x = 12345;
  for (let i = 0; i < layer.length; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    layer[i] = x >>> 24;
  }
  const configDigest = await pushBlobMonolithic(base, repo, config, auth);
  const layerDigest = await pushBlobMonolithic(base, repo, layer, auth);
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: configDigest, size: config.length },
      layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: layerDigest, size: layer.length }],
      annotations: { 'org.opencontainers.image.title': 'registry-stack bench' },
    }),
  );
  await putManifest(base, repo, tag, manifest, auth);
  return { repo, tag, manifestDigest: sha256(manifest), layerDigest, manifestSize: manifest.length };
}

/** One GET of the manifest by tag, checking the answer is the pushed manifest. */
export async function checkManifest(base: string, image: PushedImage, auth?: string): Promise<void> {
  const res = await request(`${base}/v2/${image.repo}/manifests/${image.tag}`, {
    headers: headers(auth, { accept: MANIFEST_ACCEPT }),
  });
  const body = Buffer.from(await res.body.arrayBuffer());
  if (res.statusCode !== 200) throw new Error(`GET manifest: HTTP ${res.statusCode} ${body.toString().slice(0, 200)}`);
  if (sha256(body) !== image.manifestDigest) throw new Error('GET manifest: wrong bytes');
  if (res.headers['content-type'] !== 'application/vnd.oci.image.manifest.v1+json') {
    throw new Error(`GET manifest: content-type ${res.headers['content-type']}`);
  }
}

// ---------------------------------------------------------------- wrk (GET)

export interface RateResult {
  rps: number;
  requests: number;
  errors: number;
  non2xx: number;
  latencyP50ms?: number;
  latencyP99ms?: number;
}

function parseWrkLatency(s: string | undefined): number | undefined {
  if (!s) return undefined;
  const m = /^([\d.]+)(us|ms|s|m)$/.exec(s);
  if (!m) return undefined;
  const v = Number(m[1]);
  return m[2] === 'us' ? v / 1000 : m[2] === 'ms' ? v : m[2] === 's' ? v * 1000 : v * 60_000;
}

export async function wrkGet(
  url: string,
  opts: { connections: number; threads: number; durationS: number; headers: Record<string, string>; timeoutS?: number },
): Promise<RateResult> {
  const args = [
    `-t${opts.threads}`,
    `-c${opts.connections}`,
    `-d${opts.durationS}s`,
    `--timeout`,
    `${opts.timeoutS ?? 60}s`,
    '--latency',
  ];
  for (const [k, v] of Object.entries(opts.headers)) args.push('-H', `${k}: ${v}`);
  args.push(url);
  const { stdout } = await execFileP('wrk', args, { maxBuffer: 1 << 20 });
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(stdout)?.[1] ?? NaN);
  const requests = Number(/(\d+) requests in/.exec(stdout)?.[1] ?? NaN);
  const non2xx = Number(/Non-2xx or 3xx responses:\s+(\d+)/.exec(stdout)?.[1] ?? 0);
  const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(stdout);
  const errors = sock ? sock.slice(1).reduce((a, b) => a + Number(b), 0) : 0;
  if (!Number.isFinite(rps)) throw new Error(`could not parse wrk output:\n${stdout}`);
  return {
    rps,
    requests,
    errors,
    non2xx,
    latencyP50ms: parseWrkLatency(/^\s+50%\s+(\S+)/m.exec(stdout)?.[1]),
    latencyP99ms: parseWrkLatency(/^\s+99%\s+(\S+)/m.exec(stdout)?.[1]),
  };
}

// ---------------------------------------------------------------- autocannon (HEAD)

/**
 * autocannon's HTTP parser (http-parser-js) is not told that a HEAD response
 * has no body, so it waits for Content-Length bytes that never come (the same
 * reason wrk hangs on HEAD). This setupClient hook makes the parser skip the
 * body of every response, which is right because every request is a HEAD.
 */
function skipBodiesForHead(client: any): void {
  const parser = client.parser;
  const { HTTPParser } = require('http-parser-js');
  const key = HTTPParser.kOnHeadersComplete;
  let wrapped: ((...args: unknown[]) => unknown) | undefined;
  Object.defineProperty(parser, key, {
    configurable: true,
    get: () => wrapped,
    set: (fn: (...args: unknown[]) => unknown) => {
      wrapped = (...args: unknown[]) => {
        fn(...args);
        return true; // skipBody
      };
    },
  });
}

export async function autocannonHead(
  url: string,
  opts: { connections: number; durationS: number; headers: Record<string, string> },
): Promise<RateResult> {
  const autocannon = require('autocannon');
  const result = await autocannon({
    url,
    method: 'HEAD',
    connections: opts.connections,
    duration: opts.durationS,
    headers: opts.headers,
    timeout: 30,
    setupClient: skipBodiesForHead,
  });
  const requests = result.requests.total as number;
  return {
    rps: requests / (result.duration as number),
    requests,
    errors: (result.errors as number) + (result.timeouts as number),
    non2xx: result.non2xx as number,
    latencyP50ms: result.latency.p50,
    latencyP99ms: result.latency.p99,
  };
}

// ---------------------------------------------------------------- undici (HEAD, redirects followed)

/**
 * HEAD load that follows redirects, for registries that answer a blob HEAD
 * with a redirect to their object store (distribution on s3: a 307 to a
 * presigned HEAD URL of the bucket; docker's and containerd's HTTP clients
 * follow it). autocannon and wrk cannot follow redirects, so this is
 * `connections` request loops on one undici Agent with the redirect
 * interceptor, for `durationS` seconds; a request counts when its final
 * answer is in. The same code for both servers.
 */
export async function undiciHead(
  url: string,
  opts: { connections: number; durationS: number; headers: Record<string, string> },
): Promise<RateResult> {
  const agent = new Agent({ connections: opts.connections, headersTimeout: 30_000, bodyTimeout: 30_000 }).compose(
    interceptors.redirect({ maxRedirections: 3 }),
  );
  const latencies: number[] = [];
  let errors = 0;
  let non2xx = 0;
  const t0 = performance.now();
  const end = t0 + opts.durationS * 1000;
  const loop = async () => {
    while (performance.now() < end) {
      const t = performance.now();
      try {
        const res = await request(url, { method: 'HEAD', headers: opts.headers, dispatcher: agent });
        await res.body.dump();
        if (res.statusCode < 200 || res.statusCode >= 300) non2xx++;
      } catch {
        errors++;
      }
      latencies.push(performance.now() - t);
    }
  };
  try {
    await Promise.all(Array.from({ length: opts.connections }, loop));
  } finally {
    await agent.close();
  }
  const seconds = (performance.now() - t0) / 1000;
  latencies.sort((a, b) => a - b);
  const pct = (p: number) => latencies[Math.min(latencies.length - 1, Math.floor((p / 100) * latencies.length))];
  return {
    rps: latencies.length / seconds,
    requests: latencies.length,
    errors,
    non2xx,
    latencyP50ms: pct(50),
    latencyP99ms: pct(99),
  };
}

// ---------------------------------------------------------------- curl (blob GET)

export interface DownloadResult {
  bytes: number;
  seconds: number;
}

/**
 * `clients` concurrent curl -o /dev/null of the same URL; wall time until all are done.
 * Redirects are followed (-L), as docker and containerd do: a registry that answers a blob GET
 * with a redirect to its object store (distribution with s3) is measured as its clients see it.
 * curl does not send the Authorization header on to another host or port.
 */
export async function curlParallel(url: string, clients: number, expectBytes: number, auth?: string): Promise<DownloadResult> {
  const args = ['-sS', '-L', '--max-redirs', '3', '-o', '/dev/null', '-w', '%{http_code} %{size_download}\\n'];
  if (auth) args.push('-H', `Authorization: ${auth}`);
  args.push(url);
  const t0 = process.hrtime.bigint();
  const outs = await Promise.all(
    Array.from(
      { length: clients },
      () =>
        new Promise<string>((resolve, reject) => {
          const p = spawn('curl', args, { stdio: ['ignore', 'pipe', 'pipe'] });
          let out = '';
          let err = '';
          p.stdout.on('data', (d) => (out += d));
          p.stderr.on('data', (d) => (err += d));
          p.on('error', reject);
          // 'close', not 'exit': curl's output may still be in the pipe when the process has exited.
          p.on('close', (code) => (code === 0 ? resolve(out) : reject(new Error(`curl exited ${code}: ${err}`))));
        }),
    ),
  );
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  let bytes = 0;
  for (const out of outs) {
    const [code, size] = out.trim().split(' ');
    if (code !== '200' || Number(size) !== expectBytes) throw new Error(`blob GET: HTTP ${code}, ${size} bytes (wanted ${expectBytes})`);
    bytes += Number(size);
  }
  return { bytes, seconds };
}

// ---------------------------------------------------------------- auth cold start

/**
 * `n` clients, each on its own connection, send the same credentials at once
 * to a server that has not verified them yet (what a fleet of CI jobs does
 * right after a restart). Returns seconds until the last one is answered.
 */
export async function coldLogins(url: string, n: number, auth: string): Promise<number> {
  const agent = new Agent({ connections: n, pipelining: 1, headersTimeout: 600_000, bodyTimeout: 600_000 });
  try {
    const t0 = process.hrtime.bigint();
    const statuses = await Promise.all(
      Array.from({ length: n }, async () => {
        const res = await request(url, { headers: { authorization: auth, accept: MANIFEST_ACCEPT }, dispatcher: agent });
        await res.body.dump();
        return res.statusCode;
      }),
    );
    const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
    const bad = statuses.filter((s) => s !== 200);
    if (bad.length > 0) throw new Error(`cold logins: ${bad.length} answers were not 200 (${bad[0]})`);
    return seconds;
  } finally {
    await agent.close();
  }
}

/** `sync`: flush dirty pages so one server's writeback doesn't land in the other's timing. */
export async function syncDisks(): Promise<void> {
  await execFileP('sync');
}

export async function htpasswdFile(file: string, user: string, password: string, cost: number): Promise<void> {
  await execFileP('htpasswd', ['-Bbc', '-C', String(cost), file, user, password]);
}

// ---------------------------------------------------------------- image push / pull (mirror rows)

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
}

export interface BenchImage {
  repo: string;
  tag: string;
  manifestDigest: string;
  config: Descriptor;
  layers: Descriptor[];
  /** Manifest + config + layers, the bytes one pull moves. */
  bytes: number;
}

/**
 * An OCI image (config + the given layers) under repo:tag: layers with the
 * streamed push (POST, PATCH, PUT ?digest=), the config with POST + PUT,
 * then the manifest. Works against distribution 2.8 (no monolithic POST).
 */
export async function pushImage(base: string, repo: string, tag: string, layers: Buffer[], auth?: string): Promise<BenchImage> {
  const layerDescs: Descriptor[] = [];
  for (const data of layers) {
    const digest = sha256(data);
    await pushBlobStreamed(base, repo, data, digest, { auth });
    layerDescs.push({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest, size: data.length });
  }
  const config = Buffer.from(
    JSON.stringify({
      architecture: 'amd64',
      os: 'linux',
      rootfs: { type: 'layers', diff_ids: layerDescs.map((l) => l.digest) },
      config: { Env: ['PATH=/usr/bin'] },
    }),
  );
  const configDesc: Descriptor = {
    mediaType: 'application/vnd.oci.image.config.v1+json',
    digest: await pushBlobMonolithic(base, repo, config, auth),
    size: config.length,
  };
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: configDesc,
      layers: layerDescs,
    }),
  );
  await putManifest(base, repo, tag, manifest, auth);
  return {
    repo,
    tag,
    manifestDigest: sha256(manifest),
    config: configDesc,
    layers: layerDescs,
    bytes: manifest.length + config.length + layerDescs.reduce((a, l) => a + l.size, 0),
  };
}

export interface PullResult {
  /** Bytes received and verified (manifest + config + layers). */
  bytes: number;
  seconds: number;
  /** Time to the manifest, seconds. */
  manifestSeconds: number;
}

/**
 * A whole-image pull the way a client does it, on a fresh connection pool:
 * the manifest by tag (with an Accept header), then the config and the layers
 * over `concurrency` connections (per origin). Redirects are followed, as
 * clients do (a blob GET of distribution on s3 is a redirect to a presigned
 * URL of the object store; undici drops the Authorization header when the
 * origin changes). Every byte is hashed as it arrives; a wrong manifest, a
 * short blob or a digest mismatch throws (a bad pull is never measured).
 */
export async function pullImage(base: string, image: BenchImage, concurrency = 3, auth?: string): Promise<PullResult> {
  const agent: Dispatcher = new Agent({ connections: concurrency, headersTimeout: 300_000, bodyTimeout: 300_000 }).compose(
    interceptors.redirect({ maxRedirections: 3 }),
  );
  try {
    const t0 = process.hrtime.bigint();
    const res = await request(`${base}/v2/${image.repo}/manifests/${image.tag}`, {
      headers: headers(auth, { accept: MANIFEST_ACCEPT }),
      dispatcher: agent,
    });
    const body = Buffer.from(await res.body.arrayBuffer());
    if (res.statusCode !== 200) throw new Error(`pull ${base}: GET manifest HTTP ${res.statusCode} ${body.toString().slice(0, 300)}`);
    if (sha256(body) !== image.manifestDigest) throw new Error(`pull ${base}: manifest bytes do not match ${image.manifestDigest}`);
    const manifestSeconds = Number(process.hrtime.bigint() - t0) / 1e9;
    const parsed = JSON.parse(body.toString()) as { config: Descriptor; layers: Descriptor[] };
    const queue = [parsed.config, ...parsed.layers];
    let bytes = body.length;
    const worker = async () => {
      for (let desc = queue.shift(); desc; desc = queue.shift()) {
        const what = `pull ${base}: GET blob ${desc.digest}`;
        const hash = createHash('sha256');
        let got = 0;
        try {
          const blob = await request(`${base}/v2/${image.repo}/blobs/${desc.digest}`, { headers: headers(auth), dispatcher: agent });
          if (blob.statusCode !== 200) {
            const text = await blob.body.text().catch(() => '');
            throw new Error(`HTTP ${blob.statusCode} ${text.slice(0, 300)}`);
          }
          for await (const chunk of blob.body) {
            hash.update(chunk as Buffer);
            got += (chunk as Buffer).length;
          }
        } catch (err) {
          throw new Error(`${what}: ${(err as Error).message} (after ${got} of ${desc.size} bytes)`);
        }
        const digest = `sha256:${hash.digest('hex')}`;
        if (got !== desc.size || digest !== desc.digest) {
          throw new Error(`${what}: received ${got} bytes (wanted ${desc.size}) hashing to ${digest}`);
        }
        bytes += got;
      }
    };
    await Promise.all(Array.from({ length: concurrency }, worker));
    const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
    if (bytes !== image.bytes) throw new Error(`pull ${base}: ${bytes} bytes received, the image has ${image.bytes}`);
    await agent.close();
    return { bytes, seconds, manifestSeconds };
  } catch (err) {
    await agent.destroy().catch(() => {});
    throw err;
  }
}
