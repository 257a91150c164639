import { createHash } from 'node:crypto';
import { stat } from 'node:fs/promises';
import { LRUCache } from 'lru-cache';
import { ApprError, StorageUnavailableError } from '../errors.js';
import type { StorageAdapter } from '../storage/types.js';
import { mapLimit, putFileWith, putImmutable } from '../storage/util.js';
import { DEFAULT_STORAGE_TIMEOUT_MS, readWithinDeadline, withinDeadline } from '../storage/deadline.js';
import { BlobStager, isStagedBlob, stageBlob, type StagedBlob, type StageOptions } from './blob.js';
import { CHART_RECORD_FORMAT, HELM_MEDIA_TYPE, type ChartRecord } from './chart.js';
import type { Logger } from '../ops/logger.js';
import type { DocumentStore } from './documents.js';
import {
  cachedFence,
  checkFence,
  claimKey,
  fence,
  FenceBroken,
  keepGcState,
  PUSH_WINDOW_MS,
  type Fence,
} from './gc.js';
import { keys } from './keys.js';
import { checkName, normalizeMediaType } from './names.js';
import type { PackageDoc, PushInput, Visibility } from './registry.js';
import { checkRelease } from './release.js';
import {
  allReleases,
  applyFlush,
  hasReleases,
  mediaOf,
  Segments,
  SegmentsNotLoaded,
  setRecord,
  type FlushPlan,
  type SegmentView,
} from './segments.js';

/*
 * The push path behind `Registry.push` (lib/core/registry.ts): a staged blob, its metadata object and Helm chart
 * record, the segment of older records when the inline ones are full, then the package document's
 * compare-and-swap, fenced against the garbage collector (lib/core/gc.ts). The registry adds what follows every
 * change (the change entry, metrics, the audit event).
 */

/** Legacy inline metadata moved to objects by one push: a big old package migrates over several pushes. */
const MIGRATE_PER_PUSH = 100;
/** Times a push writes its blob when garbage collection keeps removing it (lib/core/gc.ts). */
const MAX_PUSH_ROUNDS = 10;
/** Metadata objects whose confirmation a push may rely on (`Pusher#confirmed`): the most recently confirmed. */
const CONFIRMED_MAX = 10_000;

/** What a push works with: the registry's storage, documents and segments, its clock and its push options. */
export interface PushDeps {
  storage: StorageAdapter;
  docs: DocumentStore;
  segments: Segments;
  now: () => Date;
  /** Visibility of a package the push creates when the push does not say. */
  defaultVisibility: Visibility;
  /** How blobs are checked and staged; `maxSize` is given per stager. */
  stage: Omit<StageOptions, 'maxSize'>;
  /** Where a chart record that could not be written (the push goes on without it) is reported. */
  logger?: Logger | undefined;
  /**
   * The registry's storage deadline (ms; 0: none, default 5000), for a read only the push waits for (`#storedDigest`):
   * lib/storage/deadline.ts bounds a stream until it is handed over, not while it is read.
   */
  storageTimeoutMs?: number | undefined;
}

/** A helm push's chart record across the rounds of one push (see `Pusher#storeChart`). */
interface ChartWrite {
  /** The sha256 (hex) of the stored gzip bytes, as this round found or wrote them: `archive_digest`. */
  archiveDigest?: string | undefined;
  /** This round's write of the record, under way while the compare-and-swap publishes the release. */
  writing?: Promise<void> | undefined;
}

/** One push, checked and staged: what each of its rounds reads, and what a round leaves to the next. */
interface PushPlan {
  readonly input: PushInput;
  readonly namespace: string;
  readonly name: string;
  readonly release: string;
  /** Normalized (`normalizeMediaType`). */
  readonly mediaType: string;
  readonly force: boolean;
  /** The package document's storage key. */
  readonly docKey: string;
  readonly blob: StagedBlob;
  /** The release's metadata as its immutable object, when the push has metadata. */
  readonly metadata: MetadataObject | undefined;
  /** ISO 8601: the release record's `created_at` (and a new package's). */
  readonly createdAt: string;
  /** The chart record a round writes, and the sha256 of the bytes the release publishes (see `#storeChart`). */
  readonly chart: ChartWrite;
  /** Hashes of the legacy inline metadata the last round moved to objects (`#migrateMetadata`). */
  migrated?: Set<string>;
}

/** A round of a push that must be run again (`Pusher#round`). */
const AGAIN = Symbol('again');

/**
 * The objects a round relies on, as the collector's claim keys (lib/core/gc.ts): the blob, the metadata object,
 * and the inline metadata an earlier round migrated (one this round migrates is checked at the compare-and-swap).
 */
function relied(plan: PushPlan): string[] {
  const hashes = [...(plan.metadata === undefined ? [] : [plan.metadata.hash]), ...(plan.migrated ?? [])];
  return [
    claimKey({ kind: 'blob', digest: plan.blob.digest }),
    ...hashes.map((hash) => claimKey({ kind: 'metadata', hash })),
  ];
}

/**
 * Why the compare-and-swap refuses a push (403, 409), the rules for it and for `Pusher#readsFirst`, which asks
 * before any error is built. A tombstone (every release deleted) still belongs to someone: it counts as existing
 * for `createOnly` (issue 12 item 1).
 */
function forbidden(plan: PushPlan, doc: PackageDoc | null): boolean {
  return plan.input.createOnly === true && doc !== null;
}

function taken(plan: PushPlan, doc: PackageDoc, view: SegmentView): boolean {
  return !plan.force && Object.hasOwn(mediaOf(doc, view, plan.release) ?? {}, plan.mediaType);
}

/** Built only when thrown: an Error captures a stack trace, a cost every successful push would pay. */
function notAllowed(plan: PushPlan): ApprError {
  const pkg = `${plan.namespace}/${plan.name}`;
  return new ApprError('forbidden', `You are not allowed to push to ${pkg}`, { package: pkg });
}

/** Built only when thrown (see `notAllowed`). */
function conflict(plan: PushPlan): ApprError {
  return new ApprError('package-exists', 'Package exists already', {
    package: `${plan.namespace}/${plan.name}`,
    release: plan.release,
    media_type: plan.mediaType,
  });
}

/** Thrown by a push's compare-and-swap that would publish before it read the sha256 of the stored bytes. */
class StoredDigestNeeded extends Error {}

/** What a push stored, for the change entry, metrics and the audit event. */
export interface Pushed {
  namespace: string;
  name: string;
  release: string;
  /** Normalized (`normalizeMediaType`). */
  mediaType: string;
  /** sha256 (hex) of the tar. */
  digest: string;
  /** Bytes of the stored blob: an earlier push's when the same tar was stored already. */
  size: number;
  /** ISO 8601, the release record's `created_at`. */
  createdAt: string;
  forced: boolean;
  /** The push created the package (or brought a tombstone back). */
  created: boolean;
}

export class Pusher {
  readonly #storage: StorageAdapter;
  readonly #docs: DocumentStore;
  readonly #segments: Segments;
  readonly #deps: PushDeps;
  /** The storage deadline (ms; 0: none) that bounds this class's own reads of storage and of spooled files. */
  readonly #timeoutMs: number;
  /**
   * Metadata objects this instance found or wrote in storage: the package's collector nonce at the fence read of
   * the push that did, and that read's time (`performance.now()`). See `#putMetadata`.
   */
  readonly #confirmed = new LRUCache<string, { nonce: string | undefined; at: number }>({ max: CONFIRMED_MAX });

  constructor(deps: PushDeps) {
    this.#storage = deps.storage;
    this.#docs = deps.docs;
    this.#segments = deps.segments;
    this.#deps = deps;
    this.#timeoutMs = deps.storageTimeoutMs ?? DEFAULT_STORAGE_TIMEOUT_MS;
  }

  /** A stager for a blob that arrives piece by piece (see `Registry.createBlobStager`). */
  stager(maxSize?: number): BlobStager {
    return new BlobStager(this.stageOptions(maxSize));
  }

  stageOptions(maxSize?: number): StageOptions {
    return { ...this.#deps.stage, ...(maxSize === undefined ? {} : { maxSize }) };
  }

  /**
   * Validate, stage and commit one push (see `Registry.push` for the write order and its cost). Throws
   * `ApprError`s (names, release, media type, blob, `package-exists`, `forbidden` for `createOnly`) before
   * anything is stored (`package-exists` and `forbidden` after, from the compare-and-swap, only for a push that lost
   * a race to it), and `StorageUnavailableError` when storage fails or the collector keeps racing the push (a
   * push refused there is refused first, without waiting on the collector's claims: `#round`).
   */
  async push(input: PushInput): Promise<Pushed> {
    const namespace = checkName('namespace', input.namespace);
    const name = checkName('package', input.name);
    const release = checkRelease(input.release);
    const mediaType = normalizeMediaType(input.mediaType ?? 'kpm');
    const blob = isStagedBlob(input.blob) ? input.blob : await stageBlob(input.blob, this.stageOptions());
    try {
      const plan: PushPlan = {
        input,
        namespace,
        name,
        release,
        mediaType,
        force: input.force === true,
        docKey: keys.packageDoc(namespace, name),
        blob,
        metadata: input.metadata === undefined || input.metadata === null ? undefined : metadataObject(input.metadata),
        createdAt: this.#deps.now().toISOString(),
        chart: {},
      };
      // Rounds only when a garbage collector claimed objects of this package meanwhile (lib/core/gc.ts): the blob
      // and the metadata objects are written again after the claim is lifted, so a release never references an
      // object the collector deletes.
      for (let round = 1; ; round += 1) {
        const outcome = await this.#round(plan, round);
        if (outcome === AGAIN) continue;
        const { createdAt, force } = plan;
        return { namespace, name, release, mediaType, digest: blob.digest, createdAt, forced: force, ...outcome };
      }
    } finally {
      if (blob !== input.blob) await blob.dispose();
    }
  }

  /**
   * One round of a push: the objects its release references written at once, then the package document's
   * compare-and-swap. `AGAIN` when the round must be run again (an object a collector removed, a broken fence,
   * segments to read), until MAX_PUSH_ROUNDS. Answers only once everything it started has settled.
   */
  async #round(plan: PushPlan, round: number): Promise<{ created: boolean; size: number } | typeof AGAIN> {
    const { namespace, name, mediaType, blob, metadata, chart } = plan;
    try {
      // The first round starts from the version this instance holds, when it can (no request: `cachedFence`);
      // a round after a broken fence reads storage. A push refused (403, 409) is refused before it writes anything
      // (`#refuseEarly`), on a version read from storage, never on the held one alone (another instance may have
      // deleted the release since): a push the held version refuses reads the document first (one GET), and its
      // fence is the version read. Nor does it wait on a collector's claim of an object it names: the fence refuses
      // it on the version that shows the claim (`fence`'s `beforeWait`).
      let gcFence = round === 1 ? cachedFence<PackageDoc>(this.#docs, plan.docKey, relied(plan)) : undefined;
      if (gcFence !== undefined && this.#refusal(plan, gcFence.doc?.value ?? null) !== undefined) {
        this.#refuseEarly(plan, (await this.#docs.refresh<PackageDoc>(plan.docKey)).value);
        // The version just read, or one this instance wrote since (its compare-and-swap then decides).
        gcFence = cachedFence<PackageDoc>(this.#docs, plan.docKey, relied(plan));
      }
      if (gcFence === undefined) {
        // A version showing a claim on an object this round relies on refuses the push before the fence waits for
        // the claim to be lifted (a refused push writes nothing). Read from storage, it comes with its segments
        // (lib/core/registry.ts, `prepare`): a release held in one refuses the push too.
        gcFence = await fence<PackageDoc>(this.#docs, plan.docKey, relied(plan), (doc) => this.#refuseEarly(plan, doc));
        this.#refuseEarly(plan, gcFence.doc?.value ?? null);
      }
      // The objects the document will reference are independent of each other: written at once (with the fsync
      // of each on the filesystem, that is one disk flush's wait instead of one per object). A failure answers
      // once all are settled: a helm blob still being written starts its chart record after it.
      const fenced = gcFence.doc?.value;
      const [stored, , flush] = await settleAll([
        mediaType === HELM_MEDIA_TYPE
          ? this.#storeChart(namespace, name, blob, chart)
          : this.#storeBlob(namespace, name, blob),
        (async () => {
          // Metadata goes to an immutable object written before the document that references it, so the package
          // document, rewritten by every change, holds ~200 bytes per release. Written in every round: a
          // collector may have deleted an object found stored in an earlier one (create-if-absent: cheap).
          if (metadata !== undefined) await this.#putMetadata(namespace, name, metadata, gcFence);
          plan.migrated = await this.#migrateMetadata(namespace, name);
        })(),
        // Inline records past the bound go to a segment now, before the compare-and-swap that references it.
        fenced === undefined ? undefined : this.#segments.load(fenced).then(() => this.#segments.flush(fenced)),
      ]);
      if (stored === null) {
        // Reported as present but gone (deleted by a collector since): write it again.
        if (round >= MAX_PUSH_ROUNDS)
          throw new StorageUnavailableError(`blob ${blob.digest} was not stored; try again`);
        return AGAIN;
      }
      const swap = {
        gcFence,
        flush,
        size: stored.size,
        digestNeeded: mediaType === HELM_MEDIA_TYPE && !stored.written,
      };
      try {
        // A helm push that found its bytes stored reads them for `archive_digest` (see `#storeChart`), only when the
        // compare-and-swap would publish and no live release of the blob tells it: a push refused (409, 403) reads
        // nothing. Read before the compare-and-swap when the version this round fenced would publish: a mutate
        // function that throws on the cached version makes the store read the document again
        // (lib/core/documents.ts), one GET more than the README's count. A fenced version stale since costs no
        // more than that GET (test/helm/found-stored-attack.test.ts).
        const readFirst = swap.digestNeeded && chart.archiveDigest === undefined && this.#readsFirst(plan, fenced);
        if (readFirst && !(await this.#readStored(plan, round))) return AGAIN;
        try {
          return { created: await this.#publish(plan, swap), size: stored.size };
        } catch (err) {
          if (!(err instanceof StoredDigestNeeded)) throw err;
          if (!(await this.#readStored(plan, round))) return AGAIN;
          return { created: await this.#publish(plan, swap), size: stored.size };
        }
      } catch (err) {
        if (err instanceof SegmentsNotLoaded && round < MAX_PUSH_ROUNDS) return AGAIN; // read again with its segments
        if (!(err instanceof FenceBroken)) throw err;
        if (round >= MAX_PUSH_ROUNDS)
          throw new StorageUnavailableError(`push of ${namespace}/${name} kept racing the garbage collector`);
        return AGAIN;
      }
    } finally {
      // Never rejects. The next round, or the answer (an error too: the metadata or a segment not stored, a
      // conflict), waits for it: a record landing after the push answered may land after a collector removed
      // these bytes (test/helm/chart-record-settled.test.ts). Set by now: `settleAll` waited for the blob.
      await chart.writing;
      chart.writing = undefined;
    }
  }

  /**
   * The package document's compare-and-swap that publishes the release: true when it created the package (or
   * brought a tombstone back). Throws `forbidden` (`createOnly`), `package-exists` (the release is there and the
   * push is not forced), `FenceBroken` (a collector claimed what the round relies on), `StoredDigestNeeded`.
   */
  #publish(
    plan: PushPlan,
    swap: { gcFence: Fence<PackageDoc>; flush: FlushPlan | undefined; size: number; digestNeeded: boolean },
  ): Promise<boolean> {
    const { namespace, name, release, mediaType, blob, chart, metadata, input } = plan;
    const { gcFence, flush, size, digestNeeded } = swap;
    const moved = plan.migrated ?? new Set<string>();
    return this.#docs.update<PackageDoc, boolean>(
      plan.docKey,
      (current) => {
        if (forbidden(plan, current)) throw notAllowed(plan);
        const view = current === null ? undefined : this.#segments.viewOf(current);
        if (current !== null && view !== undefined && taken(plan, current, view)) throw conflict(plan);
        checkFence(gcFence, current, relied(plan));
        // A live release of the same blob tells the stored bytes' sha256 without reading them: referenced since
        // it was published, they are the ones its push wrote or read (a force push of the same chart).
        const archiveDigest =
          chart.archiveDigest ??
          (digestNeeded && current !== null && view !== undefined
            ? liveArchiveDigest(current, view, blob.digest)
            : undefined);
        if (digestNeeded && archiveDigest === undefined) throw new StoredDigestNeeded();
        // A tombstone keeps its visibility: only `setVisibility` (admin) changes it, never a push.
        const doc =
          current && view && hasReleases(current, view)
            ? current
            : newPackage(
                namespace,
                name,
                plan.createdAt,
                current?.visibility ?? input.visibility ?? this.#deps.defaultVisibility,
              );
        if (doc === current) applyFlush(doc, flush);
        if (moved.size > 0) referenceMetadata(doc, moved);
        setRecord(doc, release, mediaType, {
          digest: blob.digest,
          size,
          created_at: plan.createdAt,
          ...(metadata === undefined ? { metadata: null } : { metadata_ref: metadata.hash }),
          ...(archiveDigest === undefined ? {} : { archive_digest: archiveDigest }),
        });
        keepGcState(current, doc, relied(plan));
        this.#segments.viewOf(doc); // keeps the view with the version written
        return { next: doc, result: doc !== current };
      },
      {},
      { cached: true },
    );
  }

  /**
   * Why `doc` (a version of the package document, null when absent) refuses the push: 'forbidden' (403,
   * `createOnly`), 'taken' (409), or undefined when it would publish it, or when its segments are not loaded and its
   * inline records do not tell (then the compare-and-swap decides).
   */
  #refusal(plan: PushPlan, doc: PackageDoc | null): 'forbidden' | 'taken' | undefined {
    if (forbidden(plan, doc)) return 'forbidden';
    if (doc === null) return undefined;
    const view = this.#loadedView(doc);
    return view !== undefined && taken(plan, doc, view) ? 'taken' : undefined;
  }

  /** `doc`'s view of its releases, or undefined when the segments it names are not loaded (no request is made). */
  #loadedView(doc: PackageDoc): SegmentView | undefined {
    try {
      return this.#segments.viewOf(doc);
    } catch (err) {
      if (err instanceof SegmentsNotLoaded) return undefined;
      throw err;
    }
  }

  /**
   * Refuse the push (throws `forbidden`, `package-exists`) before the round writes anything, when `doc`, a version
   * of the package document just read from storage (never the cached one alone: `#round`), refuses it, so that a
   * refused push changes nothing in storage. The compare-and-swap still decides every push this lets through: one
   * that another push overtakes after this check is answered as before, from what storage holds then.
   */
  #refuseEarly(plan: PushPlan, doc: PackageDoc | null): void {
    const refusal = this.#refusal(plan, doc);
    if (refusal === 'forbidden') throw notAllowed(plan);
    if (refusal === 'taken') throw conflict(plan);
  }

  /**
   * Whether a helm push that found its bytes stored reads them before its compare-and-swap (see `#round`): when
   * `doc`, the version its fence holds, would publish the release and has no live release of the blob telling
   * their sha256. Refused there (403, 409), it reads nothing; the compare-and-swap decides.
   */
  #readsFirst(plan: PushPlan, doc: PackageDoc | undefined): boolean {
    if (doc === undefined) return true; // a new package: nothing refuses it, nothing tells the sha256
    if (forbidden(plan, doc)) return false;
    const view = this.#loadedView(doc);
    return (
      view !== undefined && !taken(plan, doc, view) && liveArchiveDigest(doc, view, plan.blob.digest) === undefined
    );
  }

  /**
   * Reads the stored bytes' sha256 into `plan.chart`; false when they are gone (the next round writes them again).
   * Read after this round's fence: a collector removing the bytes before the compare-and-swap breaks it, so they
   * are the release's bytes when it is published.
   */
  async #readStored(plan: PushPlan, round: number): Promise<boolean> {
    const digest = await this.#storedDigest(plan.namespace, plan.name, plan.blob.digest);
    if (digest === null) {
      if (round >= MAX_PUSH_ROUNDS)
        throw new StorageUnavailableError(`blob ${plan.blob.digest} was not stored; try again`);
      return false;
    }
    plan.chart.archiveDigest = digest;
    return true;
  }

  /**
   * Helm: the blob, then, when this push wrote it, its chart record (Chart.yaml as captured while the tar was
   * checked, the sha256 of the gzip bytes, lib/core/chart.ts), started here and written while the
   * compare-and-swap publishes the release (one round trip less per push). The release record carries the same
   * sha256 as `archive_digest`, and the index trusts a chart record only when the two agree (lib/helm/index.ts):
   * a record of other bytes at the key (the blob collected and the tar pushed again in another gzip, or this
   * record's write still under way or failed) is never what it serves for this release
   * (test/helm/chart-record-window.test.ts). A record describes the stored bytes, so only the push that wrote
   * them writes it, and only once it knows it did: a record written at once with the blob, then taken back when
   * the blob turned out stored before (perhaps another gzip of the same tar), stayed when the blob write or the
   * delete failed or the process stopped in between (test/helm/chart-record-failures.test.ts). A record that
   * cannot be stored is left to the index, which reads the blob of such a release once and writes the record
   * back create-if-absent (test/helm/chart-record-put.test.ts). A push that found the blob stored writes no
   * record; its release's `archive_digest` is the sha256 of the stored bytes, taken from a live release of the
   * blob that has it, else read (one GET of the blob) once its compare-and-swap would publish (`push`). Without
   * it the index would trust any record of the blob's size, and a record of other bytes of that size can be at the
   * key: one a push refused after its bytes were collected wrote late, over the record of the bytes stored since,
   * or one of withdrawn bytes a push could not replace
   * (test/helm/chart-record-found-stored.test.ts). So a round that finds the blob stored after an earlier round
   * of this push wrote it and its record (a collector removed it meanwhile, and another push of the tar, perhaps
   * in another gzip, stored it again) leaves that record to the index, which replaces it
   * (test/helm/chart-record-gc-race.test.ts).
   */
  async #storeChart(namespace: string, name: string, blob: StagedBlob, chart: ChartWrite): Promise<StoredBlob | null> {
    const key = keys.chart(namespace, name, blob.digest);
    chart.archiveDigest = undefined;
    const stored = await this.#storeBlob(namespace, name, blob);
    if (stored?.written !== true) return stored; // the stored bytes are read only if the push publishes
    // Built only for bytes this push wrote: a push that found them stored writes no record.
    const record: ChartRecord = {
      format: CHART_RECORD_FORMAT,
      digest: await blob.gzipDigest(),
      size: blob.size,
      ...blob.chartFiles.chart(),
    };
    chart.archiveDigest = record.digest;
    chart.writing = this.#putChartRecord(key, Buffer.from(JSON.stringify(record)));
    return stored;
  }

  /**
   * sha256 (hex) of the stored bytes of a blob, streamed; `null` when the blob is absent. Throws
   * `StorageUnavailableError` when storage fails, or when the read outlasts the storage deadline plus one second per
   * MiB (as a write of those bytes would, lib/storage/deadline.ts): a stalled stream (a hung mount) would otherwise
   * keep the push unanswered, since no client reads this one and gives up.
   */
  async #storedDigest(namespace: string, name: string, digest: string): Promise<string | null> {
    const stream = await this.#storage.getStream(keys.blob(namespace, name, digest));
    if (stream === null) return null;
    return readWithinDeadline(stream, this.#timeoutMs, `blob ${digest}`, async (body) => {
      const hash = createHash('sha256');
      for await (const chunk of body) hash.update(chunk as Buffer);
      return hash.digest('hex');
    });
  }

  /** Store a chart record (see `#storeChart`). Never rejects: a record that cannot be stored is the index's. */
  async #putChartRecord(key: string, body: Buffer): Promise<void> {
    try {
      // Create-only (on the filesystem adapter an unconditional put takes a lock); a record there already (its
      // blob was collected and is pushed again) is replaced, since these bytes are the stored ones.
      const created = await this.#storage.put(key, body, { ifNoneMatch: '*' });
      if (created === null && (await this.#storage.put(key, body)) === null) {
        throw new StorageUnavailableError('the chart record was not stored');
      }
    } catch (err) {
      this.#deps.logger?.warn({ err, key }, 'koa-appr: a chart record could not be written; the index reads its blob');
    }
  }

  /**
   * Store a release's metadata as an immutable, content-addressed object; returns its sha256 (hex). Releases of one
   * package often carry the same metadata, so:
   * - metadata this instance confirmed stored under the collector nonce this push's fence read (`gcFence`) again,
   *   within `PUSH_WINDOW_MS` of that confirmation, costs no request. The collector deletes an object only after a
   *   claim, and every claim replaces the nonce (lib/core/gc.ts): the same nonce means no claim since, so the object
   *   is still there. The window covers a package document deleted and created again (its nonce starts over),
   *   which the collector does only `TOMBSTONE_AFTER_CLAIM_MS` after a claim;
   * - metadata it has written or read before otherwise is checked with a HEAD: one request instead of a PUT refused
   *   with 412 and then a HEAD (and on the filesystem, no temp file written and fsynced for nothing).
   */
  async #putMetadata(namespace: string, name: string, metadata: unknown, gcFence?: Fence<PackageDoc>): Promise<string> {
    const { body, hash } = metadata instanceof MetadataObject ? metadata : metadataObject(metadata);
    const key = keys.metadata(namespace, name, hash);
    const confirmed = gcFence === undefined ? undefined : this.#confirmed.get(key);
    if (
      gcFence !== undefined &&
      confirmed !== undefined &&
      confirmed.nonce === gcFence.nonce &&
      gcFence.started - confirmed.at < PUSH_WINDOW_MS
    ) {
      return hash;
    }
    // Still there now is what a refused PUT and its HEAD tell too; a collector deleting it later is fenced alike.
    if (this.#docs.peek(key) !== undefined && (await this.#storage.head(key)) !== null) {
      this.#confirm(key, gcFence);
      return hash;
    }
    // Already there (412) and then gone: the collector removed an unreferenced copy in between (its claim makes this
    // push's compare-and-swap wait, lib/core/gc.ts); `putImmutable` writes it again.
    const etag = await putImmutable(this.#storage, key, body);
    if (etag === undefined)
      throw new StorageUnavailableError(`metadata of ${namespace}/${name} was not stored; try again`);
    this.#docs.remember(key, JSON.parse(body.toString()) as unknown, etag, body.length);
    this.#confirm(key, gcFence);
    return hash;
  }

  /** Remember that `key` was found or written after the fence read of `gcFence` (nothing without a fence). */
  #confirm(key: string, gcFence: Fence<PackageDoc> | undefined): void {
    if (gcFence !== undefined) this.#confirmed.set(key, { nonce: gcFence.nonce, at: gcFence.started });
  }

  /**
   * Migrate on write: move up to `MIGRATE_PER_PUSH` inline metadata of the cached package document to objects.
   * Returns their hashes; the push's compare-and-swap then references those whose metadata is still the same.
   */
  async #migrateMetadata(namespace: string, name: string): Promise<Set<string>> {
    const doc = this.#docs.peek<PackageDoc>(keys.packageDoc(namespace, name))?.value;
    const inline: unknown[] = [];
    for (const media of Object.values(doc?.releases ?? {})) {
      for (const record of Object.values(media)) {
        if (record.metadata_ref === undefined && record.metadata !== undefined && record.metadata !== null)
          inline.push(record.metadata);
      }
    }
    const hashes = await mapLimit(inline.slice(0, MIGRATE_PER_PUSH), 8, (m) => this.#putMetadata(namespace, name, m));
    return new Set(hashes);
  }

  /**
   * Store a staged blob at its content address, create-if-absent; returns the size of the stored bytes (those of
   * an earlier push of the same tar, perhaps gzipped differently, when it was there already: pulls serve those),
   * and whether these bytes were written now; `null` when storage claims the blob but it is gone (write again).
   */
  async #storeBlob(namespace: string, name: string, blob: StagedBlob): Promise<StoredBlob | null> {
    const blobKey = keys.blob(namespace, name, blob.digest);
    if (blob.bytes === undefined) {
      const stored = await this.#storage.head(blobKey);
      if (stored !== null) return { size: stored.size, written: false };
    }
    const written =
      blob.bytes !== undefined
        ? await this.#storage.put(blobKey, blob.bytes, { ifNoneMatch: '*' })
        : await putSpooled(this.#storage, blobKey, blob.path, blob.size, this.#timeoutMs);
    if (written !== null) return { size: blob.size, written: true };
    // Already there (perhaps gzipped differently: its stored bytes are what pulls serve). A backend that reported a
    // failed condition although nothing is there must not lead to a release without its blob: the caller retries.
    const stored = await this.#storage.head(blobKey);
    return stored === null ? null : { size: stored.size, written: false };
  }
}

/**
 * Store a blob spooled to the temp file at `path` (`size` bytes, as staged) at `key`, create-if-absent (`putFileWith`).
 * The adapters' plain Error for a file that is not `size` bytes (the `StorageAdapter.putFile` contract, right for a
 * caller's file) means here that the registry's own temp file changed size under it, truncated or appended to by
 * something else on the host: the local disk or host failing, neither the client's doing nor a bug, so a
 * `StorageUnavailableError` (503). The adapters check the size before anything is visible at `key`. The file's size
 * is looked up within `timeoutMs` (the storage deadline; 0: none): a stat that outlasts it (a hung mount) is a
 * `StorageUnavailableError` too, rather than a push that never answers.
 */
async function putSpooled(
  storage: StorageAdapter,
  key: string,
  path: string,
  size: number,
  timeoutMs: number,
): Promise<string | null> {
  try {
    return await putFileWith(storage, key, path, size, { ifNoneMatch: '*' });
  } catch (err) {
    if (err instanceof ApprError) throw err;
    // Told apart by the file's size now, not by the adapter's message, which no contract fixes.
    const sizeNow = () =>
      stat(path).then(
        (stats) => stats.size,
        () => undefined,
      );
    const hung = () =>
      new StorageUnavailableError(`push spool: the temp file of a push did not answer within ${timeoutMs} ms`, err);
    const now =
      timeoutMs > 0 && Number.isFinite(timeoutMs) ? await withinDeadline(timeoutMs, sizeNow, hung) : await sizeNow();
    if (now === size) throw err;
    const found = now === undefined ? 'is gone' : `has ${now} bytes`;
    throw new StorageUnavailableError(`push spool: the temp file of a push ${found}, ${size} were staged`, err);
  }
}

/** A blob stored: the size of the stored bytes, and whether this push wrote them. */
interface StoredBlob {
  size: number;
  written: boolean;
}

/** A release's metadata as its object's bytes (JSON) and their sha256 (hex): its content address. */
class MetadataObject {
  constructor(
    readonly body: Buffer,
    readonly hash: string,
  ) {}
}

function metadataObject(metadata: unknown): MetadataObject {
  const body = Buffer.from(JSON.stringify(metadata));
  return new MetadataObject(body, createHash('sha256').update(body).digest('hex'));
}

/**
 * `Promise.all`, but settled only once every promise has: rejects with the first rejection (in order) then, so
 * that nothing a round started is still running when the push answers.
 */
async function settleAll<T extends readonly unknown[] | []>(
  values: T,
): Promise<{ -readonly [P in keyof T]: Awaited<T[P]> }> {
  const results: readonly PromiseSettledResult<unknown>[] = await Promise.allSettled(values as readonly unknown[]);
  const failed = results.find((result): result is PromiseRejectedResult => result.status === 'rejected');
  if (failed !== undefined) throw failed.reason;
  return results.map((result) => (result as PromiseFulfilledResult<unknown>).value) as {
    -readonly [P in keyof T]: Awaited<T[P]>;
  };
}

/** The `archive_digest` of a live release (inline or in a segment) of the blob `digest`, if one has it. */
function liveArchiveDigest(doc: PackageDoc, view: SegmentView, digest: string): string | undefined {
  for (const media of Object.values(allReleases(doc, view))) {
    for (const record of Object.values(media)) {
      if (record.digest === digest && record.archive_digest !== undefined) return record.archive_digest;
    }
  }
  return undefined;
}

/** Replace inline metadata whose object is stored (its hash in `stored`) by a reference to it. */
function referenceMetadata(doc: PackageDoc, stored: Set<string>): void {
  for (const media of Object.values(doc.releases)) {
    for (const record of Object.values(media)) {
      if (record.metadata_ref !== undefined || record.metadata === undefined || record.metadata === null) continue;
      const hash = createHash('sha256').update(JSON.stringify(record.metadata)).digest('hex');
      if (!stored.has(hash)) continue;
      record.metadata_ref = hash;
      delete record.metadata;
    }
  }
}

function newPackage(namespace: string, name: string, createdAt: string, visibility: Visibility): PackageDoc {
  return { namespace, name, created_at: createdAt, visibility, releases: {}, channels: {} };
}
