// Runs Debian's `docker-registry` (CNCF distribution 2.8.2) on a random
// loopback port with a temp config: the reference peer for interop tests.
// This machine sets AWS_CA_BUNDLE, which makes distribution's compiled-in s3
// driver panic at start, so it runs without it.
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { stringify as toYaml } from 'yaml';
import { cleanEnv, freePort, makeTempDir, OutputLog, waitForHttp, writeHtpasswd } from './process.ts';

export const DISTRIBUTION_BIN = 'docker-registry';

export interface DistributionOptions {
  /** storage.filesystem.rootdirectory; ignored with `storageDriver`. */
  dataDir: string;
  /**
   * The storage driver section instead of storage.filesystem, e.g. `{ s3: {…} }`
   * with distribution 2.8's s3 keys (see distributionS3Config).
   */
  storageDriver?: Record<string, unknown>;
  /** user → password: htpasswd auth on. */
  users?: Record<string, string>;
  deleteEnabled?: boolean;
  workDir?: string;
  /** Extra top-level config keys. */
  extra?: Record<string, unknown>;
}

export interface DistributionProcess {
  readonly child: ChildProcess;
  readonly url: string;
  readonly port: number;
  readonly host: string;
  readonly dataDir: string;
  readonly output: OutputLog;
  stop(): Promise<void>;
}

export async function startDistribution(options: DistributionOptions, timeoutMs = 30_000): Promise<DistributionProcess> {
  const workDir = options.workDir ?? makeTempDir('rs-e2e-dist-');
  mkdirSync(workDir, { recursive: true });
  // distribution logs the configured address, not the bound one, so pick a
  // free port first; retry if another process takes it in between.
  let lastErr: unknown;
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = await freePort();
    const config: Record<string, unknown> = {
      version: 0.1,
      log: { level: 'info', accesslog: { disabled: true } },
      storage: {
        ...(options.storageDriver ?? { filesystem: { rootdirectory: options.dataDir } }),
        delete: { enabled: options.deleteEnabled ?? true },
        // No storage.cache: no blob descriptor cache that the other registry on the same directory
        // could make stale. No upload purging of the other registry's sessions either.
        maintenance: { uploadpurging: { enabled: false } },
      },
      http: { addr: `127.0.0.1:${port}`, secret: 'e2e-shared-secret' },
      ...options.extra,
    };
    if (options.users && Object.keys(options.users).length > 0) {
      const htpasswdPath = path.join(workDir, 'htpasswd');
      writeHtpasswd(htpasswdPath, options.users);
      config.auth = { htpasswd: { realm: 'e2e-dist', path: htpasswdPath } };
    }
    const configFile = path.join(workDir, `config-${port}.yml`);
    writeFileSync(configFile, toYaml(config));
    const output = new OutputLog();
    const child = spawn(DISTRIBUTION_BIN, ['serve', configFile], {
      cwd: workDir,
      env: cleanEnv({ AWS_CA_BUNDLE: undefined }),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child.stdout?.on('data', (c: Buffer) => output.push(c));
    child.stderr?.on('data', (c: Buffer) => output.push(c));
    let alive = true;
    const exited = new Promise<void>((resolve) => {
      child.once('exit', () => {
        alive = false;
        resolve();
      });
      child.once('error', (err) => {
        output.push(String(err));
        alive = false;
        resolve();
      });
    });
    const url = `http://127.0.0.1:${port}`;
    try {
      await waitForHttp(`${url}/v2/`, timeoutMs, () => alive);
    } catch (err) {
      if (alive) child.kill('SIGKILL');
      await exited;
      lastErr = new Error(`docker-registry did not start: ${(err as Error).message}\n${output}`);
      if (/address already in use/.test(output.toString())) continue;
      throw lastErr;
    }
    return {
      child,
      url,
      port,
      host: `127.0.0.1:${port}`,
      dataDir: options.dataDir,
      output,
      async stop() {
        if (!alive) return;
        child.kill('SIGTERM');
        const timer = setTimeout(() => {
          if (alive) child.kill('SIGKILL');
        }, 5000);
        await exited;
        clearTimeout(timer);
      },
    };
  }
  throw lastErr;
}

/**
 * storage.s3 for distribution 2.8 on a test bucket (test/helpers/s3.ts): its
 * keys only (no forcepathstyle in 2.8: it goes path-style whenever
 * regionendpoint is set), as test/bench runs it. Ours takes the same section.
 */
export function distributionS3Config(bucket: {
  bucket: string;
  endpoint: string;
  region: string;
  accessKey: string;
  secretKey: string;
}): Record<string, unknown> {
  return {
    bucket: bucket.bucket,
    region: bucket.region,
    regionendpoint: bucket.endpoint,
    accesskey: bucket.accessKey,
    secretkey: bucket.secretKey,
    secure: false,
    v4auth: true,
  };
}

/**
 * `docker-registry garbage-collect config.yml` (distribution's offline mark and
 * sweep) over `dataDir`, or over the storage of `options.storageDriver`. No
 * registry should write to it meanwhile.
 */
export async function distributionGarbageCollect(
  dataDir: string,
  options: { dryRun?: boolean; deleteUntagged?: boolean; workDir?: string; storageDriver?: Record<string, unknown> } = {},
): Promise<string> {
  const workDir = options.workDir ?? makeTempDir('rs-e2e-dist-gc-');
  mkdirSync(workDir, { recursive: true });
  const configFile = path.join(workDir, 'gc-config.yml');
  writeFileSync(
    configFile,
    toYaml({
      version: 0.1,
      log: { level: 'info' },
      storage: { ...(options.storageDriver ?? { filesystem: { rootdirectory: dataDir } }), delete: { enabled: true } },
    }),
  );
  const args = ['garbage-collect'];
  if (options.dryRun) args.push('--dry-run');
  if (options.deleteUntagged) args.push('--delete-untagged');
  args.push(configFile);
  return new Promise((resolve, reject) => {
    const output = new OutputLog();
    const child = spawn(DISTRIBUTION_BIN, args, { env: cleanEnv({ AWS_CA_BUNDLE: undefined }), stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout?.on('data', (c: Buffer) => output.push(c));
    child.stderr?.on('data', (c: Buffer) => output.push(c));
    child.once('error', reject);
    child.once('exit', (code) => {
      if (code === 0) resolve(output.toString());
      else reject(new Error(`docker-registry ${args.join(' ')} exited with ${code}:\n${output}`));
    });
  });
}
