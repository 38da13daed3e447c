// Prometheus metrics (prom-client), one registry per server instance so that
// several servers in one process (tests) do not share counters.
import { createRequire } from 'node:module';
import type * as Prom from 'prom-client';
import type { UpstreamClient } from '../proxy/upstream-client.ts';

// The package's entry also loads the Pushgateway client (node:https, tls, zlib) and the cluster aggregator,
// neither used here: the files of the parts used are loaded instead.
const load = createRequire(import.meta.url);
const Counter = load('prom-client/lib/counter.js') as typeof Prom.Counter;
type Counter<T extends string> = Prom.Counter<T>;
const Gauge = load('prom-client/lib/gauge.js') as typeof Prom.Gauge;
type Gauge<T extends string = string> = Prom.Gauge<T>;
const Histogram = load('prom-client/lib/histogram.js') as typeof Prom.Histogram;
type Histogram<T extends string> = Prom.Histogram<T>;
const Registry = load('prom-client/lib/registry.js') as typeof Prom.Registry;
const collectDefaultMetrics = load('prom-client/lib/defaultMetrics.js') as typeof Prom.collectDefaultMetrics;

export class Metrics {
  readonly registry = new Registry();
  readonly requests: Counter<'route' | 'method' | 'status'>;
  readonly inFlight: Gauge;
  readonly duration: Histogram<'route' | 'method'>;
  readonly bytesIn: Counter<'route'>;
  readonly bytesOut: Counter<'route'>;
  readonly cache: Counter<'kind' | 'result'>;
  readonly storageBytes: Gauge;
  readonly gcRuns: Counter<'kind' | 'result'>;
  readonly bytesFreed: Counter<'kind'>;
  readonly rateLimited: Counter<'limit'>;
  readonly uploadHashStates: Counter<'event'>;
  readonly authDecisions: Counter<'result'>;

  constructor(upstreams: () => UpstreamClient[] = () => []) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry, prefix: 'registry_' });
    this.requests = new Counter({
      name: 'registry_http_requests_total',
      help: 'API requests by route, method and status',
      labelNames: ['route', 'method', 'status'],
      registers,
    });
    this.duration = new Histogram({
      name: 'registry_http_request_duration_seconds',
      help: 'API request latency (until the response is complete)',
      labelNames: ['route', 'method'],
      buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120],
      registers,
    });
    this.inFlight = new Gauge({
      name: 'registry_http_requests_in_flight',
      help: 'Requests being handled (until their handler, cleanup included, has returned)',
      registers,
    });
    this.bytesIn = new Counter({ name: 'registry_http_received_bytes_total', help: 'Request body bytes', labelNames: ['route'], registers });
    this.bytesOut = new Counter({ name: 'registry_http_sent_bytes_total', help: 'Response body bytes', labelNames: ['route'], registers });
    this.cache = new Counter({
      name: 'registry_cache_requests_total',
      help: 'Mirror cache lookups by kind (blob, manifest) and result (hit, miss)',
      labelNames: ['kind', 'result'],
      registers,
    });
    this.storageBytes = new Gauge({ name: 'registry_storage_bytes', help: 'Bytes of blob data stored (as of the last GC or prune)', registers });
    this.gcRuns = new Counter({
      name: 'registry_maintenance_runs_total',
      help: 'GC and prune runs by result',
      labelNames: ['kind', 'result'],
      registers,
    });
    this.bytesFreed = new Counter({ name: 'registry_maintenance_freed_bytes_total', help: 'Bytes freed by GC and prune', labelNames: ['kind'], registers });
    this.rateLimited = new Counter({ name: 'registry_rate_limited_total', help: 'Requests refused by a rate limit', labelNames: ['limit'], registers });
    this.uploadHashStates = new Counter({
      name: 'registry_upload_hash_states_total',
      help: 'Resumable upload hash states saved, loaded (another replica continued a session), missing, and commits that re-read the data (rehashed)',
      labelNames: ['event'],
      registers,
    });

    this.authDecisions = new Counter({
      name: 'registry_auth_decisions_total',
      help: 'Authentication and access decisions on registry requests and the token endpoint, by result',
      labelNames: ['result'],
      registers,
    });

    // Upstream figures live in the clients; read them at scrape time.
    const upstreamGauge = (name: string, help: string, read: (c: UpstreamClient) => number | undefined) =>
      new Gauge({
        name,
        help,
        labelNames: ['upstream'],
        registers,
        collect() {
          this.reset();
          for (const c of upstreams()) {
            const v = read(c);
            if (v !== undefined) this.set({ upstream: c.upstream.host }, v);
          }
        },
      });
    upstreamGauge('registry_upstream_requests', 'Requests sent to each upstream', (c) => c.stats.requests);
    upstreamGauge('registry_upstream_errors', 'Failed upstream requests', (c) => c.stats.errors);
    upstreamGauge('registry_upstream_token_cache_entries', 'Upstream auth tokens cached (one per repository scope, bounded)', (c) => c.tokenCacheSize);
    upstreamGauge('registry_upstream_ratelimit_remaining', "Upstream's ratelimit-remaining (Docker Hub pulls left)", (c) => c.stats.rateLimitRemaining);
  }
}
