/**
 * The `koa-appr/s3` entry point: the S3 storage adapter. It is separate from the main entry so that hosts that do
 * not use S3 never load `@aws-sdk/client-s3` (an optional peer dependency).
 */
export { S3Storage } from './storage/s3.js';
export { s3ClientFromEnv, s3StorageFromUrl } from './storage/s3-env.js';
export type { CasRetry, S3StorageOptions } from './storage/s3.js';
