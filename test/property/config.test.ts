// The config loader: any YAML-ish document, any YAML text, any REGISTRY_*
// environment either loads or is refused with a ConfigError the CLI prints as
// `registry: …` naming the key: never a TypeError or a stack trace. Documents
// are built from the schema's own key paths, so the values reach every
// refinement, not just the first "unknown key" check.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { stringify as toYaml } from 'yaml';
import { ConfigError, loadConfigObject, loadConfigText } from '../../server/src/config/load.ts';
import { configSchema } from '../../server/src/config/schema.ts';

type KeyPath = Array<string | number>;

/** Every key path of the schema (array elements as index 0), read from zod's definitions. */
function keyPaths(schema: unknown, path: KeyPath = [], out: KeyPath[] = [], depth = 0): KeyPath[] {
  const def = (schema as { def?: Record<string, unknown> } | undefined)?.def;
  if (!def || depth > 12) return out;
  switch (def.type) {
    case 'object':
      for (const [key, value] of Object.entries(def.shape as Record<string, unknown>)) {
        out.push([...path, key]);
        keyPaths(value, [...path, key], out, depth + 1);
      }
      break;
    case 'optional':
    case 'default':
    case 'nullable':
    case 'readonly':
    case 'prefault':
      keyPaths(def.innerType, path, out, depth + 1);
      break;
    case 'pipe':
      keyPaths(def.in, path, out, depth + 1);
      keyPaths(def.out, path, out, depth + 1);
      break;
    case 'union':
      for (const option of def.options as unknown[]) keyPaths(option, path, out, depth + 1);
      break;
    case 'array':
      keyPaths(def.element, [...path, 0], out, depth + 1);
      break;
  }
  return out;
}

const PATHS = keyPaths(configSchema);

/** Values a careless hand writes: right and wrong types, units, addresses, URLs, and YAML's odd numbers. */
const value: fc.Arbitrary<unknown> = fc.oneof(
  fc.constantFrom(
    '10s', '0', '168h', 'forever', '5MB', '10GiB', '-1', '1.5', 'true', 'false', 'yes', '', ' ',
    ':5000', '127.0.0.1:0', '[::1]:5001', 'notaport', ':99999', 'redis:6379',
    'https://ghcr.io', 'http://127.0.0.1:5000', 'registry-1.example.com', 'ftp://x', 'https://ghcr.io/v2/x', 'https://u:p@h',
    'tcp', 'unix', 'inmemory', 'redis', 'debug', 'ghcr.io', 'docker.io', 'constructor', '__proto__',
    null, true, false, 0, -1, 1, 5_242_880, Number.NaN, Number.POSITIVE_INFINITY, -0, 1e300,
  ),
  fc.string({ maxLength: 12 }),
  fc.integer(),
  fc.double(),
  fc.jsonValue({ maxDepth: 2 }),
  // Fresh each time: a shared instance would be written into and end up inside itself.
  fc.constant(null).map(() => ({})),
  fc.constant(null).map(() => []),
);

/** Sets a value at a key path, making each container on the way the kind its key needs (a list for an index). */
function setPath(doc: Record<string, unknown>, path: KeyPath, v: unknown): void {
  let node: Record<string | number, unknown> = doc;
  path.forEach((key, i) => {
    if (i === path.length - 1) {
      // As JSON.parse and YAML do: a "__proto__" key is a key, not the object's prototype.
      Object.defineProperty(node, key, { value: v, enumerable: true, writable: true, configurable: true });
      return;
    }
    const next = node[key];
    const wantList = typeof path[i + 1] === 'number';
    if (typeof next !== 'object' || next === null || Array.isArray(next) !== wantList) node[key] = wantList ? [] : {};
    node = node[key] as Record<string | number, unknown>;
  });
}

/** A minimal valid document with some keys of the schema (or an unknown key below one) set to some value. */
const document = fc
  .array(
    fc.tuple(
      fc.constantFrom(...PATHS),
      fc.option(fc.constantFrom<string | number>('x', 'constructor', '__proto__', 'toString', 0), { nil: undefined, freq: 8 }),
      value,
    ),
    { maxLength: 6 },
  )
  .map((sets) => {
    const doc: Record<string, unknown> = { version: 0.1, storage: { filesystem: { rootdirectory: '/tmp/registry-property' } } };
    for (const [path, extra, v] of sets) setPath(doc, extra === undefined ? path : [...path, extra], v);
    return doc;
  });

/**
 * What a refusal must look like. One problem: one line, naming the key (or the
 * file). Several: a header line, then one indented line per problem. No stack
 * frames, and the parser's code frame never leaks.
 */
function expectConfigRefusal(err: unknown): void {
  if (!(err instanceof ConfigError)) throw err;
  const lines = err.message.split('\n');
  expect(lines[0]).toMatch(/^(invalid configuration in \S+:( \S.*)?|\S+ is not valid YAML: .+|\S+: the top level must be a mapping of keys)$/);
  if (lines.length > 1) {
    expect(lines[0]).toMatch(/:$/);
    for (const line of lines.slice(1)) expect(line).toMatch(/^ {2}\S/);
  }
  for (const line of lines) {
    expect(line).not.toMatch(/^\s+at .*:\d+:\d+\)?$/);
    expect(line).not.toMatch(/^\s*\^+\s*$/);
  }
}

function load(fn: () => unknown): 'loaded' | 'refused' {
  try {
    fn();
    return 'loaded';
  } catch (err) {
    expectConfigRefusal(err);
    return 'refused';
  }
}

describe('config documents', () => {
  it('any document built from the schema keys loads or is refused with a ConfigError naming the key', () => {
    const outcomes = { loaded: 0, refused: 0 };
    fc.assert(
      fc.property(document, (doc) => {
        outcomes[load(() => loadConfigObject(doc, {}))]++;
      }),
      { numRuns: 800 },
    );
    // Both outcomes happen: the documents are neither all broken nor all harmless.
    expect(outcomes.loaded).toBeGreaterThan(0);
    expect(outcomes.refused).toBeGreaterThan(0);
  });

  it('any JSON value at the top level loads or is refused the same way', () => {
    fc.assert(
      fc.property(fc.dictionary(fc.string({ maxLength: 10 }), fc.jsonValue({ maxDepth: 3 }), { maxKeys: 5 }), (doc) => {
        load(() => loadConfigObject(doc, {}));
      }),
      { numRuns: 300 },
    );
  });

  it('a document written out as YAML loads exactly as the document itself does', () => {
    fc.assert(
      fc.property(document, (doc) => {
        let fromObject: unknown;
        let objectError: string | undefined;
        try {
          fromObject = loadConfigObject(doc, {}).config;
        } catch (err) {
          expectConfigRefusal(err);
          objectError = (err as Error).message;
        }
        let fromText: unknown;
        let textError: string | undefined;
        try {
          fromText = loadConfigText(toYaml(doc), {}).config;
        } catch (err) {
          expectConfigRefusal(err);
          textError = (err as Error).message;
        }
        expect(textError).toBe(objectError);
        expect(fromText).toEqual(fromObject);
      }),
      { numRuns: 300 },
    );
  });
});

describe('config text', () => {
  const PIECES = [
    'storage:', 'filesystem:', 'rootdirectory: /x', 'http:', 'addr: :5000', 'proxy:', 'remoteurl: ', 'upstreams:', '- host: ghcr.io',
    '  ', '    ', '\n', ': ', '- ', '[', ']', '{', '}', '"', "'", '&a ', '*a', '<<: *a', '!!binary ', '!!set', '!!omap', '!!timestamp 2001-12-14',
    '!!js/function ', '!custom ', '? ', '|', '>', '#', '%YAML 1.1\n', '---\n', '...\n', '~', '.nan', '.inf', '0x1F', '0o17', '1_000', '\t', '\0', '\uFEFF',
  ];
  it('any text (valid YAML or not) loads or is refused with one line that says where', () => {
    const text = fc.oneof(
      fc.array(fc.constantFrom(...PIECES), { maxLength: 25 }).map((p) => p.join('')),
      fc.string({ unit: 'binary', maxLength: 80 }),
      document.map((d) => toYaml(d)),
    );
    fc.assert(
      fc.property(text, (t) => {
        load(() => loadConfigText(t, {}));
      }),
      { numRuns: 600 },
    );
  });
});

describe('config regressions found by these properties', () => {
  it('a YAML alias to an enclosing node is refused, not a TypeError from JSON.stringify', () => {
    const err = errorOf(() => loadConfigText('storage:\n  filesystem: &a\n    rootdirectory: *a\n', {}));
    expectConfigRefusal(err);
    expect(err.message).toMatch(/^invalid configuration in config: storage\.filesystem\.rootdirectory: expected string, got a value that contains itself/);
  });

  it('an unknown YAML tag is refused in one line, not a warning with a code frame and a guessed value', () => {
    const err = errorOf(() => loadConfigText('storage:\n  filesystem:\n    rootdirectory: !custom /srv\n', {}));
    expectConfigRefusal(err);
    expect(err.message).toBe('config is not valid YAML: Unresolved tag: !custom at line 3, column 20:');
  });

  it('REGISTRY_CONSTRUCTOR_* is an unknown variable, not a TypeError from the schema walk', () => {
    const { ignoredEnv } = loadConfigObject({ storage: { filesystem: {} } }, { REGISTRY_CONSTRUCTOR_STORAGE: '10s', REGISTRY_HTTP_CONSTRUCTOR_NAME: 'x' });
    expect(ignoredEnv.sort()).toEqual(['REGISTRY_CONSTRUCTOR_STORAGE', 'REGISTRY_HTTP_CONSTRUCTOR_NAME']);
  });

  it('any document with one value aliased to an enclosing node, written as YAML, is refused cleanly', () => {
    fc.assert(
      fc.property(fc.constantFrom(...PATHS.filter((p) => p.length >= 2)), fc.nat(), (path, cut) => {
        const doc: Record<string, unknown> = { storage: { filesystem: { rootdirectory: '/tmp/x' } } };
        setPath(doc, path, 'placeholder');
        // Point the leaf at one of its ancestors: the YAML then holds an alias to an enclosing anchor.
        const ancestorPath = path.slice(0, 1 + (cut % (path.length - 1)));
        let ancestor: unknown = doc;
        for (const key of ancestorPath) ancestor = (ancestor as Record<string | number, unknown>)[key];
        setPath(doc, path, ancestor);
        load(() => loadConfigText(toYaml(doc), {}));
      }),
      { numRuns: 200 },
    );
  });
});

function errorOf(fn: () => unknown): Error {
  try {
    fn();
  } catch (err) {
    return err as Error;
  }
  throw new Error('expected an error');
}

describe('environment overrides', () => {
  const envName = fc
    .oneof(
      fc.constantFrom(...PATHS).map((p) => p.filter((k) => typeof k === 'string')),
      fc.array(fc.constantFrom('storage', 'http', 'proxy', 'log', 'fields', 'headers', 'constructor', 'tostring', 'x', '', 'upstreams', '0'), { minLength: 1, maxLength: 4 }),
    )
    .map((keys) => `REGISTRY_${keys.join('_').toUpperCase()}`);
  const envValue = fc.oneof(
    value.filter((v) => typeof v === 'string').map(String),
    fc.jsonValue({ maxDepth: 2 }).map((v) => JSON.stringify(v)),
    fc.constantFrom('{', '[', '{a: [1, 2]}', '[::1]:5000'),
  );

  it('any REGISTRY_* variables load or are refused with a ConfigError naming the key', () => {
    fc.assert(
      fc.property(document, fc.dictionary(envName, envValue, { maxKeys: 4 }), (doc, env) => {
        load(() => loadConfigObject(doc, env));
      }),
      { numRuns: 600 },
    );
  });
});
