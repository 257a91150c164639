import { expect } from 'chai';
import { DocumentStore } from '../../lib/core/documents.js';
import { Registry } from '../../lib/index.js';
import { chart, CountingStorage } from './helpers.js';

/** Concurrent updates of one package on one instance: one compare-and-swap for all, each caller its own answer. */
describe('group commit of concurrent updates of one document', () => {
  it('applies 16 concurrent updates with two writes: the first alone, then the 15 that queued meanwhile', async () => {
    const storage = new CountingStorage();
    const docs = new DocumentStore(storage);
    const results = await Promise.all(
      Array.from({ length: 16 }, (_, i) =>
        docs.update<number[], number>('packages/ns/app.json', (current) => ({
          next: [...(current ?? []), i],
          result: i,
        })),
      ),
    );
    expect(results).to.deep.equal(Array.from({ length: 16 }, (_, i) => i));
    expect(storage.calls.filter((c) => c === 'put packages/ns/app.json')).to.have.length(2);
    expect((await docs.read<number[]>('packages/ns/app.json')).value).to.deep.equal(
      Array.from({ length: 16 }, (_, i) => i),
    );
  });

  it('answers each caller as if alone: a throwing update changes nothing, a too big one alone is refused', async () => {
    const storage = new CountingStorage();
    const docs = new DocumentStore(storage, {}, {}, { maxBytes: 100 });
    await docs.update<string[], void>('packages/ns/app.json', () => ({ next: ['a'], result: undefined }));
    const add = (item: string) =>
      docs
        .update<string[], string>('packages/ns/app.json', (current) => {
          if (current?.includes(item)) throw new Error(`${item} exists`);
          return { next: [...(current ?? []), item], result: item };
        })
        .catch((err: Error) => err.message);
    const answers = await Promise.all([add('b'), add('a'), add('x'.repeat(200)), add('c'), add('b')]);
    expect(answers).to.deep.equal([
      'b',
      'a exists',
      'The package would grow past 100 bytes: delete old releases, or push less metadata',
      'c',
      'b exists',
    ]);
    expect((await docs.read<string[]>('packages/ns/app.json')).value).to.deep.equal(['a', 'b', 'c']);
  });

  it('lets exactly one of concurrent pushes of one release win through the registry, and fails a batch whole on a storage error', async () => {
    const storage = new CountingStorage();
    const registry = new Registry({ storage, coherence: { pollMs: 0, sweepPerSecond: 0 } });
    const push = async (release: string, tag = release) =>
      registry.push({ namespace: 'ns', name: 'app', release, mediaType: 'helm', blob: await chart(release, tag) }).then(
        () => 200,
        (err: { status?: number }) => err.status ?? 500,
      );
    await push('0.0.1');
    const same = await Promise.all(Array.from({ length: 6 }, (_, i) => push('2.0.0', `writer ${i}`)));
    expect(same.sort()).to.deep.equal([200, 409, 409, 409, 409, 409]);
    storage.failPuts = (key) => key === 'packages/ns/app.json';
    expect(await Promise.all([push('1.0.0'), push('1.0.1'), push('1.0.2')])).to.deep.equal([503, 503, 503]);
    storage.failPuts = () => false;
    expect((await registry.packageManifests('ns', 'app')).map((m) => m.release)).to.deep.equal(['0.0.1', '2.0.0']);
    await registry.close();
  });
});
