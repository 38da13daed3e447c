// A small HTTP(S) client on node:http/https. It does what the scripts need
// and undici's fetch does not make easy: a unix socket (Docker, Caddy's
// admin socket), an extra trusted CA (Caddy's local CA), and curl-style
// --resolve host:port:address overrides that keep the URL's name for SNI
// and certificate checks.
import * as dns from 'node:dns';
import * as http from 'node:http';
import * as https from 'node:https';
import { isIP, type LookupFunction } from 'node:net';
import * as tls from 'node:tls';

export interface HttpRequest {
  url: string;
  method?: string;
  headers?: Record<string, string>;
  body?: string | Buffer;
  /** Connect to this unix socket instead of the URL's host (the URL's path is still used). */
  socketPath?: string;
  /** Extra PEM CA certificates, trusted in addition to the system roots. */
  ca?: Array<string | Buffer>;
  /** "host:port" → address to connect to, like curl --resolve. */
  resolve?: Map<string, string>;
  timeoutMs?: number;
  /** Stop reading the body after this many bytes (default 8 MiB). */
  maxBodyBytes?: number;
}

export interface HttpResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
  text(): string;
  json(): unknown;
}

export class HttpError extends Error {
  constructor(
    message: string,
    readonly code?: string,
  ) {
    super(message);
    this.name = 'HttpError';
  }
}

export function httpRequest(req: HttpRequest): Promise<HttpResponse> {
  const url = new URL(req.url);
  const isHttps = url.protocol === 'https:';
  if (!isHttps && url.protocol !== 'http:') return Promise.reject(new HttpError(`unsupported URL scheme ${url.protocol}`));
  const timeoutMs = req.timeoutMs ?? 10_000;
  const maxBody = req.maxBodyBytes ?? 8 * 1024 * 1024;
  const port = url.port || (isHttps ? '443' : '80');
  const hostname = url.hostname.replace(/^\[(.*)\]$/, '$1');
  const override = req.resolve?.get(`${hostname}:${port}`);

  const headers: Record<string, string> = { ...req.headers };
  if (req.body !== undefined && !Object.keys(headers).some((h) => h.toLowerCase() === 'content-length')) {
    headers['content-length'] = String(Buffer.byteLength(req.body));
  }
  const options: https.RequestOptions = {
    method: req.method ?? 'GET',
    hostname,
    port,
    path: `${url.pathname}${url.search}`,
    headers,
    agent: false,
  };
  if (req.socketPath) options.socketPath = req.socketPath;
  // An explicit Host header (even an empty one, which Caddy's admin API wants on a unix socket) wins.
  if (Object.keys(headers).some((h) => h.toLowerCase() === 'host')) options.setHost = false;
  if (override) options.lookup = fixedLookup(override);
  if (isHttps) {
    options.servername = isIP(hostname) ? undefined : hostname;
    if (req.ca && req.ca.length > 0) options.ca = [...tls.rootCertificates, ...req.ca];
  }

  return new Promise((resolve, reject) => {
    let settled = false;
    const fail = (err: Error) => {
      if (settled) return;
      settled = true;
      reject(err instanceof HttpError ? err : new HttpError(err.message, (err as NodeJS.ErrnoException).code));
    };
    const r = (isHttps ? https : http).request(options, (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (chunk: Buffer) => {
        if (size < maxBody) chunks.push(chunk);
        size += chunk.length;
      });
      res.on('error', fail);
      res.on('end', () => {
        if (settled) return;
        settled = true;
        const body = Buffer.concat(chunks);
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          body,
          text: () => body.toString('utf8'),
          json: () => JSON.parse(body.toString('utf8')),
        });
      });
    });
    r.setTimeout(timeoutMs, () => {
      r.destroy(new HttpError(`no response within ${timeoutMs} ms`, 'ETIMEDOUT'));
    });
    r.on('error', fail);
    if (req.body !== undefined) r.write(req.body);
    r.end();
  });
}

/** A dns.lookup replacement that always answers `address` (IPv4 or IPv6 literal). */
export function fixedLookup(address: string): LookupFunction {
  const family = isIP(address) || 4;
  return ((_host: string, opts: dns.LookupOptions, cb: (...args: unknown[]) => void) => {
    if (typeof opts === 'function') {
      (opts as (...args: unknown[]) => void)(null, address, family);
    } else if (opts?.all) {
      cb(null, [{ address, family }]);
    } else {
      cb(null, address, family);
    }
  }) as unknown as LookupFunction;
}

/** Parse curl-style "host:port:address" entries into a lookup map. */
export function parseResolve(entries: string[]): Map<string, string> {
  const map = new Map<string, string>();
  for (const e of entries) {
    const m = /^([^:\s]+):(\d+):(.+)$/.exec(e);
    if (!m) throw new Error(`--resolve ${e}: expected host:port:address`);
    const address = m[3].replace(/^\[(.*)\]$/, '$1');
    if (!isIP(address)) throw new Error(`--resolve ${e}: ${address} is not an IP address`);
    map.set(`${m[1].toLowerCase()}:${m[2]}`, address);
  }
  return map;
}

/** A short reason for a failed request, e.g. "ECONNREFUSED" or the TLS error. */
export function describeError(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as NodeJS.ErrnoException).code;
    return code && !err.message.includes(code) ? `${code}: ${err.message}` : err.message;
  }
  return String(err);
}
