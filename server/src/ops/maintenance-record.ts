// The last GC and prune runs, kept in the storage next to the data
// (/ops/maintenance/<kind>.json, outside distribution's docker/registry/v2,
// which registry:2 ignores): the UI's operations page shows them after a
// restart, and every replica shows the runs of any of them, and of the offline
// commands (cli/maintenance.ts). Only real runs are kept there (a dry run
// changes nothing, the storage included).
import { isNotFound, type StorageDriver } from '../storage/driver.ts';

export type MaintenanceKind = 'gc' | 'prune';

/** One run: when, and what it did (the admin endpoint's answer) or why it failed. */
export interface MaintenanceRun<R> {
  startedAt: string;
  finishedAt: string;
  result?: R;
  error?: string;
}

const key = (kind: MaintenanceKind) => `/ops/maintenance/${kind}.json`;

export async function saveRun(driver: StorageDriver, kind: MaintenanceKind, run: MaintenanceRun<unknown>): Promise<void> {
  await driver.putContent(key(kind), Buffer.from(JSON.stringify(run)));
}

/** The run last saved, or undefined when there is none (or it cannot be read as one). */
export async function loadRun<R>(driver: StorageDriver, kind: MaintenanceKind): Promise<MaintenanceRun<R> | undefined> {
  try {
    const run = JSON.parse((await driver.getContent(key(kind))).toString('utf8')) as MaintenanceRun<R>;
    return typeof run?.finishedAt === 'string' && typeof run.startedAt === 'string' ? run : undefined;
  } catch (err) {
    if (isNotFound(err) || err instanceof SyntaxError) return undefined;
    throw err;
  }
}
