import { MemoryStorage } from '../../lib/storage/memory.js';
import { describeStorageContract } from './contract.js';

describeStorageContract('MemoryStorage', async () => ({ storage: new MemoryStorage(), cleanup: async () => {} }));
