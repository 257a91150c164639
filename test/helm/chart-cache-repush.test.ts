/**
 * The Helm index caches what a release's blob holds (lib/helm/index.ts `chart`): a chart deleted, collected and
 * pushed again as the same tar in another gzip of the same size is stored at the same content address with other
 * bytes, and an instance that had indexed the first bytes must list the digest of the bytes a pull returns now.
 */
import { expect } from 'chai';
import { parse as parseYaml } from 'yaml';
import { MemoryStorage, Registry } from '../../lib/index.js';
import { HelmRepository } from '../../lib/helm/index.js';
import { sha256 } from '../helpers/http.js';
import { chartTgz, regzipped } from './clients.js';

async function indexedDigests(repository: HelmRepository): Promise<string[]> {
  const index = await repository.index('ns', () => true, '/cnr/helm');
  const entries = (parseYaml(index.body.toString()) as { entries: Record<string, { digest: string }[]> }).entries;
  return entries.web?.map((entry) => entry.digest) ?? [];
}

describe('Helm index: a chart collected and pushed again in other bytes', () => {
  it('lists the digest of the bytes stored now on an instance that had indexed the first ones', async () => {
    const storage = new MemoryStorage();
    const registry = new Registry({ storage, coherence: { pollMs: 0, sweepPerSecond: 0 } });
    const repository = new HelmRepository(registry);
    const web = { namespace: 'ns', name: 'web', release: '1.0.0', mediaType: 'helm' };
    const first = await chartTgz({ name: 'web', version: '1.0.0' });
    await registry.push({ ...web, blob: first });
    expect(await indexedDigests(repository)).to.deep.equal([sha256(first)]);

    await registry.deleteRelease('ns', 'web', '1.0.0', 'helm');
    const report = await registry.gc({ graceMs: 0 });
    expect(report.blobs).to.have.length(1); // the first bytes are gone, with their chart record
    const second = regzipped(first);
    expect(second.length).to.equal(first.length);
    await registry.push({ ...web, blob: second });

    expect(await indexedDigests(repository)).to.deep.equal([sha256(second)]);
    await registry.close();
  });
});
