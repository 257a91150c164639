import type { Logger } from './logger.js';

/**
 * Who made a change, as the audit trail names them: the `auth.actorName(caller)` hook's answer, else the caller's
 * `name`, `username` or `id` (first present), else the caller itself when it is a string; `null` for an anonymous
 * caller and for changes made from code without an HTTP request.
 */
export type Actor = string | null;

interface Base {
  /** When the change was stored (RFC 3339 UTC). */
  time: string;
  actor: Actor;
}

/** Fields every package event carries: `package` is `ns/name`. */
interface PackageEvent extends Base {
  package: string;
}

export interface PushEvent extends PackageEvent {
  type: 'push';
  release: string;
  mediaType: string;
  /** The release's digest: sha256 hex of the uncompressed tar (as manifests show it). */
  digest: string;
  /** Bytes of the stored tarball. */
  size: number;
  /** The push replaced an existing release x media type (`force`). */
  forced: boolean;
  /** The push created the package (it did not exist, or had been deleted). */
  created: boolean;
}

export interface DeleteEvent extends PackageEvent {
  type: 'delete';
  release: string;
  mediaType: string;
  /** The package's last release went: the package no longer exists. */
  packageDeleted: boolean;
}

/**
 * A blob purged (`DELETE .../blobs/sha256/{digest}`, `Registry.purgeBlob`): the content withdrawn, and every release
 * x media type of the package whose manifest named it, deleted with it.
 */
export interface PurgeEvent extends PackageEvent {
  type: 'purge';
  /** The purged blob's digest: sha256 hex of the uncompressed tar (the manifests' `content.digest`). */
  digest: string;
  /** The releases x media types the purge deleted (empty when none named the blob any more). */
  releases: { release: string; mediaType: string }[];
  /**
   * The blob itself was stored and is deleted (false when only releases named it: its bytes were gone already; or
   * when storage failed before the blob was known to be gone: the purge then answered 503, and a retry deletes it,
   * or answers 404 when the failed attempt had deleted it).
   */
  blobDeleted: boolean;
  /** The purge deleted the package's last release: the package no longer exists. */
  packageDeleted: boolean;
}

export interface ChannelAddEvent extends PackageEvent {
  type: 'channel-add';
  channel: string;
  release: string;
}

export interface ChannelRemoveEvent extends PackageEvent {
  type: 'channel-remove';
  channel: string;
  release: string;
}

export interface ChannelDeleteEvent extends PackageEvent {
  type: 'channel-delete';
  channel: string;
}

export interface VisibilityEvent extends PackageEvent {
  type: 'visibility';
  visibility: 'public' | 'private';
  /** The value before; equal to `visibility` when nothing changed (the request was still a successful call). */
  previous: 'public' | 'private';
}

/** `POST /api/v1/users/login`. `actor` is the user name sent (never the password), whether it exists or not. */
export interface LoginEvent extends Base {
  type: 'login';
  outcome: 'success' | 'failure';
}

/** Garbage collection removed something (one event per gc run that removed anything; see `Registry.gc`). */
export interface GcEvent extends Base {
  type: 'gc';
  /** How many of each kind of object the run removed (`GcReport`, lib/core/gc.ts). */
  blobs: number;
  metadata: number;
  charts: number;
  segments: number;
  tombstones: number;
  /** Change entries removed (compaction of the change feed). */
  changes: number;
}

export type AuditEvent =
  | PushEvent
  | DeleteEvent
  | PurgeEvent
  | ChannelAddEvent
  | ChannelRemoveEvent
  | ChannelDeleteEvent
  | VisibilityEvent
  | LoginEvent
  | GcEvent;

/**
 * Called once after each change is stored (never for a refused or failed one), and for each login attempt. It may
 * be async: the answer to the request waits for it. A hook that throws or rejects is logged (`logger.error`) and
 * the change stands: it is already stored, so the audit trail may miss it but never invents one.
 */
export type AuditHook = (event: AuditEvent) => void | Promise<void>;

/** Change context the HTTP layer hands to the core: who is asking. */
export interface ChangeContext {
  actor?: Actor;
}

/**
 * Send an event to the hook without ever failing the change it reports (which is already stored): a throw or a
 * rejection goes to the logger.
 */
export async function emitAudit(
  hook: AuditHook | undefined,
  logger: Logger | undefined,
  event: AuditEvent,
): Promise<void> {
  if (!hook) return;
  try {
    await hook(event);
  } catch (err) {
    logger?.error({ err, event: event.type }, 'koa-appr: the audit hook failed');
  }
}

/**
 * The default actor name of a caller (see `Actor`): hosts whose callers look different pass `auth.actorName`.
 */
export function defaultActorName(caller: unknown): Actor {
  if (caller === null || caller === undefined) return null;
  if (typeof caller === 'string') return caller;
  if (typeof caller === 'object') {
    const { name, username, id } = caller as { name?: unknown; username?: unknown; id?: unknown };
    const value = name ?? username ?? id;
    if (typeof value === 'string' || typeof value === 'number' || typeof value === 'bigint') return String(value);
  }
  return null;
}
