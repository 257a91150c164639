/**
 * Helm chart repositories over the registry's packages: one repository per namespace, one index entry per release
 * of media type `helm`. Built only from the Registry's public read methods, so it sees exactly what the appr API
 * sees (visibility filtering included).
 *
 * What a release contributes comes from its chart record (`keys.chart`, lib/core/chart.ts: Chart.yaml's fields and
 * the sha256 of the stored `.tgz`), which the push that wrote the blob stored. A release without one (pushed before
 * push-time capture, or a push that found its blob stored already), whose record is damaged (not a valid record
 * of our format), or whose record disagrees with the sha256 the push recorded (`archive_digest`), has its blob read
 * once, and the record is written back (create-if-absent, or in place of the damaged or disagreeing one), so that
 * other instances and restarts do not read the blob again.
 *
 * What is cached, and why it is safe:
 * - a chart record, per blob and release: it describes the blob's stored bytes, which a content address keeps
 *   (`ns/name/digest` is written create-if-absent) while a release references it, so it is never invalidated, only
 *   evicted (an LRU bounded in bytes); a release pushed again after its blob was collected is another key;
 * - the serialized index, keyed by a fingerprint of everything it is made of (namespace, context path, and each
 *   visible release's name, version, blob digest and creation time): a push, a delete or a visibility change
 *   gives another fingerprint, so a cached index can never be stale; two callers who see the same charts share
 *   one copy. The fingerprint is also the ETag;
 * - with a registry state token (the catalog version, as the router passes it), the serialized index per (state,
 *   namespace, context path, visibility scope) and each namespace's chart packages per state: a repeated index
 *   costs asking the caller's read permission about each chart package, and no storage request;
 * - each entry's YAML, by the entry's content: a rebuild after a change serializes only the new entries.
 */
import { createHash } from 'node:crypto';
import { mapLimit } from '../storage/util.js';
import { LRUCache } from 'lru-cache';
import { stringify } from 'yaml';
import { isApprError } from '../errors.js';
import {
  asChartRecord,
  CHART_RECORD_FORMAT,
  HELM_MEDIA_TYPE,
  isLaterChartRecord,
  type ChartRecord,
} from '../core/chart.js';
import { fetchOr, loadOrFail } from '../core/cache-reads.js';
import { keys } from '../core/keys.js';
import type { PackageRef, Registry, VisibleFilter } from '../core/registry.js';
import { compareReleases } from '../core/release.js';
import { readWithinDeadline } from '../storage/deadline.js';
import type { WriteCondition } from '../storage/types.js';
import { readChartArchive, type ChartArchive, type ChartMetadata } from './chart.js';

export { HELM_MEDIA_TYPE };

export interface HelmOptions {
  /** Bytes of chart metadata kept in memory (default 16 MiB; about 1 KiB per chart version). */
  chartCacheBytes?: number;
  /** Bytes of serialized indexes kept in memory (default 32 MiB). */
  indexCacheBytes?: number;
  /** Clock for the index's `generated` field (tests). */
  now?: () => Date;
}

/** One entry of a repository index (Helm's `repo.ChartVersion`): the chart's metadata plus where to get it. */
export interface ChartVersion extends ChartMetadata {
  /** When the release was pushed (RFC 3339). */
  created: string;
  /** sha256 (hex) of the `.tgz` bytes served at `urls[0]`: what Helm verifies after downloading. */
  digest: string;
  /** Relative to the repository URL: `charts/{name}-{version}.tgz`. */
  urls: string[];
}

/** A release of media type `helm` as the registry lists it. */
interface HelmRelease {
  name: string;
  version: string;
  /** The appr digest (sha256 of the tar), which names the stored blob. */
  blob: string;
  /** Bytes of the stored blob (the release record's `size`). */
  size: number;
  created: string;
  /** sha256 (hex) of the gzip bytes, when the push stored them (the release record's `archive_digest`). */
  archiveDigest?: string | undefined;
}

/** Which blob `chart()` describes: a release's, as far as its record tells (see `HelmRelease`). */
export interface ChartRef {
  /** The package. */
  name: string;
  blob: string;
  size?: number | undefined;
  created?: string | undefined;
  archiveDigest?: string | undefined;
}

export interface SerializedIndex {
  body: Buffer;
  /** Weak ETag (`W/"..."`): the fingerprint of the index's content. */
  etag: string;
  /** Number of chart versions listed. */
  charts: number;
}

const MB = 1024 * 1024;
const READ_CONCURRENCY = 16;

/** `charts/{name}-{version}.tgz`, relative to the repository URL. */
export function chartFileName(name: string, version: string): string {
  return `${name}-${version}.tgz`;
}

export class HelmRepository {
  readonly #registry: Registry;
  readonly #now: () => Date;
  readonly #charts: LRUCache<string, ChartArchive, { namespace: string; release: ChartRef }>;
  readonly #indexes: LRUCache<
    string,
    SerializedIndex,
    { namespace: string; contextPath: string; releases: HelmRelease[] }
  >;
  readonly #state: (() => string | number | undefined) | undefined;
  /** Indexes by (registry state, namespace, context path, visibility scope): see `index()`. */
  readonly #recent: LRUCache<string, SerializedIndex>;

  /** Each index entry's YAML (`entryYaml`), by the entry's JSON. */
  readonly #fragments: LRUCache<string, string>;
  /** Per namespace, its chart packages (all of them, any visibility) as of one registry state. */
  readonly #packages: LRUCache<string, { state: string | number; refs: PackageRef[] }>;

  /**
   * `state`, when given, returns a token that changes whenever any package document changes (a catalog's
   * version). A repeated index then costs asking the caller's `visible` filter about each chart package of the
   * namespace (no listing, no parsing, no storage request), and nothing per release. Without it, each index lists
   * the packages and reads every chart package's manifests to fingerprint what it lists.
   */
  constructor(registry: Registry, options: HelmOptions = {}, state?: () => string | number | undefined) {
    this.#registry = registry;
    this.#state = state;
    this.#now = options.now ?? (() => new Date());
    this.#charts = new LRUCache({
      maxSize: positive(options.chartCacheBytes ?? 16 * MB, 'chartCacheBytes'),
      sizeCalculation: (value) =>
        256 + (value.chart ? JSON.stringify(value.chart).length : 0) + (value.problem?.length ?? 0),
      // An index reads all of a namespace's charts at once: entries whose read is still under way are evicted when
      // they do not all fit, and their callers must still get what was read (not kept), not lru-cache's "evicted"
      // (`chart`, with `fetchOr`, for a read that found nothing).
      ignoreFetchAbort: true,
      fetchMethod: (_key, _stale, { context }) => loadOrFail(() => this.#loadChart(context.namespace, context.release)),
    });
    this.#indexes = new LRUCache({
      maxSize: positive(options.indexCacheBytes ?? 32 * MB, 'indexCacheBytes'),
      sizeCalculation: (value) => value.body.length + 64,
      ignoreFetchAbort: true, // as for the charts: an index built while others fill the cache is still answered
      fetchMethod: async (key, _stale, { context }) =>
        this.#serialize(key, context.namespace, context.contextPath, context.releases),
    });
    this.#recent = new LRUCache({
      maxSize: positive(options.indexCacheBytes ?? 32 * MB, 'indexCacheBytes'),
      sizeCalculation: (value, key) => value.body.length + key.length + 64,
    });
    this.#fragments = new LRUCache({
      maxSize: positive(options.indexCacheBytes ?? 32 * MB, 'indexCacheBytes'),
      sizeCalculation: (value, key) => value.length + key.length + 64,
    });
    this.#packages = new LRUCache({
      maxSize: 4 * MB,
      sizeCalculation: (value) => 64 + value.refs.reduce((sum, ref) => sum + ref.name.length + 48, 0),
    });
  }

  /**
   * The repository index of `namespace` for a caller whose read permission is `visible`: YAML bytes and their
   * ETag. `contextPath` is the path of the repositories' root as the client sees it (`/cnr/helm`), written to
   * `serverInfo.contextPath` so that `helm cm-push` finds the upload API. Throws what the registry throws
   * (`400 invalid-usage` for a bad namespace name, `503 storage-unavailable`).
   *
   * With a state token, the serialized index is cached per (state, namespace, context path, visibility scope), the
   * scope being which of the namespace's chart packages `visible` admits (`*` for all): callers who see the same
   * charts share one copy, and a push, a delete or a visibility change moves the state.
   */
  async index(namespace: string, visible: VisibleFilter, contextPath: string): Promise<SerializedIndex> {
    const state = this.#state?.();
    if (state === undefined) return this.#index(namespace, contextPath, await this.#releases(namespace, visible));
    const refs = await this.#chartPackages(namespace, state);
    const admitted = await admit(refs, visible);
    const scope = admitted.every(Boolean) ? '*' : admitted.map((ok) => (ok ? '1' : '0')).join('');
    const key = `${state}\0${namespace}\0${contextPath}\0${scope}`;
    const cached = this.#recent.get(key);
    if (cached !== undefined) return cached;
    const packages = refs.filter((_, i) => admitted[i]).map((ref) => ref.name.slice(ref.namespace.length + 1));
    const built = await this.#index(namespace, contextPath, await this.#releasesOf(namespace, packages));
    // Built from a later state than `state` if a write landed meanwhile: then it is not what `state` names.
    if (this.#state?.() === state) this.#recent.set(key, built);
    return built;
  }

  /** Every chart package of `namespace` (`name` is `ns/name`), listed once per registry state. */
  async #chartPackages(namespace: string, state: string | number): Promise<PackageRef[]> {
    const known = this.#packages.get(namespace);
    if (known?.state === state) return known.refs;
    const listed = await this.#registry.listPackages({ namespace, mediaType: HELM_MEDIA_TYPE });
    const refs = listed.map((pkg) => ({ namespace: pkg.namespace, name: pkg.name, visibility: pkg.visibility }));
    if (this.#state?.() === state) this.#packages.set(namespace, { state, refs });
    return refs;
  }

  /** The index of exactly these releases, from the cache of serialized indexes when it holds it. */
  async #index(namespace: string, contextPath: string, releases: HelmRelease[]): Promise<SerializedIndex> {
    // The chart record format stands for the rules that read a chart from its archive: an index read by other rules
    // (an upgrade) is another body, so another ETag.
    const fingerprint = createHash('sha256').update(`${CHART_RECORD_FORMAT}\n${namespace}\n${contextPath}\n`);
    for (const r of releases) fingerprint.update(`${r.name}\0${r.version}\0${r.blob}\0${r.created}\n`);
    const key = fingerprint.digest('hex');
    return this.#indexes.fetch(key, { context: { namespace, contextPath, releases } }) as Promise<SerializedIndex>;
  }

  /** The index entries of `namespace` visible to the caller, by chart name, each list newest version first. */
  async entries(namespace: string, visible: VisibleFilter): Promise<Record<string, ChartVersion[]>> {
    return this.#entries(namespace, await this.#releases(namespace, visible));
  }

  /**
   * The index entries of one package (the caller's read permission already checked), newest first; empty when
   * the package has no release that is a chart of that name and version. Throws `404 package-not-found` when the
   * package does not exist.
   */
  async chartVersions(namespace: string, name: string): Promise<ChartVersion[]> {
    const releases = await this.#packageReleases(namespace, name);
    return (await this.#entries(namespace, releases))[name] ?? [];
  }

  /**
   * What the stored blob of a release holds (cached per blob and release creation time, RFC 3339): its sha256 and
   * Chart.yaml, or why it is no chart. From the chart record when there is one that agrees with the release: its
   * `digest` equal to the release's `archiveDigest` when the release has one (every release pushed since pushes
   * record it, lib/core/push.ts `#storeChart`), else (older releases) its `size` to the release's stored size when
   * known; else from the blob, read once, and the record written back when there was none.
   * `undefined` when the blob is missing from storage. Throws `StorageUnavailableError` when storage fails.
   * The creation time is in the key because one content address may hold other bytes over time: a release
   * deleted, its blob collected, and the same tar pushed again in another gzip (perhaps of the same size) is a new
   * release record over other bytes (test/helm/chart-cache-repush.test.ts).
   */
  async chart(namespace: string, release: ChartRef): Promise<ChartArchive | undefined> {
    return fetchOr(
      () =>
        this.#charts.fetch(`${namespace}/${release.name}/${release.blob}/${release.created ?? ''}`, {
          context: { namespace, release },
        }),
      () => this.#loadChart(namespace, release),
    );
  }

  async #releases(namespace: string, visible: VisibleFilter): Promise<HelmRelease[]> {
    return this.#releasesOf(namespace, await this.#visiblePackages(namespace, visible));
  }

  /** Names of the packages of `namespace` with a `helm` release that the caller may read. */
  async #visiblePackages(namespace: string, visible: VisibleFilter): Promise<string[]> {
    const packages = await this.#registry.listPackages({ namespace, mediaType: HELM_MEDIA_TYPE }, visible);
    return packages.map((pkg) => pkg.name.slice(pkg.namespace.length + 1));
  }

  async #releasesOf(namespace: string, packages: string[]): Promise<HelmRelease[]> {
    const lists = await mapLimit(packages, READ_CONCURRENCY, (name) =>
      this.#packageReleases(namespace, name).catch((err: unknown) => {
        // Deleted between the listing and this read: it is simply not in this index.
        if (isApprError(err) && err.code === 'package-not-found') return [];
        throw err;
      }),
    );
    return lists.flat();
  }

  async #packageReleases(namespace: string, name: string): Promise<HelmRelease[]> {
    const records = await this.#registry.releaseRecords(namespace, name, HELM_MEDIA_TYPE);
    return records.map(({ release, record }) => ({
      name,
      version: release,
      blob: record.digest,
      size: record.size,
      created: record.created_at,
      archiveDigest: record.archive_digest,
    }));
  }

  /**
   * A release is an entry only when its blob is a chart whose Chart.yaml names this package and this release:
   * Helm installs `name` at `version` from what the index says, and would refuse (or, worse, install another
   * chart) if the archive said otherwise.
   */
  async #entries(namespace: string, releases: HelmRelease[]): Promise<Record<string, ChartVersion[]>> {
    const read = await mapLimit(releases, READ_CONCURRENCY, async (release) => ({
      release,
      archive: await this.chart(namespace, release),
    }));
    const entries: Record<string, ChartVersion[]> = {};
    const names = [...new Set(releases.map((r) => r.name))].sort();
    for (const name of names) {
      const versions = read
        .filter(
          ({ release, archive }) =>
            release.name === name && archive?.chart?.name === name && archive.chart.version === release.version,
        )
        .sort((a, b) => compareReleases(b.release.version, a.release.version))
        .map(({ release, archive }) => ({
          ...(archive?.chart as ChartMetadata),
          created: release.created,
          digest: (archive as ChartArchive).digest,
          urls: [`charts/${chartFileName(name, release.version)}`],
        }));
      if (versions.length) entries[name] = versions;
    }
    return entries;
  }

  async #serialize(
    fingerprint: string,
    namespace: string,
    contextPath: string,
    releases: HelmRelease[],
  ): Promise<SerializedIndex> {
    const entries = await this.#entries(namespace, releases);
    const body = Buffer.from(
      serializeIndex(entries, this.#now().toISOString(), contextPath, (entry) => {
        // An entry's YAML depends on nothing but the entry: after a change, only new releases are serialized.
        const key = JSON.stringify(entry);
        let yaml = this.#fragments.get(key);
        if (yaml === undefined) {
          yaml = entryYaml(entry);
          this.#fragments.set(key, yaml);
        }
        return yaml;
      }),
    );
    // Weak: an index rebuilt after eviction has another `generated` time, but the same charts.
    const charts = Object.values(entries).reduce((sum, versions) => sum + versions.length, 0);
    return { body, etag: `W/"${fingerprint.slice(0, 32)}"`, charts };
  }

  async #loadChart(namespace: string, release: ChartRef): Promise<ChartArchive | undefined> {
    const { name, blob, size, archiveDigest } = release;
    const storage = this.#registry.storage;
    const key = keys.chart(namespace, name, blob);
    const found = await storage.get(key);
    // Asked without `ifNoneMatch`: never a 304.
    const stored = found === null || found.notModified ? null : found;
    const parsed = stored === null ? null : parseJson(stored.body);
    const record = asChartRecord(parsed);
    // A record that disagrees describes other bytes than the release's (a blob collected and pushed again, the
    // push's own record not written yet or not at all): the blob decides, and the record is left for its writers.
    const agrees =
      record !== null &&
      (size === undefined || record.size === size) &&
      (archiveDigest === undefined || record.digest === archiveDigest);
    if (agrees) return archiveOf(record);
    let stream;
    try {
      stream = await this.#registry.blob(namespace, name, blob);
    } catch (err) {
      // A release whose blob is gone is a storage fault, not a fact about the chart: do not cache it.
      if (isApprError(err) && err.code === 'package-not-found') return undefined;
      throw err;
    }
    // Bounded to its end (a stream that stalls after it was handed over would keep index.yaml unanswered); a stream
    // that fails or stalls is a 503, and nothing is cached for the release.
    const archive = await readWithinDeadline(stream, this.#registry.storageTimeoutMs, `blob ${blob}`, readChartArchive);
    // Written back when there is none (create-if-absent: a push that wrote the blob meanwhile has written the
    // record of its bytes; it stands), in place of one that is no valid record of our format (torn or emptied by a
    // power cut: chart records are fsynced, but a store may not be; or JSON of another shape, which would otherwise
    // cost a blob read per process for good), or in place of one the release says is of other bytes when the blob
    // agrees with the release (only that version of the key: a push replacing it meanwhile wins). A record of a
    // later format (a newer version of this library on the same store) is left alone. A failure costs this process
    // nothing (it has the answer) and another instance reads the blob once more.
    const damaged = record === null && !isLaterChartRecord(parsed);
    const condition: WriteCondition | undefined =
      stored === null
        ? { ifNoneMatch: '*' }
        : damaged || (record !== null && archiveDigest !== undefined && archive.digest === archiveDigest)
          ? { ifMatch: stored.etag }
          : undefined;
    if (condition !== undefined) {
      const written: ChartRecord = { format: CHART_RECORD_FORMAT, ...archive };
      await storage.put(key, Buffer.from(JSON.stringify(written)), condition).catch((err: unknown) => {
        this.#registry.logger?.warn({ err, key }, 'koa-appr: the chart record could not be written back');
      });
    }
    return archive;
  }
}

function archiveOf(record: ChartRecord): ChartArchive {
  return { digest: record.digest, size: record.size, chart: record.chart, problem: record.problem };
}

function parseJson(body: Buffer): unknown {
  try {
    return JSON.parse(body.toString('utf8')) as unknown;
  } catch {
    return null;
  }
}

const YAML_OPTIONS = { lineWidth: 0 } as const;

/**
 * A repository index as YAML, the same document `stringify({apiVersion, entries, generated, serverInfo})` writes,
 * assembled from each entry's YAML (`yamlOf`, given `entryYaml`'s output): serializing 1,000 entries with the YAML
 * library takes a third of a second of CPU, so an index rebuilt after a change reuses the entries it had. Indenting a
 * YAML node's lines uniformly keeps its meaning (block scalars included: their indentation is relative), and keys
 * are written by the library, quoted where a plain scalar would read as something else (`"1.10"`, `"true"`).
 */
export function serializeIndex(
  entries: Record<string, ChartVersion[]>,
  generated: string,
  contextPath: string,
  yamlOf: (entry: ChartVersion) => string,
): string {
  const names = Object.keys(entries);
  let out = 'apiVersion: v1\n';
  if (names.length === 0) out += 'entries: {}\n';
  else {
    out += 'entries:\n';
    for (const name of names) {
      out += `  ${stringify(name, YAML_OPTIONS).trimEnd()}:\n`;
      for (const entry of entries[name] ?? []) {
        const lines = yamlOf(entry).trimEnd().split('\n');
        out += `    - ${lines[0] ?? ''}\n`;
        for (let i = 1; i < lines.length; i += 1) out += lines[i] === '' ? '\n' : `      ${lines[i]}\n`;
      }
    }
  }
  return out + stringify({ generated, serverInfo: { contextPath } }, YAML_OPTIONS);
}

/** One index entry as a YAML mapping (what `serializeIndex` indents into place). */
export function entryYaml(entry: ChartVersion): string {
  return stringify(entry, YAML_OPTIONS);
}

/**
 * What `visible` answers about each package, without a promise per package when it answers synchronously (the
 * router's filter does). `refs` name packages `ns/name`, as listings do; the filter is asked with the bare name.
 */
async function admit(refs: PackageRef[], visible: VisibleFilter): Promise<boolean[]> {
  let pending = false;
  const answers = refs.map((ref) => {
    const answer = visible({
      namespace: ref.namespace,
      name: ref.name.slice(ref.namespace.length + 1),
      visibility: ref.visibility,
    });
    if (typeof answer !== 'boolean') pending = true;
    return answer;
  });
  return pending ? Promise.all(answers) : (answers as boolean[]);
}

function positive(value: number, name: string): number {
  if (!Number.isSafeInteger(value) || value < 1)
    throw new TypeError(`koa-appr: helm.${name} must be a positive integer (bytes)`);
  return value;
}
