// GET/HEAD/PUT/DELETE /v2/<name>/manifests/<reference>
import { looksLikeDigest } from '../../registry/digest.ts';
import { RegistryError } from '../../registry/errors.ts';
import { MAX_MANIFEST_BYTES } from '../../registry/manifest.ts';
import { type RequestContext, readBody } from '../context.ts';

export async function getManifest(ctx: RequestContext, name: string, reference: string): Promise<void> {
  const { req, res, service } = ctx;
  const manifest = await service.getManifest(name, reference, req.headers.accept);
  if (manifest.cache) ctx.access.cache = manifest.cache;
  const etag = `"${manifest.digest.value}"`;
  const headers: Record<string, string | number> = {
    'Content-Type': manifest.mediaType,
    'Docker-Content-Digest': manifest.digest.value,
    'Content-Length': manifest.body.length,
    ETag: etag,
  };
  const cacheControl = looksLikeDigest(reference) ? ctx.cacheControl.immutable : ctx.cacheControl.tag;
  if (cacheControl) headers['Cache-Control'] = cacheControl;
  if (req.headers['if-none-match'] === etag) {
    // No body follows a 304, so no Content-Length either (as for blobs): strict
    // clients such as undici otherwise wait for, then fail on, the missing bytes.
    const { 'Content-Length': _omitted, ...notModified } = headers;
    res.writeHead(304, notModified).end();
    return;
  }
  res.writeHead(200, headers);
  ctx.access.bytesOut = manifest.body.length;
  res.end(req.method === 'HEAD' ? undefined : manifest.body);
}

export async function putManifest(ctx: RequestContext, name: string, reference: string): Promise<void> {
  const { req, res, service } = ctx;
  const body = await readBody(
    req,
    MAX_MANIFEST_BYTES,
    () => new RegistryError('MANIFEST_TOO_LARGE', `manifest is larger than ${MAX_MANIFEST_BYTES} bytes`),
  );
  ctx.access.bytesIn = body.length;
  const result = await service.putManifest(name, reference, req.headers['content-type'], body);
  const headers: Record<string, string | number> = {
    Location: ctx.url(`/v2/${name}/manifests/${result.digest.value}`),
    'Docker-Content-Digest': result.digest.value,
    'Content-Length': 0,
  };
  if (result.subject) headers['OCI-Subject'] = result.subject.value;
  res.writeHead(201, headers).end();
}

export async function deleteManifest(ctx: RequestContext, name: string, reference: string): Promise<void> {
  await ctx.service.deleteManifest(name, reference);
  ctx.res.writeHead(202, { 'Content-Length': 0 }).end();
}
