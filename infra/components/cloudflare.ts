// Cloudflare: the two DNS records, the mirror's cache, WAF, transform and
// configuration rules, and an optional R2 bucket.
import * as cloudflare from '@pulumi/cloudflare';
import * as pulumi from '@pulumi/pulumi';
import { isZoneId, type StackConfig } from '../config.ts';
import { cacheRules, originHeaderRule, strictTlsRule, wafRules } from '../render/cloudflare.ts';

export interface CloudflareEdgeArgs {
  config: StackConfig;
  originSecret: pulumi.Input<string>;
}

export class CloudflareEdge extends pulumi.ComponentResource {
  readonly zoneId: pulumi.Output<string>;
  readonly records: cloudflare.DnsRecord[] = [];
  readonly rulesets: cloudflare.Ruleset[] = [];
  readonly r2Bucket?: cloudflare.R2Bucket;

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
    // A private mirror's responses must not be cached by a shared CDN.
    if (cfg.cloudflare.cacheRules && !cfg.mirror.requireAuth) {
      ruleset('cache', 'http_request_cache_settings', 'registry-stack: cache the mirror', cacheRules(cfg));
    }
    if (cfg.cloudflare.waf) {
      ruleset('waf', 'http_request_firewall_custom', 'registry-stack: the mirror is read-only', wafRules(cfg));
    }
    ruleset('origin-header', 'http_request_late_transform', 'registry-stack: origin-check header for the mirror', [
      originHeaderRule(cfg, pulumi.secret(args.originSecret)),
    ]);
    if (cfg.cloudflare.strictTls) {
      ruleset('config', 'http_config_settings', 'registry-stack: Full (strict) TLS to the mirror origin', [strictTlsRule(cfg)]);
    }

    if (cfg.cloudflare.r2) {
      const r2 = cfg.cloudflare.r2;
      this.r2Bucket = new cloudflare.R2Bucket(
        `${name}-r2`,
        { accountId: r2.accountId, name: r2.bucket, ...(r2.location ? { location: r2.location } : {}) },
        { ...child, protect: true },
      );
    }
    this.registerOutputs({ zoneId: this.zoneId });
  }
}
