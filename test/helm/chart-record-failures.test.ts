/**
 * A Helm push whose storage fails part-way must leave no chart record that describes other bytes than the stored
 * blob: a later push of the same tar finds the record there and keeps it, and the index would then list a digest
 * that Helm's check of the downloaded chart refuses. The case that matters: the tar stored before as another
 * media type (no record), then pushed as a chart in another gzip of the same size (the index trusts a record whose
 * size agrees with the release's).
 */
import { expect } from 'chai';
import { parse as parseYaml } from 'yaml';
import { MemoryStorage, Registry, StorageUnavailableError, type WriteCondition } from '../../lib/index.js';
import { keys } from '../../lib/core/keys.js';
import { HelmRepository } from '../../lib/helm/index.js';
import { digestOf } from '../helpers/blobs.js';
import { sha256 } from '../helpers/http.js';
import { chartTgz, regzipped } from './clients.js';

/** Memory storage that fails the next call matching `failNext` (once). */
class Failing extends MemoryStorage {
  failNext: ((op: 'put' | 'delete', key: string) => boolean) | undefined;

  #fail(op: 'put' | 'delete', key: string): void {
    if (this.failNext?.(op, key) === true) {
      this.failNext = undefined;
      throw new StorageUnavailableError(`injected: ${op} ${key}`);
    }
  }

  override async put(key: string, body: Uint8Array, options?: WriteCondition): Promise<string | null> {
    this.#fail('put', key);
    return super.put(key, body, options);
  }

  override async delete(key: string, options?: { ifMatch?: string }): Promise<boolean> {
    this.#fail('delete', key);
    return super.delete(key, options);
  }
}

const web = { namespace: 'ns', name: 'web', release: '1.0.0' };

async function pulled(registry: Registry, digest: string): Promise<Buffer> {
  const { body } = await registry.blob('ns', 'web', digest);
  const chunks: Buffer[] = [];
  for await (const chunk of body) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

async function indexedDigests(registry: Registry): Promise<string[]> {
  const index = await new HelmRepository(registry).index('ns', () => true, '/cnr/helm');
  const entries = (parseYaml(index.body.toString()) as { entries: Record<string, { digest: string }[]> }).entries;
  return entries.web?.map((entry) => entry.digest) ?? [];
}

describe('Chart records: a helm push that fails part-way leaves no record of other bytes', () => {
  // `mustFire`: the injected failure is met by any correct push; a record delete is met only by a push that wrote
  // a record beside a blob stored before (the one that failed this test).
  for (const [what, failNext, mustFire] of [
    ['the blob write fails', (op: string, key: string) => op === 'put' && key.startsWith('blobs/'), true],
    ['a record delete would fail', (op: string, key: string) => op === 'delete' && key.startsWith('charts/'), false],
  ] as const) {
    it(`lists the stored bytes' digest after a push where ${what}, and a clean push again`, async () => {
      const storage = new Failing();
      const registry = new Registry({ storage });
      const stored = await chartTgz({ name: 'web', version: '1.0.0' });
      const digest = await digestOf(stored);
      expect(keys.blob('ns', 'web', digest).startsWith('blobs/')).to.equal(true);
      await registry.push({ ...web, mediaType: 'kpm', blob: stored });
      const other = regzipped(stored);
      storage.failNext = failNext;
      const failed = await registry.push({ ...web, mediaType: 'helm', blob: other }).then(
        () => null,
        (err: unknown) => err,
      );
      if (failed !== null) expect(failed).to.include({ code: 'storage-unavailable' });
      if (mustFire) expect(failed).to.not.equal(null);
      await registry.push({ ...web, mediaType: 'helm', blob: other, force: true });
      const bytes = await pulled(registry, digest);
      expect(sha256(bytes)).to.equal(sha256(stored));
      expect(await indexedDigests(registry)).to.deep.equal([sha256(bytes)]);
    });
  }
});
