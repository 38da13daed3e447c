// gc: online garbage collection of the private registry and the mirror,
// through each instance's admin listener (POST /admin/gc). The server does
// the mark and sweep while it keeps serving; this job triggers it, reports
// what was freed per instance, and alerts when an instance could not be
// collected.
//
//   node --import tsx scripts/gc.ts --admin-url private=http://127.0.0.1:5001 \
//     --admin-url mirror=http://127.0.0.1:5002 --token-file /etc/registry-stack/admin-token
import { Option } from 'commander';
import * as z from 'zod';
import { adminFallbacks, adminOptions, describeTarget, parseTargets, postAdmin, resolveToken, type AdminOptions } from './lib/admin.ts';
import { addExitCodeHelp, type CommonOptions, createProgram, envFlag, formatBytes, type Outcome, runScript } from './lib/cli.ts';
import type { Logger } from './lib/log.ts';

const count = z.number().int().nonnegative();
const gcResponse = z.looseObject({
  dryRun: z.boolean(),
  manifestsDeleted: count,
  blobsDeleted: count,
  bytesFreed: count,
  durationMs: z.number().nonnegative(),
});

interface GcOptions extends CommonOptions, AdminOptions {
  deleteUntagged: boolean;
}

const program = createProgram(
  'gc',
  'Run online garbage collection on each registry instance through its admin listener and report the bytes freed.',
  'GC',
  3600,
);
for (const o of adminOptions('GC', 'a registry instance to collect', 'private=http://127.0.0.1:5001')) program.addOption(o);
program.addOption(
  new Option('--delete-untagged', 'also delete manifests no tag points to (as registry garbage-collect --delete-untagged)').default(
    false,
  ),
);
program.addHelpText(
  'after',
  `
Environment (fallbacks for the flags above, then the stack's shared OPS_* variables):
  GC_ADMIN_URLS              comma-separated --admin-url values
                             then private=$OPS_PRIVATE_ADMIN_URL, mirror=$OPS_MIRROR_ADMIN_URL
  REGISTRY_ADMIN_TOKEN       --token (the same variable sets the server's admin.token)
  REGISTRY_ADMIN_TOKEN_FILE  --token-file
  OPS_ADMIN_TOKEN            the token, when none of the above is given
  GC_DELETE_UNTAGGED         true/1/yes enables --delete-untagged
  GC_TIMEOUT                 --timeout in seconds (default 3600: GC of a large registry takes a while)
  ALERT_WEBHOOK              --alert-webhook (then OPS_ALERT_WEBHOOK)

Instances are collected one after the other; a failure on one does not stop the others.
--dry-run asks the server for a dry run (dryrun=true): it reports what would be deleted and deletes nothing.`,
);
addExitCodeHelp(program, 'an instance was unreachable, refused, or returned an invalid answer');

async function run(opts: GcOptions, log: Logger): Promise<Outcome> {
  const targets = parseTargets(opts.adminUrl);
  opts.deleteUntagged = opts.deleteUntagged || envFlag('GC_DELETE_UNTAGGED');
  const token = resolveToken(program);
  const timeoutMs = opts.timeout * 1000;
  const results: Array<Record<string, unknown>> = [];
  const failures: Array<Record<string, unknown>> = [];
  let freed = 0;

  for (const target of targets) {
    log.info('garbage collection started', {
      ...describeTarget(target),
      dryRun: opts.dryRun,
      deleteUntagged: opts.deleteUntagged,
    });
    const res = await postAdmin(
      target,
      '/admin/gc',
      { dryrun: String(opts.dryRun), deleteuntagged: String(opts.deleteUntagged) },
      gcResponse,
      token,
      timeoutMs,
    );
    if (!res.ok) {
      const f = { ...describeTarget(target), status: res.status, error: res.error };
      log.error('garbage collection failed', f);
      failures.push(f);
      results.push({ instance: target.name, ok: false, error: res.error });
      continue;
    }
    const r = res.result;
    if (r.dryRun !== opts.dryRun) {
      const error = `server answered dryRun=${r.dryRun} to dryrun=${opts.dryRun}`;
      log.error('garbage collection failed', { ...describeTarget(target), error });
      failures.push({ ...describeTarget(target), error });
      results.push({ instance: target.name, ok: false, error });
      continue;
    }
    freed += r.bytesFreed;
    log.info(opts.dryRun ? 'garbage collection dry run done' : 'garbage collection done', {
      ...describeTarget(target),
      ...r,
      freed: formatBytes(r.bytesFreed),
    });
    results.push({ instance: target.name, ok: true, ...r });
  }

  const verb = opts.dryRun ? 'would free' : 'freed';
  const perInstance = results
    .map((r) => (r.ok ? `${r.instance} ${verb} ${formatBytes(r.bytesFreed as number)}` : `${r.instance} FAILED: ${r.error}`))
    .join('; ');
  if (failures.length > 0) {
    return {
      ok: false,
      summary: `gc failed on ${failures.length} of ${targets.length} instance(s): ${perInstance}`,
      details: { instances: results, failures, bytesFreed: freed },
    };
  }
  return {
    ok: true,
    summary: `gc ${opts.dryRun ? 'dry run ' : ''}done on ${targets.length} instance(s): ${perInstance}`,
    details: { instances: results, bytesFreed: freed },
  };
}

await runScript<GcOptions>(program, run, adminFallbacks('gc'));
