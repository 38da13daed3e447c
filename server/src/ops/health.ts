// Liveness and readiness. Ready means: storage answers (and takes a write,
// unless the registry is read-only), and in mirror mode every upstream is
// reachable. Upstream probes are cached briefly so frequent probes stay cheap.
import { randomBytes } from 'node:crypto';
import type { LocalRegistry } from '../registry/local-registry.ts';
import type { MirrorRegistry } from '../proxy/mirror-registry.ts';
import { ROOT } from '../storage/paths.ts';

export interface Readiness {
  ready: boolean;
  checks: Record<string, string>;
}

const UPSTREAM_CACHE_MS = 15_000;

export class Health {
  private upstreamCache: { at: number; result: Record<string, boolean> } | undefined;

  constructor(
    private readonly registry: LocalRegistry,
    private readonly mirror: MirrorRegistry | undefined,
    private readonly storageWritable: boolean,
    /** More dependencies to probe (e.g. the shared Redis): name → a probe that throws when failing. */
    private readonly extra: Record<string, () => Promise<void>> = {},
  ) {}

  async readiness(): Promise<Readiness> {
    const checks: Record<string, string> = {};
    let ready = true;
    try {
      if (this.storageWritable) {
        const key = `${ROOT}/.readyz-${randomBytes(4).toString('hex')}`;
        await this.registry.driver.putContent(key, Buffer.from('ok'));
        await this.registry.driver.delete(key);
        checks.storage = 'writable';
      } else {
        await this.registry.repositories();
        checks.storage = 'readable';
      }
    } catch (err) {
      ready = false;
      checks.storage = `failing: ${(err as Error).message}`;
    }
    for (const [name, probe] of Object.entries(this.extra)) {
      try {
        await probe();
        checks[name] = 'ok';
      } catch (err) {
        ready = false;
        checks[name] = `failing: ${(err as Error).message}`;
      }
    }
    if (this.mirror) {
      for (const [host, ok] of Object.entries(await this.upstreams())) {
        checks[`upstream:${host}`] = ok ? 'reachable' : 'unreachable';
        if (!ok) ready = false;
      }
    }
    return { ready, checks };
  }

  private async upstreams(): Promise<Record<string, boolean>> {
    const cached = this.upstreamCache;
    if (cached && Date.now() - cached.at < UPSTREAM_CACHE_MS) return cached.result;
    const clients = [...(this.mirror?.clients.values() ?? [])];
    const results = await Promise.all(clients.map((c) => c.ping()));
    const result = Object.fromEntries(clients.map((c, i) => [c.upstream.host, results[i]]));
    this.upstreamCache = { at: Date.now(), result };
    return result;
  }
}
