// The s3 driver's options (storage.s3 in the config, as createDriver maps
// them), the settings the driver derives from them, and its S3 client.
import type * as http from 'node:http';
import type * as https from 'node:https';
import { createRequire } from 'node:module';
import { S3Client, type ServerSideEncryption, type StorageClass } from '@aws-sdk/client-s3';

// Through require, as in http/server.ts: an ESM import of node:http costs about 14 MB on Node 22 and later.
const require = createRequire(import.meta.url);
const { Agent: HttpAgent } = require('node:http') as typeof http;
const { Agent: HttpsAgent } = require('node:https') as typeof https;

const MiB = 1024 * 1024;
/** S3's smallest part of a multipart upload (except the last). */
export const MIN_PART_SIZE = 5 * MiB;
/** S3's largest part, and the largest single PutObject / CopyObject. */
export const MAX_PART_SIZE = 5 * 1024 * MiB;
/** S3's most parts in one multipart upload. */
export const MAX_PARTS = 10_000;

export interface S3DriverOptions {
  bucket: string;
  region?: string;
  /** Endpoint of an S3-compatible service, e.g. http://127.0.0.1:7480 or minio.example.com. */
  regionEndpoint?: string;
  accessKey?: string;
  secretKey?: string;
  sessionToken?: string;
  /** Path-style URLs (bucket in the path); default: on when regionEndpoint is set. */
  forcePathStyle?: boolean;
  /** https for an endpoint given without a scheme (default true). */
  secure?: boolean;
  /** Do not verify the endpoint's TLS certificate. */
  skipVerify?: boolean;
  /** Key prefix under which the registry's tree lives. */
  rootDirectory?: string;
  /** Size of the part objects append() writes (default 10 MiB, at least 5 MiB). */
  chunkSize?: number;
  /** Objects larger than this are copied with a multipart copy (default 32 MiB). */
  multipartCopyThresholdSize?: number;
  /** Part size of multipart copies (default 32 MiB). */
  multipartCopyChunkSize?: number;
  /** Parallel part copies (default 100). */
  multipartCopyMaxConcurrency?: number;
  /** Server-side encryption: AES256, or aws:kms when keyId is set. */
  encrypt?: boolean;
  keyId?: string;
  /** Storage class of new objects (NONE: let the bucket decide). */
  storageClass?: string;
  userAgent?: string;
  /**
   * When an appended stream pauses this long with bytes buffered, they are stored as
   * a (smaller) part, so that readers tailing the object see them (default 500 ms; 0: never).
   */
  appendIdleFlushMs?: number;
  /** Parts an append stores at the same time (default 2; memory: one more part than this per append). */
  appendConcurrency?: number;
  /** Only for tests: a custom client. */
  client?: S3Client;
}

/** Server-side encryption parameters, spread into every request that creates an object. */
export type Sse = { ServerSideEncryption?: ServerSideEncryption; SSEKMSKeyId?: string };

export interface CopySettings {
  /** Objects larger than this are copied with a multipart copy. */
  threshold: number;
  /** Part size of multipart copies. */
  chunkSize: number;
  /** Parallel part copies. */
  concurrency: number;
}

export interface AppendSettings {
  /** Size of the part objects (and of the parts of putStream's uploads). */
  chunkSize: number;
  /** See S3DriverOptions.appendIdleFlushMs. */
  idleFlushMs: number;
  /** Parts stored at the same time. */
  concurrency: number;
}

export interface S3Settings {
  sse: Sse;
  storageClass: StorageClass | undefined;
  copy: CopySettings;
  append: AppendSettings;
}

/** The options with their defaults, sizes held within what S3 allows. */
export function resolveSettings(options: S3DriverOptions): S3Settings {
  const sc = options.storageClass?.toUpperCase();
  return {
    sse: options.encrypt
      ? options.keyId
        ? { ServerSideEncryption: 'aws:kms', SSEKMSKeyId: options.keyId }
        : { ServerSideEncryption: 'AES256' }
      : {},
    storageClass: sc && sc !== 'NONE' ? (sc as StorageClass) : undefined,
    copy: {
      threshold: clamp(options.multipartCopyThresholdSize ?? 32 * MiB, 0, MAX_PART_SIZE),
      chunkSize: clamp(options.multipartCopyChunkSize ?? 32 * MiB, MIN_PART_SIZE, MAX_PART_SIZE),
      concurrency: Math.max(1, options.multipartCopyMaxConcurrency ?? 100),
    },
    append: {
      chunkSize: clamp(options.chunkSize ?? 10 * MiB, MIN_PART_SIZE, MAX_PART_SIZE),
      idleFlushMs: options.appendIdleFlushMs ?? 500,
      concurrency: Math.max(1, options.appendConcurrency ?? 2),
    },
  };
}

export function createClient(options: S3DriverOptions): S3Client {
  let endpoint = options.regionEndpoint?.trim() || undefined;
  if (endpoint && !/^https?:\/\//i.test(endpoint)) endpoint = `${options.secure === false ? 'http' : 'https'}://${endpoint}`;
  const agentOptions = { keepAlive: true, maxSockets: 256 };
  return new S3Client({
    region: options.region || 'us-east-1',
    endpoint,
    forcePathStyle: options.forcePathStyle ?? endpoint !== undefined,
    credentials:
      options.accessKey && options.secretKey
        ? { accessKeyId: options.accessKey, secretAccessKey: options.secretKey, sessionToken: options.sessionToken }
        : undefined,
    // Ceph RGW (and others) reject the SDK's default streamed checksums.
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    customUserAgent: options.userAgent,
    requestHandler: {
      httpAgent: new HttpAgent(agentOptions),
      httpsAgent: new HttpsAgent({ ...agentOptions, rejectUnauthorized: !options.skipVerify }),
    },
  });
}

function clamp(n: number, min: number, max: number): number {
  return Math.min(Math.max(n, min), max);
}
