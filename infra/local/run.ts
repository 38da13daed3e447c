// `npm run stack:local [-- stack-config.yaml]`: the whole stack on this
// machine (Caddy with `tls internal` on high ports, the private registry and
// the mirror on loopback), from the same renderers as `pulumi up`.
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
    process.stdout.write('usage: npm run stack:local [-- stack-config.yaml]\n');
    return 0;
  }
  let stackConfig: Record<string, unknown> | undefined;
  if (argv[0]) {
    const { raw, encrypted } = rawFromStackFile(parseYaml(readFileSync(argv[0], 'utf8')));
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
