// Directory listings the registry walks: missing directories are simply
// empty, and <dir>/<algorithm>/<hex> trees (revisions, referrers) are digests.
import { isNotFound, type StorageDriver } from '../storage/driver.ts';
import { type Digest, tryParseDigest } from './digest.ts';

export async function listOrEmpty(driver: StorageDriver, key: string): Promise<string[]> {
  try {
    return await driver.list(key);
  } catch (err) {
    if (isNotFound(err)) return [];
    throw err;
  }
}

/** The digests stored as <dir>/<algorithm>/<hex>/… (revisions, referrers). */
export async function listDigests(driver: StorageDriver, dir: string): Promise<Digest[]> {
  const out: Digest[] = [];
  for (const algorithm of await listOrEmpty(driver, dir)) {
    for (const hex of await listOrEmpty(driver, `${dir}/${algorithm}`)) {
      const d = tryParseDigest(`${algorithm}:${hex}`);
      if (d) out.push(d);
    }
  }
  return out;
}
