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

async function pushCharts(registry: Registry, names: string[]): Promise<void> {
  for (const name of names) {
    const blob = await chartTgz({ name, version: '1.0.0', extra: `home: https://example.com/${'d'.repeat(200)}\n` });
    await registry.push({ namespace: 'ns', name, release: '1.0.0', mediaType: 'helm', blob });
  }
}

async function indexedNames(registry: Registry): Promise<string[]> {
  // Room for about two charts' entries (each at least 256 bytes, plus its Chart.yaml as JSON).
  const repository = new HelmRepository(registry, { chartCacheBytes: 1200 });
  const index = await repository.index('ns', () => true, '/cnr/helm');
  return Object.keys((parseYaml(index.body.toString()) as { entries: Record<string, unknown[]> }).entries).sort();
}

describe('Helm index: a chart cache smaller than the charts of one index', () => {
  const names = Array.from({ length: 12 }, (_, i) => `chart${i}`);

  it('lists every chart though reads under way were evicted', async () => {
    const registry = new Registry({ storage: new MemoryStorage(), coherence: { pollMs: 0, sweepPerSecond: 0 } });
    await pushCharts(registry, names);
    expect(await indexedNames(registry)).to.deep.equal([...names].sort());
    await registry.close();
  });

  it('lists the others when reads that find no blob are evicted under way', async () => {
    const storage = new MemoryStorage();
    const registry = new Registry({ storage, coherence: { pollMs: 0, sweepPerSecond: 0 } });
    await pushCharts(registry, names);
    // Half of the charts lost their bytes (and records): their reads find nothing, a result the cache never keeps.
    const lost = names.slice(0, 6);
    for (const key of (await storage.list('')).keys) {
      if (lost.some((name) => key.startsWith(`blobs/ns/${name}/`) || key.startsWith(`charts/ns/${name}/`))) {
        await storage.delete(key);
      }
    }
    expect(await indexedNames(registry)).to.deep.equal(names.slice(6).sort());
    await registry.close();
  });
});
