// A real upstream registry for mirror tests: Debian's `docker-registry`
// (CNCF distribution 2.8.2) with its access log on, every access-log line
// kept (unbounded, parsed) so tests can count what the mirror asked for.
//
// Counting without timing: distribution writes an access-log line when a
// response completes, so `sync()` sends a marker request of its own and waits
// for its line; every request that completed before it is then in `entries`.
import { type ChildProcess, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { request } from 'undici';
import { stringify as toYaml } from 'yaml';
import { RegistryClient } from '../client.ts';
import type { Blob, Image, IndexImage } from '../oci.ts';
import { cleanEnv, freePort, makeTempDir, OutputLog, sleep, waitForHttp } from '../process.ts';
import { basicAuth, writeHtpasswd } from '../server.ts';

export interface AccessEntry {
  method: string;
  /** Path without the query string. */
  path: string;
  /** The query string (without '?'), '' when none. */
  query: string;
  status: number;
}

export interface UpstreamOptions {
  /** user → password: htpasswd auth on. */
  users?: Record<string, string>;
  /** storage root; a fresh temp dir by default. */
  dataDir?: string;
}

// 127.0.0.1 - - [24/Nov/2026:19:04:02 +0000] "HEAD /v2/foo/manifests/bar?ns=x HTTP/1.1" 404 93 "" "curl/7.88.1"
const ACCESS_LINE = /^\S+ \S+ \S+ \[[^\]]+\] "([A-Z]+) (\S+) HTTP\/[\d.]+" (\d{3}) /;

export class FakeUpstream {
  readonly entries: AccessEntry[] = [];
  readonly output = new OutputLog();
  private child: ChildProcess | undefined;
  private exited: Promise<void> = Promise.resolve();
  private alive = false;
  private pending = '';

  private constructor(
    readonly workDir: string,
    readonly dataDir: string,
    readonly port: number,
    readonly users: Record<string, string> | undefined,
  ) {}

  static async start(options: UpstreamOptions = {}): Promise<FakeUpstream> {
    const workDir = makeTempDir('rs-mirror-up-');
    const dataDir = options.dataDir ?? path.join(workDir, 'data');
    mkdirSync(dataDir, { recursive: true });
    let lastErr: unknown;
    for (let attempt = 0; attempt < 5; attempt++) {
      const up = new FakeUpstream(workDir, dataDir, await freePort(), options.users);
      try {
        await up.launch();
        return up;
      } catch (err) {
        lastErr = err;
        if (!/address already in use/.test(String(err))) throw err;
      }
    }
    throw lastErr;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  get host(): string {
    return `127.0.0.1:${this.port}`;
  }

  /** Basic auth header for the first user (undefined without auth). */
  get auth(): string | undefined {
    const first = this.users && Object.entries(this.users)[0];
    return first ? basicAuth(first[0], first[1]) : undefined;
  }

  /** A client that talks to the upstream directly (to seed images, move tags). */
  client(): RegistryClient {
    return new RegistryClient(this.url, this.auth);
  }

  /**
   * Pushes a blob the way distribution 2.8 accepts it (it has no monolithic
   * POST ?digest=): POST for a session, then PUT ?digest= with the bytes.
   */
  async pushBlob(name: string, blob: Blob): Promise<void> {
    const c = this.client();
    const head = await c.req(`/v2/${name}/blobs/${blob.digest}`, { method: 'HEAD' });
    if (head.status === 200) return;
    const start = await c.req(`/v2/${name}/blobs/uploads/`, { method: 'POST' });
    const location = start.header('location');
    if (start.status !== 202 || !location) throw new Error(`start upload to ${name}: ${start.status} ${start.text}`);
    const url = new URL(c.resolve(location));
    url.searchParams.set('digest', blob.digest);
    const put = await c.req(url.toString(), {
      method: 'PUT',
      headers: { 'content-type': 'application/octet-stream', 'content-length': String(blob.size) },
      body: blob.data,
    });
    if (put.status !== 201) throw new Error(`finish upload of ${blob.digest} to ${name}: ${put.status} ${put.text}`);
  }

  async pushImage(name: string, tag: string, image: Image): Promise<void> {
    await this.pushBlob(name, image.config);
    for (const layer of image.layers) await this.pushBlob(name, layer);
    await this.client().pushManifest(name, tag, image.manifest, image.mediaType);
  }

  async pushIndex(name: string, tag: string, index: IndexImage): Promise<void> {
    for (const img of index.images) await this.pushImage(name, img.manifest.digest, img);
    await this.client().pushManifest(name, tag, index.index, index.mediaType);
  }

  /** Deletes a manifest (and so its tags) by digest. */
  async deleteManifest(name: string, digest: string): Promise<void> {
    const res = await this.client().req(`/v2/${name}/manifests/${digest}`, { method: 'DELETE' });
    if (res.status !== 202) throw new Error(`delete ${name}@${digest}: ${res.status} ${res.text}`);
  }

  get running(): boolean {
    return this.alive;
  }

  private async launch(): Promise<void> {
    const config: Record<string, unknown> = {
      version: 0.1,
      log: { level: 'info', accesslog: { disabled: false } },
      storage: {
        filesystem: { rootdirectory: this.dataDir },
        delete: { enabled: true },
        maintenance: { uploadpurging: { enabled: false } },
      },
      http: { addr: `127.0.0.1:${this.port}`, secret: 'mirror-test-secret' },
    };
    if (this.users && Object.keys(this.users).length > 0) {
      const htpasswdPath = path.join(this.workDir, 'htpasswd');
      writeHtpasswd(htpasswdPath, this.users);
      config.auth = { htpasswd: { realm: 'upstream', path: htpasswdPath } };
    }
    const configFile = path.join(this.workDir, 'config.yml');
    writeFileSync(configFile, toYaml(config));
    const child = spawn('docker-registry', ['serve', configFile], {
      cwd: this.workDir,
      env: cleanEnv({ AWS_CA_BUNDLE: undefined }),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.child = child;
    this.alive = true;
    this.exited = new Promise<void>((resolve) => {
      child.once('exit', () => {
        this.alive = false;
        resolve();
      });
      child.once('error', (err) => {
        this.output.push(String(err));
        this.alive = false;
        resolve();
      });
    });
    // The access log goes to stdout, everything else to stderr.
    child.stdout?.on('data', (c: Buffer) => this.onAccessLog(c));
    child.stderr?.on('data', (c: Buffer) => this.output.push(c));
    try {
      await waitForHttp(`${this.url}/v2/`, 30_000, () => this.alive);
    } catch (err) {
      await this.stop();
      throw new Error(`docker-registry did not start: ${(err as Error).message}\n${this.output}`);
    }
  }

  private onAccessLog(chunk: Buffer): void {
    this.pending += chunk.toString();
    let nl: number;
    while ((nl = this.pending.indexOf('\n')) >= 0) {
      const line = this.pending.slice(0, nl);
      this.pending = this.pending.slice(nl + 1);
      const m = ACCESS_LINE.exec(line);
      if (!m) continue;
      const q = m[2].indexOf('?');
      this.entries.push({
        method: m[1],
        path: q < 0 ? m[2] : m[2].slice(0, q),
        query: q < 0 ? '' : m[2].slice(q + 1),
        status: Number(m[3]),
      });
    }
  }

  /** Waits until every request that completed before this call is in `entries`. */
  async sync(): Promise<void> {
    const marker = randomUUID();
    const res = await request(`${this.url}/v2/?sync=${marker}`, { headers: this.auth ? { authorization: this.auth } : {} });
    await res.body.dump();
    const deadline = Date.now() + 10_000;
    while (!this.entries.some((e) => e.query === `sync=${marker}`)) {
      if (Date.now() > deadline) throw new Error('the upstream access log did not show the sync marker');
      await sleep(20);
    }
  }

  /** Entries matching method and path (a string is an exact path, a RegExp is tested), sync markers excluded. */
  requests(method?: string, pathMatch?: string | RegExp): AccessEntry[] {
    return this.entries.filter(
      (e) =>
        !e.query.startsWith('sync=') &&
        (method === undefined || e.method === method) &&
        (pathMatch === undefined || (typeof pathMatch === 'string' ? e.path === pathMatch : pathMatch.test(e.path))),
    );
  }

  /** After sync(): how many requests match. */
  async count(method?: string, pathMatch?: string | RegExp): Promise<number> {
    await this.sync();
    return this.requests(method, pathMatch).length;
  }

  /** SIGKILL: the upstream vanishes at once (connections refused afterwards). */
  async kill(): Promise<void> {
    if (this.alive) this.child?.kill('SIGKILL');
    await this.exited;
  }

  async stop(): Promise<void> {
    if (!this.alive) return;
    this.child?.kill('SIGTERM');
    const timer = setTimeout(() => {
      if (this.alive) this.child?.kill('SIGKILL');
    }, 5000);
    await this.exited;
    clearTimeout(timer);
  }

  /** Stops it and removes its temp directory (and the data in it). */
  async dispose(): Promise<void> {
    await this.kill();
    rmSync(this.workDir, { recursive: true, force: true });
  }

  /** Starts it again on the same port and data (after kill/stop). */
  async restart(): Promise<void> {
    if (this.alive) await this.stop();
    await this.launch();
  }
}
