import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { StorageUnavailableError } from '../errors.js';
import { keys } from './keys.js';
import type { DocumentStore } from './documents.js';
import type { PackageDoc } from './registry.js';
import type { StorageAdapter } from '../storage/types.js';
import type { Logger } from '../ops/logger.js';

/**
 * Garbage collection of blobs no release references and of tombstones (package documents with no release), safe
 * while other instances push. The collector's bookkeeping lives in the package document it is about (field `gc`),
 * so every decision is part of a compare-and-swap of that document, the same one pushes go through:
 *
 * 1. Mark: a blob seen unreferenced is marked with the time (`orphans`); a push of it clears the mark.
 * 2. Claim: a blob marked at least `graceMs` ago and still unreferenced is claimed (`claims`) in a CAS that also
 *    replaces the document's `nonce`. At that instant no release references it.
 * 3. Delete the claimed blobs, then lift the claims (CAS).
 * 4. A tombstone with no blob left, marked at least `graceMs` ago and whose last claim is older than
 *    `TOMBSTONE_AFTER_CLAIM_MS`, is deleted with `If-Match` on the ETag the collector read.
 *
 * Segments (older release records, lib/core/segments.ts) are referenced objects too: one that no document
 * references is marked (`segments`), and removed once it has been seen so for `graceMs` and at least
 * `TOMBSTONE_AFTER_CLAIM_MS`. No claim is needed: every segment is written once (its nonce makes it unique), by a
 * push that references it within its window or never, and a document never takes back a segment it dropped.
 *
 * A push (see `fence` and `checkFence`) reads the document before it writes its blob, waiting while the blob is
 * claimed, and remembers the nonce; its CAS is refused (and the push starts over, blob write included) if the
 * nonce changed meanwhile, if the blob is claimed, or if more than `PUSH_WINDOW_MS` passed. Why a release can never
 * reference a deleted blob: a blob is deleted only after a claim, made when nothing referenced it. A push that
 * wrote the blob before the claim sees a new nonce (or the claim) at its CAS, unless the document it read was
 * deleted and recreated in between; tombstones are deleted only `TOMBSTONE_AFTER_CLAIM_MS` after their last claim,
 * longer than a push's window plus clock skew, so that cannot happen within one. A push that wrote the blob after
 * the claim had waited for the claim to be lifted, that is for the delete to be done.
 */

/** The collector's state in a package document. Times are RFC 3339. */
export interface GcState {
  /** Digest to when a collector first saw the blob unreferenced. */
  orphans?: Record<string, string>;
  /** Digest to when a collector claimed it for deletion: pushes of that blob wait. */
  claims?: Record<string, string>;
  /** Replaced by every claim: a push that saw another nonce before writing its blob starts over. */
  nonce?: string;
  /** The last claim. */
  claimedAt?: string;
  /** When a collector first saw the document as a tombstone. */
  tombstoneSince?: string;
  /** Segment hash to when a collector first saw it unreferenced. */
  segments?: Record<string, string>;
}

/** A package document as the collector reads it (lib/core/registry.ts owns the full shape). */
type Doc = Pick<PackageDoc, 'namespace' | 'name' | 'created_at' | 'visibility' | 'releases' | 'channels' | 'gc' | 'segments' | 'removed'>;

/** How the collector sees a document's releases held in segments (lib/core/segments.ts, through the Registry). */
export interface SegmentAccess {
  /** Load the document's segments (before a synchronous `releases` of it). */
  load(doc: Doc): Promise<unknown>;
  /** Every release record of the document, segments included; throws when they are not loaded. */
  releases(doc: Doc): PackageDoc['releases'];
  /** The segment hashes the document references, indexes included. */
  referenced(doc: Doc): Promise<Set<string>>;
  /** Whether `err` says the segments were not loaded (the change is tried again after `load`). */
  notLoaded(err: unknown): boolean;
}

/** The longest a push may take from reading the package document to its compare-and-swap before it starts over. */
export const PUSH_WINDOW_MS = 5 * 60_000;
/** A tombstone outlives its last claim by this much: the push window, plus 10 minutes of clock skew between hosts. */
export const TOMBSTONE_AFTER_CLAIM_MS = PUSH_WINDOW_MS + 10 * 60_000;
/** A collector deletes the blobs it claimed only this soon after claiming them (a paused process gives up). */
const CLAIM_LEASE_MS = 60_000;
/** How long a push waits for a collector to finish deleting the blob it is pushing. */
const CLAIM_WAIT_MS = 30_000;

/** How long garbage stays after it is first seen, unless `graceMs` says otherwise: one hour. */
export const DEFAULT_GRACE_MS = 3_600_000;

export interface GcOptions {
  /** Report what would be removed; write and delete nothing (not even marks). */
  dryRun?: boolean;
  /**
   * How long a blob must have been seen unreferenced (and a tombstone seen as such) before it is removed, in ms
   * (default one hour). A run marks what it sees; a run `graceMs` later removes it. With 0, one run does both.
   */
  graceMs?: number;
  /** Clock, for tests. */
  now?: () => Date;
}

export interface GcReport {
  dryRun: boolean;
  /** Blobs removed (or that would be). */
  blobs: { package: string; digest: string }[];
  /** Unreferenced segments removed (or that would be). */
  segments: { package: string; hash: string }[];
  /** Packages whose tombstone was removed (or would be). */
  tombstones: string[];
  /** Unreferenced blobs marked by this run, to be removed by a run at least `graceMs` later. */
  marked: number;
  /**
   * Change entries removed (or that would be): those the catalog snapshot covers and older than `graceMs`
   * (lib/core/feed.ts, `ChangeFeed.collect`).
   */
  changes: number;
}

export class FenceBroken extends Error {}

export interface Fence<D> {
  nonce: string | undefined;
  started: number;
  /** The document as read, for the push's compare-and-swap to start from (`DocumentStore.update`'s `first`). */
  doc: { value: D; etag: string } | null;
}

/**
 * Before a push writes its blob: wait while `digest` is claimed by a collector, then remember the nonce. The read
 * is the one the push's compare-and-swap starts from, so the fence costs no extra request when no collector is
 * busy with the package.
 */
export async function fence<D extends Doc>(docs: DocumentStore, docKey: string, digest: string): Promise<Fence<D>> {
  const deadline = performance.now() + CLAIM_WAIT_MS;
  for (let delay = 20; ; delay = Math.min(delay * 2, 1000)) {
    const doc = await docs.readFresh<D>(docKey);
    if (doc?.value.gc?.claims?.[digest] === undefined) return { nonce: doc?.value.gc?.nonce, started: performance.now(), doc };
    if (performance.now() > deadline) {
      throw new StorageUnavailableError(`blob ${digest} is being garbage-collected; try again`);
    }
    await sleep(delay);
  }
}

/** In a push's CAS: throws `FenceBroken` if a collector may have deleted the blob since `fence`. */
export function checkFence(f: Fence<Doc>, current: Doc | null, digest: string): void {
  const state = current?.gc;
  if (state?.nonce !== f.nonce || state?.claims?.[digest] !== undefined || performance.now() - f.started > PUSH_WINDOW_MS) {
    throw new FenceBroken(`the collector claimed blobs since the push began`);
  }
}

/**
 * In a push's CAS: keep the collector's state when the push replaces a tombstone by a new package document, and
 * clear the pushed blob's orphan mark.
 */
export function keepGcState(current: Doc | null, next: Doc, digest: string): void {
  const state = current?.gc;
  if (!state) return;
  const orphans = { ...state.orphans };
  delete orphans[digest];
  const { tombstoneSince: _gone, ...rest } = state;
  setGc(next, compact({ ...rest, orphans }));
}

interface Deps {
  storage: StorageAdapter;
  docs: DocumentStore;
  logger?: Logger | undefined;
  listPageSize: number;
  segments: SegmentAccess;
}

/** One collection over the whole store (see the module comment). Lists every blob and package document. */
export async function collect(deps: Deps, options: GcOptions = {}): Promise<GcReport> {
  const { storage, docs } = deps;
  const dryRun = options.dryRun === true;
  const graceMs = options.graceMs ?? DEFAULT_GRACE_MS;
  const clock = options.now ?? (() => new Date());
  const report: GcReport = { dryRun, blobs: [], segments: [], tombstones: [], marked: 0, changes: 0 };

  const packages = new Map<string, Listed>();
  const entry = (namespace: string, name: string) => {
    const id = `${namespace}/${name}`;
    let found = packages.get(id);
    if (!found) packages.set(id, (found = { namespace, name, blobs: new Set(), segments: new Set(), referencedSegments: new Set() }));
    return found;
  };
  for await (const key of listAll(storage, keys.segments(), deps.listPageSize)) {
    const ref = keys.parseSegment(key);
    if (ref) entry(ref.namespace, ref.name).segments.add(ref.hash);
  }
  for await (const key of listAll(storage, keys.blobs(), deps.listPageSize)) {
    const ref = keys.parseBlob(key);
    if (ref) entry(ref.namespace, ref.name).blobs.add(ref.digest);
  }
  for await (const key of listAll(storage, keys.packages(), deps.listPageSize)) {
    const ref = keys.parsePackageDoc(key);
    if (ref) entry(ref.namespace, ref.name);
  }

  for (const [id, pkg] of packages) {
    const docKey = keys.packageDoc(pkg.namespace, pkg.name);
    const now = clock();
    const fresh = (await docs.readFresh<Doc>(docKey))?.value ?? null;
    if (fresh !== null) {
      await deps.segments.load(fresh);
      // Read before the compare-and-swap: a segment the document references later was written by a push within its
      // window, which the removal's wait outlasts.
      pkg.referencedSegments = await deps.segments.referenced(fresh);
    }
    const releasesOf = (doc: Doc): PackageDoc['releases'] => deps.segments.releases(doc);
    if (dryRun) {
      const current = fresh;
      const planned = plan(current === null ? null : structuredClone(current), pkg, now, graceMs, releasesOf);
      report.segments.push(...planned.removeSegments.map((hash) => ({ package: id, hash })));
      report.blobs.push(...planned.claim.map((digest) => ({ package: id, digest })));
      report.marked += planned.marked;
      const tombstone = planned.next ?? current;
      const blobsLeft = [...pkg.blobs].some((d) => !planned.claim.includes(d));
      if (tombstone && !blobsLeft && canRemoveTombstones(deps) && tombstoneExpired(tombstone, now, graceMs)) report.tombstones.push(id);
      continue;
    }

    let planned: Plan | undefined;
    for (let attempt = 1; planned === undefined; attempt += 1) {
      try {
        planned = await docs.update<Doc, Plan>(docKey, (current) => {
          const result = plan(current, pkg, now, graceMs, releasesOf);
          return result.next ? { next: result.next, result } : { result };
        });
      } catch (err) {
        if (!deps.segments.notLoaded(err) || attempt >= 3) throw err;
        const again = (await docs.readFresh<Doc>(docKey))?.value;
        if (again !== undefined) await deps.segments.load(again);
      }
    }
    report.marked += planned.marked;
    for (const hash of planned.removeSegments) {
      await storage.delete(keys.segment(pkg.namespace, pkg.name, hash));
      report.segments.push({ package: id, hash });
    }
    if (planned.removeSegments.length > 0) {
      await docs.update<Doc, void>(docKey, (current) => {
        if (!current?.gc?.segments) return { result: undefined };
        const marks = { ...current.gc.segments };
        for (const hash of planned.removeSegments) delete marks[hash];
        setGc(current, compact({ ...current.gc, segments: marks }));
        return { next: current, result: undefined };
      });
    }
    const claimedAt = performance.now();
    const deleted: string[] = [];
    for (const digest of planned.claim) {
      if (performance.now() - claimedAt > CLAIM_LEASE_MS / 2) {
        // Paused or very slow: leave the rest claimed rather than delete after another collector may act.
        deps.logger?.warn({ package: id }, 'koa-appr: gc: claim lease running out; the next run finishes this package');
        break;
      }
      await storage.delete(keys.blob(pkg.namespace, pkg.name, digest));
      deleted.push(digest);
      report.blobs.push({ package: id, digest });
    }
    if (deleted.length > 0) {
      await docs.update<Doc, void>(docKey, (current) => {
        if (!current?.gc?.claims) return { result: undefined };
        const claims = { ...current.gc.claims };
        for (const digest of deleted) delete claims[digest];
        setGc(current, compact({ ...current.gc, claims }));
        return { next: current, result: undefined };
      });
    }
    if (await removeTombstone(deps, docKey, pkg, clock(), graceMs)) report.tombstones.push(id);
  }
  return report;
}

interface Plan {
  next: Doc | null;
  claim: string[];
  /** Segments to delete now (unreferenced long enough). */
  removeSegments: string[];
  marked: number;
}

interface Listed {
  namespace: string;
  name: string;
  blobs: Set<string>;
  segments: Set<string>;
  /** The segments the document referenced when read before the compare-and-swap. */
  referencedSegments: Set<string>;
}

/** The collector's decision for one package, from the current document and the blobs listed (pure). */
function plan(current: Doc | null, pkg: Listed, now: Date, graceMs: number, releasesOf: (doc: Doc) => PackageDoc['releases']): Plan {
  const referenced = new Set<string>();
  for (const media of Object.values(current === null ? {} : releasesOf(current))) {
    for (const record of Object.values(media)) referenced.add(record.digest);
  }
  const state: GcState = { ...current?.gc };
  const orphans = { ...state.orphans };
  const claims = { ...state.claims };
  const nowIso = now.toISOString();
  const claim: string[] = [];
  let marked = 0;
  let changed = false;
  const segmentMarks = { ...state.segments };
  const removeSegments: string[] = [];
  for (const hash of Object.keys(segmentMarks)) {
    if (pkg.referencedSegments.has(hash) || !pkg.segments.has(hash)) {
      delete segmentMarks[hash];
      changed = true;
    }
  }
  for (const hash of pkg.segments) {
    if (pkg.referencedSegments.has(hash)) continue;
    const seen = segmentMarks[hash];
    if (seen === undefined) {
      segmentMarks[hash] = nowIso;
      marked += 1;
      changed = true;
    } else if (now.getTime() - Date.parse(seen) >= Math.max(graceMs, TOMBSTONE_AFTER_CLAIM_MS)) {
      removeSegments.push(hash);
    }
  }
  for (const digest of Object.keys(orphans)) {
    if (referenced.has(digest) || !pkg.blobs.has(digest)) {
      delete orphans[digest];
      changed = true;
    }
  }
  for (const digest of pkg.blobs) {
    if (referenced.has(digest) || claims[digest] !== undefined) continue;
    const seen = orphans[digest] ?? nowIso;
    if (now.getTime() - Date.parse(seen) >= graceMs) {
      delete orphans[digest];
      claims[digest] = nowIso;
      claim.push(digest);
    } else if (orphans[digest] === undefined) {
      orphans[digest] = nowIso;
      marked += 1;
      changed = true;
    }
  }
  if (claim.length > 0) {
    state.nonce = randomBytes(12).toString('base64url');
    state.claimedAt = nowIso;
  }
  const tombstone = current === null || Object.keys(releasesOf(current)).length === 0;
  if (tombstone && (current !== null || pkg.blobs.size > 0) && state.tombstoneSince === undefined) {
    state.tombstoneSince = nowIso;
    changed = true;
  }
  if (!changed && claim.length === 0) return { next: null, claim, removeSegments, marked };
  // Blobs without a package document (a push that died before its CAS) get a tombstone to hold the claims.
  const next: Doc = current ?? {
    namespace: pkg.namespace, name: pkg.name, created_at: nowIso, visibility: 'public', releases: {}, channels: {},
  };
  setGc(next, compact({ ...state, orphans, claims, segments: segmentMarks }));
  return { next, claim, removeSegments, marked };
}

function tombstoneExpired(doc: Doc, now: Date, graceMs: number): boolean {
  const state = doc.gc;
  // A document whose releases are all in segments has no inline release, and is no tombstone.
  if (Object.keys(doc.releases).length > 0 || (doc.segments?.length ?? 0) > 0 || !state?.tombstoneSince) return false;
  if (state.claims && Object.keys(state.claims).length > 0) return false;
  if (now.getTime() - Date.parse(state.tombstoneSince) < graceMs) return false;
  return state.claimedAt === undefined
    || now.getTime() - Date.parse(state.claimedAt) >= Math.max(graceMs, TOMBSTONE_AFTER_CLAIM_MS);
}

/**
 * Tombstones are removed only where storage honours a conditional delete: on S3 (RGW ignores `If-Match` on
 * DeleteObject, `capabilities.conditionalDelete: false`) a push recreating the package between the check and the
 * delete would lose its new document, so they stay (one small document per deleted package).
 */
function canRemoveTombstones(deps: Deps): boolean {
  return deps.storage.capabilities?.conditionalDelete === true;
}

/** Delete an expired tombstone with no blob left, conditionally on the ETag read (a push recreating it wins). */
async function removeTombstone(
  deps: Deps, docKey: string, pkg: { namespace: string; name: string }, now: Date, graceMs: number,
): Promise<boolean> {
  if (!canRemoveTombstones(deps)) return false;
  const got = await deps.storage.get(docKey);
  if (got === null || got.notModified) return false;
  let doc: Doc;
  try {
    doc = JSON.parse(got.body.toString('utf8')) as Doc;
  } catch {
    return false;
  }
  if (!tombstoneExpired(doc, now, graceMs)) return false;
  const left = await deps.storage.list(keys.blobs(pkg.namespace, pkg.name), { limit: 1 });
  if (left.keys.length > 0) return false;
  const removed = await deps.storage.delete(docKey, { ifMatch: got.etag });
  deps.docs.invalidate(docKey);
  return removed;
}

async function* listAll(storage: StorageAdapter, prefix: string, limit: number): AsyncGenerator<string> {
  let cursor: string | undefined;
  do {
    const page = await storage.list(prefix, { cursor, limit });
    yield* page.keys;
    cursor = page.next;
  } while (cursor !== undefined);
}

function setGc(doc: Doc, state: GcState | undefined): void {
  if (state === undefined) delete doc.gc;
  else doc.gc = state;
}

/** Drop empty parts, so a document with nothing to collect carries no `gc` noise. */
function compact(state: GcState): GcState | undefined {
  const out: GcState = {};
  if (state.orphans && Object.keys(state.orphans).length > 0) out.orphans = state.orphans;
  if (state.claims && Object.keys(state.claims).length > 0) out.claims = state.claims;
  if (state.nonce !== undefined) out.nonce = state.nonce;
  if (state.claimedAt !== undefined) out.claimedAt = state.claimedAt;
  if (state.tombstoneSince !== undefined) out.tombstoneSince = state.tombstoneSince;
  if (state.segments && Object.keys(state.segments).length > 0) out.segments = state.segments;
  return Object.keys(out).length > 0 ? out : undefined;
}
