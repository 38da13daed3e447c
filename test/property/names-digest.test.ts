// Repository names, tags, digests and manifest bodies against the spec's
// grammar: whatever the input, the parsers answer with a value or a typed
// refusal (NAME_INVALID, TAG_INVALID, DIGEST_INVALID, MANIFEST_INVALID), agree
// with the spec's regexes, and give back what they were given.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { digestOf, looksLikeDigest, parseDigest, tryParseDigest } from '../../server/src/registry/digest.ts';
import { MediaTypes, parseManifest } from '../../server/src/registry/manifest.ts';
import { isValidName, isValidTag, validateName, validateTag } from '../../server/src/registry/names.ts';
import { MAX_NAME, refusal, refusedWith, SPEC_DIGEST, SPEC_NAME, SPEC_TAG } from './support.ts';

const RUNS = { numRuns: 500 };

/** Characters near the grammar's edges: separators, case, path and URL syntax, and some beyond ASCII. */
const EDGE_CHARS = ['a', 'z', '0', '9', 'A', 'Z', '.', '_', '-', '/', ':', '%', '@', ' ', '\n', '\0', 'é', '\u212A', '🙂'];
const edgeString = (maxLength: number) => fc.string({ unit: fc.constantFrom(...EDGE_CHARS), maxLength });
const anyString = (maxLength: number) =>
  fc.oneof(edgeString(maxLength), fc.string({ unit: 'binary', maxLength }), fc.string({ maxLength }));

const specName = fc.stringMatching(SPEC_NAME).filter((n) => n.length <= MAX_NAME);
const specTag = fc.stringMatching(SPEC_TAG);
/** Strings of valid characters right around a length limit, where an off-by-one would show. */
const aroundLength = (limit: number, first: string, rest: string) =>
  fc
    .tuple(fc.integer({ min: limit - 2, max: limit + 2 }), fc.constantFrom(...first), fc.string({ unit: fc.constantFrom(...rest), minLength: limit + 2, maxLength: limit + 2 }))
    .map(([length, head, tail]) => (head + tail).slice(0, length));
const nameAroundLimit = fc.oneof(
  aroundLength(MAX_NAME, 'abz09', 'abz09'),
  // Several components: "/" every few characters, never doubled or at the ends.
  aroundLength(MAX_NAME, 'a', 'abc').map((n) => n.replace(/(.{7})(?=.)/g, (m) => `${m.slice(0, 6)}/`)),
);
const tagAroundLimit = aroundLength(128, 'aZ9_', 'aZ9_.-');

const ALGORITHMS = { sha256: 64, sha384: 96, sha512: 128 } as const;
const hexOf = (length: number) => fc.string({ unit: fc.constantFrom(...'0123456789abcdef'), minLength: length, maxLength: length });
const validDigest = fc
  .constantFrom(...(Object.keys(ALGORITHMS) as Array<keyof typeof ALGORITHMS>))
  .chain((algorithm) => hexOf(ALGORITHMS[algorithm]).map((hex) => ({ algorithm, hex })));

describe('repository names', () => {
  it('accept exactly what the spec grammar accepts (up to 255 characters); refuse the rest with NAME_INVALID', () => {
    fc.assert(
      fc.property(fc.oneof(anyString(40), specName, nameAroundLimit), (name) => {
        const valid = SPEC_NAME.test(name) && name.length <= MAX_NAME;
        expect(isValidName(name)).toBe(valid);
        if (valid) expect(validateName(name)).toBe(name);
        else expect(refusedWith(() => validateName(name))).toBe('NAME_INVALID');
      }),
      RUNS,
    );
  });

  it('every name the spec allows is accepted as it is, and is safe to join into a storage key', () => {
    fc.assert(
      fc.property(specName, (name) => {
        expect(validateName(name)).toBe(name);
        for (const component of name.split('/')) {
          expect(component).not.toMatch(/^(?:|\.|\.\.)$/);
          expect(component.startsWith('_')).toBe(false);
        }
      }),
      RUNS,
    );
  });
});

describe('tags', () => {
  it('accept exactly the spec grammar; refuse the rest with TAG_INVALID', () => {
    fc.assert(
      fc.property(fc.oneof(anyString(140), specTag, tagAroundLimit), (tag) => {
        const valid = SPEC_TAG.test(tag);
        expect(isValidTag(tag)).toBe(valid);
        if (valid) expect(validateTag(tag)).toBe(tag);
        else expect(refusedWith(() => validateTag(tag))).toBe('TAG_INVALID');
      }),
      RUNS,
    );
  });

  it('no valid tag is taken for a digest (a reference is one or the other)', () => {
    fc.assert(
      fc.property(specTag, (tag) => {
        expect(looksLikeDigest(tag)).toBe(false);
      }),
      RUNS,
    );
  });
});

describe('digests', () => {
  it('a valid digest formatted and parsed back is the same digest', () => {
    fc.assert(
      fc.property(validDigest, ({ algorithm, hex }) => {
        const text = `${algorithm}:${hex}`;
        const d = parseDigest(text);
        expect(d).toEqual({ algorithm, hex, value: text });
        expect(parseDigest(d.value)).toEqual(d);
        expect(looksLikeDigest(d.value)).toBe(true);
      }),
      RUNS,
    );
  });

  it('the digest of any bytes parses back to itself', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 256 }), fc.constantFrom('sha256', 'sha384', 'sha512' as const), (bytes, algorithm) => {
        const d = digestOf(bytes, algorithm);
        expect(parseDigest(d.value)).toEqual(d);
      }),
      RUNS,
    );
  });

  it('anything accepted matches the spec grammar; anything else is DIGEST_INVALID, never another error', () => {
    const nearDigest = fc.tuple(
      fc.constantFrom('sha256', 'sha384', 'sha512', 'SHA256', 'sha1', 'md5', 'sha256+b64u', 'blake3', ''),
      fc.constantFrom(':', '', '::', '%3A'),
      fc.oneof(hexOf(64), hexOf(96), hexOf(128), hexOf(63), hexOf(65), hexOf(64).map((h) => h.toUpperCase()), anyString(130)),
    );
    fc.assert(
      fc.property(fc.oneof(nearDigest.map((parts) => parts.join('')), anyString(140)), (text) => {
        const code = refusal(() => parseDigest(text));
        if (code === undefined) {
          expect(SPEC_DIGEST.test(text)).toBe(true);
          expect(tryParseDigest(text)?.value).toBe(text);
        } else {
          expect(code).toBe('DIGEST_INVALID');
          expect(tryParseDigest(text)).toBeUndefined();
        }
      }),
      RUNS,
    );
  });

  it('refuses a well-formed digest of an algorithm it cannot verify, or the wrong length, with DIGEST_INVALID', () => {
    fc.assert(
      fc.property(
        fc.stringMatching(SPEC_DIGEST).filter((d) => !/^(sha256:[a-f0-9]{64}|sha384:[a-f0-9]{96}|sha512:[a-f0-9]{128})$/.test(d)),
        (text) => {
          expect(refusedWith(() => parseDigest(text))).toBe('DIGEST_INVALID');
        },
      ),
      RUNS,
    );
  });
});

describe('manifest bodies', () => {
  const descriptor = fc.record(
    {
      mediaType: fc.constantFrom('application/vnd.oci.image.layer.v1.tar+gzip', 'application/vnd.oci.image.config.v1+json', 'x/y'),
      digest: validDigest.map(({ algorithm, hex }) => `${algorithm}:${hex}`),
      size: fc.maxSafeNat(),
      annotations: fc.dictionary(fc.string({ maxLength: 8 }), fc.string({ maxLength: 8 }), { maxKeys: 3 }),
    },
    { requiredKeys: ['mediaType', 'digest', 'size'] },
  );

  it('a well-formed image manifest or index parses to exactly the descriptors it lists', () => {
    const image = fc.record({
      kind: fc.constantFrom(MediaTypes.ociManifest, MediaTypes.dockerManifest),
      config: descriptor,
      layers: fc.array(descriptor, { maxLength: 5 }),
    });
    const index = fc.record({ kind: fc.constantFrom(MediaTypes.ociIndex, MediaTypes.dockerManifestList), manifests: fc.array(descriptor, { maxLength: 5 }) });
    fc.assert(
      fc.property(fc.oneof(image, index), fc.boolean(), (m, typedByHeader) => {
        const { kind, ...rest } = m;
        const doc = { schemaVersion: 2, ...(typedByHeader ? {} : { mediaType: kind }), ...rest };
        const info = parseManifest(Buffer.from(JSON.stringify(doc)), typedByHeader ? kind : undefined, { pushed: true });
        expect(info.mediaType).toBe(kind);
        if ('manifests' in m) {
          expect(info.children).toEqual(m.manifests);
          expect(info.blobs).toEqual([]);
        } else {
          expect(info.blobs).toEqual([m.config, ...m.layers]);
          expect(info.children).toEqual([]);
        }
      }),
      { numRuns: 200 },
    );
  });

  it('any body, JSON or not, is parsed or refused as MANIFEST_INVALID', () => {
    // Manifest-shaped documents with any field replaced by any JSON value reach past the first checks.
    const field = fc.jsonValue({ maxDepth: 2 });
    const mutated = fc.record(
      {
        schemaVersion: fc.oneof(fc.constant(2), field),
        mediaType: fc.oneof(fc.constantFrom(...Object.values(MediaTypes)), field),
        config: fc.oneof(descriptor, field),
        layers: fc.oneof(fc.array(fc.oneof(descriptor, field), { maxLength: 3 }), field),
        manifests: fc.oneof(fc.array(fc.oneof(descriptor, field), { maxLength: 3 }), field),
        subject: fc.oneof(descriptor, field),
        annotations: field,
        artifactType: field,
      },
      { requiredKeys: [] },
    );
    const body = fc.oneof(
      mutated.map((d) => Buffer.from(JSON.stringify(d))),
      fc.jsonValue({ maxDepth: 3 }).map((d) => Buffer.from(JSON.stringify(d))),
      fc.uint8Array({ maxLength: 64 }).map((b) => Buffer.from(b)),
    );
    const contentType = fc.option(fc.oneof(fc.constantFrom(...Object.values(MediaTypes), 'text/plain', 'application/json'), anyString(30)), { nil: undefined });
    fc.assert(
      fc.property(body, contentType, fc.boolean(), (bytes, type, pushed) => {
        const code = refusal(() => parseManifest(bytes, type, { pushed }));
        if (code !== undefined) expect(code).toBe('MANIFEST_INVALID');
      }),
      RUNS,
    );
  });
});
