import { ApprError, StorageUnavailableError } from '../errors.js';
import type { Readable } from 'node:stream';
import { registryOptions } from '../options/schema.js';
import { parseOptions } from '../options/validate.js';
import { withDeadline } from '../storage/deadline.js';
import type { StorageAdapter, StreamResult } from '../storage/types.js';
import { BlobStager, isStagedBlob, parseDigest, stageBlob, type StagedBlob } from './blob.js';
import { DocumentStore, type CasOptions, type DocumentCacheOptions } from './documents.js';
import { keys } from './keys.js';
import { checkName, contentMediaType, manifestMediaType, normalizeMediaType } from './names.js';
import { compareReleases, parseRelease, selectRelease, sortReleasesDesc } from './release.js';
import { emitAudit, type AuditEvent, type AuditHook, type ChangeContext } from '../ops/audit.js';
import { checkStorage, type HealthReport } from '../ops/health.js';
import type { Logger } from '../ops/logger.js';
import type { MetricsHooks } from '../ops/metrics.js';
import { InstrumentedStorage } from '../ops/storage.js';
import { checkFence, collect, fence, FenceBroken, keepGcState, type GcOptions, type GcReport, type GcState } from '../ops/gc.js';

export type Visibility = 'public' | 'private';

/** One release x media type as stored in the package document. */
export interface ManifestRecord {
  digest: string;
  size: number;
  created_at: string;
  metadata: unknown;
}

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
  releases: Record<string, Record<string, ManifestRecord>>;
  channels: Record<string, ChannelRecord>;
  /** The garbage collector's bookkeeping (lib/ops/gc.ts); every write of the document must keep it. */
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
  cache?: DocumentCacheOptions;
  cas?: CasOptions;
  /**
   * The largest package document (all releases, their metadata and channels) in bytes (default 8 MiB): a push that
   * would grow it further is refused with 422 (delete old releases, or push less metadata).
   */
  maxPackageBytes?: number;
  /** Keys asked for per listing request (default 1000, S3's maximum). */
  listPageSize?: number;
  /**
   * Overall deadline of one storage operation in ms (default 5000; 0 = none): past it the request is answered
   * 503 `storage-unavailable` whatever the adapter's own timeouts and retries. Writes get one more second per
   * MiB. See lib/storage/deadline.ts.
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

const LIST_CONCURRENCY = 16;
/** Times a push writes its blob when garbage collection keeps removing it (lib/ops/gc.ts). */
const MAX_PUSH_ROUNDS = 10;

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;

/**
 * The registry's domain core: no Koa, no HTTP. Every method validates its own inputs (names, releases, media
 * types) before building a storage key, and throws `ApprError`s from the one error table.
 */
export class Registry {
  readonly storage: StorageAdapter;
  readonly #docs: DocumentStore;
  readonly #maxUnpackedSize: number;
  readonly #pushTmpDir: string | undefined;
  readonly #pushMemoryBytes: number | undefined;
  readonly #defaultVisibility: Visibility;
  readonly #now: () => Date;
  readonly #listPageSize: number;
  readonly metrics: MetricsHooks | undefined;
  readonly logger: Logger | undefined;
  readonly #audit: AuditHook | undefined;
  readonly #probeKey = keys.healthProbe();

  /** Throws an `OptionError` (lib/options/validate.ts) for a bad option; the schema is lib/options/schema.ts. */
  constructor(input: RegistryOptions) {
    const options = parseOptions(registryOptions, input, 'Registry');
    // Every storage call of the core, documents included, goes through the one deadline wrapper, measured once
    // around it so that every layer above (documents, blobs, health, gc) is counted, timeouts included.
    const bounded = withDeadline(options.storage, options.storageTimeoutMs);
    this.storage = options.metrics ? new InstrumentedStorage(bounded, options.metrics) : bounded;
    this.metrics = options.metrics;
    this.logger = options.logger;
    this.#audit = options.audit;
    this.#docs = new DocumentStore(this.storage, options.cache, options.cas, { maxBytes: options.maxPackageBytes },
      { metrics: options.metrics });
    this.#maxUnpackedSize = options.maxUnpackedSize;
    this.#pushTmpDir = options.pushTmpDir;
    this.#pushMemoryBytes = options.pushMemoryBytes;
    this.#defaultVisibility = options.defaultVisibility;
    this.#now = options.now;
    this.#listPageSize = options.listPageSize;
  }

  // ---- push -------------------------------------------------------------------------------------------------

  /**
   * A stager for the gzip bytes of a blob that arrives piece by piece (an HTTP push body): it checks them as they
   * come (gzip, tar, entry paths, `maxUnpackedSize`) and keeps them aside, outside storage, until `push` commits
   * them. `maxSize` bounds the gzip bytes (413 past it).
   */
  createBlobStager(options: { maxSize?: number } = {}): BlobStager {
    return new BlobStager(this.#stageOptions(options.maxSize));
  }

  /**
   * Everything about the push is validated (names, release, media type) before its blob is checked, and the blob
   * is checked in full before anything is stored, so a refused push leaves nothing in storage.
   *
   * Write order: blob, then the package document. A crash or a storage failure in between leaves an unreferenced
   * blob (harmless, reused by the next push), never a release whose blob is missing. Costs three storage requests
   * whatever the size of the registry: the package document's conditional GET (which also fences off garbage
   * collection, lib/ops/gc.ts), the blob's create-if-absent PUT (plus a HEAD when that blob was already there),
   * and the package document's compare-and-swap PUT. A blob too large to wait in memory is HEADed first, so that
   * pushing the same large tarball again does not upload it again.
   */
  async push(input: PushInput): Promise<void> {
    const { namespace, name } = this.#names(input.namespace, input.name);
    const release = parseRelease(input.release);
    const mediaType = normalizeMediaType(input.mediaType ?? 'kpm');
    const force = input.force === true;
    const docKey = keys.packageDoc(namespace, name);
    const exists = (doc: PackageDoc | null): boolean =>
      doc !== null && own(own(doc.releases, release) ?? {}, mediaType) !== undefined;
    const conflict = new ApprError('package-exists', 'Package exists already', {
      package: `${namespace}/${name}`, release, media_type: mediaType,
    });

    const blob = isStagedBlob(input.blob) ? input.blob : await stageBlob(input.blob, this.#stageOptions());
    let size = blob.size;
    const createdAt = this.#now().toISOString();
    let created: boolean;
    try {
      // Rounds only when a garbage collector claimed blobs of this package meanwhile (lib/ops/gc.ts): the blob is
      // written again after the claim is lifted, so a release never references a blob the collector deletes.
      for (let round = 1; ; round += 1) {
        const gcFence = await fence<PackageDoc>(this.#docs, docKey, blob.digest);
        const stored = await this.#storeBlob(namespace, name, blob);
        if (stored === null) {
          // Reported as present but gone (deleted by a collector since): write it again.
          if (round >= MAX_PUSH_ROUNDS) throw new StorageUnavailableError(`blob ${blob.digest} was not stored; try again`);
          continue;
        }
        size = stored;
        try {
          created = await this.#docs.update<PackageDoc, boolean>(docKey, (current) => {
            // A tombstone (every release deleted) still belongs to someone: it counts as existing (issue 12 item 1).
            if (input.createOnly && current) {
              throw new ApprError('forbidden', `You are not allowed to push to ${namespace}/${name}`, {
                package: `${namespace}/${name}`,
              });
            }
            if (!force && exists(current)) throw conflict;
            checkFence(gcFence, current, blob.digest);
            // A tombstone keeps its visibility: only `setVisibility` (admin) changes it, never a push.
            const doc = current && isLive(current)
              ? current
              : newPackage(namespace, name, createdAt, current?.visibility ?? input.visibility ?? this.#defaultVisibility);
            const media = own(doc.releases, release) ?? {};
            media[mediaType] = { digest: blob.digest, size, created_at: createdAt, metadata: input.metadata ?? null };
            doc.releases[release] = media;
            keepGcState(current, doc, blob.digest);
            return { next: doc, result: doc !== current };
          }, gcFence.doc);
          break;
        } catch (err) {
          if (!(err instanceof FenceBroken)) throw err;
          if (round >= MAX_PUSH_ROUNDS) throw new StorageUnavailableError(`push of ${namespace}/${name} kept racing the garbage collector`);
        }
      }
    } finally {
      if (blob !== input.blob) await blob.dispose();
    }
    this.metrics?.pushed(size);
    await this.audit({
      type: 'push', time: createdAt, actor: input.actor ?? null, package: `${namespace}/${name}`, release, mediaType,
      digest: blob.digest, size, forced: force, created,
    });
  }

  /**
   * Store a staged blob at its content address, create-if-absent; returns the size of the stored bytes (those of
   * an earlier push of the same tar, perhaps gzipped differently, when it was there already: pulls serve those).
   */
  /** Store a staged blob at its content-addressed key; its stored size, or null if storage lost it (see push). */
  async #storeBlob(namespace: string, name: string, blob: StagedBlob): Promise<number | null> {
    const blobKey = keys.blob(namespace, name, blob.digest);
    if (blob.bytes === undefined) {
      const stored = await this.storage.head(blobKey);
      if (stored !== null) return stored.size;
    }
    let written: string | null;
    if (blob.bytes !== undefined) {
      written = await this.storage.put(blobKey, blob.bytes, { ifNoneMatch: '*' });
    } else {
      const body = blob.open();
      try {
        written = await this.storage.putStream(blobKey, body, blob.size, { ifNoneMatch: '*' });
      } finally {
        body.destroy(); // An adapter that failed half-way may leave it unread: close its file now.
      }
    }
    if (written !== null) return blob.size;
    // Already there (perhaps gzipped differently: its stored bytes are what pulls serve). A backend that reported a
    // failed condition although nothing is there must not lead to a release without its blob: the caller retries.
    const stored = await this.storage.head(blobKey);
    return stored === null ? null : stored.size;
  }

  #stageOptions(maxSize?: number) {
    return {
      maxUnpackedSize: this.#maxUnpackedSize,
      ...(maxSize === undefined ? {} : { maxSize }),
      ...(this.#pushTmpDir === undefined ? {} : { tmpDir: this.#pushTmpDir }),
      ...(this.#pushMemoryBytes === undefined ? {} : { memoryBytes: this.#pushMemoryBytes }),
    };
  }

  // ---- list and search ----------------------------------------------------------------------------------------

  async listPackages(
    filter: { namespace?: string; query?: string; mediaType?: string } = {},
    visible: VisibleFilter = () => true,
  ): Promise<PackageSummary[]> {
    const mediaType = filter.mediaType ? normalizeMediaType(filter.mediaType) : undefined;
    const docs = await this.#findPackages(filter.namespace, filter.query, visible);
    const summaries: PackageSummary[] = [];
    for (const doc of docs) {
      const summary = summarize(doc, mediaType);
      if (summary) summaries.push(summary);
    }
    return summaries;
  }

  async search(query: string, visible: VisibleFilter = () => true): Promise<string[]> {
    const docs = await this.#findPackages(undefined, query, visible);
    return docs.map((doc) => `${doc.namespace}/${doc.name}`);
  }

  /**
   * Live package documents whose `ns/name` contains `query` (case-insensitive substring, docs/api.md 13.3)
   * and that `visible` admits. Costs one listing request per 1000 packages, plus one (conditional) read per
   * package whose name matched (a conditional GET, "not modified" when cached).
   */
  async #findPackages(namespace: string | undefined, query: string | undefined, visible: VisibleFilter) {
    const prefix = keys.packages(namespace === undefined ? undefined : checkName('namespace', namespace));
    const needle = (query ?? '').toLowerCase();
    const refs: { namespace: string; name: string }[] = [];
    let cursor: string | undefined;
    do {
      const page = await this.storage.list(prefix, { cursor, limit: this.#listPageSize });
      for (const key of page.keys) {
        const ref = keys.parsePackageDoc(key);
        if (ref && `${ref.namespace}/${ref.name}`.toLowerCase().includes(needle)) refs.push(ref);
      }
      cursor = page.next;
    } while (cursor !== undefined);

    const docs = await mapLimit(refs, LIST_CONCURRENCY, async (ref) => {
      const doc = await this.#docs.read<PackageDoc>(keys.packageDoc(ref.namespace, ref.name));
      if (!doc || !isLive(doc)) return null;
      return (await visible({ namespace: doc.namespace, name: doc.name, visibility: doc.visibility })) ? doc : null;
    });
    return docs.filter((doc): doc is PackageDoc => doc !== null);
  }

  // ---- read one package ---------------------------------------------------------------------------------------

  /**
   * Visibility of a package, or null when it never existed. For authorization: a tombstone (every release
   * deleted) keeps its visibility, so a private package stays private (its old blobs too) and pushing to it again
   * needs `write`, not `create`.
   */
  async packageVisibility(namespace: string, name: string): Promise<Visibility | null> {
    const names = this.#names(namespace, name);
    const doc = await this.#docs.read<PackageDoc>(keys.packageDoc(names.namespace, names.name));
    return doc ? doc.visibility : null;
  }

  /** Change a live package's visibility (the owner's call; see `AccessControl`). Idempotent. Returns the package. */
  async setVisibility(namespace: string, name: string, visibility: Visibility, context: ChangeContext = {}): Promise<PackageRef> {
    const names = this.#names(namespace, name);
    if (visibility !== 'public' && visibility !== 'private') {
      throw new ApprError('invalid-parameters', 'visibility must be "public" or "private"', { field: 'visibility' });
    }
    const previous = await this.#docs.update<PackageDoc, Visibility>(keys.packageDoc(names.namespace, names.name), (doc) => {
      const live = requireLive(doc, names);
      if (live.visibility === visibility) return { result: visibility };
      const before = live.visibility;
      live.visibility = visibility;
      return { next: live, result: before };
    });
    await this.#changed(context, { type: 'visibility', package: `${names.namespace}/${names.name}`, visibility, previous });
    return { namespace: names.namespace, name: names.name, visibility };
  }

  /** Route 6: every release x media type, oldest release first. */
  async packageManifests(namespace: string, name: string, mediaType?: string): Promise<Manifest[]> {
    const doc = await this.#package(namespace, name);
    const wanted = mediaType ? normalizeMediaType(mediaType) : undefined;
    const releases = Object.keys(doc.releases).sort(compareReleases);
    return releases.flatMap((release) => manifestsOf(doc, release).filter((m) => !wanted || m.mt === wanted))
      .map((m) => m.manifest);
  }

  /** Route 7: the manifests of one exact release. */
  async releaseManifests(namespace: string, name: string, release: string): Promise<Manifest[]> {
    const doc = await this.#package(namespace, name);
    if (own(doc.releases, release) === undefined) throw packageNotFound(doc, release);
    return manifestsOf(doc, release).map((m) => m.manifest);
  }

  /** Route 8: one manifest, with the channels whose current release it is. */
  async showManifest(namespace: string, name: string, selector: string | undefined, mediaType: string) {
    const { doc, release, mt } = await this.#resolve(namespace, name, selector, mediaType);
    const channels = Object.keys(doc.channels).filter((c) => own(doc.channels, c)?.current === release).sort();
    return { ...manifest(doc, release, mt), channels };
  }

  /** Routes 10 and 11: the resolved manifest and the blob's bytes as a stream (the caller must consume it). */
  async pull(namespace: string, name: string, selector: string | undefined, mediaType: string) {
    const { doc, release, mt } = await this.#resolve(namespace, name, selector, mediaType);
    const record = own(own(doc.releases, release) ?? {}, mt) as ManifestRecord;
    const blob = await this.storage.getStream(keys.blob(doc.namespace, doc.name, record.digest));
    if (!blob) throw new StorageUnavailableError(`blob ${record.digest} of ${doc.namespace}/${doc.name} is missing`);
    return { release, mediaType: mt, digest: record.digest, blob };
  }

  /** Routes 12 and 13: a blob this package had, even if its release was deleted since. */
  async blob(namespace: string, name: string, digest: string): Promise<StreamResult & { digest: string }> {
    const names = this.#names(namespace, name);
    const hex = parseDigest(digest);
    const blob = hex === null ? null : await this.storage.getStream(keys.blob(names.namespace, names.name, hex));
    if (!blob || hex === null) {
      throw new ApprError('package-not-found', `package ${names.namespace}/${names.name} has no blob ${digest}`, {
        package: `${names.namespace}/${names.name}`, release: digest, media_type: null,
      });
    }
    return { ...blob, digest: hex };
  }

  // ---- delete -------------------------------------------------------------------------------------------------

  /**
   * Route 9. Exact release and media type. A release left with no media type leaves its channels (their
   * `current` moves to the highest remaining member; empty channels go); a package left with no release becomes
   * a tombstone, which reads as absent. Blobs stay. Returns what was deleted (`packageDeleted`: no release is left).
   */
  async deleteRelease(
    namespace: string, name: string, release: string, mediaType: string, context: ChangeContext = {},
  ): Promise<{ namespace: string; name: string; release: string; mediaType: string; packageDeleted: boolean }> {
    const names = this.#names(namespace, name);
    const mt = normalizeMediaType(mediaType);
    const pkg = `${names.namespace}/${names.name}`;
    const notFound = new ApprError('package-not-found', `package ${pkg} has no release ${release} (${mt})`, {
      package: pkg, release, media_type: mt,
    });
    const packageDeleted = await this.#docs.update<PackageDoc, boolean>(keys.packageDoc(names.namespace, names.name), (doc) => {
      const media = doc && isLive(doc) ? own(doc.releases, release) : undefined;
      if (!doc || !media || own(media, mt) === undefined) throw notFound;
      delete media[mt];
      if (Object.keys(media).length === 0) {
        delete doc.releases[release];
        for (const channel of Object.keys(doc.channels)) removeFromChannel(doc, channel, release);
      }
      if (!isLive(doc)) doc.channels = {};
      return { next: doc, result: !isLive(doc) };
    });
    await this.#changed(context, { type: 'delete', package: pkg, release, mediaType: mt, packageDeleted });
    return { namespace: names.namespace, name: names.name, release, mediaType: mt, packageDeleted };
  }

  /**
   * Withdraw a blob now (a tarball that leaked a secret; `delete` alone keeps blobs, which stay downloadable by
   * digest): every release x media type of the package whose manifest names `digest` is deleted (channels follow,
   * as in `deleteRelease`; a package left without releases becomes a tombstone), then the blob itself. Returns the
   * blob's digest (hex) and the releases x media types it removed. Throws 404 `package-not-found` when neither
   * the blob nor a release naming it exists.
   * Order: package document first, so no reader sees a release without its blob. A push of the same tarball to
   * the same package while the purge runs may be left without its blob (pull answers 503): push it again.
   */
  async purgeBlob(
    namespace: string, name: string, digest: string,
  ): Promise<{ namespace: string; name: string; digest: string; removed: { release: string; mediaType: string }[] }> {
    const names = this.#names(namespace, name);
    const pkg = `${names.namespace}/${names.name}`;
    const hex = parseDigest(digest);
    const notFound = (): ApprError => new ApprError('package-not-found', `package ${pkg} has no blob ${hex ?? '(invalid digest)'}`, {
      package: pkg, release: hex, media_type: null,
    });
    if (hex === null) throw notFound();
    const removed = await this.#docs.update<PackageDoc, { release: string; mediaType: string }[]>(
      keys.packageDoc(names.namespace, names.name),
      (doc) => {
        const gone: { release: string; mediaType: string }[] = [];
        if (!doc) return { result: gone };
        for (const release of Object.keys(doc.releases)) {
          const media = own(doc.releases, release) as Record<string, ManifestRecord>;
          for (const mt of Object.keys(media)) {
            if (own(media, mt)?.digest !== hex) continue;
            delete media[mt];
            gone.push({ release, mediaType: mt });
          }
          if (Object.keys(media).length === 0) {
            delete doc.releases[release];
            for (const channel of Object.keys(doc.channels)) removeFromChannel(doc, channel, release);
          }
        }
        if (!isLive(doc)) doc.channels = {};
        return gone.length ? { next: doc, result: gone } : { result: gone };
      },
    );
    const deleted = await this.storage.delete(keys.blob(names.namespace, names.name, hex));
    if (!deleted && removed.length === 0) throw notFound();
    return { namespace: names.namespace, name: names.name, digest: hex, removed };
  }

  // ---- channels -----------------------------------------------------------------------------------------------

  async listChannels(namespace: string, name: string): Promise<Channel[]> {
    const doc = await this.#package(namespace, name);
    return Object.keys(doc.channels).sort().map((channel) => channelOf(doc, channel));
  }

  async showChannel(namespace: string, name: string, channel: string): Promise<Channel> {
    checkName('channel', channel);
    const doc = await this.#package(namespace, name);
    if (own(doc.channels, channel) === undefined) throw channelNotFound(doc, channel);
    return channelOf(doc, channel);
  }

  /** Route 16: add an exact, existing release; it becomes the channel's current release. */
  async addChannelRelease(
    namespace: string, name: string, channel: string, release: string, context: ChangeContext = {},
  ): Promise<Channel> {
    const names = this.#names(namespace, name);
    checkName('channel', channel);
    if (release !== 'default') withReleaseDetail(() => parseRelease(release), release);
    const added = await this.#docs.update<PackageDoc, Channel>(keys.packageDoc(names.namespace, names.name), (doc) => {
      const live = requireLive(doc, names);
      if (own(live.releases, release) === undefined) {
        throw new ApprError('package-release-not-found', `Release ${release} doesn't exist for package ${pkgName(live)}`, {
          package: pkgName(live), release,
        });
      }
      const record = own(live.channels, channel) ?? { current: release, releases: [] };
      record.releases = sortReleasesDesc(new Set([...record.releases, release]));
      record.current = release;
      live.channels[channel] = record;
      return { next: live, result: channelOf(live, channel) };
    });
    await this.#changed(context, { type: 'channel-add', package: `${names.namespace}/${names.name}`, channel, release });
    return added;
  }

  /** Route 17: remove a release from a channel (a no-op for a non-member); `current` becomes the highest left. */
  async removeChannelRelease(
    namespace: string, name: string, channel: string, release: string, context: ChangeContext = {},
  ): Promise<{ namespace: string; name: string; channel: string; release: string }> {
    const names = this.#names(namespace, name);
    checkName('channel', channel);
    await this.#docs.update<PackageDoc, void>(keys.packageDoc(names.namespace, names.name), (doc) => {
      const live = requireLive(doc, names);
      if (own(live.channels, channel) === undefined) throw channelNotFound(live, channel);
      if (own(live.releases, release) === undefined) throw packageNotFound(live, release);
      removeFromChannel(live, channel, release);
      return { next: live, result: undefined };
    });
    await this.#changed(context, { type: 'channel-remove', package: `${names.namespace}/${names.name}`, channel, release });
    return { namespace: names.namespace, name: names.name, channel, release };
  }

  /** Route 18. */
  async deleteChannel(
    namespace: string, name: string, channel: string, context: ChangeContext = {},
  ): Promise<{ namespace: string; name: string; channel: string }> {
    const names = this.#names(namespace, name);
    checkName('channel', channel);
    await this.#docs.update<PackageDoc, void>(keys.packageDoc(names.namespace, names.name), (doc) => {
      const live = requireLive(doc, names);
      if (own(live.channels, channel) === undefined) throw channelNotFound(live, channel);
      delete live.channels[channel];
      return { next: live, result: undefined };
    });
    await this.#changed(context, { type: 'channel-delete', package: `${names.namespace}/${names.name}`, channel });
    return { namespace: names.namespace, name: names.name, channel };
  }

  /**
   * Forget cached package documents (one package, or all): for hosts that raise `cache.ttlMs` and broadcast
   * changes between instances. With the default `ttlMs: 0` it is never needed.
   */
  invalidate(namespace?: string, name?: string): void {
    if (namespace === undefined || name === undefined) this.#docs.invalidate();
    else this.#docs.invalidate(keys.packageDoc(checkName('namespace', namespace), checkName('package', name)));
  }

  // ---- operations: audit, health -------------------------------------------------------------------------------

  /**
   * Hand an event to the `audit` hook (the HTTP layer reports logins through it). Never throws: a failing hook is
   * logged and the change it reports stands.
   */
  async audit(event: AuditEvent): Promise<void> {
    await emitAudit(this.#audit, this.logger, event);
  }

  async #changed(context: ChangeContext, event: DistributiveOmit<AuditEvent, 'time' | 'actor'>): Promise<void> {
    if (!this.#audit) return;
    await this.audit({ ...event, time: this.#now().toISOString(), actor: context.actor ?? null } as AuditEvent);
  }

  /**
   * Is storage reachable and writable? A read, write, read-back and delete of this instance's probe key, each
   * bounded by `timeoutMs` (default 5000). Never throws; details of a failure go to the logger.
   */
  async health(options: { timeoutMs?: number } = {}): Promise<HealthReport> {
    const storage = await checkStorage(this.storage, this.#probeKey, this.logger, options);
    return { ok: storage.reachable && storage.writable, storage };
  }

  /**
   * Remove blobs no release references and tombstones of deleted packages, once seen so for `graceMs` (default
   * one hour: a run marks, a later run removes; 0 removes at once). Safe while other instances push (README
   * "Garbage collection"). Lists the whole store: run it from a job, not per request. With `dryRun`, writes
   * nothing and reports what would go. Throws `StorageUnavailableError` on a storage failure (what was removed
   * until then stays removed; a later run finishes).
   */
  async gc(options: GcOptions = {}): Promise<GcReport> {
    const report = await collect({ storage: this.storage, docs: this.#docs, logger: this.logger, listPageSize: this.#listPageSize }, {
      now: this.#now, ...options,
    });
    if (!report.dryRun && (report.blobs.length > 0 || report.tombstones.length > 0)) {
      await this.audit({
        type: 'gc', time: this.#now().toISOString(), actor: null, blobs: report.blobs.length, tombstones: report.tombstones.length,
      });
    }
    return report;
  }

  // ---- helpers ------------------------------------------------------------------------------------------------

  #names(namespace: string, name: string) {
    return { namespace: checkName('namespace', namespace), name: checkName('package', name) };
  }

  async #package(namespace: string, name: string): Promise<PackageDoc> {
    const names = this.#names(namespace, name);
    return requireLive(await this.#docs.read<PackageDoc>(keys.packageDoc(names.namespace, names.name)), names);
  }

  /** Selector and media type resolution for routes 8, 10 and 11 (docs/api.md section 5). */
  async #resolve(namespace: string, name: string, selector: string | undefined, mediaType: string) {
    const wanted = mediaType === '-' ? '-' : normalizeMediaType(mediaType);
    const doc = await this.#package(namespace, name);
    const release = withReleaseDetail(() => selectRelease(selector, Object.keys(doc.releases)), selector ?? 'default');
    if (release === null) {
      throw new ApprError('package-release-not-found', `No release match '${selector}' for package '${pkgName(doc)}'`, {
        package: pkgName(doc), release_query: selector ?? 'default',
      });
    }
    const available = Object.keys(own(doc.releases, release) ?? {}).sort();
    let mt = wanted;
    if (wanted === '-') {
      if (available.length !== 1) {
        throw new ApprError('invalid-usage', `media-type non specified: [${available.join(',')}]`, {
          media_types: available,
        });
      }
      mt = available[0] as string;
    } else if (!available.includes(wanted)) {
      throw new ApprError('package-not-found', `package ${pkgName(doc)} has no release ${release} (${wanted})`, {
        package: pkgName(doc), release, media_type: wanted,
      });
    }
    return { doc, release, mt };
  }
}

// ---- pure functions over package documents ------------------------------------------------------------------

/** Own-property lookup: names such as `constructor` must never resolve to something inherited. */
function own<T>(record: Record<string, T>, key: string): T | undefined {
  return Object.hasOwn(record, key) ? record[key] : undefined;
}

/** Selector and channel errors name the value `release` in their details, as the reference did (a push: `version`). */
function withReleaseDetail<T>(fn: () => T, release: string): T {
  try {
    return fn();
  } catch (err) {
    if (err instanceof ApprError && err.code === 'invalid-release') {
      throw new ApprError('invalid-release', err.message, { release });
    }
    throw err;
  }
}

function isLive(doc: PackageDoc): boolean {
  return Object.keys(doc.releases).length > 0;
}

function newPackage(namespace: string, name: string, createdAt: string, visibility: Visibility): PackageDoc {
  return { namespace, name, created_at: createdAt, visibility, releases: {}, channels: {} };
}

function pkgName(doc: { namespace: string; name: string }): string {
  return `${doc.namespace}/${doc.name}`;
}

function requireLive(doc: PackageDoc | null, names: { namespace: string; name: string }): PackageDoc {
  if (doc && isLive(doc)) return doc;
  throw new ApprError('package-not-found', `package ${pkgName(names)} doesn't exist`, {
    package: pkgName(names), release: null, media_type: null,
  });
}

function packageNotFound(doc: PackageDoc, release: string): ApprError {
  return new ApprError('package-not-found', `package ${pkgName(doc)} has no release ${release}`, {
    package: pkgName(doc), release, media_type: null,
  });
}

function channelNotFound(doc: PackageDoc, channel: string): ApprError {
  return new ApprError('channel-not-found', `No channel ${channel} for package ${pkgName(doc)}`, {
    package: pkgName(doc), channel,
  });
}

function removeFromChannel(doc: PackageDoc, channel: string, release: string): void {
  const record = own(doc.channels, channel);
  if (!record) return;
  const releases = record.releases.filter((r) => r !== release && own(doc.releases, r) !== undefined);
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

function manifest(doc: PackageDoc, release: string, mt: string): Manifest {
  const record = own(own(doc.releases, release) ?? {}, mt) as ManifestRecord;
  return {
    package: pkgName(doc),
    release,
    created_at: record.created_at,
    metadata: record.metadata,
    mediaType: manifestMediaType(mt),
    content: { mediaType: contentMediaType(mt), size: record.size, digest: record.digest, urls: [] },
  };
}

function manifestsOf(doc: PackageDoc, release: string): { mt: string; manifest: Manifest }[] {
  return Object.keys(own(doc.releases, release) ?? {}).sort().map((mt) => ({ mt, manifest: manifest(doc, release, mt) }));
}

function summarize(doc: PackageDoc, mediaType: string | undefined): PackageSummary | null {
  const releases = sortReleasesDesc(
    Object.keys(doc.releases).filter((r) => !mediaType || own(own(doc.releases, r) ?? {}, mediaType) !== undefined),
  );
  const latest = releases[0];
  if (latest === undefined) return null;
  return {
    name: pkgName(doc),
    namespace: doc.namespace,
    releases,
    default: latest,
    manifests: mediaType ? [mediaType] : Object.keys(own(doc.releases, latest) ?? {}).sort(),
    visibility: doc.visibility,
    created_at: doc.created_at,
  };
}

async function mapLimit<T, R>(items: T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const index = next++;
      results[index] = await fn(items[index] as T);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}
