// `registry serve [config.yml]`
import { ConfigError, type LoadedConfig, loadConfigFile } from '../config/load.ts';
import { quickstartConfig } from '../config/quickstart.ts';
import { startServer } from '../http/server.ts';
import { createLogger } from '../ops/logger.ts';
import { describeStorage } from '../storage/factory.ts';
import { RedisUnavailable } from '../shared/redis.ts';

export async function serveCommand(configFile: string | undefined): Promise<void> {
  let loaded: LoadedConfig;
  let quick: ReturnType<typeof quickstartConfig> | undefined;
  try {
    if (configFile) {
      loaded = loadConfigFile(configFile);
    } else {
      quick = quickstartConfig();
      loaded = quick.loaded;
    }
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`registry: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
  const { config, ignoredEnv } = loaded;
  const logger = createLogger(config.loglevel ?? config.log.level, config.log.fields);
  for (const name of ignoredEnv) logger.warn({ env: name }, 'ignoring environment variable that names no config key');

  let running: Awaited<ReturnType<typeof startServer>>;
  try {
    running = await startServer(config, { logger });
  } catch (err) {
    // Replicas must not run without the state they share: say so plainly and stop.
    if (err instanceof RedisUnavailable) {
      process.stderr.write(`registry: ${err.message}\n`);
      process.exit(1);
    }
    throw err;
  }
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
