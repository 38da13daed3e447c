// `registry garbage-collect` and `registry prune`: the offline forms, run
// against a data directory (as distribution's garbage-collect is). While a
// server is running, prefer its admin endpoints (/admin/gc, /admin/prune):
// only the server itself knows which pushes are in flight. With a redis
// section the offline run joins the replicas' shared state (pins, the
// maintenance lock, the descriptor cache), so it is safe next to them too.
import { SingleBar } from 'cli-progress';
import { ConfigError, loadConfigFile } from '../config/load.ts';
import type { RegistryConfig } from '../config/schema.ts';
import { collectGarbage } from '../registry/gc.ts';
import { LocalRegistry } from '../registry/local-registry.ts';
import { pruneCache } from '../proxy/prune.ts';
import { createDriver } from '../storage/factory.ts';
import { silentLogger } from '../log/logger.ts';
import { createSharedState } from '../shared/shared-state.ts';
import { type MaintenanceKind, saveRun } from '../ops/maintenance-record.ts';

interface GcFlags {
  dryRun?: boolean;
  deleteUntagged?: boolean;
  grace?: string;
}

export async function garbageCollectCommand(configFile: string, flags: GcFlags): Promise<void> {
  const config = load(configFile);
  if (flags.grace !== undefined) seconds('--grace', flags.grace);
  const { registry, close } = await open(config);
  const bar = progressBar();
  const startedAt = new Date().toISOString();
  const result = await collectGarbage(registry, {
    dryRun: flags.dryRun ?? false,
    deleteUntagged: flags.deleteUntagged ?? config.gc?.deleteuntagged ?? false,
    graceMs: flags.grace !== undefined ? seconds('--grace', flags.grace) * 1000 : (config.gc?.graceperiod ?? 0),
    onProgress: bar?.update,
    onDelete: (kind, what, bytes) => {
      if (!bar) report({ event: flags.dryRun ? 'would-delete' : 'deleted', kind, what, bytes });
    },
  })
    .then((r) => record(registry, 'gc', startedAt, r))
    .catch(storageFailed('garbage-collect'))
    .finally(close);
  bar?.stop();
  summary(result, flags.dryRun ?? false);
}

export async function pruneCommand(configFile: string, flags: { dryRun?: boolean; grace?: string }): Promise<void> {
  const config = load(configFile);
  if (!config.proxy) fail('prune is for mirror caches (the config has no proxy section); use garbage-collect');
  const graceMs = flags.grace !== undefined ? seconds('--grace', flags.grace) * 1000 : (config.gc?.graceperiod ?? 3_600_000);
  const { registry, close } = await open(config);
  const startedAt = new Date().toISOString();
  const result = await pruneCache(registry, {
    dryRun: flags.dryRun ?? false,
    maxAgeMs: config.cache?.maxage ?? config.proxy?.ttl ?? 168 * 3_600_000,
    maxSizeBytes: config.cache?.maxsize,
    graceMs,
    onDelete: (kind, what, bytes) => report({ event: flags.dryRun ? 'would-delete' : 'deleted', kind, what, bytes }),
  })
    .then((r) => record(registry, 'prune', startedAt, r))
    .catch(storageFailed('prune'))
    .finally(close);
  summary(result, flags.dryRun ?? false);
  if (result.blobsInGrace > 0) {
    // Evicted tags and manifests go at once, their blobs only once older than the grace period
    // (a fill or a push in flight may be about to refer to them): without this, "0 blobs
    // deleted" after evicting half the cache reads as a prune that did nothing.
    const grace = flags.grace !== undefined ? `--grace ${flags.grace}` : `gc.graceperiod ${formatDuration(graceMs)}`;
    process.stderr.write(
      `note: the grace period (${grace}) kept ${result.blobsInGrace} blob(s) that nothing refers to any more, ${mb(result.bytesInGrace)} MB, ` +
        `because they were written or used less than ${formatDuration(graceMs)} ago; a prune after ${result.graceEndsAt} ${flags.dryRun ? 'would free' : 'will free'} them ` +
        `(or now, with --grace 0, if no server is filling this cache)\n`,
    );
  }
}

/** Keeps a real run where the servers' operations page finds it (ops/maintenance-record.ts); a failure to is only a note. */
async function record<R extends { dryRun: boolean }>(registry: LocalRegistry, kind: MaintenanceKind, startedAt: string, result: R): Promise<R> {
  if (result.dryRun) return result;
  await saveRun(registry.driver, kind, { startedAt, finishedAt: new Date().toISOString(), result }).catch((err: Error) =>
    process.stderr.write(`note: the run was not recorded for the web UI: ${err.message}\n`),
  );
  return result;
}

function seconds(flag: string, value: string): number {
  if (!/^\d+$/.test(value)) fail(`${flag} must be a whole number of seconds, got ${JSON.stringify(value)}`);
  return Number(value);
}

/** 3600000 → "1h", 90000 → "1m30s": as the config writes durations. */
function formatDuration(ms: number): string {
  let s = Math.round(ms / 1000);
  if (s === 0) return '0s';
  const parts: string[] = [];
  for (const [unit, n] of [['h', 3600], ['m', 60], ['s', 1]] as const) {
    if (s >= n) {
      parts.push(`${Math.floor(s / n)}${unit}`);
      s %= n;
    }
  }
  return parts.join('');
}

const mb = (bytes: number) => (bytes / 1e6).toFixed(1);

function load(file: string): RegistryConfig {
  try {
    return loadConfigFile(file).config;
  } catch (err) {
    if (err instanceof ConfigError) fail(err.message);
    throw err;
  }
}

async function open(config: RegistryConfig): Promise<{ registry: LocalRegistry; close: () => Promise<void> }> {
  const driver = await createDriver(config);
  let shared;
  try {
    shared = await createSharedState(config, silentLogger);
  } catch (err) {
    fail((err as Error).message);
  }
  return { registry: new LocalRegistry(driver, { deleteEnabled: true, readOnly: false, shared: shared.registry }), close: shared.close };
}

function progressBar(): { update: (phase: string, done: number, total: number) => void; stop: () => void } | undefined {
  if (!process.stderr.isTTY) return undefined;
  const bar = new SingleBar({ format: '{phase} {bar} {value}/{total}', stream: process.stderr });
  let phase = '';
  return {
    update: (p, done, total) => {
      if (p !== phase) {
        if (phase) bar.stop();
        phase = p;
        bar.start(total, done, { phase: p.padEnd(5) });
      } else {
        bar.update(done);
      }
    },
    stop: () => {
      if (phase) bar.stop();
    },
  };
}

function report(fields: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(fields)}\n`);
}

function summary(result: object, dryRun: boolean): void {
  const r = result as Record<string, number>;
  process.stdout.write(`${JSON.stringify({ event: 'summary', ...result })}\n`);
  if (process.stderr.isTTY) {
    const verb = dryRun ? 'would free' : 'freed';
    const tags = r.tagsDeleted !== undefined ? `${r.tagsDeleted} tag(s), ` : '';
    process.stderr.write(`${verb} ${mb(r.bytesFreed)} MB: ${tags}${r.manifestsDeleted} manifest(s), ${r.blobsDeleted} blob(s)\n`);
  }
}

/**
 * A storage that cannot be reached or read (an errno, or an S3 error with its
 * metadata) is for the operator to fix, and may work on a retry: one line,
 * exit 1. Anything else is a bug and keeps its stack trace.
 */
function storageFailed(command: string): (err: unknown) => never {
  return (err) => {
    const e = err as (NodeJS.ErrnoException & { $metadata?: unknown }) | undefined;
    if (!e || (typeof e.code !== 'string' && e.$metadata === undefined)) throw err;
    const code = e.code && !e.message.includes(e.code) ? ` (${e.code})` : '';
    process.stderr.write(`registry: ${command}: the storage failed: ${e.message.split('\n')[0]}${code}\n`);
    process.exit(1);
  };
}

function fail(message: string): never {
  process.stderr.write(`registry: ${message}\n`);
  process.exit(2);
}
