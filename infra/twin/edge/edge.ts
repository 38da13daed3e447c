// A stand-in for Cloudflare's edge in front of the mirror's origin (Caddy on
// the VPS twin), running the rulesets infra/render/cloudflare.ts renders.
//
// It runs in a container that has Node and nothing else: it imports only
// node:* modules and the files next to it (run it with `node main.ts`, see
// main.ts), and uses only TypeScript that Node can strip.
//
// Each request goes through the phases in Cloudflare's order:
//   1. Host: names outside `hosts` get 403 (error 1003)
//   2. configuration rules (http_config_settings): the SSL mode to the origin
//   3. WAF custom rules (http_request_firewall_custom): block → 403 (error 1020)
//   4. cache rules (http_request_cache_settings): eligible? a fresh copy? → HIT
//   5. late transform (http_request_late_transform): headers for the origin
//   6. the origin, under the SSL mode (origin.ts), and on the way back the
//      cache decides whether and how long to keep the response (cache.ts)
//
// CF-Cache-Status, as Cloudflare uses it:
//   HIT      served from the edge cache
//   MISS     eligible, fetched from the origin (and stored, if it may be)
//   EXPIRED  eligible, the stored copy was too old: fetched again
//   BYPASS   eligible, but the origin's headers forbade storing it
//            (no-store, private, no-cache, max-age=0, Set-Cookie)
//   DYNAMIC  not eligible (no cache rule and no static extension, a rule with
//            cache: false, or a method other than GET and HEAD)
//
// Not modelled: HTTP/2 and HTTP/3 to visitors, revalidation of expired
// entries with conditional requests, tiered cache, request coalescing
// (two simultaneous misses both go to the origin), compression, Always Use
// HTTPS, the TLS certificate chosen by SNI (one certificate serves all hosts).
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import * as http from 'node:http';
import * as https from 'node:https';
import { pipeline } from 'node:stream';
import type { AddressInfo } from 'node:net';
import { DiskCache, isEligible, parseRange, storeDecision, type CacheEntry } from './cache.ts';
import { parseEdgeConfig, type EdgeConfig } from './config.ts';
import { OriginError, originClient, type OriginClient } from './origin.ts';
import { ERRORS, sendCustom, sendError } from './pages.ts';
import { compileRulesets, requestFields, type CacheSettings, type CompiledRules, type HeaderOp } from './rules.ts';

export type { EdgeConfig } from './config.ts';

export type CacheStatus = 'HIT' | 'MISS' | 'EXPIRED' | 'BYPASS' | 'DYNAMIC';

/** One line of main.ts's output: what happened to one request. */
export interface LogEntry {
  time: string;
  ray: string;
  client: string;
  scheme: 'http' | 'https';
  method: string;
  host: string;
  path: string;
  status: number;
  /** Absent when the request never reached the cache phase (unknown host, blocked). */
  cache?: CacheStatus;
  /** The WAF rule that blocked the request. */
  blockedBy?: string;
  /** The cache rules that matched, in order. */
  cacheRules?: string[];
  /** The SSL mode of the origin connection. */
  ssl?: string;
  /** Why the origin could not be reached or failed mid-response. */
  error?: string;
  /** The client went away, or the response was cut short. */
  aborted?: boolean;
  ms: number;
}

export interface EdgeOptions {
  log?: (entry: LogEntry) => void;
  /** The clock of the cache's TTLs: tests move it on instead of waiting. */
  now?: () => number;
}

export interface Edge {
  ports: { http: number; https: number };
  close(): Promise<void>;
}

// Connection-level headers are between one hop and the next, never forwarded.
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'proxy-authenticate', 'proxy-authorization', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'expect']);

export async function startEdge(input: EdgeConfig, options: EdgeOptions = {}): Promise<Edge> {
  // The same checks and defaults as a config file gets.
  const config = parseEdgeConfig(input);
  const now = options.now ?? Date.now;
  const rules = compileRulesets(config.rulesets);
  const caPaths = Array.isArray(config.originCa) ? config.originCa : config.originCa ? [config.originCa] : [];
  const [cert, key, ...ca] = await Promise.all([readFile(config.tls.cert), readFile(config.tls.key), ...caPaths.map((f) => readFile(f, 'utf8'))]);
  const cache = await DiskCache.open(config.cacheDir, now);
  const origin = originClient({
    host: config.origin.host,
    httpPort: config.origin.httpPort!,
    httpsPort: config.origin.httpsPort!,
    ca,
    connectTimeoutMs: config.timeouts!.connectMs!,
    responseTimeoutMs: config.timeouts!.responseMs!,
  });
  const ctx: Context = { config, rules, cache, origin, now, log: options.log ?? (() => {}) };

  const handler = (scheme: 'http' | 'https') => (req: http.IncomingMessage, res: http.ServerResponse) => {
    handle(ctx, scheme, req, res).catch((e: Error) => {
      // A bug, not an origin failure: answer if we still can, and say so in the log.
      if (!res.headersSent) sendError(req, res, ERRORS[520]);
      else res.destroy(e);
      process.emitWarning(`edge: ${e.stack ?? e.message}`);
    });
  };
  // No request timeout: a push of a large layer may take as long as it takes.
  const httpServer = http.createServer({ requestTimeout: 0 }, handler('http'));
  const httpsServer = https.createServer({ cert, key, requestTimeout: 0 }, handler('https'));
  const listen = (server: http.Server, port: number) =>
    new Promise<number>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, config.listen.address, () => resolve((server.address() as AddressInfo).port));
    });
  const ports = { http: await listen(httpServer, config.listen.http), https: await listen(httpsServer, config.listen.https) };
  const sweeper = setInterval(() => void cache.sweep().catch(() => {}), 60_000).unref();

  return {
    ports,
    async close() {
      clearInterval(sweeper);
      const closed = [httpServer, httpsServer].map((s) => new Promise<void>((resolve) => s.close(() => resolve())));
      for (const s of [httpServer, httpsServer]) s.closeAllConnections();
      await Promise.all(closed);
      origin.close();
    },
  };
}

interface Context {
  config: EdgeConfig;
  rules: CompiledRules;
  cache: DiskCache;
  origin: OriginClient;
  now: () => number;
  log: (entry: LogEntry) => void;
}

async function handle(ctx: Context, scheme: 'http' | 'https', req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
  const started = performance.now();
  const ray = `${randomBytes(8).toString('hex')}-${ctx.config.colo}`;
  const host = hostName(req.headers.host);
  const clientIp = (req.socket.remoteAddress ?? '').replace(/^::ffff:(?=\d+\.\d+\.\d+\.\d+$)/, '');
  const method = req.method ?? 'GET';
  const url = req.url ?? '/';
  const entry: LogEntry = { time: new Date().toISOString(), ray, client: clientIp, scheme, method, host, path: url, status: 0, ms: 0 };
  res.on('close', () => {
    entry.status = res.statusCode;
    entry.ms = Math.round(performance.now() - started);
    if (!res.writableFinished) entry.aborted = true;
    ctx.log(entry);
  });
  res.setHeader('cf-ray', ray);
  res.setHeader('server', 'cloudflare');

  // 1. a host name this edge proxies
  if (!ctx.config.hosts.includes(host)) return sendError(req, res, ERRORS.unknownHost);
  const fields = requestFields({ scheme, host, method, url, userAgent: req.headers['user-agent'] ?? '', clientIp });

  // 2. configuration rules
  const ssl = ctx.rules.sslMode(fields) ?? ctx.config.zoneSsl ?? 'full';
  entry.ssl = ssl;

  // 3. WAF custom rules
  const verdict = ctx.rules.firewall(fields);
  if (verdict.action === 'block') {
    entry.blockedBy = verdict.ref;
    return verdict.response ? sendCustom(req, res, verdict.response) : sendError(req, res, ERRORS.blocked);
  }
  if (Number(req.headers['content-length'] ?? 0) > ctx.config.maxRequestBodyBytes!) return sendError(req, res, ERRORS.tooLarge);

  // 4. cache rules, and the cache itself
  const settings = ctx.rules.cacheSettings(fields);
  if (settings) entry.cacheRules = settings.matched;
  const eligible = isEligible(method, fields['http.request.uri.path'], settings);
  // The key is the URL alone, as on Cloudflare's free plan: not the Accept
  // header, so two clients asking one URL for different media types share one copy.
  const key = `${scheme}://${host}${url}`;
  const found = eligible ? ctx.cache.lookup(key) : undefined;
  if (found?.fresh) {
    entry.cache = 'HIT';
    if (await serveCached(ctx, found.entry, settings, req, res)) return;
  }
  const expired = found !== undefined && !found.fresh;
  entry.cache = !eligible ? 'DYNAMIC' : expired ? 'EXPIRED' : 'MISS';

  // 5. late transform, 6. the origin
  const hasBody = req.headers['content-length'] !== undefined ? req.headers['content-length'] !== '0' : req.headers['transfer-encoding'] !== undefined;
  let upstream: http.IncomingMessage;
  try {
    upstream = await ctx.origin.request({
      mode: ssl,
      visitorScheme: scheme,
      hostname: host,
      method,
      url,
      headers: originHeaders(req, { host, scheme, clientIp, ray }, ctx.rules.requestHeaders(fields)),
      ...(hasBody ? { body: req } : {}),
    });
  } catch (e) {
    if (!(e instanceof OriginError)) throw e;
    entry.error = e.message;
    delete entry.cache; // Cloudflare's 52x pages carry no cache status
    return sendError(req, res, ERRORS[e.status]);
  }

  const status = upstream.statusCode ?? 502;
  const headers = responseHeaders(upstream.headers);
  let fill: ReturnType<DiskCache['fill']> | undefined;
  if (eligible && method === 'GET') {
    const decision = storeDecision(settings, status, upstream.headers);
    const length = upstream.headers['content-length'] === undefined ? undefined : Number(upstream.headers['content-length']);
    const fits = length === undefined || length <= ctx.config.maxCacheableBytes!;
    if (decision.store && fits) {
      fill = ctx.cache.fill(key, { status, headers, ttlSeconds: decision.ttlSeconds, expectedBytes: length, maxBytes: ctx.config.maxCacheableBytes!, complete: () => upstream.complete });
    } else {
      if (!decision.store && decision.reason === 'origin') entry.cache = 'BYPASS';
      if (expired) await ctx.cache.remove(key);
    }
  }
  res.writeHead(status, { ...withBrowserTtl(headers, settings, status), 'cf-cache-status': entry.cache });
  const done = (err: NodeJS.ErrnoException | null) => {
    if (err && !entry.error) entry.error = `response cut short: ${err.code ?? err.message}`;
  };
  if (fill) pipeline(upstream, fill, res, done);
  else pipeline(upstream, res, done);
}

/** Serves a stored response: HEAD, a Range, or If-None-Match. false when its body vanished meanwhile (treat as a miss). */
async function serveCached(ctx: Context, stored: CacheEntry, settings: CacheSettings | undefined, req: http.IncomingMessage, res: http.ServerResponse): Promise<boolean> {
  const body = await ctx.cache.openBody(stored);
  if (!body) return false;
  const headers: Record<string, string | string[] | number> = {
    ...withBrowserTtl(stored.headers, settings, stored.status),
    age: Math.max(0, Math.floor((ctx.now() - stored.storedAt) / 1000)),
    'cf-cache-status': 'HIT',
  };
  const etag = stored.headers.etag as string | undefined;
  const ifNoneMatch = req.headers['if-none-match'];
  if (etag && ifNoneMatch && ifNoneMatch.split(',').some((t) => t.trim() === '*' || weak(t.trim()) === weak(etag))) {
    await body.close();
    delete headers['content-length'];
    res.writeHead(304, headers);
    res.end();
    return true;
  }

  let status = stored.status;
  let start = 0;
  let end = stored.size - 1;
  if (stored.status === 200) {
    headers['accept-ranges'] = 'bytes';
    // If-Range: the range applies only to the version the client already has.
    const ifRange = req.headers['if-range'];
    const range = ifRange === undefined || ifRange === etag ? parseRange(req.headers.range, stored.size) : undefined;
    if (range === 'unsatisfiable') {
      await body.close();
      res.writeHead(416, { ...headers, 'content-range': `bytes */${stored.size}`, 'content-length': 0 });
      res.end();
      return true;
    }
    if (range) {
      ({ start, end } = range);
      status = 206;
      headers['content-range'] = `bytes ${start}-${end}/${stored.size}`;
      headers['content-length'] = end - start + 1;
    }
  }
  res.writeHead(status, headers);
  if (req.method === 'HEAD' || end < start) {
    await body.close();
    res.end();
    return true;
  }
  pipeline(body.createReadStream({ start, end }), res, () => {});
  return true;
}

const weak = (tag: string) => tag.replace(/^W\//, '');

/** The request as the origin gets it: the visitor's headers, Cloudflare's own, then the transform rules'. */
function originHeaders(req: http.IncomingMessage, v: { host: string; scheme: string; clientIp: string; ray: string }, ops: HeaderOp[]): http.OutgoingHttpHeaders {
  const dropped = new Set([...HOP_BY_HOP, 'host', ...connectionTokens(req.headers.connection)]);
  const out: http.OutgoingHttpHeaders = {};
  for (const [name, value] of Object.entries(req.headers)) if (value !== undefined && !dropped.has(name)) out[name] = value;
  const xff = req.headers['x-forwarded-for'];
  Object.assign(out, {
    host: v.host,
    'x-forwarded-for': xff ? `${xff}, ${v.clientIp}` : v.clientIp,
    'x-forwarded-proto': v.scheme,
    'cf-connecting-ip': v.clientIp,
    'cf-ray': v.ray,
    'cf-visitor': JSON.stringify({ scheme: v.scheme }),
    'cdn-loop': req.headers['cdn-loop'] ? `${req.headers['cdn-loop']}, cloudflare` : 'cloudflare',
  });
  for (const op of ops) {
    if (op.operation === 'remove') delete out[op.name];
    else if (op.operation === 'set') out[op.name] = op.value;
    else {
      const prev = out[op.name];
      out[op.name] = prev === undefined ? op.value : [...(Array.isArray(prev) ? prev : [String(prev)]), op.value];
    }
  }
  return out;
}

/** The origin's response headers worth passing on (and storing): no hop-by-hop ones, Cloudflare's Server. */
function responseHeaders(headers: http.IncomingHttpHeaders): Record<string, string | string[]> {
  const dropped = new Set([...HOP_BY_HOP, 'server', ...connectionTokens(headers.connection)]);
  const out: Record<string, string | string[]> = {};
  for (const [name, value] of Object.entries(headers)) if (value !== undefined && !dropped.has(name)) out[name] = value;
  return out;
}

/** Browser TTL override_origin replaces the Cache-Control visitors see; respect_origin passes the origin's on. */
function withBrowserTtl(headers: Record<string, string | string[]>, settings: CacheSettings | undefined, status: number): Record<string, string | string[]> {
  const b = settings?.browserTtl;
  if (b?.mode !== 'override_origin' || status >= 400) return { ...headers };
  return { ...headers, 'cache-control': `max-age=${b.default}` };
}

function connectionTokens(value: string | undefined): string[] {
  return (value ?? '').split(',').map((t) => t.trim().toLowerCase()).filter(Boolean);
}

/** The Host header's name: lower case, no port, no trailing dot. */
function hostName(value: string | undefined): string {
  const v = (value ?? '').trim().toLowerCase();
  const name = v.startsWith('[') ? v.slice(0, v.indexOf(']') + 1) : v.split(':')[0];
  return name.replace(/\.$/, '');
}
