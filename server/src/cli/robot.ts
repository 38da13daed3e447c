// `registry robot create|list|revoke|rotate`: robot accounts for CI, kept in
// the registry's storage (see auth/robots.ts), so this works with the server
// running or not, on a filesystem or on S3. A secret is printed once, on
// stdout alone (SECRET=$(registry robot create …) keeps it out of the
// terminal); everything else goes to stderr. With a redis section, a change is
// announced to the running servers there, which drop their cached record at once.
import type { Command } from 'commander';
import { ROBOT_PREFIX, type RobotRecord, RobotError, robotStatus, RobotStore } from '../auth/robots.ts';
import { ConfigError, loadConfigFile, loadConfigObject } from '../config/load.ts';
import type { RegistryConfig } from '../config/schema.ts';
import { parseDuration } from '../config/units.ts';
import { createDriver } from '../storage/factory.ts';
import { silentLogger } from '../log/logger.ts';

interface Common {
  config?: string;
}

const CONFIG_HELP = 'configuration file of the registry (default: the built-in one, storing under ./data)';

/** Adds `robot` and its subcommands to the `registry` program (inheriting its output and exit handling). */
export function addRobotCommand(program: Command): void {
  const robot = program
    .command('robot')
    .description("robot accounts for CI: scoped, expiring, revocable logins as robot$NAME (needs auth.access)");
  robot
    .command('create')
    .description('make a robot and print its secret (once: only its hash is kept)')
    .argument('<name>', 'lowercase letters, digits, . _ -; it logs in as robot$<name>')
    .requiredOption('-s, --scope <scope...>', "what it may do, e.g. 'repository:team/*:pull,push' (patterns as in the access policy)")
    .option('--ttl <duration>', 'expire after this long, e.g. 90d, 720h (default: never)')
    .option('-d, --description <text>', 'what it is for')
    .option('-c, --config <file>', CONFIG_HELP)
    .action((name: string, opts: Common & { scope: string[]; ttl?: string; description?: string }) =>
      withStore(opts, async (store, config) => {
        let ttlMs: number | undefined;
        if (opts.ttl !== undefined) {
          ttlMs = parseDuration(opts.ttl);
          if (!ttlMs) fail(`--ttl: "${opts.ttl}" is not a duration (e.g. 90d, 720h)`);
        }
        const { record, secret } = await store.create(name, opts.scope, { ttlMs, description: opts.description });
        process.stdout.write(`${secret}\n`);
        process.stderr.write(`created ${describe(record, Date.now())}\nlog in with: docker login -u '${ROBOT_PREFIX}${record.name}' --password-stdin <registry host>\n`);
        warnWithoutPolicy(config);
        return record.name;
      }),
    );
  robot
    .command('list')
    .description('the robots, with their status, expiry and scopes')
    .option('--json', 'as JSON (no secrets: there are none to show)')
    .option('-c, --config <file>', CONFIG_HELP)
    .action((opts: Common & { json?: boolean }) =>
      withStore(opts, async (store) => {
        const robots = await store.list();
        const now = Date.now();
        if (opts.json) {
          const shown = robots.map(({ secretHash: _hidden, ...r }) => ({ ...r, login: `${ROBOT_PREFIX}${r.name}`, status: robotStatus(r as RobotRecord, now) }));
          process.stdout.write(`${JSON.stringify(shown, null, 2)}\n`);
          return;
        }
        for (const r of robots) process.stdout.write(`${describe(r, now)}\n`);
        if (robots.length === 0) process.stderr.write('no robots\n');
      }),
    );
  robot
    .command('revoke')
    .description('refuse the robot from now on (running servers notice within seconds)')
    .argument('<name>')
    .option('-c, --config <file>', CONFIG_HELP)
    .action((name: string, opts: Common) =>
      withStore(opts, async (store) => {
        const record = await store.revoke(stripPrefix(name));
        process.stderr.write(`revoked ${describe(record, Date.now())}\n`);
        return record.name;
      }),
    );
  robot
    .command('rotate')
    .description('give the robot a new secret and print it (the old one stops working)')
    .argument('<name>')
    .option('-c, --config <file>', CONFIG_HELP)
    .action((name: string, opts: Common) =>
      withStore(opts, async (store) => {
        const { record, secret } = await store.rotate(stripPrefix(name));
        process.stdout.write(`${secret}\n`);
        process.stderr.write(`rotated ${describe(record, Date.now())}\n`);
        return record.name;
      }),
    );
}

/** Runs `run` on the store of the config; a robot name it returns was changed, and is announced. */
async function withStore(opts: Common, run: (store: RobotStore, config: RegistryConfig) => Promise<string | void>): Promise<void> {
  let config: RegistryConfig;
  try {
    config = opts.config
      ? loadConfigFile(opts.config).config
      : loadConfigObject({ storage: { filesystem: { rootdirectory: './data' } } }, process.env, 'the built-in default config').config;
  } catch (err) {
    if (err instanceof ConfigError) fail(err.message);
    throw err;
  }
  let changed: string | void;
  try {
    changed = await run(new RobotStore(await createDriver(config)), config);
  } catch (err) {
    if (err instanceof RobotError) fail(err.message);
    // The storage failed: say so on one line; it may work again (exit 1, as for Redis).
    process.stderr.write(`registry robot: the storage failed: ${(err as Error).message}\n`);
    process.exit(1);
  }
  if (changed && config.redis) await announce(config.redis, changed);
}

/**
 * Tells the servers sharing the redis section. The change is stored already,
 * so a Redis that cannot be reached only delays it: servers re-read a robot
 * within seconds anyway.
 */
async function announce(redisConfig: NonNullable<RegistryConfig['redis']>, name: string): Promise<void> {
  const [{ createSharedRedis }, { RedisRobotChanges }] = await Promise.all([import('../shared/redis.ts'), import('../shared/redis-robots.ts')]);
  const redis = createSharedRedis({ ...redisConfig, dialtimeout: Math.min(redisConfig.dialtimeout || 5_000, 5_000) }, silentLogger);
  try {
    await redis.connect();
    await new RedisRobotChanges(redis, silentLogger).publish(name);
  } catch (err) {
    process.stderr.write(`note: running servers were not told through redis (${(err as Error).message}); they notice within 5 seconds\n`);
  } finally {
    await redis.close();
  }
}

/** Accepts "robot$ci" for "ci": the name people copy from a login. */
function stripPrefix(name: string): string {
  return name.startsWith(ROBOT_PREFIX) ? name.slice(ROBOT_PREFIX.length) : name;
}

function describe(r: RobotRecord, now: number): string {
  const status = robotStatus(r, now);
  const until = r.expires ? `expires ${r.expires}` : 'never expires';
  return `${ROBOT_PREFIX}${r.name}  ${status}  ${until}  ${r.scopes.join(' ')}${r.description ? `  (${r.description})` : ''}`;
}

function warnWithoutPolicy(config: RegistryConfig): void {
  if (!config.auth?.access) {
    process.stderr.write('note: this config has no auth.access: robots log in only on a registry with an access policy\n');
  }
}

function fail(message: string): never {
  process.stderr.write(`registry robot: ${message}\n`);
  process.exit(2);
}
