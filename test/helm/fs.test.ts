import { tempFsStore } from '../helpers/stores.js';
import { describeHelmContract } from './contract.js';

describeHelmContract('fs', () => tempFsStore('helm'));
