// `registry serve [config.yml]`
import { ConfigError, type LoadedConfig, loadConfigFile } from '../config/load.ts';
import { quickstartConfig } from '../config/quickstart.ts';
import { parseListenAddr, type RegistryConfig } from '../config/schema.ts';
import { startServer } from '../http/server.ts';
import { createLogger } from '../ops/logger.ts';
import { describeStorage } from '../storage/factory.ts';
import { RedisUnavailable } from '../shared/redis.ts';
import { preflight } from './preflight.ts';

export async function serveCommand(configFile: string | undefined): Promise<void> {
  let loaded: LoadedConfig | undefined;
  let quick: ReturnType<typeof quickstartConfig> | undefined;
  let running: Awaited<ReturnType<typeof startServer>>;
  try {
    if (configFile) {
      loaded = loadConfigFile(configFile);
    } else {
      quick = quickstartConfig();
      loaded = quick.loaded;
    }
    preflight(loaded.config);
    const { config, ignoredEnv } = loaded;
    const logger = createLogger(config.loglevel ?? config.log.level, config.log.fields);
    for (const name of ignoredEnv) logger.warn({ env: name }, 'ignoring environment variable that names no config key');
    running = await startServer(config, { logger });
  } catch (err) {
    const failure = startFailure(err, loaded?.config);
    if (!failure) throw err;
    process.stderr.write(`registry: ${failure.message}\n`);
    process.exit(failure.exitCode);
  }
  const { config } = loaded;
  const { logger } = running;
  logger.info({ url: running.url, root: describeStorage(config) }, 'registry listening');
  if (quick) {
    const host = running.url.replace(/^https?:\/\//, '');
    process.stderr.write(
      [
        '',
        `registry-stack: private registry on ${running.url}, storing under ${config.storage.filesystem?.rootdirectory}`,
        `  push: docker login ${host} -u ${quick.user} -p ${quick.password} && docker tag app:1.0 ${host}/app:1.0 && docker push ${host}/app:1.0`,
        `  pull: docker pull ${host}/app:1.0`,
        '',
      ].join('\n'),
    );
  }

  const stop = (signal: string) => {
    logger.info({ signal }, 'shutting down');
    running.close().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.once('SIGINT', () => stop('SIGINT'));
  process.once('SIGTERM', () => stop('SIGTERM'));
}

/**
 * The one place a failed start becomes the one line an operator reads
 * (`registry: …`, no stack trace): what to fix, by its config key. Exit 2 for
 * a mistake in the config or on the host that a restart will not cure; 1 for
 * Redis being away, which may come back. Anything else is a bug and keeps its
 * stack trace.
 */
export function startFailure(err: unknown, config: RegistryConfig | undefined): { message: string; exitCode: number } | undefined {
  if (err instanceof ConfigError) return { message: err.message, exitCode: 2 };
  // Replicas must not run without the state they share: say so plainly and stop.
  if (err instanceof RedisUnavailable) return { message: err.message, exitCode: 1 };
  const e = err as NodeJS.ErrnoException & { address?: string; port?: number };
  if (config && e?.syscall && LISTEN_ERRORS[e.code ?? ''] !== undefined && ['listen', 'bind', 'getaddrinfo'].includes(e.syscall)) {
    // Which listener failed is only known from the address in the error (the schema keeps their ports apart).
    const key = config.admin && listenerOf(config.admin.addr, e) && !(config.http.net === 'tcp' && listenerOf(config.http.addr, e)) ? 'admin.addr' : 'http.addr';
    const value = key === 'admin.addr' ? config.admin!.addr : config.http.addr;
    return { message: `${key}: cannot listen on ${JSON.stringify(value)}: ${LISTEN_ERRORS[e.code!]} (${e.code})`, exitCode: 2 };
  }
  return undefined;
}

const LISTEN_ERRORS: Record<string, string> = {
  EADDRINUSE: 'the address is in use by another process',
  EACCES: 'permission denied (ports below 1024 need privileges)',
  EADDRNOTAVAIL: 'no interface of this machine has that address',
  ENOTFOUND: 'the host name does not resolve',
  EAI_AGAIN: 'the host name does not resolve (yet)',
};

function listenerOf(addr: string, e: { port?: number; hostname?: string }): boolean {
  const parsed = parseListenAddr(addr);
  if (!parsed) return false;
  if (e.port !== undefined) return e.port === parsed.port;
  // getaddrinfo errors carry the host name instead of a port.
  return e.hostname !== undefined && e.hostname === parsed.host;
}
