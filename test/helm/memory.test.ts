import { MemoryStorage } from '../../lib/index.js';
import { describeHelmContract } from './contract.js';

describeHelmContract('memory', async () => ({ storage: new MemoryStorage(), cleanup: async () => undefined }));
