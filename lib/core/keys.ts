import { randomBytes } from 'node:crypto';

/**
 * The one place that builds storage keys. Every segment has been validated (names.ts, release.ts, digest check)
 * before it gets here, so keys only contain `[A-Za-z0-9._+-]` and `/`.
 *
 *   packages/<ns>/<name>.json                          package document: releases, channels, visibility (mutable, CAS)
 *   manifests/<ns>/<name>/<release>/<mt>/<id>.json      manifest document: one push of one release x media type (immutable)
 *   blobs/<ns>/<name>/sha256/<digest>                   blob bytes, gzip as pushed (immutable, content-addressed)
 *   health/<random>                                     one instance's health probe (written, read, deleted)
 *
 * Package documents live under their own prefix so that listing packages never walks blobs or manifests.
 */
const PACKAGES = 'packages/';
const PACKAGE_DOC_SUFFIX = '.json';
const BLOBS = 'blobs/';

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

  manifest(namespace: string, name: string, release: string, mediaType: string, id: string): string {
    return `manifests/${namespace}/${name}/${release}/${mediaType}/${id}.json`;
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
    if (parts.length !== 4 || parts[2] !== 'sha256' || !parts[0] || !parts[1] || !/^[0-9a-f]{64}$/.test(parts[3] ?? '')) {
      return null;
    }
    return { namespace: parts[0], name: parts[1], digest: parts[3] as string };
  },

  /** A key of this instance's own for `Registry.health()`, random so that instances never probe the same key. */
  healthProbe(): string {
    return `health/${randomBytes(8).toString('hex')}`;
  },
};
