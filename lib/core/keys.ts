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
const PACKAGE_DOC_SUFFIX = '.json';
const CHANGES = 'changes/';
const TIME_DIGITS = 13;
const blobs = addressed('blobs/', '');
const metadataObjects = addressed('metadata/', '.json');
const segments = addressed('segments/', '.json');
const charts = addressed('charts/', '.json');

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

  /** A blob's bytes; `hash` is the blob's digest (the sha256 of its tar, lib/core/blob.ts). */
  blob: blobs.key,
  blobs,

  /** A key of this instance's own for `Registry.health()`, random so that instances never probe the same key. */
  healthProbe(): string {
    return `health/${randomBytes(8).toString('hex')}`;
  },

  /** A release's metadata, JSON; `hash` is the sha256 (hex) of its bytes. */
  metadata: metadataObjects.key,
  metadataObjects,

  /** A segment of a package's release records (lib/core/segments.ts); `hash` is the sha256 (hex) of its JSON. */
  segment: segments.key,
  segments,

  /**
   * The chart record of a blob of media type `helm` (lib/core/chart.ts), `hash` being the blob's digest: it
   * describes the blob's stored bytes, and is written by whoever wrote them (a push) or read them (the index, once,
   * for older releases).
   */
  chart: charts.key,
  charts,

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

/**
 * One kind of content-addressed object of a package, `<prefix><ns>/<name>/sha256/<hash><suffix>`: the key of one, the
 * prefix to list them, and the inverse of the key.
 */
export interface AddressedKind {
  /** `hash`: 64 hex digits, the object's content address. */
  key: (namespace: string, name: string, hash: string) => string;
  /** Prefix of every object of the kind, or of one package's (for garbage collection). */
  prefix: (namespace?: string, name?: string) => string;
  /** The inverse of `key`, for keys returned by a listing; `null` for anything else. */
  parse: (key: string) => { namespace: string; name: string; hash: string } | null;
}

function addressed(prefix: string, suffix: '' | '.json'): AddressedKind {
  const file = suffix === '' ? /^([0-9a-f]{64})$/ : /^([0-9a-f]{64})\.json$/;
  return {
    key: (namespace, name, hash) => `${prefix}${namespace}/${name}/sha256/${hash}${suffix}`,
    prefix: (namespace, name) =>
      namespace === undefined || name === undefined ? prefix : `${prefix}${namespace}/${name}/sha256/`,
    parse: (key) => {
      if (!key.startsWith(prefix)) return null;
      const parts = key.slice(prefix.length).split('/');
      const hash = file.exec(parts[3] ?? '')?.[1];
      if (parts.length !== 4 || parts[2] !== 'sha256' || !parts[0] || !parts[1] || !hash) return null;
      return { namespace: parts[0], name: parts[1], hash };
    },
  };
}
