// Real-tool checks shared by the infra tests: shellcheck and caddy validate,
// each in a private temp directory.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';

export function withTempDir<T>(fn: (dir: string) => T): T {
  const dir = mkdtempSync(path.join(tmpdir(), 'rs-infra-'));
  try {
    return fn(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** shellcheck output for a POSIX sh script ('' when clean). */
export function shellcheck(script: string, shell: 'sh' | 'bash' = 'sh'): string {
  return withTempDir((dir) => {
    const file = path.join(dir, 'script.sh');
    writeFileSync(file, script);
    const r = spawnSync('shellcheck', ['-s', shell, '-S', 'style', file], { encoding: 'utf8' });
    if (r.error) throw r.error;
    return r.status === 0 ? '' : `${r.stdout}${r.stderr}`;
  });
}

/** `caddy validate` (and `caddy adapt`) on a Caddyfile; returns the exit status, output and adapted JSON. */
export function caddyValidate(caddyfile: string): { ok: boolean; output: string; json?: any } {
  return withTempDir((dir) => {
    const file = path.join(dir, 'Caddyfile');
    writeFileSync(file, caddyfile);
    const env = { ...process.env, XDG_DATA_HOME: path.join(dir, 'data'), XDG_CONFIG_HOME: path.join(dir, 'config'), HOME: dir };
    const v = spawnSync('caddy', ['validate', '--adapter', 'caddyfile', '--config', file], { encoding: 'utf8', env });
    if (v.error) throw v.error;
    const a = spawnSync('caddy', ['adapt', '--adapter', 'caddyfile', '--config', file], { encoding: 'utf8', env });
    return { ok: v.status === 0, output: `${v.stdout}${v.stderr}`, json: a.status === 0 ? JSON.parse(a.stdout) : undefined };
  });
}
