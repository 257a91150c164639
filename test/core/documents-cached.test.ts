/**
 * `DocumentStore.update` with `options.cached` (a push's compare-and-swap, lib/core/push.ts): the first attempt
 * starts from the cached version, and only a successful compare-and-swap is decided on it. Every other answer (an
 * error, no change, a document past the limit) comes from a fresh read, and that read costs no attempt.
 */
import { expect } from 'chai';
import { DocumentStore, type Update } from '../../lib/core/documents.js';
import { ApprError } from '../../lib/errors.js';
import { MemoryStorage } from '../../lib/index.js';
import { rejection } from '../helpers/expect.js';

type Slot = { taken: boolean };
const take = (doc: Slot | null): Update<Slot, string> => {
  if (doc?.taken) throw new Error('taken already');
  return { next: { taken: true }, result: 'taken now' };
};
const takeOrNothing = (doc: Slot | null): Update<Slot, string> =>
  doc?.taken ? { result: 'taken already' } : { next: { taken: true }, result: 'taken now' };
const set = (value: Slot) => () => ({ next: value, result: undefined });

describe('DocumentStore.update from the cached version', () => {
  it('with one attempt allowed, answers an update that throws or writes nothing on the cached version itself, not 503', async () => {
    // The cached version is current: the re-read confirms the answer; it is no lost race, so no attempt is spent.
    const storage = new MemoryStorage();
    const docs = new DocumentStore(storage, {}, { maxAttempts: 1 });
    await docs.update<Slot, void>('slot.json', set({ taken: true }));
    expect((await rejection(docs.update<Slot, string>('slot.json', take, {}, { cached: true }))).message).to.equal(
      'taken already',
    );
    expect(await docs.update<Slot, string>('slot.json', takeOrNothing, {}, { cached: true })).to.equal('taken already');
  });

  it('with one attempt allowed, decides on a fresh read when another instance made the cached version stale', async () => {
    const storage = new MemoryStorage();
    const docs = new DocumentStore(storage, {}, { maxAttempts: 1 });
    const other = new DocumentStore(storage);
    for (const fn of [take, takeOrNothing]) {
      await docs.update<Slot, void>('slot.json', set({ taken: true }));
      await other.update<Slot, void>('slot.json', set({ taken: false }));
      expect(await docs.update<Slot, string>('slot.json', fn, {}, { cached: true })).to.equal('taken now');
      expect((await other.readFresh<Slot>('slot.json'))?.value).to.deep.equal({ taken: true });
    }
  });

  it('refuses a document past the limit only on a fresh read: another instance may have made it smaller', async () => {
    type Padded = { pad: string };
    const storage = new MemoryStorage();
    const docs = new DocumentStore(storage, {}, {}, { maxBytes: 60 });
    const other = new DocumentStore(storage);
    const grow = (doc: Padded | null): Update<Padded, string> => {
      const pad = `${doc?.pad ?? ''}${'y'.repeat(20)}`;
      return { next: { pad }, result: `${pad.length} bytes of padding` };
    };
    await docs.update<Padded, void>('pad.json', () => ({ next: { pad: 'x'.repeat(40) }, result: undefined }));
    // Another instance shrinks it: on the cached copy the change would be past the limit, on storage's it is not.
    await other.update<Padded, void>('pad.json', () => ({ next: { pad: '' }, result: undefined }));
    expect(await docs.update<Padded, string>('pad.json', grow, {}, { cached: true })).to.equal('20 bytes of padding');
    // Two at once (one group commit), on a cached copy made stale again: both fit on storage's version.
    await docs.update<Padded, void>('pad.json', () => ({ next: { pad: 'x'.repeat(40) }, result: undefined }));
    await other.update<Padded, void>('pad.json', () => ({ next: { pad: '' }, result: undefined }));
    expect(
      await Promise.all([
        docs.update<Padded, string>('pad.json', grow, {}, { cached: true }),
        docs.update<Padded, string>('pad.json', grow, {}, { cached: true }),
      ]),
    ).to.deep.equal(['20 bytes of padding', '40 bytes of padding']);
    // Past the limit on storage's version too: refused, with the limit.
    const err = await rejection(docs.update<Padded, string>('pad.json', grow, {}, { cached: true }));
    expect(err).to.be.instanceOf(ApprError);
    expect((err as ApprError).code).to.equal('invalid-parameters');
    expect((await other.readFresh<Padded>('pad.json'))?.value).to.deep.equal({ pad: 'y'.repeat(40) });
  });
});
