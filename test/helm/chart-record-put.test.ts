/**
 * How a push writes a Helm chart record (lib/core/push.ts): create-only first, so that the common case (no record
 * yet) never asks for an unconditional put (a lock on the filesystem adapter); the unconditional replace only
 * when a record is there already, for bytes that are stored anew.
 */
import { expect } from 'chai';
import { MemoryStorage, Registry, type WriteCondition } from '../../lib/index.js';
import { keys } from '../../lib/core/keys.js';
import { HelmRepository } from '../../lib/helm/index.js';
import { parse as parseYaml } from 'yaml';
import { digestOf } from '../helpers/blobs.js';
import { sha256 } from '../helpers/http.js';
import { chartTgz, regzipped } from './clients.js';

/** Memory storage that notes the condition of every put of a chart record, and may fail the unconditional ones. */
class ChartPuts extends MemoryStorage {
  readonly puts: ('create-only' | 'replace')[] = [];
  refuseReplace = false;

  override async put(key: string, body: Uint8Array, options?: WriteCondition): Promise<string | null> {
    if (key.startsWith('charts/')) {
      const replace = options?.ifNoneMatch === undefined && options?.ifMatch === undefined;
      this.puts.push(replace ? 'replace' : 'create-only');
      if (replace && this.refuseReplace) return null;
    }
    return super.put(key, body, options);
  }
}

async function recordDigest(storage: MemoryStorage, ns: string, name: string, digest: string): Promise<unknown> {
  const got = await storage.get(keys.chart(ns, name, digest));
  return got === null || got.notModified ? null : (JSON.parse(got.body.toString('utf8')) as { digest: unknown }).digest;
}

const webChart = { namespace: 'ns', name: 'web', release: '1.0.0', mediaType: 'helm' };

/**
 * A chart pushed, then its blob removed and its chart record left behind, as by a collector that stopped between
 * the two deletes (lib/core/gc.ts): a push of the same tar in other bytes finds a record there.
 */
async function purgedChart() {
  const storage = new ChartPuts();
  const registry = new Registry({ storage });
  const first = await chartTgz({ name: 'web', version: '1.0.0' });
  const digest = await digestOf(first);
  await registry.push({ ...webChart, blob: first });
  const recordKey = keys.chart('ns', 'web', digest);
  const record = await storage.get(recordKey);
  await registry.purgeBlob('ns', 'web', digest);
  if (record === null || record.notModified) throw new Error('the push wrote no chart record');
  await MemoryStorage.prototype.put.call(storage, recordKey, record.body);
  return { storage, registry, first, digest };
}

describe('Chart records: written create-only, replaced only when one is there', () => {
  it('writes the record of a new chart with a create-only put and no unconditional one', async () => {
    const storage = new ChartPuts();
    const registry = new Registry({ storage });
    const tgz = await chartTgz({ name: 'web', version: '1.0.0' });
    await registry.push({ ...webChart, blob: tgz });
    expect(storage.puts).to.deep.equal(['create-only']);
    expect(await recordDigest(storage, 'ns', 'web', await digestOf(tgz))).to.equal(sha256(tgz));
  });

  it('replaces a record left from bytes since withdrawn when the same tar is stored again in another gzip', async () => {
    const { storage, registry, first, digest } = await purgedChart();
    const second = regzipped(first);
    await registry.push({ ...webChart, blob: second });
    expect(storage.puts).to.deep.equal(['create-only', 'create-only', 'replace']);
    expect(await recordDigest(storage, 'ns', 'web', digest)).to.equal(sha256(second));
  });

  it('writes no record beside a blob stored before (another gzip, another media type): the index reads the stored bytes', async () => {
    const storage = new ChartPuts();
    const registry = new Registry({ storage });
    const first = await chartTgz({ name: 'web', version: '1.0.0' });
    const digest = await digestOf(first);
    await registry.push({ ...webChart, mediaType: 'kpm', blob: first }); // no chart record: not a helm push
    await registry.push({ ...webChart, blob: regzipped(first) });
    // None written: the push did not write the blob, so a record of its bytes would describe bytes not stored.
    expect(storage.puts).to.deep.equal([]);
    expect(await recordDigest(storage, 'ns', 'web', digest)).to.equal(null);
    const index = await new HelmRepository(registry).index('ns', () => true, '/cnr/helm');
    const entries = (parseYaml(index.body.toString()) as { entries: Record<string, { digest: string }[]> }).entries;
    expect(entries.web?.map((entry) => entry.digest)).to.deep.equal([sha256(first)]);
  });

  // The record is written while the compare-and-swap publishes the release (lib/core/push.ts `#storeChart`): a
  // record that could not be replaced stays, and the release's `archive_digest` tells the index it is of other
  // bytes; the index reads the stored bytes instead, and replaces the record with theirs.
  it('publishes the release and leaves the index the record of withdrawn bytes when the replace is refused too', async () => {
    const { storage, registry, first, digest } = await purgedChart();
    const logged: { level: string; msg: string | undefined }[] = [];
    const log = (level: string) => (_obj: object, msg?: string) => logged.push({ level, msg });
    const logging = new Registry({ storage, logger: { info: log('info'), warn: log('warn'), error: log('error') } });
    storage.refuseReplace = true;
    const second = regzipped(first);
    await logging.push({ ...webChart, blob: second });
    expect(logged.map((entry) => entry.level)).to.deep.equal(['warn']);
    expect(await recordDigest(storage, 'ns', 'web', digest)).to.equal(sha256(first)); // the withdrawn bytes'
    expect((await registry.packageManifests('ns', 'web')).map((m) => m.release)).to.deep.equal(['1.0.0']);
    const index = await new HelmRepository(logging).index('ns', () => true, '/cnr/helm');
    const entries = (parseYaml(index.body.toString()) as { entries: Record<string, { digest: string }[]> }).entries;
    expect(entries.web?.map((entry) => entry.digest)).to.deep.equal([sha256(second)]);
    expect(await recordDigest(storage, 'ns', 'web', digest)).to.equal(sha256(second)); // written back by the index
    expect(storage.puts.slice(-1)).to.deep.equal(['create-only']); // its condition: that version (If-Match)
  });
});
