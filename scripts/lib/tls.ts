// Fetch a server's leaf certificate over TLS and judge it: days left, chain
// trusted (system roots plus an optional extra CA), name matches the SNI name.
import { X509Certificate } from 'node:crypto';
import * as tls from 'node:tls';

export interface CertInfo {
  subject: string;
  issuer: string;
  subjectAltName?: string;
  serialNumber: string;
  fingerprint256: string;
  validFrom: string;
  validTo: string;
  /** Fractional days until notAfter (negative when expired). */
  daysLeft: number;
  /** The chain verifies against the trusted roots. */
  trusted: boolean;
  trustError?: string;
  /** The certificate is valid for the name asked for. */
  nameMatches: boolean;
  nameError?: string;
}

export interface FetchCertOptions {
  /** The hostname: sent as SNI and checked against the certificate. */
  servername: string;
  /** Where to connect (default: servername). */
  host?: string;
  port: number;
  ca?: Array<string | Buffer>;
  timeoutMs?: number;
}

export function fetchCert(opts: FetchCertOptions): Promise<CertInfo> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({
      host: opts.host ?? opts.servername,
      port: opts.port,
      servername: opts.servername,
      ca: opts.ca && opts.ca.length > 0 ? [...tls.rootCertificates, ...opts.ca] : undefined,
      // Judge the certificate ourselves: an untrusted or expired one is a finding, not a crash.
      rejectUnauthorized: false,
      ALPNProtocols: ['http/1.1'],
    });
    const timer = setTimeout(() => {
      socket.destroy(Object.assign(new Error(`TLS handshake not done within ${opts.timeoutMs ?? 10_000} ms`), { code: 'ETIMEDOUT' }));
    }, opts.timeoutMs ?? 10_000);
    socket.once('secureConnect', () => {
      clearTimeout(timer);
      try {
        const peer = socket.getPeerX509Certificate();
        if (!peer) throw new Error('the server sent no certificate');
        resolve(describe(peer, opts.servername, socket.authorized, socket.authorizationError));
      } catch (err) {
        reject(err);
      } finally {
        socket.end();
        socket.destroy();
      }
    });
    socket.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

function describe(cert: X509Certificate, servername: string, authorized: boolean, authError: Error | null | undefined): CertInfo {
  const notAfter = new Date(cert.validTo);
  const nameOk = cert.checkHost(servername) !== undefined || cert.checkIP(servername) !== undefined;
  return {
    subject: (cert.subject ?? '').replace(/\n/g, ', '),
    issuer: (cert.issuer ?? '').replace(/\n/g, ', '),
    subjectAltName: cert.subjectAltName,
    serialNumber: cert.serialNumber,
    fingerprint256: cert.fingerprint256,
    validFrom: new Date(cert.validFrom).toISOString(),
    validTo: notAfter.toISOString(),
    daysLeft: (notAfter.getTime() - Date.now()) / 86_400_000,
    trusted: authorized,
    trustError: authorized ? undefined : String(authError ?? 'not trusted'),
    nameMatches: nameOk,
    nameError: nameOk ? undefined : `not valid for ${servername} (${cert.subjectAltName ?? cert.subject})`,
  };
}
