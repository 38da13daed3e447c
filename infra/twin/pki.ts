// The twin's certificate authorities, made with the openssl CLI:
//   - the "web PKI": stands in for the public CAs that browsers and Docker
//     trust; it signs the edge's certificate for mir (Cloudflare's edge
//     certificate) and pebble's own HTTPS certificate;
//   - the "Cloudflare Origin CA": signs the CSR for mir's origin certificate,
//     as Cloudflare's Origin CA does for the OriginCaCertificate resource; the
//     edge twin trusts it, and only it, for Full (strict) to mir.
// dcr's certificate comes from pebble over ACME, as production's comes from
// Let's Encrypt.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';

export interface CertFiles {
  cert: string;
  key: string;
}

function openssl(args: string[], input?: string): string {
  return execFileSync('openssl', args, { input, stdio: ['pipe', 'pipe', 'pipe'] }).toString();
}

/** A self-signed CA in dir (kept: a second `up` reuses it, so clients keep trusting it). */
export function ensureCa(dir: string, commonName: string): CertFiles {
  mkdirSync(dir, { recursive: true });
  const files = { cert: path.join(dir, 'ca.crt'), key: path.join(dir, 'ca.key') };
  if (existsSync(files.cert) && existsSync(files.key)) return files;
  openssl(['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', files.key]);
  openssl([
    'req', '-x509', '-new', '-key', files.key, '-out', files.cert, '-days', '3650', '-subj', `/CN=${commonName}`,
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
  ]);
  return files;
}

/** A private key and a CSR for `host`, as @pulumi/tls makes them for the origin certificate. */
export function keyAndCsr(dir: string, name: string, host: string): { key: string; csr: string } {
  mkdirSync(dir, { recursive: true });
  const key = path.join(dir, `${name}.key`);
  const csr = path.join(dir, `${name}.csr`);
  if (!existsSync(key)) openssl(['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', key]);
  openssl(['req', '-new', '-key', key, '-out', csr, '-subj', `/CN=${host}`, '-addext', `subjectAltName=DNS:${host}`]);
  return { key, csr };
}

/** Signs a server certificate for `hosts` with `ca`; reuses a still-valid one with the same names. */
export function ensureServerCert(ca: CertFiles, dir: string, name: string, hosts: string[], days = 825): CertFiles {
  const { key, csr } = keyAndCsr(dir, name, hosts[0]);
  const cert = path.join(dir, `${name}.crt`);
  const san = hosts.map((h) => `DNS:${h}`).join(',');
  if (existsSync(cert) && readFileSync(`${cert}.san`, 'utf8') === san) return { cert, key };
  const ext = path.join(dir, `${name}.ext`);
  writeFileSync(ext, `subjectAltName=${san}\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n`);
  openssl(['x509', '-req', '-in', csr, '-CA', ca.cert, '-CAkey', ca.key, '-CAcreateserial', '-out', cert, '-days', String(days), '-extfile', ext]);
  writeFileSync(`${cert}.san`, san);
  return { cert, key };
}

/** The certificates of a PEM bundle, one PEM block each. */
export function pemBlocks(bundle: string): string[] {
  return bundle.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
}
