import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FsStorage, MemoryStorage } from '../../lib/index.js';
import { describeHttpContract } from './contract.js';

// The peer dependency promises Koa 2.16 as well as Koa 3: the whole HTTP suite again, on Koa 2.16.
describeHttpContract('memory', async () => ({ storage: new MemoryStorage(), cleanup: async () => undefined }), {
  koa: '2',
});

describeHttpContract(
  'fs',
  async () => {
    const root = await mkdtemp(join(tmpdir(), 'koa-appr-http-koa2-'));
    return { storage: new FsStorage({ root }), cleanup: () => rm(root, { recursive: true, force: true }) };
  },
  { koa: '2' },
);
