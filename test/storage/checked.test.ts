import { expect } from 'chai';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MemoryStorage, Registry, StorageUnavailableError } from '../../lib/index.js';
import { ApprMetrics } from '../../lib/ops/metrics.js';
import { checkedStorage } from '../../lib/storage/checked.js';
import type { StorageAdapter } from '../../lib/storage/types.js';

/** A host's own adapter: the methods of the interface over a MemoryStorage, and no declared capabilities. */
function hostAdapter(inner: MemoryStorage): StorageAdapter {
  return {
    name: 'host',
    get: (key, options) => inner.get(key, options),
    put: (key, body, options) => inner.put(key, body, options),
    putStream: (key, body, size, options) => inner.putStream(key, body, size, options),
    getStream: (key) => inner.getStream(key),
    head: (key) => inner.head(key),
    delete: (key, options) => inner.delete(key, options),
    list: (prefix, options) => inner.list(prefix, options),
  };
}

async function rejection(promise: Promise<unknown>): Promise<Error> {
  try {
    await promise;
  } catch (err) {
    return err as Error;
  }
  return expect.fail('expected a rejection');
}

describe('checkedStorage: the storage contract enforced once, by the Registry', function () {
  it('is applied by the Registry to an adapter that checks nothing itself', async function () {
    const memory = new MemoryStorage();
    // The adapter itself no longer repeats the rules: an invalid key is just absent there.
    expect(await memory.get('../escape')).to.equal(null);
    const registry = new Registry({ storage: memory });
    for (const run of [
      () => registry.storage.get('../escape'),
      () => registry.storage.put('a//b', Buffer.from('x')),
      () => registry.storage.delete('/a'),
    ]) {
      expect((await rejection(run())).message).to.match(/^invalid storage key /);
    }
    expect((await rejection(registry.storage.list('a/', { limit: 0 }))).message).to.match(/^invalid list limit /);
    expect(await memory.list('')).to.deep.equal({ keys: [] });
  });

  it('passes the adapter capabilities through the deadline wrapper, and checks an adapter once', async function () {
    const memory = new MemoryStorage();
    const registry = new Registry({ storage: memory, storageTimeoutMs: 1000 });
    expect(registry.storage.capabilities).to.deep.equal({ conditionalDelete: true });
    expect(checkedStorage(registry.storage)).to.equal(registry.storage);
    const etag = await registry.storage.put('doc', Buffer.from('v1'));
    expect(await registry.storage.delete('doc', { ifMatch: etag! })).to.equal(true);
  });

  it('declares no capability for an adapter that declares none, and passes its results on unchanged', async function () {
    const memory = new MemoryStorage();
    const registry = new Registry({ storage: hostAdapter(memory) });
    expect(registry.storage.capabilities).to.deep.equal({ conditionalDelete: false });
    const etag = await registry.storage.put('doc', Buffer.from('v1'));
    expect(await registry.storage.delete('doc', { ifMatch: 'no-such-etag' })).to.equal(false);
    expect(await memory.head('doc')).to.deep.equal({ size: 2, etag });
    expect(await registry.storage.delete('doc', { ifMatch: etag! })).to.equal(true);
  });

  it('passes capabilities through the metrics wrapper too', async function () {
    const registry = new Registry({ storage: new MemoryStorage(), metrics: new ApprMetrics() });
    expect(registry.storage.capabilities).to.deep.equal({ conditionalDelete: true });
  });

  describe('putFile for an adapter without one (putStream of the file)', function () {
    let dir: string;
    beforeEach(async function () {
      dir = await mkdtemp(join(tmpdir(), 'checked-put-file-'));
    });
    afterEach(async function () {
      await rm(dir, { recursive: true, force: true });
    });

    /**
     * A host's adapter whose putStream does something of its own (a token refresh, say) before it reads the body:
     * here, for a deterministic test, until the file stream has opened or closed (failed).
     */
    function lateReader(inner: MemoryStorage): StorageAdapter {
      return {
        ...hostAdapter(inner),
        putStream: async (key, body, size, options) => {
          await new Promise((resolve) => {
            body.once('ready', resolve);
            body.once('close', resolve);
          });
          return inner.putStream(key, body, size, options);
        },
      };
    }

    it('stores the file for an adapter that reads the body late', async function () {
      const memory = new MemoryStorage();
      const file = join(dir, 'blob.tgz');
      await writeFile(file, 'bytes');
      const etag = await checkedStorage(lateReader(memory)).putFile('blobs/a', file, 5, { ifNoneMatch: '*' });
      expect(await memory.get('blobs/a')).to.deep.equal({ notModified: false, body: Buffer.from('bytes'), etag });
    });

    it('rejects a file that cannot be opened with StorageUnavailableError, never an uncaught stream error', async function () {
      // Before: the file stream's ENOENT was emitted before the adapter listened to it, an uncaught exception
      // (a dead server without a handler), then the adapter's read of the failed stream rejected with it as is.
      const memory = new MemoryStorage();
      const err = await rejection(checkedStorage(lateReader(memory)).putFile('blobs/a', join(dir, 'gone.tgz'), 5));
      expect(err).to.be.instanceOf(StorageUnavailableError);
      expect(await memory.head('blobs/a')).to.equal(null);
    });
  });
});
