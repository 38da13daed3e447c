// What the UI's mirror and operations pages show, gathered from what the
// server already keeps: the mirror's upstream clients and running fills, the
// request activity (ops/activity.ts), the last maintenance runs, the storage's
// usage. Read-only, and never asks an upstream: looking must not cost a pull.
import type { RegistryConfig } from '../config/schema.ts';
import type { GcResult } from '../registry/gc.ts';
import type { LocalRegistry } from '../registry/local-registry.ts';
import type { MirrorRegistry } from '../proxy/mirror-registry.ts';
import type { PruneResult } from '../proxy/prune.ts';
import type { Activity, ActivityBucket } from './activity.ts';
import type { Maintenance, MaintenanceRun } from './maintenance.ts';
import { type Disk, StorageUsage, type Usage } from './storage-usage.ts';

export interface UpstreamState {
  host: string;
  /** 'down': it failed a moment ago, and cached tags are served without asking it until `downSince` + 10 s. */
  state: 'healthy' | 'down';
  downSince?: string;
  requests: number;
  errors: number;
  /** Docker Hub's ratelimit-remaining as its last answer said. */
  rateLimitRemaining?: number;
}

export interface MirrorStatus {
  cache: Usage & { maxBytes?: number };
  hits: number;
  misses: number;
  /** hits / (hits + misses); undefined before the first lookup. */
  hitRatio?: number;
  hitBytes: number;
  missBytes: number;
  upstreams: UpstreamState[];
  mostPulled: Array<{ name: string; pulls: number }>;
  fills: Array<{ digest: string; repository?: string; size?: number; received?: number }>;
  since: string;
}

export interface OperationsStatus {
  mode: 'registry' | 'mirror';
  gc?: MaintenanceRun<GcResult>;
  prune?: MaintenanceRun<PruneResult>;
  /** In-server schedules (gc.interval, cache.interval); 0: only on request (cron). */
  gcIntervalMs: number;
  pruneIntervalMs: number;
  storage: Usage & { driver: 'filesystem' | 's3'; disk?: Disk };
  series: ActivityBucket[];
  since: string;
}

const MOST_PULLED = 10;

export class StatusService {
  private readonly usage: StorageUsage;
  private readonly since = new Date().toISOString();
  private usageCountedAfter = '';

  constructor(
    private readonly deps: {
      config: RegistryConfig;
      registry: LocalRegistry;
      mirror?: MirrorRegistry;
      maintenance: Maintenance;
      activity: Activity;
    },
  ) {
    this.usage = new StorageUsage(deps.registry, deps.mirror?.filled, deps.config.storage.filesystem?.rootdirectory);
    // A push or delete changes what the private registry stores; the mirror's fills are counted as they commit.
    if (!deps.mirror) deps.activity.onChange(() => this.usage.markStale());
  }

  get isMirror(): boolean {
    return this.deps.mirror !== undefined;
  }

  /** The mirror's state; `visible` says which repository names this visitor may see. */
  async mirror(visible: (name: string) => Promise<boolean>): Promise<MirrorStatus | undefined> {
    const { mirror, activity, config } = this.deps;
    if (!mirror) return undefined;
    const { hits, misses, hitBytes, missBytes } = activity.cache;
    const fills = [];
    for (const f of mirror.fillsInFlight()) if (!f.repository || (await visible(f.repository))) fills.push(f);
    return {
      cache: { ...(await this.storage()), maxBytes: config.cache?.maxsize },
      hits,
      misses,
      hitRatio: hits + misses > 0 ? hits / (hits + misses) : undefined,
      hitBytes,
      missBytes,
      upstreams: mirror.upstreamStates().map((u) => ({ ...u, state: u.downSince ? 'down' : 'healthy' })),
      mostPulled: await activity.topPulled(MOST_PULLED, visible),
      fills,
      since: this.since,
    };
  }

  async operations(): Promise<OperationsStatus> {
    const { config, activity } = this.deps;
    const { gc, prune } = await this.deps.maintenance.lastRuns();
    const [usage, disk] = await Promise.all([this.storage(gc, prune), this.usage.disk()]);
    return {
      mode: this.isMirror ? 'mirror' : 'registry',
      gc,
      prune,
      gcIntervalMs: config.gc?.interval ?? 0,
      pruneIntervalMs: config.cache?.interval ?? 0,
      storage: { ...usage, driver: config.storage.s3 ? 's3' : 'filesystem', disk },
      series: activity.series(),
      since: this.since,
    };
  }

  private async storage(gc?: MaintenanceRun<GcResult>, prune?: MaintenanceRun<PruneResult>): Promise<Usage> {
    if (!gc && !prune) ({ gc, prune } = await this.deps.maintenance.lastRuns());
    // A GC or prune that finished since the last count changed what is stored.
    const latest = [gc?.finishedAt ?? '', prune?.finishedAt ?? ''].sort().pop()!;
    if (latest > this.usageCountedAfter) {
      this.usageCountedAfter = latest;
      this.usage.markStale();
    }
    return this.usage.current();
  }
}
