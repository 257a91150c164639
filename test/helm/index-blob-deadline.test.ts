/**
 * The Helm index's read of a release's blob (no usable chart record: lib/helm/index.ts `#loadChart`) has a deadline
 * of its own, the storage deadline plus one second per MiB (as a push's read of stored bytes, lib/core/push.ts
 * `#storedDigest`): lib/storage/deadline.ts bounds a stream only until it is handed over, and a stream that stalls
 * after that (a hung mount, a frozen RGW) kept the index request unanswered. Now the client gets `503
 * storage-unavailable` (ChartMuseum's `{"error"}` body on the Helm routes), the stream is destroyed, nothing about
 * the release is remembered, and the next index once storage answers again lists the chart.
 */
import { expect } from 'chai';
import { ERRORS } from '../../lib/errors.js';
import { keys } from '../../lib/core/keys.js';
import { digestOf } from '../helpers/blobs.js';
import { sha256, startServer, type TestServer } from '../helpers/http.js';
import { chartTgz } from './clients.js';
import { Hooked } from './hooked.js';

describe('Helm index: a blob read that stalls', () => {
  let storage: Hooked;
  let server: TestServer;

  beforeEach(async () => {
    storage = new Hooked();
    server = await startServer({
      storage,
      onError: () => undefined,
      // Streamed from storage, not from the registry's memory cache of small blobs.
      cache: { blobMaxBytes: 0 },
      storageTimeoutMs: 300,
    });
  });

  afterEach(async () => {
    await server.close();
  });

  for (const failure of ['stalled', 'midway'] as const) {
    it(`answers 503 storage-unavailable when the stream ${failure === 'stalled' ? 'never ends' : 'fails'}, then lists the chart once storage answers`, async () => {
      const tgz = await chartTgz({ name: 'web', version: '1.0.0', extra: 'appVersion: "5"\n' });
      const pushed = await server.request('POST', '/api/v1/packages/ns/web', {
        json: { release: '1.0.0', media_type: 'helm', blob: tgz.toString('base64') },
      });
      expect(pushed.status, pushed.text).to.equal(200);
      // No chart record: the index must read the blob.
      expect(await storage.delete(keys.chart('ns', 'web', await digestOf(tgz)))).to.equal(true);

      storage.failBlobStreams = failure;
      const failed = await server.request('GET', '/helm/ns/index.yaml');
      expect(failed.status, failed.text).to.equal(503);
      expect(failed.json).to.deep.equal({ error: ERRORS['storage-unavailable'].message });
      expect(storage.handedOut).to.have.length(1);
      expect(storage.handedOut[0]?.destroyed).to.equal(true);

      storage.failBlobStreams = 'no';
      const index = await server.request('GET', '/helm/ns/index.yaml');
      expect(index.status, index.text).to.equal(200);
      expect(index.text)
        .to.include(`digest: ${sha256(tgz)}`)
        .and.include('appVersion: "5"');
    });
  }
});
