// JSON logs (pino). Secrets never reach a log line: requests are logged by
// the fields we pick, never by dumping headers, and the known secret-bearing
// keys are redacted anyway in case one is passed by mistake.
import pino, { type Logger } from 'pino';

export type { Logger } from 'pino';

const LEVELS: Record<string, pino.Level> = {
  error: 'error',
  warn: 'warn',
  info: 'info',
  debug: 'debug',
  trace: 'trace',
  fatal: 'fatal',
  panic: 'fatal',
};

export function createLogger(level = 'info', fields: Record<string, unknown> = {}): Logger {
  return pino({
    level: LEVELS[level] ?? 'info',
    base: { ...fields },
    redact: {
      paths: ['password', '*.password', 'authorization', '*.authorization', 'headers.authorization', 'secret', '*.secret'],
      censor: '[redacted]',
    },
  });
}

export const silentLogger: Logger = pino({ level: 'silent' });
