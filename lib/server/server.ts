/**
 * The standalone server (`koa-appr serve`, `npm start`): a Koa app with the registry router, over the filesystem
 * or S3 storage, with the built-in user store when a user file is given.
 */
import { Server as NetServer, type Socket } from 'node:net';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import { createServer, STATUS_CODES } from 'node:http';
import { open } from 'node:fs/promises';
import Koa from 'koa';
import { UserStore, type StoreUser } from '../auth/user-store.js';
import { ApprError, ERRORS, type ErrorCode } from '../errors.js';
import { keys } from '../core/keys.js';
import type { Registry } from '../core/registry.js';
import { closeAfterResponse, LINGER_MIN_BYTES, LINGER_MS } from '../http/linger.js';
import { createApprRouter, registryOf } from '../http/router.js';
import type { Logger } from '../ops/logger.js';
import { serverOps } from '../ops/server.js';
import type { ApprRouterOptions } from '../http/options.js';
import { FsStorage } from '../storage/fs.js';
import type { StorageAdapter } from '../storage/types.js';
import { bareMessage, ConfigError, SETTINGS, type ServerConfig } from './config.js';

export interface RunningServer {
  readonly server: Server;
  /** The URL of the API (listen address, actual port, prefix). */
  readonly url: string;
  readonly storage: StorageAdapter;
  readonly registry: Registry;
  /**
   * Stop accepting connections at once (the port is free when this is called), let requests in flight finish for
   * up to `shutdownTimeoutMs`, then close the remaining connections and the storage. Called again (or while it
   * runs), the same stop.
   */
  close(): Promise<void>;
}

/** `s3://bucket/prefix` or a directory. The S3 adapter (and its SDK) is loaded only for an s3:// URL. */
export async function storageFromSpec(spec: string): Promise<StorageAdapter> {
  if (!spec.startsWith('s3://')) {
    try {
      return new FsStorage({ root: spec });
    } catch (err) {
      throw new ConfigError(`APPR_STORAGE: ${bareMessage(err)}`);
    }
  }
  let s3: typeof import('../s3.js');
  try {
    s3 = await import('../s3.js');
  } catch (err) {
    if ((err as { code?: string }).code === 'ERR_MODULE_NOT_FOUND' && String(err).includes('@aws-sdk/client-s3')) {
      throw new ConfigError(
        'APPR_STORAGE is an s3:// URL but @aws-sdk/client-s3 is not installed ' +
          '(npm install @aws-sdk/client-s3: it is an optional peer dependency)',
      );
    }
    throw err;
  }
  try {
    return s3.s3StorageFromUrl(spec);
  } catch (err) {
    throw new ConfigError(`APPR_STORAGE: ${(err as Error).message}`);
  }
}

/**
 * Behind trusted proxies, `ctx.ip` without the port some proxies write after the address (`203.0.113.9:51234`,
 * `[2001:db8::7]:443`, as Azure's do): the failure limit counts an address, where a key per port would let a client
 * take a new one with each connection. An entry in any other shape is left as it is.
 */
const addressWithoutPort: Koa.Middleware = (ctx, next) => {
  const ip = ctx.ip;
  const bare = /^\[([0-9A-Fa-f:.]+)\](?::\d{1,5})?$/.exec(ip) ?? /^(\d{1,3}(?:\.\d{1,3}){3}):\d{1,5}$/.exec(ip);
  if (bare) ctx.request.ip = bare[1]!;
  return next();
};

/**
 * Build, listen, and resolve once the port is bound. `log` gets the start-up lines (the URL first: tests and
 * scripts read it). Throws `ConfigError` for settings that only turn out bad here (a user file, a router option).
 */
export async function startServer(
  config: ServerConfig,
  log: (line: string) => void = console.log,
): Promise<RunningServer> {
  if (config.auditLog && config.auditLog !== '-') await checkAuditLog(config.auditLog);
  const storage = await storageFromSpec(config.storage);
  try {
    const ops = serverOps({
      metrics: config.metrics,
      logLevel: config.logLevel,
      ...(config.auditLog ? { auditLog: config.auditLog } : {}),
    });
    const access = await accessFromConfig(config, ops.logger);
    // Behind N trusted proxies, ctx.ip (the failure limit's key, the request log's `ip`) is the N-th entry of
    // X-Forwarded-For from the right, the address the outermost of them saw: Koa keeps the last `maxIpsCount`
    // entries and takes the first of those. Entries further left are the client's own text.
    const app = new Koa(config.trustProxy > 0 ? { proxy: true, maxIpsCount: config.trustProxy } : {});
    const handlers = trackHandlers();
    app.use(handlers.middleware);
    // Koa's own error events (a stream that failed after its headers went out, say) go to the log, not stderr.
    app.on('error', (err: unknown) => ops.logger.error({ err }, 'koa error'));
    let router;
    try {
      router = createApprRouter({
        ...routerOptions(config, storage, access.options),
        ...ops.registryOptions,
        onError: ops.onError,
      });
    } catch (err) {
      await ops.close();
      throw new ConfigError(settingOf(err) + bareMessage(err));
    }
    if (config.trustProxy > 0) app.use(addressWithoutPort);
    // Request log, /metrics, /healthz and /readyz: outside the prefix, before the registry.
    for (const middleware of ops.middleware(registryOf(router))) app.use(middleware);
    app.use(router.routes()).use(router.allowedMethods());

    const server = await listen(app, config);
    const connections = trackConnections(server);
    handleParserErrors(server, connections, config.errorEnvelope ?? false);
    const address = server.address();
    const port = typeof address === 'object' && address ? address.port : config.port;
    const hostForUrl = config.host.includes(':') ? `[${config.host}]` : config.host;
    const url = `http://${hostForUrl}:${port}${config.prefix.replace(/\/+$/, '')}`;
    log(`koa-appr listening on ${url} (storage: ${storage.name} ${config.storage})`);
    for (const line of access.log) log(line);
    if (config.trustProxy > 0) {
      log(
        `koa-appr: client addresses from X-Forwarded-For, behind ${config.trustProxy} trusted ` +
          `${config.trustProxy === 1 ? 'proxy' : 'proxies'} (APPR_TRUST_PROXY): the server must not be reachable ` +
          'other than through them',
      );
    }
    const probe = warnIfStorageUnready(registryOf(router), config.storage, ops.logger);
    let closing: Promise<void> | undefined;
    return {
      server,
      url,
      storage,
      registry: registryOf(router),
      // One stop, whoever asks for it and however often: each caller waits for the same one.
      close: () =>
        (closing ??= (async () => {
          // The start-up probe writes and deletes a key: let it finish before the store closes (and a test removes
          // its directory).
          await probe;
          await shutdown(server, connections, config.shutdownTimeoutMs);
          // The requests whose connections were cut are still unwinding: a push removes its spool file as it does.
          await handlers.settled(HANDLERS_SETTLE_MS);
          // After the last request: the change entries of its pushes are written before the store closes.
          await registryOf(router).close();
          await storage.close?.();
          await ops.close();
        })()),
    };
  } catch (err) {
    await storage.close?.();
    throw err;
  }
}

/**
 * The audit log file opens for appending (and exists afterwards, as the log would create it). Once the server runs,
 * a file that cannot be written is only logged and every change goes unaudited: a path that cannot work is a bad
 * setting, refused before the server listens.
 */
async function checkAuditLog(path: string): Promise<void> {
  try {
    await (await open(path, 'a', 0o640)).close();
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
    throw new ConfigError(`APPR_AUDIT_LOG=${path}: cannot be opened for appending (${code})`);
  }
}

/**
 * `APPR_PREFIX (--prefix): ` when the router refused the option that setting gives (an `OptionError` names the
 * option, not where the server took its value from), else nothing.
 */
function settingOf(err: unknown): string {
  const option = (err as { option?: unknown } | null)?.option;
  const setting = typeof option === 'string' ? SETTINGS.find((s) => s.option === option) : undefined;
  return setting ? `${setting.env} (--${setting.flag}): ` : '';
}

/**
 * A start-up probe of the store (the readiness check), so that a misconfigured store (a bucket that does not
 * exist, a directory that cannot be written) shows in the log at once instead of as 503s to the first clients.
 * It does not stop the server: the store may come up later, and `/readyz` says when. Runs after the port is bound
 * (it may take up to 5 s against an unreachable store); resolves when done, never rejects.
 */
function warnIfStorageUnready(
  registry: Pick<Registry, 'health' | 'storage'>,
  spec: string,
  logger: Logger,
): Promise<void> {
  return registry.health().then(
    async (report) => {
      if (report.storage.reachable && report.storage.writable) {
        await warnIfConditionalWritesFail(registry.storage, spec, logger);
        return;
      }
      const problem = report.storage.reachable ? 'is not writable' : 'is not reachable';
      logger.warn(
        { storage: spec, storageHealth: report.storage },
        `koa-appr: storage ${spec} ${problem}: requests that need it are answered 503 and /readyz reports it until it is`,
      );
    },
    () => undefined,
  );
}

/**
 * Every change of a package is a write conditional on the ETag its read returned (`If-Match`). A store that
 * refuses that (Ceph RGW compares `If-Match` with its unquoted ETag, so it refuses every quoted one unless
 * `S3_IFMATCH_UNQUOTED=1`) takes a package's first push and then answers every change of it 503 once the
 * compare-and-swap gives up, logged as contention. A probe key is created, replaced on its own ETag and deleted, so
 * the start-up log says what is wrong instead. Never rejects; a store that fails here otherwise is the health
 * check's to report.
 */
async function warnIfConditionalWritesFail(storage: StorageAdapter, spec: string, logger: Logger): Promise<void> {
  const key = keys.healthProbe();
  try {
    const etag = await storage.put(key, Buffer.from('1'), { ifNoneMatch: '*' });
    if (etag === null) return;
    if ((await storage.put(key, Buffer.from('2'), { ifMatch: etag })) !== null) return;
    const hint = spec.startsWith('s3://')
      ? ' On Ceph RGW set S3_IFMATCH_UNQUOTED=1; check that any other S3 server supports If-Match on PutObject.'
      : '';
    logger.warn(
      { storage: spec },
      `koa-appr: storage ${spec} refused a write conditional on the ETag it had just given (If-Match): every ` +
        `change of a package after its first push will be answered 503.${hint}`,
    );
  } catch {
    // An outage: the health check above reports it.
  } finally {
    await storage.delete(key).catch(() => undefined);
  }
}

function routerOptions(
  config: ServerConfig,
  storage: StorageAdapter,
  access: Partial<ApprRouterOptions<StoreUser>>,
): ApprRouterOptions<StoreUser> {
  const cache = {
    ...(config.cacheBytes === undefined ? {} : { maxBytes: config.cacheBytes }),
    ...(config.blobCacheBytes === undefined ? {} : { blobMaxBytes: config.blobCacheBytes }),
    ...(config.blobCacheMaxSize === undefined ? {} : { blobMaxSize: config.blobCacheMaxSize }),
  };
  // Only the settings that were given are passed: the library's defaults stay the only defaults.
  const given: Partial<ApprRouterOptions<StoreUser>> = {
    ...(config.maxPushSize === undefined ? {} : { maxPushSize: config.maxPushSize }),
    ...(config.maxUnpackedSize === undefined ? {} : { maxUnpackedSize: config.maxUnpackedSize }),
    ...(config.maxPackageBytes === undefined ? {} : { maxPackageBytes: config.maxPackageBytes }),
    ...(config.cors === undefined ? {} : { cors: config.cors }),
    ...(config.errorEnvelope === undefined ? {} : { errorEnvelope: config.errorEnvelope }),
    ...(config.discovery === undefined ? {} : { discovery: config.discovery }),
    ...(config.publicUrl === undefined ? {} : { publicUrl: config.publicUrl }),
    ...(config.storageTimeoutMs === undefined ? {} : { storageTimeoutMs: config.storageTimeoutMs }),
    ...(config.helm === undefined ? {} : { helm: config.helm }),
    ...(config.maxPushBytesInFlight === undefined ? {} : { maxPushBytesInFlight: config.maxPushBytesInFlight }),
    ...(Object.keys(cache).length ? { cache } : {}),
    ...(config.pollMs === undefined ? {} : { coherence: { pollMs: config.pollMs } }),
  };
  const defaultVisibility = config.defaultVisibility ?? access.defaultVisibility;
  return {
    ...given,
    ...access,
    ...(defaultVisibility ? { defaultVisibility } : {}),
    storage,
    prefix: config.prefix,
  };
}

/** The built-in user store when a user file is given; otherwise no hooks at all (open, as the reference). */
async function accessFromConfig(
  config: ServerConfig,
  logger: Logger,
): Promise<{ options: Partial<ApprRouterOptions<StoreUser>>; log: string[] }> {
  if (!config.users) {
    return {
      options: {},
      log: [
        'koa-appr: WARNING: no APPR_USERS file: the registry is OPEN, anyone can push, pull and delete. ' +
          'Create one with `koa-appr users add <user>` and set APPR_USERS.',
      ],
    };
  }
  let users: UserStore;
  try {
    users = await UserStore.fromFile(config.users, {
      ...(config.secret ? { secret: config.secret } : {}),
      log: (message: string) => logger.warn({}, message),
    });
  } catch (err) {
    // The secret came from APPR_SECRET, not the file; and the library's message would print it.
    if (config.secret && (err as { option?: unknown }).option === 'secret') {
      throw new ConfigError(
        'APPR_SECRET (--secret) must be at least 16 characters: it signs login tokens (its value is not shown)',
      );
    }
    throw new ConfigError(`APPR_USERS=${config.users}: ${bareMessage(err)}`);
  }
  const log = [
    `koa-appr: users from ${config.users} (${users.usernames.length} users; anonymous read of public ` +
      `packages ${users.anonymousRead ? 'on' : 'off'}; new packages ` +
      `${config.defaultVisibility ?? users.defaultVisibility ?? 'public'} by default)`,
  ];
  if (users.ephemeralSecret) {
    log.push(
      'koa-appr: WARNING: the user file has no "secret" and APPR_SECRET is unset: login tokens will stop ' +
        'working when the server restarts',
    );
  }
  return {
    options: {
      auth: users.hooks(),
      ...(users.defaultVisibility ? { defaultVisibility: users.defaultVisibility } : {}),
    },
    log,
  };
}

/**
 * How often Node checks its connections for `requestTimeout` and `headersTimeout` (`connectionsCheckingInterval`,
 * fixed when the server is created; Node's default 30 s): half the shorter timeout, at most 30 s, so that a client
 * too slow gets its 408 at most half a timeout late.
 */
export function connectionsCheckingIntervalMs(config: Pick<ServerConfig, 'requestTimeoutMs' | 'headersTimeoutMs'>) {
  const timeouts = [config.requestTimeoutMs, config.headersTimeoutMs].filter((ms) => ms > 0);
  return Math.max(1, Math.min(30_000, Math.ceil(Math.min(...timeouts, 60_000) / 2)));
}

/** Errors of `listen` that a different HOST or PORT fixes: exit code 2, as for any bad setting. */
const LISTEN_SETTING_ERRORS = new Set(['EADDRINUSE', 'EACCES', 'EADDRNOTAVAIL', 'ENOTFOUND', 'EAI_AGAIN']);

function listen(app: Koa, config: ServerConfig): Promise<Server> {
  const handle = app.callback();
  return new Promise((resolve, reject) => {
    const server = createServer(
      {
        requestTimeout: config.requestTimeoutMs,
        headersTimeout: config.headersTimeoutMs,
        connectionsCheckingInterval: connectionsCheckingIntervalMs(config),
      },
      (req, res) => void handle(req, res),
    );
    server.listen(config.port, config.host);
    const onError = (err: NodeJS.ErrnoException): void => {
      reject(
        LISTEN_SETTING_ERRORS.has(err.code ?? '')
          ? new ConfigError(`cannot listen on ${config.host}:${config.port} (HOST/PORT): ${err.code}`)
          : err,
      );
    };
    server.once('error', onError);
    server.once('listening', () => {
      server.off('error', onError);
      resolve(server);
    });
  });
}

/**
 * How long a stop waits, once every connection is closed, for the requests still running to unwind (a push cut off
 * at `APPR_SHUTDOWN_TIMEOUT_MS` removes its spool file), in ms. Their storage deadline bounds them too.
 */
const HANDLERS_SETTLE_MS = 5000;

/**
 * The requests whose middleware has not returned yet. A connection closes before its request's handler has seen
 * it go: a push cut off at shutdown still has its spool file to remove, and the process must not exit first.
 */
function trackHandlers(): { middleware: Koa.Middleware; settled(ms: number): Promise<void> } {
  let running = 0;
  let idle: (() => void) | undefined;
  return {
    middleware: async (_ctx, next) => {
      running += 1;
      try {
        await next();
      } finally {
        running -= 1;
        if (running === 0) idle?.();
      }
    },
    async settled(ms) {
      if (running === 0) return;
      let timer: NodeJS.Timeout | undefined;
      await new Promise<void>((resolve) => {
        idle = resolve;
        timer = setTimeout(resolve, ms);
      });
      clearTimeout(timer);
    },
  };
}

/** The server's connections and their responses in flight. */
interface Connections {
  /** Whether a response on this connection has started (its status line is on the wire). */
  responding(socket: Socket): boolean;
  /**
   * Whether a request on this connection was read whole and its answer is not out yet (a push being stored, a pull
   * being sent): bytes the parser then refuses are not that request's. The last such answer is then the
   * connection's last.
   */
  answerPending(socket: Socket): boolean;
  /** Shutdown: end idle connections now, and every other one after its last response. */
  drain(): void;
}

/**
 * Which connections have a request in flight, so that a shutdown can end the others at once (Node's
 * `closeIdleConnections` leaves alone a connection that has not sent a request yet) and end each busy one as soon
 * as its response is complete (`Connection: close` on that response).
 */
function trackConnections(server: Server): Connections {
  const busy = new Map<Socket, Set<ServerResponse>>();
  let draining = false;
  const responsesOf = (socket: Socket): Set<ServerResponse> => {
    let responses = busy.get(socket);
    if (!responses) {
      responses = new Set();
      busy.set(socket, responses);
      socket.once('close', () => busy.delete(socket));
    }
    return responses;
  };
  server.on('connection', responsesOf);
  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    const socket = req.socket;
    const responses = responsesOf(socket);
    responses.add(res);
    if (draining) res.shouldKeepAlive = false;
    res.once('close', () => {
      responses.delete(res);
      if (draining && responses.size === 0) endNow(socket);
    });
  });
  return {
    responding(socket) {
      for (const res of busy.get(socket) ?? []) if (res.headersSent) return true;
      return false;
    },
    answerPending(socket) {
      // Pipelined requests are answered in order: the last one read whole closes the connection once its answer is
      // out, whether that answer has not started, is queued behind an earlier one, or is being sent (a pull).
      const last = [...(busy.get(socket) ?? [])].filter((res) => res.req.complete && !res.writableFinished).at(-1);
      if (last === undefined) return false;
      // The lingering close takes the socket's reads from the parser at once: Node, which reports a parser error
      // again for every piece that reaches the parser, reports no more on this connection.
      closeAfterResponse(last, { ms: LINGER_MS, bytes: LINGER_MIN_BYTES });
      return true;
    },
    drain() {
      draining = true;
      for (const [socket, responses] of busy) {
        if (responses.size === 0) endNow(socket);
        for (const res of responses) if (!res.headersSent) res.shouldKeepAlive = false;
      }
    },
  };
}

/**
 * End a connection while stopping: what was written goes out first, then the socket is destroyed. The HTTP server
 * allows half-open connections, so a plain `end()` would leave a client that ignores it holding the stop for the
 * whole grace period.
 */
function endNow(socket: Socket): void {
  socket.end(() => socket.destroy());
}

/**
 * Stop listening at once, end idle connections, let requests in flight finish for up to `graceMs`, then close what
 * is left. The port is freed with net.Server's close, not http.Server's: the latter also stops Node's connection
 * check, and a client too slow (a stalled push) would then hold the stop for the whole grace period instead of
 * getting its 408 at `APPR_REQUEST_TIMEOUT_MS`. Once every connection is gone, the check is stopped on its own
 * (`stopConnectionsCheck`): a second close (http.Server's) would emit a second `close` to the host's listeners.
 */
async function shutdown(server: Server, connections: Connections, graceMs: number): Promise<void> {
  const closed = new Promise<void>((resolve) => NetServer.prototype.close.call(server, () => resolve()));
  connections.drain();
  const timer = setTimeout(() => server.closeAllConnections(), graceMs);
  timer.unref();
  await closed;
  clearTimeout(timer);
  stopConnectionsCheck(server);
}

/**
 * Stop Node's connection check of a closed server, as http.Server's close does first. Node offers no call for that
 * alone, so its interval is found by its symbol's description (`kConnectionsCheckingInterval` in Node's
 * lib/_http_server.js since 18.0, read the same way by Node's own tests). The timer is unref'ed, but it holds the
 * server and the app behind it: a Node without that symbol gets http.Server's close instead, and a second `close`.
 */
function stopConnectionsCheck(server: Server): void {
  const symbol = Object.getOwnPropertySymbols(server).find(
    (s) => s.description === 'http.server.connectionsCheckingInterval',
  );
  const check = symbol === undefined ? undefined : (server as unknown as Record<symbol, unknown>)[symbol];
  if (check === undefined) server.close(() => undefined);
  else clearInterval(check as NodeJS.Timeout);
}

/**
 * How Node's HTTP parser errors are answered: the error table's code (and so its status), a message that says what
 * was wrong in words we choose (never the client's bytes). Node's own `clientError` default would answer the same
 * statuses with a bare status line; the codes it distinguishes are kept (431, 408, 413), the rest are 400.
 */
const PARSER_ERRORS: Record<string, { code: ErrorCode; message: string }> = {
  HPE_HEADER_OVERFLOW: { code: 'header-too-large', message: 'Request header fields too large' },
  HPE_CHUNK_EXTENSIONS_OVERFLOW: { code: 'payload-too-large', message: 'Chunk extensions too large' },
  ERR_HTTP_REQUEST_TIMEOUT: { code: 'request-timeout', message: 'The request was not received in time' },
  HPE_UNEXPECTED_CONTENT_LENGTH: {
    code: 'invalid-usage',
    message: 'Content-Length together with Transfer-Encoding, or more than one Content-Length',
  },
  HPE_INVALID_CONTENT_LENGTH: { code: 'invalid-usage', message: 'Invalid Content-Length' },
  HPE_INVALID_TRANSFER_ENCODING: { code: 'invalid-usage', message: 'Invalid Transfer-Encoding' },
  HPE_INVALID_CHUNK_SIZE: { code: 'invalid-usage', message: 'Invalid chunk size in a chunked body' },
  HPE_INVALID_METHOD: { code: 'invalid-usage', message: 'Invalid method' },
  HPE_INVALID_URL: { code: 'invalid-usage', message: 'Invalid request target' },
  HPE_INVALID_VERSION: { code: 'invalid-usage', message: 'Invalid HTTP version' },
  HPE_INVALID_HEADER_TOKEN: { code: 'invalid-usage', message: 'Invalid header' },
  HPE_LF_EXPECTED: { code: 'invalid-usage', message: 'Malformed request line or header' },
  HPE_CR_EXPECTED: { code: 'invalid-usage', message: 'Malformed request line or header' },
};

/** One error response as raw bytes, for a socket that has no `ServerResponse`. */
function rawErrorResponse(
  code: ErrorCode,
  message: string,
  details: Record<string, unknown>,
  envelope: boolean,
): string {
  const status = ERRORS[code].status;
  const error = new ApprError(code, message, details).toJSON();
  const body = JSON.stringify(envelope ? { error } : error);
  return (
    `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Error'}\r\n` +
    'Content-Type: application/json\r\n' +
    'X-Content-Type-Options: nosniff\r\n' +
    `Content-Length: ${Buffer.byteLength(body)}\r\n` +
    'Connection: close\r\n\r\n' +
    body
  );
}

/**
 * Answer Node's HTTP parser errors (`clientError`) and unsupported `Expect` values (`checkExpectation`, 417) in the
 * JSON error format instead of Node's bare status lines (issue 12 item 8). A response is written only when no
 * response of this connection has started (as Node's default does), so a half-sent response is never corrupted.
 * Nor when a request read whole is still to be answered (bytes after a push's body, or a Content-Length shorter
 * than the body): those bytes are not that request's, so its own answer goes out, and the connection closes after
 * it. Node's default answers them with its 400 then, and a push stored meanwhile was reported to its client as
 * refused.
 */
function handleParserErrors(server: Server, connections: Connections, envelope: boolean): void {
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => {
    if (err.code === 'ECONNRESET' || !socket.writable) {
      socket.destroy();
      return;
    }
    if (connections.answerPending(socket)) return;
    if (connections.responding(socket)) {
      socket.destroy();
      return;
    }
    const known = PARSER_ERRORS[err.code ?? ''] ?? {
      code: 'invalid-usage' as const,
      message: 'Malformed HTTP request',
    };
    socket.end(rawErrorResponse(known.code, known.message, err.code ? { parserError: err.code } : {}, envelope));
    socket.once('finish', () => socket.destroy());
  });
  server.on('checkExpectation', (_req: IncomingMessage, res: ServerResponse) => {
    const error = new ApprError('expectation-failed', 'Only "Expect: 100-continue" is supported').toJSON();
    const body = JSON.stringify(envelope ? { error } : error);
    res.writeHead(ERRORS['expectation-failed'].status, {
      'Content-Type': 'application/json',
      'X-Content-Type-Options': 'nosniff',
      'Content-Length': Buffer.byteLength(body),
      Connection: 'close',
    });
    res.end(body);
  });
}
