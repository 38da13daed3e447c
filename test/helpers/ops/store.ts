// Reads a registry data directory straight from disk (registry:2's layout),
// for the operations tests: which blobs are stored, which manifests each
// repository holds, what they reference, and ways to age files.
import { createHash } from 'node:crypto';
import { existsSync, lstatSync, readdirSync, readFileSync, statSync, utimesSync } from 'node:fs';
import * as path from 'node:path';

/** `<data>/docker/registry/v2` of a data directory (storage.filesystem.rootdirectory). */
export function v2(dataDir: string): string {
  return path.join(dataDir, 'docker', 'registry', 'v2');
}

export function hexOf(digest: string): string {
  return digest.replace(/^sha256:/, '');
}

/** The data file of a blob (or manifest) by digest. */
export function blobFile(dataDir: string, digest: string): string {
  const hex = hexOf(digest);
  return path.join(v2(dataDir), 'blobs', 'sha256', hex.slice(0, 2), hex, 'data');
}

export function hasBlob(dataDir: string, digest: string): boolean {
  return existsSync(blobFile(dataDir, digest));
}

/** Every digest under blobs/sha256 (whether or not its data file is complete). */
export function storedBlobs(dataDir: string): Set<string> {
  const out = new Set<string>();
  const root = path.join(v2(dataDir), 'blobs', 'sha256');
  for (const prefix of safeList(root)) {
    for (const hex of safeList(path.join(root, prefix))) {
      if (existsSync(path.join(root, prefix, hex, 'data'))) out.add(`sha256:${hex}`);
    }
  }
  return out;
}

/** Repository names: directories under repositories/ that hold _manifests (nested names included). */
export function repositories(dataDir: string): string[] {
  const root = path.join(v2(dataDir), 'repositories');
  const out: string[] = [];
  const walk = (rel: string) => {
    for (const name of safeList(rel ? path.join(root, rel) : root)) {
      if (name === '_manifests') out.push(rel);
      else if (!name.startsWith('_') && !name.startsWith('.')) walk(rel ? `${rel}/${name}` : name);
    }
  };
  walk('');
  return out.sort();
}

export function repoDir(dataDir: string, repo: string): string {
  return path.join(v2(dataDir), 'repositories', repo);
}

export function revisionLink(dataDir: string, repo: string, digest: string): string {
  return path.join(repoDir(dataDir, repo), '_manifests', 'revisions', 'sha256', hexOf(digest), 'link');
}

export function tagLink(dataDir: string, repo: string, tag: string): string {
  return path.join(repoDir(dataDir, repo), '_manifests', 'tags', tag, 'current', 'link');
}

/** Digests with a revision link in `repo`. */
export function revisions(dataDir: string, repo: string): string[] {
  const dir = path.join(repoDir(dataDir, repo), '_manifests', 'revisions', 'sha256');
  return safeList(dir)
    .filter((hex) => existsSync(path.join(dir, hex, 'link')))
    .map((hex) => `sha256:${hex}`);
}

/** tag → digest for `repo`, read from the current links. */
export function tags(dataDir: string, repo: string): Map<string, string> {
  const dir = path.join(repoDir(dataDir, repo), '_manifests', 'tags');
  const out = new Map<string, string>();
  for (const tag of safeList(dir)) {
    const link = path.join(dir, tag, 'current', 'link');
    if (existsSync(link)) out.set(tag, readFileSync(link, 'utf8').trim());
  }
  return out;
}

export interface ManifestRefs {
  /** config and layers */
  blobs: string[];
  /** index children */
  children: string[];
  subject?: string;
}

/** The references of a stored manifest (undefined when its data file is missing). */
export function manifestRefs(dataDir: string, digest: string): ManifestRefs | undefined {
  const file = blobFile(dataDir, digest);
  if (!existsSync(file)) return undefined;
  const doc = JSON.parse(readFileSync(file, 'utf8')) as {
    config?: { digest: string };
    layers?: Array<{ digest: string }>;
    manifests?: Array<{ digest: string }>;
    subject?: { digest: string };
  };
  return {
    blobs: [...(doc.config ? [doc.config.digest] : []), ...(doc.layers ?? []).map((l) => l.digest)],
    children: (doc.manifests ?? []).map((m) => m.digest),
    subject: doc.subject?.digest,
  };
}

export interface Inventory {
  /** Every blob a stored manifest needs: the manifests themselves, their configs and layers. */
  referenced: Set<string>;
  /** Problems: revision links whose manifest data is gone, manifests whose blobs are gone, dangling tags. */
  problems: string[];
}

/**
 * Walks every repository: each revision's manifest must be stored, and so
 * must every blob it names; each tag must point at a revision of its
 * repository; each index child must be a revision of the same repository.
 */
export function inventory(dataDir: string): Inventory {
  const referenced = new Set<string>();
  const problems: string[] = [];
  const blobs = storedBlobs(dataDir);
  for (const repo of repositories(dataDir)) {
    const revs = new Set(revisions(dataDir, repo));
    for (const digest of revs) {
      referenced.add(digest);
      const refs = manifestRefs(dataDir, digest);
      if (!refs) {
        problems.push(`${repo}@${digest}: revision link but no manifest data`);
        continue;
      }
      for (const b of refs.blobs) {
        referenced.add(b);
        if (!blobs.has(b)) problems.push(`${repo}@${digest}: blob ${b} is missing`);
      }
      for (const c of refs.children) {
        if (!revs.has(c)) problems.push(`${repo}@${digest}: child manifest ${c} is not in the repository`);
      }
    }
    for (const [tag, digest] of tags(dataDir, repo)) {
      if (!revs.has(digest)) problems.push(`${repo}:${tag} points at ${digest}, which is not a revision of the repository`);
    }
  }
  return { referenced, problems };
}

/** Sets both access and modification time of `file` to `when`. */
export function age(file: string, when: Date): void {
  utimesSync(file, when, when);
}

/** Sets only the access time (the mirror's "last used") of `file`, keeping its mtime. */
export function setAccessTime(file: string, when: Date): void {
  utimesSync(file, when, statSync(file).mtime);
}

export function hoursAgo(h: number): Date {
  return new Date(Date.now() - h * 3_600_000);
}

export function sha256Hex(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

/**
 * Every file under `dir` as relative path → "size mtime", plus the access
 * time for link files (the last use pruning goes by), from stat alone:
 * unlike reading the files (snapshotTree), this does not disturb them.
 */
export function statTree(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (rel: string) => {
    for (const name of safeList(rel ? path.join(dir, rel) : dir)) {
      const childRel = rel ? `${rel}/${name}` : name;
      const st = lstatSync(path.join(dir, childRel));
      if (st.isDirectory()) walk(childRel);
      // Whole milliseconds: Node's Dates (and so utimes through them) carry no finer times.
      else out[childRel] = `${st.size} ${Math.round(st.mtimeMs)}${name === 'link' ? ` ${Math.round(st.atimeMs)}` : ''}`;
    }
  };
  walk('');
  return out;
}

function safeList(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}
