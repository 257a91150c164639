import { expect } from 'chai';
import { mapLimit } from '../../lib/storage/util.js';

/** A promise and its resolve/reject, to settle an item when the test says so. */
function deferred<T>() {
  let resolve!: (value: T) => void;
  let reject!: (err: Error) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

const tick = () => new Promise<void>((resolve) => setImmediate(resolve));

describe('mapLimit', () => {
  it('maps every item, at most `limit` at once, with the results in the items’ order', async () => {
    let running = 0;
    let most = 0;
    const results = await mapLimit([5, 1, 4, 2, 3], 2, async (n) => {
      running += 1;
      most = Math.max(most, running);
      await new Promise((resolve) => setTimeout(resolve, n));
      running -= 1;
      return n * 10;
    });
    expect(results).to.deep.equal([50, 10, 40, 20, 30]);
    expect(most).to.equal(2);
  });

  it('starts nothing after a failure, and rejects with it only once the items under way have settled', async () => {
    const items = ['a', 'b', 'c', 'd', 'e'];
    const pending = new Map(items.map((item) => [item, deferred<string>()]));
    const started: string[] = [];
    const settled: string[] = [];
    const mapped = mapLimit(items, 2, async (item) => {
      started.push(item);
      try {
        return await (pending.get(item) as ReturnType<typeof deferred<string>>).promise;
      } finally {
        settled.push(item);
      }
    });
    let answered: unknown;
    mapped.then(
      () => (answered = 'resolved'),
      (err: Error) => (answered = err.message),
    );
    await tick();
    expect(started).to.deep.equal(['a', 'b']);

    pending.get('a')?.reject(new Error('a failed'));
    await tick();
    expect(answered, 'b is still under way').to.equal(undefined);
    pending.get('b')?.reject(new Error('b failed too'));
    await tick();
    expect(answered).to.equal('a failed');
    expect(started, 'nothing started after the failure').to.deep.equal(['a', 'b']);
    expect(settled).to.deep.equal(['a', 'b']);
  });

  it('resolves an empty list at once', async () => {
    expect(await mapLimit([], 4, () => Promise.reject(new Error('never called')))).to.deep.equal([]);
  });
});
