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
import { localStackBanner, startLocalStack } from './stack.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

async function main(argv: string[]): Promise<number> {
  if (argv[0] === '--help' || argv[0] === '-h') {
    process.stdout.write('usage: npm run stack:local [-- [--replicas N] stack-config.yaml]\n');
    return 0;
  }
  let replicas: number | undefined;
  const args: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = a.startsWith('--replicas=') ? a.slice('--replicas='.length) : a === '--replicas' ? argv[++i] : undefined;
    if (value === undefined) {
      args.push(a);
      continue;
    }
    if (!/^\d+$/.test(value ?? '') || Number(value) < 1 || Number(value) > 16) {
      process.stderr.write(`stack:local: --replicas takes a number from 1 to 16, got ${value}\n`);
      return 2;
    }
    replicas = Number(value);
  }
  let stackConfig: Record<string, unknown> | undefined;
  if (args[0]) {
    const { raw, encrypted } = rawFromStackFile(parseYaml(readFileSync(args[0], 'utf8')));
    if (encrypted.length) process.stderr.write(`note: encrypted keys are ignored locally: ${encrypted.join(', ')}\n`);
    stackConfig = raw;
    // Encrypted users cannot be read here: fall back to the local admin user.
    if (encrypted.some((k) => k.startsWith('users'))) delete stackConfig.users;
  }
  const port = (name: string, dflt: number) => {
    const v = process.env[name];
    return v ? Number(v) : dflt;
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
    process.stderr.write(`stack:local: ${err instanceof StackConfigError ? err.message : (err as Error).stack}\n`);
    process.exit(1);
  },
);
