// A private redis-server for tests: Debian's binary, bound to 127.0.0.1 on a
// random port, with its own temp directory and no persistence, run as
// /work/shared/CLIENTS.md shows (daemonized, with a pid file). If it cannot
// start, startRedis() throws with its log: the suites that need it fail, they
// are never skipped. stop() ends exactly that process (by its pid file).
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import * as path from 'node:path';
import { Redis } from 'ioredis';
import { freePort, makeTempDir, sleep } from './process.ts';

export interface TestRedis {
  readonly port: number;
  /** host:port, for redis.addr. */
  readonly addr: string;
  readonly dir: string;
  /** A client of the test's own (closed by stop()). */
  readonly client: Redis;
  stop(): Promise<void>;
}

export async function startRedis(): Promise<TestRedis> {
  const dir = makeTempDir('rs-redis-');
  const pidFile = path.join(dir, 'redis.pid');
  const logFile = path.join(dir, 'redis.log');
  let lastError = '';
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = await freePort();
    const run = spawnSync(
      'redis-server',
      ['--bind', '127.0.0.1', '--port', String(port), '--dir', dir, '--save', '', '--appendonly', 'no', '--daemonize', 'yes', '--pidfile', pidFile, '--logfile', logFile],
      { encoding: 'utf8', timeout: 15_000 },
    );
    if (run.error) {
      rmSync(dir, { recursive: true, force: true });
      throw new Error(`redis-server could not be run (${run.error.message}); install it: apt-get install -y redis-server`);
    }
    if (run.status !== 0) {
      lastError = `redis-server exited with ${run.status}: ${run.stderr}${run.stdout}`;
      continue;
    }
    const client = new Redis({ host: '127.0.0.1', port, lazyConnect: true, maxRetriesPerRequest: 1, retryStrategy: () => null });
    client.on('error', () => {});
    const deadline = Date.now() + 10_000;
    let up = false;
    while (Date.now() < deadline) {
      try {
        if (client.status !== 'ready') await client.connect();
        if ((await client.ping()) === 'PONG') {
          up = true;
          break;
        }
      } catch {
        await sleep(50);
      }
    }
    const pid = readPid(pidFile);
    if (!up || pid === undefined) {
      client.disconnect();
      if (pid !== undefined) killAndWait(pid);
      lastError = `redis-server on port ${port} did not answer PING:\n${readLog(logFile)}`;
      continue;
    }
    // Reconnect as usual from here on (the test's client outlives brief hiccups).
    client.options.retryStrategy = (times) => Math.min(times * 100, 1000);
    return {
      port,
      addr: `127.0.0.1:${port}`,
      dir,
      client,
      async stop() {
        client.disconnect();
        killAndWait(pid);
        rmSync(dir, { recursive: true, force: true });
      },
    };
  }
  rmSync(dir, { recursive: true, force: true });
  throw new Error(`redis-server did not start: ${lastError}`);
}

function readPid(file: string): number | undefined {
  for (let i = 0; i < 50; i++) {
    if (existsSync(file)) {
      const pid = Number(readFileSync(file, 'utf8').trim());
      if (Number.isInteger(pid) && pid > 0) return pid;
    }
    spawnSync('sleep', ['0.05']);
  }
  return undefined;
}

function killAndWait(pid: number): void {
  try {
    process.kill(pid, 'SIGTERM');
  } catch {
    return;
  }
  for (let i = 0; i < 100; i++) {
    try {
      process.kill(pid, 0);
    } catch {
      return;
    }
    spawnSync('sleep', ['0.05']);
  }
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // gone
  }
}

function readLog(file: string): string {
  try {
    return readFileSync(file, 'utf8').slice(-4000);
  } catch {
    return '(no log)';
  }
}
