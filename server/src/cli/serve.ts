// `registry serve [config.yml]`
import { ConfigError, type LoadedConfig, loadConfigFile } from '../config/load.ts';
import { quickstartConfig } from './quickstart.ts';
import { parseListenAddr, type RegistryConfig } from '../config/schema.ts';
import { startServer } from '../http/server.ts';
import { createLogger } from '../log/logger.ts';
import { describeStorage } from '../storage/factory.ts';
import { RedisUnavailable } from '../shared/redis.ts';
import * as path from 'node:path';
import { osError, preflight } from './preflight.ts';
import { chooseWasmTiering } from './wasm-flags.ts';

/** `registry serve --help`: what the arguments alone do not say. */
export const SERVE_HELP = `
Configuration:
  Any config key can also be set from the environment, as in distribution:
  REGISTRY_ and the key's path in capitals joined by _, e.g.
    REGISTRY_HTTP_ADDR=127.0.0.1:5001                        http.addr
    REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY=/srv/registry  storage.filesystem.rootdirectory
    REGISTRY_LOG_LEVEL=debug                                 log.level
  They override the config file, and the built-in default when there is none.

Port and address:
  http.addr (default 127.0.0.1:5000 without a config file, :5000 with one). For example
    REGISTRY_HTTP_ADDR=127.0.0.1:5001 npx registry serve
    REGISTRY_HTTP_ADDR=:5001 npm start -- config.yml
  ":5001" listens on every interface; "127.0.0.1:5001" on this machine only.

Exit codes:
  0  stopped by SIGINT or SIGTERM
  1  Redis (the redis section) unreachable: may succeed when it is back
  2  the configuration or the host is wrong (one line on stderr names the key)
`;

export async function serveCommand(configFile: string | undefined): Promise<void> {
  let loaded: LoadedConfig | undefined;
  let quick: ReturnType<typeof quickstartConfig> | undefined;
  let running: Awaited<ReturnType<typeof startServer>>;
  try {
    if (configFile) {
      loaded = loadConfigFile(configFile);
    } else {
      quick = builtinDefault();
      loaded = quick.loaded;
    }
    preflight(loaded.config);
    const { config, ignoredEnv } = loaded;
    // First: it may start the process again with a V8 flag (wasm-flags.ts), before anything is logged.
    chooseWasmTiering(config);
    const logger = createLogger(config.loglevel ?? config.log.level, config.log.fields);
    for (const name of ignoredEnv) logger.warn({ env: name }, 'ignoring environment variable that names no config key');
    running = await startServer(config, { logger });
  } catch (err) {
    const failure = startFailure(err, loaded?.config);
    if (!failure) throw err;
    // Without a config file there is nothing to edit: say how else to move it.
    const hint = quick && failure.message.startsWith('http.addr: cannot listen') ? '; choose another with REGISTRY_HTTP_ADDR, e.g. REGISTRY_HTTP_ADDR=127.0.0.1:5001 npm start' : '';
    process.stderr.write(`registry: ${failure.message}${hint}\n`);
    process.exit(failure.exitCode);
  }
  const { config } = loaded;
  const { logger } = running;
  logger.info({ url: running.url, root: describeStorage(config) }, 'registry listening');
  if (quick) process.stderr.write(quickstartBanner(running.url, config.storage.filesystem?.rootdirectory ?? '', quick));

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

/** The built-in default, whose data directory (./data) is made before its config exists: its errors are config errors too. */
function builtinDefault(): ReturnType<typeof quickstartConfig> {
  try {
    return quickstartConfig();
  } catch (err) {
    if (!(err as NodeJS.ErrnoException).code) throw err;
    const dir = path.resolve('data');
    throw new ConfigError(
      `storage.filesystem.rootdirectory: the built-in default stores under ${JSON.stringify(dir)}, which cannot be written: ${osError(err)}; run from a directory you can write to, or give a config file`,
    );
  }
}

/**
 * How to use the built-in default, on stderr. The password is read from its
 * file by the client (--password-stdin), so it appears in neither the shell's
 * history nor the process list. The registry speaks plain HTTP on loopback:
 * Docker allows that for 127.0.0.0/8 by itself, podman and skopeo must be told
 * (--tls-verify=false).
 */
export function quickstartBanner(url: string, root: string, quick: { user: string; passwordFile: string }): string {
  const host = url.replace(/^https?:\/\//, '');
  const rel = path.relative(process.cwd(), quick.passwordFile);
  const file = rel && !rel.startsWith('..') && !path.isAbsolute(rel) ? `./${rel}` : quick.passwordFile;
  return [
    '',
    `registry-stack: private registry on ${url}, storing under ${root}`,
    `  user ${quick.user}, password in ${file}; anonymous pulls are allowed, pushes need the login`,
    `  docker:  docker login ${host} -u ${quick.user} --password-stdin < ${file}`,
    `           docker tag app:1.0 ${host}/app:1.0 && docker push ${host}/app:1.0 && docker pull ${host}/app:1.0`,
    `  podman:  podman login --tls-verify=false ${host} -u ${quick.user} --password-stdin < ${file}`,
    `           podman push --tls-verify=false app:1.0 ${host}/app:1.0 && podman pull --tls-verify=false ${host}/app:1.0`,
    `  skopeo:  skopeo login --tls-verify=false ${host} -u ${quick.user} --password-stdin < ${file}`,
    `           skopeo copy --dest-tls-verify=false oci:./app-layout:1.0 docker://${host}/app:1.0`,
    '  (plain HTTP on loopback: Docker allows it for 127.0.0.1; podman and skopeo need --tls-verify=false)',
    '',
    '',
  ].join('\n');
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
