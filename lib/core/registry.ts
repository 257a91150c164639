import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { LRUCache } from 'lru-cache';
import { ApprError, StorageUnavailableError } from '../errors.js';
import { fetchOr, loadOrFail } from './cache-reads.js';
import { gcOptions, registryOptions, systemClock } from '../options/schema.js';
import { parseOptions } from '../options/validate.js';
import { checkedStorage } from '../storage/checked.js';
import { withDeadline } from '../storage/deadline.js';
import type { StorageAdapter, StreamResult } from '../storage/types.js';
import { parseDigest, type BlobStager, type StagedBlob } from './blob.js';
import { Catalog, EVERYONE, type CatalogEntry } from './catalog.js';
import { deepFreeze, DocumentStore, type CasOptions, type DocumentCacheOptions, type Update } from './documents.js';
import { ChangeFeed, type CoherenceOptions } from './feed.js';
import { keys } from './keys.js';
import { Pusher } from './push.js';
import { checkName, contentMediaType, manifestMediaType, normalizeMediaType } from './names.js';
import { checkRelease, compareReleases, sortReleasesDesc } from './release.js';
import { selectRelease } from './selector.js';
import {
  allReleases,
  clearSegments,
  deleteRecord,
  hasReleases,
  mediaOf,
  Segments,
  SegmentsNotLoaded,
  LIVE,
  type SegmentView,
} from './segments.js';
import { emitAudit, type AuditEvent, type AuditHook, type ChangeContext } from '../ops/audit.js';
import { checkStorage, type HealthReport } from './health.js';
import type { Logger } from '../ops/logger.js';
import type { MetricsHooks } from '../ops/metrics-hooks.js';
import { InstrumentedStorage } from '../storage/instrumented.js';
import { collect, DEFAULT_GRACE_MS, type GcOptions, type GcReport, type GcState } from './gc.js';

export type Visibility = 'public' | 'private';

/** One release x media type as stored in the package document. */
export interface ManifestRecord {
  digest: string;
  size: number;
  created_at: string;
  /**
   * The push's metadata inline: `null` when it had none, or a record written before metadata objects existed
   * (pushes move those to objects, a bounded number at a time: lib/core/push.ts).
   */
  metadata?: unknown;
  /** sha256 (hex) of the release's metadata object (`keys.metadata`): immutable, written before the document. */
  metadata_ref?: string;
  /**
   * `helm`: sha256 (hex) of the gzip bytes stored, as the push that made this release wrote them or, when it found
   * the tar stored already, read them back (or took it from a live release of the blob); absent from releases
   * pushed before it was recorded. The Helm index trusts the blob's chart record only when its `digest` agrees
   * (lib/core/push.ts `#storeChart`, lib/helm/index.ts).
   */
  archive_digest?: string;
}

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;

export interface ChannelRecord {
  current: string;
  releases: string[];
}

/**
 * Everything mutable about a package lives in one document, so a push, a delete and a channel change are each
 * one compare-and-swap: channels can never point at a release that a concurrent delete removed. A document with
 * no release is a tombstone: the package does not exist (see `deleteRelease`).
 */
export interface PackageDoc {
  namespace: string;
  name: string;
  created_at: string;
  visibility: Visibility;
  /**
   * Release x media type records. As stored: the recent ones only, the others being in `segments`; as the
   * catalog and the read methods see it (`#logical`): every release.
   */
  releases: Record<string, Record<string, ManifestRecord>>;
  channels: Record<string, ChannelRecord>;
  /** Older release records, in immutable segment objects (lib/core/segments.ts), oldest first. */
  segments?: string[];
  /** Release to media types deleted from the segments. */
  removed?: Record<string, string[]>;
  /** The garbage collector's bookkeeping (lib/core/gc.ts); every write of the document must keep it. */
  gc?: GcState;
}

export interface Manifest {
  package: string;
  release: string;
  created_at: string;
  metadata: unknown;
  mediaType: string;
  content: { mediaType: string; size: number; digest: string; urls: string[] };
}

export interface PackageSummary {
  name: string;
  namespace: string;
  releases: string[];
  default: string;
  manifests: string[];
  visibility: Visibility;
  created_at: string;
}

/** A response body as JSON text, with an ETag for it (a hash of the text). */
export interface JsonBody {
  body: string;
  etag: string;
}

export interface Channel {
  name: string;
  current: string;
  releases: string[];
}

export interface PushInput {
  namespace: string;
  name: string;
  release: string;
  /**
   * The gzip bytes (already decoded from base64): whole, as a stream, or staged by `createBlobStager()` (then the
   * caller disposes of it). Bytes and streams are checked and staged by `push` itself, after the fields.
   */
  blob: Buffer | Readable | StagedBlob;
  mediaType?: string;
  metadata?: unknown;
  force?: boolean;
  /** Used only when the push creates the package. */
  visibility?: Visibility;
  /**
   * The caller may create this package but not write to it once it exists: refuse (403) if another push created
   * it since the caller was authorized.
   */
  createOnly?: boolean;
  /** Who pushes, for the audit event (see `Actor`). */
  actor?: string | null;
}

export interface PackageRef {
  namespace: string;
  name: string;
  visibility: Visibility;
}

/** Decides whether a package may appear in a list or search result (the caller's read permission). */
export type VisibleFilter = (pkg: PackageRef) => boolean | Promise<boolean>;

/**
 * A blob's bytes: `body` streams them (create it once, and consume or destroy it); `bytes` holds them all when the
 * blob came from the memory cache of small blobs, so a caller can send them without a stream.
 */
export interface BlobContent extends StreamResult {
  bytes?: Buffer;
}

export interface RegistryOptions {
  storage: StorageAdapter;
  /** A pushed tarball may not inflate to more than this many bytes (default 1 GiB). */
  maxUnpackedSize?: number;
  /**
   * Where pushed blobs larger than `pushMemoryBytes` wait, as temp files, between their arrival and their commit
   * (default: the OS temp directory). Needs room for the pushes in flight (see the router's
   * `maxPushBytesInFlight`).
   */
  pushTmpDir?: string;
  /** Pushed blobs up to this many bytes wait in memory instead (default 1 MiB). */
  pushMemoryBytes?: number;
  /** Visibility of new packages when the push does not say (default 'public', as the reference). */
  defaultVisibility?: Visibility;
  /** Memory caches: package documents and small blobs, bounded in bytes. */
  cache?: DocumentCacheOptions;
  /** How instances on one store see each other's changes (README: "Running several instances"). */
  coherence?: CoherenceOptions;
  cas?: CasOptions;
  /**
   * The largest package document (all releases, their metadata and channels) in bytes (default 8 MiB): a push that
   * would grow it further is refused with 422 (delete old releases, or push less metadata).
   */
  maxPackageBytes?: number;
  /** Keys asked for per listing request (default 1000, S3's maximum): the catalog's first load and the backstop. */
  listPageSize?: number;
  /**
   * Overall deadline of one storage operation in ms (default 5000; 0 = none): past it the request is answered
   * 503 `storage-unavailable` whatever the adapter's own timeouts and retries. Writes get one more second per
   * MiB, and so does a helm push's read of a stored blob for its sha256, bounded to its end (lib/core/push.ts
   * `#storedDigest`), and the Helm index's read of a blob (lib/helm/index.ts). See lib/storage/deadline.ts.
   */
  storageTimeoutMs?: number;
  /** Clock, for tests. */
  now?: () => Date;
  /** Metrics (an `ApprMetrics`, or any object of its shape): HTTP, storage, caches, compare-and-swap, bytes. */
  metrics?: MetricsHooks;
  /** Called after each stored change and each login attempt (README "Operating it"). */
  audit?: AuditHook;
  /** Where the library's own log lines go (pino's shape); without one it logs nothing. */
  logger?: Logger;
}

/**
 * The registry's domain core: no Koa, no HTTP. Every method validates its own inputs (names, releases, media
 * types) before building a storage key, and throws `ApprError`s from the one error table.
 */
export class Registry {
  readonly storage: StorageAdapter;
  readonly #docs: DocumentStore;
  readonly #segments: Segments;
  /** The whole-package view of each stored document version (`#logical`). */
  readonly #logicalDocs = new WeakMap<PackageDoc, PackageDoc>();
  readonly #pusher: Pusher;
  readonly #now: () => Date;
  readonly metrics: MetricsHooks | undefined;
  readonly logger: Logger | undefined;
  /**
   * The storage deadline of one operation (ms; 0: none), for a reader that must bound a stream read to its end
   * itself (the Helm index's read of a blob): `storage` bounds a stream only until it is handed over.
   */
  readonly storageTimeoutMs: number;
  /** Option `pushTmpDir` (undefined: the OS temp directory), where the Helm upload route spools a chart too. */
  readonly pushTmpDir: string | undefined;
  readonly #audit: AuditHook | undefined;
  readonly #probeKey = keys.healthProbe();
  readonly #listPageSize: number;
  readonly #catalog = new Catalog();
  readonly #feed: ChangeFeed;
  readonly #blobs: LRUCache<string, CachedBlob, string> | undefined;
  /**
   * Per package, bumped when another instance changed it: cached blobs of an older generation are not served (a
   * blob purged elsewhere must not outlive the purge here).
   */
  readonly #blobGenerations = new Map<string, number>();
  readonly #blobMaxSize: number;
  /** Refreshes started by `invalidate(namespace, name)`: reads of that package wait for them. */
  readonly #pending = new Map<string, Promise<unknown>>();

  /** Throws an `OptionError` (lib/options/validate.ts) for a bad option; the schema is lib/options/schema.ts. */
  constructor(input: RegistryOptions) {
    const options = parseOptions(registryOptions, input, 'Registry');
    // Every storage call of the core, documents included, goes through the one deadline wrapper, measured once
    // around it so that every layer above (documents, blobs, health, gc) is counted, timeouts included; outermost,
    // the contract's input checks (lib/storage/checked.ts), once for every adapter.
    const bounded = withDeadline(options.storage, options.storageTimeoutMs);
    this.storage = checkedStorage(options.metrics ? new InstrumentedStorage(bounded, options.metrics) : bounded);
    this.metrics = options.metrics;
    this.logger = options.logger;
    this.storageTimeoutMs = options.storageTimeoutMs;
    this.pushTmpDir = options.pushTmpDir;
    this.#audit = options.audit;
    this.#listPageSize = options.listPageSize;
    this.#segments = new Segments(this.storage);
    this.#docs = new DocumentStore(
      this.storage,
      options.cache,
      options.cas,
      { maxBytes: options.maxPackageBytes },
      {
        metrics: options.metrics,
        // A package document read from storage comes with its segments, so that every synchronous user (the catalog,
        // a compare-and-swap's update function) finds them in memory.
        prepare: async (key, value) =>
          keys.parsePackageDoc(key) === null ? undefined : this.#segments.load(value as PackageDoc),
      },
    );
    this.#now = options.now;
    this.#pusher = new Pusher({
      storage: this.storage,
      docs: this.#docs,
      segments: this.#segments,
      now: options.now,
      defaultVisibility: options.defaultVisibility,
      logger: options.logger,
      storageTimeoutMs: options.storageTimeoutMs,
      stage: {
        maxUnpackedSize: options.maxUnpackedSize,
        ...(options.pushTmpDir === undefined ? {} : { tmpDir: options.pushTmpDir }),
        ...(options.pushMemoryBytes === undefined ? {} : { memoryBytes: options.pushMemoryBytes }),
      },
    });
    this.#docs.onDocument((key, version) => {
      if (keys.parsePackageDoc(key) !== null) {
        const stored = version.value as PackageDoc | null;
        this.#catalog.apply(key, stored === null ? null : this.#logical(stored), version.etag);
      }
    });
    this.#feed = new ChangeFeed(
      this.storage,
      this.#docs,
      this.#catalog,
      options.coherence,
      // Read on every request (is the feed idle?): without a Date object each time unless a test set the clock.
      options.now === systemClock ? Date.now : () => this.#now().getTime(),
      options.listPageSize,
    );
    const { blobMaxBytes } = options.cache;
    this.#blobMaxSize = Math.min(options.cache.blobMaxSize, blobMaxBytes);
    this.#blobs =
      blobMaxBytes > 0
        ? new LRUCache<string, CachedBlob, string>({
            maxSize: blobMaxBytes,
            sizeCalculation: (blob) => Math.max(blob.bytes.length, 1),
            fetchMethod: async (key, _stale, { context: pkg }) => {
              const generation = this.#blobGenerations.get(pkg) ?? 0;
              const got = await loadOrFail(() => this.storage.get(key));
              return got === null || got.notModified ? undefined : { bytes: got.body, generation };
            },
          })
        : undefined;
    this.#feed.onRemoteChange((key) => {
      this.#blobGenerations.set(key, (this.#blobGenerations.get(key) ?? 0) + 1);
    });
  }
  /**
   * Apply the changes other instances made, now (one poll of the change feed) rather than at the next poll: for
   * tests, and hosts that run with `coherence.pollMs: 0`. Waits first for the change entries of this instance's
   * pushes (`flushChanges`).
   */
  async sync(): Promise<void> {
    const ready = this.#ready();
    if (ready !== undefined) await ready;
    await this.#feed.flush();
    await this.#feed.poll();
  }

  /**
   * Fold change entries older than `coherence.retentionMs` into the catalog snapshot and delete them, now rather
   * than at the next periodic check (any instance may; they never undo each other's work).
   */
  async compactChanges(): Promise<void> {
    const ready = this.#ready();
    if (ready !== undefined) await ready;
    await this.#feed.flush();
    await this.#feed.compact(false);
  }

  /**
   * A token that changes whenever this instance's view of any package changes (its catalog's version): for caches
   * of derived views, such as the Helm index.
   */
  get catalogVersion(): number {
    return this.#catalog.version;
  }

  /**
   * Resolves once the change entries of this instance's pushes are stored (or failed: `coherence.onError`). A push
   * answers before its entry is written (README "Running several instances"); this is the barrier for a test that
   * then counts storage requests or lists the feed, and for a shutdown.
   */
  flushChanges(): Promise<void> {
    return this.#feed.flush();
  }

  /**
   * Stop the background work (change feed polls, compaction, backstop checks), and resolve once the change entries
   * still being written are stored (`flushChanges`). The storage stays open: close it after this resolves.
   */
  async close(): Promise<void> {
    this.#feed.close();
    this.#docs.close();
    await this.#feed.flush();
  }

  // ---- push -------------------------------------------------------------------------------------------------

  /**
   * A stager for the gzip bytes of a blob that arrives piece by piece (an HTTP push body): it checks them as they
   * come (gzip, tar, entry paths, `maxUnpackedSize`) and keeps them aside, outside storage, until `push` commits
   * them. `maxSize` bounds the gzip bytes (413 past it).
   */
  createBlobStager(options: { maxSize?: number } = {}): BlobStager {
    return this.#pusher.stager(options.maxSize);
  }

  /**
   * Everything about the push is validated (names, release, media type) before its blob is checked, and the blob
   * is checked in full before anything is stored, so a refused push leaves nothing in storage. So does a push the
   * package document refuses (`package-exists`, 409; `forbidden`, 403, for `createOnly`): decided before anything is
   * written, on a version of the document storage held after the push began (one GET more when the version this
   * instance holds refuses it: lib/core/push.ts `#refuseEarly`). The compare-and-swap decides every push that lets
   * through, so one refused only there (another push won the race, this instance's copy was stale, or the document
   * would grow past `maxPackageBytes`: 422) leaves its objects unreferenced.
   *
   * Write order: blob, metadata object, segment (when the inline records are full), then the package document (a
   * helm push's chart record is started after its blob and written while the document is: lib/core/push.ts
   * `#storeChart`; a helm push that found its blob stored GETs it for its sha256 unless a live release of it has
   * that as `archive_digest`). A crash or a storage failure in between leaves unreferenced objects (harmless; gc
   * removes them), never a release whose blob, metadata or segment is missing. Costs, whatever the size of the
   * registry and of the package: the package document's conditional GET when this instance holds no recent
   * version (the garbage-collection fence, also the read the compare-and-swap starts from), the blob's and the
   * metadata's create-if-absent PUTs (plus a HEAD when one was already there; only a HEAD, or nothing, for
   * metadata this instance stored or read before), and the compare-and-swap PUT; one PUT of a segment every 32
   * pushes to a package (lib/core/segments.ts). A blob too large to wait in memory is HEADed first, so that
   * pushing the same large tarball again does not upload it again. Resolves before the change entry's PUT
   * (lib/core/feed.ts) is done: `flushChanges` waits for it.
   */
  async push(input: PushInput): Promise<void> {
    const pushed = await this.#pusher.push(input);
    // The bytes now stored under this digest may not be the ones this instance holds: a blob deleted by a
    // collection and pushed again in another gzip is the same tar (same digest), other bytes. Other instances drop
    // theirs when this push's change entry reaches them (`#blobGenerations`).
    this.#blobs?.delete(keys.blob(pushed.namespace, pushed.name, pushed.digest));
    // Answered before its change entry is stored: the entry is for other instances, which see the change a round
    // trip later, and one that is never written (a crash right after) is found by their background check. On S3
    // this is one round trip of four less in a push's latency.
    void this.#feed.record(pushed.namespace, pushed.name);
    this.metrics?.pushed(pushed.size);
    const { namespace, name, createdAt, ...event } = pushed;
    await this.audit({
      type: 'push',
      time: createdAt,
      actor: input.actor ?? null,
      package: `${namespace}/${name}`,
      ...event,
    });
  }

  // ---- list and search ----------------------------------------------------------------------------------------

  /**
   * Route 3, from the catalog: no storage request once it is loaded. `visible` is asked about each package that
   * matches. Package order is the storage order of their keys.
   */
  async listPackages(
    filter: { namespace?: string | undefined; query?: string | undefined; mediaType?: string | undefined } = {},
    visible: VisibleFilter = EVERYONE,
  ): Promise<PackageSummary[]> {
    return JSON.parse(await this.listPackagesJson(filter, visible)) as PackageSummary[];
  }

  /** `listPackages` as the JSON text of the response body (cached per catalog version and filter). */
  async listPackagesJson(
    filter: { namespace?: string | undefined; query?: string | undefined; mediaType?: string | undefined } = {},
    visible: VisibleFilter = EVERYONE,
  ): Promise<string> {
    const namespace = filter.namespace === undefined ? undefined : checkName('namespace', filter.namespace);
    const mediaType = filter.mediaType ? normalizeMediaType(filter.mediaType) : undefined;
    await this.#ready();
    return this.#catalog.listBody(
      {
        ...(namespace === undefined ? {} : { namespace }),
        ...(filter.query ? { query: filter.query } : {}),
        ...(mediaType === undefined ? {} : { mediaType }),
      },
      visible,
    );
  }

  /** Route 4: `ns/name` of the packages whose name contains `query` (case-insensitive, docs/api.md section 13.3). */
  async search(query: string, visible: VisibleFilter = EVERYONE): Promise<string[]> {
    return JSON.parse(await this.searchJson(query, visible)) as string[];
  }

  /** `search` as the JSON text of the response body. */
  async searchJson(query: string, visible: VisibleFilter = EVERYONE): Promise<string> {
    await this.#ready();
    return this.#catalog.searchBody(query, visible);
  }

  // ---- read one package ---------------------------------------------------------------------------------------

  /**
   * Visibility of a package, or null when it never existed. For authorization: a tombstone (every release
   * deleted) keeps its visibility, so a private package stays private (its old blobs too) and pushing to it again
   * needs `write`, not `create`.
   */
  async packageVisibility(namespace: string, name: string): Promise<Visibility | null> {
    const names = this.#names(namespace, name);
    const key = keys.packageDoc(names.namespace, names.name);
    const ready = this.#ready();
    if (ready !== undefined) await ready;
    // Always one (conditional) read, known package or not: a caller refused by the hooks must not tell a private
    // package from an absent one by the time the answer takes (hardening item 16). Reads the hooks allow, and
    // public packages the caller may read, never come here.
    await this.#docs.refresh(key);
    const entry = this.#catalog.get(key);
    if (entry !== undefined) return entry.doc.visibility;
    return this.#catalog.tombstone(key) ?? null;
  }

  /** Change a live package's visibility (the owner's call; see `AccessControl`). Idempotent. Returns the package. */
  async setVisibility(
    namespace: string,
    name: string,
    visibility: Visibility,
    context: ChangeContext = {},
  ): Promise<PackageRef> {
    const changed: PackageRef = { ...this.#names(namespace, name), visibility: checkVisibility(visibility) };
    await this.#changeLive(
      changed,
      context,
      (live) => {
        if (live.visibility === visibility) return { result: visibility };
        const previous = live.visibility;
        live.visibility = visibility;
        return { next: live, result: previous };
      },
      (previous) => ({ type: 'visibility', visibility, previous }),
    );
    return changed;
  }

  /** A release's metadata: inline, or its object (immutable: read once, then from the document cache). */
  async #metadataOf(doc: PackageDoc, record: ManifestRecord): Promise<unknown> {
    if (record.metadata_ref === undefined) return record.metadata ?? null;
    const key = keys.metadata(doc.namespace, doc.name, record.metadata_ref);
    let got = await this.#docs.read(key);
    if (got.etag === null) got = await this.#docs.refresh(key);
    if (got.etag === null)
      throw new StorageUnavailableError(`metadata ${record.metadata_ref} of ${pkgName(doc)} is missing`);
    return got.value;
  }

  /** The manifests of `releases` x media types of `doc`, with their metadata. */
  async #manifests(doc: PackageDoc, pairs: { release: string; mt: string }[]): Promise<Manifest[]> {
    return Promise.all(
      pairs.map(async ({ release, mt }) => {
        const record = own(own(doc.releases, release) ?? {}, mt) as ManifestRecord;
        return manifest(doc, release, mt, await this.#metadataOf(doc, record));
      }),
    );
  }

  /** Route 6: every release x media type, oldest release first. */
  async packageManifests(namespace: string, name: string, mediaType?: string): Promise<Manifest[]> {
    const doc = await this.#package(namespace, name);
    const wanted = mediaType ? normalizeMediaType(mediaType) : undefined;
    const releases = Object.keys(doc.releases).sort(compareReleases);
    return this.#manifests(
      doc,
      releases.flatMap((release) =>
        mediaTypesOf(doc, release)
          .filter((mt) => !wanted || mt === wanted)
          .map((mt) => ({ release, mt })),
      ),
    );
  }

  /**
   * The records of a package's releases of `mediaType` (normalized), oldest release first, without their metadata
   * (nothing read for it): for the Helm repository (lib/helm), which needs each release's blob digest, stored size
   * (bytes), creation time and `archive_digest`. Throws `404 package-not-found` as `packageManifests` does.
   */
  async releaseRecords(
    namespace: string,
    name: string,
    mediaType: string,
  ): Promise<{ release: string; record: Readonly<ManifestRecord> }[]> {
    const doc = await this.#package(namespace, name);
    const wanted = normalizeMediaType(mediaType);
    return Object.keys(doc.releases)
      .sort(compareReleases)
      .flatMap((release) => {
        const record = own(own(doc.releases, release) ?? {}, wanted);
        return record === undefined ? [] : [{ release, record }];
      });
  }

  /** Route 7: the manifests of one exact release. */
  async releaseManifests(namespace: string, name: string, release: string): Promise<Manifest[]> {
    const doc = await this.#package(namespace, name, release);
    if (own(doc.releases, release) === undefined) throw packageNotFound(doc, release);
    return this.#manifests(
      doc,
      mediaTypesOf(doc, release).map((mt) => ({ release, mt })),
    );
  }

  /**
   * Routes 6, 7 and 8 as JSON text with an ETag, computed once per version of the package and question (no
   * serialization, no hashing, no selector resolution on a repeated request).
   */
  async packageManifestsJson(namespace: string, name: string, mediaType?: string): Promise<JsonBody> {
    const names = this.#names(namespace, name);
    const question = `m\0${mediaType ?? ''}`;
    return (
      this.#remembered<JsonBody>(names, question) ??
      this.#memoJson(names, undefined, question, () => this.packageManifests(namespace, name, mediaType))
    );
  }

  async releaseManifestsJson(namespace: string, name: string, release: string): Promise<JsonBody> {
    const names = this.#names(namespace, name);
    const question = `r\0${release}`;
    return (
      this.#remembered<JsonBody>(names, question) ??
      this.#memoJson(names, release, question, () => this.releaseManifests(namespace, name, release))
    );
  }

  async showManifestJson(
    namespace: string,
    name: string,
    selector: string | undefined,
    mediaType: string,
  ): Promise<JsonBody> {
    const names = this.#names(namespace, name);
    const question = `s\0${selector ?? ''}\0${mediaType}`;
    return (
      this.#remembered<JsonBody>(names, question) ??
      this.#memoJson(names, undefined, question, () => this.showManifest(namespace, name, selector, mediaType))
    );
  }

  async #memoJson(
    names: { namespace: string; name: string },
    release: string | undefined,
    question: string,
    compute: () => Promise<unknown>,
  ): Promise<JsonBody> {
    const entry = await this.#entry(names.namespace, names.name, release);
    const known = entry?.memo.get(question) as JsonBody | undefined;
    if (known !== undefined) return known;
    const body = JSON.stringify(await compute());
    const answer = { body, etag: createHash('sha1').update(body).digest('base64url') };
    // Remembered only if it was computed from the version the catalog still holds (`remember` checks).
    if (entry !== undefined) this.#catalog.remember(entry, question, answer, body.length);
    return answer;
  }

  /** Route 8: one manifest, with the channels whose current release it is. */
  async showManifest(namespace: string, name: string, selector: string | undefined, mediaType: string) {
    const { doc, release, mt } = await this.#resolve(namespace, name, selector, mediaType, true);
    const channels = Object.keys(doc.channels)
      .filter((c) => own(doc.channels, c)?.current === release)
      .sort();
    const [shown] = await this.#manifests(doc, [{ release, mt }]);
    return { ...(shown as Manifest), channels };
  }

  /**
   * Routes 10 and 11: the resolved release and the blob's bytes (the caller must consume or destroy `blob.body`
   * if it asks for it). With caches warm a small blob costs no storage request; a large one is one streamed read.
   */
  async pull(namespace: string, name: string, selector: string | undefined, mediaType: string) {
    const wanted = mediaType === '-' ? '-' : normalizeMediaType(mediaType);
    const names = this.#names(namespace, name);
    const question = `p\0${selector ?? ''}\0${wanted}`;
    const target =
      this.#remembered<PullTarget>(names, question) ?? (await this.#pullTarget(names, selector, mediaType, question));
    const blob =
      this.#cachedBlob(target.blobKey, target.pkgKey) ?? (await this.#blob(target.blobKey, target.pkgKey, target.size));
    if (!blob) throw new StorageUnavailableError(`blob ${target.digest} of ${target.pkgKey} is missing`);
    return {
      release: target.release,
      mediaType: target.mt,
      digest: target.digest,
      visibility: target.visibility,
      blob,
    };
  }

  /** What a pull resolves to: worked out once per version of the package and question, then remembered. */
  async #pullTarget(
    names: { namespace: string; name: string },
    selector: string | undefined,
    mediaType: string,
    question: string,
  ): Promise<PullTarget> {
    const entry = await this.#entry(names.namespace, names.name);
    const known = entry?.memo.get(question) as PullTarget | undefined;
    if (known !== undefined) return known;
    const { doc, release, mt } = await this.#resolve(names.namespace, names.name, selector, mediaType, false);
    const record = own(own(doc.releases, release) ?? {}, mt) as ManifestRecord;
    const target: PullTarget = {
      release,
      mt,
      digest: record.digest,
      size: record.size,
      visibility: doc.visibility,
      blobKey: keys.blob(doc.namespace, doc.name, record.digest),
      pkgKey: keys.packageDoc(doc.namespace, doc.name),
    };
    // Remembered only if it was resolved from the version the catalog holds.
    const current = this.#catalog.get(target.pkgKey);
    if (current !== undefined && current.doc === doc) this.#catalog.remember(current, question, target);
    return target;
  }

  /**
   * Routes 12 and 13: a blob this package had, even if its release was deleted since. `visibility` is the
   * package's (null when it has no live release), for the response's cache policy.
   */
  async blob(
    namespace: string,
    name: string,
    digest: string,
  ): Promise<BlobContent & { digest: string; visibility: Visibility | null }> {
    const names = this.#names(namespace, name);
    const hex = parseDigest(digest);
    const blob =
      hex === null
        ? null
        : await this.#blob(keys.blob(names.namespace, names.name, hex), keys.packageDoc(names.namespace, names.name));
    if (!blob || hex === null) {
      throw new ApprError('package-not-found', `package ${names.namespace}/${names.name} has no blob ${digest}`, {
        package: `${names.namespace}/${names.name}`,
        release: digest,
        media_type: null,
      });
    }
    const entry = this.#catalog.get(keys.packageDoc(names.namespace, names.name));
    return Object.assign(blob, { digest: hex, visibility: entry === undefined ? null : entry.doc.visibility });
  }

  /**
   * A blob from the memory cache when it is small (`size` known and at most `cache.blobMaxSize`), else streamed.
   * `key` is the blob's storage key, `pkg` its package document's (whose blob generation it must be of).
   */
  async #blob(key: string, pkg: string, size?: number): Promise<BlobContent | null> {
    const cached = this.#cachedBlob(key, pkg);
    if (cached !== undefined) return cached;
    if (this.#blobs !== undefined) this.metrics?.cache('blobs', false);
    if (this.#blobs !== undefined && size !== undefined && size <= this.#blobMaxSize) {
      const blobs = this.#blobs;
      // The key deleted while it is read (a push of the same tar, a purge), or evicted: storage is read again.
      const blob = await fetchOr(
        () => blobs.fetch(key, { context: pkg }),
        () => this.storage.getStream(key),
      );
      if (blob === undefined || blob === null) return null;
      return 'generation' in blob ? new MemoryBlob(blob.bytes) : blob;
    }
    return this.storage.getStream(key);
  }

  /** The blob from the memory cache, if it is there and of the package's current blob generation (counted a hit). */
  #cachedBlob(key: string, pkg: string): MemoryBlob | undefined {
    const cached = this.#blobs?.get(key);
    if (cached === undefined) return undefined;
    if (cached.generation !== (this.#blobGenerations.get(pkg) ?? 0)) {
      this.#blobs?.delete(key);
      return undefined;
    }
    this.metrics?.cache('blobs', true);
    return new MemoryBlob(cached.bytes);
  }

  // ---- delete -------------------------------------------------------------------------------------------------

  /**
   * Route 9. Exact release and media type. A release left with no media type leaves its channels (their
   * `current` moves to the highest remaining member; empty channels go); a package left with no release becomes
   * a tombstone, which reads as absent. Blobs stay. Returns what was deleted (`packageDeleted`: no release is left).
   */
  async deleteRelease(
    namespace: string,
    name: string,
    release: string,
    mediaType: string,
    context: ChangeContext = {},
  ): Promise<{ namespace: string; name: string; release: string; mediaType: string; packageDeleted: boolean }> {
    const names = this.#names(namespace, name);
    if (mediaType === '-') {
      // What the appr CLI's delete-package sends without -t: "the only media type" on reads, nothing here (section 9).
      throw new ApprError(
        'invalid-usage',
        'Invalid media type "-": a delete names the media type it removes (appr CLI: delete-package -t <media type>)',
        { media_type: '-' },
      );
    }
    const mt = normalizeMediaType(mediaType);
    const pkg = `${names.namespace}/${names.name}`;
    const notFound = new ApprError('package-not-found', `package ${pkg} has no release ${release} (${mt})`, {
      package: pkg,
      release,
      media_type: mt,
    });
    const packageDeleted = await this.#change<boolean>(keys.packageDoc(names.namespace, names.name), (doc, view) => {
      if (!doc || !deleteRecord(doc, view, release, mt)) throw notFound;
      if (mediaOf(doc, view, release) === undefined) {
        for (const channel of Object.keys(doc.channels)) removeFromChannel(doc, channel, release, view);
      }
      const live = hasReleases(doc, view);
      if (!live) {
        doc.channels = {};
        clearSegments(doc);
      }
      return { next: doc, result: !live };
    });
    await this.#feed.record(names.namespace, names.name);
    await this.#changed(context, { type: 'delete', package: pkg, release, mediaType: mt, packageDeleted });
    return { namespace: names.namespace, name: names.name, release, mediaType: mt, packageDeleted };
  }

  /**
   * Withdraw a blob now (a tarball that leaked a secret; `delete` alone keeps blobs, which stay downloadable by
   * digest): every release x media type of the package whose manifest names `digest` is deleted (channels follow,
   * as in `deleteRelease`; a package left without releases becomes a tombstone), then the blob itself. Returns the
   * blob's digest (hex) and the releases x media types it removed, and deletes the blob's Helm chart record. Throws
   * 404 `package-not-found` when neither the blob nor a release naming it exists (writing nothing). A purge that
   * succeeds sends one `purge` audit event (`context.actor`); a refused one sends none, and one that fails on
   * storage (`StorageUnavailableError`) sends one only for what it did delete first (releases, the blob), before its
   * error, and records that change for the other instances (its change entry, `coherence.onChange`) as a purge that
   * succeeds does.
   * Order: package document first, so no reader sees a release without its blob; then a change entry, which must be
   * stored before the blob is deleted (else 503, the blob kept); then the blob, its chart record, and a change entry
   * again. So a purge retried after a 503 until it answers 200 or 404 leaves the bytes gone and the other instances
   * told, even when storage failed right after deleting the blob (README, "Purging a blob"). A push of the same
   * tarball to the same package while the purge runs may be left without its blob (pull answers 503): push it again
   * with `force`.
   */
  async purgeBlob(
    namespace: string,
    name: string,
    digest: string,
    context: ChangeContext = {},
  ): Promise<{ namespace: string; name: string; digest: string; removed: { release: string; mediaType: string }[] }> {
    const names = this.#names(namespace, name);
    const pkg = `${names.namespace}/${names.name}`;
    const hex = parseDigest(digest);
    // Named as given, as a GET of the blob names it (docs/api.md section 9).
    const notFound = (): ApprError =>
      new ApprError('package-not-found', `package ${pkg} has no blob ${digest}`, {
        package: pkg,
        release: digest,
        media_type: null,
      });
    if (hex === null) throw notFound();
    type Removed = { release: string; mediaType: string }[];
    const { gone: removed, emptied } = await this.#change<{ gone: Removed; emptied: boolean }>(
      keys.packageDoc(names.namespace, names.name),
      (doc, view) => {
        const gone: Removed = [];
        if (!doc) return { result: { gone, emptied: false } };
        for (const [release, media] of Object.entries(allReleases(doc, view))) {
          for (const [mt, record] of Object.entries(media)) {
            if (record.digest !== hex) continue;
            deleteRecord(doc, view, release, mt);
            gone.push({ release, mediaType: mt });
          }
          if (mediaOf(doc, view, release) === undefined) {
            for (const channel of Object.keys(doc.channels)) removeFromChannel(doc, channel, release, view);
          }
        }
        const emptied = !hasReleases(doc, view);
        if (emptied) {
          doc.channels = {};
          clearSegments(doc);
        }
        // For the audit event: the purge took the package's last release (not one deleted before).
        return gone.length ? { next: doc, result: { gone, emptied } } : { result: { gone, emptied: false } };
      },
    );
    const blobKey = keys.blob(names.namespace, names.name, hex);
    const chartKey = keys.chart(names.namespace, names.name, hex);
    if (removed.length === 0 && (await this.storage.head(blobKey)) === null) {
      // Nothing of the digest is stored: no change entry. When a purge that failed deleted the blob (this is its
      // retry), it told the other instances before it did (below); its chart record may be left.
      await this.storage.delete(chartKey);
      throw notFound();
    }
    const audit = (blobDeleted: boolean) =>
      this.#changed(context, {
        type: 'purge',
        package: pkg,
        digest: hex,
        releases: removed.map((r) => ({ ...r })),
        blobDeleted,
        packageDeleted: emptied,
      });
    let told = false;
    let deleted = false;
    try {
      // The other instances are told before the blob goes (they drop this package's cached blobs when the entry
      // reaches them): a purge that fails once the blob is deleted may be unable to tell them after (storage down),
      // and its retry, finding nothing, answers 404 and writes nothing.
      await this.#feed.recordNow(names.namespace, names.name);
      told = true;
      deleted = await this.#deleteBlob(blobKey);
      // Its chart record too: it describes the withdrawn bytes, and a later push of the same tar in other bytes (as
      // another media type, which writes no record) must not find it (the Helm index would list their digest).
      await this.storage.delete(chartKey);
    } catch (err) {
      // The releases are deleted already, the blob perhaps: that change reaches the other instances (the change
      // entry, the host's `onChange`) and the audit, with what became of the blob, before the error. Without the
      // entry they served the purged releases until their background check read the package again.
      if (removed.length > 0 || told) await this.#feed.record(names.namespace, names.name);
      if (removed.length > 0 || deleted) await audit(deleted);
      throw err;
    }
    if (!deleted && removed.length === 0) throw notFound(); // deleted meanwhile by another purge, which told the others
    // Told again once the blob is gone: an instance that read the blob while the first entry reached it kept it.
    await this.#feed.record(names.namespace, names.name);
    await audit(deleted);
    return { namespace: names.namespace, name: names.name, digest: hex, removed };
  }

  /**
   * Delete a blob being purged, and drop it from this instance's memory whatever happens. A delete that fails may
   * have lost only its answer (the blob deleted all the same): one look tells, and a blob found gone counts as
   * deleted. Throws the delete's error (`StorageUnavailableError`) when the blob is still stored or the look fails.
   */
  async #deleteBlob(key: string): Promise<boolean> {
    try {
      return await this.storage.delete(key);
    } catch (err) {
      const left = await this.storage.head(key).catch(() => undefined);
      if (left === null) return true;
      throw err;
    } finally {
      this.#blobs?.delete(key);
    }
  }

  // ---- channels -----------------------------------------------------------------------------------------------

  async listChannels(namespace: string, name: string): Promise<Channel[]> {
    const doc = await this.#package(namespace, name);
    return Object.keys(doc.channels)
      .sort()
      .map((channel) => channelOf(doc, channel));
  }

  async showChannel(namespace: string, name: string, channel: string): Promise<Channel> {
    checkName('channel', channel);
    const doc = await this.#package(namespace, name);
    if (own(doc.channels, channel) === undefined) throw channelNotFound(doc, channel);
    return channelOf(doc, channel);
  }

  /** Route 16: add an exact, existing release; it becomes the channel's current release. */
  async addChannelRelease(
    namespace: string,
    name: string,
    channel: string,
    release: string,
    context: ChangeContext = {},
  ): Promise<Channel> {
    const names = this.#names(namespace, name);
    checkName('channel', channel);
    if (release !== 'default') checkRelease(release, { detail: 'release' });
    return this.#changeLive(
      names,
      context,
      (live, view) => {
        if (mediaOf(live, view, release) === undefined) {
          throw new ApprError(
            'package-release-not-found',
            `Release ${release} doesn't exist for package ${pkgName(live)}`,
            { package: pkgName(live), release },
          );
        }
        const record = own(live.channels, channel) ?? { current: release, releases: [] };
        record.releases = sortReleasesDesc(new Set([...record.releases, release]));
        record.current = release;
        live.channels[channel] = record;
        return { next: live, result: channelOf(live, channel) };
      },
      () => ({ type: 'channel-add', channel, release }),
    );
  }

  /** Route 17: remove a release from a channel (a no-op for a non-member); `current` becomes the highest left. */
  async removeChannelRelease(
    namespace: string,
    name: string,
    channel: string,
    release: string,
    context: ChangeContext = {},
  ): Promise<{ namespace: string; name: string; channel: string; release: string }> {
    const names = this.#names(namespace, name);
    checkName('channel', channel);
    await this.#changeLive(
      names,
      context,
      (live, view) => {
        if (own(live.channels, channel) === undefined) throw channelNotFound(live, channel);
        if (mediaOf(live, view, release) === undefined) throw packageNotFound(live, release);
        removeFromChannel(live, channel, release, view);
        return { next: live, result: undefined };
      },
      () => ({ type: 'channel-remove', channel, release }),
    );
    return { namespace: names.namespace, name: names.name, channel, release };
  }

  /** Route 18. */
  async deleteChannel(
    namespace: string,
    name: string,
    channel: string,
    context: ChangeContext = {},
  ): Promise<{ namespace: string; name: string; channel: string }> {
    const names = this.#names(namespace, name);
    checkName('channel', channel);
    await this.#changeLive(
      names,
      context,
      (live) => {
        if (own(live.channels, channel) === undefined) throw channelNotFound(live, channel);
        delete live.channels[channel];
        return { next: live, result: undefined };
      },
      () => ({ type: 'channel-delete', channel }),
    );
    return { namespace: names.namespace, name: names.name, channel };
  }

  /**
   * Tell this instance that a package (or, without arguments, anything) changed elsewhere: it re-reads it from
   * storage, and reads of it wait for that. For hosts that propagate changes themselves (see
   * `coherence.onChange`); the change feed makes it unnecessary otherwise.
   */
  invalidate(namespace?: string, name?: string): void {
    if (namespace === undefined || name === undefined) {
      this.#rebuilding ??= this.#feed
        .rebuild()
        .catch(() => undefined)
        .finally(() => {
          this.#rebuilding = undefined;
        });
      return;
    }
    const key = keys.packageDoc(checkName('namespace', namespace), checkName('package', name));
    const refresh = this.#docs
      .refresh(key)
      .catch(() => undefined)
      .finally(() => {
        if (this.#pending.get(key) === refresh) this.#pending.delete(key);
      });
    this.#pending.set(key, refresh);
  }

  // ---- operations: audit, health, garbage collection ------------------------------------------------------------

  /**
   * Hand an event to the `audit` hook (the HTTP layer reports logins through it). Never throws: a failing hook is
   * logged and the change it reports stands.
   */
  async audit(event: AuditEvent): Promise<void> {
    await emitAudit(this.#audit, this.logger, event);
  }

  async #changed(context: ChangeContext, event: DistributiveOmit<AuditEvent, 'time' | 'actor'>): Promise<void> {
    if (!this.#audit) return;
    await this.audit({ ...event, time: this.#now().toISOString(), actor: context.actor ?? null });
  }

  /**
   * Is storage reachable and writable, and is the change feed current (read within twice the polling interval
   * plus 5 s; with polling off, loaded)? A read, write, read-back and delete of this instance's probe key, each
   * bounded by `timeoutMs` (default 5000), and a catalog load or catch-up when needed. Never throws; details of a
   * failure go to the logger.
   */
  async health(options: { timeoutMs?: number } = {}): Promise<HealthReport> {
    const storage = await checkStorage(this.storage, this.#probeKey, this.logger, options);
    // Loading the catalog (or catching up after idling) reads the change feed: that is what "current" checks.
    try {
      await this.#ready();
    } catch (err) {
      this.logger?.warn({ err }, 'koa-appr: the change feed could not be read');
    }
    const feed = this.#feed.status();
    if (feed.lastPollAgeMs !== null) this.metrics?.changeFeedLag(feed.lastPollAgeMs / 1000);
    return {
      ok: storage.reachable && storage.writable && feed.current,
      storage,
      changeFeed: { current: feed.current, lastPollAgeMs: feed.lastPollAgeMs },
    };
  }

  /**
   * Remove blobs and metadata objects no release references (with the chart records of those blobs, and any
   * chart record whose blob is gone) and tombstones of deleted packages, once seen so for `graceMs` (default
   * one hour: a run marks, a later run removes; 0 removes at once), then compact the change feed: fold the
   * catalog into the snapshot and remove the change entries it covers that are older than `graceMs`. Safe while
   * other instances push and poll (README "Garbage collection"). Lists the whole store: run it from a job, not
   * per request. With `dryRun`, writes nothing and reports what would go. Throws `StorageUnavailableError` on a
   * storage failure (what was removed until then stays removed; a later run finishes), and an `OptionError`
   * (lib/options/validate.ts) for options the schema refuses (`graceMs` not a non-negative integer), before
   * anything is read.
   */
  async gc(options: GcOptions = {}): Promise<GcReport> {
    parseOptions(gcOptions, options, 'Registry.gc'); // checked only: nothing has a default or a transform
    const segments = {
      load: (doc: PackageDoc) => this.#segments.load(doc),
      releases: (doc: PackageDoc) => allReleases(doc, this.#segments.viewOf(doc)),
      referenced: (doc: PackageDoc) => this.#segments.referenced(doc),
      notLoaded: (err: unknown) => err instanceof SegmentsNotLoaded,
    };
    const report = await collect(
      { storage: this.storage, docs: this.#docs, logger: this.logger, listPageSize: this.#listPageSize, segments },
      {
        now: this.#now,
        ...options,
      },
    );
    await this.#feed.flush();
    report.changes = await this.#feed.collect({ dryRun: report.dryRun, graceMs: options.graceMs ?? DEFAULT_GRACE_MS });
    const removed = {
      blobs: report.blobs.length,
      metadata: report.metadata.length,
      charts: report.charts.length,
      segments: report.segments.length,
      tombstones: report.tombstones.length,
      changes: report.changes,
    };
    if (!report.dryRun && (removed.blobs > 0 || removed.tombstones > 0)) {
      for (const id of new Set([...report.blobs.map((b) => b.package), ...report.tombstones])) {
        const [ns, pkgName] = id.split('/') as [string, string];
        await this.#feed.record(ns, pkgName);
      }
    }
    if (!report.dryRun && Object.values(removed).some((n) => n > 0)) {
      await this.audit({ type: 'gc', time: this.#now().toISOString(), actor: null, ...removed });
    }
    return report;
  }

  // ---- helpers ------------------------------------------------------------------------------------------------

  #rebuilding: Promise<void> | undefined;

  /**
   * `DocumentStore.update` of a package document, whose `fn` also gets the view of the document's segments
   * (lib/core/segments.ts). When they are not in memory (another instance wrote a segment since this one read the
   * document), they are loaded and the change tried again.
   */
  async #change<R>(key: string, fn: (doc: PackageDoc | null, view: SegmentView) => Update<PackageDoc, R>): Promise<R> {
    for (let attempt = 1; ; attempt += 1) {
      try {
        return await this.#docs.update<PackageDoc, R>(key, (doc) => {
          if (doc === null) return fn(null, this.#segments.viewOf({ namespace: '', name: '' }));
          const outcome = fn(doc, this.#segments.viewOf(doc));
          if ('next' in outcome) this.#segments.viewOf(outcome.next); // keeps the view with the version written
          return outcome;
        });
      } catch (err) {
        if (!(err instanceof SegmentsNotLoaded) || attempt >= 3) throw err;
        const fresh = await this.#docs.readFresh<PackageDoc>(key);
        if (fresh !== null) await this.#segments.load(fresh.value);
      }
    }
  }

  /**
   * A change of a live package (404 `package-not-found` otherwise): `fn` changes its document as in `#change`; then
   * what follows every change: the change entry that tells other instances (when the document was written) and the
   * audit event `event` makes of the result.
   */
  async #changeLive<R>(
    names: { namespace: string; name: string },
    context: ChangeContext,
    fn: (live: PackageDoc, view: SegmentView) => Update<PackageDoc, R>,
    event: (result: R) => DistributiveOmit<AuditEvent, 'time' | 'actor' | 'package'>,
  ): Promise<R> {
    let written = false;
    const result = await this.#change<R>(keys.packageDoc(names.namespace, names.name), (doc, view) => {
      const outcome = fn(requireLive(doc, names, view), view);
      written = 'next' in outcome;
      return outcome;
    });
    if (written) await this.#feed.record(names.namespace, names.name);
    await this.#changed(context, { ...event(result), package: pkgName(names) } as DistributiveOmit<
      AuditEvent,
      'time' | 'actor'
    >);
    return result;
  }

  /**
   * A stored package document as the read methods and the catalog see it: every release, those of its segments
   * included (built when first asked for, once per version). A document without segments is its own view.
   */
  #logical(stored: PackageDoc): PackageDoc {
    if (stored.segments === undefined || stored.segments.length === 0) return stored;
    const known = this.#logicalDocs.get(stored);
    if (known !== undefined) return known;
    const view = this.#segments.viewOf(stored);
    let releases: PackageDoc['releases'] | undefined;
    const logical = {
      namespace: stored.namespace,
      name: stored.name,
      created_at: stored.created_at,
      visibility: stored.visibility,
      channels: stored.channels,
      get releases(): PackageDoc['releases'] {
        releases ??= deepFreeze(allReleases(stored, view));
        return releases;
      },
    } as PackageDoc;
    // Whether the package is live, without building `releases` (the catalog asks that of every version).
    Object.defineProperty(logical, LIVE, { value: hasReleases(stored, view) });
    this.#logicalDocs.set(stored, Object.freeze(logical));
    return logical;
  }

  #names(namespace: string, name: string) {
    return { namespace: checkName('namespace', namespace), name: checkName('package', name) };
  }

  /** Resolves when the catalog may answer (undefined, synchronously, when it already may). */
  #ready(): Promise<unknown> | undefined {
    const feed = this.#feed.ready();
    if (this.#rebuilding === undefined) return feed;
    return feed === undefined ? this.#rebuilding : Promise.all([feed, this.#rebuilding]);
  }

  /**
   * The answer to `question` remembered for the catalog's current version of a package (`Catalog.remember`), when the
   * catalog can answer now: loaded, and no refresh of the package pending. Counted as a catalog hit. The common,
   * steady-state read, answered without a promise; undefined sends the caller the long way (`#entry`).
   */
  #remembered<T>(names: { namespace: string; name: string }, question: string): T | undefined {
    if (this.#ready() !== undefined) return undefined;
    if (this.#pending.size > 0 && this.#pending.has(keys.packageDoc(names.namespace, names.name))) return undefined;
    const known = this.#catalog.named(names.namespace, names.name)?.memo.get(question) as T | undefined;
    if (known !== undefined) this.metrics?.cache('catalog', true);
    return known;
  }

  /**
   * The catalog's entry of a live package, or undefined. When the catalog does not know the package, or (given)
   * the release, storage is asked first: a push through another instance is visible at once.
   */
  async #entry(namespace: string, name: string, release?: string): Promise<CatalogEntry | undefined> {
    const ready = this.#ready();
    if (ready !== undefined) await ready;
    const key = keys.packageDoc(namespace, name);
    const pending = this.#pending.get(key);
    if (pending !== undefined) await pending;
    let entry = this.#catalog.get(key);
    const hit = entry !== undefined && (release === undefined || Object.hasOwn(entry.doc.releases, release));
    this.metrics?.cache('catalog', hit);
    if (!hit) {
      await this.#docs.refresh(key);
      entry = this.#catalog.get(key);
    }
    return entry;
  }

  /** The whole document of a live package (with metadata): from the document cache when it is current. */
  async #package(namespace: string, name: string, release?: string): Promise<PackageDoc> {
    const names = this.#names(namespace, name);
    const entry = await this.#entry(names.namespace, names.name, release);
    if (entry === undefined) return requireLive(null, names);
    const cached = this.#docs.peek<PackageDoc>(entry.key);
    if (cached?.etag === entry.etag && cached.value !== null) return this.#logical(cached.value);
    const fresh = (await this.#docs.refresh<PackageDoc>(entry.key)).value;
    return requireLive(fresh === null ? null : this.#logical(fresh), names);
  }

  /**
   * Selector and media type resolution for routes 8, 10 and 11 (docs/api.md section 5), on the catalog's document
   * (`full` false: no metadata) or the whole one. When nothing matches, storage is asked before answering 404.
   */
  async #resolve(namespace: string, name: string, selector: string | undefined, mediaType: string, full: boolean) {
    const wanted = mediaType === '-' ? '-' : normalizeMediaType(mediaType);
    const names = this.#names(namespace, name);
    const load = async (): Promise<PackageDoc> => {
      if (full) return this.#package(names.namespace, names.name);
      const entry = await this.#entry(names.namespace, names.name);
      return entry === undefined ? requireLive(null, names) : entry.doc;
    };
    let doc = await load();
    let resolved = resolveIn(doc, selector, wanted);
    if (resolved instanceof ApprError && resolved.code !== 'invalid-usage') {
      await this.#docs.refresh(keys.packageDoc(names.namespace, names.name));
      doc = await load();
      resolved = resolveIn(doc, selector, wanted);
    }
    if (resolved instanceof ApprError) throw resolved;
    return { doc, ...resolved };
  }
}

/** The release and media type `selector` and `wanted` name in `doc`, or the error to answer. */
function resolveIn(
  doc: PackageDoc,
  selector: string | undefined,
  wanted: string,
): { release: string; mt: string } | ApprError {
  const release = selectRelease(selector, Object.keys(doc.releases), { detail: 'release' });
  if (release === null) {
    return new ApprError('package-release-not-found', `No release match '${selector}' for package '${pkgName(doc)}'`, {
      package: pkgName(doc),
      release_query: selector ?? 'default',
    });
  }
  const available = Object.keys(own(doc.releases, release) ?? {}).sort();
  if (wanted === '-') {
    if (available.length !== 1) {
      return new ApprError('invalid-usage', `media-type non specified: [${available.join(',')}]`, {
        media_types: available,
      });
    }
    return { release, mt: available[0] as string };
  }
  if (!available.includes(wanted)) {
    return new ApprError('package-not-found', `package ${pkgName(doc)} has no release ${release} (${wanted})`, {
      package: pkgName(doc),
      release,
      media_type: wanted,
    });
  }
  return { release, mt: wanted };
}

interface CachedBlob {
  bytes: Buffer;
  /** The package's blob generation when it was read (see `Registry.#blobGenerations`). */
  generation: number;
}

/** A blob held in memory; `body` (a stream of it) is only made for a caller that asks. */
class MemoryBlob implements BlobContent {
  readonly bytes: Buffer;
  readonly etag = '';
  #body: Readable | undefined;

  constructor(bytes: Buffer) {
    this.bytes = bytes;
  }

  get size(): number {
    return this.bytes.length;
  }

  get body(): Readable {
    this.#body ??= Readable.from([this.bytes]);
    return this.#body;
  }
}

/** A pull's answer for one version of a package: the release and media type a selector names, and their blob. */
interface PullTarget {
  release: string;
  mt: string;
  digest: string;
  size: number;
  visibility: Visibility;
  blobKey: string;
  pkgKey: string;
}

// ---- pure functions over package documents ------------------------------------------------------------------

/** Own-property lookup: names such as `constructor` must never resolve to something inherited. */
function own<T>(record: Record<string, T>, key: string): T | undefined {
  return Object.hasOwn(record, key) ? record[key] : undefined;
}

function isLive(doc: PackageDoc): boolean {
  return Object.keys(doc.releases).length > 0;
}

function pkgName(doc: { namespace: string; name: string }): string {
  return `${doc.namespace}/${doc.name}`;
}

function requireLive(
  doc: PackageDoc | null,
  names: { namespace: string; name: string },
  view?: SegmentView,
): PackageDoc {
  if (doc && (view === undefined ? isLive(doc) : hasReleases(doc, view))) return doc;
  throw new ApprError('package-not-found', `package ${pkgName(names)} doesn't exist`, {
    package: pkgName(names),
    release: null,
    media_type: null,
  });
}

function checkVisibility(visibility: string): Visibility {
  if (visibility !== 'public' && visibility !== 'private') {
    throw new ApprError('invalid-parameters', 'visibility must be "public" or "private"', { field: 'visibility' });
  }
  return visibility;
}

function packageNotFound(doc: PackageDoc, release: string): ApprError {
  return new ApprError('package-not-found', `package ${pkgName(doc)} has no release ${release}`, {
    package: pkgName(doc),
    release,
    media_type: null,
  });
}

function channelNotFound(doc: PackageDoc, channel: string): ApprError {
  return new ApprError('channel-not-found', `No channel ${channel} for package ${pkgName(doc)}`, {
    package: pkgName(doc),
    channel,
  });
}

function removeFromChannel(doc: PackageDoc, channel: string, release: string, view: SegmentView): void {
  const record = own(doc.channels, channel);
  if (!record) return;
  const releases = record.releases.filter((r) => r !== release && mediaOf(doc, view, r) !== undefined);
  if (releases.length === 0) {
    delete doc.channels[channel];
    return;
  }
  record.releases = sortReleasesDesc(releases);
  record.current = record.releases[0] as string;
}

function channelOf(doc: PackageDoc, channel: string): Channel {
  const record = own(doc.channels, channel) as ChannelRecord;
  return { name: channel, current: record.current, releases: [...record.releases] };
}

function manifest(doc: PackageDoc, release: string, mt: string, metadata: unknown): Manifest {
  const record = own(own(doc.releases, release) ?? {}, mt) as ManifestRecord;
  return {
    package: pkgName(doc),
    release,
    created_at: record.created_at,
    metadata,
    mediaType: manifestMediaType(mt),
    content: { mediaType: contentMediaType(mt), size: record.size, digest: record.digest, urls: [] },
  };
}

function mediaTypesOf(doc: PackageDoc, release: string): string[] {
  return Object.keys(own(doc.releases, release) ?? {}).sort();
}
