// prune: the mirror's cache prune, through its admin listener
// (POST /admin/prune). The server applies its configured policy (cache.maxage,
// default proxy.ttl; cache.maxsize, least recently used first): tags and
// manifests go first, then the blobs nothing references any more.
//
//   node --import tsx scripts/prune.ts --admin-url mirror=http://127.0.0.1:5002 --token-file /etc/registry-stack/admin-token
import * as z from 'zod';
import { adminFallbacks, adminOptions, describeTarget, parseTargets, postAdmin, resolveToken, type AdminOptions } from './lib/admin.ts';
import { addExitCodeHelp, type CommonOptions, createProgram, formatBytes, type Outcome, runScript } from './lib/cli.ts';
import type { Logger } from './lib/log.ts';

const count = z.number().int().nonnegative();
const pruneResponse = z.looseObject({
  dryRun: z.boolean(),
  tagsDeleted: count,
  manifestsDeleted: count,
  blobsDeleted: count,
  bytesFreed: count,
  cacheBytes: count,
  // Servers from before these fields answer without them.
  blobsInGrace: count.optional(),
  bytesInGrace: count.optional(),
  graceEndsAt: z.string().nullable().optional(),
});

type PruneOptions = CommonOptions & AdminOptions;

const program = createProgram(
  'prune',
  "Prune the mirror's cache with the policy in its config (cache.maxage / cache.maxsize) through its admin listener.",
  'PRUNE',
  3600,
);
for (const o of adminOptions('PRUNE', 'a mirror instance to prune', 'mirror=http://127.0.0.1:5002')) program.addOption(o);
program.addHelpText(
  'after',
  `
Environment (fallbacks for the flags above, then the stack's shared OPS_* variables):
  PRUNE_ADMIN_URLS           comma-separated --admin-url values, then mirror=$OPS_MIRROR_ADMIN_URL
  REGISTRY_ADMIN_TOKEN       --token (the same variable sets the server's admin.token)
  REGISTRY_ADMIN_TOKEN_FILE  --token-file
  OPS_ADMIN_TOKEN            the token, when none of the above is given
  PRUNE_TIMEOUT              --timeout in seconds (default 3600)
  ALERT_WEBHOOK              --alert-webhook (then OPS_ALERT_WEBHOOK)

The policy lives in the mirror's config, not here. --dry-run asks the server for a dry run
(dryrun=true): it reports what would go and how many bytes, and deletes nothing.
Pointing it at a private registry is an error (the server answers 409).`,
);
addExitCodeHelp(program, 'an instance was unreachable, is not a mirror, refused, or returned an invalid answer');

async function run(opts: PruneOptions, log: Logger): Promise<Outcome> {
  const targets = parseTargets(opts.adminUrl);
  const token = resolveToken(program);
  const results: Array<Record<string, unknown>> = [];
  const failures: Array<Record<string, unknown>> = [];
  let freed = 0;

  for (const target of targets) {
    log.info('cache prune started', { ...describeTarget(target), dryRun: opts.dryRun });
    const res = await postAdmin(
      target,
      '/admin/prune',
      { dryrun: String(opts.dryRun) },
      pruneResponse,
      token,
      opts.timeout * 1000,
      { 409: 'not a mirror: only a mirror has a cache to prune' },
    );
    let error: string | undefined;
    if (!res.ok) error = res.error;
    else if (res.result.dryRun !== opts.dryRun) error = `server answered dryRun=${res.result.dryRun} to dryrun=${opts.dryRun}`;
    if (error !== undefined || !res.ok) {
      const f = { ...describeTarget(target), status: res.status, error };
      log.error('cache prune failed', f);
      failures.push(f);
      results.push({ instance: target.name, ok: false, error });
      continue;
    }
    const r = res.result;
    freed += r.bytesFreed;
    log.info(opts.dryRun ? 'cache prune dry run done' : 'cache prune done', {
      ...describeTarget(target),
      ...r,
      freed: formatBytes(r.bytesFreed),
      cache: formatBytes(r.cacheBytes),
    });
    results.push({ instance: target.name, ok: true, ...r });
  }

  const verb = opts.dryRun ? 'would free' : 'freed';
  const perInstance = results
    .map((r) =>
      r.ok
        ? `${r.instance} ${verb} ${formatBytes(r.bytesFreed as number)} (${r.tagsDeleted} tags, ${r.blobsDeleted} blobs; cache now ${formatBytes(r.cacheBytes as number)})${graceNote(r)}`
        : `${r.instance} FAILED: ${r.error}`,
    )
    .join('; ');
  if (failures.length > 0) {
    return {
      ok: false,
      summary: `prune failed on ${failures.length} of ${targets.length} instance(s): ${perInstance}`,
      details: { instances: results, failures, bytesFreed: freed },
    };
  }
  return {
    ok: true,
    summary: `prune ${opts.dryRun ? 'dry run ' : ''}done: ${perInstance}`,
    details: { instances: results, bytesFreed: freed },
  };
}

/** Blobs left by evicted manifests stay while younger than the grace period: say so, or "0 blobs" reads as a prune that did nothing. */
function graceNote(r: Record<string, unknown>): string {
  const n = r.blobsInGrace as number | undefined;
  if (!n) return '';
  return `; the grace period keeps ${n} unreferenced blob(s), ${formatBytes(r.bytesInGrace as number)}, until ${r.graceEndsAt as string}: a prune after that frees them`;
}

await runScript<PruneOptions>(program, run, adminFallbacks('prune'));
