import { describeWithS3 } from '../helpers/s3-env.js';
import { testS3Store } from '../helpers/stores.js';
import { describeHelmContract } from './contract.js';

// The Helm suite on S3 (Ceph RGW in CI), under its own prefix of the shared test bucket.
describeWithS3('Helm on S3', () => {
  describeHelmContract('s3', async () => testS3Store('helm'));
});
