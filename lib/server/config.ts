/**
 * The standalone server's configuration: one table gives every setting's name, environment variable, flag, type,
 * default and help text. `--help`, the README table and the parser all read it, so they cannot drift apart.
 *
 * Values are turned from strings into typed values here and refused with a message that names the variable (or
 * flag) and the accepted values; `createApprRouter` then validates the router options it is given once more.
 */
import { parseArgs } from 'node:util';
import { LOG_LEVELS, type LogLevel } from '../ops/pino.js';
import { DEFAULT_MAX_PUSH_SIZE, DEFAULT_PREFIX } from '../http/options.js';
import { MAX_TIMER_MS } from '../options/schema.js';

/** How a setting's text is read: each kind accepts exactly what its `accepts` text says. */
export type SettingKind =
  'string' | 'port' | 'bytes' | 'bytesOrZero' | 'count' | 'hops' | 'ms' | 'boolean' | 'visibility' | 'url' | 'level';

export interface Setting {
  /** Key in `ServerConfig`. */
  readonly name: keyof ServerConfig;
  readonly env: string;
  readonly flag: string;
  readonly kind: SettingKind;
  /** The default as text (what `--help` prints), or undefined for "unset". */
  readonly default: string | undefined;
  readonly help: string;
  /** An empty value is a value (`APPR_PREFIX=` mounts at the root), not "unset". */
  readonly emptyAllowed?: boolean;
  /**
   * The router option it sets (`OptionError.option`: `prefix`, `cache.maxBytes`...), so that an option the router
   * refuses is reported under the setting's variable and flag.
   */
  readonly option?: string;
}

export interface ServerConfig {
  host: string;
  port: number;
  prefix: string;
  storage: string;
  users?: string;
  secret?: string;
  publicUrl?: string;
  /** Reverse proxies in front of the server whose X-Forwarded-For entries are trusted; 0: none (the header is ignored). */
  trustProxy: number;
  maxPushSize?: number;
  maxUnpackedSize?: number;
  maxPackageBytes?: number;
  defaultVisibility?: 'public' | 'private';
  cors?: boolean;
  errorEnvelope?: boolean;
  discovery?: boolean;
  cacheBytes?: number;
  blobCacheBytes?: number;
  blobCacheMaxSize?: number;
  pollMs?: number;
  storageTimeoutMs?: number;
  helm?: boolean;
  maxPushBytesInFlight?: number;
  metrics: boolean;
  auditLog?: string;
  logLevel: LogLevel;
  shutdownTimeoutMs: number;
  requestTimeoutMs: number;
  headersTimeoutMs: number;
}

/**
 * Every setting of `koa-appr serve`. A setting without a default is left to the library's own default (given in
 * the help text), so the server and an embedding host behave the same.
 */
export const SETTINGS: readonly Setting[] = [
  { name: 'host', env: 'HOST', flag: 'host', kind: 'string', default: '127.0.0.1', help: 'listen address' },
  { name: 'port', env: 'PORT', flag: 'port', kind: 'port', default: '5000', help: 'listen port (0 picks a free one)' },
  {
    name: 'prefix',
    option: 'prefix',
    env: 'APPR_PREFIX',
    flag: 'prefix',
    kind: 'string',
    default: DEFAULT_PREFIX,
    emptyAllowed: true,
    help: 'mount point of the API (empty for none)',
  },
  {
    name: 'storage',
    env: 'APPR_STORAGE',
    flag: 'storage',
    kind: 'string',
    default: './data',
    help: 'a directory for the filesystem store, or s3://bucket/prefix (needs @aws-sdk/client-s3 and the AWS_* variables)',
  },
  {
    name: 'users',
    env: 'APPR_USERS',
    flag: 'users',
    kind: 'string',
    default: undefined,
    help: 'a user file (`koa-appr users add <user>`): turns on the built-in user store; unset, the registry is open to everyone',
  },
  {
    name: 'secret',
    env: 'APPR_SECRET',
    flag: 'secret',
    kind: 'string',
    default: undefined,
    help: 'signs login tokens (overrides the user file\'s "secret"; prefer the variable: a flag shows in `ps`)',
  },
  {
    name: 'publicUrl',
    option: 'publicUrl',
    env: 'APPR_PUBLIC_URL',
    flag: 'public-url',
    kind: 'url',
    default: undefined,
    help: 'the URL of the API as clients reach it, prefix included (behind a proxy): discovery uses it instead of Host',
  },
  {
    name: 'trustProxy',
    env: 'APPR_TRUST_PROXY',
    flag: 'trust-proxy',
    kind: 'hops',
    default: '0',
    help:
      'how many reverse proxies in front of the server add to X-Forwarded-For: the client address (the limit on ' +
      'failed credential checks per address, the request log) is the entry that many from the right, and ' +
      'discovery without a public URL follows Forwarded/X-Forwarded-*; 0: those headers are ignored. Only when ' +
      'every client comes through exactly that many proxies: a client that reaches the server otherwise chooses ' +
      'its own address',
  },
  {
    name: 'maxPushSize',
    option: 'maxPushSize',
    env: 'APPR_MAX_PUSH_SIZE',
    flag: 'max-push-size',
    kind: 'bytes',
    default: undefined,
    help: `largest tarball a push may carry, in bytes (library default ${DEFAULT_MAX_PUSH_SIZE})`,
  },
  {
    name: 'maxUnpackedSize',
    option: 'maxUnpackedSize',
    env: 'APPR_MAX_UNPACKED_SIZE',
    flag: 'max-unpacked-size',
    kind: 'bytes',
    default: undefined,
    help: `largest size a pushed tarball may inflate to, in bytes (library default ${1024 ** 3})`,
  },
  {
    name: 'maxPackageBytes',
    option: 'maxPackageBytes',
    env: 'APPR_MAX_PACKAGE_BYTES',
    flag: 'max-package-bytes',
    kind: 'bytes',
    default: undefined,
    help: `largest package document (releases, metadata, channels), in bytes (library default ${8 * 1024 * 1024})`,
  },
  {
    name: 'defaultVisibility',
    option: 'defaultVisibility',
    env: 'APPR_DEFAULT_VISIBILITY',
    flag: 'default-visibility',
    kind: 'visibility',
    default: undefined,
    help: "visibility of new packages whose push does not say (default: the user file's, else public)",
  },
  {
    name: 'cors',
    option: 'cors',
    env: 'APPR_CORS',
    flag: 'cors',
    kind: 'boolean',
    default: undefined,
    help: 'send CORS headers and answer preflights (library default true)',
  },
  {
    name: 'errorEnvelope',
    option: 'errorEnvelope',
    env: 'APPR_ERROR_ENVELOPE',
    flag: 'error-envelope',
    kind: 'boolean',
    default: undefined,
    help: 'wrap errors as {"error": {...}} like Quay (library default false)',
  },
  {
    name: 'discovery',
    option: 'discovery',
    env: 'APPR_DISCOVERY',
    flag: 'discovery',
    kind: 'boolean',
    default: undefined,
    help: 'serve /.well-known/app-registry-uri.json at the root (library default true)',
  },
  {
    name: 'cacheBytes',
    option: 'cache.maxBytes',
    env: 'APPR_CACHE_BYTES',
    flag: 'cache-bytes',
    kind: 'bytes',
    default: undefined,
    help: `memory for parsed package documents, in bytes (library default ${64 * 1024 * 1024})`,
  },
  {
    name: 'blobCacheBytes',
    option: 'cache.blobMaxBytes',
    env: 'APPR_BLOB_CACHE_BYTES',
    flag: 'blob-cache-bytes',
    kind: 'bytesOrZero',
    default: undefined,
    help: `memory for small blobs served from memory, in bytes; 0: no blob cache (library default ${64 * 1024 * 1024})`,
  },
  {
    name: 'blobCacheMaxSize',
    option: 'cache.blobMaxSize',
    env: 'APPR_BLOB_CACHE_MAX_SIZE',
    flag: 'blob-cache-max-size',
    kind: 'bytesOrZero',
    default: undefined,
    help: `the largest blob kept in memory, in bytes; larger ones are streamed (library default ${256 * 1024})`,
  },
  {
    name: 'pollMs',
    option: 'coherence.pollMs',
    env: 'APPR_POLL_MS',
    flag: 'poll-ms',
    kind: 'ms',
    default: undefined,
    help: "how often the change feed is polled for other instances' writes, in ms; 0: never (library default 250)",
  },
  {
    name: 'storageTimeoutMs',
    option: 'storageTimeoutMs',
    env: 'APPR_STORAGE_TIMEOUT_MS',
    flag: 'storage-timeout-ms',
    kind: 'ms',
    default: undefined,
    help: 'deadline of every storage operation, after which the client gets 503, in ms; 0: none (library default 5000)',
  },
  {
    name: 'helm',
    option: 'helm',
    env: 'APPR_HELM',
    flag: 'helm',
    kind: 'boolean',
    default: undefined,
    help: 'serve Helm chart repositories and the ChartMuseum API under {prefix}/helm (library default true)',
  },
  {
    name: 'maxPushBytesInFlight',
    option: 'maxPushBytesInFlight',
    env: 'APPR_MAX_PUSH_BYTES_IN_FLIGHT',
    flag: 'max-push-bytes-in-flight',
    kind: 'bytes',
    default: undefined,
    help: `push body bytes in flight per process (Helm chart uploads included) beyond which a push gets 503 too-busy (library default ${1024 ** 3})`,
  },
  {
    name: 'metrics',
    env: 'APPR_METRICS',
    flag: 'metrics',
    kind: 'boolean',
    default: 'true',
    help: 'count requests, storage calls, caches and bytes, and serve them at /metrics (Prometheus text format)',
  },
  {
    name: 'auditLog',
    env: 'APPR_AUDIT_LOG',
    flag: 'audit-log',
    kind: 'string',
    default: undefined,
    help: 'write one JSON line per change (push, delete, purge, channels, visibility, login) to this file, or - for stdout; unset: none',
  },
  {
    name: 'logLevel',
    env: 'APPR_LOG_LEVEL',
    flag: 'log-level',
    kind: 'level',
    default: 'info',
    help: 'level of the JSON log on stdout (one line per request at info)',
  },
  {
    name: 'shutdownTimeoutMs',
    env: 'APPR_SHUTDOWN_TIMEOUT_MS',
    flag: 'shutdown-timeout-ms',
    kind: 'ms',
    default: '10000',
    help: 'on SIGTERM/SIGINT, how long requests in flight may take to finish before their connections are closed, in ms',
  },
  {
    name: 'requestTimeoutMs',
    env: 'APPR_REQUEST_TIMEOUT_MS',
    flag: 'request-timeout-ms',
    kind: 'ms',
    default: '300000',
    help:
      'how long a client may take to send a whole request, push body included, before it gets 408, in ms; ' +
      "0: no limit, the head limit still applies (Node's requestTimeout)",
  },
  {
    name: 'headersTimeoutMs',
    env: 'APPR_HEADERS_TIMEOUT_MS',
    flag: 'headers-timeout-ms',
    kind: 'ms',
    default: '60000',
    help:
      "how long a client may take to send a request's head before it gets 408, in ms, at most the request " +
      "timeout; 0: no limit of its own, the request limit still bounds the head (Node's headersTimeout)",
  },
];

/** What each kind accepts, for help and error messages. */
export const ACCEPTS: Record<SettingKind, string> = {
  string: 'any text',
  port: 'an integer from 0 to 65535',
  bytes: 'a positive whole number of bytes, digits only (e.g. 33554432)',
  bytesOrZero: 'a whole number of bytes, 0 or more, digits only (e.g. 0 or 67108864)',
  count: 'a positive whole number',
  hops: 'a whole number of proxies, 0 or more, digits only (0: none)',
  ms: `a whole number of milliseconds from 0 to ${MAX_TIMER_MS} (about 24.8 days)`,
  boolean: 'true or false (also 1/0, yes/no, on/off)',
  visibility: 'public or private',
  url: 'an absolute http:// or https:// URL without query, fragment or credentials',
  level: LOG_LEVELS.join(', '),
};

/** A bad setting: the message names the variable or flag, the value and what is accepted. */
export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

/** The message of an error of the library without its `koa-appr: ` (the server's messages say it once). */
export function bareMessage(err: unknown): string {
  return String((err as Error | null)?.message ?? err).replace(/^koa-appr: /, '');
}

const TRUE = new Set(['true', '1', 'yes', 'on']);
const FALSE = new Set(['false', '0', 'no', 'off']);

function convert(kind: SettingKind, text: string): string | number | boolean | undefined {
  const trimmed = text.trim();
  switch (kind) {
    case 'string':
      return text;
    case 'port': {
      if (!/^\d{1,5}$/.test(trimmed)) return undefined;
      const port = Number(trimmed);
      return port <= 65535 ? port : undefined;
    }
    case 'bytes':
    case 'bytesOrZero':
    case 'count':
    case 'hops':
    case 'ms': {
      if (!/^\d{1,16}$/.test(trimmed)) return undefined;
      const value = Number(trimmed);
      if (!Number.isSafeInteger(value)) return undefined;
      // A longer timer fires at once (Node's TimeoutOverflowWarning), and Node's HTTP parser keeps only 32 bits of
      // requestTimeout and headersTimeout: 2^32 + 300 would cut every request after 300 ms.
      if (kind === 'ms') return value <= MAX_TIMER_MS ? value : undefined;
      return kind === 'bytesOrZero' || kind === 'hops' || value > 0 ? value : undefined;
    }
    case 'boolean': {
      const lower = trimmed.toLowerCase();
      if (TRUE.has(lower)) return true;
      if (FALSE.has(lower)) return false;
      return undefined;
    }
    case 'visibility':
      return trimmed === 'public' || trimmed === 'private' ? trimmed : undefined;
    case 'level':
      return (LOG_LEVELS as readonly string[]).includes(trimmed) ? trimmed : undefined;
    case 'url': {
      if (!URL.canParse(trimmed)) return undefined;
      const url = new URL(trimmed);
      const plain = !url.search && !url.hash && !url.username && !url.password;
      return (url.protocol === 'http:' || url.protocol === 'https:') && plain ? trimmed : undefined;
    }
  }
}

export interface ParsedCommandLine {
  config: ServerConfig;
  help: boolean;
}

/**
 * The configuration from flags (`--max-push-size 1000` or `--max-push-size=1000`) over environment variables
 * over defaults. An empty environment variable counts as unset (except `APPR_PREFIX`). Throws `ConfigError` for an unknown flag, a
 * flag without a value or with an empty one (but `--prefix=`), a value its kind does not accept, or a head timeout
 * longer than the request timeout.
 */
export function parseServerConfig(argv: readonly string[], env: NodeJS.ProcessEnv = process.env): ParsedCommandLine {
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({
      args: [...argv],
      strict: true,
      allowPositionals: false,
      options: {
        help: { type: 'boolean', short: 'h' },
        ...Object.fromEntries(SETTINGS.map((s) => [s.flag, { type: 'string' as const }])),
      },
    }));
  } catch (err) {
    throw new ConfigError(`${(err as Error).message} (see koa-appr serve --help)`);
  }
  const config: Record<string, unknown> = {};
  for (const setting of SETTINGS) {
    const fromFlag = values[setting.flag];
    const fromEnv = env[setting.env];
    let text: string | undefined;
    let source: string;
    if (typeof fromFlag === 'string') {
      // An empty variable is unset, but an empty flag is a mistake (`--storage=` would be an empty path and
      // `--users=` an open registry): refused rather than guessed at.
      if (fromFlag === '' && !setting.emptyAllowed) {
        throw new ConfigError(
          `--${setting.flag}="" is not valid: ${setting.env} (--${setting.flag}) must not be empty ` +
            '(leave the flag out for the variable or the default)',
        );
      }
      text = fromFlag;
      source = `--${setting.flag}`;
    } else if (fromEnv !== undefined && (fromEnv !== '' || setting.emptyAllowed)) {
      text = fromEnv;
      source = setting.env;
    } else {
      text = setting.default;
      source = `the default of ${setting.env}`;
    }
    if (text === undefined) continue;
    const value = convert(setting.kind, text);
    if (value === undefined) {
      throw new ConfigError(
        `${source}=${JSON.stringify(text)} is not valid: ${setting.env} (--${setting.flag}) ` +
          `must be ${ACCEPTS[setting.kind]}`,
      );
    }
    config[setting.name] = value;
  }
  const { requestTimeoutMs, headersTimeoutMs } = config as { requestTimeoutMs: number; headersTimeoutMs: number };
  // Node refuses a head timeout longer than the whole request's (http.createServer throws ERR_OUT_OF_RANGE).
  if (requestTimeoutMs > 0 && headersTimeoutMs > requestTimeoutMs) {
    throw new ConfigError(
      `APPR_HEADERS_TIMEOUT_MS (--headers-timeout-ms) ${headersTimeoutMs} is longer than APPR_REQUEST_TIMEOUT_MS ` +
        `(--request-timeout-ms) ${requestTimeoutMs}: the head is part of the request`,
    );
  }
  return { config: config as unknown as ServerConfig, help: values.help === true };
}

/** The `koa-appr serve --help` text, from the table. */
export function serveHelp(): string {
  const lines = [
    'Usage: koa-appr serve [--flag value]...',
    '',
    'Runs the registry over HTTP. Every setting is a flag or an environment variable (the flag wins).',
    '',
  ];
  // The value's placeholder is its kind (`<ms>`, `<port>`...); what each accepts follows on the next line.
  const usage = (s: Setting): string => `  --${s.flag} <${s.kind === 'bytesOrZero' ? 'bytes' : s.kind}>`;
  const width = Math.max(...SETTINGS.map((s) => usage(s).length)) + 1;
  for (const s of SETTINGS) {
    lines.push(`${usage(s).padEnd(width)} ${s.env}${s.default === undefined ? '' : ` (default ${s.default})`}`);
    lines.push(`      ${s.help}${s.kind === 'string' ? '' : `; ${ACCEPTS[s.kind]}`}`);
  }
  lines.push(
    '',
    'S3 storage reads the AWS variables (AWS_ENDPOINT_URL_S3, AWS_REGION, AWS_ACCESS_KEY_ID, ...,',
    'S3_IFMATCH_UNQUOTED=1 for Ceph RGW): see the README.',
  );
  return lines.join('\n');
}
