// The request pipeline: route → read-only check → authenticate → handler →
// errors → access log. Handlers never see a request they may not serve.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Authenticator, Identity } from '../auth/authenticator.ts';
import { RegistryError } from '../registry/errors.ts';
import type { RegistryService } from '../registry/types.ts';
import type { Logger } from '../ops/logger.ts';
import type { AccessRecord, CacheControl, RequestContext } from './context.ts';
import { endpointFor, isWriteMethod } from './dispatch.ts';
import { writeError } from './errors.ts';
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
}

export type RequestListener = (req: IncomingMessage, res: ServerResponse) => void;

export function createApp(options: AppOptions): RequestListener {
  const prefix = (options.prefix ?? '').replace(/\/+$/, '');
  const url = (path: string) => `${prefix}${path}`;
  const fixedHeaders: Array<[string, string | string[]]> = [
    ['Docker-Distribution-API-Version', 'registry/2.0'],
    ...Object.entries(options.headers ?? {}),
  ];

  return (req, res) => {
    const started = process.hrtime.bigint();
    for (const [k, v] of fixedHeaders) res.setHeader(k, v);
    const access: AccessRecord = {};
    let identity: Identity = {};

    const finish = (status: number) => {
      if (!options.accessLog) return;
      const durationMs = Number(process.hrtime.bigint() - started) / 1e6;
      options.logger.info(
        {
          method: req.method,
          path: req.url?.split('?')[0],
          status,
          durationMs: Math.round(durationMs * 100) / 100,
          user: identity.user,
          client: req.socket.remoteAddress,
          ...access,
        },
        'request',
      );
    };

    const fail = (err: unknown) => {
      if (!(err instanceof RegistryError)) options.logger.error({ err, method: req.method, path: req.url }, 'request failed');
      const extra: Record<string, string> = {};
      if (err instanceof RegistryError && err.code === 'UNAUTHORIZED') {
        extra['WWW-Authenticate'] = options.authenticator.challenge;
      }
      // Answering before the body was read: close the connection rather than
      // reading (possibly gigabytes of) a body nobody will use.
      if (!req.complete) extra.Connection = 'close';
      finish(writeError(res, err, extra));
    };

    const run = async () => {
      let pathname = splitUrl(req.url ?? '/').pathname;
      const { query } = splitUrl(req.url ?? '/');
      if (prefix) {
        if (!pathname.startsWith(`${prefix}/`)) throw new RegistryError('NAME_UNKNOWN', 'not found');
        pathname = pathname.slice(prefix.length);
      }
      const { canonicalName } = options.service;
      const ns = query.get('ns') ?? undefined;
      const route = matchRoute(pathname, canonicalName && ((name) => canonicalName.call(options.service, name, ns)));
      if (!route) throw new RegistryError('NAME_UNKNOWN', `no such API endpoint: ${pathname.slice(0, 200)}`);
      const endpoint = endpointFor(route, req.method);
      if (!endpoint) {
        throw new RegistryError('UNSUPPORTED', `${req.method} is not supported on ${route.kind}`);
      }
      if ((endpoint.writes || isWriteMethod(req.method)) && !options.service.capabilities.write) {
        throw new RegistryError('UNSUPPORTED', 'this registry is read-only: pushes and deletes are not accepted');
      }
      identity = await options.authenticator.authenticate(req.headers.authorization, endpoint.access);
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

    run().catch(fail);
  };
}
