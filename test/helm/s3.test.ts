import { S3Storage, s3ClientFromEnv } from '../../lib/s3.js';
import { describeWithS3, S3_BUCKET, uniqueS3Prefix } from '../helpers/s3-env.js';
import { describeHelmContract } from './contract.js';

// The Helm suite on S3 (Ceph RGW in CI), under its own prefix of the shared test bucket.
describeWithS3('Helm on S3', () => {
  describeHelmContract('s3', async () => {
    const storage = new S3Storage({
      client: s3ClientFromEnv(),
      bucket: S3_BUCKET,
      prefix: uniqueS3Prefix('helm'),
      ifMatchUnquoted: process.env.S3_IFMATCH_UNQUOTED === '1',
      ownsClient: true,
    });
    return { storage, cleanup: () => storage.close() };
  });
});
