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
 *   changes/<bucket>/<time>+<instance>+<seq>+<ns>+<name>  change entry: "this package changed" (immutable, create-only)
 *   changes/<bucket>/<time>+pruned                     entries at or before <time> were deleted (feed.ts)
 *   catalog/snapshot.json                              catalog snapshot: every live package at a feed position (CAS)
 *   health/<random>                                    one instance's health probe (written, read, deleted)
 *
 * Package documents live under their own prefix so that listing packages never walks blobs. A change entry names
 * its package in its key (names never contain `+`), so reading the feed is one listing and no GET; `<time>` is
 * 13 decimal digits of epoch milliseconds, so keys sort by time. `<bucket>` is the first 9 of those digits (10
 * seconds): a literal prefix of `<time>`, so entries still sort by time across buckets, and a poll, which lists
 * only the last seconds (`changesAfter`), reads only the newest buckets. On the filesystem a bucket is a directory:
 * without them every poll read one directory holding every entry of the retention period (README, "Running several
 * instances").
 *
 * Stores written before buckets hold entries and markers without one (`changes/<time>+...`, `changes/<time>+compacted`)
 * for up to the feed's retention; `parseChange` and `markerCovers` read both forms. Such a flat key shares its
 * bucket's 9 digits, then a digit where a bucketed key has `/` (which sorts before digits): it sorts after every
 * bucketed key of its bucket and before the next bucket. lib/core/feed.ts says what that means for each listing.
 * A marker (`+pruned`) sorts after every entry of its millisecond (`+` then an instance's hex digits, below `p`);
 * the markers of earlier builds (`+compacted`, "entries before <time>") did not.
 */
const PACKAGES = 'packages/';
const PACKAGE_DOC_SUFFIX = '.json';
const CHANGES = 'changes/';
const TIME_DIGITS = 13;
/** The leading digits of `<time>` that name a change entry's bucket: 10^(13 - 9) ms = 10 s of entries each. */
const BUCKET_DIGITS = 9;
const BUCKET_MS = 10 ** (TIME_DIGITS - BUCKET_DIGITS);
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

  /**
   * Where a listing of `changes()` starts (exclusive, as S3's `StartAfter`) to return every change entry timed at
   * `time` (epoch ms) or later, and the compaction markers timed so: `changes/<bucket>/<time>`, which an entry timed
   * exactly `time` follows (`<time>+...`). Of the flat keys of older stores (see the top of this file) it returns
   * those of `time`'s bucket too, even timed earlier: a caller that needs only the later ones filters by time. On
   * the filesystem adapter, the bucket directories before `time`'s are skipped unread.
   */
  changesAfter(time: number): string {
    const stamp = timeStamp(time);
    return `${CHANGES}${stamp.slice(0, BUCKET_DIGITS)}/${stamp}`;
  },

  /** A change entry: `time` is the writer's clock (epoch ms), `seq` this instance's counter (written in base 36). */
  change(time: number, instance: string, seq: number, namespace: string, name: string): string {
    return `${keys.changesAfter(time)}+${instance}+${seq.toString(36)}+${namespace}+${name}`;
  },

  /** The inverse of `change`, and of a flat entry key of older stores; `null` for anything else. */
  parseChange(key: string): ChangeRef | null {
    const entry = changeName(key);
    if (entry === null) return null;
    const parts = entry.split('+');
    if (parts.length !== 5 || !/^\d{13}$/.test(parts[0] as string) || parts.some((p) => !p)) return null;
    const [time, instance, , namespace, name] = parts as [string, string, string, string, string];
    return { key, time: Number(time), instance, namespace, name };
  },

  /**
   * The last millisecond of the bucket of `time` (epoch ms): a compaction's marker goes no later than this in the
   * bucket of the last entry it deletes (lib/core/feed.ts `#prune`).
   */
  bucketEnd(time: number): number {
    return Math.floor(Math.max(0, time) / BUCKET_MS) * BUCKET_MS + BUCKET_MS - 1;
  },

  /** Whether a change entry's or marker's key is in a bucket (false for the flat keys of older stores). */
  isBucketed(key: string): boolean {
    return key.startsWith(CHANGES) && key.slice(CHANGES.length).includes('/');
  },

  /**
   * The marker a compaction leaves before it deletes change entries: every entry timed at or before `time` (epoch
   * ms) is deleted. In `time`'s bucket, or `flat` (`changes/<time>+pruned`: after the flat entries of older stores
   * of `time`'s bucket, lib/core/feed.ts `#prune`). It sorts after every entry timed `time`.
   */
  marker(time: number, flat = false): string {
    return `${flat ? CHANGES + timeStamp(time) : keys.changesAfter(time)}+pruned`;
  },

  /**
   * The last millisecond (epoch ms) whose entries a marker says are deleted, for `marker`'s keys and the markers of
   * earlier builds (`<time>+compacted`, bucketed or flat: "the entries before `<time>`", so `<time>` - 1); `null`
   * for anything else.
   */
  markerCovers(key: string): number | null {
    const match = /^(\d{13})\+(pruned|compacted)$/.exec(changeName(key) ?? '');
    if (match === null) return null;
    return match[2] === 'pruned' ? Number(match[1]) : Number(match[1]) - 1;
  },

  snapshot(): string {
    return 'catalog/snapshot.json';
  },
};

/** `time` (epoch ms) as the 13 zero-padded digits that start a change entry's name. */
function timeStamp(time: number): string {
  return String(Math.max(0, Math.floor(time))).padStart(TIME_DIGITS, '0');
}

/**
 * What follows `changes/` and the bucket in a change entry's or marker's key (`<time>+...`): of a bucketed key, when
 * its bucket is the first digits of that name; of a flat key (older stores), all of it. `null` for anything else.
 */
function changeName(key: string): string | null {
  if (!key.startsWith(CHANGES)) return null;
  const rest = key.slice(CHANGES.length);
  const slash = rest.indexOf('/');
  if (slash === -1) return rest;
  const name = rest.slice(slash + 1);
  const bucket = rest.slice(0, slash);
  return slash === BUCKET_DIGITS && /^\d+$/.test(bucket) && name.startsWith(bucket) && !name.includes('/')
    ? name
    : null;
}

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
