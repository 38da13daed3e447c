// Picks the storage driver the config names (storage.filesystem or storage.s3;
// the schema guarantees exactly one). The S3 driver is imported only when it
// is the one configured: the AWS SDK it loads costs a filesystem server about
// 8 MB of memory for nothing.
import type { RegistryConfig } from '../config/schema.ts';
import type { StorageDriver } from './driver.ts';
import { FilesystemDriver } from './filesystem.ts';

export async function createDriver(config: Pick<RegistryConfig, 'storage'>): Promise<StorageDriver> {
  const { filesystem, s3 } = config.storage;
  if (s3) {
    const { S3Driver } = await import('./s3.ts');
    return new S3Driver({
      bucket: s3.bucket,
      region: s3.region,
      regionEndpoint: s3.regionendpoint,
      accessKey: s3.accesskey,
      secretKey: s3.secretkey,
      sessionToken: s3.sessiontoken,
      forcePathStyle: s3.forcepathstyle,
      secure: s3.secure,
      skipVerify: s3.skipverify,
      rootDirectory: s3.rootdirectory,
      chunkSize: s3.chunksize,
      multipartCopyChunkSize: s3.multipartcopychunksize,
      multipartCopyMaxConcurrency: s3.multipartcopymaxconcurrency,
      multipartCopyThresholdSize: s3.multipartcopythresholdsize,
      encrypt: s3.encrypt,
      keyId: s3.keyid,
      storageClass: s3.storageclass,
      userAgent: s3.useragent,
    });
  }
  if (filesystem?.rootdirectory) return new FilesystemDriver(filesystem.rootdirectory);
  throw new Error('a storage driver is required (storage.filesystem or storage.s3)');
}

/** Where the data lives, for log lines: a directory or s3://bucket/root. */
export function describeStorage(config: Pick<RegistryConfig, 'storage'>): string {
  const { filesystem, s3 } = config.storage;
  if (s3) return `s3://${s3.bucket}/${(s3.rootdirectory ?? '').replace(/^\/+/, '')}`;
  return filesystem?.rootdirectory ?? '';
}
