/**
 * A pull of a small blob reads it through the memory cache of blobs (lib/core/registry.ts). A push of the same tar
 * drops the key from that cache (the bytes stored under the digest may be another gzip of it), and so does a purge:
 * when that happens while a pull's read of the key is in flight, the pull must still be answered from storage, not
 * fail with the cache's "deleted" (it answered 500 internal-error, about one pull in twenty under such a race); a storage failure of
 * the read is still that failure.
 */
import { expect } from 'chai';
import { keys } from '../../lib/core/keys.js';
import {
  MemoryStorage,
  Registry,
  StorageUnavailableError,
  type GetResult,
  type StreamResult,
} from '../../lib/index.js';
import { makeTarGz } from '../helpers/blobs.js';
import { gate, type Gate } from '../helpers/pause.js';

/** A memory store whose next `get` of `paused.key` reads, then waits for `go` (after opening `reached`). */
class GetPausingStorage extends MemoryStorage {
  paused: { key: string; reached: Gate; go: Gate } | undefined;
  /** A key whose `get` fails (storage down), and the number of `getStream` calls. */
  failGet: string | undefined;
  streamed = 0;

  override async getStream(key: string): Promise<StreamResult | null> {
    this.streamed += 1;
    return super.getStream(key);
  }

  override async get(key: string, options?: { ifNoneMatch?: string }): Promise<GetResult | null> {
    if (key === this.failGet) throw new StorageUnavailableError(`GET ${key} failed`);
    const paused = this.paused;
    if (paused === undefined || paused.key !== key) return super.get(key, options);
    this.paused = undefined;
    const read = await super.get(key, options);
    paused.reached.open();
    await paused.go.opened;
    return read;
  }
}

async function bytesOf(pulled: { blob: { body: NodeJS.ReadableStream } }): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of pulled.blob.body) chunks.push(Buffer.from(chunk as Buffer));
  return Buffer.concat(chunks);
}

describe('reads: a pull whose cached read of the blob is dropped meanwhile', function () {
  const quiet = { pollMs: 0, sweepPerSecond: 0 };
  const release = { namespace: 'ns', name: 'app', mediaType: 'helm' };
  let storage: GetPausingStorage;
  let registry: Registry;
  let reader: Registry;
  let blob: Buffer;
  let key: string;

  beforeEach(async function () {
    storage = new GetPausingStorage();
    registry = new Registry({ storage, coherence: quiet });
    blob = await makeTarGz({ 'app/Chart.yaml': 'name: app\nversion: 1.0.0\n' });
    await registry.push({ ...release, release: '1.0.0', blob });
    key = keys.blob('ns', 'app', (await registry.showManifest('ns', 'app', '1.0.0', 'helm')).content.digest);
    // A registry that has not cached the blob yet (the pusher's own read would be a hit).
    reader = new Registry({ storage, coherence: quiet });
  });
  afterEach(async function () {
    await registry.close();
    await reader.close();
  });

  /** A pull of 1.0.0 by `reader` whose read of the blob waits while `reader` pushes the same tar as 1.0.1. */
  async function pullDuringPush(): Promise<Buffer> {
    const paused = { key, reached: gate(), go: gate() };
    storage.paused = paused;
    const pulling = reader.pull('ns', 'app', '1.0.0', 'helm');
    await paused.reached.opened;
    await reader.push({ ...release, release: '1.0.1', blob });
    paused.go.open();
    return bytesOf(await pulling);
  }

  it('answers with the blob when a push of the same tar drops the key during the read', async function () {
    expect((await pullDuringPush()).equals(blob)).to.equal(true);
  });

  it('reads storage again when its read found nothing and the key was dropped meanwhile', async function () {
    // The bytes gone (a collector removed them), then stored again by a push of the same tar during the pull's read.
    await storage.delete(key);
    expect((await pullDuringPush()).equals(blob)).to.equal(true);
  });

  it('fails with the storage failure of its read (503), not by reading again', async function () {
    storage.failGet = key;
    const failed = await reader.pull('ns', 'app', '1.0.0', 'helm').then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(failed).to.be.instanceOf(StorageUnavailableError);
    expect(storage.streamed).to.equal(0);
  });
});
