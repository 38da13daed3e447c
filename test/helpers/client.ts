// A thin registry client over undici for API tests: raw requests plus the
// push/pull steps a real client performs.
import * as net from 'node:net';
import { type Dispatcher, request } from 'undici';
import type { Blob, Image, IndexImage } from './oci.ts';

export interface Response {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
  text: string;
  json: () => any;
  header: (name: string) => string | undefined;
}

export interface RequestOptions {
  method?: string;
  headers?: Record<string, string>;
  body?: Buffer | string | AsyncIterable<Buffer> | NodeJS.ReadableStream;
  /** 'manual': return a redirect as it is instead of following it (see requestFollowing). */
  redirect?: 'follow' | 'manual';
}

const REDIRECTS = new Set([301, 302, 303, 307, 308]);

/**
 * undici's request(), following a GET/HEAD's redirects to another origin the way
 * registry clients do (storage.redirect sends blob GETs to presigned storage
 * URLs): the Range header goes along, the Authorization header does not.
 */
export async function requestFollowing(
  url: string,
  options: { method?: string; headers?: Record<string, string>; body?: unknown; headersTimeout?: number; bodyTimeout?: number } = {},
): Promise<Dispatcher.ResponseData> {
  const timeouts = { headersTimeout: options.headersTimeout, bodyTimeout: options.bodyTimeout };
  let current = url;
  let headers = { ...options.headers };
  for (let hop = 0; ; hop++) {
    const res = await request(current, { method: (options.method ?? 'GET') as any, headers, body: options.body as any, ...timeouts });
    const method = options.method ?? 'GET';
    const location = res.headers.location;
    if (!REDIRECTS.has(res.statusCode) || typeof location !== 'string' || (method !== 'GET' && method !== 'HEAD')) return res;
    const next = new URL(location, current);
    if (next.origin === new URL(current).origin) return res;
    if (hop === 5) throw new Error(`too many redirects from ${url}`);
    await res.body.dump();
    const { authorization: _dropped, ...rest } = headers;
    headers = rest;
    current = next.toString();
  }
}

export class RegistryClient {
  constructor(
    readonly baseUrl: string,
    readonly auth?: string,
  ) {}

  withAuth(auth: string | undefined): RegistryClient {
    return new RegistryClient(this.baseUrl, auth);
  }

  async req(pathOrUrl: string, options: RequestOptions = {}): Promise<Response> {
    const url = pathOrUrl.startsWith('http') ? pathOrUrl : `${this.baseUrl}${pathOrUrl}`;
    const headers: Record<string, string> = { ...options.headers };
    if (this.auth && !('authorization' in headers)) headers.authorization = this.auth;
    const res =
      options.redirect === 'manual'
        ? await request(url, { method: (options.method ?? 'GET') as any, headers, body: options.body as any })
        : await requestFollowing(url, { method: options.method, headers, body: options.body });
    const body = Buffer.from(await res.body.arrayBuffer());
    const text = body.toString('utf8');
    return {
      status: res.statusCode,
      headers: res.headers as Record<string, string | string[] | undefined>,
      body,
      text,
      json: () => JSON.parse(text),
      header: (name: string) => {
        const v = res.headers[name.toLowerCase()];
        return Array.isArray(v) ? v.join(', ') : v;
      },
    };
  }

  /** Absolute URL for a Location header (which may be relative). */
  resolve(location: string): string {
    return new URL(location, this.baseUrl).toString();
  }

  async pushBlob(name: string, blob: Blob): Promise<Response> {
    const res = await this.req(`/v2/${name}/blobs/uploads/?digest=${blob.digest}`, {
      method: 'POST',
      headers: { 'content-type': 'application/octet-stream', 'content-length': String(blob.size) },
      body: blob.data,
    });
    if (res.status !== 201) throw new Error(`push blob ${blob.digest}: ${res.status} ${res.text}`);
    return res;
  }

  async pushManifest(name: string, reference: string, manifest: Blob, mediaType: string): Promise<Response> {
    const res = await this.req(`/v2/${name}/manifests/${reference}`, {
      method: 'PUT',
      headers: { 'content-type': mediaType },
      body: manifest.data,
    });
    if (res.status !== 201) throw new Error(`push manifest ${name}:${reference}: ${res.status} ${res.text}`);
    return res;
  }

  async pushImage(name: string, tag: string, image: Image): Promise<void> {
    await this.pushBlob(name, image.config);
    for (const layer of image.layers) await this.pushBlob(name, layer);
    await this.pushManifest(name, tag, image.manifest, image.mediaType);
  }

  async pushIndex(name: string, tag: string, index: IndexImage): Promise<void> {
    for (const img of index.images) await this.pushImage(name, img.manifest.digest, img);
    await this.pushManifest(name, tag, index.index, index.mediaType);
  }
}

export interface RawResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
}

export interface RawRequest {
  method: string;
  /** Sent as-is in the request line: no normalisation or encoding. */
  path: string;
  headers?: Record<string, string>;
  body?: Buffer | string;
}

export interface RawOptions {
  /**
   * false keeps the socket open after the body and reads until the server
   * closes it ("Connection: close"): Node's server takes a half-close as the
   * client leaving and may drop the answer to a request it has not finished.
   */
  halfClose?: boolean;
}

/**
 * One request over a raw TCP socket, for what HTTP clients refuse to send:
 * un-normalised paths ("/v2/../x"), a Content-Length larger than the body.
 * By default the socket is half-closed after the body (the server sees a
 * truncated body if Content-Length promised more). Resolves with the
 * response, or undefined when the server closed the connection without answering.
 */
export function rawHttp(baseUrl: string, request: RawRequest, options: RawOptions = {}): Promise<RawResponse | undefined> {
  const url = new URL(baseUrl);
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: url.hostname, port: Number(url.port) });
    const chunks: Buffer[] = [];
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('error', (err: NodeJS.ErrnoException) => {
      // A reset after (or instead of) the answer: report what arrived.
      if (err.code === 'ECONNRESET' || err.code === 'EPIPE') finish();
      else reject(err);
    });
    socket.on('close', () => finish());
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      socket.destroy();
      const raw = Buffer.concat(chunks).toString('latin1');
      if (raw === '') return resolve(undefined);
      const split = raw.indexOf('\r\n\r\n');
      const head = split < 0 ? raw : raw.slice(0, split);
      const [statusLine, ...lines] = head.split('\r\n');
      const headers: Record<string, string> = {};
      for (const line of lines) {
        const colon = line.indexOf(':');
        if (colon > 0) headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
      }
      resolve({ status: Number(statusLine.split(' ')[1]), headers, body: split < 0 ? '' : raw.slice(split + 4) });
    };
    socket.on('connect', () => {
      const headers = { host: url.host, connection: 'close', ...request.headers };
      const head = `${request.method} ${request.path} HTTP/1.1\r\n${Object.entries(headers)
        .map(([k, v]) => `${k}: ${v}\r\n`)
        .join('')}\r\n`;
      socket.write(head);
      if (request.body !== undefined) socket.write(request.body);
      if (options.halfClose !== false) socket.end();
    });
  });
}

/**
 * `n` downloads of `url` that stop reading once the response headers are in
 * (raw sockets, paused: the kernel's windows fill and the server's writes back
 * up). Resolves with the sockets when every one has its headers; the caller
 * destroys them.
 */
export async function stalledDownloads(url: string, n: number): Promise<net.Socket[]> {
  const { hostname, port, pathname } = new URL(url);
  const one = () =>
    new Promise<net.Socket>((resolve, reject) => {
      const socket = net.connect({ host: hostname, port: Number(port) }, () => {
        socket.write(`GET ${pathname} HTTP/1.1\r\nHost: ${hostname}:${port}\r\n\r\n`);
      });
      let head = '';
      const onData = (chunk: Buffer) => {
        head += chunk.toString('latin1');
        if (!head.includes('\r\n\r\n')) return;
        socket.off('data', onData);
        socket.pause();
        if (head.startsWith('HTTP/1.1 200')) resolve(socket);
        else reject(new Error(`stalled download of ${url}: ${head.split('\r\n')[0]}`));
      };
      socket.on('data', onData);
      socket.once('error', reject);
    });
  const sockets = await Promise.allSettled(Array.from({ length: n }, one));
  const failed = sockets.find((r) => r.status === 'rejected');
  if (failed) {
    for (const r of sockets) if (r.status === 'fulfilled') r.value.destroy();
    throw (failed as PromiseRejectedResult).reason;
  }
  return sockets.map((r) => (r as PromiseFulfilledResult<net.Socket>).value);
}

/** The codes of a spec error body ({"errors":[{"code":…}]}); [] when the body is not one. */
export function errorCodes(res: { text?: string; body: Buffer | string }): string[] {
  const text = typeof res.body === 'string' ? res.body : res.body.toString('utf8');
  try {
    const doc = JSON.parse(text);
    return Array.isArray(doc?.errors) ? doc.errors.map((e: { code?: unknown }) => String(e?.code)) : [];
  } catch {
    return [];
  }
}
