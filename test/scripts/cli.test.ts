// What every script shares: --help (exit 0, documents flags, env fallbacks and
// exit codes), usage errors (exit 2, nothing on stdout), JSON log lines.
import { describe, expect, it } from 'vitest';
import { freePort, runScript, runScriptRaw } from './helpers.ts';

const SCRIPTS: Record<string, string[]> = {
  monitor: ['--docker-socket', '--container', '--path', '--disk-threshold', '--url', '--ca-file', '--memory-threshold', 'MONITOR_DISK_THRESHOLD', 'MONITOR_URLS', 'DOCKER_HOST'],
  gc: ['--admin-url', '--token', '--token-file', '--delete-untagged', 'GC_ADMIN_URLS', 'REGISTRY_ADMIN_TOKEN'],
  prune: ['--admin-url', '--token', 'PRUNE_ADMIN_URLS', 'REGISTRY_ADMIN_TOKEN'],
  'renew-cert': ['--host', '--connect-to', '--days', '--caddy-admin', '--wait', 'RENEW_CERT_HOSTS', 'RENEW_CERT_DAYS', 'CADDY_ADMIN'],
};

describe('the scripts\' command line', () => {
  for (const [name, mentions] of Object.entries(SCRIPTS)) {
    it(`${name} --help documents its flags, env fallbacks and exit codes`, async () => {
      const r = await runScriptRaw(name, ['--help']);
      expect(r.code).toBe(0);
      expect(r.stdout).toMatch(new RegExp(`^Usage: ${name} \\[options\\]`));
      for (const m of ['--dry-run', '--alert-webhook', '--timeout', 'ALERT_WEBHOOK', 'Exit codes:', ...mentions]) expect(r.stdout).toContain(m);
    });

    it(`${name} refuses an unknown option with exit 2`, async () => {
      const r = await runScriptRaw(name, ['--no-such-flag']);
      expect(r.code).toBe(2);
      expect(r.stdout).toBe('');
      expect(r.stderr).toMatch(/unknown option '--no-such-flag'/);
    });
  }

  it.each([
    ['monitor', ['--disk-threshold', '150']],
    ['monitor', ['--memory-threshold', 'lots']],
    ['monitor', ['--skip', 'everything']],
    ['monitor', ['--resolve', 'dcr.test:443']],
    ['monitor', ['--url', 'ftp://dcr.test']],
    ['gc', ['--admin-url', 'not a url']],
    ['gc', ['--admin-url', 'http://user:pw@127.0.0.1:5001']],
    ['gc', ['--token-file', '/nonexistent/token']],
    ['gc', ['--timeout', '-1']],
    ['renew-cert', ['--host', 'dcr.test', '--connect-to', 'nowhere']],
    ['renew-cert', ['--host', 'bad host!']],
    ['renew-cert', ['--host', 'dcr.test', '--caddy-admin', '127.0.0.1:2019', '--caddy-container', 'caddy']],
  ])('%s %j is a usage error (exit 2)', async (name, args) => {
    const r = await runScriptRaw(name, args as string[]);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr.length).toBeGreaterThan(0);
    expect(r.stderr).not.toContain('pw@');
  });

  it('prune --help shows an --admin-url example it can work on (a mirror, not private=)', async () => {
    const r = await runScriptRaw('prune', ['--help']);
    expect(r.stdout).toContain('mirror=http://127.0.0.1:5002');
    expect(r.stdout).not.toContain('private=');
  });

  it('an invalid webhook is a usage error that does not repeat the URL', async () => {
    const envs: Array<Record<string, string>> = [{ ALERT_WEBHOOK: 'hooks.example.com/services/T0/B0/s3cr3t-t0ken' }, { OPS_ALERT_WEBHOOK: 'hooks.example.com/services/T0/B0/s3cr3t-t0ken' }];
    for (const env of envs) {
      const r = await runScriptRaw('gc', ['--dry-run'], env);
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(/must be an http\(s\) URL/);
      expect(r.stdout + r.stderr).not.toContain('s3cr3t');
    }
    const flag = await runScriptRaw('monitor', ['--alert-webhook', 'ftp://hooks.example.com/s3cr3t-t0ken']);
    expect(flag.code).toBe(2);
    expect(flag.stdout + flag.stderr).not.toContain('s3cr3t');
  });

  it('an invalid OPS_* value is a usage error naming the variable', async () => {
    const r = await runScriptRaw('monitor', ['--skip', 'containers,memory,http'], { OPS_DISK_THRESHOLD_PERCENT: 'lots' });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/OPS_DISK_THRESHOLD_PERCENT=lots/);
  });

  it('every stdout line is {time, level, script, msg, fields}, the summary last', async () => {
    // runScript checks the shape of every line; an unreachable admin listener gives a failing run.
    const r = await runScript('prune', ['--admin-url', `http://127.0.0.1:${await freePort()}`, '--timeout', '5']);
    expect(r.code).toBe(1);
    expect(r.lines.length).toBeGreaterThanOrEqual(3);
    expect(r.lines.map((l) => l.level)).toEqual(['info', 'error', 'error']);
    expect(r.summary.fields).toMatchObject({ outcome: 'failed', alert: 'none', dryRun: false });
    expect(typeof r.summary.fields.host).toBe('string');
  });
});
