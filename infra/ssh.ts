// SSH from the deploying machine to the VPS. The Docker provider runs the
// local `ssh` binary for every call to the VPS's engine, with the options
// made here; the host setup's remote commands (pulumi-command's own SSH
// client) check the same host key through their connection's `hostKey`.
//
// The host key is always checked: against vps.hostKey when it is set (a
// private known_hosts file holding only that key), else against the user's
// known_hosts. StrictHostKeyChecking=yes: an unknown or changed key stops the
// deploy; it is never accepted silently, since this connection carries root
// (or sudo) on the VPS and its Docker socket.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, lstatSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';

/** Key types OpenSSH may present as a host key, in the order we prefer them. */
const KEY_TYPES = [
  'ssh-ed25519',
  'ecdsa-sha2-nistp256',
  'ecdsa-sha2-nistp384',
  'ecdsa-sha2-nistp521',
  'sk-ssh-ed25519@openssh.com',
  'sk-ecdsa-sha2-nistp256@openssh.com',
  'rsa-sha2-512',
  'rsa-sha2-256',
  'ssh-rsa',
];
const isKeyType = (s: string) => KEY_TYPES.includes(s);

export interface HostKey {
  type: string;
  /** The base64 public key. */
  key: string;
}

/**
 * The keys in vps.hostKey: lines of `ssh-keyscan` (`HOST TYPE KEY`) or of a
 * public key file (`TYPE KEY [comment]`). Blank lines and # comments are skipped.
 */
export function parseHostKeys(text: string): HostKey[] {
  const keys: HostKey[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const fields = line.split(/\s+/);
    const at = fields.findIndex(isKeyType);
    if (at < 0 || at > 1 || !/^[A-Za-z0-9+/]+={0,2}$/.test(fields[at + 1] ?? '')) {
      throw new Error(`vps.hostKey: "${line.slice(0, 60)}" is not a host key line (get one with \`ssh-keyscan -t ed25519 HOST\`)`);
    }
    keys.push({ type: fields[at], key: fields[at + 1] });
  }
  if (keys.length === 0) throw new Error('vps.hostKey holds no key (get one with `ssh-keyscan -t ed25519 HOST`)');
  return keys;
}

/** How known_hosts names a host: `host`, or `[host]:port` off port 22. */
export function knownHostsName(host: string, port: number): string {
  return port === 22 ? host : `[${host}]:${port}`;
}

/** A known_hosts file that trusts exactly `keys` for host:port. */
export function renderKnownHosts(host: string, port: number, keys: HostKey[]): string {
  return keys.map((k) => `${knownHostsName(host, port)} ${k.type} ${k.key}\n`).join('');
}

/**
 * The host key the user's known_hosts holds for host:port (through
 * `ssh-keygen -F`, which also reads hashed entries), as `TYPE KEY`, the
 * preferred type first; undefined when there is none.
 */
export function knownHostKey(host: string, port: number, knownHostsFile?: string): string | undefined {
  const args = ['-F', knownHostsName(host, port), ...(knownHostsFile ? ['-f', knownHostsFile] : [])];
  const r = spawnSync('ssh-keygen', args, { encoding: 'utf8' });
  if (r.error || r.status !== 0) return undefined;
  const found = r.stdout
    .split('\n')
    .filter((l) => l && !l.startsWith('#'))
    .map((l) => l.trim().split(/\s+/))
    .filter((f) => f.length >= 3 && isKeyType(f[1]))
    .map((f) => ({ type: f[1], key: f[2] }));
  const best = found.sort((a, b) => KEY_TYPES.indexOf(a.type) - KEY_TYPES.indexOf(b.type))[0];
  return best ? `${best.type} ${best.key}` : undefined;
}

/**
 * The host key for the remote commands' connection: vps.hostKey, else the one
 * the user's known_hosts has. Throws, saying how to get one, when neither has
 * it: pulumi-command would otherwise not check the host at all.
 */
export function resolveHostKey(o: { host: string; port: number; hostKey?: string; knownHostsFile?: string }): string {
  if (o.hostKey) {
    const [first] = parseHostKeys(o.hostKey);
    return `${first.type} ${first.key}`;
  }
  const known = knownHostKey(o.host, o.port, o.knownHostsFile);
  if (known) return known;
  throw new Error(
    `no SSH host key for ${knownHostsName(o.host, o.port)}: set vps.hostKey to the output of \`ssh-keyscan -t ed25519 ${o.port === 22 ? '' : `-p ${o.port} `}${o.host}\`, checked against the key your provider shows for the VPS`,
  );
}

export interface DockerSshOptions {
  host: string;
  port: number;
  /** vps.hostKey: pins the host key; without it, the user's known_hosts must know the host. */
  hostKey?: string;
  /** The SSH private key (from the config), when not from the ssh-agent. */
  privateKey?: string;
}

export interface DockerSsh {
  /** The Docker provider's sshOpts. */
  sshOpts: string[];
  /** Removes the files the options name (also done when the process exits). */
  cleanup(): void;
}

// Every private directory made here, removed when the process exits: the
// Docker provider reads the files during the whole deploy, which ends with
// this (the program's) process.
const privateDirs = new Set<string>();
let exitHookInstalled = false;

function removeDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
  privateDirs.delete(dir);
}

/**
 * A directory only this user can use, named after what goes in it: the same
 * options give the same path on every run, since the path is part of the
 * Docker provider's inputs (a new one each run would be a change on every
 * `pulumi up`). One that exists is used only if it is this user's directory.
 */
function privateDir(contents: string): string {
  if (!exitHookInstalled) {
    process.on('exit', () => {
      for (const dir of [...privateDirs]) removeDir(dir);
    });
    exitHookInstalled = true;
  }
  const id = createHash('sha256').update(contents).digest('hex').slice(0, 16);
  const dir = path.join(tmpdir(), `registry-stack-ssh-${process.getuid?.() ?? 'user'}-${id}`);
  try {
    mkdirSync(dir, { mode: 0o700 });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
  const st = lstatSync(dir);
  if (!st.isDirectory() || (process.getuid && st.uid !== process.getuid())) throw new Error(`${dir} is not this user's directory: remove it`);
  chmodSync(dir, 0o700);
  privateDirs.add(dir);
  return dir;
}

/** The Docker provider's SSH options, and the private files (key, pinned host key) they need. */
export function dockerSsh(o: DockerSshOptions): DockerSsh {
  const opts = ['-o', 'StrictHostKeyChecking=yes', '-o', 'ServerAliveInterval=30', '-p', String(o.port)];
  if (!o.hostKey && !o.privateKey) return { sshOpts: opts, cleanup: () => {} };

  const dir = privateDir(JSON.stringify([o.host, o.port, o.hostKey ?? '', o.privateKey ?? '']));
  if (o.hostKey) {
    const knownHosts = path.join(dir, 'known_hosts');
    writeFileSync(knownHosts, renderKnownHosts(o.host, o.port, parseHostKeys(o.hostKey)), { mode: 0o600 });
    // Only this file: neither the user's nor the system's known_hosts can add a key, and ssh writes none to it.
    opts.push('-o', `UserKnownHostsFile=${knownHosts}`, '-o', 'GlobalKnownHostsFile=/dev/null', '-o', 'UpdateHostKeys=no');
  }
  if (o.privateKey) {
    const keyFile = path.join(dir, 'id_ssh');
    writeFileSync(keyFile, o.privateKey.endsWith('\n') ? o.privateKey : `${o.privateKey}\n`, { mode: 0o600 });
    opts.push('-i', keyFile, '-o', 'IdentitiesOnly=yes');
  }
  return { sshOpts: opts, cleanup: () => removeDir(dir) };
}
