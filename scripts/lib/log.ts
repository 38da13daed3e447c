// JSON log lines on stdout, one object per line:
//   {"time":"…","level":"info","script":"gc","msg":"…","fields":{…}}
// Fields are nested under "fields" so that they can never clobber the
// envelope. Callers pass URLs through redactUrl() before logging them.
import type { Writable } from 'node:stream';

export type Level = 'debug' | 'info' | 'warn' | 'error';

export interface LogLine {
  time: string;
  level: Level;
  script: string;
  msg: string;
  fields: Record<string, unknown>;
}

export class Logger {
  private counts: Record<Level, number> = { debug: 0, info: 0, warn: 0, error: 0 };

  constructor(
    readonly script: string,
    private readonly out: Writable = process.stdout,
  ) {}

  log(level: Level, msg: string, fields: Record<string, unknown> = {}): void {
    this.counts[level]++;
    const line: LogLine = { time: new Date().toISOString(), level, script: this.script, msg, fields };
    this.out.write(`${JSON.stringify(line, jsonReplacer)}\n`);
  }

  debug(msg: string, fields?: Record<string, unknown>): void {
    this.log('debug', msg, fields);
  }
  info(msg: string, fields?: Record<string, unknown>): void {
    this.log('info', msg, fields);
  }
  warn(msg: string, fields?: Record<string, unknown>): void {
    this.log('warn', msg, fields);
  }
  error(msg: string, fields?: Record<string, unknown>): void {
    this.log('error', msg, fields);
  }

  count(level: Level): number {
    return this.counts[level];
  }
}

/** Errors become {message, code}; bigints become numbers. */
function jsonReplacer(_key: string, value: unknown): unknown {
  if (value instanceof Error) {
    const code = (value as NodeJS.ErrnoException).code;
    return code ? { message: value.message, code } : { message: value.message };
  }
  if (typeof value === 'bigint') return Number(value);
  return value;
}
