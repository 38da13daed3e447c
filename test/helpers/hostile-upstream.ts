// A hostile upstream registry for the mirror's tests: a small node:http
// server speaking enough of the distribution API (GET /v2/, HEAD/GET of
// manifests by tag or digest and of blobs) to serve images, with the
// misbehaviours a real upstream, or someone publishing on it, can show:
// a 404 (or nothing at all) held as long as the test likes, wrong bytes under
// the right length, a lying Content-Length or Docker-Content-Digest, a body
// trickled a few bytes at a time, bodies larger than the blob (with a
// Content-Length or chunked), a body held in the middle until released.
//
// Every exchange is recorded (how many body bytes the socket took, and whether
// the response completed or the mirror cut it off), and tests wait on those
// records changing, never on time.
import { randomBytes } from 'node:crypto';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Blob, Image } from './oci.ts';

/** Something a misbehaviour waits for; opened by the test. */
export class Gate {
  private resolve!: () => void;
  readonly opened: Promise<void> = new Promise((resolve) => {
    this.resolve = resolve;
  });

  open(): void {
    this.resolve();
  }
}

export interface BlobMisbehaviour {
  /** Answer 404 BLOB_UNKNOWN (to HEAD and GET), as for a repository without the blob. */
  notFound?: boolean;
  /** Send nothing, not even the status line, until this gate opens (never, when it is never opened). */
  holdHeaders?: Gate;
  /** Invert the byte at this offset (negative: counted from the end); the length stays right. */
  flipByteAt?: number;
  /** Content-Length to announce instead of the real one; 'none' sends the body chunked. */
  contentLength?: number | 'none';
  /** Docker-Content-Digest to announce instead of the real one. */
  digestHeader?: string;
  /** Send `bytes` bytes, then wait `everyMs`, and so on. */
  trickle?: { bytes: number; everyMs: number };
  /** After the blob's bytes, random ones until the body is this long (then it ends, or is cut short of a larger Content-Length). */
  padTo?: number;
  /** Send this many bytes of the body, then wait for the gate. */
  holdBodyAfter?: { bytes: number; gate: Gate };
}

export interface Exchange {
  method: string;
  path: string;
  /** The repository named in the path, for /v2/<repo>/(manifests|blobs)/<ref>. */
  repo?: string;
  kind: 'blob' | 'manifest' | 'other';
  reference?: string;
  status?: number;
  /** Body bytes the socket accepted. */
  bytesSent: number;
  /** The body reached a holdBodyAfter point. */
  held: boolean;
  /** complete: the response ended as it meant to; aborted: the connection closed before. */
  state: 'pending' | 'complete' | 'aborted';
}

interface Repo {
  manifests: Map<string, { body: Buffer; mediaType: string; digest: string }>;
  blobs: Map<string, Blob>;
  misbehaviours: Map<string, BlobMisbehaviour>;
}

const ROUTE = /^\/v2\/(.+)\/(manifests|blobs)\/([^/]+)$/;
const CHUNK = 64 * 1024;

export class HostileUpstream {
  readonly exchanges: Exchange[] = [];
  private readonly repos = new Map<string, Repo>();
  private waiters: Array<() => void> = [];
  private readonly timers = new Set<NodeJS.Timeout>();
  private readonly server: http.Server;

  private constructor() {
    this.server = http.createServer((req, res) => {
      this.handle(req, res).catch(() => res.destroy());
    });
  }

  static async start(): Promise<HostileUpstream> {
    const up = new HostileUpstream();
    await new Promise<void>((resolve, reject) => {
      up.server.once('error', reject);
      up.server.listen({ host: '127.0.0.1', port: 0 }, () => resolve());
    });
    return up;
  }

  get url(): string {
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  /** Serves an image's manifest (under `tag` and its digest) and blobs in `repo`. */
  serveImage(repo: string, tag: string, image: Image): void {
    const r = this.repo(repo);
    const entry = { body: image.manifest.data, mediaType: image.mediaType, digest: image.manifest.digest };
    r.manifests.set(tag, entry);
    r.manifests.set(image.manifest.digest, entry);
    for (const blob of [image.config, ...image.layers]) r.blobs.set(blob.digest, blob);
  }

  serveBlob(repo: string, blob: Blob): void {
    this.repo(repo).blobs.set(blob.digest, blob);
  }

  /** How `repo` answers for the blob `digest` from now on (the blob need not be served there: notFound). */
  misbehave(repo: string, digest: string, how: BlobMisbehaviour): void {
    this.repo(repo).misbehaviours.set(digest, how);
  }

  /**
   * The first exchange (past or future) that satisfies `test`, at the time it does; undefined
   * when none has within `boundMs` (a bound for tests that fail, not a timing anyone relies on).
   */
  async waitFor(test: (e: Exchange) => boolean, boundMs = 30_000): Promise<Exchange | undefined> {
    const deadline = Date.now() + boundMs;
    for (;;) {
      const found = this.exchanges.find(test);
      if (found) return found;
      const left = deadline - Date.now();
      if (left <= 0) return undefined;
      let timer: NodeJS.Timeout | undefined;
      await new Promise<void>((resolve) => {
        this.waiters.push(resolve);
        timer = setTimeout(resolve, left);
      });
      clearTimeout(timer);
    }
  }

  async stop(): Promise<void> {
    for (const t of this.timers) clearTimeout(t);
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }

  private repo(name: string): Repo {
    let r = this.repos.get(name);
    if (!r) {
      r = { manifests: new Map(), blobs: new Map(), misbehaviours: new Map() };
      this.repos.set(name, r);
    }
    return r;
  }

  private changed(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const path = new URL(req.url ?? '/', 'http://hostile').pathname;
    const m = ROUTE.exec(path);
    const ex: Exchange = {
      method: req.method ?? 'GET',
      path,
      repo: m?.[1],
      kind: m ? (m[2] === 'blobs' ? 'blob' : 'manifest') : 'other',
      reference: m?.[3],
      bytesSent: 0,
      held: false,
      state: 'pending',
    };
    this.exchanges.push(ex);
    res.on('close', () => {
      ex.state = res.writableFinished ? 'complete' : 'aborted';
      this.changed();
    });
    this.changed();
    const head = req.method === 'HEAD';
    if (path === '/v2/' || path === '/v2') return this.answer(ex, res, 200, { 'content-type': 'application/json' }, head ? undefined : Buffer.from('{}'));
    if (!m) return this.answer(ex, res, 404, {}, undefined);
    const repo = this.repos.get(m[1]);
    if (m[2] === 'manifests') {
      const manifest = repo?.manifests.get(m[3]);
      if (!manifest) return this.error(ex, res, 404, 'MANIFEST_UNKNOWN', head);
      const headers = { 'content-type': manifest.mediaType, 'docker-content-digest': manifest.digest, 'content-length': String(manifest.body.length) };
      return this.answer(ex, res, 200, headers, head ? undefined : manifest.body);
    }
    const how = repo?.misbehaviours.get(m[3]) ?? {};
    if (how.holdHeaders) await how.holdHeaders.opened;
    if (res.destroyed) return;
    const blob = repo?.blobs.get(m[3]);
    if (how.notFound || !blob) return this.error(ex, res, 404, 'BLOB_UNKNOWN', head);
    const length = how.contentLength ?? Math.max(blob.size, how.padTo ?? 0);
    const headers: Record<string, string> = {
      'content-type': 'application/octet-stream',
      'docker-content-digest': how.digestHeader ?? blob.digest,
    };
    if (length !== 'none') headers['content-length'] = String(length);
    ex.status = 200;
    res.writeHead(200, headers);
    if (head) return void res.end();
    await this.sendBody(ex, res, blob, how, length);
  }

  private async sendBody(ex: Exchange, res: http.ServerResponse, blob: Blob, how: BlobMisbehaviour, length: number | 'none'): Promise<void> {
    let data = blob.data;
    if (how.flipByteAt !== undefined) {
      data = Buffer.from(data);
      const at = how.flipByteAt < 0 ? data.length + how.flipByteAt : how.flipByteAt;
      data[at] ^= 0xff;
    }
    const total = Math.max(data.length, how.padTo ?? 0);
    const step = how.trickle?.bytes ?? CHUNK;
    for (let pos = 0; pos < total && !res.destroyed; ) {
      const hold = how.holdBodyAfter;
      let end = Math.min(total, pos + step);
      if (hold && pos < hold.bytes && end > hold.bytes) end = hold.bytes;
      const chunk = end <= data.length ? data.subarray(pos, end) : Buffer.concat([data.subarray(pos), randomBytes(end - Math.max(pos, data.length))]);
      await this.write(res, chunk);
      ex.bytesSent += chunk.length;
      pos = end;
      if (hold && pos === hold.bytes) {
        ex.held = true;
        this.changed();
        await hold.gate.opened;
      }
      if (how.trickle && pos < total) await this.delay(how.trickle.everyMs);
    }
    this.changed();
    if (res.destroyed) return;
    // A body shorter than the Content-Length it announced: cut the connection, as a dying upstream does.
    if (length !== 'none' && total < length) res.destroy();
    else res.end();
  }

  private write(res: http.ServerResponse, chunk: Buffer): Promise<void> {
    return new Promise((resolve) => {
      if (res.destroyed) return resolve();
      const onClose = () => resolve();
      res.once('close', onClose);
      const ok = res.write(chunk, () => {
        res.off('close', onClose);
        if (ok) resolve();
      });
      if (!ok) {
        res.once('drain', () => {
          res.off('close', onClose);
          resolve();
        });
      }
    });
  }

  private delay(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.timers.delete(t);
        resolve();
      }, ms);
      this.timers.add(t);
    });
  }

  private error(ex: Exchange, res: http.ServerResponse, status: number, code: string, head: boolean): void {
    const body = Buffer.from(JSON.stringify({ errors: [{ code, message: `${code.toLowerCase()} (hostile upstream)` }] }));
    this.answer(ex, res, status, { 'content-type': 'application/json', 'content-length': String(body.length) }, head ? undefined : body);
  }

  private answer(ex: Exchange, res: http.ServerResponse, status: number, headers: Record<string, string>, body: Buffer | undefined): void {
    ex.status = status;
    res.writeHead(status, headers);
    res.end(body);
    if (body) ex.bytesSent += body.length;
  }
}
