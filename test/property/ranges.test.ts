// Range (blob GET) and Content-Range (upload chunks) against RFC 9110,
// checked with exact integer arithmetic (BigInt), whatever the digits: a
// Range is served whole, in part, or answered 416; a Content-Range is a chunk
// the upload can trust to the byte, or RANGE_INVALID (416 BLOB_UPLOAD_INVALID).
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { parseContentRange, parseRangeHeader, type RangeRequest } from '../../server/src/http/context.ts';
import { toErrorResponse } from '../../server/src/http/errors.ts';
import { RegistryError } from '../../server/src/registry/errors.ts';
import { refusal } from './support.ts';

const RUNS = { numRuns: 1000 };
const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);

/** Positions: small, near a blob's size, and far beyond any safe integer. */
const position = fc.oneof(
  fc.bigInt({ min: 0n, max: 2000n }),
  fc.bigInt({ min: 0n, max: MAX_SAFE }),
  fc.bigInt({ min: MAX_SAFE - 2n, max: MAX_SAFE + 2n }),
  fc.bigInt({ min: 0n, max: 10n ** 30n }),
);
/** How the digits are written: plainly or with leading zeros. */
const digits = (n: bigint) => fc.nat(3).map((zeros) => '0'.repeat(zeros) + n.toString());
const blobSize = fc.oneof(fc.nat(2000), fc.maxSafeNat());
const ows = fc.constantFrom('', ' ', '  ', '\t');

describe('Range on a blob GET', () => {
  /** RFC 9110 §14.1.2 and §14.2 for one byte-range-spec, in exact arithmetic. */
  function expected(first: bigint | undefined, last: bigint | undefined, size: number): RangeRequest {
    const n = BigInt(size);
    if (first === undefined && last === undefined) return { kind: 'full' }; // "bytes=-": not a range; ignored
    if (first === undefined) {
      // A suffix: the last `last` bytes. Of an empty blob, nothing can be served (as distribution does).
      if (last === 0n || n === 0n) return { kind: 'unsatisfiable' };
      const start = last! >= n ? 0n : n - last!;
      return { kind: 'partial', range: { start: Number(start), end: size - 1 } };
    }
    if (last !== undefined && last < first) return { kind: 'full' }; // invalid: ignored
    if (first >= n) return { kind: 'unsatisfiable' };
    const end = last === undefined || last >= n ? n - 1n : last;
    return { kind: 'partial', range: { start: Number(first), end: Number(end) } };
  }

  it('one byte range, however large its numbers, is served as RFC 9110 says', () => {
    // Positions anywhere, or within two of the blob's first or last byte or its size, where off-by-ones live.
    const near = (size: number) =>
      fc.oneof(position, fc.integer({ min: -2, max: 2 }).map((d) => BigInt(Math.max(0, size + d))), fc.bigInt({ min: 0n, max: 2n }));
    const spec = blobSize.chain((size) =>
      fc
        .tuple(fc.option(near(size), { nil: undefined }), fc.option(near(size), { nil: undefined }))
        .chain(([first, last]) =>
          fc.tuple(
            fc.constant(size),
            fc.constant(first),
            fc.constant(last),
            first === undefined ? fc.constant('') : digits(first),
            last === undefined ? fc.constant('') : digits(last),
          ),
        ),
    );
    fc.assert(
      fc.property(spec, ows, ows, ([size, first, last, firstText, lastText], before, after) => {
        const header = `${before}bytes=${firstText}-${lastText}${after}`;
        expect(parseRangeHeader(header, size)).toEqual(expected(first, last, size));
      }),
      RUNS,
    );
  });

  it('regressions found by these properties', () => {
    // last < first only in exact arithmetic: as JS numbers both are 2^53, which read as one valid byte (416 here).
    expect(parseRangeHeader('bytes=9007199254740993-9007199254740992', 0)).toEqual({ kind: 'full' });
    expect(parseRangeHeader('bytes=9007199254740993-9007199254740992', 100)).toEqual({ kind: 'full' });
  });

  it('any header at all is served whole, as a part within the blob, or 416; never an error', () => {
    const noise = fc.oneof(
      fc.string({ unit: fc.constantFrom(...'bytes=-0123456789, */'), maxLength: 30 }),
      fc.string({ unit: 'binary', maxLength: 30 }),
      fc.constantFrom('', 'bytes=', 'bytes=-', 'Bytes=0-1', 'bytes=0-1,2-3', 'bytes=1e3-', 'bytes=0x1-2', 'bytes=٣-٤', 'bytes=-0', 'bytes =0-1'),
    );
    fc.assert(
      fc.property(fc.option(noise, { nil: undefined }), blobSize, (header, size) => {
        const result = parseRangeHeader(header, size);
        if (result.kind === 'partial') {
          const { start, end } = result.range;
          expect(Number.isSafeInteger(start) && Number.isSafeInteger(end)).toBe(true);
          expect(0 <= start && start <= end && end < size).toBe(true);
        }
      }),
      RUNS,
    );
  });
});

describe('Content-Range of an upload chunk', () => {
  /** RFC 9110 §14.4: invalid if last < first, or if a complete length is not above last. Exact, or refused. */
  function expected(start: bigint, end: bigint, total: bigint | '*' | undefined): { start: number; end: number } | 'RANGE_INVALID' {
    if (end < start) return 'RANGE_INVALID';
    if (typeof total === 'bigint' && total <= end) return 'RANGE_INVALID';
    // A chunk position past 2^53 cannot be told from its neighbours in a JS number; no upload gets there.
    if (end > MAX_SAFE) return 'RANGE_INVALID';
    return { start: Number(start), end: Number(end) };
  }

  const form = fc.constantFrom('plain', 'bytes ', 'bytes=');

  it('a chunk range is exactly the bytes it names, or RANGE_INVALID', () => {
    // Ends and totals near the start and the end (and 2^53), where off-by-ones live.
    const chunk = fc
      .tuple(position, fc.integer({ min: -2, max: 2 }), position, fc.integer({ min: -1, max: 2 }), fc.nat(3))
      .chain(([start, d, far, t, pick]) => {
        const end = pick === 0 ? far : start + BigInt(d) < 0n ? 0n : start + BigInt(d);
        const total = pick === 1 ? fc.constant(undefined) : pick === 2 ? fc.constant('*' as const) : fc.oneof(position, fc.constant(end + BigInt(t) < 0n ? 0n : end + BigInt(t)));
        return fc.tuple(fc.constant(start), fc.constant(end), total);
      })
      .chain(([start, end, total]) => fc.tuple(fc.constant({ start, end, total }), digits(start), digits(end)));
    fc.assert(
      fc.property(chunk, form, ows, ([{ start, end, total }, s, e], prefix, pad) => {
        const header = `${pad}${prefix === 'plain' ? '' : prefix}${s}-${e}${total === undefined ? '' : `/${total.toString()}`}${pad}`;
        const want = expected(start, end, total);
        if (want === 'RANGE_INVALID') expect(refusal(() => parseContentRange(header)), header).toBe('RANGE_INVALID');
        else expect(parseContentRange(header), header).toEqual(want);
      }),
      RUNS,
    );
  });

  it('any header is a safe, ordered range or RANGE_INVALID, which the client sees as 416 BLOB_UPLOAD_INVALID', () => {
    const noise = fc.oneof(
      fc.string({ unit: fc.constantFrom(...'bytes=-0123456789 */'), maxLength: 40 }),
      fc.string({ unit: 'binary', maxLength: 40 }),
    );
    fc.assert(
      fc.property(noise, (header) => {
        try {
          const range = parseContentRange(header)!;
          expect(Number.isSafeInteger(range.start) && Number.isSafeInteger(range.end)).toBe(true);
          expect(range.start).toBeLessThanOrEqual(range.end);
        } catch (err) {
          expect(err).toBeInstanceOf(RegistryError);
          expect((err as RegistryError).code).toBe('RANGE_INVALID');
          const { status, body } = toErrorResponse(err);
          expect(status).toBe(416);
          expect(JSON.parse(body).errors[0].code).toBe('BLOB_UPLOAD_INVALID');
        }
      }),
      RUNS,
    );
  });

  it('regressions found by these properties', () => {
    // An end past its own complete length (RFC 9110 §14.4: invalid).
    expect(refusal(() => parseContentRange('bytes 0-99/50'))).toBe('RANGE_INVALID');
    expect(refusal(() => parseContentRange('bytes 0-99/99'))).toBe('RANGE_INVALID');
    expect(parseContentRange('bytes 0-99/100')).toEqual({ start: 0, end: 99 });
    // Positions a JS number cannot hold exactly: 2^53 + 1 would read as 2^53.
    expect(refusal(() => parseContentRange('9007199254740992-9007199254740993'))).toBe('RANGE_INVALID');
    expect(refusal(() => parseContentRange('0-100000000000000000000'))).toBe('RANGE_INVALID');
  });
});
