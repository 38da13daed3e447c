// Loads the YAML config, applies REGISTRY_* environment overrides the way
// distribution does (REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY sets
// storage.filesystem.rootdirectory), validates it against the schema and turns
// every problem into one message that names the key.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import type { z } from 'zod';
import { configSchema, type RegistryConfig } from './schema.ts';

// Loaded for a config file or a structured environment value only: the built-in quick-start
// config needs neither (0.6 MB less RSS at start).
const yaml = () => createRequire(import.meta.url)('yaml') as typeof import('yaml');

export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

export interface LoadedConfig {
  config: RegistryConfig;
  /** Environment variables that looked like overrides but name no config key. */
  ignoredEnv: string[];
}

const ENV_PREFIX = 'REGISTRY_';
const UPSTREAM_LOGIN_ENV = /^REGISTRY_PROXY_[A-Z0-9_]+_(USERNAME|PASSWORD)$/;

export function loadConfigFile(file: string, env: NodeJS.ProcessEnv = process.env): LoadedConfig {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(`cannot read config file ${file}: ${(err as Error).message}`);
  }
  return loadConfigText(text, env, file);
}

export function loadConfigText(text: string, env: NodeJS.ProcessEnv = process.env, source = 'config'): LoadedConfig {
  let raw: unknown;
  try {
    const doc = yaml().parseDocument(text);
    // The parser only warns about an unknown tag (!custom, !!js/function) or an ambiguous alias, printing a
    // code frame to stderr and reading the value as something else: refuse it like a syntax error instead.
    const problem = doc.errors[0] ?? doc.warnings[0];
    if (problem) throw problem;
    raw = doc.toJS() ?? {};
  } catch (err) {
    // The parser's message ends in a code frame over several lines: the first line says where.
    throw new ConfigError(`${source} is not valid YAML: ${(err as Error).message.split('\n')[0]}`);
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new ConfigError(`${source}: the top level must be a mapping of keys`);
  }
  return loadConfigObject(raw as Record<string, unknown>, env, source);
}

export function loadConfigObject(
  raw: Record<string, unknown>,
  env: NodeJS.ProcessEnv = process.env,
  source = 'config',
): LoadedConfig {
  const doc = structuredClone(raw);
  const fromEnv = new Map<string, string>();
  const ignoredEnv: string[] = [];
  for (const [name, value] of Object.entries(env)) {
    if (!name.startsWith(ENV_PREFIX) || value === undefined) continue;
    const keyPath = name.slice(ENV_PREFIX.length).toLowerCase().split('_');
    if (!knownPath(keyPath)) {
      // Upstream logins of the mirror (REGISTRY_PROXY_GHCR_IO_PASSWORD) are read by the mirror itself.
      if (!UPSTREAM_LOGIN_ENV.test(name)) ignoredEnv.push(name);
      continue;
    }
    setPath(doc, keyPath, envValue(value));
    fromEnv.set(keyPath.join('.'), name);
  }
  const result = configSchema.safeParse(doc);
  if (!result.success) throw new ConfigError(formatIssues(result.error.issues, doc, fromEnv, source));
  return { config: result.data, ignoredEnv };
}

/** Structured values (maps, lists) may be given as YAML/JSON in an environment variable. */
function envValue(value: string): unknown {
  const t = value.trim();
  if (t.startsWith('{') || t.startsWith('[')) {
    try {
      return yaml().parse(t);
    } catch {
      return value;
    }
  }
  return value;
}

/** Does the schema have this key path? (Records accept any key below them.) */
function knownPath(keyPath: string[]): boolean {
  let schema: z.ZodType = configSchema;
  for (const key of keyPath) {
    const shape = objectShape(schema);
    if (shape === 'any') return true;
    // Own keys only: "constructor" (REGISTRY_CONSTRUCTOR_X) is in every object, and is no config key.
    if (!shape || !Object.hasOwn(shape, key)) return false;
    schema = shape[key];
  }
  return true;
}

function objectShape(schema: z.ZodType): Record<string, z.ZodType> | 'any' | undefined {
  let s = schema as z.ZodType & { def?: Record<string, unknown> };
  for (let i = 0; i < 10 && s; i++) {
    const def = (s as unknown as { def: Record<string, unknown> }).def;
    switch (def.type) {
      case 'object':
        return def.shape as Record<string, z.ZodType>;
      case 'record':
        return 'any';
      case 'optional':
      case 'default':
      case 'nullable':
      case 'readonly':
      case 'prefault':
        s = def.innerType as typeof s;
        break;
      case 'pipe':
        s = def.in as typeof s;
        break;
      default:
        return undefined;
    }
  }
  return undefined;
}

function setPath(doc: Record<string, unknown>, keyPath: string[], value: unknown): void {
  let node: Record<string, unknown> = doc;
  for (const key of keyPath.slice(0, -1)) {
    const next = node[key];
    if (typeof next !== 'object' || next === null || Array.isArray(next)) node[key] = {};
    node = node[key] as Record<string, unknown>;
  }
  node[keyPath[keyPath.length - 1]] = value;
}

function formatIssues(
  issues: z.core.$ZodIssue[],
  doc: Record<string, unknown>,
  fromEnv: Map<string, string>,
  source: string,
): string {
  const lines = issues.map((issue) => {
    const base = issue.path.map(String);
    if (issue.code === 'unrecognized_keys') {
      return issue.keys.map((k) => `unknown key "${[...base, k].join('.')}"`).join('\n  ');
    }
    const key = base.join('.') || '(top level)';
    const env = fromEnv.get(key);
    const origin = env ? ` (from ${env})` : '';
    return `${key}${origin}: ${describe(issue, getPath(doc, issue.path))}`;
  });
  // One problem fits on one line (`registry: …` at start); several are listed one a line.
  if (lines.length === 1 && !lines[0].includes('\n')) return `invalid configuration in ${source}: ${lines[0]}`;
  return `invalid configuration in ${source}:\n  ${lines.join('\n  ')}`;
}

function getPath(doc: unknown, keyPath: PropertyKey[]): unknown {
  let node = doc;
  for (const key of keyPath) {
    if (typeof node !== 'object' || node === null) return undefined;
    node = (node as Record<PropertyKey, unknown>)[key];
  }
  return node;
}

function describe(issue: z.core.$ZodIssue, value: unknown): string {
  if (issue.code === 'invalid_type') {
    if (value === undefined) return `required key is missing (expected ${issue.expected})`;
    return `expected ${issue.expected}, got ${shown(value)}`;
  }
  if (issue.code === 'invalid_value') return `must be one of ${issue.values.map((v) => JSON.stringify(v)).join(', ')}`;
  return issue.message;
}

/** A value as a message shows it: short, and never throwing (a YAML alias can make a value contain itself). */
function shown(value: unknown): string {
  let text: string | undefined;
  try {
    text = JSON.stringify(value);
  } catch {
    return 'a value that contains itself (a YAML alias to an enclosing node)';
  }
  if (text === undefined) return String(value);
  return text.length > 100 ? `${text.slice(0, 100)}…` : text;
}
