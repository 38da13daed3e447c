// The server image's build context and a content tag for it. The tag is a
// hash of exactly the files the Dockerfile copies, so an unchanged checkout
// gives the same image name and `pulumi up` leaves the containers alone,
// while any change to the server, the scripts or the dependencies rebuilds.
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import * as path from 'node:path';

/** What the Dockerfile copies from the repository root (mirrored in .dockerignore). */
export const IMAGE_CONTEXT = ['package.json', 'package-lock.json', 'tsconfig.json', 'server', 'scripts'];

const SKIP = new Set(['node_modules', '.git', '.tmp', 'data']);

function walk(root: string, rel: string, out: string[]): void {
  const abs = path.join(root, rel);
  if (!existsSync(abs)) return;
  const st = statSync(abs);
  if (st.isDirectory()) {
    for (const name of readdirSync(abs).sort()) {
      if (SKIP.has(name)) continue;
      walk(root, path.posix.join(rel, name), out);
    }
  } else if (st.isFile()) {
    out.push(rel);
  }
}

/** Files of the build context, relative to the repository root, sorted. */
export function contextFiles(root: string): string[] {
  const out: string[] = [];
  for (const entry of IMAGE_CONTEXT) walk(root, entry, out);
  return out.sort();
}

/** A short hash of the build context's paths and contents. */
export function contextHash(root: string): string {
  const h = createHash('sha256');
  for (const rel of contextFiles(root)) {
    h.update(rel).update('\0').update(readFileSync(path.join(root, rel))).update('\0');
  }
  return h.digest('hex').slice(0, 16);
}

/**
 * The server image's repository. The image is only ever built on the VPS,
 * never pulled, and `localhost/` says so: a name without a registry
 * (`registry-stack/server`) means Docker Hub, where whoever owns that
 * namespace would be pulled from, as a container with the Docker socket, when
 * the local image is gone (`docker image prune -a`). `localhost` (no port) is
 * the VPS itself, where no registry listens.
 */
export const SERVER_IMAGE_REPO = 'localhost/registry-stack/server';

/** Names earlier versions gave the image: the cleanup after a deploy removes those too. */
export const LEGACY_SERVER_IMAGE_REPOS = ['registry-stack/server'];

export function serverImageName(root: string): string {
  return `${SERVER_IMAGE_REPO}:${contextHash(root)}`;
}

/**
 * Does the repository have any ops scripts yet?
 * @deprecated The scripts are no longer copied to the host (the jobs run the
 * image's own); kept only until infra/stack.ts stops importing it.
 */
export function hasScripts(root: string): boolean {
  const dir = path.join(root, 'scripts');
  return existsSync(dir) && readdirSync(dir).some((f) => f.endsWith('.ts'));
}
