import type { S3Client } from '@aws-sdk/client-s3';
import type { z } from 'zod';
import type { CasRetry, S3StorageOptions } from '../storage/s3.js';
import { flag, group, instance, missingMethods, oneOf, text, type SameOptions } from './validate.js';

/**
 * `S3Storage`'s options, apart from the other schemas (lib/options/schema.ts) so that only `koa-appr/s3` refers to
 * the optional S3 SDK's types. The client is recognised by its `send` method, not `instanceof`: a host may load
 * another copy of the SDK than ours (the tus s3-store lesson).
 */
export const s3StorageOptions = group({
  client: instance<S3Client>(
    'an S3Client from @aws-sdk/client-s3 (e.g. s3ClientFromEnv())',
    (value) => (missingMethods(value, ['send']).length ? '' : null),
    () => ({ send: () => undefined, destroy: () => undefined }) as unknown as S3Client,
  ),
  // Bucket naming rules differ between AWS and S3-compatible servers: refuse only what no server takes.
  bucket: text(
    'a bucket name (a non-empty string without "/" or spaces)',
    (bucket) => /^[^/\s]+$/.test(bucket),
    'registry',
    ['', 'a/b', 'my bucket'],
  ),
  prefix: text('a key prefix (a string)', () => true, 'appr/', []).optional(),
  ifMatchUnquoted: flag().default(false),
  casRetry: oneOf(['none', 'sdk'] as const satisfies readonly CasRetry[]).default('none'),
  ownsClient: flag().default(false),
});

true satisfies SameOptions<S3StorageOptions, z.input<typeof s3StorageOptions>>;
