/**
 * The Helm index reads what each release's blob holds through a byte-bounded cache of charts (lib/helm/index.ts
 * `chart`), all of a namespace's at once. A cache too small for them all evicts entries whose read is still under
 * way: lru-cache then rejected that read's callers ("evicted"), and the index request failed (500). The reads are
 * answered all the same; only what fits stays cached.
 */
import { expect } from 'chai';
import { parse as parseYaml } from 'yaml';
import { MemoryStorage, Registry } from '../../lib/index.js';
import { HelmRepository } from '../../lib/helm/index.js';
import { chartTgz } from './clients.js';

describe('Helm index: a chart cache smaller than the charts of one index', () => {
  it('lists every chart though reads under way were evicted', async () => {
    const storage = new MemoryStorage();
    const registry = new Registry({ storage, coherence: { pollMs: 0, sweepPerSecond: 0 } });
    const names = Array.from({ length: 12 }, (_, i) => `chart${i}`);
    for (const name of names) {
      const blob = await chartTgz({ name, version: '1.0.0', extra: `home: https://example.com/${'d'.repeat(200)}\n` });
      await registry.push({ namespace: 'ns', name, release: '1.0.0', mediaType: 'helm', blob });
    }
    // Room for about two charts' entries (each at least 256 bytes, plus its Chart.yaml as JSON).
    const repository = new HelmRepository(registry, { chartCacheBytes: 1200 });
    const index = await repository.index('ns', () => true, '/cnr/helm');
    const entries = (parseYaml(index.body.toString()) as { entries: Record<string, unknown[]> }).entries;
    expect(Object.keys(entries).sort()).to.deep.equal([...names].sort());
    await registry.close();
  });
});
