import { LRUCache } from 'lru-cache';
import { deepFreeze } from './documents.js';
import { keys } from './keys.js';
import { sortReleasesDesc } from './release.js';
import { isLiveDoc } from './segments.js';
import type { PackageDoc, PackageSummary, Visibility, VisibleFilter } from './registry.js';

/**
 * What list, search, show and pull need to know about one live package: its document without the releases'
 * metadata (show reads that from the document cache), and the ETag of the stored document it came from.
 */
export interface CatalogEntry {
  readonly key: string;
  readonly etag: string;
  readonly doc: PackageDoc;
  /** Releases, highest first. */
  readonly releasesDesc: readonly string[];
  /**
   * Answers computed from this version of the package (resolved selectors, response bodies), keyed by the
   * question: they live exactly as long as the version, so they can never be stale. Capped in number per package
   * and in bytes over the catalog (see `Catalog.remember`).
   */
  readonly memo: Map<string, unknown>;
  /** Bytes of the memo's response bodies, as counted by `Catalog.remember`. */
  memoBytes: number;
}

/** Answers remembered per package version, at most. */
const MEMO_MAX = 64;
/** Bytes of remembered response bodies over the whole catalog, at most (their JSON text's length). */
export const MEMO_MAX_BYTES = 32 * 1024 * 1024;

/** One package in the snapshot that new instances load at start. */
export interface SnapshotPackage {
  etag: string;
  doc: PackageDoc;
}

interface ListResult {
  /** Matching packages and the JSON each contributes to a list body, in storage key order. */
  items: { entry: CatalogEntry; json: string }[];
  /** The whole body when every match is public (then it does not depend on the caller). */
  publicBody: string | undefined;
  /** Length of the JSON text held (items and body), for the cache's bound. */
  bytes: number;
}

/** Bytes of list and search results kept (their JSON text's length), at most. */
const RESULTS_MAX_BYTES = 64 * 1024 * 1024;

/**
 * Every live package of the registry, in memory. It changes only through `apply` (called with every version of
 * a package document this instance reads or writes) and `load` (a snapshot at start-up), so it is exactly as
 * fresh as the documents this instance has seen; the change feed makes it see other instances' writes.
 *
 * List and search results are kept per catalog version and filter, so a repeated list costs the serialization
 * of nothing: only the visibility check of private matches, and the concatenation of cached JSON.
 */
export class Catalog {
  readonly #packages = new Map<string, CatalogEntry>();
  /**
   * The same entries by namespace, then name: the read answered from memory finds its package without building
   * the storage key (a string to make and hash per request).
   */
  readonly #named = new Map<string, Map<string, CatalogEntry>>();
  /** Packages whose every release was deleted: they read as absent, but keep their visibility (authorization). */
  readonly #tombstones = new Map<string, Visibility>();
  /** Keys of every document version applied (deleted ones too): a snapshot is older than what was seen here. */
  readonly #seen = new Set<string>();
  #sorted: CatalogEntry[] | undefined;
  #version = 0;
  readonly #results = new LRUCache<string, ListResult>({
    max: 256,
    maxSize: RESULTS_MAX_BYTES,
    sizeCalculation: (result) => Math.max(1, result.bytes),
  });

  /** Bytes of remembered response bodies (`remember`), over every package. */
  #memoBytes = 0;

  /**
   * Remember `value`, an answer to `question` computed from `entry`'s version of its package, and return it. Kept
   * only while that version is the catalog's (a version replaced meanwhile is not remembered). `bytes`: its size
   * when it is a response body, counted against MEMO_MAX_BYTES; past that every package's answers are forgotten
   * (and worked out again when asked).
   */
  remember<T>(entry: CatalogEntry, question: string, value: T, bytes = 0): T {
    if (this.#packages.get(entry.key) !== entry) return value;
    if (entry.memo.size >= MEMO_MAX) this.#forget(entry);
    if (this.#memoBytes + bytes > MEMO_MAX_BYTES) for (const other of this.#packages.values()) this.#forget(other);
    entry.memo.set(question, value);
    entry.memoBytes += bytes;
    this.#memoBytes += bytes;
    return value;
  }

  #forget(entry: CatalogEntry): void {
    this.#memoBytes -= entry.memoBytes;
    entry.memoBytes = 0;
    entry.memo.clear();
  }

  get version(): number {
    return this.#version;
  }

  get size(): number {
    return this.#packages.size;
  }

  get(key: string): CatalogEntry | undefined {
    return this.#packages.get(key);
  }

  /** `get(keys.packageDoc(namespace, name))`, without making the key. */
  named(namespace: string, name: string): CatalogEntry | undefined {
    return this.#named.get(namespace)?.get(name);
  }

  // The names come from the key, not from the document (which could name another package).
  #set(key: string, entry: CatalogEntry): void {
    this.#packages.set(key, entry);
    const parsed = keys.parsePackageDoc(key);
    if (parsed === null) return;
    let names = this.#named.get(parsed.namespace);
    if (names === undefined) this.#named.set(parsed.namespace, (names = new Map<string, CatalogEntry>()));
    names.set(parsed.name, entry);
  }

  #delete(key: string): void {
    this.#packages.delete(key);
    const parsed = keys.parsePackageDoc(key);
    const names = parsed === null ? undefined : this.#named.get(parsed.namespace);
    if (parsed === null || names === undefined) return;
    names.delete(parsed.name);
    if (names.size === 0) this.#named.delete(parsed.namespace);
  }

  /** The visibility of a package that exists only as a tombstone (no release left), as last seen here. */
  tombstone(key: string): Visibility | undefined {
    return this.#tombstones.get(key);
  }

  /** Live packages in storage key order (the order list and search answer in). */
  entries(): readonly CatalogEntry[] {
    this.#sorted ??= [...this.#packages.values()].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    return this.#sorted;
  }

  /** A version of a package document: `doc` null (absent) or without releases (a tombstone) removes it. */
  apply(key: string, doc: PackageDoc | null, etag: string | null): void {
    this.#seen.add(key);
    const current = this.#packages.get(key);
    const live = doc !== null && isLiveDoc(doc);
    if (doc !== null && !live) this.#tombstones.set(key, doc.visibility);
    else this.#tombstones.delete(key);
    if (doc === null || etag === null || !live) {
      if (current === undefined) return;
      this.#forget(current);
      this.#delete(key);
    } else {
      if (current?.etag === etag) return;
      if (current !== undefined) this.#forget(current);
      this.#set(key, entryOf(key, doc, etag));
    }
    this.#changed();
  }

  /** Add a snapshot's packages that this instance has not read itself meanwhile (its own reads are newer). */
  load(packages: Record<string, SnapshotPackage>): void {
    for (const [key, pkg] of Object.entries(packages)) {
      if (!this.#seen.has(key) && keys.parsePackageDoc(key) && Object.keys(pkg.doc.releases).length > 0) {
        const current = this.#packages.get(key);
        if (current !== undefined) this.#forget(current);
        this.#set(key, entryOf(key, pkg.doc, pkg.etag));
      }
    }
    this.#changed();
  }

  snapshot(): Record<string, SnapshotPackage> {
    const packages: Record<string, SnapshotPackage> = {};
    for (const entry of this.entries()) packages[entry.key] = { etag: entry.etag, doc: entry.doc };
    return packages;
  }

  /**
   * The list body (contract route 3) for one caller, as JSON text. `namespace` and `query` must be validated.
   * Costs O(matches) when the same filter was asked since the last change (one `visible` call per match, then a
   * concatenation of cached JSON).
   */
  async listBody(
    filter: { namespace?: string; query?: string; mediaType?: string },
    visible: VisibleFilter,
  ): Promise<string> {
    const result = this.#list(
      `l\0${filter.namespace ?? ''}\0${filter.query ?? ''}\0${filter.mediaType ?? ''}`,
      filter,
      (entry) => {
        const summary = summarize(entry.doc, entry.releasesDesc, filter.mediaType);
        return summary === null ? null : JSON.stringify(summary);
      },
    );
    return join(result, await admitted(result, visible));
  }

  /** Search (contract route 4): `["ns/name", ...]` as JSON text. */
  async searchBody(query: string, visible: VisibleFilter): Promise<string> {
    const result = this.#list(`s\0${query}`, { query }, (entry) =>
      JSON.stringify(`${entry.doc.namespace}/${entry.doc.name}`),
    );
    return join(result, await admitted(result, visible));
  }

  /** The packages of a list or search for one caller, as objects (the public `Registry` API). */
  async list(
    filter: { namespace?: string; query?: string; mediaType?: string },
    visible: VisibleFilter,
  ): Promise<PackageSummary[]> {
    return JSON.parse(await this.listBody(filter, visible)) as PackageSummary[];
  }

  #list(
    cacheKey: string,
    filter: { namespace?: string; query?: string },
    render: (entry: CatalogEntry) => string | null,
  ): ListResult {
    const cached = this.#results.get(cacheKey);
    if (cached) return cached;
    const needle = (filter.query ?? '').toLowerCase();
    const items: ListResult['items'] = [];
    let allPublic = true;
    for (const entry of this.entries()) {
      const { namespace, name } = entry.doc;
      if (filter.namespace !== undefined && namespace !== filter.namespace) continue;
      if (needle && !`${namespace}/${name}`.toLowerCase().includes(needle)) continue;
      const json = render(entry);
      if (json === null) continue;
      items.push({ entry, json });
      if (entry.doc.visibility !== 'public') allPublic = false;
    }
    const publicBody = allPublic ? `[${items.map((i) => i.json).join(',')}]` : undefined;
    const bytes = items.reduce((sum, item) => sum + item.json.length, publicBody?.length ?? 0);
    const result: ListResult = { items, publicBody, bytes };
    this.#results.set(cacheKey, result);
    return result;
  }

  #changed(): void {
    this.#version += 1;
    this.#sorted = undefined;
    this.#results.clear();
  }
}

/**
 * Which items of a result the caller may see: `visible` is asked about every package (a host's filter may hide
 * public ones too), without a promise per package when it answers synchronously, as the router's does.
 */
async function admitted(result: ListResult, visible: VisibleFilter): Promise<boolean[] | undefined> {
  if (visible === EVERYONE) return undefined;
  let pending = false;
  const answers = result.items.map(({ entry }) => {
    const answer = visible({ namespace: entry.doc.namespace, name: entry.doc.name, visibility: entry.doc.visibility });
    if (typeof answer !== 'boolean') pending = true;
    return answer;
  });
  const admit = pending ? await Promise.all(answers) : (answers as boolean[]);
  return admit.every((ok) => ok) && result.publicBody !== undefined ? undefined : admit;
}

/** The filter that admits every package (the default of `Registry.listPackages` and `search`). */
export const EVERYONE: VisibleFilter = () => true;

function join(result: ListResult, admit: boolean[] | undefined): string {
  if (admit === undefined) return result.publicBody ?? `[${result.items.map((i) => i.json).join(',')}]`;
  return `[${result.items
    .filter((_, i) => admit[i])
    .map((i) => i.json)
    .join(',')}]`;
}

/**
 * The entry of one version. Its releases (without metadata) and their order are built when first read, not when
 * the version is applied: a push to a package of thousands of releases must not pay O(releases) for them (issue 9);
 * the rest of the document (visibility, channels) is at hand at once.
 */
function entryOf(key: string, doc: PackageDoc, etag: string): CatalogEntry {
  let releases: PackageDoc['releases'] | undefined;
  let releasesDesc: readonly string[] | undefined;
  const channels: PackageDoc['channels'] = {};
  for (const [channel, record] of Object.entries(doc.channels)) {
    channels[channel] = { current: record.current, releases: [...record.releases] };
  }
  // Frozen shallowly: a deep freeze would call the getter.
  const stripped: PackageDoc = Object.freeze({
    namespace: doc.namespace,
    name: doc.name,
    created_at: doc.created_at,
    visibility: doc.visibility,
    channels: deepFreeze(channels),
    get releases(): PackageDoc['releases'] {
      releases ??= deepFreeze(stripMetadata(doc.releases));
      return releases;
    },
  });
  return {
    key,
    etag,
    memo: new Map(),
    memoBytes: 0,
    doc: stripped,
    get releasesDesc() {
      releasesDesc ??= Object.freeze(sortReleasesDesc(Object.keys(stripped.releases)));
      return releasesDesc;
    },
  };
}

/** The records without the releases' metadata: the catalog's memory grows with packages, not with metadata. */
function stripMetadata(records: PackageDoc['releases']): PackageDoc['releases'] {
  const releases: PackageDoc['releases'] = {};
  for (const [release, media] of Object.entries(records)) {
    const stripped: PackageDoc['releases'][string] = {};
    for (const [mt, record] of Object.entries(media)) {
      stripped[mt] = { digest: record.digest, size: record.size, created_at: record.created_at, metadata: null };
    }
    releases[release] = stripped;
  }
  return releases;
}

/** Route 3's item for one package (docs/api.md section 13.1); null when no release has `mediaType`. */
export function summarize(
  doc: PackageDoc,
  releasesDesc: readonly string[],
  mediaType: string | undefined,
): PackageSummary | null {
  const releases = mediaType
    ? releasesDesc.filter((r) => Object.hasOwn(doc.releases, r) && Object.hasOwn(doc.releases[r] as object, mediaType))
    : [...releasesDesc];
  const latest = releases[0];
  if (latest === undefined) return null;
  return {
    name: `${doc.namespace}/${doc.name}`,
    namespace: doc.namespace,
    releases,
    default: latest,
    manifests: mediaType ? [mediaType] : Object.keys(doc.releases[latest] ?? {}).sort(),
    visibility: doc.visibility,
    created_at: doc.created_at,
  };
}
