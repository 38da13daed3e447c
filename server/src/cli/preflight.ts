// What `registry serve` checks after the config loads and before it listens:
// things the schema cannot see because they live on disk. Without these a
// careless value is accepted and fails later, where it is hard to read: an
// unwritable data directory as a bare 500 on the first push (and EACCES only
// on /readyz), a non-bcrypt htpasswd line as a stack trace out of startServer.
// Each problem is a ConfigError naming the key, so it reaches the operator as
// the same one line as any other config mistake.
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { createRequire } from 'node:module';
import type * as Tls from 'node:tls';
import { parseHtpasswd } from '../auth/htpasswd.ts';
import { Upstreams } from '../proxy/upstreams.ts';
import { ConfigError } from '../config/load.ts';
import type { RegistryConfig } from '../config/schema.ts';

export function preflight(config: RegistryConfig): void {
  checkDataDirectory(config);
  checkHtpasswd(config);
  checkTls(config);
  checkUpstreams(config);
}

/**
 * http.tls: both files, readable, a certificate and the key that goes with it.
 * One of the two alone would otherwise start a plain HTTP server without a word.
 */
function checkTls(config: RegistryConfig): void {
  const tls = config.http.tls;
  if (!tls || (tls.certificate === undefined && tls.key === undefined)) return;
  if (tls.certificate === undefined) throw new ConfigError('http.tls.certificate: required with http.tls.key (both, or neither for plain HTTP)');
  if (tls.key === undefined) throw new ConfigError('http.tls.key: required with http.tls.certificate (both, or neither for plain HTTP)');
  const read = (key: string, file: string): Buffer => {
    try {
      return readFileSync(file);
    } catch (err) {
      throw new ConfigError(`${key}: cannot read ${JSON.stringify(file)}: ${osError(err)}`);
    }
  };
  const cert = read('http.tls.certificate', tls.certificate);
  const key = read('http.tls.key', tls.key);
  try {
    // node:tls is loaded only here, for a TLS listener: a plain HTTP server never needs it.
    (createRequire(import.meta.url)('node:tls') as typeof Tls).createSecureContext({ cert, key });
  } catch (err) {
    // OpenSSL's words: "key values mismatch", "no start line" (not PEM), "bad decrypt" (encrypted key).
    throw new ConfigError(`http.tls.certificate, http.tls.key: ${JSON.stringify(tls.certificate)} and ${JSON.stringify(tls.key)} are not a PEM certificate and its key: ${(err as Error).message.replace(/^error:[0-9A-F]+:[^:]*::/, '')}`);
  }
}

/** proxy: the upstream list as the mirror builds it (each host once, defaulthost among them). */
function checkUpstreams(config: RegistryConfig): void {
  if (!config.proxy) return;
  try {
    Upstreams.fromConfig(config.proxy, {});
  } catch (err) {
    const message = (err as Error).message;
    // proxy.remoteurl is an upstream too, named by its host (docker.io for Docker Hub).
    const hint = config.proxy.remoteurl && /listed twice/.test(message) ? ' (proxy.remoteurl names one upstream too: give each host once)' : '';
    throw new ConfigError(`${message}${hint}`);
  }
}

/** storage.filesystem.rootdirectory: created if missing, then proven writable with a probe file. */
function checkDataDirectory(config: RegistryConfig): void {
  const root = config.storage.filesystem?.rootdirectory;
  if (root === undefined) return;
  const key = 'storage.filesystem.rootdirectory';
  try {
    mkdirSync(root, { recursive: true });
  } catch (err) {
    throw new ConfigError(`${key}: cannot create the data directory ${JSON.stringify(root)}: ${osError(err)}`);
  }
  // Write access is what pushes need; only a write shows it (permissions, read-only mounts, ACLs, root's exemptions).
  const probe = path.join(root, `.registry-write-probe-${process.pid}`);
  try {
    writeFileSync(probe, 'probe\n');
  } catch (err) {
    throw new ConfigError(`${key}: cannot write to the data directory ${JSON.stringify(root)}: ${osError(err)}`);
  }
  rmSync(probe, { force: true });
}

/** auth.htpasswd.path: read and parsed now, so a bad line stops the start (the server would throw it anyway). */
function checkHtpasswd(config: RegistryConfig): void {
  const file = config.auth?.htpasswd?.path;
  if (file === undefined) return;
  const key = 'auth.htpasswd.path';
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(`${key}: cannot read ${JSON.stringify(file)}: ${osError(err)}`);
  }
  try {
    parseHtpasswd(text, file);
  } catch (err) {
    throw new ConfigError(`${key}: ${(err as Error).message}`);
  }
}

/** "EACCES: permission denied, open '/x/.probe'" → "permission denied (EACCES)": the path is named already. */
export function osError(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  if (!e.code) return e.message;
  const text = e.message.replace(new RegExp(`^${e.code}: `), '').replace(/, \w+ '.*'$/, '');
  return `${text} (${e.code})`;
}
