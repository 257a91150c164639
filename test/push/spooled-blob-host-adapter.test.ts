/**
 * `putSpooled` (lib/core/push.ts) with a host's adapter: a plain object implementing `StorageAdapter`, without
 * `putFile`, so that the registry streams a spooled blob's temp file to its `putStream` (`putFileWith`). A plain
 * Error of that `putStream` while the temp file keeps its staged size is the adapter's own failure (a bug), and the
 * push rejects with it, unchanged, whether the adapter read none, part or all of the file; only a temp file whose size
 * changed is the host's disk failing (503, test/push/spooled-blob-size-changed.test.ts). Either way the temp file is
 * removed and no blob stored. A regression that told the two apart by the error (its message, its class) or by how
 * much of the stream was read would make an adapter's bug a 503 that a client retries for ever.
 */
import { randomBytes } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { expect } from 'chai';
import { MemoryStorage, Registry, type StorageAdapter } from '../../lib/index.js';
import { makeTarGz } from '../helpers/blobs.js';
import { rejection } from '../helpers/expect.js';
import { tempDir } from '../helpers/temp.js';

/** A host's adapter over `memory`, as a plain object without `putFile`, whose `putStream` is `putStream`. */
function hostAdapter(
  memory: MemoryStorage,
  putStream: (body: Readable, size: number) => Promise<string | null>,
): StorageAdapter {
  return {
    name: 'host',
    get: (key, options) => memory.get(key, options),
    put: (key, body, options) => memory.put(key, body, options),
    putStream: (_key, body, size) => putStream(body, size),
    getStream: (key) => memory.getStream(key),
    head: (key) => memory.head(key),
    delete: (key, options) => memory.delete(key, options),
    list: (prefix, options) => memory.list(prefix, options),
  };
}

describe("push: a host adapter's putStream fails with a plain Error while the spooled temp file keeps its size", function () {
  let spool: string;
  let tgz: Buffer;
  tempDir('appr-spool-host-', 'each', async (path) => {
    spool = path;
    tgz = await makeTarGz({ 'app/Chart.yaml': 'name: app\nversion: 1.0.0\n', 'app/noise.bin': randomBytes(200_000) });
  });

  const bug = new TypeError('a bug of the adapter');
  const reads: [string, (body: Readable, size: number) => Promise<number>][] = [
    ['reading nothing', async () => 0],
    [
      'after reading part of the file',
      async (body) => {
        for await (const chunk of body) return (chunk as Buffer).length;
        return 0;
      },
    ],
    [
      'after reading the whole file',
      async (body) => {
        let read = 0;
        for await (const chunk of body) read += (chunk as Buffer).length;
        return read;
      },
    ],
  ];
  for (const [what, read] of reads) {
    it(`rejects with that error, not storage-unavailable, ${what}; no blob, no temp file`, async function () {
      const memory = new MemoryStorage();
      let calls = 0;
      let bytesRead = -1;
      const storage = hostAdapter(memory, async (body, size) => {
        calls++;
        expect(size).to.equal(tgz.length);
        bytesRead = await read(body, size);
        throw bug;
      });
      const registry = new Registry({ storage, pushMemoryBytes: 4096, pushTmpDir: spool });
      try {
        for (const mediaType of ['kpm', 'helm']) {
          const err = await rejection(
            registry.push({ namespace: 'ns', name: 'app', release: '1.0.0', mediaType, blob: tgz }),
          );
          expect(err, mediaType).to.equal(bug);
          expect(await readdir(spool)).to.deep.equal([]);
        }
        expect(calls).to.equal(2);
        if (what.includes('whole')) expect(bytesRead).to.equal(tgz.length);
        else if (what.includes('part')) expect(bytesRead).to.be.within(1, tgz.length - 1);
        expect((await memory.list('blobs/')).keys).to.deep.equal([]);
        expect((await memory.list('packages/')).keys).to.deep.equal([]);
      } finally {
        await registry.close();
      }
    });
  }
});
