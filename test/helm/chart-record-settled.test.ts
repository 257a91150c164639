/**
 * A helm push writes its chart record while the rest of the round goes on (lib/core/push.ts `#storeChart`). It
 * must not answer, with success or an error, before that write has settled: a record landing after the answer
 * may land after a collector removed the bytes it describes, over the record of bytes stored since.
 */
import { expect } from 'chai';
import { MemoryStorage, Registry, StorageUnavailableError, type WriteCondition } from '../../lib/index.js';
import { HelmRepository } from '../../lib/helm/index.js';
import { sha256 } from '../helpers/http.js';
import { gate } from '../helpers/pause.js';
import { chartTgz } from './clients.js';

/**
 * Memory storage that holds every chart record put until `release()` (opening `reached`), with `holdBlob` every
 * blob put until `releaseBlob()` (opening `blobReached`), and fails metadata puts.
 */
class HeldRecordFailedMetadata extends MemoryStorage {
  holdBlob = false;
  readonly reached = gate();
  readonly blobReached = gate();
  readonly #go = gate();
  readonly #blob = gate();

  release(): void {
    this.#go.open();
  }

  releaseBlob(): void {
    this.#blob.open();
  }

  override async put(key: string, body: Uint8Array, options?: WriteCondition): Promise<string | null> {
    if (this.holdBlob && key.startsWith('blobs/')) {
      this.blobReached.open();
      await this.#blob.opened;
    }
    if (key.startsWith('charts/')) {
      this.reached.open();
      await this.#go.opened;
    }
    if (key.startsWith('metadata/')) throw new StorageUnavailableError('metadata refused');
    return super.put(key, body, options);
  }
}

/** Memory storage whose chart record puts hang until `release()`, then fail (a request answered after its deadline). */
class HangingRecord extends MemoryStorage {
  readonly #go = gate();

  release(): void {
    this.#go.open();
  }

  override async put(key: string, body: Uint8Array, options?: WriteCondition): Promise<string | null> {
    if (key.startsWith('charts/')) {
      await this.#go.opened;
      throw new StorageUnavailableError('late failure');
    }
    return super.put(key, body, options);
  }
}

/** Runs `fn` with unhandled rejections collected (one turn past its end) instead of reported; returns them. */
async function unhandledDuring(fn: () => Promise<void>): Promise<unknown[]> {
  const unhandled: unknown[] = [];
  const onUnhandled = (reason: unknown): void => void unhandled.push(reason);
  const listeners = process.listeners('unhandledRejection');
  process.removeAllListeners('unhandledRejection');
  process.on('unhandledRejection', onUnhandled);
  try {
    await fn();
    await new Promise((resolve) => setImmediate(resolve));
  } finally {
    process.removeListener('unhandledRejection', onUnhandled);
    for (const listener of listeners) process.on('unhandledRejection', listener);
  }
  return unhandled;
}

/**
 * A helm push of ns/web 1.0.0 with metadata, watched: `settled()` is undefined until it answers, then `pushed` or
 * its status; `turns()` gives it up to 50 turns of the event loop to answer (memory storage needs one per call).
 */
async function watchedPush(registry: Registry) {
  let settled: string | undefined;
  const pushing = registry
    .push({
      namespace: 'ns',
      name: 'web',
      release: '1.0.0',
      mediaType: 'helm',
      blob: await chartTgz({ name: 'web', version: '1.0.0' }),
      metadata: { description: 'web' },
    })
    .then(
      () => (settled = 'pushed'),
      (err: unknown) => (settled = String((err as { status?: number }).status)),
    );
  const turns = async () => {
    for (let turn = 0; turn < 50 && settled === undefined; turn += 1) await new Promise((r) => setImmediate(r));
  };
  return { pushing, settled: () => settled, turns };
}

describe('Chart records: a helm push answers only once its record is written', () => {
  it('answers a failure of another object of the round (503) after its record settled', async () => {
    const storage = new HeldRecordFailedMetadata();
    const registry = new Registry({ storage });
    const { pushing, settled, turns } = await watchedPush(registry);
    await storage.reached.opened;
    await turns(); // the metadata put fails at once
    const beforeRecord = settled();
    storage.release();
    await pushing;
    expect(beforeRecord).to.equal(undefined);
    expect(settled()).to.equal('503');
  });

  it('answers a failure of another object of the round (503) only once its blob, then its record, settled', async () => {
    const storage = new HeldRecordFailedMetadata();
    storage.holdBlob = true;
    const registry = new Registry({ storage });
    const { pushing, settled, turns } = await watchedPush(registry);
    await storage.blobReached.opened;
    await turns(); // the metadata put has failed meanwhile
    const beforeBlob = settled();
    storage.releaseBlob(); // the blob is stored: its record is started now
    await storage.reached.opened;
    await turns();
    const beforeRecord = settled();
    storage.release();
    await pushing;
    expect(beforeBlob).to.equal(undefined);
    expect(beforeRecord).to.equal(undefined);
    expect(settled()).to.equal('503');
  });

  it('answers once the storage deadline gives up on its record, lists the bytes stored, and leaves no rejection', async () => {
    const storage = new HangingRecord();
    const warnings: unknown[] = [];
    const logger = { warn: (obj: object) => void warnings.push(obj), info: () => {}, error: () => {} };
    // The deadline of a put is 50 ms plus a second per MiB begun: about a second for a record.
    const registry = new Registry({ storage, storageTimeoutMs: 50, logger });
    const tgz = await chartTgz({ name: 'web', version: '1.0.0' });
    const unhandled = await unhandledDuring(async () => {
      await registry.push({ namespace: 'ns', name: 'web', release: '1.0.0', mediaType: 'helm', blob: tgz });
      expect(warnings).to.have.length(1); // the record not written is reported, the push published
      const index = await new HelmRepository(registry).chartVersions('ns', 'web');
      expect(index.map((entry) => entry.digest)).to.deep.equal([sha256(tgz)]);
      storage.release(); // the abandoned put fails late
      await new Promise((resolve) => setTimeout(resolve, 10));
    });
    expect(unhandled).to.deep.equal([]);
  });
});
