// Builds the whole server from a validated config: storage, registry
// service, auth, HTTP listener. Also used by the tests to run a real server
// on a random loopback port.
import { readFileSync } from 'node:fs';
import type * as http from 'node:http';
import { createRequire } from 'node:module';
import type { AddressInfo } from 'node:net';
import { createAuth } from '../auth/setup.ts';
import type { RegistryConfig } from '../config/schema.ts';
import { LocalRegistry } from '../registry/local-registry.ts';
import type { RegistryService } from '../registry/types.ts';
import { createLogger, type Logger } from '../log/logger.ts';
import { createAdminServer } from '../ops/admin.ts';
import { Health } from '../ops/health.ts';
import { Maintenance } from '../ops/maintenance.ts';
import type { Metrics } from '../ops/metrics.ts';
import { Activity } from '../ops/activity.ts';
import { StatusService } from '../ops/status.ts';
import { startUploadPurger } from '../ops/upload-purger.ts';
import { createDriver } from '../storage/factory.ts';
import { createApp } from './app.ts';
import { parserErrorResponse } from './errors.ts';
import type { CacheControl } from './context.ts';
import { RateLimits } from './rate-limit.ts';
import { lazyUi } from '../ui/lazy.ts';
// Imported when the config has a proxy section: the mirror's HTTP client (undici) is about 5 MB a private registry never needs.
import type { MirrorRegistry } from '../proxy/mirror-registry.ts';
import { Upstreams } from '../proxy/upstreams.ts';
import { createSharedState, type SharedState } from '../shared/shared-state.ts';

// node:http through require, not import: on Node 22 and later an ESM import runs node:http's lazy WebSocket
// getters, which load undici, tls and http2 (about 14 MB of RSS at start on the image's Node 24).
const { createServer, STATUS_CODES } = createRequire(import.meta.url)('node:http') as typeof http;

export interface RunningServer {
  readonly server: http.Server;
  readonly mirror?: MirrorRegistry;
  readonly url: string;
  readonly port: number;
  readonly registry: LocalRegistry;
  readonly service: RegistryService;
  readonly logger: Logger;
  /** Prometheus metrics, when something reads them: the admin listener, or a caller that asked (StartOptions.metrics). */
  readonly metrics?: Metrics;
  readonly maintenance: Maintenance;
  /** The admin listener (metrics, health, gc, prune), when admin is configured. */
  readonly adminUrl?: string;
  /** What this server shares with other replicas (Redis, or the bucket), chosen from the config. */
  readonly shared: SharedState;
  close(): Promise<void>;
}

/** storage.cache.blobdescriptor: inmemory — how long a repository link seen to exist is trusted. */
const LINK_CACHE_MS = 10_000;

export interface StartOptions {
  logger?: Logger;
  /** Overrides http.addr (tests pass "127.0.0.1:0"). */
  addr?: string;
  /** Overrides admin.addr. */
  adminAddr?: string;
  /** The clock tokens are issued and checked by (tests move it). */
  now?: () => number;
  /** Keep Prometheus metrics even without an admin listener to serve them (tests read them). */
  metrics?: boolean;
}

export async function startServer(config: RegistryConfig, options: StartOptions = {}): Promise<RunningServer> {
  const logger = options.logger ?? createLogger(config.loglevel ?? config.log.level, config.log.fields);
  const driver = await createDriver(config);
  const mirrorMode = config.proxy !== undefined;
  // With a redis section: connects now, and refuses to start if Redis cannot be reached.
  const shared = await createSharedState(config, logger, {
    onHashState: (event) => metrics?.uploadHashStates.inc({ event }),
  });
  if (shared.redis) logger.info({ redis: shared.redis.addr, shared: shared.summary }, 'sharing state with other replicas through redis');
  const registry = new LocalRegistry(driver, {
    deleteEnabled: config.storage.delete.enabled && !mirrorMode,
    readOnly: mirrorMode || (config.storage.maintenance?.readonly?.enabled ?? false),
    blobDescriptorCacheSize: config.storage.cache?.blobdescriptorsize,
    // distribution's inmemory descriptor cache also caches repository links (for good); ours for 10 s.
    linkCacheMs: config.storage.cache?.blobdescriptor === 'inmemory' ? LINK_CACHE_MS : 0,
    redirect: !(config.storage.redirect?.disable ?? false),
    shared: shared.registry,
  });
  const mirror = config.proxy
    ? new (await import('../proxy/mirror-registry.ts')).MirrorRegistry(registry, Upstreams.fromConfig(config.proxy), {
        tagFreshnessMs: config.proxy.tagfreshness,
        fillLimits: { floorMs: config.proxy.filltimeout, bytesPerSecond: config.proxy.fillminrate },
        logger,
        fills: shared.fills,
        manifestLocks: shared.manifestLocks,
      })
    : undefined;
  const service: RegistryService = mirror ?? registry;

  let auth: Awaited<ReturnType<typeof createAuth>>;
  try {
    auth = await createAuth(config, {
      logger,
      canonicalName: mirror && ((name) => mirror.canonicalName(name, undefined)),
      now: options.now,
      driver,
      robotChanges: shared.robotChanges,
    });
  } catch (err) {
    await shared.close();
    throw err;
  }

  // prom-client (and the event-loop delay histogram of its default metrics) only when something reads
  // the figures: without an admin listener nothing does, and they are about 1.5 MB at start.
  const metrics =
    config.admin || options.metrics ? new (await import('../ops/metrics.ts')).Metrics(() => [...(mirror?.clients.values() ?? [])]) : undefined;
  const checksPasswords = Boolean(config.auth?.htpasswd || config.auth?.access);
  const rateLimits = new RateLimits(config.ratelimit, (limit) => metrics?.rateLimited.inc({ limit }), shared.redis, checksPasswords);
  const health = new Health(registry, mirror, mirrorMode || registry.capabilities.write, shared.checks);
  const maintenance = new Maintenance(registry, config, metrics, logger, mirror && (() => mirror.flushAccessTimes()));
  // What the UI's status pages show of recent requests (a day of five-minute buckets: a few KB, no timer).
  const activity = config.ui.enabled ? new Activity() : undefined;

  const app = createApp({
    service,
    authenticator: auth.authenticator,
    tokens: auth.tokens,
    logger,
    accessLog: !config.log.accesslog.disabled,
    prefix: config.http.prefix,
    headers: config.http.headers,
    cacheControl: cacheControlFor(config),
    metrics,
    rateLimits: rateLimits.enabled || (config.ratelimit?.trustedproxies.length ?? 0) > 0 ? rateLimits : undefined,
    health,
    activity,
    ui: activity
      ? lazyUi({
          store: registry,
          service,
          authenticator: auth.authenticator,
          logins: checksPasswords,
          account: auth.account,
          limits: rateLimits,
          trustedProxies: config.ratelimit?.trustedproxies ?? [],
          logger,
          activity,
          status: new StatusService({ config, registry, mirror, maintenance, activity }),
        })
      : undefined,
  });

  const tls = config.http.tls;
  const secure = Boolean(tls?.certificate && tls.key);
  // node:https (and node:tls with it) only for a TLS listener: a plain HTTP server starts without them.
  const server: http.Server =
    tls?.certificate && tls.key
      ? (await import('node:https')).createServer({ cert: readFileSync(tls.certificate), key: readFileSync(tls.key) }, app)
      : createServer(app);
  // Pushes of large layers take as long as they take: no overall request deadline
  // unless the config asks for one.
  // Requests Node's parser refuses still get a spec error body (parserErrorResponse).
  server.on('clientError', (err: NodeJS.ErrnoException, socket) => {
    if (!socket.writable || err.code === 'ECONNRESET') return socket.destroy();
    const { status, body } = parserErrorResponse(err);
    socket.end(
      `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
    );
  });
  // CONNECT asks for a tunnel, which a registry never gives: Node would drop the connection without
  // a word; answer it like any other unsupported method.
  server.on('connect', (_req: http.IncomingMessage, socket: import('node:stream').Duplex) => {
    const body = JSON.stringify({ errors: [{ code: 'UNSUPPORTED', message: 'CONNECT is not supported: this is a registry, not a proxy' }] });
    socket.end(
      `HTTP/1.1 405 Method Not Allowed\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
    );
  });
  server.requestTimeout = config.http.timeout?.read ?? 0;
  server.headersTimeout = 60_000;
  server.keepAliveTimeout = config.http.timeout?.idle ?? 75_000;
  if (config.http.timeout?.write) server.timeout = config.http.timeout.write;

  const addr = options.addr ?? config.http.addr;
  try {
    await listen(server, config.http.net, addr);
  } catch (err) {
    await auth.close();
    await shared.close();
    throw err;
  }
  const address = server.address() as AddressInfo | string;
  const port = typeof address === 'string' ? 0 : address.port;
  const host = typeof address === 'string' ? address : hostForUrl(address.address);
  const url = typeof address === 'string' ? `unix:${address}` : `${secure ? 'https' : 'http'}://${host}:${port}`;

  const purger = startUploadPurger(registry, config, logger);
  maintenance.schedule();
  let admin: http.Server | undefined;
  let adminUrl: string | undefined;
  if (config.admin && metrics) {
    admin = createAdminServer({ metrics, health, maintenance, logger, token: config.admin.token });
    await listen(admin, 'tcp', options.adminAddr ?? config.admin.addr);
    const a = admin.address() as AddressInfo;
    adminUrl = `http://${hostForUrl(a.address)}:${a.port}`;
  }
  let closed = false;
  return {
    server,
    url,
    port,
    registry,
    service,
    mirror,
    logger,
    metrics,
    maintenance,
    adminUrl,
    shared,
    close: async () => {
      if (closed) return;
      closed = true;
      purger.stop();
      maintenance.stop();
      if (admin) {
        const a = admin;
        await new Promise<void>((resolve) => {
          a.close(() => resolve());
          a.closeAllConnections();
        });
      }
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      await mirror?.close();
      await auth.close();
      await shared.close();
    },
  };
}

/**
 * Content addressed by digest never changes, so a CDN may keep it for a year;
 * in mirror mode manifests by tag get a short max-age. With auth on, only
 * private caches (the client's own) may keep anything.
 */
function cacheControlFor(config: RegistryConfig): CacheControl {
  const scope = config.auth?.htpasswd || config.auth?.access || config.auth?.token ? 'private' : 'public';
  if (!config.proxy) return { immutable: `${scope}, max-age=31536000` };
  const tagSeconds = Math.floor(config.proxy.tagmaxage / 1000);
  return {
    immutable: `${scope}, max-age=31536000, immutable`,
    tag: tagSeconds > 0 ? `${scope}, max-age=${tagSeconds}` : 'no-cache',
  };
}

function listen(server: http.Server, net: 'tcp' | 'unix', addr: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    const done = () => {
      server.off('error', reject);
      resolve();
    };
    if (net === 'unix') {
      server.listen(addr, done);
      return;
    }
    const { host, port } = parseAddr(addr);
    server.listen({ host, port }, done);
  });
}

/** "host:port", ":port" or "[::1]:port" → listen arguments (empty host = all interfaces). */
export function parseAddr(addr: string): { host?: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d+)$/.exec(addr.trim());
  if (!m) throw new Error(`http.addr must look like host:port or :port, got "${addr}"`);
  const host = m[1] ?? m[2];
  return { host: host === '' ? undefined : host, port: Number(m[3]) };
}

function hostForUrl(address: string): string {
  if (address === '::' || address === '0.0.0.0') return '127.0.0.1';
  return address.includes(':') ? `[${address}]` : address;
}
