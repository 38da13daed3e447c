// Presigned redirects (storage.redirect): a client is sent to a signed GET
// URL of the object and downloads it from the bucket, not through us.
import { GetObjectCommand } from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import type { S3Bucket } from './bucket.ts';

/**
 * A presigned GET URL of the object at `k`, valid `expiresInS` seconds. Computed
 * locally, no request. Only for whole objects: an appendable object's parts
 * have no single URL.
 */
export function presignedGet(bucket: S3Bucket, k: string, expiresInS: number): Promise<string> {
  return getSignedUrl(bucket.client, new GetObjectCommand({ Bucket: bucket.name, Key: k }), { expiresIn: expiresInS });
}
