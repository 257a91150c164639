import { expect } from 'chai';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startInstance } from '../helpers/instances.js';

describe('examples/standalone: the server behind npm start', function () {
  this.timeout(60_000);
  let dir: string;
  before(async () => { dir = await mkdtemp(join(tmpdir(), 'appr-standalone-')); });
  after(() => rm(dir, { recursive: true, force: true }));

  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    it(`logs the URL it serves, serves the API there, and exits 0 on ${signal}`, async () => {
      const instance = await startInstance({ APPR_STORAGE: dir, APPR_PREFIX: '/registry' });
      expect(instance.url).to.match(/^http:\/\/127\.0\.0\.1:\d+\/registry$/);
      const version = await fetch(`${instance.url}/version`);
      expect(((await version.json()) as Record<string, string>)['appr-api']).to.equal('0.7.4');
      expect(instance.output()).to.include('OPEN');
      const exited = once(instance.process, 'exit');
      instance.process.kill(signal);
      const [code] = await exited;
      expect(code).to.equal(0);
    });
  }
});
