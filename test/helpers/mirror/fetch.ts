// Blob reads for mirror tests that must tell "an error" from "wrong bytes":
// the body is hashed as it streams, and a connection the server cuts off is
// reported, not thrown.
import { createHash } from 'node:crypto';
import { request } from 'undici';
import { requestFollowing } from '../client.ts';

export interface BlobRead {
  status: number;
  /** sha256 of the bytes received (complete or not). */
  digest: string;
  size: number;
  /** Set when the request or the body stream failed. */
  error?: string;
}

export async function readBlob(
  baseUrl: string,
  repo: string,
  digest: string,
  auth?: string,
  /** Called when the response status and headers arrived (before the body). */
  onHeaders?: (status: number) => void,
): Promise<BlobRead> {
  const hash = createHash('sha256');
  let size = 0;
  let status = 0;
  try {
    // Follows storage.redirect (a mirror on S3 sends cached blobs to presigned bucket URLs).
    const res = await requestFollowing(`${baseUrl}/v2/${repo}/blobs/${digest}`, {
      headers: auth ? { authorization: auth } : {},
      headersTimeout: 60_000,
      bodyTimeout: 60_000,
    });
    status = res.statusCode;
    onHeaders?.(status);
    for await (const chunk of res.body) {
      hash.update(chunk as Buffer);
      size += (chunk as Buffer).length;
    }
  } catch (err) {
    return { status, digest: `sha256:${hash.digest('hex')}`, size, error: (err as Error).message || String(err) };
  }
  return { status, digest: `sha256:${hash.digest('hex')}`, size };
}

/**
 * Starts a blob GET, reads at least `bytes` bytes of the body, then drops the
 * connection (a client that goes away mid-download). Resolves with how many
 * bytes arrived.
 */
export async function readBlobThenDisconnect(baseUrl: string, repo: string, digest: string, bytes: number): Promise<number> {
  const res = await request(`${baseUrl}/v2/${repo}/blobs/${digest}`, { headersTimeout: 60_000, bodyTimeout: 60_000 });
  if (res.statusCode !== 200) {
    await res.body.dump();
    throw new Error(`GET blob ${digest}: ${res.statusCode}`);
  }
  let got = 0;
  for await (const chunk of res.body) {
    got += (chunk as Buffer).length;
    if (got >= bytes) break;
  }
  // Leaving the loop early destroys the body, which aborts the request and closes its socket.
  res.body.destroy();
  return got;
}
