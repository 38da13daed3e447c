// The request pipeline: health probes → route → read-only check → rate
// limits → authenticate → handler → errors → metrics and access log.
// Handlers never see a request they may not serve.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Authenticator, Identity } from '../auth/authenticator.ts';
import { RegistryError } from '../registry/errors.ts';
import type { RegistryService } from '../registry/types.ts';
import type { Health } from '../ops/health.ts';
import { sendReadiness } from '../ops/admin.ts';
import type { Logger } from '../ops/logger.ts';
import type { Metrics } from '../ops/metrics.ts';
import type { AccessRecord, CacheControl, RequestContext } from './context.ts';
import { endpointFor, isWriteMethod } from './dispatch.ts';
import { writeError } from './errors.ts';
import type { RateLimits } from './rate-limit.ts';
import { matchRoute, splitUrl } from './router.ts';

export interface AppOptions {
  service: RegistryService;
  authenticator: Authenticator;
  logger: Logger;
  accessLog: boolean;
  /** http.prefix: the path the API is mounted under (e.g. "/registry"). */
  prefix?: string;
  /** http.headers: added to every response. */
  headers?: Record<string, string | string[]>;
  cacheControl?: CacheControl;
  metrics?: Metrics;
  rateLimits?: RateLimits;
  /** Answers GET /healthz and /readyz on this listener too (for probes through the TLS front). */
  health?: Health;
}

export type RequestListener = (req: IncomingMessage, res: ServerResponse) => void;

export function createApp(options: AppOptions): RequestListener {
  const prefix = (options.prefix ?? '').replace(/\/+$/, '');
  const url = (path: string) => `${prefix}${path}`;
  const fixedHeaders: Array<[string, string | string[]]> = [
    ['Docker-Distribution-API-Version', 'registry/2.0'],
    ...Object.entries(options.headers ?? {}),
  ];
  const { metrics, rateLimits, logger } = options;

  return (req, res) => {
    const started = process.hrtime.bigint();
    for (const [k, v] of fixedHeaders) res.setHeader(k, v);
    const access: AccessRecord = {};
    let identity: Identity = {};
    let routeKind = 'unknown';
    const client = rateLimits ? rateLimits.clientIp(req) : req.socket.remoteAddress ?? '';

    const finish = (status: number) => {
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      if (metrics) {
        const method = req.method ?? 'GET';
        metrics.requests.inc({ route: routeKind, method, status });
        metrics.duration.observe({ route: routeKind, method }, seconds);
        if (access.bytesIn) metrics.bytesIn.inc({ route: routeKind }, access.bytesIn);
        if (access.bytesOut) metrics.bytesOut.inc({ route: routeKind }, access.bytesOut);
        if (access.cache) metrics.cache.inc({ kind: routeKind, result: access.cache });
      }
      if (!options.accessLog) return;
      logger.info(
        {
          method: req.method,
          path: req.url?.split('?')[0],
          status,
          durationMs: Math.round(seconds * 1e5) / 100,
          user: identity.user,
          client,
          ...access,
        },
        'request',
      );
    };

    const fail = (err: unknown) => {
      if (!(err instanceof RegistryError)) logger.error({ err, method: req.method, path: req.url }, 'request failed');
      const extra: Record<string, string> = {};
      if (err instanceof RegistryError && err.code === 'UNAUTHORIZED') {
        extra['WWW-Authenticate'] = options.authenticator.challenge;
      }
      if (err instanceof RegistryError && err.code === 'TOOMANYREQUESTS') {
        const retry = (err.detail as { retryAfterSeconds?: number } | undefined)?.retryAfterSeconds;
        if (retry) extra['Retry-After'] = String(retry);
      }
      // Answering before the body was read: close the connection rather than
      // reading (possibly gigabytes of) a body nobody will use.
      if (!req.complete) extra.Connection = 'close';
      finish(writeError(res, err, extra));
    };

    const run = async () => {
      let { pathname, query } = splitUrl(req.url ?? '/');
      if (options.health && req.method === 'GET' && (pathname === '/healthz' || pathname === '/readyz')) {
        routeKind = pathname.slice(1);
        if (pathname === '/healthz') {
          res.writeHead(200, { 'Content-Type': 'application/json' }).end('{"status":"ok"}');
        } else {
          await sendReadiness(res, options.health);
        }
        return finish(res.statusCode);
      }
      if (prefix) {
        if (!pathname.startsWith(`${prefix}/`)) throw new RegistryError('NAME_UNKNOWN', 'not found');
        pathname = pathname.slice(prefix.length);
      }
      const { canonicalName } = options.service;
      const ns = query.get('ns') ?? undefined;
      const route = matchRoute(pathname, canonicalName && ((name) => canonicalName.call(options.service, name, ns)));
      if (!route) throw new RegistryError('NAME_UNKNOWN', `no such API endpoint: ${pathname.slice(0, 200)}`);
      routeKind = route.kind;
      const endpoint = endpointFor(route, req.method);
      if (!endpoint) {
        throw new RegistryError('UNSUPPORTED', `${req.method} is not supported on ${route.kind}`);
      }
      if ((endpoint.writes || isWriteMethod(req.method)) && !options.service.capabilities.write) {
        throw new RegistryError('UNSUPPORTED', 'this registry is read-only: pushes and deletes are not accepted');
      }
      await rateLimits?.beforeAuth(client);
      // The failed-login budget is drawn on only by password checks that run
      // and by wrong credentials: good ones (cached, or checked once for many
      // concurrent requests) never spend it.
      identity = await options.authenticator.authenticate(req.headers.authorization, endpoint.access, rateLimits?.loginBudget(client));
      await rateLimits?.afterAuth(identity.user);
      if ('name' in route) access.repo = route.name;
      if ('reference' in route) access.reference = route.reference;
      const ctx: RequestContext = {
        req,
        res,
        route,
        query,
        service: options.service,
        identity,
        url,
        access,
        cacheControl: options.cacheControl ?? {},
      };
      await endpoint.handle(ctx);
      finish(res.statusCode);
    };

    metrics?.inFlight.inc();
    run()
      .catch(fail)
      .finally(() => metrics?.inFlight.dec());
  };
}
