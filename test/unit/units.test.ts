// Go-style durations and byte sizes, as distribution's config files write them.
import { describe, expect, it } from 'vitest';
import { parseDuration, parseSize } from '../../server/src/config/units.ts';

const S = 1000;
const M = 60 * S;
const H = 60 * M;

describe('parseDuration', () => {
  it.each([
    ['0', 0],
    ['0s', 0],
    ['30s', 30 * S],
    ['10m', 10 * M],
    ['168h', 168 * H],
    ['1h30m', H + 30 * M],
    ['1h30m15s', H + 30 * M + 15 * S],
    ['500ms', 500],
    ['1.5s', 1500],
    ['1.5h', 1.5 * H],
    ['2d', 48 * H],
    ['1500us', 1.5],
    ['1500µs', 1.5],
    ['2000000ns', 2],
    ['  30s  ', 30 * S],
    ['1m1m', 2 * M],
  ])('%j → %d ms', (input, ms) => {
    expect(parseDuration(input)).toBe(ms);
  });

  it.each(['', ' ', '10', '5x', 'forever', 's', '1h 30m', '30 s', '1H', 'h1', '30s!', '1e3s', 'NaN'])(
    '%j is not a duration',
    (input) => {
      expect(parseDuration(input)).toBeUndefined();
    },
  );
});

describe('parseSize', () => {
  it.each([
    ['0', 0],
    ['100', 100],
    ['100b', 100],
    ['1k', 1000],
    ['1kb', 1000],
    ['10GB', 10e9],
    ['10gb', 10e9],
    ['512MB', 512e6],
    ['2TB', 2e12],
    ['1KiB', 1024],
    ['512MiB', 512 * 1024 ** 2],
    ['1GiB', 1024 ** 3],
    ['1TiB', 1024 ** 4],
    ['1.5GiB', 1.5 * 1024 ** 3],
    ['1.5k', 1500],
    [' 10 MB ', 10e6],
  ])('%j → %d bytes', (input, bytes) => {
    expect(parseSize(input)).toBe(bytes);
  });

  it('takes plain numbers of bytes (YAML integers), flooring fractions', () => {
    expect(parseSize(1048576)).toBe(1048576);
    expect(parseSize(0)).toBe(0);
    expect(parseSize(10.7)).toBe(10);
  });

  it.each(['', 'abc', '10QB', 'GB', '-1', '-1GB', '1,5GB', '10 G B', '0x10', '1e9'])('%j is not a size', (input) => {
    expect(parseSize(input)).toBeUndefined();
  });

  it('rejects negative and non-finite numbers', () => {
    expect(parseSize(-1)).toBeUndefined();
    expect(parseSize(Number.NaN)).toBeUndefined();
    expect(parseSize(Number.POSITIVE_INFINITY)).toBeUndefined();
  });
});
