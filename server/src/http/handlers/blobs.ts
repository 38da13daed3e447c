// GET/HEAD/DELETE /v2/<name>/blobs/<digest>
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { parseDigest } from '../../registry/digest.ts';
import { type RequestContext, parseRangeHeader } from '../context.ts';

export async function getBlob(ctx: RequestContext, name: string, reference: string): Promise<void> {
  const { req, res, service } = ctx;
  const digest = parseDigest(reference);
  const handle = req.method === 'HEAD' ? undefined : await service.getBlob(name, digest);
  const info = handle?.info ?? (await service.statBlob(name, digest));
  if (handle?.cache) ctx.access.cache = handle.cache;
  const etag = `"${digest.value}"`;
  const headers: Record<string, string | number> = {
    'Docker-Content-Digest': digest.value,
    'Accept-Ranges': 'bytes',
    'Content-Type': 'application/octet-stream',
    ETag: etag,
  };
  if (ctx.cacheControl.immutable) headers['Cache-Control'] = ctx.cacheControl.immutable;
  if (req.headers['if-none-match'] === etag) {
    res.writeHead(304, headers).end();
    return;
  }
  if (handle?.redirect) {
    // storage.redirect: the client fetches the bytes (and any Range) from the storage itself. The URL
    // expires, so neither a CDN nor the client may keep this answer.
    const location = await handle.redirect();
    res.writeHead(307, { 'Docker-Content-Digest': digest.value, Location: location, 'Cache-Control': 'no-store', 'Content-Length': 0 }).end();
    return;
  }
  const wanted = parseRangeHeader(req.headers.range, info.size);
  if (wanted.kind === 'unsatisfiable') {
    res.writeHead(416, { ...headers, 'Content-Range': `bytes */${info.size}`, 'Content-Length': 0 }).end();
    return;
  }
  const range = wanted.kind === 'partial' ? wanted.range : undefined;
  const length = range ? range.end - range.start + 1 : info.size;
  if (range) headers['Content-Range'] = `bytes ${range.start}-${range.end}/${info.size}`;
  headers['Content-Length'] = length;
  if (!handle) {
    res.writeHead(range ? 206 : 200, headers).end();
    return;
  }
  // Open before the headers go out, so that a blob gone from storage is still a clean 404.
  const send = handle.sender ? await handle.sender(range) : undefined;
  const stream = send ? undefined : await handle.open(range);
  res.writeHead(range ? 206 : 200, headers);
  ctx.access.bytesOut = length;
  try {
    if (send) {
      await send(res);
      res.end();
    } else {
      await pipeline(stream as Readable, res);
    }
  } catch {
    // The client went away mid-download; nothing to answer.
    res.destroy();
  }
}

export async function deleteBlob(ctx: RequestContext, name: string, reference: string): Promise<void> {
  await ctx.service.deleteBlob(name, parseDigest(reference));
  ctx.res.writeHead(202, { 'Content-Length': 0 }).end();
}
