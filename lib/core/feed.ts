import { randomBytes } from 'node:crypto';
import type { StorageAdapter } from '../storage/types.js';
import { deleteAll, mapLimit } from '../storage/util.js';
import type { Catalog, SnapshotPackage } from './catalog.js';
import type { DocumentStore } from './documents.js';
import { keys, type ChangeRef } from './keys.js';

const EMPTY = Buffer.alloc(0);
/**
 * How instances sharing one store learn of each other's writes (see README, "Running several instances").
 * All times in ms.
 */
export interface CoherenceOptions {
  /**
   * How often a busy instance lists new change entries (default 250). Another instance's change is served here at
   * most about `pollMs` plus two storage round trips after it was made. 0 turns polling off (one instance alone
   * on its store, or a host that propagates changes itself through `onChange` and `registry.invalidate`).
   */
  pollMs?: number;
  /**
   * How often an instance that served nothing for `idleAfterMs` polls (default 5000). The first request after
   * such a pause waits for one poll, so it never sees older state than a busy instance would.
   */
  idlePollMs?: number;
  /** Default 10000. */
  idleAfterMs?: number;
  /**
   * How much instance clocks may disagree, plus the longest a change entry's write may take (default 10000).
   * Every poll lists the entries of this last window again, so a late or skewed entry is still seen.
   */
  maxClockSkewMs?: number;
  /**
   * Change entries are kept this long (default 10 min), then folded into the catalog snapshot and deleted. An
   * instance that could not poll for longer rebuilds its catalog from storage. `registry.gc()` with a shorter
   * `graceMs` removes covered entries sooner: an instance that still needed them reloads the snapshot instead.
   */
  retentionMs?: number;
  /** How often an instance checks whether the feed needs compacting (default 60000). */
  compactEveryMs?: number;
  /**
   * Background check of every package document, as a backstop for changes whose entry was never written (a writer
   * that died between its write and its entry): this many conditional reads per second (default 1; 0 = off).
   */
  sweepPerSecond?: number;
  /** Called after every change this instance makes: for hosts that push invalidations to other instances. */
  onChange?: ((change: { namespace: string; name: string }) => void) | undefined;
  /**
   * Called with errors of the background work (polls, compaction, sweep), which is retried, and of change entries
   * written after a push answered. Default: ignored. A handler that throws is ignored too.
   */
  onError?: ((err: unknown) => void) | undefined;
}

interface Snapshot {
  /** Every change whose entry is timed before this (epoch ms, writers' clocks) is in `packages`. */
  from: number;
  packages: Record<string, SnapshotPackage>;
}

const REFRESH_CONCURRENCY = 16;

/** The defaults of `CoherenceOptions` (ms, and entries per second for the sweep); the options schema uses them too. */
export const COHERENCE_DEFAULTS = {
  pollMs: 250,
  idlePollMs: 5000,
  idleAfterMs: 10_000,
  maxClockSkewMs: 10_000,
  retentionMs: 10 * 60_000,
  compactEveryMs: 60_000,
  sweepPerSecond: 1,
} as const;

/**
 * The change feed: every write also creates a small immutable entry (`If-None-Match: *`, so writers never contend
 * on it) that names the package; instances list entries newer than their last poll, minus a window for clock
 * skew, and re-read the packages named. Entries older than `retentionMs` are compacted into a snapshot that new
 * instances load at start. Costs one listing request per poll when nothing changed.
 */
export class ChangeFeed {
  readonly #storage: StorageAdapter;
  readonly #docs: DocumentStore;
  readonly #catalog: Catalog;
  readonly #now: () => number;
  readonly #opts: Required<Omit<CoherenceOptions, 'onChange' | 'onError'>>;
  readonly #onChange: CoherenceOptions['onChange'];
  readonly #onError: (err: unknown) => void;
  readonly #instance = randomBytes(4).toString('hex');
  #seq = 0;
  /** Entries timed at or after this are listed by the next poll. */
  #from = 0;
  /** Entries already applied, with their time, pruned as `#from` moves. */
  readonly #seen = new Map<string, number>();
  #lastPoll: number | undefined;
  #lastUse = 0;
  #started: Promise<void> | undefined;
  #polling: Promise<void> | undefined;
  #timers: NodeJS.Timeout[] = [];
  /** The timer of the next poll (`#schedulePoll`), while one is set; undefined while a poll it started runs. */
  #pollTimer: NodeJS.Timeout | undefined;
  /** When `#pollTimer` fires, by `performance.now()` (the timer's own clock, not the `now` option's). */
  #pollDue = 0;
  #closed = false;
  #sweepQueue: string[] = [];
  #sweepCursor: string | undefined;
  #lastCompact = 0;
  #sweeping = false;

  readonly #pageSize: number;

  constructor(
    storage: StorageAdapter,
    docs: DocumentStore,
    catalog: Catalog,
    options: CoherenceOptions,
    now: () => number,
    pageSize = 1000,
  ) {
    this.#pageSize = pageSize;
    this.#storage = storage;
    this.#docs = docs;
    this.#catalog = catalog;
    this.#now = now;
    this.#opts = {
      ...COHERENCE_DEFAULTS,
      ...withoutUndefined(options),
    };
    this.#onChange = options.onChange;
    const onError = options.onError;
    // Called from background work and after a push answered: a host's handler that throws must not become an
    // unhandled rejection (which ends the process), nor reject `flush` and `close`. What failed is retried (or, for
    // a change entry, covered by the background check) all the same.
    this.#onError = (err) => {
      try {
        onError?.(err);
      } catch {
        // the host's handler failed
      }
    };
  }

  #onRemote: (key: string) => void = () => undefined;

  /** Called with the package document key of every change another instance made, once this one applied it. */
  onRemoteChange(listener: (key: string) => void): void {
    this.#onRemote = listener;
  }

  /** This instance's id in its change entries. */
  get instance(): string {
    return this.#instance;
  }

  /**
   * Resolves when the catalog may answer: loaded at first use, and caught up with the feed when this instance was
   * idle. Synchronous (undefined) on the hot path.
   */
  ready(): Promise<void> | undefined {
    const now = this.#now();
    const idle = now - this.#lastUse >= this.#opts.idleAfterMs;
    this.#lastUse = now;
    if (this.#started === undefined) {
      // A start that fails (storage down) is tried again by the next request, never remembered as failed.
      this.#started = this.#start().catch((err: unknown) => {
        this.#started = undefined;
        throw err;
      });
      return this.#started;
    }
    if (this.#lastPoll === undefined) return this.#started;
    if (idle && this.#opts.pollMs > 0) {
      // Busy again: the next poll is at most `pollMs` after this one, not the `idlePollMs` set while idle (a busy
      // instance would otherwise serve up to `idlePollMs`-old state until that timer fired). Only brought forward:
      // moved back at every request (an `idleAfterMs` shorter than the gaps between requests makes each one a wake),
      // the timer would never fire, and compaction runs only from it.
      if (this.#pollTimer !== undefined && this.#pollDue - performance.now() > this.#opts.pollMs) {
        clearTimeout(this.#pollTimer);
        this.#timers = this.#timers.filter((t) => t !== this.#pollTimer);
        this.#pollTimer = undefined;
        this.#schedulePoll(this.#opts.pollMs);
      }
      return this.poll();
    }
    return undefined;
  }

  /**
   * For health checks: whether the catalog has loaded, how long ago (ms, by this instance's clock) the feed was
   * last read, and whether that is recent enough for the polling configured (with polling off: once loaded).
   */
  status(): { loaded: boolean; lastPollAgeMs: number | null; current: boolean } {
    if (this.#lastPoll === undefined) return { loaded: false, lastPollAgeMs: null, current: false };
    const age = Math.max(0, this.#now() - this.#lastPoll);
    const { pollMs, idlePollMs } = this.#opts;
    return {
      loaded: true,
      lastPollAgeMs: age,
      current: pollMs === 0 || age <= 2 * Math.max(pollMs, idlePollMs) + 5000,
    };
  }

  /**
   * Record that a package changed: called after its document was written. The writers of one package that call
   * in the same turn of the event loop (a group commit answers them together) share one change entry, written
   * after all their writes. Never rejects (a failed write goes to `onError`); `flush` waits for every entry owed.
   */
  record(namespace: string, name: string): Promise<void> {
    try {
      this.#onChange?.({ namespace, name });
    } catch (err) {
      this.#onError(err);
    }
    const pkg = `${namespace}/${name}`;
    let recording = this.#recording.get(pkg);
    if (recording === undefined) {
      // Timed when the change was made: the push that made it answers before the entry is written.
      const key = this.#entryKey(namespace, name);
      recording = (async () => {
        await new Promise((resolve) => setImmediate(resolve));
        this.#recording.delete(pkg);
        try {
          await this.#putEntry(key);
        } catch (err) {
          // The change itself is stored; other instances learn of it from the background check instead.
          this.#onError(err);
        }
      })();
      this.#recording.set(pkg, recording);
      const owed = recording;
      this.#owed.add(owed);
      void owed.finally(() => this.#owed.delete(owed));
    }
    return recording;
  }

  /**
   * Write a change entry for the package now, one of its own (shared with no other writer), and reject with the
   * storage's error (`StorageUnavailableError`) when it could not be stored: for a change that other instances must
   * be told of before the caller goes on (a purge writes one before it deletes a blob, so that no retry finds the
   * blob gone while they were never told; lib/core/registry.ts `purgeBlob`). Calls no `onChange`: `record`, called
   * once the change is made, does.
   */
  async recordNow(namespace: string, name: string): Promise<void> {
    await this.#putEntry(this.#entryKey(namespace, name));
  }

  #entryKey(namespace: string, name: string): string {
    return keys.change(this.#now(), this.#instance, this.#seq++, namespace, name);
  }

  async #putEntry(key: string): Promise<void> {
    // Empty: the key says it all, and a zero-byte object is whole after a power cut without an fsync.
    await this.#storage.put(key, EMPTY, { ifNoneMatch: '*' });
  }

  readonly #recording = new Map<string, Promise<void>>();
  /** The change entries being written, including those whose package has a newer one waiting in `#recording`. */
  readonly #owed = new Set<Promise<void>>();

  /** Resolves when no change entry is being written: each one `record` was asked for is stored, or failed. */
  async flush(): Promise<void> {
    while (this.#owed.size > 0) await Promise.all(this.#owed);
  }

  /** One poll (concurrent callers share it): apply every change entry not seen yet. */
  poll(): Promise<void> {
    this.#polling ??= this.#poll().finally(() => {
      this.#polling = undefined;
    });
    return this.#polling;
  }

  /** Re-read every package document (for `registry.invalidate()` and an instance that fell behind). */
  async rebuild(): Promise<void> {
    const started = this.#now();
    const found = new Set<string>();
    let cursor: string | undefined;
    do {
      const page = await this.#storage.list(keys.packages(), {
        limit: this.#pageSize,
        ...(cursor === undefined ? {} : { cursor }),
      });
      const docs = page.keys.filter((key) => keys.parsePackageDoc(key) !== null);
      for (const key of docs) found.add(key);
      await mapLimit(docs, REFRESH_CONCURRENCY, (key) => this.#docs.refresh(key));
      cursor = page.next;
    } while (cursor !== undefined);
    for (const entry of this.#catalog.entries()) if (!found.has(entry.key)) await this.#docs.refresh(entry.key);
    this.#from = started - this.#opts.maxClockSkewMs;
    this.#lastPoll = started;
  }

  close(): void {
    this.#closed = true;
    for (const timer of this.#timers) clearTimeout(timer);
    this.#timers = [];
  }

  async #start(): Promise<void> {
    const started = this.#now();
    const snapshot = (await this.#docs.refresh<Snapshot>(keys.snapshot())).value;
    if (snapshot !== null) {
      this.#catalog.load(snapshot.packages);
      this.#from = snapshot.from;
      this.#lastPoll = started;
      await this.#poll();
    } else {
      await this.rebuild();
      this.#lastCompact = 0;
      await this.compact(true).catch(this.#onError);
    }
    this.#schedule();
  }

  #schedule(): void {
    if (this.#closed) return;
    if (this.#opts.pollMs > 0) this.#schedulePoll();
    if (this.#opts.sweepPerSecond > 0 && !this.#sweeping) {
      this.#sweeping = true;
      this.#sweep(1000 / this.#opts.sweepPerSecond);
    }
  }

  /**
   * The next poll (and compaction, when due), in `ms`, by default `pollMs` while requests come and `idlePollMs` once
   * none came for `idleAfterMs` (`ready` brings it forward when they come again). Then the next one, from its end.
   */
  #schedulePoll(ms?: number): void {
    if (this.#closed) return;
    const { pollMs, idlePollMs, idleAfterMs, compactEveryMs } = this.#opts;
    const busy = this.#now() - this.#lastUse < idleAfterMs;
    const delay = ms ?? (busy ? pollMs : Math.max(pollMs, idlePollMs));
    this.#pollDue = performance.now() + delay;
    const timer = setTimeout(() => {
      this.#timers = this.#timers.filter((t) => t !== timer);
      if (this.#pollTimer === timer) this.#pollTimer = undefined;
      (async () => {
        await this.poll();
        if (this.#now() - this.#lastCompact >= compactEveryMs * (0.75 + Math.random() / 2)) {
          await this.compact(false);
        }
      })()
        .catch(this.#onError)
        .finally(() => this.#schedulePoll());
    }, delay);
    timer.unref();
    this.#timers.push(timer);
    this.#pollTimer = timer;
  }

  /**
   * The backstop: one conditional read of the next package document per tick, walking the package listing. A version
   * other than the one this instance held is applied as a change entry would be (`onRemoteChange`).
   */
  #sweep(every: number): void {
    const timer = setTimeout(() => {
      this.#timers = this.#timers.filter((t) => t !== timer);
      this.#sweepOne()
        .catch(this.#onError)
        .finally(() => {
          if (!this.#closed) this.#sweep(every);
        });
    }, every);
    timer.unref();
    this.#timers.push(timer);
  }

  async #sweepOne(): Promise<void> {
    if (this.#sweepQueue.length === 0) {
      const page = await this.#storage.list(keys.packages(), {
        limit: this.#pageSize,
        ...(this.#sweepCursor === undefined ? {} : { cursor: this.#sweepCursor }),
      });
      this.#sweepQueue = page.keys.filter((key) => keys.parsePackageDoc(key) !== null);
      this.#sweepCursor = page.next;
      return;
    }
    const key = this.#sweepQueue.shift() as string;
    const known = this.#docs.peek(key)?.etag;
    const read = await this.#docs.refresh(key);
    // A version this instance did not hold (or no longer holds: its blobs may still be in memory): another instance
    // may have changed the package without its change entry coming (lost with storage down), as after a purge.
    // Treated as that entry: the package's cached blobs are not served, but read again.
    if (read.etag !== known) this.#onRemote(key);
  }

  async #poll(): Promise<void> {
    const started = this.#now();
    if (this.#lastPoll !== undefined && started - this.#lastPoll > this.#opts.retentionMs - this.#opts.maxClockSkewMs) {
      // Entries this instance has not seen may have been compacted away: read everything again.
      await this.rebuild();
      return;
    }
    const from = this.#from;
    const fresh: ChangeRef[] = [];
    let pruned = -Infinity;
    let cursor: string | undefined;
    do {
      // Always full pages: a poll lists the entries of the last `maxClockSkewMs` again, and should stay one request.
      const page = await this.#storage.list(
        keys.changes(),
        cursor === undefined ? { startAfter: keys.changesAfter(from) } : { cursor },
      );
      for (const key of page.keys) {
        if (this.#seen.has(key)) continue;
        const ref = keys.parseChange(key);
        // Timed before `from`: a flat entry of an older store, listed because it shares `from`'s bucket (lib/core/
        // keys.ts `changesAfter`). Polls before this one covered it; applied again, it would be each time.
        if (ref !== null) {
          if (ref.time >= from) fresh.push(ref);
        } else pruned = Math.max(pruned, keys.markerCovers(key) ?? -Infinity);
      }
      cursor = page.next;
    } while (cursor !== undefined);
    // A compaction deleted entries at or after this instance's position (it was behind): the snapshot has them.
    if (pruned >= this.#from) await this.#reload(pruned);
    const changed = new Set<string>();
    for (const ref of fresh) if (ref.instance !== this.#instance) changed.add(keys.packageDoc(ref.namespace, ref.name));
    await mapLimit([...changed], REFRESH_CONCURRENCY, (key) => this.#docs.refresh(key));
    for (const key of changed) this.#onRemote(key);
    for (const ref of fresh) this.#seen.set(ref.key, ref.time);
    this.#from = Math.max(this.#from, started - this.#opts.maxClockSkewMs);
    for (const [key, time] of this.#seen) if (time < this.#from) this.#seen.delete(key);
    this.#lastPoll = started;
  }

  /**
   * Fold entries older than the retention into the snapshot, then delete them. Any instance may do it; the
   * snapshot is replaced by compare-and-swap only with a newer one, and entries are deleted only once a snapshot
   * that covers them is stored.
   */
  async compact(force: boolean): Promise<void> {
    this.#lastCompact = this.#now();
    const cutoff = Math.min(this.#from, this.#now() - this.#opts.retentionMs);
    if (!force && !((await this.#oldestChange()) < cutoff)) return;
    const covered = await this.#storeSnapshot();
    await this.#prune(Math.min(cutoff, covered), false);
  }

  /**
   * The time of the oldest change entry (Infinity when there is none), from the first keys of the listing: keys
   * sort by time, and the compaction markers that may come first are few (each is pruned with the entries before
   * the next one). A small page: this runs every `compactEveryMs` on every instance, and the XML of a full page of
   * keys costs the SDK tens of ms of CPU. A flat entry of an older store sorts after the bucketed ones of its bucket
   * (lib/core/keys.ts): the time found may then be up to one bucket (10 s) later than the oldest entry's, which
   * delays that compaction by as much.
   */
  async #oldestChange(): Promise<number> {
    let cursor: string | undefined;
    do {
      const page = await this.#storage.list(keys.changes(), { limit: 16, ...(cursor === undefined ? {} : { cursor }) });
      for (const key of page.keys) {
        const time = keys.parseChange(key)?.time;
        if (time !== undefined) return time;
      }
      cursor = page.next;
    } while (cursor !== undefined);
    return Infinity;
  }

  /**
   * For `registry.gc()`: catch up with the feed, fold this instance's catalog into the snapshot, and delete the
   * change entries the stored snapshot covers that are older than `graceMs`. Returns how many entries were
   * deleted (with `dryRun`: would be; then nothing is written, not even the first snapshot of a store).
   */
  async collect(options: { dryRun: boolean; graceMs: number }): Promise<number> {
    const oldest = this.#now() - options.graceMs;
    if (options.dryRun) {
      // A run would poll, then store a snapshot at the position the poll gives (unless a newer one is stored).
      const stored = (await this.#docs.readFresh<Snapshot>(keys.snapshot()))?.value;
      const covered = Math.max(stored?.from ?? -Infinity, this.#now() - this.#opts.maxClockSkewMs);
      return this.#prune(Math.min(covered, oldest), true);
    }
    // The catalog must be loaded (a first use loads it) and current before it is stored as the snapshot.
    await this.ready();
    await this.poll();
    return this.#prune(Math.min(await this.#storeSnapshot(), oldest), false);
  }

  /**
   * Store this instance's catalog as the snapshot at its feed position, unless a snapshot at that position or a
   * later one is stored (never go back: instances that reload it must not lose what a newer one covered).
   * Returns the position of the snapshot stored now: every entry timed before it is folded in.
   */
  async #storeSnapshot(): Promise<number> {
    const from = this.#from;
    const packages = this.#catalog.snapshot();
    return this.#docs.update<Snapshot, number>(
      keys.snapshot(),
      (current) => {
        if (current !== null && current.from >= from) return { result: current.from };
        return { next: { from, packages }, result: from };
      },
      { maxBytes: Number.MAX_SAFE_INTEGER },
    );
  }

  /**
   * Delete the change entries timed before `before` (the stored snapshot covers them), page by page, never holding
   * the listing. Before a page's deletes, a marker: an instance whose position is older finds it and reloads the
   * snapshot (`#reload`) instead of missing the deleted entries. Older markers go with the entries, so the newest
   * marker always stays. Returns the entries deleted (or, with `dryRun`, that would be).
   *
   * A marker says which entries are deleted: those timed at or before its time (`keys.marker`). It must sort after
   * every key the page deletes: a poll whose listing takes several pages, and whose cursor is among the keys
   * deleted, lists the marker in a later page. So it goes in the bucket of the page's last bucketed entry, at the
   * last millisecond of that bucket (or of `before`, when earlier), and sorts after every entry of that millisecond;
   * when the page deletes flat entries of an older store, which sort after the bucketed keys of their bucket, a flat
   * marker follows the last of them as well. Not at `before` in `before`'s bucket: on the filesystem a poll reads
   * the directory of buckets first and the buckets after, and a bucket directory the marker creates after that
   * first read is never read by that poll, while the buckets it reads next may have lost their entries meanwhile;
   * the poll would then move past the marker's time without seeing it, and never apply the changes deleted. A
   * bucket that held the entry deleted is read by such a poll after that entry's (or, when the directory was created
   * after the poll started, holds an entry written since, which the next poll lists, and the marker is later still).
   * The flat entries such a poll did not read in `changes/` itself it reads in a later page, with the flat marker;
   * a flat marker written after its read of `changes/` it does not see, so a flat marker never replaces a bucketed
   * one, which such a poll may still find in a bucket it reads next.
   *
   * Stops at the first key timed at or after `before`. Keys sort by time except the flat entries and markers of an
   * older store (lib/core/keys.ts), which follow the bucketed keys of their bucket: one timed before `before` that
   * follows a bucketed key of `before`'s bucket timed at or after it is left. That is safe and does not last: the
   * stored snapshot covers it, a poll past its time skips it (`#poll`), and the first compaction whose `before` is
   * past the end of that bucket (10 s later) finds nothing of the bucket to stop at, and deletes it.
   */
  async #prune(before: number, dryRun: boolean): Promise<number> {
    // Times are whole milliseconds: "before `before`" is "at or before `last`".
    const last = Math.ceil(before) - 1;
    /** The marker after the entries up to `time`: at the end of its bucket, or at `last` when earlier. */
    const markerAfter = (time: number, flat: boolean) => {
      const covers = Math.min(last, keys.bucketEnd(time));
      return { key: keys.marker(covers, flat), covers };
    };
    let count = 0;
    let cursor: string | undefined;
    do {
      const page = await this.#storage.list(keys.changes(), {
        limit: this.#pageSize,
        ...(cursor === undefined ? {} : { cursor }),
      });
      const listed: { key: string; time: number; entry: boolean }[] = [];
      let lastBucketed: number | undefined;
      let lastFlat: number | undefined;
      let done = false;
      for (const key of page.keys) {
        const ref = keys.parseChange(key);
        // A marker's time here: the last millisecond it covers.
        const time = ref?.time ?? keys.markerCovers(key);
        if (time === null) continue;
        if (time >= before) {
          done = true;
          break;
        }
        listed.push({ key, time, entry: ref !== null });
        if (ref === null) continue;
        if (keys.isBucketed(key)) lastBucketed = time;
        else lastFlat = time;
      }
      // Every entry listed is timed at or before the marker that follows it (the bucketed one for bucketed entries,
      // which come before the flat ones of their bucket; the flat one for flat entries).
      const markers: { key: string; covers: number }[] = [];
      if (lastBucketed !== undefined) markers.push(markerAfter(lastBucketed, false));
      if (lastFlat !== undefined) markers.push(markerAfter(lastFlat, true));
      // An older marker goes when a new one follows it and covers as much: never a new one itself, nor a bucketed
      // one for a flat one (on the filesystem a poll may have read `changes/` before the flat one was written, and
      // rely on the bucketed one in a bucket it reads next). `item.time <= last` holds for every entry listed, but
      // not when `before` is NaN (a broken clock): then nothing is deleted.
      const doomed = listed.filter((item) =>
        item.entry
          ? item.time <= last
          : markers.some(
              (m) =>
                m.key > item.key && m.covers >= item.time && (keys.isBucketed(m.key) || !keys.isBucketed(item.key)),
            ),
      );
      const entries = doomed.filter((item) => item.entry).length;
      count += entries;
      if (!dryRun && entries > 0) {
        for (const marker of markers) await this.#storage.put(marker.key, Buffer.from('{}'), { ifNoneMatch: '*' });
        // on S3 one DeleteObjects per page (no HEAD + DELETE per entry)
        await deleteAll(
          this.#storage,
          doomed.map((item) => item.key),
        );
      }
      cursor = done ? undefined : page.next;
    } while (cursor !== undefined);
    return count;
  }

  /**
   * Catch up after a compaction deleted entries this instance had not read: reload the stored snapshot (which
   * covers every entry timed at or before `pruned`, what the marker says was deleted) and re-read only the packages
   * whose version differs from it.
   */
  async #reload(pruned: number): Promise<void> {
    const snapshot = (await this.#docs.refresh<Snapshot>(keys.snapshot())).value;
    if (snapshot === null || snapshot.from <= pruned) {
      await this.rebuild();
      return;
    }
    const known = new Map(this.#catalog.entries().map((entry) => [entry.key, entry.etag]));
    const stale = new Set<string>();
    for (const [key, pkg] of Object.entries(snapshot.packages)) if (known.get(key) !== pkg.etag) stale.add(key);
    for (const key of known.keys()) if (!Object.hasOwn(snapshot.packages, key)) stale.add(key);
    await mapLimit([...stale], REFRESH_CONCURRENCY, (key) => this.#docs.refresh(key));
    for (const key of stale) this.#onRemote(key);
    this.#from = Math.max(this.#from, snapshot.from);
  }
}

function withoutUndefined<T extends object>(value: T): Partial<T> {
  return Object.fromEntries(
    Object.entries(value).filter(([, v]) => v !== undefined && typeof v !== 'function'),
  ) as Partial<T>;
}
