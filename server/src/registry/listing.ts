// Directory listings the registry walks: missing directories are simply
// empty, and <dir>/<algorithm>/<hex> trees (revisions, referrers) are digests.
import { isNotFound, type StorageDriver } from '../storage/driver.ts';
import { type Digest, tryParseDigest } from './digest.ts';
import type { Page, PageRequest, RegistryService } from './types.ts';

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

/**
 * The catalog as one client may see it: only the names `visible` lets through,
 * paged after filtering, so a page holds up to n names the client may see.
 * The local catalog walks every repository for any page anyway, so asking it
 * for all of them costs nothing more.
 */
export async function visibleCatalog(
  service: Pick<RegistryService, 'catalog'>,
  { n, last }: PageRequest,
  visible: (name: string) => boolean,
): Promise<Page> {
  const items = (await service.catalog({ last })).items.filter(visible);
  if (n === undefined || items.length <= n) return { items };
  const page = items.slice(0, n);
  return { items: page, next: page[page.length - 1] };
}
