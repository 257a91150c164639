import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FsStorage } from '../../lib/index.js';
import { describeHelmContract } from './contract.js';

describeHelmContract('fs', async () => {
  const root = await mkdtemp(join(tmpdir(), 'koa-appr-helm-'));
  const storage = new FsStorage({ root });
  return {
    storage,
    cleanup: async () => {
      await (storage as { close?: () => Promise<void> }).close?.();
      await rm(root, { recursive: true, force: true });
    },
  };
});
