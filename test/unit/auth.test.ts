// htpasswd parsing and verification (files from Apache's `htpasswd -B` and
// from bcryptjs) and the access policy of the Authenticator.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import bcrypt from 'bcryptjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Authenticator } from '../../server/src/auth/authenticator.ts';
import { dummyHashFor, Htpasswd, hashPassword, parseHtpasswd, safeEqual } from '../../server/src/auth/htpasswd.ts';
import { RegistryError } from '../../server/src/registry/errors.ts';

const basic = (user: string, password: string) => `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'rs-auth-unit-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function apacheEntry(user: string, password: string): string {
  return execFileSync('htpasswd', ['-n', '-b', '-B', '-C', '4', user, password], { encoding: 'utf8' }).trim();
}

describe('parseHtpasswd', () => {
  it('reads bcrypt entries of every prefix, skipping blank lines and comments, with CRLF line ends', () => {
    const y = apacheEntry('apache', 'pw');
    const b = `jsb:${bcrypt.hashSync('pw', 4)}`;
    const a = `jsa:$2a$${bcrypt.hashSync('pw', 4).slice(4)}`;
    const users = parseHtpasswd(`# comment\r\n${y}\r\n\r\n  ${b}  \n${a}\n`);
    expect([...users.keys()]).toEqual(['apache', 'jsb', 'jsa']);
    expect(users.get('apache')).toMatch(/^\$2y\$04\$/);
  });

  it('refuses non-bcrypt entries (MD5, SHA1, crypt, plain), naming the line and user', () => {
    for (const line of ['md5:$apr1$abc$def', 'sha:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=', 'crypt:abJnggxhB/yWI', 'plain:password']) {
      expect(() => parseHtpasswd(`# first\n${line}\n`, 'users.htpasswd')).toThrow(
        new RegExp(`users\\.htpasswd:2: user ${line.split(':')[0]} has no bcrypt hash`),
      );
    }
  });

  it('refuses lines without a user', () => {
    expect(() => parseHtpasswd(':$2y$04$abc')).toThrow(/expected user:hash/);
    expect(() => parseHtpasswd('nocolon')).toThrow(/expected user:hash/);
  });
});

describe('Htpasswd.verify', () => {
  let htpasswd: Htpasswd;
  beforeAll(() => {
    const file = path.join(dir, 'verify.htpasswd');
    writeFileSync(
      file,
      [
        apacheEntry('apache', 'apache-pw'),
        `jsb:${bcrypt.hashSync('b-pw', 4)}`,
        `jsa:$2a$${bcrypt.hashSync('a-pw', 4).slice(4)}`,
        `ours:${hashPassword('ours-pw', 4)}`,
      ].join('\n'),
    );
    htpasswd = new Htpasswd({ path: file });
  });

  it('accepts each user’s own password', async () => {
    expect(await htpasswd.verify('apache', 'apache-pw')).toBe('apache');
    expect(await htpasswd.verify('jsb', 'b-pw')).toBe('jsb');
    expect(await htpasswd.verify('jsa', 'a-pw')).toBe('jsa');
    expect(await htpasswd.verify('ours', 'ours-pw')).toBe('ours');
    expect(htpasswd.userCount).toBe(4);
  });

  it('refuses wrong passwords, other users’ passwords and unknown users', async () => {
    expect(await htpasswd.verify('apache', 'wrong')).toBeUndefined();
    expect(await htpasswd.verify('apache', 'b-pw')).toBeUndefined();
    expect(await htpasswd.verify('nobody', 'apache-pw')).toBeUndefined();
    expect(await htpasswd.verify('', '')).toBeUndefined();
  });

  it('a cached success does not let a different password or user in', async () => {
    expect(await htpasswd.verify('jsb', 'b-pw')).toBe('jsb');
    expect(await htpasswd.verify('jsb', 'b-pw ')).toBeUndefined();
    expect(await htpasswd.verify('jsa', 'b-pw')).toBeUndefined();
    // "user:pw" split differently must not collide in the cache key.
    expect(await htpasswd.verify('jsb:b', '-pw')).toBeUndefined();
  });

  it('a file with a bad entry refuses to load', () => {
    const file = path.join(dir, 'bad.htpasswd');
    writeFileSync(file, 'x:$apr1$y$z\n');
    expect(() => new Htpasswd({ path: file })).toThrow(/no bcrypt hash/);
  });
});

describe('Htpasswd reload', () => {
  it('a reload with a bad line loads the valid entries and warns naming the line and user, never the hash', async () => {
    const file = path.join(dir, 'reload.htpasswd');
    writeFileSync(file, `${apacheEntry('old', 'old-pw')}\n`);
    const warnings: { fields: Record<string, unknown>; message: string }[] = [];
    const logger = { warn: (fields: Record<string, unknown>, message: string) => warnings.push({ fields, message }) };
    const htpasswd = new Htpasswd({ path: file, reloadCheckMs: 0, logger: logger as never });
    try {
      expect(await htpasswd.verify('old', 'old-pw')).toBe('old');
      // While the server runs, someone adds a bcrypt user and an MD5 one.
      const md5 = 'md5user:$apr1$Xy7Qz1aB$S3cr3tHashValueNotToLog';
      writeFileSync(file, [apacheEntry('old', 'old-pw'), apacheEntry('new', 'new-pw'), md5, ''].join('\n'));
      utimesSync(file, new Date(), new Date(Date.now() + 5_000));
      expect(await htpasswd.verify('new', 'new-pw')).toBe('new');
      expect(await htpasswd.verify('old', 'old-pw')).toBe('old');
      expect(await htpasswd.verify('md5user', 'anything')).toBeUndefined();
      expect(htpasswd.userCount).toBe(2);
      expect(warnings).toHaveLength(1);
      const logged = JSON.stringify(warnings);
      expect(warnings[0].fields).toMatchObject({ line: 3, user: 'md5user' });
      expect(warnings[0].message).toMatch(/no bcrypt hash/);
      expect(logged).not.toContain('$apr1$');
      expect(logged).not.toContain('S3cr3tHashValueNotToLog');
      // The same file version is not warned about again.
      await htpasswd.verify('new', 'new-pw');
      expect(warnings).toHaveLength(1);
    } finally {
      await htpasswd.close();
    }
  });
});

describe('the dummy hash unknown users are checked against', () => {
  const entry = (cost: number) => bcrypt.hashSync('pw', cost);

  it('has the cost of the file’s own entries (htpasswd -B writes cost 5), so an unknown user takes as long as a known one', () => {
    const file = path.join(dir, 'cost5.htpasswd');
    writeFileSync(file, ['a', 'b', 'c'].map((u) => `${u}:${entry(5).replace(/^\$2b\$/, '$2y$')}`).join('\n'));
    const htpasswd = new Htpasswd({ path: file });
    expect(htpasswd.dummyCost).toBe(5);
    const dummy = dummyHashFor([...parseHtpasswd(`x:${entry(5)}`).values()]);
    expect(bcrypt.getRounds(dummy)).toBe(5);
    // A well-formed hash nobody knows the password of.
    expect(bcrypt.compareSync('', dummy)).toBe(false);
    expect(bcrypt.compareSync('pw', dummy)).toBe(false);
  });

  it('takes the most common cost, the higher one on a tie, and 10 for an empty file', () => {
    expect(bcrypt.getRounds(dummyHashFor([entry(4), entry(6), entry(6)]))).toBe(6);
    expect(bcrypt.getRounds(dummyHashFor([entry(4), entry(4), entry(6)]))).toBe(4);
    expect(bcrypt.getRounds(dummyHashFor([entry(4), entry(6)]))).toBe(6);
    expect(bcrypt.getRounds(dummyHashFor([]))).toBe(10);
  });
});

describe('safeEqual', () => {
  it('compares strings of any length', () => {
    expect(safeEqual('token', 'token')).toBe(true);
    expect(safeEqual('token', 'tokem')).toBe(false);
    expect(safeEqual('token', 'token-longer')).toBe(false);
    expect(safeEqual('', '')).toBe(true);
  });
});

describe('Authenticator policy', () => {
  let htpasswd: Htpasswd;
  beforeAll(() => {
    const file = path.join(dir, 'policy.htpasswd');
    writeFileSync(file, `${apacheEntry('u', 'p')}\n`);
    htpasswd = new Htpasswd({ path: file });
  });

  async function codeOf(p: Promise<unknown>): Promise<string | undefined> {
    try {
      await p;
      return undefined;
    } catch (err) {
      expect(err).toBeInstanceOf(RegistryError);
      return (err as RegistryError).code;
    }
  }

  it('the challenge names the realm (quotes removed)', () => {
    expect(new Authenticator({ htpasswd, realm: 'my "realm"', anonymousPull: false }).challenge).toBe('Basic realm="my realm"');
  });

  it('with users: valid credentials for everything, anonymous for nothing', async () => {
    const auth = new Authenticator({ htpasswd, realm: 'r', anonymousPull: false });
    for (const access of ['base', 'pull', 'push', 'delete'] as const) {
      expect(await auth.authenticate(basic('u', 'p'), access)).toEqual({ user: 'u' });
      expect(await codeOf(auth.authenticate(undefined, access))).toBe('UNAUTHORIZED');
      expect(await codeOf(auth.authenticate('Basic Og==', access))).toBe('UNAUTHORIZED');
      expect(await codeOf(auth.authenticate(basic('u', 'wrong'), access))).toBe('UNAUTHORIZED');
    }
  });

  it('with anonymous pull: anonymous (no header or empty Basic) may pull, not push, delete or skip the base challenge', async () => {
    const auth = new Authenticator({ htpasswd, realm: 'r', anonymousPull: true });
    for (const header of [undefined, 'Basic Og==', 'basic Og==']) {
      expect(await auth.authenticate(header, 'pull')).toEqual({});
      expect(await codeOf(auth.authenticate(header, 'base'))).toBe('UNAUTHORIZED');
      expect(await codeOf(auth.authenticate(header, 'push'))).toBe('UNAUTHORIZED');
      expect(await codeOf(auth.authenticate(header, 'delete'))).toBe('UNAUTHORIZED');
    }
    // Wrong credentials are an error, not a fallback to anonymous.
    expect(await codeOf(auth.authenticate(basic('u', 'wrong'), 'pull'))).toBe('UNAUTHORIZED');
    expect(await codeOf(auth.authenticate('Bearer x', 'pull'))).toBe('UNAUTHORIZED');
  });

  it('without htpasswd: everyone reads, nobody writes (DENIED), whatever they send', async () => {
    const auth = new Authenticator({ realm: 'r', anonymousPull: false });
    for (const header of [undefined, basic('u', 'p'), 'Basic Og==']) {
      expect(await auth.authenticate(header, 'base')).toEqual({});
      expect(await auth.authenticate(header, 'pull')).toEqual({});
      expect(await codeOf(auth.authenticate(header, 'push'))).toBe('DENIED');
      expect(await codeOf(auth.authenticate(header, 'delete'))).toBe('DENIED');
    }
  });
});
