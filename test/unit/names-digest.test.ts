// Repository names, tags and digests: the grammar of the OCI distribution
// spec, and the property that anything accepted is safe inside a storage key.
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { digestOf, looksLikeDigest, parseDigest, tryParseDigest } from '../../server/src/registry/digest.ts';
import { RegistryError } from '../../server/src/registry/errors.ts';
import { isValidName, isValidTag, validateName, validateTag } from '../../server/src/registry/names.ts';

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
    return undefined;
  } catch (err) {
    expect(err).toBeInstanceOf(RegistryError);
    return (err as RegistryError).code;
  }
}

describe('repository names', () => {
  it.each([
    'a',
    '0',
    'library/ubuntu',
    'team/app',
    'a/b/c/d/e',
    'a-b',
    'a--b',
    'a---b',
    'a_b',
    'a__b',
    'a.b',
    'a.b.c/d-e_f__g',
    'ghcr.io/org/app',
    '123/456',
    `${'a'.repeat(255)}`,
    `${'a'.repeat(127)}/${'b'.repeat(127)}`,
  ])('%j is valid', (name) => {
    expect(isValidName(name)).toBe(true);
    expect(validateName(name)).toBe(name);
  });

  it.each([
    '',
    'A',
    'Library/ubuntu',
    'a/',
    '/a',
    'a//b',
    'a..b',
    'a._b',
    'a___b',
    '_a',
    'a_',
    '-a',
    'a-',
    '.a',
    'a.',
    '.',
    '..',
    'a/./b',
    'a/../b',
    '../a',
    'a/..',
    'a/_manifests',
    'a/_uploads',
    'a/_layers',
    'a b',
    'a%2fb',
    'a\\b',
    'a:b',
    'a@b',
    'a\0b',
    'a\nb',
    'ümlaut',
    `${'a'.repeat(256)}`,
    'localhost:5000/a',
  ])('%j is invalid → NAME_INVALID', (name) => {
    expect(isValidName(name)).toBe(false);
    expect(codeOf(() => validateName(name))).toBe('NAME_INVALID');
  });

  it('no valid name has an empty, "." or ".." component or one starting with "_"', () => {
    const alphabet = ['a', '0', '.', '_', '-', '/'];
    // Every string of up to 5 characters from a small alphabet.
    const all: string[] = [''];
    for (let len = 1; len <= 5; len++) {
      for (const prev of all.filter((s) => s.length === len - 1)) for (const c of alphabet) all.push(prev + c);
    }
    for (const name of all.filter(isValidName)) {
      for (const component of name.split('/')) {
        expect(component, name).not.toBe('');
        expect(component, name).not.toBe('.');
        expect(component, name).not.toBe('..');
        expect(component.startsWith('_'), name).toBe(false);
        expect(component.startsWith('.'), name).toBe(false);
      }
    }
  });
});

describe('tags', () => {
  it.each(['latest', 'v1', 'v1.0.0', '1.0', 'A', 'UPPER-lower_1.2', '_leading_underscore', '0', 'x'.repeat(128), 'a..b', 'a__b'])(
    '%j is valid',
    (tag) => {
      expect(isValidTag(tag)).toBe(true);
      expect(validateTag(tag)).toBe(tag);
    },
  );

  it.each(['', '.hidden', '-dash', 'x'.repeat(129), 'a:b', 'a/b', 'a b', '..', '.', 'a\nb', 'ümlaut', 'a+b', 'sha256'.padEnd(129, 'x')])(
    '%j is invalid → TAG_INVALID',
    (tag) => {
      expect(isValidTag(tag)).toBe(false);
      expect(codeOf(() => validateTag(tag))).toBe('TAG_INVALID');
    },
  );
});

describe('digests', () => {
  const hex256 = createHash('sha256').update('x').digest('hex');
  const hex384 = createHash('sha384').update('x').digest('hex');
  const hex512 = createHash('sha512').update('x').digest('hex');

  it('parses sha256, sha384 and sha512 with the right lengths', () => {
    expect(parseDigest(`sha256:${hex256}`)).toEqual({ algorithm: 'sha256', hex: hex256, value: `sha256:${hex256}` });
    expect(parseDigest(`sha384:${hex384}`).algorithm).toBe('sha384');
    expect(parseDigest(`sha512:${hex512}`).hex).toBe(hex512);
  });

  it.each([
    ['uppercase hex', `sha256:${hex256.toUpperCase()}`],
    ['uppercase algorithm', `SHA256:${hex256}`],
    ['too short', `sha256:${hex256.slice(1)}`],
    ['too long', `sha256:${hex256}a`],
    ['sha512 length for sha256', `sha256:${hex512}`],
    ['sha256 length for sha512', `sha512:${hex256}`],
    ['sha256 length for sha384', `sha384:${hex256}`],
    ['empty hex', 'sha256:'],
    ['no algorithm', `:${hex256}`],
    ['no colon', hex256],
    ['unknown algorithm', `md5:${hex256.slice(0, 32)}`],
    ['traversal', 'sha256:../../../etc/passwd'],
    ['traversal with hex', `sha256:${hex256.slice(0, 60)}/../`],
    ['non-hex', `sha256:${'g'.repeat(64)}`],
    ['trailing newline', `sha256:${hex256}\n`],
    ['leading space', ` sha256:${hex256}`],
    ['extra component', `sha256:${hex256}:x`],
    ['empty', ''],
  ])('%s → DIGEST_INVALID', (_label, input) => {
    expect(tryParseDigest(input)).toBeUndefined();
    expect(codeOf(() => parseDigest(input))).toBe('DIGEST_INVALID');
  });

  it('error messages truncate very long input', () => {
    try {
      parseDigest(`sha256:${'z'.repeat(10_000)}`);
    } catch (err) {
      expect((err as Error).message.length).toBeLessThan(200);
    }
  });

  it('digestOf hashes bytes as sha256 by default, or as asked', () => {
    const data = Buffer.from('hello');
    expect(digestOf(data).value).toBe(`sha256:${createHash('sha256').update(data).digest('hex')}`);
    expect(digestOf(data, 'sha512').value).toBe(`sha512:${createHash('sha512').update(data).digest('hex')}`);
    expect(tryParseDigest(digestOf(data, 'sha384').value)).toBeDefined();
  });

  it('looksLikeDigest: anything with a colon is meant as a digest (tags cannot contain one)', () => {
    expect(looksLikeDigest(`sha256:${hex256}`)).toBe(true);
    expect(looksLikeDigest('sha256:bad')).toBe(true);
    expect(looksLikeDigest('latest')).toBe(false);
    expect(looksLikeDigest('sha256')).toBe(false);
  });
});
