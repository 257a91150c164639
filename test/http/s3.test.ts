import { describeWithS3 } from '../helpers/s3-env.js';
import { testS3Store } from '../helpers/stores.js';
import { describeHttpContract } from './contract.js';

// The whole HTTP suite on S3 (Ceph RGW in CI). Every run writes under its own prefix of the shared test bucket.
describeWithS3('HTTP contract on S3', () => {
  describeHttpContract('s3', async () => testS3Store('http'));
});
