// The mirror's single-flight across replicas (proxy/fill-coordinator.ts):
// "<prefix>fill:<digest>" is a hash {owner, state, key, size, written, error, source}
// that doubles as the lock. claim() creates it (owner = a fresh id, state
// "starting") unless a live fill holds it; the owner publishes the upload key
// and the upstream's size when the upstream answers, the bytes stored as
// they are stored (coalesced: at most one write in flight), and "done" or
// "failed" at the end. The key lives FILL_TTL_MS and the owner renews it
// while it fills, so a replica that dies mid-fill lets go within that time and
// the next request starts a new fill. A finished fill stays visible for a
// little while so that followers polling it see how it ended; a failed one
// can be claimed again at once.
import { randomUUID } from 'node:crypto';
import type { Logger } from '../log/logger.ts';
import type { FillObserver } from '../proxy/blob-fill.ts';
import type { FillCoordinator, FillInfo } from '../proxy/fill-coordinator.ts';
import type { SharedRedis } from './redis.ts';

const FILL_TTL_MS = 15_000;
const DONE_TTL_MS = 30_000;
const FAILED_TTL_MS = 10_000;

// KEYS: fill. ARGV: owner, ttl, source. Returns [] when claimed, else the current fill (HGETALL).
const CLAIM = `
local st = redis.call('HGET', KEYS[1], 'state')
if (not st) or st == 'failed' then
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'state', 'starting', 'written', '0', 'source', ARGV[3] or '')
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
  return {}
end
return redis.call('HGETALL', KEYS[1])
`;

// KEYS: fill. ARGV: owner, ttl, field, value, ... Returns 1 while the caller owns the fill.
const UPDATE = `
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
if #ARGV > 2 then redis.call('HSET', KEYS[1], unpack(ARGV, 3)) end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
return 1
`;

export class RedisFillCoordinator implements FillCoordinator {
  private readonly claimScript: (...args: Array<string | number>) => Promise<string[]>;
  private readonly updateScript: (...args: Array<string | number>) => Promise<number>;

  constructor(
    private readonly redis: SharedRedis,
    private readonly logger: Logger,
    private readonly ttlMs = FILL_TTL_MS,
  ) {
    this.claimScript = redis.script('FillClaim', 1, CLAIM);
    this.updateScript = redis.script('FillUpdate', 1, UPDATE);
  }

  private key(digest: string): string {
    return this.redis.key('fill', digest);
  }

  async claim(digest: string, source?: string): Promise<{ lease: FillObserver } | { following: FillInfo }> {
    const owner = randomUUID();
    const current = await this.claimScript(this.key(digest), owner, this.ttlMs, source ?? '');
    if (current.length > 0) {
      const info = parse(pairs(current));
      if (info) return { following: info };
    }
    return { lease: new Lease(this.key(digest), owner, this.ttlMs, this.updateScript, this.logger) };
  }

  async get(digest: string): Promise<FillInfo | undefined> {
    return parse(await this.redis.client.hgetall(this.key(digest)));
  }
}

class Lease implements FillObserver {
  private pending: Record<string, string> = {};
  private pendingTtl: number;
  private flushing = false;
  private finishedAt: 'done' | 'failed' | undefined;
  private lost = false;
  private readonly renew: NodeJS.Timeout;

  constructor(
    private readonly key: string,
    private readonly owner: string,
    ttlMs: number,
    private readonly update: (...args: Array<string | number>) => Promise<number>,
    private readonly logger: Logger,
  ) {
    this.pendingTtl = ttlMs;
    this.renew = setInterval(() => this.flush(true), Math.floor(ttlMs / 3));
    this.renew.unref();
  }

  started(key: string, size: number | undefined): void {
    this.set({ state: 'running', key, size: size === undefined ? '-1' : String(size) });
  }

  progress(written: number): void {
    if (this.finishedAt) return;
    this.set({ written: String(written) });
  }

  finished(ok: boolean, error?: string): void {
    if (this.finishedAt) return;
    this.finishedAt = ok ? 'done' : 'failed';
    clearInterval(this.renew);
    this.pendingTtl = ok ? DONE_TTL_MS : FAILED_TTL_MS;
    this.set(ok ? { state: 'done' } : { state: 'failed', error: (error ?? 'upstream fetch failed').slice(0, 500) });
  }

  private set(fields: Record<string, string>): void {
    Object.assign(this.pending, fields);
    this.flush(false);
  }

  /** Writes what is pending (or just renews), one write at a time; later changes go in the next one. */
  private flush(renewOnly: boolean): void {
    if (this.flushing || this.lost) return;
    const fields = this.pending;
    if (!renewOnly && Object.keys(fields).length === 0) return;
    this.pending = {};
    this.flushing = true;
    let failed = false;
    const args: Array<string | number> = [this.key, this.owner, this.pendingTtl];
    for (const [k, v] of Object.entries(fields)) args.push(k, v);
    this.update(...args)
      .then(
        (owned) => {
          if (owned !== 1 && !this.lost) {
            this.lost = true;
            clearInterval(this.renew);
            this.logger.warn({ fill: this.key }, 'lost the shared claim on a blob fill (another replica may fetch it too)');
          }
        },
        (err: Error) => {
          // Put the fields back (newer values win) and try again with the next change or renewal.
          this.pending = { ...fields, ...this.pending };
          failed = true;
          this.logger.warn({ fill: this.key, err: err.message }, 'could not publish blob fill progress');
        },
      )
      .finally(() => {
        this.flushing = false;
        // After a failure, wait for the next change or renewal rather than retrying at once.
        if (!failed && Object.keys(this.pending).length > 0) this.flush(false);
      });
  }
}

function pairs(flat: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (let i = 0; i + 1 < flat.length; i += 2) out[flat[i]] = flat[i + 1];
  return out;
}

function parse(h: Record<string, string>): FillInfo | undefined {
  if (!h.owner || !h.state) return undefined;
  const state = h.state as FillInfo['state'];
  if (!['starting', 'running', 'done', 'failed'].includes(state)) return undefined;
  const size = h.size !== undefined && h.size !== '' && h.size !== '-1' ? Number(h.size) : undefined;
  return {
    owner: h.owner,
    state,
    key: h.key || undefined,
    size,
    written: Number(h.written ?? 0) || 0,
    error: h.error,
    source: h.source || undefined,
  };
}
