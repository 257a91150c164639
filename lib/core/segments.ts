import { createHash, randomBytes } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import { StorageUnavailableError } from '../errors.js';
import type { StorageAdapter } from '../storage/types.js';
import { putImmutable } from '../storage/util.js';
import { deepFreeze } from './documents.js';
import { keys } from './keys.js';
import type { ManifestRecord, PackageDoc } from './registry.js';

/**
 * Release records that outgrow a package document (issue 9): the document, rewritten by every change of its
 * package, keeps at most about `INLINE_MAX` recent records inline (`releases`), plus references to immutable
 * segment objects that hold the older ones (`segments`) and the media types deleted from those (`removed`). So
 * its size, and the cost of a push, do not grow with the package, and every change stays ONE compare-and-swap
 * of that document (what makes channels, deletes and the one-winner race safe).
 *
 * - A leaf segment holds release records (`{ level: 0, releases }`); an index segment of level L holds the
 *   references of `FANOUT` segments of level L-1 (`{ level, segments }`). A reference is `<level>.<sha256>` of the
 *   segment's JSON, stored at `keys.segment`, written create-only BEFORE the compare-and-swap that references it
 *   (as blobs are). Each carries a random nonce, so no two writes make the same segment: a segment once left
 *   unreferenced (its push lost its race) is never referenced later, which is what lets the garbage collector
 *   remove it (lib/core/gc.ts).
 * - The document's `segments` are oldest first, with non-increasing levels; a newer segment's record of a release
 *   and media type replaces an older one's, an inline record replaces any segment's, and `removed` hides segment
 *   records (never inline ones: setting an inline record drops its `removed` entry).
 * - When a push finds `INLINE_MAX` records inline, it writes them as a leaf (and, when `FANOUT` segments of one
 *   level end the list, an index of them, and so on up), and its compare-and-swap replaces them by the reference,
 *   if the document's inline records and segments are still those it wrote (else a later push does it). At 10,000
 *   releases a document holds at most 32 inline records and about 20 references: a few KB.
 *
 * Segments are immutable: read once, then kept in memory (bounded in bytes). A document written before segments
 * existed has every record inline: its first push moves them all to one leaf (migration on write).
 */

/** Inline records that make the next push write them as a segment. */
export const INLINE_MAX = 32;
/** Segments of one level that make the next flush write an index of them. */
export const FANOUT = 16;

/** Where a document points at its segments (what loading them needs). */
type SegmentRefs = { namespace: string; name: string; segments?: string[] | undefined };

type Media = Readonly<Record<string, ManifestRecord>>;
type Releases = Record<string, Record<string, ManifestRecord>>;

interface LeafSegment {
  level: 0;
  nonce: string;
  releases: Releases;
}

interface IndexSegment {
  level: number;
  nonce: string;
  segments: string[];
}

type Segment = LeafSegment | IndexSegment;

/** The records of a document's segments, merged (newest wins), before `removed` and inline records apply. */
export interface SegmentView {
  /** The document's `segments`, joined: what this view is of. */
  readonly refs: string;
  /** The leaf references, oldest first. */
  readonly leaves: readonly string[];
  readonly records: ReadonlyMap<string, Media>;
}

/**
 * On a whole-package view of a document with segments (Registry's `#logical`): whether any release is left, known
 * without building its `releases` (which costs O(releases)).
 */
export const LIVE = Symbol('live');

/** Whether a package document (stored or whole-package view) has a release left, cheaply when the view says. */
export function isLiveDoc(doc: { releases: object }): boolean {
  const live = (doc as { [LIVE]?: boolean })[LIVE];
  if (live !== undefined) return live;
  for (const _ in doc.releases) return true;
  return false;
}

/** A document whose segments are not in memory: the caller loads them (`Segments.load`) and tries again. */
export class SegmentsNotLoaded extends Error {}

const EMPTY_VIEW: SegmentView = Object.freeze({
  refs: '',
  leaves: Object.freeze([]),
  records: new Map<string, Media>(),
});

/** The plan of a flush, made before the compare-and-swap (`Segments.flush`) and applied in it (`applyFlush`). */
export interface FlushPlan {
  /** The document's segments the plan was made from (JSON): it applies only to a document that still has those. */
  readonly from: string;
  /** The inline records written to the new leaf. */
  readonly records: Releases;
  readonly segments: string[];
}

/** Reads, writes and caches segments. One per registry. */
export class Segments {
  readonly #storage: StorageAdapter;
  readonly #objects: LRUCache<string, Segment>;
  /** Views by `refs`; each document version also holds its own (`#pinned`), so eviction never loses a live one. */
  readonly #views: LRUCache<string, SegmentView>;
  readonly #pinned = new WeakMap<object, SegmentView>();
  /** Per package, the last view built: a view with one leaf more is built from it, not from scratch. */
  readonly #last = new LRUCache<string, SegmentView>({ max: 256 });

  /** `maxBytes`: the segments kept in memory, counted as their JSON (default 64 MiB). */
  constructor(storage: StorageAdapter, options: { maxBytes?: number } = {}) {
    this.#storage = storage;
    this.#objects = new LRUCache<string, Segment>({
      maxSize: options.maxBytes ?? 64 * 1024 * 1024,
      sizeCalculation: () => 1,
    });
    // Bounded by the records the views hold (a view of 10,000 releases is a Map of 10,000 entries); a document
    // version in the document cache keeps its own view alive whatever this cache evicts.
    this.#views = new LRUCache<string, SegmentView>({
      maxSize: 500_000,
      sizeCalculation: (view) => view.records.size + 1,
    });
  }

  /**
   * The view of `doc`'s segments, from memory: throws `SegmentsNotLoaded` when they were not loaded (`load`).
   * For code that must be synchronous (a compare-and-swap's update function, a document listener).
   */
  viewOf(doc: SegmentRefs): SegmentView {
    const refs = doc.segments ?? [];
    if (refs.length === 0) return EMPTY_VIEW;
    const key = refs.join(',');
    let view = this.#pinned.get(doc);
    if (view?.refs !== key) view = this.#views.get(key);
    if (view === undefined) throw new SegmentsNotLoaded(`segments of ${doc.namespace}/${doc.name} are not loaded`);
    this.#pinned.set(doc, view);
    return view;
  }

  /** Load `doc`'s segments (immutable: each is read once) and keep their view with `doc`. */
  async load(doc: SegmentRefs): Promise<SegmentView> {
    const refs = doc.segments ?? [];
    if (refs.length === 0) return EMPTY_VIEW;
    const key = refs.join(',');
    let view = this.#pinned.get(doc);
    if (view?.refs !== key) view = this.#views.get(key);
    if (view === undefined) {
      const leaves: string[] = [];
      for (const ref of refs) leaves.push(...(await this.#leaves(doc.namespace, doc.name, ref)));
      view = await this.#build(doc.namespace, doc.name, key, leaves);
    }
    this.#pinned.set(doc, view);
    return view;
  }

  /** Every segment hash `doc` references, indexes included (for the garbage collector). */
  async referenced(doc: SegmentRefs): Promise<Set<string>> {
    const found = new Set<string>();
    const walk = async (ref: string): Promise<void> => {
      found.add(hashOf(ref));
      const segment = await this.#read(doc.namespace, doc.name, ref);
      if (segment.level > 0) for (const child of (segment as IndexSegment).segments) await walk(child);
    };
    for (const ref of doc.segments ?? []) await walk(ref);
    return found;
  }

  /**
   * When `doc` (as read before a compare-and-swap) holds `INLINE_MAX` inline records or more: write them as a leaf
   * segment (and the indexes the list then needs), and return the plan for `applyFlush`. Undefined otherwise.
   */
  flush(doc: PackageDoc): Promise<FlushPlan | undefined> {
    if (countRecords(doc.releases) < INLINE_MAX) return Promise.resolve(undefined);
    // Concurrent pushes into one package on this instance read the same document: they share one flush (each
    // write makes a new segment, and all but one would be left for the garbage collector).
    const key = `${doc.namespace}/${doc.name}\0${flushSource(doc)}`;
    let flushing = this.#flushing.get(key);
    if (flushing === undefined) {
      flushing = this.#flush(doc).finally(() => this.#flushing.delete(key));
      this.#flushing.set(key, flushing);
    }
    return flushing;
  }

  readonly #flushing = new Map<string, Promise<FlushPlan>>();

  async #flush(doc: PackageDoc): Promise<FlushPlan> {
    const before = await this.load(doc);
    const leaf = await this.#write(doc.namespace, doc.name, { level: 0, nonce: nonce(), releases: doc.releases });
    const segments = [...(doc.segments ?? []), leaf];
    // Whenever FANOUT segments of one level end the list, an index of them replaces them (levels never increase
    // along the list, so the list stays at most (FANOUT - 1) per level).
    for (;;) {
      const level = levelOf(segments.at(-1) as string);
      const tail = segments.slice(-FANOUT);
      if (tail.length < FANOUT || tail.some((ref) => levelOf(ref) !== level)) break;
      const index = await this.#write(doc.namespace, doc.name, { level: level + 1, nonce: nonce(), segments: tail });
      segments.splice(-FANOUT, FANOUT, index);
    }
    // The view of the new list: the old one plus the new leaf (indexes change nothing of what the leaves hold).
    await this.#build(doc.namespace, doc.name, segments.join(','), [...before.leaves, leaf], before);
    return { from: JSON.stringify(doc.segments ?? []), records: doc.releases, segments };
  }

  async #leaves(namespace: string, name: string, ref: string): Promise<string[]> {
    if (levelOf(ref) === 0) return [ref];
    const segment = (await this.#read(namespace, name, ref)) as IndexSegment;
    const leaves: string[] = [];
    for (const child of segment.segments) leaves.push(...(await this.#leaves(namespace, name, child)));
    return leaves;
  }

  async #build(
    namespace: string,
    name: string,
    key: string,
    leaves: string[],
    from?: SegmentView,
  ): Promise<SegmentView> {
    const pkg = `${namespace}/${name}`;
    const last = from ?? this.#last.get(pkg);
    const start =
      last !== undefined && last.leaves.length <= leaves.length && last.leaves.every((ref, i) => ref === leaves[i])
        ? last.leaves.length
        : 0;
    const records = start > 0 && last !== undefined ? new Map(last.records) : new Map<string, Media>();
    for (const ref of leaves.slice(start)) {
      const leaf = (await this.#read(namespace, name, ref)) as LeafSegment;
      for (const [release, media] of Object.entries(leaf.releases)) {
        const older = records.get(release);
        records.set(release, older === undefined ? media : Object.freeze({ ...older, ...media }));
      }
    }
    const view: SegmentView = Object.freeze({ refs: key, leaves: Object.freeze([...leaves]), records });
    this.#views.set(key, view);
    this.#last.set(pkg, view);
    return view;
  }

  async #read(namespace: string, name: string, ref: string): Promise<Segment> {
    const hash = hashOf(ref);
    const cached = this.#objects.get(hash);
    if (cached !== undefined) return cached;
    const got = await this.#storage.get(keys.segment(namespace, name, hash));
    if (got === null || got.notModified)
      throw new StorageUnavailableError(`segment ${hash} of ${namespace}/${name} is missing`);
    let segment: Segment;
    try {
      segment = deepFreeze(JSON.parse(got.body.toString('utf8')) as Segment);
    } catch (err) {
      throw new StorageUnavailableError(`segment ${hash} of ${namespace}/${name} is not valid JSON`, err);
    }
    this.#objects.set(hash, segment, { size: got.body.length });
    return segment;
  }

  async #write(namespace: string, name: string, segment: Segment): Promise<string> {
    const body = Buffer.from(JSON.stringify(segment));
    const hash = createHash('sha256').update(body).digest('hex');
    const key = keys.segment(namespace, name, hash);
    // As for blobs: never reference an object a backend only claimed to have.
    const etag = await putImmutable(this.#storage, key, body);
    if (etag === undefined)
      throw new StorageUnavailableError(`a segment of ${namespace}/${name} was not stored; try again`);
    this.#objects.set(hash, deepFreeze(structuredClone(segment)), { size: body.length });
    return `${segment.level}.${hash}`;
  }
}

/**
 * In a compare-and-swap: replace the inline records `plan` wrote to a segment by that segment, if the document
 * still has the segments the plan was made from and every one of those records unchanged (records pushed since
 * stay inline). Otherwise nothing happens (another writer flushed, deleted or replaced one since; a later push
 * flushes). True if applied.
 */
export function applyFlush(doc: PackageDoc, plan: FlushPlan | undefined): boolean {
  if (plan === undefined || JSON.stringify(doc.segments ?? []) !== plan.from) return false;
  for (const [release, media] of Object.entries(plan.records)) {
    for (const [mt, flushed] of Object.entries(media)) {
      const current = own(own(doc.releases, release) ?? {}, mt);
      if (current === undefined || JSON.stringify(current) !== JSON.stringify(flushed)) return false;
    }
  }
  for (const [release, media] of Object.entries(plan.records)) {
    const inline = own(doc.releases, release) as Record<string, ManifestRecord>;
    for (const mt of Object.keys(media)) delete inline[mt];
    if (Object.keys(inline).length === 0) delete doc.releases[release];
  }
  doc.segments = plan.segments;
  return true;
}

// ---- reading and changing a document's release records (inline + segments - removed) ----------------------------

/** The media types and records of `release`, or undefined when it has none. */
export function mediaOf(doc: PackageDoc, view: SegmentView, release: string): Media | undefined {
  const inline = own(doc.releases, release);
  const base = view.records.get(release);
  if (base === undefined) return inline;
  const removed = own(doc.removed ?? {}, release);
  let media: Media = base;
  if (removed !== undefined) {
    const left: Record<string, ManifestRecord> = { ...base };
    for (const mt of removed) delete left[mt];
    media = left;
  }
  if (inline !== undefined) media = { ...media, ...inline };
  return Object.keys(media).length > 0 ? media : undefined;
}

/** Set one record (a push): inline, and no longer hidden if a segment's was removed. */
export function setRecord(doc: PackageDoc, release: string, mt: string, record: ManifestRecord): void {
  const media = own(doc.releases, release) ?? {};
  media[mt] = record;
  doc.releases[release] = media;
  unremove(doc, release, mt);
}

/** Delete one record (inline and, through `removed`, in segments). False when there was none. */
export function deleteRecord(doc: PackageDoc, view: SegmentView, release: string, mt: string): boolean {
  if (mediaOf(doc, view, release)?.[mt] === undefined) return false;
  const inline = own(doc.releases, release);
  if (inline !== undefined && own(inline, mt) !== undefined) {
    delete inline[mt];
    if (Object.keys(inline).length === 0) delete doc.releases[release];
  }
  const base = view.records.get(release);
  if (base !== undefined && Object.hasOwn(base, mt)) {
    doc.removed ??= {};
    const removed = own(doc.removed, release) ?? [];
    if (!removed.includes(mt)) doc.removed[release] = [...removed, mt].sort();
  }
  return true;
}

/** Whether any release is left (a document without is a tombstone). Costs O(inline + removed), not O(releases). */
export function hasReleases(doc: PackageDoc, view: SegmentView): boolean {
  if (Object.keys(doc.releases).length > 0) return true;
  let gone = 0;
  for (const [release, mts] of Object.entries(doc.removed ?? {})) {
    const base = view.records.get(release);
    if (base !== undefined && Object.keys(base).every((mt) => mts.includes(mt))) gone += 1;
  }
  return view.records.size > gone;
}

/** Every release's records (segments, minus `removed`, plus inline), as one object: O(releases). */
export function allReleases(doc: PackageDoc, view: SegmentView): Releases {
  if (view.records.size === 0) return doc.releases;
  const out: Releases = {};
  for (const release of view.records.keys()) {
    const media = mediaOf(doc, view, release);
    if (media !== undefined) out[release] = media;
  }
  for (const [release, media] of Object.entries(doc.releases)) {
    if (!Object.hasOwn(out, release)) out[release] = media;
  }
  return out;
}

/** Drop a deleted package's segment bookkeeping (its document becomes a tombstone with nothing left). */
export function clearSegments(doc: PackageDoc): void {
  delete doc.segments;
  delete doc.removed;
}

function unremove(doc: PackageDoc, release: string, mt: string): void {
  const removed = doc.removed === undefined ? undefined : own(doc.removed, release);
  if (removed === undefined || doc.removed === undefined) return;
  const left = removed.filter((m) => m !== mt);
  if (left.length > 0) doc.removed[release] = left;
  else delete doc.removed[release];
  if (Object.keys(doc.removed).length === 0) delete doc.removed;
}

function countRecords(releases: Releases): number {
  let n = 0;
  for (const media of Object.values(releases)) n += Object.keys(media).length;
  return n;
}

function flushSource(doc: PackageDoc): string {
  return JSON.stringify([doc.segments ?? [], doc.releases]);
}

const REF = /^(\d{1,2})\.([0-9a-f]{64})$/;

function levelOf(ref: string): number {
  return Number(parseRef(ref)[1]);
}

function hashOf(ref: string): string {
  return parseRef(ref)[2] as string;
}

/** A reference read from a stored document is checked before it builds a key. */
function parseRef(ref: string): RegExpExecArray {
  const match = REF.exec(ref);
  if (match === null)
    throw new StorageUnavailableError(`a package document references a malformed segment (${ref.slice(0, 80)})`);
  return match;
}

function nonce(): string {
  return randomBytes(9).toString('base64url');
}

function own<T>(record: Record<string, T>, key: string): T | undefined {
  return Object.hasOwn(record, key) ? record[key] : undefined;
}
