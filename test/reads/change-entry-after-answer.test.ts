/**
 * A push answers once its release is stored, before its change entry (lib/core/feed.ts `record`) is written:
 * `flushChanges` and `close` wait for the entries still owed, and nothing about that entry (its write failing, the
 * host's `coherence.onError` throwing) may reach the push's caller or escape as an unhandled rejection.
 */
import { expect } from 'chai';
import { MemoryStorage, Registry, type WriteCondition } from '../../lib/index.js';
import { keys } from '../../lib/core/keys.js';
import { gate } from '../helpers/pause.js';
import { chart } from './helpers.js';

/** Memory storage whose change entry puts wait for `go`, or fail when `failChanges` is set. */
class HeldChanges extends MemoryStorage {
  hold = false;
  failChanges = false;
  readonly reached = gate();
  readonly go = gate();
  readonly written: string[] = [];

  override async put(key: string, body: Uint8Array, options?: WriteCondition): Promise<string | null> {
    if (key.startsWith(keys.changes()) && keys.parseChange(key) !== null) {
      if (this.failChanges) throw new Error('change entry write failed');
      if (this.hold) {
        this.reached.open();
        await this.go.opened;
      }
      const etag = await super.put(key, body, options);
      this.written.push(key);
      return etag;
    }
    return super.put(key, body, options);
  }
}

const noPolls = { pollMs: 0, sweepPerSecond: 0 };

/**
 * Runs `fn` with the process's unhandled rejections collected instead of reported, one turn of the event loop
 * past its end (they are reported once the microtask queue drains), and returns them.
 */
async function unhandledDuring(fn: (noted: unknown[]) => Promise<void>): Promise<unknown[]> {
  const unhandled: unknown[] = [];
  const onUnhandled = (reason: unknown): void => {
    unhandled.push(reason);
  };
  const listeners = process.listeners('unhandledRejection');
  process.removeAllListeners('unhandledRejection');
  process.on('unhandledRejection', onUnhandled);
  try {
    await fn(unhandled);
    await new Promise((resolve) => setImmediate(resolve));
  } finally {
    process.removeListener('unhandledRejection', onUnhandled);
    for (const listener of listeners) process.on('unhandledRejection', listener);
  }
  return unhandled;
}

describe('Change entries written after a push answers', () => {
  it('flushChanges and close resolve only once the entry owed is stored', async () => {
    const storage = new HeldChanges();
    const registry = new Registry({ storage, coherence: noPolls });
    await registry.sync();
    storage.hold = true;
    await registry.push({ namespace: 'ns', name: 'app', release: '1.0.0', blob: await chart('app', '1.0.0') });
    await storage.reached.opened; // the push answered; its entry waits
    const order: string[] = [];
    const flushed = registry.flushChanges().then(() => order.push('flushed'));
    const closed = registry.close().then(() => order.push('closed'));
    order.push('released');
    storage.go.open();
    await Promise.all([flushed, closed]);
    expect(order[0]).to.equal('released');
    expect(storage.written).to.have.length(1);
    expect(keys.parseChange(storage.written[0] as string)).to.include({ namespace: 'ns', name: 'app' });
  });

  it('another instance sees a push whose entry was owed once it is stored', async () => {
    const storage = new HeldChanges();
    const a = new Registry({ storage, coherence: noPolls });
    const b = new Registry({ storage, coherence: noPolls });
    await Promise.all([a.sync(), b.sync()]);
    await a.push({ namespace: 'ns', name: 'app', release: '1.0.0', blob: await chart('app', '1.0.0') });
    await b.listPackages({ namespace: 'ns' }); // b knows ns/app at 1.0.0
    storage.hold = true;
    await a.push({ namespace: 'ns', name: 'app', release: '2.0.0', blob: await chart('app', '2.0.0') });
    await storage.reached.opened;
    storage.go.open();
    await a.flushChanges();
    await b.sync();
    const releases = (await b.packageManifests('ns', 'app')).map((m) => m.release).sort();
    expect(releases).to.deep.equal(['1.0.0', '2.0.0']);
    await Promise.all([a.close(), b.close()]);
  });

  it('pushes of one package answered together share one entry, and another instance sees all of them', async () => {
    const storage = new HeldChanges();
    const a = new Registry({ storage, coherence: noPolls });
    const b = new Registry({ storage, coherence: noPolls });
    await Promise.all([a.sync(), b.sync()]);
    await a.push({ namespace: 'ns', name: 'app', release: '0.1.0', blob: await chart('0.1.0') });
    await b.listPackages({ namespace: 'ns' });
    const releases = ['1.0.0', '1.0.1', '1.0.2', '1.0.3'];
    const blobs = await Promise.all(releases.map((release) => chart(release)));
    const before = storage.written.length;
    // One group commit: the document's compare-and-swap answers them in one turn, so they share one entry.
    await Promise.all(
      releases.map((release, i) => a.push({ namespace: 'ns', name: 'app', release, blob: blobs[i] as Buffer })),
    );
    await a.flushChanges();
    expect(storage.written.length - before).to.be.within(1, releases.length);
    await b.sync();
    expect((await b.packageManifests('ns', 'app')).map((m) => m.release).sort()).to.deep.equal(['0.1.0', ...releases]);
    await Promise.all([a.close(), b.close()]);
  });

  it('a throwing coherence.onError neither fails the push nor escapes as an unhandled rejection', async () => {
    const storage = new HeldChanges();
    const seen: unknown[] = [];
    const registry = new Registry({
      storage,
      coherence: {
        ...noPolls,
        onError: (err) => {
          seen.push(err);
          throw new Error('the host rethrows');
        },
      },
    });
    await registry.sync();
    const unhandled = await unhandledDuring(async (noted) => {
      storage.failChanges = true;
      await registry.push({ namespace: 'ns', name: 'app', release: '1.0.0', blob: await chart('app', '1.0.0') });
      await registry.flushChanges().catch((err: unknown) => noted.push(err));
      await registry.close().catch((err: unknown) => noted.push(err));
    });
    expect(seen).to.have.length(1);
    expect(unhandled).to.deep.equal([]);
    expect((await registry.packageManifests('ns', 'app')).map((m) => m.release)).to.deep.equal(['1.0.0']);
  });
  it('times the entry when the push answered, not when the entry was written', async () => {
    const storage = new HeldChanges();
    let now = Date.UTC(2026, 0, 1);
    const registry = new Registry({ storage, coherence: noPolls, now: () => new Date(now) });
    await registry.sync();
    storage.hold = true;
    await registry.push({ namespace: 'ns', name: 'app', release: '1.0.0', blob: await chart('app', '1.0.0') });
    const answered = now;
    await storage.reached.opened;
    now += 60_000; // the entry names when the change was made; each poll's `maxClockSkewMs` window covers the delay
    storage.go.open();
    await registry.close();
    expect(keys.parseChange(storage.written[0] as string)?.time).to.equal(answered);
  });
  it('a throwing coherence.onError for a failed background poll escapes neither, and polling goes on', async () => {
    const storage = new MemoryStorage();
    const pushed = new Registry({ storage, coherence: noPolls });
    await pushed.push({ namespace: 'ns', name: 'app', release: '1.0.0', blob: await chart('app', '1.0.0') });
    await pushed.close();
    let failing = false;
    const listing = storage.list.bind(storage);
    storage.list = async (prefix, options) => {
      if (failing) throw new Error('listing failed');
      return listing(prefix, options);
    };
    let calls = 0;
    const twice = gate();
    const registry = new Registry({
      storage,
      coherence: {
        pollMs: 1,
        sweepPerSecond: 0,
        onError: () => {
          if (++calls === 2) twice.open();
          throw new Error('the host rethrows');
        },
      },
    });
    await registry.sync(); // loaded: the background polls start
    const unhandled = await unhandledDuring(async () => {
      failing = true;
      await twice.opened; // two failed polls reported: the second was scheduled after the first one's throw
    });
    failing = false;
    await registry.close();
    expect(unhandled).to.deep.equal([]);
  });
});
