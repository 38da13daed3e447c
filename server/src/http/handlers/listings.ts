// GET /v2/, /v2/_catalog, /v2/<name>/tags/list, /v2/<name>/referrers/<digest>
import { parseDigest } from '../../registry/digest.ts';
import { visibleCatalog } from '../../registry/listing.ts';
import { MediaTypes } from '../../registry/manifest.ts';
import { linkHeader, queryInt, type RequestContext } from '../context.ts';

export async function base(ctx: RequestContext): Promise<void> {
  json(ctx, 200, {});
}

export async function catalog(ctx: RequestContext): Promise<void> {
  const n = queryInt(ctx.query, 'n');
  const request = { n, last: ctx.query.get('last') ?? undefined };
  // With an access policy, only the repositories the caller may pull. (A mirror lists names as clients
  // pull them; the policy speaks of the names they are cached under.)
  const { may } = ctx.identity;
  const cached = (name: string) => ctx.service.canonicalName?.(name, undefined) ?? name;
  const page = may ? await visibleCatalog(ctx.service, request, (name) => may(cached(name), 'pull')) : await ctx.service.catalog(request);
  const headers: Record<string, string> = {};
  if (page.next !== undefined && n !== undefined) {
    headers.Link = linkHeader(ctx.url('/v2/_catalog'), { last: page.next, n });
  }
  json(ctx, 200, { repositories: page.items }, headers);
}

/** `requestedName` is the name as the client wrote it (a mirror stores it under another). */
export async function tags(ctx: RequestContext, name: string, requestedName = name): Promise<void> {
  const n = queryInt(ctx.query, 'n');
  const page = await ctx.service.listTags(name, { n, last: ctx.query.get('last') ?? undefined });
  const headers: Record<string, string> = {};
  if (page.next !== undefined && n !== undefined) {
    headers.Link = linkHeader(ctx.url(`/v2/${requestedName}/tags/list`), { last: page.next, n });
  }
  json(ctx, 200, { name: requestedName, tags: page.items }, headers);
}

export async function referrers(ctx: RequestContext, name: string, reference: string): Promise<void> {
  const subject = parseDigest(reference);
  const artifactType = ctx.query.get('artifactType') || undefined;
  const result = await ctx.service.referrers(name, subject, artifactType);
  const headers: Record<string, string> = { 'Content-Type': MediaTypes.ociIndex };
  if (result.filtersApplied.length > 0) headers['OCI-Filters-Applied'] = result.filtersApplied.join(',');
  json(ctx, 200, { schemaVersion: 2, mediaType: MediaTypes.ociIndex, manifests: result.manifests }, headers);
}

function json(ctx: RequestContext, status: number, value: unknown, headers: Record<string, string> = {}): void {
  const body = JSON.stringify(value);
  ctx.access.bytesOut = Buffer.byteLength(body);
  ctx.res.writeHead(status, {
    'Content-Type': 'application/json; charset=utf-8',
    ...headers,
    'Content-Length': Buffer.byteLength(body),
  });
  ctx.res.end(ctx.req.method === 'HEAD' ? undefined : body);
}
