import { startInstances, type Instance } from '../helpers/instances.js';
import { describeWithS3, S3_BUCKET, uniqueS3Prefix } from '../helpers/s3-env.js';
import { itRunsEveryScenario, type Cluster } from './scenarios.js';

describeWithS3('three standalone server processes on one S3 bucket (Ceph RGW)', function () {
  this.timeout(180_000);
  let instances: Instance[] = [];
  const cluster = (): Cluster => ({ instances, prefix: '/cnr' });

  before(async () => {
    instances = await startInstances(3, { APPR_STORAGE: `s3://${S3_BUCKET}/${uniqueS3Prefix('multi')}` });
  });
  after(async () => {
    await Promise.all(instances.map((i) => i.stop()));
  });

  itRunsEveryScenario(cluster, { distinct: 90, same: 12, changes: 200 }, 'on RGW, 3 processes');
});
