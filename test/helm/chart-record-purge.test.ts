/**
 * A chart's blob purged (`Registry.purgeBlob`), then the same tar stored again in another gzip of the same size by
 * a push of another media type (which writes no chart record), then pushed as a chart: the index must list the
 * digest of the bytes a pull returns.
 *
 * `purgeBlob` (lib/core/registry.ts) deletes the blob's chart record with it: the other push writes none, and the
 * chart push finds the blob stored and so writes none either; the index reads the stored bytes.
 */
import { expect } from 'chai';
import { parse as parseYaml } from 'yaml';
import { MemoryStorage, Registry } from '../../lib/index.js';
import { HelmRepository } from '../../lib/helm/index.js';
import { digestOf } from '../helpers/blobs.js';
import { sha256 } from '../helpers/http.js';
import { chartTgz, regzipped } from './clients.js';

describe('Chart records: a blob purged, stored again in other bytes, pushed as a chart again', () => {
  it('lists the digest of the bytes a pull returns', async () => {
    const storage = new MemoryStorage();
    const registry = new Registry({ storage });
    const web = { namespace: 'ns', name: 'web', release: '1.0.0' };
    const tgz = await chartTgz({ name: 'web', version: '1.0.0' });
    const digest = await digestOf(tgz);
    await registry.push({ ...web, mediaType: 'helm', blob: tgz });
    await registry.purgeBlob('ns', 'web', digest);
    const kept = regzipped(tgz);
    await registry.push({ ...web, mediaType: 'kpm', blob: kept });
    await registry.push({ ...web, mediaType: 'helm', blob: tgz });
    const { body } = await registry.blob('ns', 'web', digest);
    const chunks: Buffer[] = [];
    for await (const chunk of body) chunks.push(chunk as Buffer);
    expect(sha256(Buffer.concat(chunks))).to.equal(sha256(kept));
    const index = await new HelmRepository(new Registry({ storage })).index('ns', () => true, '/cnr/helm');
    const entries = (parseYaml(index.body.toString()) as { entries: Record<string, { digest: string }[]> }).entries;
    expect(entries.web?.map((entry) => entry.digest)).to.deep.equal([sha256(kept)]);
  });
});
