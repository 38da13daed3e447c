// The request pipeline: health probes → route → read-only check → rate
// limits → authenticate → handler → errors → metrics and access log.
// Handlers never see a request they may not serve.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AuthRequest, Identity, RequestAuthenticator } from '../auth/authenticator.ts';
import { BearerChallenge, JWKS_PATH, TOKEN_PATH } from '../auth/token-auth.ts';
import type { TokenService } from '../auth/token-service.ts';
import { RegistryError } from '../registry/errors.ts';
import type { RegistryService } from '../registry/types.ts';
import type { Health } from '../ops/health.ts';
import { sendReadiness } from '../ops/admin.ts';
import type { Logger } from '../log/logger.ts';
import type { Metrics } from '../ops/metrics.ts';
import type { Activity } from '../ops/activity.ts';
import type { AccessRecord, CacheControl, RequestContext } from './context.ts';
import { endpointFor, isWriteMethod } from './dispatch.ts';
import { writeError } from './errors.ts';
import { jwksEndpoint } from './handlers/jwks.ts';
import { tokenEndpoint } from './handlers/token.ts';
import type { RateLimits } from './rate-limit.ts';
import type { UiHandler } from '../ui/handler.ts';
import { matchRoute, splitUrl } from './router.ts';

export interface AppOptions {
  service: RegistryService;
  authenticator: RequestAuthenticator;
  /** The built-in token server, answering /auth/token (auth.access). */
  tokens?: TokenService;
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
  /** The web UI under <prefix>/ui/ (ui.enabled). */
  ui?: UiHandler;
  /** Told of every finished request (the UI's recent activity). */
  activity?: Activity;
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
    let authRequest: AuthRequest | undefined;
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
      options.activity?.record({ route: routeKind, method: req.method ?? 'GET', status, repo: access.repo, bytesOut: access.bytesOut, cache: access.cache });
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
        extra['WWW-Authenticate'] = options.authenticator.challengeFor(authRequest, err);
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
      if (options.ui && (pathname === '/ui' || pathname.startsWith('/ui/'))) {
        routeKind = 'ui';
        identity = { user: await options.ui(req, res, { pathname, query, client, prefix }) };
        return finish(res.statusCode);
      }
      if (options.tokens && (pathname === TOKEN_PATH || pathname === `${TOKEN_PATH}/`)) {
        routeKind = 'token';
        const user = await tokenEndpoint({ req, res, query, tokens: options.tokens, client, rateLimits });
        identity = { user };
        if (res.statusCode === 200 || res.statusCode === 401) metrics?.authDecisions.inc({ result: res.statusCode === 200 ? 'token_issued' : 'token_refused' });
        return finish(res.statusCode);
      }
      if (options.tokens && pathname === JWKS_PATH) {
        routeKind = 'jwks';
        await jwksEndpoint(req, res, options.tokens);
        return finish(res.statusCode);
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
      authRequest = {
        authorization: req.headers.authorization,
        access: endpoint.access,
        repository: 'name' in route ? route.name : undefined,
        catalog: route.kind === 'catalog',
        origin: `${originOf(req)}${prefix}`,
        budget: rateLimits?.loginBudget(client),
      };
      try {
        identity = await options.authenticator.authenticateRequest(authRequest);
      } catch (err) {
        metrics?.authDecisions.inc({ result: authRefusal(err) });
        throw err;
      }
      metrics?.authDecisions.inc({ result: 'allowed' });
      await rateLimits?.afterAuth(identity.user);
      // A mount from a repository the client may not pull would hand it that
      // repository's blob: such a POST starts a plain upload instead.
      const from = query.get('from');
      if (route.kind === 'uploads' && from !== null && identity.may && !identity.may(from, 'pull')) {
        query.delete('mount');
        query.delete('from');
      }
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

/** The result label of registry_auth_decisions_total for a refused request. */
function authRefusal(err: unknown): string {
  if (err instanceof BearerChallenge && err.error === 'insufficient_scope') return 'insufficient_scope';
  if (!(err instanceof RegistryError)) return 'error';
  if (err.code === 'DENIED') return 'denied';
  if (err.code === 'UNAUTHORIZED') return 'unauthorized';
  if (err.code === 'TOOMANYREQUESTS') return 'rate_limited';
  return 'error';
}

/** scheme://host the client used; behind a proxy, as the proxy says (it only names where this client goes). */
function originOf(req: IncomingMessage): string {
  const forwarded = req.headers['x-forwarded-proto'];
  const proto = (Array.isArray(forwarded) ? forwarded[0] : forwarded)?.split(',')[0].trim();
  const scheme = proto === 'https' || proto === 'http' ? proto : 'encrypted' in req.socket && req.socket.encrypted ? 'https' : 'http';
  return `${scheme}://${req.headers.host ?? 'localhost'}`;
}
