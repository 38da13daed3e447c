// Robot accounts: credentials for CI, scoped (`repository:team/*:pull,push`),
// expiring, revocable and rotatable, logged in as `robot$NAME`. Each is one
// JSON record in the storage (/auth/robots/NAME.json: next to the data on a
// filesystem, in the bucket on S3), so every replica sees the same robots and
// `registry robot` changes them without a running server. Only a SHA-256 of
// the secret is kept: secrets are 32 random bytes, which no dictionary
// reaches, so a slow hash would buy nothing. A server trusts what it read for
// at most `cacheMs` (a few seconds): that bounds how long a revoked, rotated or
// expired robot keeps working, on every replica. With Redis, a change is also
// announced (RobotChanges), and servers drop what they cached at once.
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { isNotFound, type StorageDriver } from '../storage/driver.ts';
import { type Action, ACTIONS, compilePattern } from './access-policy.ts';

export const ROBOT_PREFIX = 'robot$';
const DIR = '/auth/robots';
const NAME = /^[a-z0-9][a-z0-9._-]{0,63}$/;
const DEFAULT_CACHE_MS = 5_000;

export interface RobotRecord {
  name: string;
  /** As given: "repository:<pattern>:<actions>". */
  scopes: string[];
  /** sha256:<hex> of the secret. */
  secretHash: string;
  created: string;
  /** RFC 3339; absent: never. */
  expires?: string;
  revoked?: string;
  rotated?: string;
  description?: string;
}

export type RobotStatus = 'active' | 'expired' | 'revoked';

export class RobotError extends Error {}

interface RobotScope {
  re: RegExp;
  actions: ReadonlySet<Action>;
}

/** "repository:team/*:pull,push" → what it allows; throws RobotError. */
export function parseRobotScope(scope: string): RobotScope {
  const m = /^repository:([^:]+):([a-z*,]+)$/.exec(scope);
  const re = m ? compilePattern(m[1]) : undefined;
  if (!m || !re) throw new RobotError(`scope ${JSON.stringify(scope)}: expected repository:<pattern>:<actions>, e.g. repository:team/*:pull,push`);
  const actions = new Set<Action>();
  for (const a of m[2].split(',')) {
    if (a === '*') ACTIONS.forEach((x) => actions.add(x));
    else if ((ACTIONS as readonly string[]).includes(a)) actions.add(a as Action);
    else throw new RobotError(`scope ${JSON.stringify(scope)}: unknown action "${a}" (pull, push, delete or *)`);
  }
  return { re, actions };
}

export function robotStatus(record: RobotRecord, now: number): RobotStatus {
  if (record.revoked) return 'revoked';
  if (record.expires && Date.parse(record.expires) <= now) return 'expired';
  return 'active';
}

/** What a robot's scopes allow on `name`. */
export function robotActions(record: RobotRecord, name: string): Set<Action> {
  const out = new Set<Action>();
  for (const scope of record.scopes) {
    const s = parseRobotScope(scope);
    if (s.re.test(name)) s.actions.forEach((a) => out.add(a));
  }
  return out;
}

export function validateRobotName(name: string): string {
  if (!NAME.test(name)) throw new RobotError(`robot name ${JSON.stringify(name)}: lowercase letters, digits and . _ - only (at most 64)`);
  return name;
}

/**
 * Announces robot changes to every server (shared/redis-robots.ts, when
 * replicas share a Redis): the writer publishes, servers drop their cached
 * record. The cache time still bounds staleness when a message is lost.
 */
export interface RobotChanges {
  /** Tells the servers that `name`'s record was just written. */
  publish(name: string): Promise<void>;
  /** Calls `changed(name)` for every announced change; `changed(undefined)` when some may have been missed. */
  subscribe(changed: (name: string | undefined) => void): Promise<void>;
}

export interface RobotStoreOptions {
  now?: () => number;
  /** How long a record read from the storage is trusted. */
  cacheMs?: number;
}

export class RobotStore {
  private readonly now: () => number;
  private readonly cacheMs: number;
  private readonly cache = new Map<string, { record: RobotRecord | undefined; until: number }>();

  constructor(
    private readonly driver: StorageDriver,
    options: RobotStoreOptions = {},
  ) {
    this.now = options.now ?? Date.now;
    this.cacheMs = options.cacheMs ?? DEFAULT_CACHE_MS;
  }

  /** The record, as read at most cacheMs ago. */
  async get(name: string): Promise<RobotRecord | undefined> {
    if (!NAME.test(name)) return undefined;
    const cached = this.cache.get(name);
    if (cached && cached.until > this.now()) return cached.record;
    const record = await this.read(name);
    // Bounded: names that do not exist are cached too, and a flood of them must not grow this forever.
    if (this.cache.size > 10_000) this.cache.clear();
    this.cache.set(name, { record, until: this.now() + this.cacheMs });
    return record;
  }

  /** Drops the cached record of `name` (of every robot: undefined), so the next request reads the storage. */
  forget(name?: string): void {
    if (name === undefined) this.cache.clear();
    else this.cache.delete(name);
  }

  /** The robot `name` when `secret` is its secret and it is active; else undefined. */
  async verify(name: string, secret: string): Promise<RobotRecord | undefined> {
    const record = await this.get(name);
    const given = Buffer.from(hashSecret(secret));
    // Compared even for a robot that does not exist, so the answer takes as long.
    const expected = Buffer.from(record?.secretHash ?? hashSecret(''));
    const same = given.length === expected.length && timingSafeEqual(given, expected);
    return record && same && robotStatus(record, this.now()) === 'active' ? record : undefined;
  }

  async list(): Promise<RobotRecord[]> {
    let names: string[];
    try {
      names = await this.driver.list(DIR);
    } catch (err) {
      if (isNotFound(err)) return [];
      throw err;
    }
    const records = await Promise.all(names.filter((n) => n.endsWith('.json')).map((n) => this.read(n.slice(0, -5))));
    return records.filter((r): r is RobotRecord => r !== undefined).sort((a, b) => a.name.localeCompare(b.name));
  }

  /** Makes a robot and its secret (shown once; only its hash is kept). A revoked or expired robot of the name is replaced. */
  async create(name: string, scopes: string[], options: { ttlMs?: number; description?: string } = {}): Promise<{ record: RobotRecord; secret: string }> {
    validateRobotName(name);
    if (scopes.length === 0) throw new RobotError('at least one --scope is needed');
    scopes.forEach(parseRobotScope);
    const existing = await this.read(name);
    if (existing && robotStatus(existing, this.now()) === 'active') {
      throw new RobotError(`robot ${name} exists (rotate its secret with: registry robot rotate ${name})`);
    }
    const secret = newSecret();
    const now = this.now();
    const record: RobotRecord = {
      name,
      scopes,
      secretHash: hashSecret(secret),
      created: new Date(now).toISOString(),
      ...(options.ttlMs ? { expires: new Date(now + options.ttlMs).toISOString() } : {}),
      ...(options.description ? { description: options.description } : {}),
    };
    await this.write(record);
    return { record, secret };
  }

  async revoke(name: string): Promise<RobotRecord> {
    const record = await this.existing(name);
    if (!record.revoked) record.revoked = new Date(this.now()).toISOString();
    await this.write(record);
    return record;
  }

  /** A new secret for an active robot; the old one stops working. */
  async rotate(name: string): Promise<{ record: RobotRecord; secret: string }> {
    const record = await this.existing(name);
    const status = robotStatus(record, this.now());
    if (status !== 'active') throw new RobotError(`robot ${name} is ${status}: create it again instead`);
    const secret = newSecret();
    record.secretHash = hashSecret(secret);
    record.rotated = new Date(this.now()).toISOString();
    await this.write(record);
    return { record, secret };
  }

  private async existing(name: string): Promise<RobotRecord> {
    validateRobotName(name);
    const record = await this.read(name);
    if (!record) throw new RobotError(`no robot named ${name}`);
    return record;
  }

  private async read(name: string): Promise<RobotRecord | undefined> {
    try {
      return JSON.parse((await this.driver.getContent(`${DIR}/${name}.json`)).toString('utf8')) as RobotRecord;
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  private async write(record: RobotRecord): Promise<void> {
    await this.driver.putContent(`${DIR}/${record.name}.json`, Buffer.from(`${JSON.stringify(record, null, 2)}\n`));
    this.cache.delete(record.name);
  }
}

function newSecret(): string {
  return randomBytes(32).toString('base64url');
}

function hashSecret(secret: string): string {
  return `sha256:${createHash('sha256').update(secret).digest('hex')}`;
}
