// What every script shares: the common options (--dry-run, --alert-webhook,
// --timeout), option parsers with env fallbacks, and the runner that turns an
// Outcome into a final log line, an alert, and the exit code.
//
// Exit codes: 0 all good; 1 something is wrong (a check failed, an operation
// failed; an alert was sent when a webhook is configured); 2 bad usage.
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { sendAlert, type AlertLevel } from './alert.ts';
import { describeError } from './http.ts';
import { Logger } from './log.ts';

export interface CommonOptions {
  dryRun: boolean;
  alertWebhook?: string;
  /** Seconds. */
  timeout: number;
}

export interface Outcome {
  ok: boolean;
  summary: string;
  /** Sent as the alert's details and logged with the final line. */
  details: Record<string, unknown>;
  /** Alert level (default: error when not ok, warning when `alert` forces one on success). */
  level?: AlertLevel;
  /** Send an alert even though ok (e.g. a problem that was fixed but should not have happened). */
  alert?: boolean;
}

export const EXIT_OK = 0;
export const EXIT_FAILED = 1;
export const EXIT_USAGE = 2;

export function envName(prefix: string, name: string): string {
  return `${prefix}_${name}`;
}

/**
 * A new program with the common options. `envPrefix` is the script's env
 * prefix (MONITOR, GC, PRUNE, RENEW_CERT); ALERT_WEBHOOK is shared.
 */
export function createProgram(script: string, description: string, envPrefix: string, defaultTimeoutSeconds: number): Command {
  const program = new Command(script)
    .description(description)
    .addOption(new Option('--dry-run', 'report what would be done, change nothing (checks and alerts still run)').default(false))
    .addOption(
      // Validated after parsing, so that an error message never repeats the (secret) URL.
      new Option('--alert-webhook <url>', 'POST a JSON alert {script, level, summary, details} here when something is wrong').env(
        'ALERT_WEBHOOK',
      ),
    )
    .addOption(
      new Option('--timeout <seconds>', 'timeout of each request')
        .env(envName(envPrefix, 'TIMEOUT'))
        .default(defaultTimeoutSeconds)
        .argParser(positiveNumber('--timeout')),
    )
    .helpOption('-h, --help', 'show this help')
    .allowExcessArguments(false)
    .showHelpAfterError('(run with --help for usage)');
  program.exitOverride();
  return program;
}

export function addExitCodeHelp(program: Command, extra = ''): void {
  program.addHelpText(
    'after',
    `
Output: one JSON object per line on stdout: {"time","level","script","msg","fields"}.
Secrets (tokens, the webhook URL's path and query) never appear in it.

Exit codes:
  0  everything is fine
  1  something is wrong${extra ? ` (${extra})` : ''}; the alert webhook was called if set
  2  bad usage (unknown option, invalid value)
`,
  );
}

/** Parse argv, run, log the outcome, alert, and set process.exitCode. */
export async function runScript<O extends CommonOptions>(
  program: Command,
  run: (opts: O, log: Logger) => Promise<Outcome>,
  fallbacks: Fallbacks = {},
  argv: string[] = process.argv,
): Promise<number> {
  try {
    program.parse(argv);
    applyFallbacks(program, { alertWebhook: () => process.env.OPS_ALERT_WEBHOOK?.trim() || undefined, ...fallbacks });
    const webhook = program.getOptionValue('alertWebhook') as string | undefined;
    if (webhook !== undefined && !isHttpUrl(webhook)) {
      throw new UsageError('--alert-webhook (or ALERT_WEBHOOK / OPS_ALERT_WEBHOOK) must be an http(s) URL (value not shown: it may hold a token)');
    }
  } catch (err) {
    if (err instanceof CommanderError) {
      const code = err.code === 'commander.helpDisplayed' || err.code === 'commander.version' ? EXIT_OK : EXIT_USAGE;
      process.exitCode = code;
      return code;
    }
    if (err instanceof UsageError) {
      process.stderr.write(`${program.name()}: ${err.message}\n(run with --help for usage)\n`);
      process.exitCode = EXIT_USAGE;
      return EXIT_USAGE;
    }
    throw err;
  }
  const opts = program.opts<O>();
  const log = new Logger(program.name());
  let outcome: Outcome;
  try {
    outcome = await run(opts, log);
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`${program.name()}: ${err.message}\n(run with --help for usage)\n`);
      process.exitCode = EXIT_USAGE;
      return EXIT_USAGE;
    }
    outcome = { ok: false, summary: `${program.name()} crashed: ${describeError(err)}`, details: {} };
  }
  const details = { host: hostname(), dryRun: opts.dryRun, ...outcome.details };
  // The alert goes first so that the summary is always the last line, saying whether it went.
  let alert: 'sent' | 'failed' | 'none' = 'none';
  if ((!outcome.ok || outcome.alert) && opts.alertWebhook) {
    const level = outcome.level ?? (outcome.ok ? 'warning' : 'error');
    const sent = await sendAlert(
      opts.alertWebhook,
      { script: program.name(), level, summary: outcome.summary, details },
      log,
      opts.timeout * 1000,
    );
    alert = sent ? 'sent' : 'failed';
  }
  const fields = { ...details, outcome: outcome.ok ? 'ok' : 'failed', alert };
  if (outcome.ok) log.info(outcome.summary, fields);
  else log.error(outcome.summary, fields);
  const code = outcome.ok ? EXIT_OK : EXIT_FAILED;
  process.exitCode = code;
  return code;
}

/**
 * Second-rank environment fallbacks, used when neither the flag nor the
 * option's own variable was given: option key → value (undefined = none).
 * This is where the stack's shared OPS_* variables come in (the env file
 * infra renders for the cron jobs, see infra/render/ops.ts).
 */
export type Fallbacks = Record<string, () => unknown>;

export function applyFallbacks(program: Command, fallbacks: Fallbacks): void {
  for (const [key, get] of Object.entries(fallbacks)) {
    const source = program.getOptionValueSource(key);
    if (source !== undefined && source !== 'default') continue;
    const value = get();
    if (value !== undefined) program.setOptionValueWithSource(key, value, 'fallback');
  }
}

/** A non-empty environment variable, parsed by an option parser (its errors become usage errors). */
export function envValue<T>(name: string, parse: (value: string) => T): T | undefined {
  const raw = process.env[name]?.trim();
  if (!raw) return undefined;
  try {
    return parse(raw);
  } catch (err) {
    throw new UsageError(`${name}=${name.includes('WEBHOOK') || name.includes('TOKEN') ? '…' : raw}: ${(err as Error).message}`);
  }
}

/** A comma-separated list from the environment; undefined when unset or empty. */
export function envList(...names: string[]): string[] | undefined {
  const items = names.flatMap((n) =>
    (process.env[n] ?? '')
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean),
  );
  return items.length > 0 ? items : undefined;
}

/** A boolean environment variable: true/1/yes/on (any case) → true. */
export function envFlag(name: string): boolean {
  return /^(1|true|yes|on)$/i.test(process.env[name]?.trim() ?? '');
}

/** A configuration problem found after parsing (exit 2). */
export class UsageError extends Error {}

// ---- option parsers -------------------------------------------------------

/** Repeatable option; each value (and the env value) may hold several, comma-separated. */
export function listOption(flags: string, description: string, env: string): Option {
  return new Option(flags, description).env(env).argParser((value: string, previous: string[] | undefined) => [
    ...(previous ?? []),
    ...value
      .split(',')
      .map((s) => s.trim())
      .filter((s) => s.length > 0),
  ]);
}

export function positiveNumber(flag: string) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError(`${flag} must be a positive number`);
    return n;
  };
}

export function nonNegativeNumber(flag: string) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isFinite(n) || n < 0) throw new InvalidArgumentError(`${flag} must be a number ≥ 0`);
    return n;
  };
}

export function percent(flag: string) {
  return (value: string): number => {
    const n = Number(value.replace(/%$/, ''));
    if (!Number.isFinite(n) || n <= 0 || n > 100) throw new InvalidArgumentError(`${flag} must be a percentage in (0, 100]`);
    return n;
  };
}

function isHttpUrl(value: string): boolean {
  try {
    const u = new URL(value);
    return u.protocol === 'http:' || u.protocol === 'https:';
  } catch {
    return false;
  }
}

export function httpUrl(flag: string) {
  return (value: string): string => {
    let u: URL;
    try {
      u = new URL(value);
    } catch {
      throw new InvalidArgumentError(`${flag} must be an http(s) URL`);
    }
    if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new InvalidArgumentError(`${flag} must be an http(s) URL`);
    return value;
  };
}

/** Human-readable bytes (binary units), for summaries. */
export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (Math.abs(v) >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${v} B` : `${v.toFixed(1)} ${units[i]}`;
}

/** The CA certificates of --ca-file, if given (a usage error when the file can't be read). */
export function readCaFile(file: string | undefined): Buffer[] | undefined {
  if (!file) return undefined;
  try {
    return [readFileSync(file)];
  } catch (err) {
    throw new UsageError(`--ca-file ${file}: ${describeError(err)}`);
  }
}
