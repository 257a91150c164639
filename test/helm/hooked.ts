/** A memory store whose blob streams can fail or stall and whose writes can wait, for the Helm tests of failures. */
import { Readable } from 'node:stream';
import { MemoryStorage, StorageUnavailableError, type StreamResult, type WriteCondition } from '../../lib/index.js';
import { gate } from '../helpers/pause.js';

/**
 * MemoryStorage whose blob streams can fail (at once, or after the first half of the blob's bytes) or stall after
 * that half (`failBlobStreams`), and whose next blob stream or document PUT can wait.
 */
export class Hooked extends MemoryStorage {
  failBlobStreams: 'no' | 'at-once' | 'midway' | 'stalled' = 'no';
  readonly handedOut: Readable[] = [];
  #holdDocs = false;
  readonly docPutReached = gate();
  readonly #docPutGo = gate();

  #holdStreams = false;
  readonly streamReached = gate();
  readonly #streamGo = gate();

  /** The next `getStream` of a blob waits for `releaseStream()` before it asks storage (opening `streamReached`). */
  holdNextBlobStream(): void {
    this.#holdStreams = true;
  }

  releaseStream(): void {
    this.#streamGo.open();
  }

  holdNextDocumentPut(): void {
    this.#holdDocs = true;
  }

  releaseDocumentPut(): void {
    this.#docPutGo.open();
  }

  override async getStream(key: string): Promise<StreamResult | null> {
    if (this.#holdStreams && key.startsWith('blobs/')) {
      this.#holdStreams = false;
      this.streamReached.open();
      await this.#streamGo.opened;
    }
    if (key.startsWith('blobs/') && this.failBlobStreams === 'at-once')
      throw new StorageUnavailableError('storage is down');
    const found = await super.getStream(key);
    if (found === null || !key.startsWith('blobs/')) return found;
    if (this.failBlobStreams === 'no') return found;
    found.body.destroy();
    const stalled = this.failBlobStreams === 'stalled';
    // The first half of the blob's own bytes: a reader that checks them (the Helm index inflates them) finds
    // nothing wrong until the failure.
    const whole = await super.get(key);
    const head = whole === null || whole.notModified ? Buffer.alloc(0) : whole.body.subarray(0, whole.body.length >> 1);
    const failing = Readable.from(
      (async function* () {
        yield head;
        // A hung mount or a peer that stopped sending: the next chunk never comes.
        if (stalled) await new Promise(() => undefined);
        throw new Error('storage connection reset');
      })(),
    );
    this.handedOut.push(failing);
    return { ...found, body: failing };
  }

  override async put(key: string, body: Uint8Array, options?: WriteCondition): Promise<string | null> {
    if (this.#holdDocs && key.startsWith('packages/')) {
      this.#holdDocs = false;
      this.docPutReached.open();
      await this.#docPutGo.opened;
    }
    return super.put(key, body, options);
  }
}
