// Cloudflare: the two DNS records, the mirror's cache, WAF, transform and
// configuration rules, mir's Origin CA certificate, and an optional R2 bucket.
//
// mir's certificate. mir is proxied: Cloudflare is its only client, and with
// Full (strict) Cloudflare wants a certificate it trusts. ACME cannot get one
// there (TLS-ALPN-01 does not pass the proxy, the WAF blocks HTTP-01), so the
// program asks Cloudflare's Origin CA: a P-256 key made here (kept, secret, in
// the state), a CSR for the mir host, and a 15-year certificate, all before
// Caddy starts, so the first deploy works. Needs "SSL and Certificates: Edit"
// on the zone. cloudflare.originCertGeneration > 1 gives the key, the CSR and
// the certificate new resource names: `pulumi up` creates the new ones, updates
// what uses them, and only then deletes (revokes) the old certificate.
//
// When a registry stores in R2 and no r2Credentials are configured, an account
// API token scoped to the bucket (object read and write, nothing else) is
// created, and its S3 credentials derived as R2 documents it: the Access Key ID
// is the token's id, the Secret Access Key the SHA-256 (hex) of its value. That
// needs the provider's API token to hold "Account API Tokens Write".
import { createHash } from 'node:crypto';
import * as cloudflare from '@pulumi/cloudflare';
import * as pulumi from '@pulumi/pulumi';
import * as tls from '@pulumi/tls';
import { isZoneId, type StackConfig } from '../config.ts';
import { mirrorRulesets } from '../render/cloudflare.ts';

export interface CloudflareEdgeArgs {
  config: StackConfig;
  originSecret: pulumi.Input<string>;
}

/** The permission groups of an R2 bucket token (object read and write). */
export const R2_TOKEN_PERMISSION_GROUPS = ['Workers R2 Storage Bucket Item Read', 'Workers R2 Storage Bucket Item Write'] as const;

/** The resource key that scopes a token to one bucket. */
export function r2BucketResource(accountId: string, bucket: string, jurisdiction = 'default'): string {
  return `com.cloudflare.edge.r2.bucket.${accountId}_${jurisdiction}_${bucket}`;
}

/** R2's S3 Secret Access Key for an API token: the SHA-256 of its value, in hex. */
export function r2SecretAccessKey(tokenValue: string): string {
  return createHash('sha256').update(tokenValue).digest('hex');
}

/** The Origin CA's longest validity (days), and the signature type that matches a P-256 key. */
export const ORIGIN_CA_VALIDITY_DAYS = 5475;
export const ORIGIN_CA_REQUEST_TYPE = 'origin-ecc';

/** mir's certificate (PEM) and its private key (PEM, a secret). */
export interface OriginCert {
  certificate: pulumi.Output<string>;
  privateKey: pulumi.Output<string>;
}

/** Resource-name suffix of a certificate generation: none for the first, so a stack's first certificate keeps its name. */
export function originCertSuffix(generation: number): string {
  return generation > 1 ? `-g${generation}` : '';
}

export interface R2Credentials {
  accessKeyId: pulumi.Output<string>;
  secretAccessKey: pulumi.Output<string>;
}

export class CloudflareEdge extends pulumi.ComponentResource {
  readonly zoneId: pulumi.Output<string>;
  readonly records: cloudflare.DnsRecord[] = [];
  readonly rulesets: cloudflare.Ruleset[] = [];
  readonly r2Bucket?: cloudflare.R2Bucket;
  /** The token created for the registries' R2 access (when none is configured). */
  readonly r2Token?: cloudflare.AccountToken;
  /** S3 credentials of the bucket (secrets), when a registry stores in R2. */
  readonly r2Credentials?: R2Credentials;
  readonly mirOriginKey: tls.PrivateKey;
  readonly mirOriginCsr: tls.CertRequest;
  readonly mirOriginCa: cloudflare.OriginCaCertificate;
  /** What Caddy serves on mir: CADDY_ORIGIN_CERT.cert and .key in its container. */
  readonly mirOriginCert: OriginCert;

  constructor(name: string, args: CloudflareEdgeArgs, opts?: pulumi.ComponentResourceOptions) {
    super('registry-stack:index:CloudflareEdge', name, {}, opts);
    const cfg = args.config;
    const child = { parent: this };
    const zone = cfg.derived.zone;
    this.zoneId = isZoneId(zone) ? pulumi.output(zone) : cloudflare.getZoneOutput({ filter: { name: zone } }, child).apply((z) => z.id);

    const record = (rname: string, host: string, type: 'A' | 'AAAA', content: string, proxied: boolean, comment: string) =>
      new cloudflare.DnsRecord(
        `${name}-${rname}`,
        { zoneId: this.zoneId, name: host, type, content, proxied, ttl: proxied ? 1 : cfg.cloudflare.dnsTtl, comment },
        child,
      );
    // Record comments are capped at 100 characters on the free plan.
    const dcrNote = 'registry-stack: private registry; DNS only so pushes bypass the proxy body cap';
    const mirNote = 'registry-stack: pull-through mirror, proxied and cached by Cloudflare';
    this.records.push(record('dcr-a', cfg.derived.dcrHost, 'A', cfg.derived.publicIp, false, dcrNote));
    this.records.push(record('mir-a', cfg.derived.mirHost, 'A', cfg.derived.publicIp, true, mirNote));
    if (cfg.vps.publicIpv6) {
      this.records.push(record('dcr-aaaa', cfg.derived.dcrHost, 'AAAA', cfg.vps.publicIpv6, false, dcrNote));
      this.records.push(record('mir-aaaa', cfg.derived.mirHost, 'AAAA', cfg.vps.publicIpv6, true, mirNote));
    }

    const ruleset = (rname: string, phase: string, description: string, rules: pulumi.Input<cloudflare.types.input.RulesetRule>[]) =>
      this.rulesets.push(
        new cloudflare.Ruleset(
          `${name}-${rname}`,
          { zoneId: this.zoneId, kind: 'zone', phase, name: `registry-stack ${rname}`, description, rules },
          child,
        ),
      );
    for (const r of mirrorRulesets(cfg, pulumi.secret(args.originSecret))) ruleset(r.key, r.phase, r.description, r.rules);

    const gen = originCertSuffix(cfg.cloudflare.originCertGeneration);
    const mirHost = cfg.derived.mirHost;
    this.mirOriginKey = new tls.PrivateKey(`${name}-mir-origin-key${gen}`, { algorithm: 'ECDSA', ecdsaCurve: 'P256' }, child);
    this.mirOriginCsr = new tls.CertRequest(
      `${name}-mir-origin-csr${gen}`,
      { privateKeyPem: this.mirOriginKey.privateKeyPem, subject: { commonName: mirHost }, dnsNames: [mirHost] },
      child,
    );
    this.mirOriginCa = new cloudflare.OriginCaCertificate(
      `${name}-mir-origin-cert${gen}`,
      { csr: this.mirOriginCsr.certRequestPem, hostnames: [mirHost], requestType: ORIGIN_CA_REQUEST_TYPE, requestedValidity: ORIGIN_CA_VALIDITY_DAYS },
      // The API cannot change an issued certificate: any change is a new one.
      { ...child, replaceOnChanges: ['csr', 'hostnames', 'requestType', 'requestedValidity'] },
    );
    this.mirOriginCert = {
      certificate: this.mirOriginCa.certificate,
      privateKey: pulumi.secret(this.mirOriginKey.privateKeyPem),
    };

    if (cfg.cloudflare.r2) {
      const r2 = cfg.cloudflare.r2;
      this.r2Bucket = new cloudflare.R2Bucket(
        `${name}-r2`,
        {
          accountId: r2.accountId,
          name: r2.bucket,
          ...(r2.location ? { location: r2.location } : {}),
          ...(r2.jurisdiction && r2.jurisdiction !== 'default' ? { jurisdiction: r2.jurisdiction } : {}),
        },
        { ...child, protect: true },
      );
      const usesR2 = cfg.derived.storage.private === 'r2' || cfg.derived.storage.mirror === 'r2';
      if (usesR2 && cfg.r2Credentials) {
        this.r2Credentials = {
          accessKeyId: pulumi.secret(cfg.r2Credentials.accessKeyId),
          secretAccessKey: pulumi.secret(cfg.r2Credentials.secretAccessKey),
        };
      } else if (usesR2) {
        const groups = cloudflare.getAccountApiTokenPermissionGroupsListOutput({ accountId: r2.accountId }, child).apply((list) =>
          R2_TOKEN_PERMISSION_GROUPS.map((wanted) => {
            const g = (list.results ?? []).find((x) => x.name === wanted);
            if (!g) {
              throw new Error(
                `Cloudflare has no permission group "${wanted}" for account ${r2.accountId}: ` +
                  'create an R2 API token by hand and set r2Credentials (accessKeyId, secretAccessKey)',
              );
            }
            return { id: g.id };
          }),
        );
        this.r2Token = new cloudflare.AccountToken(
          `${name}-r2-token`,
          {
            accountId: r2.accountId,
            name: `registry-stack ${cfg.domain} R2 ${r2.bucket}`,
            policies: [
              {
                effect: 'allow',
                permissionGroups: groups,
                resources: this.r2Bucket.name.apply((bucket) => JSON.stringify({ [r2BucketResource(r2.accountId, bucket, r2.jurisdiction)]: '*' })),
              },
            ],
          },
          child,
        );
        this.r2Credentials = {
          accessKeyId: pulumi.secret(this.r2Token.id),
          secretAccessKey: pulumi.secret(this.r2Token.value.apply(r2SecretAccessKey)),
        };
      }
    }
    this.registerOutputs({ zoneId: this.zoneId, mirOriginCertExpiresOn: this.mirOriginCa.expiresOn });
  }
}
