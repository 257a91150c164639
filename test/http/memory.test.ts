import { MemoryStorage } from '../../lib/index.js';
import { describeHttpContract } from './contract.js';

describeHttpContract('memory', async () => ({
  storage: new MemoryStorage(),
  cleanup: async () => {},
}));
