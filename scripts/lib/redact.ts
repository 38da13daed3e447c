// Keep secrets out of log lines and alerts.
//
// Webhook URLs usually carry their token in the path (Slack:
// /services/T…/B…/<token>, Discord: /api/webhooks/<id>/<token>) or in the
// query string, so a webhook URL is only ever shown as its origin. Other
// URLs lose their userinfo and query values.

/** scheme://host[:port] only, e.g. "https://hooks.slack.com/…". */
export function redactWebhookUrl(raw: string): string {
  try {
    const u = new URL(raw);
    const rest = u.pathname !== '/' || u.search !== '' || u.username !== '' || u.password !== '';
    return `${u.protocol}//${u.host}${rest ? '/…' : ''}`;
  } catch {
    return '[invalid url]';
  }
}

/** The URL without userinfo, and with every query value replaced. */
export function redactUrl(raw: string): string {
  try {
    const u = new URL(raw);
    if (u.username || u.password) {
      u.username = '';
      u.password = '';
    }
    for (const key of [...new Set(u.searchParams.keys())]) u.searchParams.set(key, 'redacted');
    return u.toString();
  } catch {
    return '[invalid url]';
  }
}

/** Replace every occurrence of the given secrets in a string (e.g. an error message). */
export function scrub(text: string, secrets: Array<string | undefined>): string {
  let out = text;
  for (const s of secrets) if (s && s.length >= 4) out = out.split(s).join('[redacted]');
  return out;
}
