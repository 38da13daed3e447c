// Runs GC and cache pruning for a serving registry: on demand (admin
// endpoints) and on the schedules from the config (gc.interval,
// cache.interval), recording every run in metrics and logs.
import type { RegistryConfig } from '../config/schema.ts';
import { collectGarbage, type GcResult } from '../registry/gc.ts';
import type { LocalRegistry } from '../registry/local-registry.ts';
import { pruneCache, type PruneResult } from '../proxy/prune.ts';
import type { Logger } from '../log/logger.ts';
import type { Metrics } from './metrics.ts';
import { loadRun, type MaintenanceKind, type MaintenanceRun, saveRun } from './maintenance-record.ts';

export type { MaintenanceRun } from './maintenance-record.ts';

const WEEK_MS = 168 * 3_600_000;

export class Maintenance {
  private readonly timers: NodeJS.Timeout[] = [];
  /** The last GC and prune runs of this process, dry runs included. */
  private readonly last: { gc?: MaintenanceRun<GcResult>; prune?: MaintenanceRun<PruneResult> } = {};

  constructor(
    private readonly registry: LocalRegistry,
    private readonly config: RegistryConfig,
    private readonly metrics: Metrics | undefined,
    private readonly logger: Logger,
    /** The mirror's last-use times not written yet (they are written a few seconds late): written before a prune. */
    private readonly flushAccessTimes?: () => Promise<void>,
  ) {}

  get isMirror(): boolean {
    return this.config.proxy !== undefined;
  }

  async gc(options: { dryRun: boolean; deleteUntagged?: boolean }): Promise<GcResult> {
    const gc = this.config.gc;
    const startedAt = new Date().toISOString();
    try {
      const result = await collectGarbage(this.registry, {
        dryRun: options.dryRun,
        deleteUntagged: options.deleteUntagged ?? gc?.deleteuntagged ?? false,
        graceMs: gc?.graceperiod ?? 3_600_000,
      });
      this.metrics?.gcRuns.inc({ kind: 'gc', result: 'ok' });
      if (!result.dryRun) {
        this.metrics?.bytesFreed.inc({ kind: 'gc' }, result.bytesFreed);
        this.metrics?.storageBytes.set(result.storedBytes);
      }
      this.logger.info({ gc: result }, 'garbage collection finished');
      await this.remember('gc', { startedAt, finishedAt: new Date().toISOString(), result }, result.dryRun);
      return result;
    } catch (err) {
      await this.remember('gc', { startedAt, finishedAt: new Date().toISOString(), error: (err as Error).message }, options.dryRun);
      this.metrics?.gcRuns.inc({ kind: 'gc', result: 'error' });
      this.logger.error({ err }, 'garbage collection failed');
      throw err;
    }
  }

  async prune(options: { dryRun: boolean }): Promise<PruneResult> {
    const policy = this.config.cache;
    const startedAt = new Date().toISOString();
    try {
      // An image pulled a moment ago must not look unused because its access time is still queued.
      await this.flushAccessTimes?.();
      const result = await pruneCache(this.registry, {
        dryRun: options.dryRun,
        maxAgeMs: policy?.maxage ?? this.config.proxy?.ttl ?? WEEK_MS,
        maxSizeBytes: policy?.maxsize,
        graceMs: this.config.gc?.graceperiod ?? 3_600_000,
      });
      this.metrics?.gcRuns.inc({ kind: 'prune', result: 'ok' });
      if (!result.dryRun) {
        this.metrics?.bytesFreed.inc({ kind: 'prune' }, result.bytesFreed);
        this.metrics?.storageBytes.set(result.cacheBytes);
      }
      this.logger.info({ prune: result }, 'cache prune finished');
      await this.remember('prune', { startedAt, finishedAt: new Date().toISOString(), result }, result.dryRun);
      return result;
    } catch (err) {
      await this.remember('prune', { startedAt, finishedAt: new Date().toISOString(), error: (err as Error).message }, options.dryRun);
      this.metrics?.gcRuns.inc({ kind: 'prune', result: 'error' });
      this.logger.error({ err }, 'cache prune failed');
      throw err;
    }
  }

  /** The last run of each kind: this process's, or a newer one kept in the storage (an earlier process's, another replica's). */
  async lastRuns(): Promise<{ gc?: MaintenanceRun<GcResult>; prune?: MaintenanceRun<PruneResult> }> {
    const newer = <R>(a: MaintenanceRun<R> | undefined, b: MaintenanceRun<R> | undefined) => (!a || (b && b.finishedAt > a.finishedAt) ? b : a);
    const [gc, prune] = await Promise.all([
      loadRun<GcResult>(this.registry.driver, 'gc').catch(() => undefined),
      loadRun<PruneResult>(this.registry.driver, 'prune').catch(() => undefined),
    ]);
    return { gc: newer(this.last.gc, gc), prune: newer(this.last.prune, prune) };
  }

  private async remember(kind: MaintenanceKind, run: MaintenanceRun<GcResult | PruneResult>, dryRun: boolean): Promise<void> {
    (this.last as Record<MaintenanceKind, MaintenanceRun<unknown>>)[kind] = run;
    if (dryRun) return;
    // The run happened whether or not its record could be written.
    await saveRun(this.registry.driver, kind, run).catch((err) => this.logger.warn({ err, kind }, 'could not record the maintenance run'));
  }

  /** Starts the in-server schedules the config asks for. */
  schedule(): void {
    const gcEvery = this.config.gc?.interval ?? 0;
    if (gcEvery > 0 && !this.isMirror) this.every(gcEvery, () => this.gc({ dryRun: false }));
    const pruneEvery = this.config.cache?.interval ?? 0;
    if (pruneEvery > 0 && this.isMirror) this.every(pruneEvery, () => this.prune({ dryRun: false }));
  }

  private every(ms: number, run: () => Promise<unknown>): void {
    const timer = setInterval(() => run().catch(() => {}), ms);
    timer.unref();
    this.timers.push(timer);
  }

  stop(): void {
    for (const t of this.timers) clearInterval(t);
  }
}
