/**
 * Attacks on a helm push that found its tarball stored (lib/core/push.ts `StoredDigestNeeded`, `#storedDigest`,
 * `liveArchiveDigest`): what it costs, what it answers beside other pushes, and what a failed read leaves.
 */
import { expect } from 'chai';
import { MemoryStorage, Registry } from '../../lib/index.js';
import { sha256 } from '../helpers/http.js';
import { chartTgz, regzipped } from './clients.js';
import { counting } from './counting.js';

describe('helm push that found its tarball stored: attacks', () => {
  it('costs one blob read and no document read on an instance that holds the package (README S3 table)', async () => {
    const counts = counting(new MemoryStorage());
    const registry = new Registry({ storage: counts.storage, coherence: { pollMs: 0, sweepPerSecond: 0 } });
    try {
      const tgz = await chartTgz({ name: 'app', version: '1.0.0' });
      await registry.push({ namespace: 'ns', name: 'app', release: '1.0.0', mediaType: 'helm', blob: tgz });
      await registry.push({
        namespace: 'ns',
        name: 'app',
        release: '0.9.0',
        mediaType: 'helm',
        blob: await chartTgz({ name: 'app', version: '0.9.0' }),
      });
      await registry.deleteRelease('ns', 'app', '1.0.0', 'helm'); // the blob stays, no live release names it
      await registry.flushChanges();
      counts.reset();
      await registry.push({ namespace: 'ns', name: 'app', release: '1.0.1', mediaType: 'helm', blob: regzipped(tgz) });
      await registry.flushChanges();
      expect(counts.byKind['getStream blobs']).to.equal(1);
      expect(counts.byKind['get packages'] ?? 0).to.equal(0);
      const [record] = (await registry.releaseRecords('ns', 'app', 'helm')).filter((r) => r.release === '1.0.1');
      expect(record?.record.archive_digest).to.equal(sha256(tgz));
    } finally {
      await registry.close();
    }
  });
});
