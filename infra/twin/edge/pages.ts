// The answers the edge gives itself, in Cloudflare's style: a small HTML page
// for a browser, and `error code: NNNN` in plain text for anything else
// (which is what a registry client gets from Cloudflare, and what ends up in
// its error message).
import type { IncomingMessage, ServerResponse } from 'node:http';

export const ERRORS = {
  blocked: { status: 403, code: 1020, title: 'Access denied', detail: 'This request was blocked by a firewall rule of the website.' },
  // The name of a zone Cloudflare does not proxy, or an IP address as Host.
  unknownHost: { status: 403, code: 1003, title: 'Direct IP access not allowed', detail: 'This host name is not served by this edge.' },
  tooLarge: { status: 413, code: 413, title: 'Request entity too large', detail: 'The request body is larger than the plan allows.' },
  520: { status: 520, code: 520, title: 'Web server is returning an unknown error', detail: 'The origin reset the connection or answered something unexpected.' },
  521: { status: 521, code: 521, title: 'Web server is down', detail: 'The origin refused the connection.' },
  522: { status: 522, code: 522, title: 'Connection timed out', detail: 'The origin did not accept the connection in time.' },
  523: { status: 523, code: 523, title: 'Origin is unreachable', detail: 'There is no route to the origin.' },
  524: { status: 524, code: 524, title: 'A timeout occurred', detail: 'The origin accepted the connection but did not answer in time.' },
  525: { status: 525, code: 525, title: 'SSL handshake failed', detail: 'The TLS handshake with the origin failed.' },
  526: { status: 526, code: 526, title: 'Invalid SSL certificate', detail: 'The origin presented a certificate that Full (strict) does not accept.' },
} as const;

export type EdgeError = (typeof ERRORS)[keyof typeof ERRORS];

export function sendError(req: IncomingMessage, res: ServerResponse, e: EdgeError): void {
  const html = /text\/html/.test(req.headers.accept ?? '');
  const body = html
    ? `<!DOCTYPE html>\n<html><head><title>${e.title} | Error ${e.code}</title></head>` +
      `<body><h1>Error ${e.code}</h1><h2>${e.title}</h2><p>${e.detail}</p><p>Ray ID: ${res.getHeader('cf-ray') ?? ''}</p></body></html>\n`
    : `error code: ${e.code}`;
  // Node knows no reason phrase for 52x; Cloudflare's is the page's title.
  res.statusMessage = e.title;
  send(req, res, e.status, html ? 'text/html; charset=UTF-8' : 'text/plain; charset=UTF-8', body);
}

/** A block rule's own response (actionParameters.response). */
export function sendCustom(req: IncomingMessage, res: ServerResponse, r: { statusCode: number; content: string; contentType: string }): void {
  send(req, res, r.statusCode, r.contentType, r.content);
}

function send(req: IncomingMessage, res: ServerResponse, status: number, contentType: string, body: string): void {
  res.writeHead(status, {
    'content-type': contentType,
    'content-length': Buffer.byteLength(body),
    // Cloudflare's own error pages are never cached downstream.
    'cache-control': 'private, max-age=0, no-store, no-cache, must-revalidate',
  });
  res.end(req.method === 'HEAD' ? undefined : body);
}
