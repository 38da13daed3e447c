// The optional alert webhook: POST {script, level, summary, details} as JSON.
// Works with anything that accepts a JSON POST (a relay to Slack, ntfy,
// Alertmanager's webhook receiver, healthchecks.io …). The URL is a secret:
// it is never logged, only its origin.
import { describeError, httpRequest } from './http.ts';
import type { Logger } from './log.ts';
import { redactWebhookUrl } from './redact.ts';

export type AlertLevel = 'error' | 'warning';

export interface AlertBody {
  script: string;
  level: AlertLevel;
  summary: string;
  details: Record<string, unknown>;
}

/** Sends the alert; logs the outcome; returns whether the webhook accepted it (2xx). */
export async function sendAlert(url: string, body: AlertBody, log: Logger, timeoutMs = 10_000): Promise<boolean> {
  const target = redactWebhookUrl(url);
  try {
    const res = await httpRequest({
      url,
      method: 'POST',
      headers: { 'content-type': 'application/json', 'user-agent': `registry-stack-${body.script}` },
      body: JSON.stringify(body),
      timeoutMs,
      maxBodyBytes: 4096,
    });
    if (res.status >= 200 && res.status < 300) {
      log.info('alert sent', { webhook: target, status: res.status });
      return true;
    }
    log.error('alert webhook refused the alert', { webhook: target, status: res.status });
    return false;
  } catch (err) {
    // The error text can contain the URL (e.g. "getaddrinfo ENOTFOUND <host>"), never its path.
    log.error('alert webhook unreachable', { webhook: target, error: describeError(err) });
    return false;
  }
}
