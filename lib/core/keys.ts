import { randomBytes } from 'node:crypto';

/**
 * The one place that builds storage keys. Every segment has been validated (names.ts, release.ts, digest check)
 * before it gets here, so keys only contain `[A-Za-z0-9._+-]` and `/`.
 *
 *   packages/<ns>/<name>.json                          package document: releases, channels, visibility (mutable, CAS)
 *   blobs/<ns>/<name>/sha256/<digest>                   blob bytes, gzip as pushed (immutable, content-addressed)
 *   metadata/<ns>/<name>/sha256/<hash>.json            a release's metadata, JSON (immutable, content-addressed)
 *   segments/<ns>/<name>/sha256/<hash>.json            older release records of a package (immutable, content-addressed)
 *   charts/<ns>/<name>/sha256/<digest>.json            Helm: what the index needs of blob <digest> (chart.ts)
 *   changes/<time>+<instance>+<seq>+<ns>+<name>         change entry: "this package changed" (immutable, create-only)
 *   changes/<time>+compacted                           entries before <time> were deleted (lib/core/feed.ts)
 *   catalog/snapshot.json                              catalog snapshot: every live package at a feed position (CAS)
 *   health/<random>                                    one instance's health probe (written, read, deleted)
 *
 * Package documents live under their own prefix so that listing packages never walks blobs. A change entry names
 * its package in its key (names never contain `+`), so reading the feed is one listing and no GET; `<time>` is
 * 13 decimal digits of epoch milliseconds, so keys sort by time.
 */
const PACKAGES = 'packages/';
const BLOBS = 'blobs/';
const PACKAGE_DOC_SUFFIX = '.json';
const CHANGES = 'changes/';
const SEGMENTS = 'segments/';
const METADATA = 'metadata/';
const CHARTS = 'charts/';
const TIME_DIGITS = 13;

export interface ChangeRef {
  key: string;
  /** The writer's clock, epoch ms. */
  time: number;
  instance: string;
  namespace: string;
  name: string;
}

export const keys = {
  packages(namespace?: string): string {
    return namespace === undefined ? PACKAGES : `${PACKAGES}${namespace}/`;
  },

  packageDoc(namespace: string, name: string): string {
    return `${PACKAGES}${namespace}/${name}${PACKAGE_DOC_SUFFIX}`;
  },

  /** The inverse of `packageDoc`, for keys returned by a listing; `null` for anything else. */
  parsePackageDoc(key: string): { namespace: string; name: string } | null {
    if (!key.startsWith(PACKAGES) || !key.endsWith(PACKAGE_DOC_SUFFIX)) return null;
    const parts = key.slice(PACKAGES.length, -PACKAGE_DOC_SUFFIX.length).split('/');
    if (parts.length !== 2 || !parts[0] || !parts[1]) return null;
    return { namespace: parts[0], name: parts[1] };
  },

  blob(namespace: string, name: string, digest: string): string {
    return `${BLOBS}${namespace}/${name}/sha256/${digest}`;
  },

  /** Prefix of every blob, or of one package's blobs (for garbage collection). */
  blobs(namespace?: string, name?: string): string {
    return namespace === undefined || name === undefined ? BLOBS : `${BLOBS}${namespace}/${name}/sha256/`;
  },

  /** The inverse of `blob`, for keys returned by a listing; `null` for anything else. */
  parseBlob(key: string): { namespace: string; name: string; digest: string } | null {
    if (!key.startsWith(BLOBS)) return null;
    const parts = key.slice(BLOBS.length).split('/');
    if (
      parts.length !== 4 ||
      parts[2] !== 'sha256' ||
      !parts[0] ||
      !parts[1] ||
      !/^[0-9a-f]{64}$/.test(parts[3] ?? '')
    ) {
      return null;
    }
    return { namespace: parts[0], name: parts[1], digest: parts[3] as string };
  },

  /** A key of this instance's own for `Registry.health()`, random so that instances never probe the same key. */
  healthProbe(): string {
    return `health/${randomBytes(8).toString('hex')}`;
  },

  metadata(namespace: string, name: string, hash: string): string {
    return `${METADATA}${namespace}/${name}/sha256/${hash}.json`;
  },

  /** Prefix of every metadata object, or of one package's (for garbage collection). */
  metadataObjects(namespace?: string, name?: string): string {
    return namespace === undefined || name === undefined ? METADATA : `${METADATA}${namespace}/${name}/sha256/`;
  },

  /** The inverse of `metadata`, for keys returned by a listing; `null` for anything else. */
  parseMetadata(key: string): { namespace: string; name: string; hash: string } | null {
    return parseHashed(METADATA, key);
  },

  /** A segment of a package's release records (lib/core/segments.ts); `hash` is the sha256 (hex) of its JSON. */
  segment(namespace: string, name: string, hash: string): string {
    return `${SEGMENTS}${namespace}/${name}/sha256/${hash}.json`;
  },

  /** Prefix of every segment (for garbage collection). */
  segments(): string {
    return SEGMENTS;
  },

  /** The inverse of `segment`, for keys returned by a listing; `null` for anything else. */
  parseSegment(key: string): { namespace: string; name: string; hash: string } | null {
    return parseHashed(SEGMENTS, key);
  },

  /**
   * The chart record of a blob of media type `helm` (lib/core/chart.ts): it describes the blob's stored bytes, and
   * is written by whoever wrote them (a push) or read them (the index, once, for older releases).
   */
  chart(namespace: string, name: string, digest: string): string {
    return `${CHARTS}${namespace}/${name}/sha256/${digest}.json`;
  },

  /** Prefix of every chart record (for garbage collection). */
  charts(): string {
    return CHARTS;
  },

  /** The inverse of `chart`, for keys returned by a listing; `null` for anything else. */
  parseChart(key: string): { namespace: string; name: string; digest: string } | null {
    const ref = parseHashed(CHARTS, key);
    return ref && { namespace: ref.namespace, name: ref.name, digest: ref.hash };
  },

  changes(): string {
    return CHANGES;
  },

  /** Where a listing of change entries written at `time` or later starts (exclusive, as S3's `StartAfter`). */
  changesAfter(time: number): string {
    return `${CHANGES}${String(Math.max(0, Math.floor(time))).padStart(TIME_DIGITS, '0')}`;
  },

  change(time: number, instance: string, seq: number, namespace: string, name: string): string {
    const stamp = String(Math.max(0, Math.floor(time))).padStart(TIME_DIGITS, '0');
    return `${CHANGES}${stamp}+${instance}+${seq.toString(36)}+${namespace}+${name}`;
  },

  /** The inverse of `change`; `null` for anything else. */
  parseChange(key: string): ChangeRef | null {
    if (!key.startsWith(CHANGES)) return null;
    const parts = key.slice(CHANGES.length).split('+');
    if (parts.length !== 5 || !/^\d{13}$/.test(parts[0] as string) || parts.some((p) => !p)) return null;
    const [time, instance, , namespace, name] = parts as [string, string, string, string, string];
    return { key, time: Number(time), instance, namespace, name };
  },

  /** The marker a compaction leaves before it deletes the change entries timed before `time` (epoch ms). */
  compacted(time: number): string {
    return `${keys.changesAfter(time)}+compacted`;
  },

  /** The inverse of `compacted`: the time of the marker; `null` for anything else. */
  parseCompacted(key: string): number | null {
    const match = /^changes\/(\d{13})\+compacted$/.exec(key);
    return match ? Number(match[1]) : null;
  },

  snapshot(): string {
    return 'catalog/snapshot.json';
  },
};

/** `<prefix><ns>/<name>/sha256/<64 hex>.json` to its parts; `null` for anything else. */
function parseHashed(prefix: string, key: string): { namespace: string; name: string; hash: string } | null {
  if (!key.startsWith(prefix)) return null;
  const parts = key.slice(prefix.length).split('/');
  const file = /^([0-9a-f]{64})\.json$/.exec(parts[3] ?? '');
  if (parts.length !== 4 || parts[2] !== 'sha256' || !parts[0] || !parts[1] || !file) return null;
  return { namespace: parts[0], name: parts[1], hash: file[1] as string };
}
