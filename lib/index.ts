export { createApprRouter, apprDiscovery, API_VERSION, WELL_KNOWN_PATH } from './http/router.js';
export type { ApprRouterOptions } from './http/options.js';
export { DEFAULT_PREFIX, DEFAULT_MAX_PUSH_SIZE } from './http/options.js';
export { pushBodyLimit } from './http/body-readers.js';
export { OptionError, APPR_ERR_OPTION } from './options/validate.js';
export type { ErrorResponse } from './http/options.js';
export { Registry } from './core/registry.js';
export type { BlobStager, StagedBlob } from './core/blob.js';
export type {
  RegistryOptions,
  PushInput,
  Manifest,
  PackageSummary,
  Channel,
  Visibility,
  VisibleFilter,
  PackageRef,
  BlobContent,
  JsonBody,
} from './core/registry.js';
export type { CoherenceOptions } from './core/feed.js';
export type { DocumentCacheOptions, CasOptions } from './core/documents.js';
export type { AuthHooks, Permission, Credentials, AccessTarget } from './auth/hooks.js';
export type { Access } from './http/access.js';
export { parseAuthorization } from './http/access.js';
export { UserStore, checkUserFile, readUserFile, writeUserFile, newSecret } from './auth/user-store.js';
export type { UserFile, UserRecord, Role, StoreUser, UserStoreOptions } from './auth/user-store.js';
export { hashPassword, verifyPassword, isPasswordHash } from './auth/password.js';
export type { HashOptions } from './auth/password.js';
export { ApprError, StorageUnavailableError, ERRORS, isApprError } from './errors.js';
export type { ErrorCode } from './errors.js';
export type {
  StorageAdapter,
  WriteCondition,
  GetResult,
  StreamResult,
  ListPage,
  ListOptions,
} from './storage/types.js';
export { MemoryStorage } from './storage/memory.js';
export { FsStorage } from './storage/fs.js';
export { HelmRepository, HELM_MEDIA_TYPE } from './helm/index.js';
export type { HelmOptions, ChartVersion, ChartRef, SerializedIndex } from './helm/index.js';
export { readChartArchive, parseChartYaml, isHelmVersion } from './helm/chart.js';
export type { ChartMetadata, ChartDependency, ChartArchive } from './helm/chart.js';
export { ApprMetrics, metricsEndpoint } from './ops/metrics.js';
export type { MetricsOptions, MetricsEndpointOptions } from './ops/metrics.js';
export type { MetricsHooks, StorageOperation, StorageOutcome, CacheKind } from './ops/metrics-hooks.js';
export { InstrumentedStorage } from './storage/instrumented.js';
export { defaultActorName } from './ops/audit.js';
export { jsonLinesAudit } from './ops/audit-log.js';
export type { JsonLinesAudit } from './ops/audit-log.js';
export type {
  AuditEvent,
  AuditHook,
  Actor,
  ChangeContext,
  PushEvent,
  DeleteEvent,
  PurgeEvent,
  ChannelAddEvent,
  ChannelRemoveEvent,
  ChannelDeleteEvent,
  VisibilityEvent,
  LoginEvent,
  GcEvent,
} from './ops/audit.js';
export type { Logger } from './ops/logger.js';
export { requestLog } from './ops/request-log.js';
export type { RequestLogOptions } from './ops/request-log.js';
export { healthz, readyz } from './ops/probes.js';
export type { ProbeOptions } from './ops/probes.js';
export type { HealthReport, StorageHealth, HealthOptions } from './core/health.js';
export type { GcOptions, GcReport } from './core/gc.js';
export { gcCommand, parseGcArgs, parseDuration, GC_USAGE } from './ops/gc-command.js';
