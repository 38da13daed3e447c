// Blob uploads: POST (start, monolithic, mount), PATCH (chunk or stream),
// PUT (finish), GET (status), DELETE (cancel).
import type { Digest } from '../../registry/digest.ts';
import { parseDigest } from '../../registry/digest.ts';
import { RegistryError } from '../../registry/errors.ts';
import type { UploadStatus } from '../../registry/types.ts';
import { contentLength, hasBody, parseContentRange, type RequestContext, uploadRange } from '../context.ts';

export async function postUpload(ctx: RequestContext, name: string): Promise<void> {
  const { req, query, service } = ctx;
  const mount = query.get('mount');
  const from = query.get('from');
  if (mount !== null && from !== null) {
    const digest = parseDigest(mount);
    const mounted = await service.mountBlob(name, from, digest);
    if (mounted) return created(ctx, name, digest);
  }

  const digestParam = query.get('digest');
  if (digestParam !== null) {
    // Monolithic upload: the whole blob in the POST body.
    const digest = parseDigest(digestParam);
    const length = contentLength(req);
    const upload = await service.startUpload(name);
    try {
      await service.finishUpload(name, upload.id, digest, req, { contentLength: length, freeChunks: true });
    } catch (err) {
      await service.cancelUpload(name, upload.id).catch(() => {});
      throw err;
    }
    ctx.access.bytesIn = length;
    return created(ctx, name, digest);
  }

  const upload = await service.startUpload(name);
  accepted(ctx, upload);
}

export async function patchUpload(ctx: RequestContext, name: string, id: string): Promise<void> {
  const { req, service } = ctx;
  const range = parseContentRange(req.headers['content-range']);
  const length = contentLength(req);
  const status = await service.appendUpload(name, id, req, { range, contentLength: length, freeChunks: true });
  ctx.access.bytesIn = length;
  accepted(ctx, status);
}

export async function putUpload(ctx: RequestContext, name: string, id: string): Promise<void> {
  const { req, query, service } = ctx;
  const digestParam = query.get('digest');
  if (digestParam === null) throw new RegistryError('DIGEST_INVALID', 'the digest query parameter is required to finish an upload');
  const digest = parseDigest(digestParam);
  const body = hasBody(req) ? req : undefined;
  const range = body ? parseContentRange(req.headers['content-range']) : undefined;
  await service.finishUpload(name, id, digest, body, { range, contentLength: contentLength(req), freeChunks: true });
  created(ctx, name, digest);
}

export async function getUpload(ctx: RequestContext, name: string, id: string): Promise<void> {
  const status = await ctx.service.uploadStatus(name, id);
  ctx.res
    .writeHead(204, {
      Location: ctx.url(`/v2/${name}/blobs/uploads/${status.id}`),
      Range: uploadRange(status.offset),
      'Docker-Upload-UUID': status.id,
    })
    .end();
}

export async function deleteUpload(ctx: RequestContext, name: string, id: string): Promise<void> {
  await ctx.service.cancelUpload(name, id);
  ctx.res.writeHead(204).end();
}

function accepted(ctx: RequestContext, status: UploadStatus): void {
  ctx.res
    .writeHead(202, {
      Location: ctx.url(`/v2/${status.name}/blobs/uploads/${status.id}`),
      Range: uploadRange(status.offset),
      'Docker-Upload-UUID': status.id,
      'Content-Length': 0,
    })
    .end();
}

function created(ctx: RequestContext, name: string, digest: Digest): void {
  ctx.res
    .writeHead(201, {
      Location: ctx.url(`/v2/${name}/blobs/${digest.value}`),
      'Docker-Content-Digest': digest.value,
      'Content-Length': 0,
    })
    .end();
}
