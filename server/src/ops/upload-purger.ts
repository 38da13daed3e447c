// storage.maintenance.uploadpurging, as in distribution: upload sessions that
// were abandoned (client gone, push never finished) are deleted once they are
// older than `age`, checked every `interval`.
import type { RegistryConfig } from '../config/schema.ts';
import type { LocalRegistry } from '../registry/local-registry.ts';
import type { Logger } from '../log/logger.ts';

export interface Purger {
  stop(): void;
}

export function startUploadPurger(registry: LocalRegistry, config: RegistryConfig, logger: Logger): Purger {
  const policy = config.storage.maintenance?.uploadpurging ?? {
    enabled: true,
    age: 168 * 3_600_000,
    interval: 24 * 3_600_000,
    dryrun: false,
  };
  if (!policy.enabled || config.storage.maintenance?.readonly?.enabled) return { stop() {} };

  const run = async () => {
    try {
      const cutoff = new Date(Date.now() - policy.age);
      const repositories = await registry.repositoriesWith('_uploads');
      const purged = await registry.uploads.purgeOlderThan(repositories, cutoff, policy.dryrun);
      if (purged > 0) logger.info({ purged, dryRun: policy.dryrun }, 'purged stale upload sessions');
    } catch (err) {
      logger.warn({ err }, 'upload purge failed');
    }
  };
  // First run shortly after start (not during it), then every interval.
  const first = setTimeout(run, Math.min(60_000, policy.interval));
  const timer = setInterval(run, policy.interval);
  first.unref();
  timer.unref();
  return {
    stop() {
      clearTimeout(first);
      clearInterval(timer);
    },
  };
}
