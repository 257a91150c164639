import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { StorageUnavailableError } from '../../lib/errors.js';
import { checkedStorage, type CheckedStorage } from '../../lib/storage/checked.js';
import type { StorageAdapter } from '../../lib/storage/types.js';
import { DELETE_MANY_MAX, MAX_STORAGE_KEY_LENGTH, MAX_STORAGE_SEGMENT_LENGTH } from '../../lib/storage/util.js';
import { rejection } from '../helpers/expect.js';
import { uniqueName } from '../helpers/unique.js';

/**
 * The one contract every storage adapter passes. Each test gets a fresh adapter from `make`, wrapped by
 * `checkedStorage` as the Registry wraps it (the key, prefix and limit rules are enforced there, once for every
 * adapter), and its own random key prefix, and deletes what it wrote, so the suite can run against a shared (slow)
 * S3 bucket: no test needs more than about a hundred requests. Conditional-delete races run only for adapters that
 * declare `capabilities.conditionalDelete` (the others check, then delete).
 */
export function describeStorageContract(
  label: string,
  make: () => Promise<{ storage: StorageAdapter; cleanup: () => Promise<void> }>,
): void {
  describe(`storage contract: ${label}`, function () {
    let storage: CheckedStorage;
    /** What `make` returned, unwrapped. */
    let raw: StorageAdapter;
    let cleanup: () => Promise<void>;
    /** This test's own key prefix. */
    let p: string;

    beforeEach(async function () {
      ({ storage: raw, cleanup } = await make());
      storage = checkedStorage(raw);
      p = `contract/${uniqueName('run')}/`;
    });

    afterEach(async function () {
      try {
        for (const key of await listAll(storage, p, 1000)) await storage.delete(key);
      } finally {
        await storage.close?.();
        await cleanup();
      }
    });

    it('reads back what it wrote, with the ETag put returned', async function () {
      const etag = await storage.put(`${p}doc.json`, Buffer.from('{"a":1}'));
      expect(etag).to.be.a('string').and.not.equal('');
      const got = await storage.get(`${p}doc.json`);
      expect(got).to.deep.equal({ notModified: false, body: Buffer.from('{"a":1}'), etag });
    });

    it('answers null for a missing key from get, getStream and head', async function () {
      expect(await storage.get(`${p}missing`)).to.equal(null);
      expect(await storage.getStream(`${p}missing`)).to.equal(null);
      expect(await storage.head(`${p}missing`)).to.equal(null);
    });

    it('keeps its own copy: mutating the written or the returned buffer changes nothing', async function () {
      const written = Buffer.from('original');
      await storage.put(`${p}doc`, written);
      written.fill(0);
      const first = await storage.get(`${p}doc`);
      if (first === null || first.notModified) throw new Error('expected a body');
      first.body.fill(0);
      const second = await storage.get(`${p}doc`);
      expect(second).to.have.property('body').that.deep.equals(Buffer.from('original'));
    });

    it('gives every write a new ETag', async function () {
      const etags = [];
      for (const body of ['one', 'two', 'three']) etags.push(await storage.put(`${p}doc`, Buffer.from(body)));
      expect(new Set(etags).size).to.equal(3);
      expect(await storage.get(`${p}doc`)).to.have.property('etag', etags[2]);
    });

    it('answers notModified to ifNoneMatch with the current ETag, and the body to a stale one', async function () {
      const stale = await storage.put(`${p}doc`, Buffer.from('v1'));
      const current = await storage.put(`${p}doc`, Buffer.from('v2'));
      expect(await storage.get(`${p}doc`, { ifNoneMatch: current! })).to.deep.equal({
        notModified: true,
        etag: current,
      });
      expect(await storage.get(`${p}doc`, { ifNoneMatch: stale! })).to.deep.equal({
        notModified: false,
        body: Buffer.from('v2'),
        etag: current,
      });
    });

    it('creates if absent only once: the second create returns null and keeps the first bytes', async function () {
      const first = await storage.put(`${p}blob`, Buffer.from('first'), { ifNoneMatch: '*' });
      expect(first).to.be.a('string');
      expect(await storage.put(`${p}blob`, Buffer.from('second'), { ifNoneMatch: '*' })).to.equal(null);
      expect(await storage.get(`${p}blob`)).to.deep.equal({
        notModified: false,
        body: Buffer.from('first'),
        etag: first,
      });
    });

    it('lets exactly one of 8 concurrent creates of one key win', async function () {
      const bodies = Array.from({ length: 8 }, (_, i) => Buffer.from(`writer ${i}`));
      const results = await Promise.all(bodies.map((body) => storage.put(`${p}blob`, body, { ifNoneMatch: '*' })));
      const winners = results.flatMap((etag, i) => (etag === null ? [] : [i]));
      expect(winners).to.have.length(1);
      const winner = winners[0]!;
      expect(await storage.get(`${p}blob`)).to.deep.equal({
        notModified: false,
        body: bodies[winner],
        etag: results[winner],
      });
    });

    it('replaces with ifMatch of the current ETag; a stale or wrong one returns null, bytes kept', async function () {
      const v1 = await storage.put(`${p}doc`, Buffer.from('v1'));
      const v2 = await storage.put(`${p}doc`, Buffer.from('v2'), { ifMatch: v1! });
      expect(v2).to.be.a('string').and.not.equal(v1);
      expect(await storage.put(`${p}doc`, Buffer.from('stale'), { ifMatch: v1! })).to.equal(null);
      expect(await storage.put(`${p}doc`, Buffer.from('wrong'), { ifMatch: 'no-such-etag' })).to.equal(null);
      expect(await storage.get(`${p}doc`)).to.deep.equal({ notModified: false, body: Buffer.from('v2'), etag: v2 });
    });

    it('returns null for ifMatch on a missing key, creating nothing', async function () {
      const etag = await storage.put(`${p}other`, Buffer.from('x'));
      expect(await storage.put(`${p}doc`, Buffer.from('v1'), { ifMatch: etag! })).to.equal(null);
      expect(await storage.get(`${p}doc`)).to.equal(null);
    });

    it('loses no update when 8 writers increment one counter with read / compare-and-swap loops', async function () {
      const key = `${p}counter.json`;
      await storage.put(key, Buffer.from(JSON.stringify({ n: 0 })), { ifNoneMatch: '*' });
      await Promise.all(Array.from({ length: 8 }, () => increment(storage, key)));
      const got = await storage.get(key);
      if (got === null || got.notModified) throw new Error('expected the counter');
      expect(JSON.parse(got.body.toString())).to.deep.equal({ n: 8 });
    });

    it('deletes once: true, then false', async function () {
      await storage.put(`${p}doc`, Buffer.from('v2'));
      expect(await storage.delete(`${p}doc`)).to.equal(true);
      expect(await storage.head(`${p}doc`)).to.equal(null);
      expect(await storage.delete(`${p}doc`)).to.equal(false);
    });

    it('deletes many keys at once: the listed ones, absent ones being no error, and nothing else', async function () {
      const names = ['a', 'b/c', 'b/d', 'e'];
      for (const name of names) await storage.put(`${p}${name}`, Buffer.from(name));
      await storage.deleteMany([`${p}a`, `${p}b/c`, `${p}b/d`, `${p}missing`, `${p}b/missing`]);
      expect(await listAll(storage, p, 1000)).to.deep.equal([`${p}e`]);
      expect(await storage.head(`${p}b/c`)).to.equal(null);
      await storage.deleteMany([]);
      expect(await listAll(storage, p, 1000)).to.deep.equal([`${p}e`]);
    });

    it('refuses more than DELETE_MANY_MAX keys, or a bad key, in one deleteMany, deleting nothing', async function () {
      await storage.put(`${p}kept`, Buffer.from('x'));
      const tooMany = Array.from({ length: DELETE_MANY_MAX + 1 }, (_, i) => `${p}k${i}`);
      expect((await rejection(storage.deleteMany([`${p}kept`, ...tooMany]))).message).to.match(/at most 1000 keys/);
      expect((await rejection(storage.deleteMany([`${p}kept`, `${p}../x`]))).message).to.match(/^invalid storage key /);
      expect(await listAll(storage, p, 1000)).to.deep.equal([`${p}kept`]);
    });

    it('declares its capabilities, and the wrapper passes them on', async function () {
      expect(raw.capabilities).to.have.property('conditionalDelete').that.is.a('boolean');
      expect(storage.capabilities).to.deep.equal({ conditionalDelete: raw.capabilities?.conditionalDelete });
    });

    describe('conditional delete', function () {
      it('deletes with the current ETag only: a wrong one keeps the object, then false', async function () {
        const etag = await storage.put(`${p}doc`, Buffer.from('v1'));
        expect(await storage.delete(`${p}doc`, { ifMatch: 'no-such-etag' })).to.equal(false);
        expect(await storage.get(`${p}doc`)).to.have.property('etag', etag);
        expect(await storage.delete(`${p}doc`, { ifMatch: etag! })).to.equal(true);
        expect(await storage.get(`${p}doc`)).to.equal(null);
        expect(await storage.delete(`${p}doc`, { ifMatch: etag! })).to.equal(false);
      });

      it('lets exactly one of 4 replaces and 4 deletes conditioned on one ETag win', async function () {
        if (!raw.capabilities?.conditionalDelete) this.skip();
        const etag = (await storage.put(`${p}doc`, Buffer.from('v1')))!;
        const results = await Promise.all(
          Array.from({ length: 8 }, (_, i) =>
            i % 2 === 0
              ? storage.put(`${p}doc`, Buffer.from(`writer ${i}`), { ifMatch: etag })
              : storage.delete(`${p}doc`, { ifMatch: etag }),
          ),
        );
        const winners = results.flatMap((result, i) => (result === null || result === false ? [] : [i]));
        expect(winners).to.have.length(1);
        const winner = winners[0]!;
        const got = await storage.get(`${p}doc`);
        if (winner % 2 === 1) expect(got).to.equal(null);
        else
          expect(got).to.deep.equal({
            notModified: false,
            body: Buffer.from(`writer ${winner}`),
            etag: results[winner],
          });
      });
    });

    describe('invalid keys, prefixes and limits (refused by the wrapper before the adapter sees them)', function () {
      const badKeys: [string, (p: string) => string][] = [
        ['a ".." segment', (p) => `${p}../escape`],
        ['a "." segment', (p) => `${p}./x`],
        ['an empty segment', (p) => `${p}a//b`],
        ['a trailing "/"', (p) => `${p}a/`],
        ['a leading "/"', (p) => `/${p}a`],
        ['the empty key', () => ''],
        ['a "%"', (p) => `${p}a%2Fb`],
        ['a NUL', (p) => `${p}a\u0000b`],
        ['a space', (p) => `${p}a b`],
        ['a non-ASCII character', (p) => `${p}caf\u00e9`],
        ['a backslash', (p) => `${p}a\\..\\b`],
        ['a segment over the length limit', (p) => `${p}${'s'.repeat(MAX_STORAGE_SEGMENT_LENGTH + 1)}`],
        ['a key over the length limit', (p) => `${p}${'k/'.repeat(MAX_STORAGE_KEY_LENGTH / 2)}k`],
      ];
      for (const [label, bad] of badKeys) {
        it(`refuses ${label} in every operation, writing nothing`, async function () {
          const key = bad(p);
          const operations: [string, () => Promise<unknown>][] = [
            ['get', () => storage.get(key)],
            ['put', () => storage.put(key, Buffer.from('x'))],
            ['put ifNoneMatch', () => storage.put(key, Buffer.from('x'), { ifNoneMatch: '*' })],
            ['putStream', () => storage.putStream(key, Readable.from([Buffer.from('x')]), 1)],
            ['putFile', () => storage.putFile(key, join(tmpdir(), 'no-such-file'), 1)],
            ['getStream', () => storage.getStream(key)],
            ['head', () => storage.head(key)],
            ['delete', () => storage.delete(key)],
          ];
          for (const [name, run] of operations) {
            const err = await rejection(run());
            expect(err.message, name).to.match(/^invalid storage key /);
            expect(err.message.length, name).to.be.below(200);
          }
          expect(await listAll(storage, p, 1000)).to.deep.equal([]);
        });
      }

      it('accepts a segment of the longest length', async function () {
        // Not a key of MAX_STORAGE_KEY_LENGTH: with its test prefix, that is more than Ceph RGW takes (about 416).
        const key = `${p}${'s'.repeat(MAX_STORAGE_SEGMENT_LENGTH)}/k`;
        const etag = await storage.put(key, Buffer.from('x'));
        expect(await storage.head(key)).to.deep.equal({ size: 1, etag });
      });

      it('refuses invalid list prefixes and limits', async function () {
        for (const prefix of [
          '/',
          `/${p}`,
          `${p}a//`,
          `${p}../`,
          `${p}a%`,
          `${p}a\u0000`,
          `${p}${'x'.repeat(MAX_STORAGE_KEY_LENGTH)}`,
        ]) {
          const err = await rejection(storage.list(prefix));
          expect(err.message, prefix.slice(0, 40)).to.match(/^invalid storage (key|list prefix) /);
        }
        for (const limit of [0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY]) {
          const err = await rejection(storage.list(p, { limit }));
          expect(err.message, String(limit)).to.match(/^invalid list limit /);
        }
        expect(await storage.list(p, { limit: 5000 })).to.deep.equal({ keys: [] });
      });
    });

    it('streams a 3 MB object in and out, reporting its size and ETag', async function () {
      const data = randomBytes(3 * 1024 * 1024 + 17);
      const etag = await storage.putStream(`${p}blob`, chunked(data), data.length, { ifNoneMatch: '*' });
      expect(etag).to.be.a('string');
      const got = await storage.getStream(`${p}blob`);
      if (got === null) throw new Error('expected a stream');
      expect({ size: got.size, etag: got.etag }).to.deep.equal({ size: data.length, etag });
      expect((await readAll(got.body)).equals(data)).to.equal(true);
      expect(await storage.head(`${p}blob`)).to.deep.equal({ size: data.length, etag });
    });

    it('rejects a putStream whose stream is shorter or longer than its size, leaving nothing', async function () {
      const data = randomBytes(1000);
      await rejection(storage.putStream(`${p}short`, chunked(data), data.length + 1));
      await rejection(storage.putStream(`${p}long`, chunked(data), data.length - 1));
      expect(await storage.head(`${p}short`)).to.equal(null);
      expect(await storage.head(`${p}long`)).to.equal(null);

      const etag = await storage.put(`${p}doc`, Buffer.from('kept'));
      await rejection(storage.putStream(`${p}doc`, chunked(data), data.length + 1));
      expect(await storage.get(`${p}doc`)).to.deep.equal({ notModified: false, body: Buffer.from('kept'), etag });
    });

    it('rejects a putStream whose source fails, leaving nothing', async function () {
      const failing = Readable.from(
        (async function* () {
          yield Buffer.alloc(1000, 1);
          throw new Error('client went away');
        })(),
      );
      await rejection(storage.putStream(`${p}blob`, failing, 2000));
      expect(await storage.head(`${p}blob`)).to.equal(null);
    });

    it('applies conditions to putStream: ifNoneMatch on an existing key is null, ifMatch compares', async function () {
      const data = randomBytes(1000);
      const etag = await storage.put(`${p}blob`, Buffer.from('first'));
      expect(await storage.putStream(`${p}blob`, chunked(data), data.length, { ifNoneMatch: '*' })).to.equal(null);
      expect(await storage.putStream(`${p}blob`, chunked(data), data.length, { ifMatch: 'no-such-etag' })).to.equal(
        null,
      );
      expect(await storage.get(`${p}blob`)).to.deep.equal({ notModified: false, body: Buffer.from('first'), etag });

      const replaced = await storage.putStream(`${p}blob`, chunked(data), data.length, { ifMatch: etag! });
      expect(await storage.get(`${p}blob`)).to.deep.equal({ notModified: false, body: data, etag: replaced });
    });

    describe("putFile (the adapter's, or the wrapper's putStream of the file)", function () {
      let dir: string;
      beforeEach(async function () {
        dir = await mkdtemp(join(tmpdir(), 'contract-put-file-'));
      });
      afterEach(async function () {
        await rm(dir, { recursive: true, force: true });
      });

      it("stores a file of more than one 256 KiB read, with putStream's conditions, leaving the file as it was", async function () {
        const data = randomBytes(1024 * 1024 + 17);
        const file = join(dir, 'blob.tgz');
        await writeFile(file, data);
        const etag = await storage.putFile(`${p}blob`, file, data.length, { ifNoneMatch: '*' });
        expect(etag).to.be.a('string');
        expect(await storage.get(`${p}blob`)).to.deep.equal({ notModified: false, body: data, etag });
        expect(await storage.putFile(`${p}blob`, file, data.length, { ifNoneMatch: '*' })).to.equal(null);
        expect(await storage.putFile(`${p}blob`, file, data.length, { ifMatch: 'no-such-etag' })).to.equal(null);
        expect(await storage.head(`${p}blob`)).to.deep.equal({ size: data.length, etag });

        const other = join(dir, 'other.tgz');
        await writeFile(other, 'second');
        const replaced = await storage.putFile(`${p}blob`, other, 6, { ifMatch: etag! });
        expect(replaced).to.be.a('string').and.not.equal(etag);
        expect(await storage.get(`${p}blob`)).to.deep.equal({
          notModified: false,
          body: Buffer.from('second'),
          etag: replaced,
        });
        expect((await readFile(file)).equals(data)).to.equal(true);
      });

      it('rejects a putFile whose file is shorter or longer than its size, or missing, leaving nothing', async function () {
        const data = randomBytes(1000);
        const file = join(dir, 'blob.tgz');
        await writeFile(file, data);
        await rejection(storage.putFile(`${p}short`, file, data.length + 1));
        await rejection(storage.putFile(`${p}long`, file, data.length - 1));
        await rejection(storage.putFile(`${p}missing`, join(dir, 'missing.tgz'), 10));
        for (const key of ['short', 'long', 'missing']) expect(await storage.head(`${p}${key}`), key).to.equal(null);

        const etag = await storage.put(`${p}doc`, Buffer.from('kept'));
        await rejection(storage.putFile(`${p}doc`, file, data.length + 1));
        expect(await storage.get(`${p}doc`)).to.deep.equal({ notModified: false, body: Buffer.from('kept'), etag });
      });

      it('rejects a putFile whose file cannot be read (missing, a directory) with StorageUnavailableError', async function () {
        // The local disk failing, as FsStorage's own putFile says: a push answers 503, not 500 (before: the
        // fallback's putStream rethrew the read stream's ENOENT or EISDIR as is).
        const unreadable: [string, string][] = [
          ['missing', join(dir, 'missing.tgz')],
          ['directory', dir],
        ];
        for (const [what, path] of unreadable) {
          const err = await rejection(storage.putFile(`${p}${what}`, path, 10, { ifNoneMatch: '*' }));
          expect(err, what).to.be.instanceOf(StorageUnavailableError);
          expect(await storage.head(`${p}${what}`), what).to.equal(null);
        }
      });
    });

    it('reports size and ETag from head', async function () {
      const etag = await storage.put(`${p}doc`, Buffer.from('12345'));
      expect(await storage.head(`${p}doc`)).to.deep.equal({ size: 5, etag });
      const empty = await storage.put(`${p}empty`, Buffer.alloc(0));
      expect(await storage.head(`${p}empty`)).to.deep.equal({ size: 0, etag: empty });
    });

    it('lists in pages of at most the limit, every key exactly once, in byte order', async function () {
      // Chosen so that byte order differs from a naive directory walk ('-' < '/' < '0'), and so that page boundaries
      // fall inside nested "directories".
      const names = ['a0', 'a/y/z', 'a-1', 'a/z', 'a/x'];
      for (const name of names) await storage.put(`${p}${name}`, Buffer.from(name));
      const pages: string[][] = [];
      let cursor: string | undefined;
      do {
        const page = await storage.list(p, { limit: 2, ...(cursor === undefined ? {} : { cursor }) });
        expect(page.keys.length).to.be.at.most(2);
        pages.push(page.keys);
        cursor = page.next;
        expect(pages.length).to.be.below(10);
      } while (cursor !== undefined);
      expect(pages.length).to.be.at.least(3);
      expect(pages.flat()).to.deep.equal(byteSorted(names.map((name) => `${p}${name}`)));
    });

    it('treats the list prefix as a string prefix, not a directory', async function () {
      const names = ['a/b/1', 'a/b/2', 'a/bc/3', 'a/b-c', 'a/b.d', 'a/c/4', 'ab/5'];
      for (const name of names) await storage.put(`${p}${name}`, Buffer.from(name));
      const list = async (prefix: string) =>
        (await listAll(storage, `${p}${prefix}`, 1000)).map((key) => key.slice(p.length));
      expect(await list('a/b/')).to.deep.equal(['a/b/1', 'a/b/2']);
      expect(await list('a/b')).to.deep.equal(['a/b-c', 'a/b.d', 'a/b/1', 'a/b/2', 'a/bc/3']);
      expect(await list('a/bc/')).to.deep.equal(['a/bc/3']);
      expect(await list('a')).to.deep.equal(byteSorted(names));
      expect(await list('a/')).to.deep.equal(byteSorted(names.filter((n) => n.startsWith('a/'))));
    });

    it('lists an empty page, without next, for a prefix with no keys', async function () {
      await storage.put(`${p}a/b`, Buffer.from('x'));
      expect(await storage.list(`${p}a/c`)).to.deep.equal({ keys: [] });
      expect(await storage.list(`${p}nothing/`)).to.deep.equal({ keys: [] });
      expect(await storage.list(`${p}a/`, { limit: 1 })).to.deep.equal({ keys: [`${p}a/b`] });
    });

    it("handles keys made of '+', '.', '-', '_', digits and both cases", async function () {
      const keys = [`${p}Pkg_1/1.0.0-rc.1+build.5`, `${p}pkg-2/v.json`, `${p}pkg-2/_x+y`];
      for (const key of keys) expect(await storage.put(key, Buffer.from(key), { ifNoneMatch: '*' })).to.be.a('string');
      for (const key of keys) {
        expect(await storage.get(key))
          .to.have.property('body')
          .that.deep.equals(Buffer.from(key));
      }
      expect(await listAll(storage, p, 2)).to.deep.equal(byteSorted(keys));
    });
  });
}

/** A read / compare-and-swap loop with jitter, as the registry's document layer does. */
async function increment(storage: StorageAdapter, key: string): Promise<void> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const current = await storage.get(key);
    if (current === null || current.notModified) throw new Error('the counter is missing');
    const { n } = JSON.parse(current.body.toString()) as { n: number };
    if ((await storage.put(key, Buffer.from(JSON.stringify({ n: n + 1 })), { ifMatch: current.etag })) !== null) return;
    await sleep(Math.random() * 5 * Math.min(attempt + 1, 4));
  }
  throw new Error('increment: too much contention');
}

async function listAll(storage: StorageAdapter, prefix: string, limit: number): Promise<string[]> {
  const keys: string[] = [];
  let cursor: string | undefined;
  do {
    const page = await storage.list(prefix, { limit, ...(cursor === undefined ? {} : { cursor }) });
    keys.push(...page.keys);
    cursor = page.next;
  } while (cursor !== undefined);
  return keys;
}

function byteSorted(keys: string[]): string[] {
  return [...keys].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
}

/** A stream of 64 KiB chunks, like a request body. */
function chunked(data: Buffer): Readable {
  return Readable.from(
    (function* () {
      for (let offset = 0; offset < data.length; offset += 65536) yield data.subarray(offset, offset + 65536);
    })(),
  );
}

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}
