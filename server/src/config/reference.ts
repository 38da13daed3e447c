// The configuration reference (docs/configuration.md), generated from the
// schema itself: every key with its type, default and `.describe()` text, so
// the reference cannot drift from what the server accepts. A key without a
// description is reported rather than silently left out.
import type { z } from 'zod';
import { configSchema } from './schema.ts';

export interface ReferenceRow {
  /** Dotted path: `storage.s3.bucket`, `proxy.upstreams[].host`, `http.headers.<name>`. */
  key: string;
  type: string;
  default?: string;
  description?: string;
  /** Depth below its top-level section (0 for the section itself). */
  depth: number;
}

type Def = { type: string } & Record<string, unknown>;
type Schema = z.ZodType;

const def = (s: Schema): Def => (s as unknown as { def: Def }).def;
const WRAPPERS = new Set(['optional', 'default', 'nullable', 'prefault', 'readonly', 'catch']);

/** The description of a field: the outermost one of its wrappers that has one. */
function descriptionOf(s: Schema): string | undefined {
  let cur: Schema | undefined = s;
  for (let i = 0; cur && i < 20; i++) {
    if (cur.description) return cur.description;
    const d = def(cur);
    cur = WRAPPERS.has(d.type) ? (d.innerType as Schema) : d.type === 'pipe' ? (d.in as Schema) : undefined;
  }
  return undefined;
}

function unwrap(s: Schema): { inner: Schema; defaultValue?: unknown; hasDefault: boolean } {
  let cur = s;
  let defaultValue: unknown;
  let hasDefault = false;
  while (WRAPPERS.has(def(cur).type)) {
    const d = def(cur);
    if (d.type === 'default' && !hasDefault) {
      hasDefault = true;
      defaultValue = d.defaultValue;
    }
    cur = d.innerType as Schema;
  }
  return { inner: cur, defaultValue, hasDefault };
}

/**
 * The config file's own units are transforms, which the schema cannot name:
 * tell them apart by what they accept (a duration takes "1h", a size "1KiB").
 */
function unitOf(s: Schema): 'duration' | 'size' | undefined {
  const accepts = (v: string, out: number) => {
    const r = s.safeParse(v);
    return r.success && r.data === out;
  };
  if (accepts('1h', 3_600_000)) return 'duration';
  if (accepts('1KiB', 1024)) return 'size';
  return undefined;
}

/** The object schema behind a field (through wrappers and pipes), if it is one. */
function objectOf(s: Schema): Record<string, Schema> | undefined {
  const { inner } = unwrap(s);
  const d = def(inner);
  if (d.type === 'object') return d.shape as Record<string, Schema>;
  if (d.type === 'pipe') return objectOf(d.out as Schema);
  return undefined;
}

export function typeOf(s: Schema): string {
  const { inner } = unwrap(s);
  const d = def(inner);
  switch (d.type) {
    case 'string':
      return 'string';
    case 'boolean':
      return 'boolean';
    case 'number':
      return (d.checks as unknown[] | undefined)?.some((c) => (c as { _zod?: { def?: { check?: string; format?: string } } })._zod?.def?.format === 'safeint') ? 'integer' : 'number';
    case 'enum':
      return Object.values(d.entries as Record<string, string>).map((v) => `\`${v}\``).join(' \\| ');
    case 'object':
      return 'section';
    case 'record':
      return 'map';
    case 'array': {
      const element = d.element as Schema;
      return objectOf(element) ? 'list of sections' : `list of ${typeOf(element)}`;
    }
    case 'union':
      return (d.options as Schema[]).map(typeOf).join(' or ');
    case 'unknown':
    case 'any':
      return 'any';
    case 'pipe': {
      const unit = unitOf(inner);
      if (unit) return unit;
      const out = def(d.out as Schema);
      // preprocess(fn, T) and T.pipe(refined T): the type is the output's; transform(String) is its input's.
      return out.type === 'transform' ? typeOf(d.in as Schema) : typeOf(d.out as Schema);
    }
    default:
      return d.type;
  }
}

const UNIT_MS: Array<[string, number]> = [
  ['d', 86_400_000],
  ['h', 3_600_000],
  ['m', 60_000],
  ['s', 1000],
];
const UNIT_BYTES: Array<[string, number]> = [
  ['GiB', 1024 ** 3],
  ['MiB', 1024 ** 2],
  ['KiB', 1024],
];

function formatDefault(value: unknown, type: string): string | undefined {
  if (value === undefined) return undefined;
  if (type === 'duration' && typeof value === 'number') {
    if (value === 0) return '`0`';
    // Hours as Go writes them (168h, not 7d): distribution's configs say 168h.
    const [unit, ms] = UNIT_MS.slice(1).find(([, ms]) => value % ms === 0) ?? ['ms', 1];
    return `\`${value / ms}${unit}\``;
  }
  if (type === 'size' && typeof value === 'number') {
    const [unit, bytes] = UNIT_BYTES.find(([, b]) => value % b === 0) ?? ['', 1];
    return `\`${value / bytes}${unit}\``;
  }
  if (typeof value === 'object' && value !== null) {
    if (Array.isArray(value)) return value.length === 0 ? 'none' : `\`${JSON.stringify(value)}\``;
    return undefined; // a section's defaults are its keys'
  }
  return `\`${String(value)}\``;
}

/** Every key of the schema, depth first, in the schema's own order. */
export function referenceRows(schema: Schema = configSchema): ReferenceRow[] {
  const rows: ReferenceRow[] = [];
  const visit = (s: Schema, key: string, depth: number) => {
    const { inner, defaultValue } = unwrap(s);
    const type = typeOf(s);
    rows.push({ key, type, default: formatDefault(defaultValue, type), description: descriptionOf(s), depth });
    const shape = objectOf(s);
    if (shape) {
      const start = rows.length;
      for (const [k, child] of Object.entries(shape)) visit(child, `${key}.${k}`, depth + 1);
      // A described section whose keys say nothing of their own (kept for distribution's configs, unused)
      // is listed as one row: its text covers them.
      if (rows[start - 1].description && rows.slice(start).every((r) => !r.description)) rows.length = start;
      return;
    }
    const d = def(inner);
    if (d.type === 'array') {
      const element = objectOf(d.element as Schema);
      if (element) for (const [k, child] of Object.entries(element)) visit(child, `${key}[].${k}`, depth + 1);
    }
  };
  for (const [k, child] of Object.entries(objectOf(schema) ?? {})) visit(child, k, 0);
  return rows;
}

/** Keys that have no `.describe()` text (the reference would say nothing about them). */
export function undescribedKeys(schema: Schema = configSchema): string[] {
  const rows = referenceRows(schema);
  // A section's own text may be left out when its keys say it all; a key's may not.
  return rows.filter((r) => !r.description && r.type !== 'section').map((r) => r.key);
}

const INTRO = `# Configuration reference

<!-- Generated from server/src/config/schema.ts by \`npm run docs:config\`; do not edit by hand.
     test/docs/configuration.test.ts fails when this file is stale. -->

The server reads one YAML file, in the shape of distribution's (\`registry:2\`) \`config.yml\`, so existing configs
load unchanged; keys marked *Ours* are this server's own. Start it with \`npx registry serve config.yml\`; without a
file, \`npx registry serve\` (\`npm start\`) runs the built-in quick-start config: a private registry on
127.0.0.1:5000 storing under \`./data\`.

- **Every key is checked at start.** An unknown key, a wrong type or a bad value stops the server with one line
  naming the key (\`registry: invalid configuration in config.yml: unknown key "storage.filesystem.rootdir"\`), exit 2.
- **Environment overrides**, as in distribution: \`REGISTRY_\` and the key path in capitals, \`_\` for each dot:
  \`REGISTRY_HTTP_ADDR=127.0.0.1:5000\`, \`REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY=/srv/registry\`. Lists and maps
  may be given as YAML or JSON (\`REGISTRY_RATELIMIT_TRUSTEDPROXIES='[10.0.0.0/8]'\`). A \`REGISTRY_\` variable that
  names no key is ignored with a warning in the log.
- **Durations** are Go's: \`500ms\`, \`30s\`, \`10m\`, \`1h30m\`, \`168h\` (and \`d\` for days), or \`0\`. **Sizes** are bytes,
  or a number with a unit: \`512MB\`, \`10GB\` (powers of 1000), \`512MiB\`, \`1GiB\` (powers of 1024).
- Keys distribution has and this server does not use are accepted, so a \`registry:2\` config still loads; they are
  marked "Accepted; not used". Token and silly auth are refused, since they would change who may push.

How the sections fit together, with examples: [the README](../README.md), [mirror.md](mirror.md) (the \`proxy\`
and \`cache\` sections), [operations.md](operations.md) (\`admin\`, \`gc\`), [security.md](security.md)
(\`auth\`, \`ratelimit\`), [scale-out.md](scale-out.md) (\`storage.s3\`, \`redis\`).
`;

function cell(text: string): string {
  return text.replace(/\|/g, '\\|').replace(/\n/g, ' ');
}

/** docs/configuration.md. */
export function renderConfigReference(schema: Schema = configSchema): string {
  const rows = referenceRows(schema);
  const out: string[] = [INTRO];
  const sections = rows.filter((r) => r.depth === 0);
  out.push('## Sections', '');
  for (const s of sections) out.push(`- [\`${s.key}\`](#${s.key}): ${s.description ?? ''}`.trimEnd());
  out.push('');
  for (const section of sections) {
    out.push(`## ${section.key}`, '');
    if (section.description) out.push(section.description, '');
    const below = rows.filter((r) => r.key.startsWith(`${section.key}.`) || r.key.startsWith(`${section.key}[]`));
    const own = section.type === 'section' || below.length > 0 ? below : [section];
    if (section.type !== 'section' && below.length === 0) {
      out.push(`Type: ${section.type}${section.default ? `; default ${section.default}` : ''}.`, '');
      continue;
    }
    out.push('| Key | Type | Default | What it does |', '|---|---|---|---|');
    for (const r of own) {
      out.push(`| \`${r.key}\` | ${r.type} | ${r.default ?? ''} | ${cell(r.description ?? '')} |`);
    }
    out.push('');
  }
  return `${out.join('\n').trimEnd()}\n`;
}
