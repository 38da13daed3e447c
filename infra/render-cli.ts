// `npm run render -- <dir> [stack-config.yaml]`: writes every file the stack
// deploys into <dir>, so you can read exactly what `pulumi up` will put on the
// host. The stack file is a Pulumi.<stack>.yaml (or any YAML with the same
// `config:` keys; default: infra/examples/minimal.yaml).
//
// Secrets: values encrypted in a Pulumi stack file (`secure: v1:...`) cannot be
// read here; they are replaced by placeholders and listed. The origin secret and
// admin token are generated at deploy unless set in the config; the rendered
// files then show placeholders; so do the Redis password and R2 credentials the
// program generates or creates. Hashes in htpasswd use a render-only seed (the
// deployed file's salts come from a seed kept in the Pulumi state); an htpasswd
// already in <dir> is reused where it still matches.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml, YAMLError } from 'yaml';
import { parseStackConfig, rawFromStackFile, StackConfigError } from './config.ts';
import { serverImageName } from './image.ts';
import { mirrorRulesets } from './render/cloudflare.ts';
import { renderStack } from './render/index.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** Placeholders for encrypted values, valid for each key's schema. */
const PLACEHOLDER = 'SECRET-PLACEHOLDER';

export interface RenderResult {
  written: string[];
  notes: string[];
}

export function renderToDir(dir: string, stackFile: string): RenderResult {
  const notes: string[] = [];
  const doc = parseYaml(readFileSync(stackFile, 'utf8'));
  const { raw, encrypted } = rawFromStackFile(doc);
  for (const key of encrypted) {
    const [top, ...rest] = key.split('.');
    if (top === 'alertWebhook' || top === 'sshPrivateKey' || top === 'originSecret' || top === 'adminToken') {
      delete raw[top];
    } else if (top === 'r2Credentials' && rest.length === 0) {
      // encrypted as a whole: left out, the render shows the placeholders of credentials created at deploy
    } else {
      setPath(raw, [top, ...rest], `${PLACEHOLDER}-${rest.join('-') || top}`);
    }
    notes.push(`registry-stack:${key} is encrypted: rendered with a placeholder`);
  }
  const cfg = parseStackConfig(raw, stackFile);
  const htpasswdFile = path.join(dir, 'htpasswd');
  const rendered = renderStack(
    cfg,
    {
      originSecret: cfg.originSecret ?? 'ORIGIN-SECRET-GENERATED-AT-DEPLOY',
      adminToken: cfg.adminToken ?? 'ADMIN-TOKEN-GENERATED-AT-DEPLOY',
      htpasswdSeed: `render-only:${cfg.domain}`,
      redisPassword: 'REDIS-PASSWORD-GENERATED-AT-DEPLOY',
      r2AccessKeyId: cfg.r2Credentials?.accessKeyId ?? 'R2-ACCESS-KEY-ID-CREATED-AT-DEPLOY',
      r2SecretAccessKey: cfg.r2Credentials?.secretAccessKey ?? 'R2-SECRET-ACCESS-KEY-CREATED-AT-DEPLOY',
    },
    { image: serverImageName(ROOT), previousHtpasswd: existsSync(htpasswdFile) ? readFileSync(htpasswdFile, 'utf8') : undefined },
  );
  if (!cfg.originSecret) notes.push('the origin secret is generated at deploy: Caddyfile and the transform rule get it then');
  if (!cfg.adminToken) notes.push('the admin token is generated at deploy: host/ops.env and the containers get it then');
  if (cfg.derived.redis) notes.push('the Redis password is generated at deploy: redis/redis.conf and the containers get it then');
  const usesR2 = cfg.derived.storage.private === 'r2' || cfg.derived.storage.mirror === 'r2';
  if (usesR2 && !cfg.r2Credentials) notes.push('the R2 credentials come from an API token created at deploy (r2Credentials is not set)');

  const written: string[] = [];
  const index: string[] = ['# What each file is and where `pulumi up` puts it', ''];
  for (const [name, f] of Object.entries(rendered.files)) {
    const out = path.join(dir, name);
    mkdirSync(path.dirname(out), { recursive: true });
    writeFileSync(out, f.content, { mode: f.secret ? 0o600 : f.mode === '0755' ? 0o755 : 0o644 });
    written.push(name);
    index.push(`${name.padEnd(52)} → ${f.target}${f.secret ? '   (secret)' : ''}`);
  }
  // The zone's rulesets (Cloudflare's API shape), for a zone whose own rulesets must take them in by hand.
  const rulesets = mirrorRulesets(cfg, cfg.originSecret ?? 'ORIGIN-SECRET-GENERATED-AT-DEPLOY');
  mkdirSync(path.join(dir, 'cloudflare'), { recursive: true });
  writeFileSync(path.join(dir, 'cloudflare/rulesets.json'), `${JSON.stringify(rulesets, null, 2)}\n`, { mode: 0o600 });
  written.push('cloudflare/rulesets.json');
  index.push(`${'cloudflare/rulesets.json'.padEnd(52)} → Cloudflare: the mir rulesets, one per phase   (secret: the origin header)`);
  const env = (e: Record<string, string>) => Object.keys(e).map((k) => `  ${k}=(secret)`).join('\n');
  const [privateTarget, mirrorTarget] = [rendered.files['registry/config.yml'].target, rendered.files['registry-cache/config.yml'].target];
  const containersOf = (target: string) => target.slice(0, target.indexOf(':'));
  index.push(
    '',
    'Container environment (secrets, not written to files):',
    `${containersOf(privateTarget)}:`,
    env(rendered.privateEnv),
    `${containersOf(mirrorTarget)}:`,
    env(rendered.mirrorEnv),
    ...(rendered.redisEnv ? ['redis:', env(rendered.redisEnv)] : []),
    '',
  );
  writeFileSync(path.join(dir, 'INDEX.txt'), index.join('\n'));
  written.push('INDEX.txt');
  return { written, notes };
}

function setPath(doc: Record<string, unknown>, keys: string[], value: unknown): void {
  let node = doc;
  for (const k of keys.slice(0, -1)) {
    if (typeof node[k] !== 'object' || node[k] === null) node[k] = {};
    node = node[k] as Record<string, unknown>;
  }
  node[keys[keys.length - 1]] = value;
}

function main(argv: string[]): number {
  const [dir, stackFile = path.join(ROOT, 'infra/examples/minimal.yaml')] = argv;
  if (!dir || dir === '--help' || dir === '-h') {
    process.stderr.write('usage: npm run render -- <dir> [stack-config.yaml]\n');
    return dir ? 0 : 64;
  }
  try {
    const { written, notes } = renderToDir(path.resolve(dir), stackFile);
    process.stdout.write(`rendered ${written.length} files from ${stackFile} into ${dir}:\n${written.map((w) => `  ${w}`).join('\n')}\n`);
    for (const n of notes) process.stderr.write(`note: ${n}\n`);
    return 0;
  } catch (err) {
    const message = renderFailure(err, stackFile);
    if (message === undefined) throw err;
    process.stderr.write(`render: ${message}\n`);
    return 2;
  }
}

/**
 * The one place a bad stack file becomes the line `render: …` (no stack
 * trace): a file that cannot be read, is not YAML, or fails the schema. A
 * single schema problem is put on that one line; several stay listed one a
 * line. Anything else is a bug and keeps its stack trace.
 */
function renderFailure(err: unknown, stackFile: string): string | undefined {
  if (err instanceof StackConfigError) {
    const lines = err.message.split('\n');
    return lines.length === 2 ? `${lines[0]} ${lines[1].trim()}` : err.message;
  }
  const e = err as NodeJS.ErrnoException;
  if (e?.syscall === 'open' && e.code) {
    return `cannot read the stack file ${stackFile}: ${e.message.replace(new RegExp(`^${e.code}: `), '').replace(/, open '.*'$/, '')} (${e.code})`;
  }
  // The YAML parser's message ends in a code frame over several lines: the first says where.
  if (e instanceof YAMLError) return `${stackFile} is not valid YAML: ${e.message.split('\n')[0]}`;
  return undefined;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  process.exitCode = main(process.argv.slice(2));
}
