import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { StorageUnavailableError } from '../errors.js';
import { keys } from './keys.js';
import type { DocumentStore } from './documents.js';
import type { PackageDoc } from './registry.js';
import type { StorageAdapter } from '../storage/types.js';
import type { Logger } from '../ops/logger.js';

/**
 * Garbage collection of blobs and metadata objects no release references, of chart records whose blob is gone,
 * and of tombstones (package documents with no release), safe while other instances push. The collector's
 * bookkeeping lives in the package document it is about (field `gc`), so every decision is part of a
 * compare-and-swap of that document, the same one pushes go through. Blobs and metadata objects are both
 * immutable, content-addressed and reused by a push that finds them stored, so both go through the same steps,
 * keyed by `claimKey` (a blob by its digest, as documents written before metadata was collected have it; a
 * metadata object by `metadata:<hash>`):
 *
 * 1. Mark: an object seen unreferenced is marked with the time (`orphans`); a push relying on it clears the mark.
 * 2. Claim: an object marked at least `graceMs` ago and still unreferenced is claimed (`claims`) in a CAS that also
 *    replaces the document's `nonce`. At that instant no release references it.
 * 3. Delete the claimed objects (a blob with its chart record), then lift the claims (CAS). A claim older than
 *    `CLAIM_TAKEOVER_MS` is a run that failed or stopped before this step: a later run claims the object again and
 *    deletes it, or drops the claim when the object is gone already. So a run deletes only within its lease counted
 *    from the time its claims carry (not from when their write returned), and lifts only the claims it made (same
 *    time): a late lift must not lift the claim of the run that took over (test/ops/gc-takeover-races.test.ts).
 * 4. A tombstone with no blob left, marked at least `graceMs` ago and whose last claim is older than
 *    `TOMBSTONE_AFTER_CLAIM_MS`, is deleted with `If-Match` on the ETag the collector read.
 *
 * Segments (older release records, lib/core/segments.ts) are referenced objects too: one that no document
 * references is marked (`segments`), and removed once it has been seen so for `graceMs` and at least
 * `TOMBSTONE_AFTER_CLAIM_MS`. No claim is needed: every segment is written once (its nonce makes it unique), by a
 * push that references it within its window or never, and a document never takes back a segment it dropped.
 *
 * A push (see `fence` and `checkFence`) reads the document before it writes its blob and metadata object, waiting
 * while one of the objects it relies on is claimed, and remembers the nonce; its CAS is refused (and the push starts
 * over, object writes included) if the nonce changed meanwhile, if one of its objects is claimed or was claimed
 * when it read the document (an object it learnt it relies on only after that read: inline metadata it migrates),
 * or if more than `PUSH_WINDOW_MS` passed. Why a release can never reference a deleted object: an object is deleted
 * only after a claim, made when nothing referenced it. A push that wrote (or found) the object before the claim
 * sees a new nonce (or the claim) at its CAS, unless the document it read was deleted and recreated in between;
 * tombstones are deleted only `TOMBSTONE_AFTER_CLAIM_MS` after their last claim, longer than a push's window plus
 * clock skew, so that cannot happen within one. A push that wrote the object after the claim had waited for the
 * claim to be lifted, that is for the delete to be done.
 *
 * Chart records (`keys.chart`) need no claim: one is written after its blob (by the push that wrote the blob, or
 * by the Helm index after reading it), so it is deleted just before its blob while the blob's claim holds (a
 * collector stopped in between leaves a blob without a record, which the index reads), and one whose blob is gone
 * (an earlier version of this collector stopped between the two deletes, or the index wrote it back as the blob
 * went) is deleted once a HEAD right before confirms the blob is absent. The one race left, a push writing the
 * blob and its record again between that HEAD and the delete, loses only the record: the index reads the blob once
 * and writes it back (lib/helm/index.ts), as for releases pushed before records existed.
 */

/** The collector's state in a package document. Times are RFC 3339. */
export interface GcState {
  /** `claimKey` to when a collector first saw the object unreferenced. */
  orphans?: Record<string, string>;
  /** `claimKey` to when a collector claimed the object for deletion: pushes relying on it wait. */
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

/** What a claim or an orphan mark is about (see the module comment). */
export type ClaimedObject = { kind: 'blob'; digest: string } | { kind: 'metadata'; hash: string };

const METADATA_CLAIM = 'metadata:';

/** The key of `object` in `GcState.orphans` and `claims`: a blob's digest (as before kinds), `metadata:<hash>`. */
export function claimKey(object: ClaimedObject): string {
  return object.kind === 'blob' ? object.digest : `${METADATA_CLAIM}${object.hash}`;
}

/** The inverse of `claimKey`: a key without a known kind prefix is a blob's digest (documents of older versions). */
export function parseClaimKey(key: string): ClaimedObject {
  return key.startsWith(METADATA_CLAIM)
    ? { kind: 'metadata', hash: key.slice(METADATA_CLAIM.length) }
    : { kind: 'blob', digest: key };
}

/** A package document as the collector reads it (lib/core/registry.ts owns the full shape). */
type Doc = Pick<
  PackageDoc,
  'namespace' | 'name' | 'created_at' | 'visibility' | 'releases' | 'channels' | 'gc' | 'segments' | 'removed'
>;

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
/**
 * A claim this old is another collector's unfinished job (it failed or stopped between its claim and its deletes,
 * or before lifting the claim): a later run takes it over. Past the claiming collector's lease, plus 10 minutes of
 * clock skew between hosts (the claim's time is the claiming host's), that collector deletes nothing more.
 */
export const CLAIM_TAKEOVER_MS = CLAIM_LEASE_MS + 10 * 60_000;
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
  /** Metadata objects (`keys.metadata`) no release references, removed (or that would be). */
  metadata: { package: string; hash: string }[];
  /** Chart records (`keys.chart`) removed with their blob or because their blob is gone (or that would be). */
  charts: { package: string; digest: string }[];
  /** Unreferenced segments removed (or that would be). */
  segments: { package: string; hash: string }[];
  /** Packages whose tombstone was removed (or would be). */
  tombstones: string[];
  /** Unreferenced blobs and metadata objects marked by this run, to be removed by a run at least `graceMs` later. */
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
  /** The claims in the document as read (`claimKey`s). */
  claimed: string[];
  started: number;
  /** The document as read, for the push's compare-and-swap to start from (`DocumentStore.update`'s `first`). */
  doc: { value: D; etag: string } | null;
}

/**
 * Before a push writes its blob and metadata object: wait while one of the objects it relies on (`relied`,
 * `claimKey`s: its blob, its metadata object) is claimed by a collector, then remember the nonce. The read is the
 * one the push's compare-and-swap starts from, so the fence costs no extra request when no collector is busy with
 * the package. Throws `StorageUnavailableError` after waiting 30 s.
 *
 * `beforeWait`, when given, is called with each version read (the value, null when absent) that has one of
 * `relied` claimed, before the fence waits (or gives up): what it throws, the fence throws at once. A push refused
 * by that version (409, 403) throws there: it writes nothing, so no claim concerns it, and a claim (held until a
 * later run takes it over, `CLAIM_TAKEOVER_MS`, when its collector stopped half-way) must not turn its answer into
 * a wait and a 503 (test/push/refused-during-claim.test.ts).
 */
export async function fence<D extends Doc>(
  docs: DocumentStore,
  docKey: string,
  relied: string[],
  beforeWait?: (doc: D | null) => void,
): Promise<Fence<D>> {
  const deadline = performance.now() + CLAIM_WAIT_MS;
  for (let delay = 20; ; delay = Math.min(delay * 2, 1000)) {
    const doc = await docs.readFresh<D>(docKey);
    const claims = doc?.value.gc?.claims ?? {};
    const busy = relied.find((key) => claims[key] !== undefined);
    if (busy === undefined)
      return { nonce: doc?.value.gc?.nonce, claimed: Object.keys(claims), started: performance.now(), doc };
    beforeWait?.(doc?.value ?? null);
    if (performance.now() > deadline) {
      const object = parseClaimKey(busy);
      throw new StorageUnavailableError(
        `${object.kind === 'blob' ? `blob ${object.digest}` : `metadata ${object.hash}`} is being garbage-collected; try again`,
      );
    }
    await sleep(delay);
  }
}

/**
 * `fence` without a request, from the version of the document this instance holds (`DocumentStore.peek`), when
 * storage held it less than half of `PUSH_WINDOW_MS` ago and none of `relied` is claimed in it; otherwise
 * undefined (then `fence`). Sound for the same reason as `fence`: what a fence needs is a version of the document
 * that storage held before the push's writes, and every claim since replaces the nonce, which the push's CAS
 * compares. Its window counts from when the read (or the write) of that version started. A cached version that
 * another instance has replaced since costs only a lost compare-and-swap.
 */
export function cachedFence<D extends Doc>(
  docs: DocumentStore,
  docKey: string,
  relied: string[],
): Fence<D> | undefined {
  const cached = docs.peek<D>(docKey);
  if (cached === undefined || performance.now() - cached.at > PUSH_WINDOW_MS / 2) return undefined;
  const claims = cached.value?.gc?.claims ?? {};
  if (relied.some((key) => claims[key] !== undefined)) return undefined;
  const doc = cached.value === null || cached.etag === null ? null : { value: cached.value, etag: cached.etag };
  return { nonce: cached.value?.gc?.nonce, claimed: Object.keys(claims), started: cached.at, doc };
}

/**
 * In a push's CAS: throws `FenceBroken` if a collector may have deleted one of the objects the push relies on
 * (`relied`, `claimKey`s; it may name more than the fence did) since `fence`.
 */
export function checkFence(f: Fence<Doc>, current: Doc | null, relied: string[]): void {
  const state = current?.gc;
  if (
    state?.nonce !== f.nonce ||
    performance.now() - f.started > PUSH_WINDOW_MS ||
    relied.some((key) => state?.claims?.[key] !== undefined || f.claimed.includes(key))
  ) {
    throw new FenceBroken(`the collector claimed objects since the push began`);
  }
}

/**
 * In a push's CAS: keep the collector's state when the push replaces a tombstone by a new package document, and
 * clear the orphan marks of the objects the push relies on (`relied`, `claimKey`s).
 */
export function keepGcState(current: Doc | null, next: Doc, relied: string[]): void {
  const state = current?.gc;
  if (!state) return;
  const orphans = { ...state.orphans };
  for (const key of relied) delete orphans[key];
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
  const report: GcReport = {
    dryRun,
    blobs: [],
    metadata: [],
    charts: [],
    segments: [],
    tombstones: [],
    marked: 0,
    changes: 0,
  };

  const packages = new Map<string, Listed>();
  const entry = (namespace: string, name: string) => {
    const id = `${namespace}/${name}`;
    let found = packages.get(id);
    if (!found) {
      found = {
        namespace,
        name,
        blobs: new Set(),
        metadata: new Set(),
        charts: new Set(),
        segments: new Set(),
        referencedSegments: new Set(),
      };
      packages.set(id, found);
    }
    return found;
  };
  // The content-addressed objects, chart records before blobs: a record listed whose blob is not listed after it
  // had its blob gone by then.
  const objects = [
    [keys.charts, 'charts'],
    [keys.metadataObjects, 'metadata'],
    [keys.segments, 'segments'],
    [keys.blobs, 'blobs'],
  ] as const;
  for (const [kind, listed] of objects) {
    for await (const key of listAll(storage, kind.prefix(), deps.listPageSize)) {
      const ref = kind.parse(key);
      if (ref) entry(ref.namespace, ref.name)[listed].add(ref.hash);
    }
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
      const claimed = planned.claim.map(parseClaimKey);
      for (const object of claimed) {
        if (object.kind === 'blob') report.blobs.push({ package: id, digest: object.digest });
        else report.metadata.push({ package: id, hash: object.hash });
      }
      const goingBlobs = new Set(claimed.flatMap((o) => (o.kind === 'blob' ? [o.digest] : [])));
      for (const digest of pkg.charts) {
        if (goingBlobs.has(digest) || !pkg.blobs.has(digest)) report.charts.push({ package: id, digest });
      }
      report.marked += planned.marked;
      const tombstone = planned.next ?? current;
      const objectsLeft = listedObjects(pkg).some((key) => !planned.claim.includes(key));
      if (tombstone && !objectsLeft && canRemoveTombstones(deps) && tombstoneExpired(tombstone, now, graceMs))
        report.tombstones.push(id);
      continue;
    }

    let planned: Plan | undefined;
    // When the claims that land were stamped, by the clock (the time they carry) and by `performance.now()`: the
    // lease counts from the stamp, not from the write's answer, so a run that stalled between the two (past
    // `CLAIM_TAKEOVER_MS`: another run took its claims over meanwhile) deletes nothing.
    let stamped = now;
    let stampedAt = performance.now();
    for (let attempt = 1; planned === undefined; attempt += 1) {
      try {
        planned = await docs.update<Doc, Plan>(docKey, (current) => {
          stamped = clock();
          stampedAt = performance.now();
          const result = plan(current, pkg, stamped, graceMs, releasesOf);
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
    const deleted: string[] = [];
    for (const key of planned.claim) {
      // By both clocks: a process paused, or a stamp far behind the write that carried it.
      if (
        performance.now() - stampedAt > CLAIM_LEASE_MS / 2 ||
        clock().getTime() - stamped.getTime() > CLAIM_LEASE_MS / 2
      ) {
        // Paused or very slow: leave the rest claimed rather than delete after another collector may act.
        deps.logger?.warn({ package: id }, 'koa-appr: gc: claim lease running out; the next run finishes this package');
        break;
      }
      const object = parseClaimKey(key);
      if (object.kind === 'metadata') {
        await storage.delete(keys.metadata(pkg.namespace, pkg.name, object.hash));
        report.metadata.push({ package: id, hash: object.hash });
      } else {
        // While the claim holds: a push writing the blob again (and its record) waits for it to be lifted. The record
        // first: a collector stopped between the two deletes leaves a blob without a record (the index reads the
        // blob), not a record that a push of the same tar in other bytes could leave in place (lib/core/push.ts).
        if (pkg.charts.has(object.digest)) {
          await storage.delete(keys.chart(pkg.namespace, pkg.name, object.digest));
          report.charts.push({ package: id, digest: object.digest });
        }
        await storage.delete(keys.blob(pkg.namespace, pkg.name, object.digest));
        report.blobs.push({ package: id, digest: object.digest });
      }
      deleted.push(key);
    }
    for (const digest of pkg.charts) {
      if (pkg.blobs.has(digest)) continue;
      // Its blob was gone when listed; a HEAD now narrows the race with a push writing both again (module comment).
      if ((await storage.head(keys.blob(pkg.namespace, pkg.name, digest))) !== null) continue;
      await storage.delete(keys.chart(pkg.namespace, pkg.name, digest));
      report.charts.push({ package: id, digest });
    }
    if (deleted.length > 0) {
      await docs.update<Doc, void>(docKey, (current) => {
        if (!current?.gc?.claims) return { result: undefined };
        const claims = { ...current.gc.claims };
        // Only this run's claims: one another run made since (it took this one over, or claimed the object anew
        // after this one was dropped) is that run's, which may be deleting the object now.
        const mine = stamped.toISOString();
        for (const key of deleted) if (claims[key] === mine) delete claims[key];
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
  /** Hashes of the metadata objects listed. */
  metadata: Set<string>;
  /** Digests of the chart records listed. */
  charts: Set<string>;
  segments: Set<string>;
  /** The segments the document referenced when read before the compare-and-swap. */
  referencedSegments: Set<string>;
}

/** The blobs and metadata objects listed for a package, as `claimKey`s. */
function listedObjects(pkg: Listed): string[] {
  return [
    ...[...pkg.blobs].map((digest) => claimKey({ kind: 'blob', digest })),
    ...[...pkg.metadata].map((hash) => claimKey({ kind: 'metadata', hash })),
  ];
}

/** The collector's decision for one package, from the current document and the objects listed (pure). */
function plan(
  current: Doc | null,
  pkg: Listed,
  now: Date,
  graceMs: number,
  releasesOf: (doc: Doc) => PackageDoc['releases'],
): Plan {
  const referenced = new Set<string>();
  for (const media of Object.values(current === null ? {} : releasesOf(current))) {
    for (const record of Object.values(media)) {
      referenced.add(claimKey({ kind: 'blob', digest: record.digest }));
      if (record.metadata_ref !== undefined) referenced.add(claimKey({ kind: 'metadata', hash: record.metadata_ref }));
    }
  }
  const listed = new Set(listedObjects(pkg));
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
  for (const key of Object.keys(orphans)) {
    if (referenced.has(key) || !listed.has(key)) {
      delete orphans[key];
      changed = true;
    }
  }
  for (const [key, claimed] of Object.entries(claims)) {
    if (now.getTime() - Date.parse(claimed) < CLAIM_TAKEOVER_MS || referenced.has(key)) continue;
    if (listed.has(key)) {
      // Claimed again, with a new nonce, and deleted by this run (step 3).
      claims[key] = nowIso;
      claim.push(key);
    } else {
      // Deleted already; the claim was never lifted.
      delete claims[key];
      changed = true;
    }
  }
  for (const key of listed) {
    if (referenced.has(key) || claims[key] !== undefined) continue;
    const seen = orphans[key] ?? nowIso;
    if (now.getTime() - Date.parse(seen) >= graceMs) {
      delete orphans[key];
      claims[key] = nowIso;
      claim.push(key);
    } else if (orphans[key] === undefined) {
      orphans[key] = nowIso;
      marked += 1;
      changed = true;
    }
  }
  if (claim.length > 0) {
    state.nonce = randomBytes(12).toString('base64url');
    state.claimedAt = nowIso;
  }
  const tombstone = current === null || Object.keys(releasesOf(current)).length === 0;
  if (tombstone && (current !== null || listed.size > 0) && state.tombstoneSince === undefined) {
    state.tombstoneSince = nowIso;
    changed = true;
  }
  if (!changed && claim.length === 0) return { next: null, claim, removeSegments, marked };
  // Objects without a package document (a push that died before its CAS) get a tombstone to hold the claims.
  const next: Doc = current ?? {
    namespace: pkg.namespace,
    name: pkg.name,
    created_at: nowIso,
    visibility: 'public',
    releases: {},
    channels: {},
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
  return (
    state.claimedAt === undefined ||
    now.getTime() - Date.parse(state.claimedAt) >= Math.max(graceMs, TOMBSTONE_AFTER_CLAIM_MS)
  );
}

/**
 * Tombstones are removed only where storage honours a conditional delete: on S3 (RGW ignores `If-Match` on
 * DeleteObject, `capabilities.conditionalDelete: false`) a push recreating the package between the check and the
 * delete would lose its new document, so they stay (one small document per deleted package).
 */
function canRemoveTombstones(deps: Deps): boolean {
  return deps.storage.capabilities?.conditionalDelete === true;
}

/** Delete an expired tombstone with no blob or metadata object left, conditionally on the ETag read (a push recreating it wins). */
async function removeTombstone(
  deps: Deps,
  docKey: string,
  pkg: { namespace: string; name: string },
  now: Date,
  graceMs: number,
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
  for (const prefix of [
    keys.blobs.prefix(pkg.namespace, pkg.name),
    keys.metadataObjects.prefix(pkg.namespace, pkg.name),
  ]) {
    if ((await deps.storage.list(prefix, { limit: 1 })).keys.length > 0) return false;
  }
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
