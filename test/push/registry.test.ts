/**
 * Registry.push's input side: a Buffer, a stream, or a staged blob; everything validated before the blob is
 * written; a large tarball already stored is not uploaded again.
 */
import { randomBytes } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { expect } from 'chai';
import { ApprError, MemoryStorage, Registry, type WriteCondition } from '../../lib/index.js';
import { makeTarGz } from '../helpers/blobs.js';
import { tempDir } from '../helpers/temp.js';

class CountingStorage extends MemoryStorage {
  readonly calls: string[] = [];
  override async put(key: string, body: Uint8Array, options?: WriteCondition) {
    this.calls.push(`put ${key.split('/')[0]}`);
    return super.put(key, body, options);
  }
  override async putStream(key: string, body: Readable, size: number, options?: WriteCondition) {
    this.calls.push(`putStream ${key.split('/')[0]}`);
    return super.putStream(key, body, size, options);
  }
  override async head(key: string) {
    this.calls.push(`head ${key.split('/')[0]}`);
    return super.head(key);
  }
}

describe('push: Registry.push input', function () {
  let dir: string;
  tempDir('appr-registry-push-', 'each', (path) => {
    dir = path;
  });

  it('takes the blob as a Buffer or as a stream, with the same digest', async function () {
    const registry = new Registry({ storage: new MemoryStorage() });
    const blob = await makeTarGz({ 'Chart.yaml': 'name: x\n' });
    await registry.push({ namespace: 'ns', name: 'a', release: '1.0.0', mediaType: 'helm', blob });
    await registry.push({
      namespace: 'ns',
      name: 'a',
      release: '1.0.1',
      mediaType: 'helm',
      blob: Readable.from([blob.subarray(0, 10), blob.subarray(10)]),
    });
    const [first, second] = await registry.packageManifests('ns', 'a');
    expect(first?.content.digest).to.equal(second?.content.digest);
    expect(second?.content.size).to.equal(blob.length);
  });

  it('validates the release and media type before reading the blob stream', async function () {
    const storage = new CountingStorage();
    const registry = new Registry({ storage });
    let read = false;
    const blob = new Readable({
      read() {
        read = true;
        this.push(null);
      },
    });
    for (const input of [{ release: '1.0' }, { release: '1.0.0', mediaType: '../x' }]) {
      try {
        await registry.push({ namespace: 'ns', name: 'a', mediaType: 'helm', blob, ...input });
        expect.fail('accepted');
      } catch (err) {
        expect(err).to.be.instanceOf(ApprError);
      }
    }
    expect(read).to.equal(false);
    expect(storage.calls).to.deep.equal([]);
  });

  it('does not upload again a large tarball that is already stored (HEAD first), and removes its temp file', async function () {
    const storage = new CountingStorage();
    const registry = new Registry({ storage, pushTmpDir: dir, pushMemoryBytes: 1024 });
    const blob = await makeTarGz({ 'noise.bin': randomBytes(50_000) });
    await registry.push({ namespace: 'ns', name: 'big', release: '1.0.0', mediaType: 'helm', blob });
    await registry.push({ namespace: 'ns', name: 'big', release: '1.0.1', mediaType: 'helm', blob });
    const blobCalls = storage.calls.filter((c) => c.endsWith('blobs'));
    expect(blobCalls).to.deep.equal(['head blobs', 'putStream blobs', 'head blobs']);
    expect(await readdir(dir)).to.deep.equal([]);
  });

  it('leaves a staged blob to its owner: the caller disposes of it', async function () {
    const registry = new Registry({ storage: new MemoryStorage(), pushTmpDir: dir, pushMemoryBytes: 1024 });
    const blob = await makeTarGz({ 'noise.bin': randomBytes(50_000) });
    const stager = registry.createBlobStager({ maxSize: 1 << 20 });
    await stager.write(blob);
    const staged = await stager.end();
    await registry.push({ namespace: 'ns', name: 'staged', release: '1.0.0', mediaType: 'helm', blob: staged });
    expect(await readdir(dir)).to.have.length(1);
    await staged.dispose();
    expect(await readdir(dir)).to.deep.equal([]);
  });
});
