import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startInstances, type Instance } from '../helpers/instances.js';
import { itRunsEveryScenario, type Cluster } from './scenarios.js';

describe('two standalone server processes on one data directory (filesystem store)', function () {
  this.timeout(120_000);
  let dir: string;
  let instances: Instance[] = [];
  const cluster = (): Cluster => ({ instances, prefix: '/cnr' });

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'appr-multi-'));
    instances = await startInstances(2, { APPR_STORAGE: dir, APPR_PREFIX: '/cnr' });
  });
  after(async () => {
    await Promise.all(instances.map((i) => i.stop()));
    await rm(dir, { recursive: true, force: true });
  });

  itRunsEveryScenario(cluster, { distinct: 50, same: 10, changes: 100 }, 'on one directory, 2 processes');
});
