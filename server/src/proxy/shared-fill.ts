// A blob fill that may be shared across replicas (fill-coordinator.ts): it
// first asks the coordinator whether to run the fill here (BlobFill, its
// progress published through the lease) or to follow another replica's
// (RemoteFill). Without the coordinator's answer it fills on its own (the
// in-process single-flight of MirrorRegistry still holds).
//
// A replica asked for the blob by another repository, while the claim's
// upstream has not answered yet, fetches from its own repository's upstream
// instead of following: the first repository's 404 or stalled upstream is not
// its clients' problem (as within a process: blob-fill.ts).
import { Readable, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ByteRange, StorageDriver } from '../storage/driver.ts';
import type { BlobStore } from '../registry/blob-store.ts';
import type { Digest } from '../registry/digest.ts';
import type { Logger } from '../log/logger.ts';
import { BlobFill, type Fill, FillEnded, type FillLimits, type FillSource } from './blob-fill.ts';
import type { FillCoordinator, FillInfo } from './fill-coordinator.ts';
import { RemoteFill } from './remote-fill.ts';
import type { UpstreamClient } from './upstream-client.ts';

export interface SharedFillDeps {
  driver: StorageDriver;
  blobs: BlobStore;
  client: UpstreamClient;
  logger: Logger;
  coordinator: FillCoordinator;
  declaredSize?: number;
  limits?: FillLimits;
}

/** A fill that first asks the coordinator whether to run it here or to follow another replica's. */
export class SharedFill implements Fill {
  readonly ready: Promise<number | undefined>;
  readonly done: Promise<void>;
  private inner: Fill | undefined;
  private readonly chosen: Promise<Fill>;

  constructor(digest: Digest, cacheName: string, remoteName: string, deps: SharedFillDeps) {
    const { coordinator, ...local } = deps;
    this.chosen = (async (): Promise<Fill> => {
      let claim: Awaited<ReturnType<FillCoordinator['claim']>> | undefined;
      try {
        claim = await coordinator.claim(digest.value, cacheName);
      } catch (err) {
        // Without the shared state this replica still serves its clients, with its own fetch.
        deps.logger.warn({ digest: digest.value, err: (err as Error).message }, 'cannot coordinate the blob fill with other replicas; fetching here');
      }
      if (claim && 'following' in claim) {
        // Another repository's upstream has not answered yet: fetch from ours, unshared, rather than wait on it.
        if (!startedFor(claim.following, cacheName)) return new BlobFill(digest, cacheName, remoteName, local);
        return new RemoteFill(digest, claim.following, { driver: deps.driver, coordinator, logger: deps.logger });
      }
      return new BlobFill(digest, cacheName, remoteName, { ...local, observer: claim?.lease });
    })();
    this.chosen.then((f) => {
      this.inner = f;
    });
    this.ready = this.chosen.then((f) => f.ready);
    this.ready.catch(() => {});
    this.done = this.chosen.then((f) => f.done);
    this.done.catch(() => {});
  }

  get size(): number | undefined {
    return this.inner?.size;
  }

  join(source: FillSource): Promise<number | undefined> {
    return this.chosen.then((f) => {
      if (f instanceof RemoteFill && !startedFor(f.info, source.cacheName)) {
        throw new FillEnded(`the fill followed was claimed for ${f.info.source} and has not started`);
      }
      return f.join(source);
    });
  }

  stream(range?: ByteRange): Readable {
    return this.inner ? this.inner.stream(range) : streamLater(this.chosen, range);
  }

  send(range?: ByteRange): (dest: Writable) => Promise<void> {
    if (this.inner?.send) return this.inner.send(range);
    const stream = this.stream(range);
    return (dest) => pipeline(stream, dest);
  }
}

/** Whether a client of `cacheName` may follow a fill: it runs, or was claimed for the same repository (or says not for which). */
function startedFor(info: FillInfo, cacheName: string): boolean {
  return info.state !== 'starting' || info.source === undefined || info.source === cacheName;
}

function streamLater(fill: Promise<Fill>, range?: ByteRange): Readable {
  return Readable.from(
    (async function* () {
      yield* (await fill).stream(range);
    })(),
    { objectMode: false },
  );
}
