// Runs the Pulumi program against Pulumi's mock monitor (no CLI, no provider
// plugins) and records every resource registration and invoke, with its
// inputs exactly as the engine would receive them (secrets still wrapped).
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as pulumi from '@pulumi/pulumi';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

/** The wire marker of a secret value (Pulumi's "4dabf181..." signature). */
const SECRET_SIG = '4dabf18193072939515e22adb298388d';
const SECRET_VALUE = '1b47061264138c4ac30d75fd1eb44270';

export interface Registered {
  type: string;
  name: string;
  /** Inputs with secrets unwrapped. */
  inputs: Record<string, any>;
  /** Inputs as sent, secrets wrapped as {SECRET_SIG: ..., value}. */
  raw: Record<string, any>;
  provider?: string;
}

export interface ProgramRun {
  resources: Registered[];
  invokes: Array<{ token: string; inputs: Record<string, any> }>;
  outputs: Record<string, unknown>;
  /** The stack outputs that are Pulumi secrets. */
  secretOutputs: string[];
  error?: Error;
  byName(name: string): Registered;
  ofType(type: string): Registered[];
}

export function isSecretValue(v: unknown): boolean {
  return typeof v === 'object' && v !== null && (v as Record<string, unknown>)[SECRET_SIG] === SECRET_VALUE;
}

export function unwrap(v: any): any {
  if (isSecretValue(v)) return unwrap(v.value);
  if (Array.isArray(v)) return v.map(unwrap);
  if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, unwrap(x)]));
  return v;
}

/** Resolves Outputs (recursively) to plain values, as a stack's outputs would be. */
export async function resolveOutputs(v: unknown): Promise<unknown> {
  if (pulumi.Output.isInstance(v)) return resolveOutputs(await new Promise((r) => (v as pulumi.Output<unknown>).apply(r)));
  if (Array.isArray(v)) return Promise.all(v.map(resolveOutputs));
  if (v && typeof v === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v)) out[k] = await resolveOutputs(x);
    return out;
  }
  return v;
}

/** What the remote command that makes robot `name` "prints": its secret. */
export const robotSecret = (name: string) => `robot-secret-of-${name}-0123456789abcdefghijklmnop`;

/** The generated secrets the local commands "print" (the same on every run, as from the Pulumi state). */
export const GENERATED = { origin: 'o'.repeat(64), admin: 'a'.repeat(64), seed: 's'.repeat(64), redis: 'r'.repeat(64) };

/**
 * The test VPS's SSH host key, a line of `ssh-keyscan -t ed25519 203.0.113.10`
 * (a real ed25519 public key): the program requires vps.hostKey or a known_hosts entry.
 */
export const HOST_KEY = '203.0.113.10 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEU4eJLE2MLOpMRq8EdYdQC+gzayr9/g1SEJPRmn54ev';

/** What the tls provider and Cloudflare's Origin CA "return" for mir's key and certificate (PEM). */
export const MIR_ORIGIN = {
  key: '-----BEGIN PRIVATE KEY-----\nmir-origin-key\n-----END PRIVATE KEY-----\n',
  cert: '-----BEGIN CERTIFICATE-----\nmir-origin-cert\n-----END CERTIFICATE-----\n',
};

/** The value Cloudflare "returns" for an account API token the program creates. */
export const TOKEN_VALUE = 'cf-token-value-0123456789abcdefghijklmnopqrstuv';

/** Permission groups the mocked Cloudflare account lists. */
export const PERMISSION_GROUPS = [
  { id: 'pg-dns-edit', name: 'DNS Write', category: 'dns_and_zones', isSelectable: true },
  { id: 'pg-r2-read', name: 'Workers R2 Storage Bucket Item Read', category: 'developer_platform', isSelectable: true },
  { id: 'pg-r2-write', name: 'Workers R2 Storage Bucket Item Write', category: 'developer_platform', isSelectable: true },
];

/**
 * Sets `config` (keys without the `registry-stack:` prefix; objects as JSON,
 * as `pulumi config set --path` stores them) and runs the program the way
 * infra/index.ts does.
 */
export async function runProgram(
  config: Record<string, unknown>,
  opts: { secretKeys?: string[]; imageName?: string } = {},
): Promise<ProgramRun> {
  const resources: Registered[] = [];
  const invokes: ProgramRun['invokes'] = [];
  await pulumi.runtime.setMocks(
    {
      newResource(args) {
        resources.push({ type: args.type, name: args.name, inputs: unwrap(args.inputs), raw: args.inputs, provider: args.provider });
        const state: Record<string, unknown> = { ...args.inputs };
        if (args.type === 'command:local:Command') state.stdout = JSON.stringify(GENERATED);
        // A robot's command prints its secret (render/robots.ts).
        if (args.type === 'command:remote:Command' && args.name.startsWith('robots-')) state.stdout = `${robotSecret(args.name.slice('robots-'.length))}\n`;
        if (args.type === 'docker:index/remoteImage:RemoteImage') state.imageId = `sha256:${args.inputs.name.startsWith('redis') ? 'd' : 'c'}${'c'.repeat(63)}`;
        if (args.type === 'cloudflare:index/accountToken:AccountToken') state.value = TOKEN_VALUE;
        if (args.type === 'tls:index/privateKey:PrivateKey') state.privateKeyPem = MIR_ORIGIN.key;
        if (args.type === 'tls:index/certRequest:CertRequest') state.certRequestPem = '-----BEGIN CERTIFICATE REQUEST-----\nmir-origin-csr\n-----END CERTIFICATE REQUEST-----\n';
        if (args.type === 'cloudflare:index/originCaCertificate:OriginCaCertificate') state.certificate = MIR_ORIGIN.cert;
        return { id: `${args.name}-id`, state };
      },
      call(args) {
        invokes.push({ token: args.token, inputs: args.inputs });
        if (args.token === 'cloudflare:index/getZone:getZone') return { id: 'f'.repeat(32), name: args.inputs.filter?.name };
        if (args.token === 'cloudflare:index/getAccountApiTokenPermissionGroupsList:getAccountApiTokenPermissionGroupsList') {
          return { accountId: args.inputs.accountId, results: PERMISSION_GROUPS };
        }
        return {};
      },
    },
    'registry-stack',
    'test',
    false,
  );
  const flat: Record<string, string> = {};
  for (const [k, v] of Object.entries(config)) flat[`registry-stack:${k}`] = typeof v === 'string' ? v : JSON.stringify(v);
  pulumi.runtime.setAllConfig(flat, (opts.secretKeys ?? []).map((k) => `registry-stack:${k}`));

  const { program } = await import('../../infra/stack.ts');
  let outputs: Record<string, unknown> = {};
  const secretOutputs: string[] = [];
  let error: Error | undefined;
  try {
    const result = program({ root: ROOT, imageName: opts.imageName });
    for (const [k, v] of Object.entries(result)) if (pulumi.Output.isInstance(v) && (await pulumi.isSecret(v))) secretOutputs.push(k);
    outputs = (await resolveOutputs(result)) as Record<string, unknown>;
  } catch (err) {
    error = err as Error;
  }
  // Let every registration reach the mock monitor.
  await (pulumi.runtime as unknown as { waitForRPCs(): Promise<void> }).waitForRPCs();
  return {
    resources,
    invokes,
    outputs,
    secretOutputs,
    error,
    byName(name) {
      const r = resources.find((x) => x.name === name);
      if (!r) throw new Error(`no resource named ${name}; have ${resources.map((x) => x.name).join(', ')}`);
      return r;
    },
    ofType(type) {
      return resources.filter((x) => x.type === type);
    },
  };
}
