// Starting and stopping the single-node Ceph RGW of start-ceph-rgw.sh, for the
// test suites (test/helpers/s3.ts) and the bench (test/bench/s3.ts).
import { spawn, spawnSync } from 'node:child_process';
import { closeSync, openSync, readFileSync } from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const TOOLS = path.dirname(fileURLToPath(import.meta.url));
const START_TIMEOUT_MS = 180_000;

export interface RgwStart {
  /** http://127.0.0.1:<port> */
  endpoint: string;
  /** The script's exit code (0: the cluster runs). */
  code: number | null;
}

/**
 * Runs start-ceph-rgw.sh for a cluster in `cephDir` on two free ports, with the
 * given keys, its output going to `logFile`. Rejects when it does not finish in 3 minutes.
 * `objectStore`: the OSD's backend (the script's CEPH_OBJECTSTORE): bluestore (a sparse
 * file on disk, the default) or memstore (RAM; what RGW answers is the same).
 */
export async function startCephRgw(options: {
  cephDir: string;
  logFile: string;
  accessKey: string;
  secretKey: string;
  objectStore?: 'bluestore' | 'memstore';
  /** More ceph.conf lines (the script's CEPH_EXTRA_CONF). */
  extraConf?: string;
  /** More environment for the script and the daemons it starts. */
  env?: Record<string, string>;
}): Promise<RgwStart> {
  const rgwPort = await pickPort();
  let monPort = await pickPort();
  while (monPort === rgwPort) monPort = await pickPort();
  const fd = openSync(options.logFile, 'a');
  try {
    // The daemons inherit the log file, not a pipe of ours: waiting for the script's
    // exit does not wait for them.
    const child = spawn('bash', [path.join(TOOLS, 'start-ceph-rgw.sh')], {
      env: {
        ...process.env,
        CEPH_RGW_DIR: options.cephDir,
        RGW_PORT: String(rgwPort),
        CEPH_MON_PORT: String(monPort),
        S3_ACCESS_KEY: options.accessKey,
        S3_SECRET_KEY: options.secretKey,
        ...(options.objectStore ? { CEPH_OBJECTSTORE: options.objectStore } : {}),
        ...(options.extraConf ? { CEPH_EXTRA_CONF: options.extraConf } : {}),
        ...options.env,
      },
      stdio: ['ignore', fd, fd],
    });
    const code = await new Promise<number | null>((resolve, reject) => {
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new Error(`start-ceph-rgw.sh did not finish in ${START_TIMEOUT_MS / 1000} s\n${tail(options.logFile)}`));
      }, START_TIMEOUT_MS);
      child.once('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
      child.once('exit', (c) => {
        clearTimeout(timer);
        resolve(c);
      });
    });
    return { endpoint: `http://127.0.0.1:${rgwPort}`, code };
  } finally {
    closeSync(fd);
  }
}

/** Stops the cluster in `cephDir` (`purge`: and removes its data). */
export function stopCephRgw(cephDir: string, purge: boolean): void {
  spawnSync('bash', [path.join(TOOLS, 'stop-ceph-rgw.sh'), ...(purge ? ['--purge'] : [])], {
    env: { ...process.env, CEPH_RGW_DIR: cephDir },
    stdio: 'ignore',
    timeout: 60_000,
  });
}

/** The last lines of a log file ('' if there is none). */
export function tail(file: string, lines = 40): string {
  try {
    return readFileSync(file, 'utf8').split('\n').slice(-lines).join('\n');
  } catch {
    return '';
  }
}

/** A free 127.0.0.1 port below the ephemeral range (so that no outgoing connection takes it meanwhile). */
async function pickPort(): Promise<number> {
  for (let i = 0; i < 100; i++) {
    const port = 20_000 + Math.floor(Math.random() * 12_000);
    if (await canListen(port)) return port;
  }
  throw new Error('no free port found for RGW');
}

function canListen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.once('error', () => resolve(false));
    srv.listen({ host: '127.0.0.1', port }, () => srv.close(() => resolve(true)));
  });
}
