// The connection from the edge to the origin (the VPS), under Cloudflare's
// SSL modes, and the 52x errors Cloudflare answers with when it fails.
//
//   off, flexible  plain HTTP to the origin's HTTP port, whatever the visitor used
//   full           the visitor's protocol: HTTPS (certificate not checked) or HTTP
//   strict         the same, and the certificate must chain to originCa and name the host
//
// Cloudflare's errors, by where the attempt stopped:
//   521  the origin refused the connection (web server down)
//   522  the TCP connection timed out
//   523  the origin's address is unreachable (no route, no such host)
//   525  the TLS handshake failed
//   526  the origin's certificate is not valid (strict only)
//   524  connected, but no response headers in time
//   520  connected, and the origin reset or answered something unparseable
import * as http from 'node:http';
import * as https from 'node:https';
import type { Socket } from 'node:net';
import type { Readable } from 'node:stream';
import type { SslMode } from './rules.ts';

export interface OriginTarget {
  /** Where the DNS record points: the VPS. */
  host: string;
  httpPort: number;
  httpsPort: number;
  /** PEM of the CAs Full (strict) accepts. */
  ca: string[];
  connectTimeoutMs: number;
  responseTimeoutMs: number;
}

export interface OriginRequest {
  mode: SslMode;
  visitorScheme: 'http' | 'https';
  /** The proxied host name: SNI and Host header. */
  hostname: string;
  method: string;
  /** Path and query, as the visitor sent them. */
  url: string;
  headers: http.OutgoingHttpHeaders;
  /** The request body, streamed; none for GET and HEAD. */
  body?: Readable;
}

export class OriginError extends Error {
  readonly status: 520 | 521 | 522 | 523 | 524 | 525 | 526;
  constructor(status: OriginError['status'], message: string) {
    super(message);
    this.name = 'OriginError';
    this.status = status;
  }
}

// Certificate problems (526), as opposed to a handshake that failed for any
// other reason (525): the OpenSSL verification codes and Node's name check.
const CERT_ERRORS = /CERT|SELF_SIGNED|UNABLE_TO_GET_ISSUER|UNABLE_TO_VERIFY|ALTNAME/;

export interface OriginClient {
  /** Sends the request and resolves with the response headers (the body still to come), or rejects with an OriginError. */
  request(r: OriginRequest): Promise<http.IncomingMessage>;
  close(): void;
}

export function originClient(target: OriginTarget): OriginClient {
  // One keep-alive pool per kind of connection, as Cloudflare keeps
  // connections to an origin open between requests.
  const plain = new http.Agent({ keepAlive: true });
  const unverified = new https.Agent({ keepAlive: true, rejectUnauthorized: false });
  const verified = new https.Agent({ keepAlive: true, rejectUnauthorized: true, ca: target.ca });

  const attempt = (r: OriginRequest) =>
    new Promise<http.IncomingMessage>((resolve, reject) => {
      const tls = r.mode !== 'off' && r.mode !== 'flexible' && r.visitorScheme === 'https';
      const options: https.RequestOptions = {
        host: target.host,
        port: tls ? target.httpsPort : target.httpPort,
        method: r.method,
        path: r.url,
        headers: r.headers,
        ...(tls ? { servername: r.hostname, agent: r.mode === 'strict' ? verified : unverified } : { agent: plain }),
      };
      const req = (tls ? https : http).request(options);

      // Where the attempt got to decides the error: see the table above.
      let connected = false;
      let timer: NodeJS.Timeout | undefined;
      const fail = (status: OriginError['status'], message: string) => {
        clearTimeout(timer);
        const err = new OriginError(status, message);
        req.destroy(err);
        reject(err);
      };
      const waitForResponse = () => {
        connected = true;
        clearTimeout(timer);
        timer = setTimeout(() => fail(524, `no response from the origin within ${target.responseTimeoutMs} ms`), target.responseTimeoutMs);
      };
      req.on('socket', (socket: Socket) => {
        if (!socket.connecting) return waitForResponse();
        timer = setTimeout(() => fail(522, `connecting to ${target.host} timed out`), target.connectTimeoutMs);
        // For TLS, "connected" means the handshake finished: the errors before it are 525/526.
        socket.once(tls ? 'secureConnect' : 'connect', waitForResponse);
        if (tls) {
          socket.once('connect', () => {
            clearTimeout(timer);
            timer = setTimeout(() => fail(525, 'the TLS handshake with the origin timed out'), target.connectTimeoutMs);
          });
        }
      });
      req.on('response', (res) => {
        clearTimeout(timer);
        resolve(res);
      });
      req.on('error', (e: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        if (e instanceof OriginError) return reject(e);
        const code = e.code ?? '';
        const wrapped = (status: OriginError['status']) => Object.assign(new OriginError(status, `${code || e.message} (${target.host})`), { cause: e, code, reused: req.reusedSocket });
        if (!connected) {
          if (code === 'ECONNREFUSED') return reject(wrapped(521));
          if (['EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN'].includes(code)) return reject(wrapped(523));
          if (code === 'ETIMEDOUT') return reject(wrapped(522));
          if (tls) return reject(wrapped(CERT_ERRORS.test(code) ? 526 : 525));
        }
        reject(wrapped(520));
      });
      if (r.body) r.body.pipe(req);
      else req.end();
    });

  return {
    async request(r) {
      try {
        return await attempt(r);
      } catch (e) {
        // A kept-alive connection the origin closed while it sat in the pool:
        // a bodiless request can safely go again on a new one.
        const reused = (e as { reused?: boolean }).reused && (e as { code?: string }).code === 'ECONNRESET';
        if (reused && !r.body) return attempt(r);
        throw e;
      }
    },
    close() {
      plain.destroy();
      unverified.destroy();
      verified.destroy();
    },
  };
}
