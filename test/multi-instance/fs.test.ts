import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startInstances, type Instance } from '../helpers/instances.js';
import { channelAndDeleteRace, pushDistinctReleases, pushSameRelease, type Cluster } from './scenarios.js';

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

  it('keeps all 50 distinct releases pushed concurrently through both processes', async () => {
    await pushDistinctReleases(cluster(), 50);
  });

  it('lets exactly one of 10 concurrent pushes of the same release and media type win; nine get 409', async () => {
    await pushSameRelease(cluster(), 10);
  });

  it('leaves channels consistent after concurrent channel changes and deletes from both processes', async () => {
    await channelAndDeleteRace(cluster());
  });
});
