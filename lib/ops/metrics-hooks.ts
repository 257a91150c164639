/*
 * The metrics contract: the calls the core and the HTTP layer make to record what they do. It sits below every
 * layer that reports (lib/core, lib/storage, lib/http) and depends on nothing; `ApprMetrics` (lib/ops/metrics.ts)
 * implements it with prom-client.
 */

/** The storage adapter's methods that make requests (lib/storage/types.ts; all but `close`), optional ones included. */
export const STORAGE_OPERATIONS = [
  'get',
  'put',
  'putStream',
  'putFile',
  'getStream',
  'head',
  'delete',
  'deleteMany',
  'list',
] as const;

/** What a storage request was, for `koa_appr_storage_*`: the adapter method. */
export type StorageOperation = (typeof STORAGE_OPERATIONS)[number];

/**
 * How a storage request ended: `ok`; `absent` (null for a missing key, false from delete); `not_modified` (a
 * conditional GET that matched); `condition_failed` (a conditional write or delete that lost); `error` (thrown:
 * an outage, a timeout).
 */
export type StorageOutcome = 'ok' | 'absent' | 'not_modified' | 'condition_failed' | 'error';

/** Which cache a hit or miss is about. `catalog` is for the in-memory package catalog. */
export type CacheKind = 'documents' | 'blobs' | 'catalog';

/**
 * The calls the library makes to record what it does. `ApprMetrics` implements them with prom-client; a host may
 * pass any object of this shape (to feed another metrics system). Each call is one counter increment and at most
 * one histogram observation: they run on every request.
 */
export interface MetricsHooks {
  /** One HTTP request answered by a route of the registry. `route` is the route's name (`pull`, `push`...). */
  httpRequest(route: string, method: string, status: number, seconds: number): void;
  storageRequest(operation: StorageOperation, outcome: StorageOutcome, seconds: number): void;
  cache(kind: CacheKind, hit: boolean): void;
  /** One compare-and-swap write of a package document: `won` false when another writer changed it first. */
  casAttempt(won: boolean): void;
  /** A change that still lost the race after every attempt (answered 503). */
  casGiveUp(): void;
  /** Tarball bytes of a successful push. */
  pushed(bytes: number): void;
  /** Response body bytes of a pull or blob download (its Content-Length). */
  pulled(bytes: number): void;
  /** How far this instance's view of the change feed is behind storage, in seconds (set by the catalog). */
  changeFeedLag(seconds: number): void;
}
