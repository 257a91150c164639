import { S3Storage, s3ClientFromEnv } from '../../lib/s3.js';
import { describeWithS3, S3_BUCKET, uniqueS3Prefix } from '../helpers/s3-env.js';
import { describeHttpContract } from './contract.js';

// The whole HTTP suite on S3 (Ceph RGW in CI). Every run writes under its own prefix of the shared test bucket.
describeWithS3('HTTP contract on S3', () => {
  describeHttpContract('s3', async () => {
    const storage = new S3Storage({
      client: s3ClientFromEnv(),
      bucket: S3_BUCKET,
      prefix: uniqueS3Prefix('http'),
      ifMatchUnquoted: process.env.S3_IFMATCH_UNQUOTED === '1',
      ownsClient: true,
    });
    return { storage, cleanup: () => storage.close() };
  });
});
