// The embedded default behind `npm start` / `registry serve` with no config
// file: a private registry on 127.0.0.1:5000 storing under ./data, with one
// user whose random password is made on first start and kept (mode 0600) in
// the data directory, so that no push is ever anonymous even on a laptop.
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { hashPassword } from '../auth/htpasswd.ts';
import { type LoadedConfig, loadConfigObject } from '../config/load.ts';

export interface Quickstart {
  loaded: LoadedConfig;
  user: string;
  password: string;
  /** Where the password is kept, for clients to read it from (docker login --password-stdin < file). */
  passwordFile: string;
}

export const QUICKSTART_USER = 'admin';

export function quickstartConfig(dataDir = './data', env: NodeJS.ProcessEnv = process.env): Quickstart {
  const root = path.resolve(dataDir);
  const authDir = path.join(root, 'auth');
  const htpasswdPath = path.join(authDir, 'htpasswd');
  const passwordPath = path.join(authDir, `${QUICKSTART_USER}.password`);
  mkdirSync(authDir, { recursive: true, mode: 0o700 });
  let password: string;
  if (existsSync(passwordPath) && existsSync(htpasswdPath)) {
    password = readFileSync(passwordPath, 'utf8').trim();
  } else {
    password = randomBytes(12).toString('base64url');
    writeFileSync(passwordPath, `${password}\n`, { mode: 0o600 });
    writeFileSync(htpasswdPath, `${QUICKSTART_USER}:${hashPassword(password, 10)}\n`, { mode: 0o600 });
  }
  const loaded = loadConfigObject(
    {
      version: '0.1',
      storage: { filesystem: { rootdirectory: root }, delete: { enabled: true } },
      http: { addr: '127.0.0.1:5000' },
      auth: { htpasswd: { realm: 'registry-stack', path: htpasswdPath }, anonymouspull: true },
    },
    env,
    'the built-in default config',
  );
  return { loaded, user: QUICKSTART_USER, password, passwordFile: passwordPath };
}
