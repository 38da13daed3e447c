// `npm run stack:local [-- [--replicas N] stack-config.yaml]`: the whole stack on this
// machine (Caddy with `tls internal` on high ports, the private registry and
// the mirror on loopback), from the same renderers as `pulumi up`. With
// --replicas N, N processes of each registry behind Caddy's load balancer,
// sharing their data directory and a local redis-server.
// STACK_LOCAL_DIR (default .tmp/stack-local), STACK_LOCAL_HTTPS_PORT (8443)
// and STACK_LOCAL_HTTP_PORT (8080) choose where and on which ports.
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml } from 'yaml';
import { rawFromStackFile, StackConfigError } from '../config.ts';
import { LocalStackError, localStackBanner, startLocalStack } from './stack.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

async function main(argv: string[]): Promise<number> {
  if (argv[0] === '--help' || argv[0] === '-h') {
    process.stdout.write(
      [
        'usage: npm run stack:local [-- [--replicas N] stack-config.yaml]',
        '',
        'The whole stack on this machine, on loopback: Caddy (its own CA) in front of the private registry and the mirror.',
        'Environment:',
        '  STACK_LOCAL_DIR         state, data and logs (default .tmp/stack-local)',
        '  STACK_LOCAL_HTTPS_PORT  Caddy\'s HTTPS port on 127.0.0.1 (default 8443)',
        '  STACK_LOCAL_HTTP_PORT   Caddy\'s HTTP port on 127.0.0.1 (default 8080)',
        'Exit codes: 0 stopped by Ctrl-C or SIGTERM; 1 a process of the stack failed; 2 bad usage (a value, a port in use, the stack file)',
        '',
      ].join('\n'),
    );
    return 0;
  }
  let replicas: number | undefined;
  const args: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = a.startsWith('--replicas=') ? a.slice('--replicas='.length) : a === '--replicas' ? argv[++i] : undefined;
    if (value === undefined) {
      if (a.startsWith('-')) throw new LocalStackError(`unknown option ${a} (see --help)`);
      args.push(a);
      continue;
    }
    if (!/^\d+$/.test(value ?? '') || Number(value) < 1 || Number(value) > 16) {
      process.stderr.write(`stack:local: --replicas takes a number from 1 to 16, got ${value}\n`);
      return 2;
    }
    replicas = Number(value);
  }
  if (args.length > 1) throw new LocalStackError(`one stack config file at most, got ${args.length}: ${args.join(' ')}`);
  let stackConfig: Record<string, unknown> | undefined;
  if (args[0]) {
    let text: string;
    try {
      text = readFileSync(args[0], 'utf8');
    } catch (err) {
      throw new LocalStackError(`cannot read the stack config ${args[0]}: ${(err as Error).message}`);
    }
    let doc: unknown;
    try {
      doc = parseYaml(text);
    } catch (err) {
      throw new LocalStackError(`${args[0]} is not valid YAML: ${(err as Error).message.split('\n')[0]}`);
    }
    const { raw, encrypted } = rawFromStackFile(doc);
    if (encrypted.length) process.stderr.write(`note: encrypted keys are ignored locally: ${encrypted.join(', ')}\n`);
    stackConfig = raw;
    // Encrypted users cannot be read here: fall back to the local admin user.
    if (encrypted.some((k) => k.startsWith('users'))) delete stackConfig.users;
  }
  const port = (name: string, dflt: number) => {
    const v = process.env[name];
    if (v === undefined || v === '') return dflt;
    // Number('abc') is NaN, which would be written into the Caddyfile as it is.
    if (!/^\d{1,5}$/.test(v.trim()) || Number(v) < 1 || Number(v) > 65535) {
      throw new LocalStackError(`${name} must be a port number from 1 to 65535, got ${JSON.stringify(v)}`);
    }
    return Number(v);
  };
  const stack = await startLocalStack({
    dir: process.env.STACK_LOCAL_DIR ?? path.join(ROOT, '.tmp', 'stack-local'),
    httpsPort: port('STACK_LOCAL_HTTPS_PORT', 8443),
    httpPort: port('STACK_LOCAL_HTTP_PORT', 8080),
    stackConfig,
    replicas,
  });
  process.stdout.write(localStackBanner(stack));
  const reason = await new Promise<string | undefined>((resolve) => {
    process.once('SIGINT', () => resolve(undefined));
    process.once('SIGTERM', () => resolve(undefined));
    void stack.exited.then(resolve);
  });
  await stack.stop();
  if (reason) {
    process.stderr.write(`stack:local: ${reason}; stopped the rest\n`);
    return 1;
  }
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err) => {
    // What the user asked for is wrong (a value, a busy port, the stack file): one line, exit 2.
    if (err instanceof StackConfigError || err instanceof LocalStackError) {
      process.stderr.write(`stack:local: ${err.message.replace(/\s*\n\s*/g, '; ')}\n`);
      process.exit(2);
    }
    process.stderr.write(`stack:local: ${(err as Error).stack}\n`);
    process.exit(1);
  },
);
