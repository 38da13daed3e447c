// The contract between the mirror's blob fills and whatever shares them
// across replicas: one upstream fetch per digest, whichever replicas the
// clients reach. The replica that claims a digest fills it and publishes its
// progress through a lease (FillObserver); a replica that finds the claim
// taken follows that fill through the shared storage (remote-fill.ts).
// shared-fill.ts chooses between the two; shared/redis-fills.ts implements
// the coordinator. Only types here, so that both sides can import it without
// importing each other.
//
// A claim names the repository it was made for (see shared-fill.ts for why).
import type { FillObserver } from './blob-fill.ts';

export interface FillInfo {
  /** Identifies the fill (a new claim gets a new owner). */
  owner: string;
  /** starting: claimed, the upstream has not answered yet. */
  state: 'starting' | 'running' | 'done' | 'failed';
  /** Storage key the fill writes to (once running). */
  key?: string;
  /** The upstream's Content-Length; undefined while starting or when it sent none. */
  size?: number;
  /** Bytes stored at `key`, readable by anyone. */
  written: number;
  error?: string;
  /** The cache repository the fill was claimed for (undefined from a coordinator that does not record it). */
  source?: string;
}

export interface FillCoordinator {
  /** Claims the fill of `digest` for the cache repository `source` (a lease to publish it through), or returns the fill another replica runs. */
  claim(digest: string, source?: string): Promise<{ lease: FillObserver } | { following: FillInfo }>;
  /** The current fill of `digest`, if any. */
  get(digest: string): Promise<FillInfo | undefined>;
}
