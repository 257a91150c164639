import { expect } from 'chai';
import { Registry } from '../../lib/index.js';
import { chart, CountingStorage } from './helpers.js';

/** Concurrent updates of one package on one instance: one compare-and-swap for all, each caller its own answer. */
describe('group commit of concurrent updates of one package', () => {
  let storage: CountingStorage;
  let registry: Registry;
  beforeEach(() => {
    storage = new CountingStorage();
    registry = new Registry({ storage, coherence: { pollMs: 0, sweepPerSecond: 0 }, maxPackageBytes: 4000 });
  });
  afterEach(() => registry.close());

  const push = async (release: string, extra: Record<string, unknown> = {}) =>
    registry.push({ namespace: 'ns', name: 'app', release, mediaType: 'helm', blob: await chart(release), ...extra })
      .then(() => 200, (err: { status?: number }) => err.status ?? 500);

  it('writes 16 concurrent pushes with at most two writes of the package document and one change entry per write', async () => {
    await push('0.0.1');
    const blobs = await Promise.all(Array.from({ length: 16 }, (_, i) => chart(`1.0.${i}`)));
    const calls = await storage.during(async () => {
      const statuses = await Promise.all(blobs.map((blob, i) =>
        registry.push({ namespace: 'ns', name: 'app', release: `1.0.${i}`, mediaType: 'helm', blob }).then(() => 200)));
      expect(statuses).to.deep.equal(new Array(16).fill(200));
    });
    const docWrites = calls.filter((c) => c === 'put packages/ns/app.json').length;
    expect(docWrites).to.be.within(1, 2);
    expect(calls.filter((c) => c.startsWith('put changes/')).length).to.be.at.most(docWrites);
    expect((await registry.packageManifests('ns', 'app')).map((m) => m.release)).to.have.length(17);
  });

  it('answers each caller as if alone: one 200 and 409s for the same release, 422 only for the push that is too big', async () => {
    await push('0.0.1');
    const same = await Promise.all(Array.from({ length: 6 }, () => push('2.0.0')));
    expect(same.sort()).to.deep.equal([200, 409, 409, 409, 409, 409]);
    const mixed = await Promise.all([push('3.0.0'), push('3.0.1', { metadata: { big: 'x'.repeat(5000) } }), push('3.0.2')]);
    expect(mixed).to.deep.equal([200, 422, 200]);
    expect((await registry.packageManifests('ns', 'app')).map((m) => m.release)).to.deep.equal(['0.0.1', '2.0.0', '3.0.0', '3.0.2']);
  });

  it('fails every caller of a batch with 503 when storage fails, and applies nothing', async () => {
    await push('0.0.1');
    storage.failPuts = (key) => key === 'packages/ns/app.json';
    const statuses = await Promise.all([push('1.0.0'), push('1.0.1'), push('1.0.2')]);
    expect(statuses).to.deep.equal([503, 503, 503]);
    storage.failPuts = () => false;
    expect((await registry.packageManifests('ns', 'app')).map((m) => m.release)).to.deep.equal(['0.0.1']);
  });
});
