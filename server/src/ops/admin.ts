// The admin listener (admin.addr, loopback by default): Prometheus metrics,
// health, and the maintenance endpoints the host's cron jobs call. Kept off
// the public listener so that nothing here is reachable through Caddy.
import type * as http from 'node:http';
import { createRequire } from 'node:module';
import { safeEqual } from '../auth/htpasswd.ts';
import type { Health } from './health.ts';
import type { Logger } from '../log/logger.ts';
import type { Maintenance } from './maintenance.ts';
import type { Metrics } from './metrics.ts';

// Through require, as in http/server.ts: an ESM import of node:http costs about 14 MB on Node 22 and later.
const { createServer } = createRequire(import.meta.url)('node:http') as typeof http;

export interface AdminOptions {
  metrics: Metrics;
  health: Health;
  maintenance: Maintenance;
  logger: Logger;
  /** When set, POST /admin/* need `Authorization: Bearer <token>`. */
  token?: string;
}

export function createAdminServer(options: AdminOptions): http.Server {
  return createServer((req, res) => {
    handle(req, res, options).catch((err) => {
      options.logger.error({ err, path: req.url }, 'admin request failed');
      send(res, 500, { error: (err as Error).message });
    });
  });
}

async function handle(req: http.IncomingMessage, res: http.ServerResponse, options: AdminOptions): Promise<void> {
  const url = new URL(req.url ?? '/', 'http://admin');
  const route = `${req.method} ${url.pathname}`;
  switch (route) {
    case 'GET /metrics': {
      const body = await options.metrics.registry.metrics();
      res.writeHead(200, { 'Content-Type': options.metrics.registry.contentType }).end(body);
      return;
    }
    case 'GET /healthz':
      return send(res, 200, { status: 'ok' });
    case 'GET /readyz':
      return sendReadiness(res, options.health);
    case 'POST /admin/gc':
    case 'POST /admin/prune': {
      if (options.token && !authorized(req, options.token)) {
        res.setHeader('WWW-Authenticate', 'Bearer realm="registry-admin"');
        return send(res, 401, { error: 'admin token required' });
      }
      const dryRun = flag(url, 'dryrun');
      if (url.pathname === '/admin/gc') {
        return send(res, 200, await options.maintenance.gc({ dryRun, deleteUntagged: optionalFlag(url, 'deleteuntagged') }));
      }
      if (!options.maintenance.isMirror) return send(res, 409, { error: 'prune is for mirror caches; use /admin/gc on a private registry' });
      return send(res, 200, await options.maintenance.prune({ dryRun }));
    }
    default:
      return send(res, 404, { error: `no admin endpoint ${route}` });
  }
}

export async function sendReadiness(res: http.ServerResponse, health: Health): Promise<void> {
  const r = await health.readiness();
  send(res, r.ready ? 200 : 503, { status: r.ready ? 'ready' : 'not ready', checks: r.checks });
}

function authorized(req: http.IncomingMessage, token: string): boolean {
  const m = /^Bearer\s+(.+)$/i.exec(req.headers.authorization ?? '');
  return m !== null && safeEqual(m[1].trim(), token);
}

function flag(url: URL, name: string): boolean {
  return optionalFlag(url, name) ?? false;
}

function optionalFlag(url: URL, name: string): boolean | undefined {
  const v = url.searchParams.get(name);
  if (v === null) return undefined;
  return v === '' || v === '1' || v.toLowerCase() === 'true';
}

function send(res: http.ServerResponse, status: number, value: unknown): void {
  const body = JSON.stringify(value);
  res.writeHead(status, { 'Content-Type': 'application/json; charset=utf-8', 'Content-Length': Buffer.byteLength(body) }).end(body);
}
