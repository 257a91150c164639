import { tempFsStore } from '../helpers/stores.js';
import { describeHttpContract } from './contract.js';

describeHttpContract('fs', () => tempFsStore('http'));
