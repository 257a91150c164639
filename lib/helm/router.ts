/**
 * Helm's two HTTP faces over the registry's packages, mounted by `createApprRouter` (option `helm`):
 *
 *   GET  {prefix}/helm/{ns}/index.yaml                     chart repository index (`helm repo add`)
 *   GET  {prefix}/helm/{ns}/charts/{name}-{version}.tgz    a chart (`helm install`, `helm pull`)
 *   GET  {prefix}/helm/api/{ns}/charts                     ChartMuseum API: all charts
 *   POST {prefix}/helm/api/{ns}/charts                     ChartMuseum API: upload (`helm cm-push`, curl)
 *   GET  {prefix}/helm/api/{ns}/charts/{name}[/{version}]  ChartMuseum API: one chart, one version (and HEAD)
 *   DELETE {prefix}/helm/api/{ns}/charts/{name}/{version}  ChartMuseum API: delete
 *
 * Every route starts with the AccessControl guard, as the appr routes do. Errors under `{prefix}/helm` are
 * ChartMuseum's `{"error": "..."}` with the status of the registry's error table.
 */
import { once } from 'node:events';
import { createReadStream, createWriteStream, type WriteStream } from 'node:fs';
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type Router from '@koa/router';
import type { Context, Middleware, Next } from 'koa';
import { koaBody } from 'koa-body';
import { ApprError, echoed, isApprError, StorageUnavailableError } from '../errors.js';
import { HELM_SPOOL_PREFIX, sweepSpools } from '../core/blob.js';
import { checkName } from '../core/names.js';
import { checkRelease, isExactRelease } from '../core/release.js';
import { GUARD, type Access, type AccessControl, type CallerState } from '../http/access.js';
import {
  consumed,
  HostSetupError,
  isObject,
  keptRawBodies,
  refuseTransferCodings,
  warnHostParser,
  type HostRequest,
} from '../http/body-parser.js';
import { tooBusy, type PushBudget } from '../http/body-readers.js';
import { boundedErrorBody, MAX_ECHO } from '../http/headers.js';
import { publicMessage, responder, sendBlob } from '../http/respond.js';
import { publicBase, type ParamsOf } from '../http/router.js';
import type { ResolvedOptions } from '../http/options.js';
import { closeAfterAnswer, lingerBounds } from '../http/linger.js';
import { httpMetricsRecorder } from '../ops/http.js';
import { readChartArchive, type ChartMetadata } from './chart.js';
import { chartFileName, HELM_MEDIA_TYPE, HelmRepository, type ChartVersion, type HelmOptions } from './index.js';

const callerState = (ctx: Context) => ctx.state.appr as CallerState;

/** A push's metadata may be at most this large (as on the appr push route). */
const MAX_METADATA_BYTES = 64 * 1024;
/** A chart upload's form: at most this many files, text fields, and bytes of text fields in all. */
const FORM_MAX_FILES = 4;
const FORM_MAX_FIELDS = 16;
const FORM_FIELDS_BYTES = 64 * 1024;

/** Room for the multipart framing and a provenance file next to the chart. */
const MULTIPART_ALLOWANCE = 256 * 1024;

/**
 * Add the Helm routes to the registry's router (before its fallbacks). Returns their paths, for the router's 405
 * and preflight answers. `options` and `state`: see `HelmRepository` (`state` is the registry's catalog version,
 * when it has one).
 */
export function mountHelmRoutes(
  router: Router,
  opts: ResolvedOptions,
  access: AccessControl<unknown>,
  budget: PushBudget,
  options: HelmOptions = {},
  state?: () => string | number | undefined,
): string[] {
  const repo = new HelmRepository(opts.registry, options, state);
  const base = `${opts.prefix}/helm`;
  const api = '/api/:namespace/charts';
  const deps: Deps = { opts, access, repo, budget };
  // Counted in the HTTP metrics by route name (`helm-index`, `helm-chart`, `helm-api-*`), as the appr routes are.
  const respond = responder({
    ...opts,
    onResponseError: chartMuseumErrors(opts.onResponseError),
    record: httpMetricsRecorder(opts.registry.metrics),
  });
  /**
   * A route under `{prefix}/helm`, guarded for `kind` of access (through `wrap`, when given), whose handler gets its
   * path's parameters typed from the pattern (lib/http/router.ts).
   */
  const route = <const Path extends string>(
    method: 'get' | 'post' | 'delete',
    name: string,
    path: Path,
    kind: Access,
    handler: Handler<ParamsOf<Path>>,
    wrap: (guard: Middleware) => Middleware = (guard) => guard,
  ) => {
    const guard = wrap(access.guard(kind, name));
    // @koa/router only runs the handler when the pattern matched, so every parameter the pattern names is there.
    router[method](name, `${base}${path}`, respond, guard, (ctx) => handler(ctx, ctx.params as ParamsOf<Path>, deps));
    return `${base}${path}`;
  };
  // ChartMuseum's API first: a namespace called `api` must not capture its paths.
  return [
    ...new Set([
      route('get', 'helm-api-list', api, 'list', listCharts),
      route('post', 'helm-api-upload', api, 'list', upload),
      route('get', 'helm-api-chart', `${api}/:package`, 'read', showChart),
      route('get', 'helm-api-version', `${api}/:package/:version`, 'read', showVersion),
      route('delete', 'helm-api-delete', `${api}/:package/:version`, 'write', deleteVersion),
      route('get', 'helm-index', '/:namespace/index.yaml', 'list', index),
      route('get', 'helm-chart', CHART_FILE, 'read', download, chartFileGuard),
    ]),
  ];
}

type Handler<Params> = (ctx: Context, params: Params, deps: Deps) => Promise<void>;

const CHART_FILE = '/:namespace/charts/:file';

interface Deps {
  opts: ResolvedOptions;
  access: AccessControl<unknown>;
  repo: HelmRepository;
  /** The router's bytes of push bodies in flight, appr pushes included (`maxPushBytesInFlight`). */
  budget: PushBudget;
}

/**
 * ChartMuseum's error body, `{"error": "<message>"}` (which `helm cm-push` prints), unless the host's own
 * `onResponseError` replaces it; status and headers (`WWW-Authenticate`, `Allow`) are the registry's. A 5xx says
 * only the error table's message (a 501, its own), as everywhere (`publicMessage`).
 */
function chartMuseumErrors(host: ResolvedOptions['onResponseError']): NonNullable<ResolvedOptions['onResponseError']> {
  return async (error, ctx) =>
    (host ? await host(error, ctx) : undefined) ?? {
      status: error.status,
      // Bounded as the registry's own error bodies are (a client's value in it, lib/http/headers.ts); one string
      // carries what theirs split between message and details, so twice as long.
      body: { error: boundedErrorBody(publicMessage(error), 2 * MAX_ECHO) },
    };
}

// ---- repository ---------------------------------------------------------------------------------------------------

/**
 * `{prefix}/helm` as clients reach it: ChartMuseum's context path. From `publicUrl` when the host set one, else
 * the request's path (a parent router's mount included) and, behind a trusted proxy, `X-Forwarded-Prefix`.
 */
function contextPath(ctx: Context, opts: ResolvedOptions, namespace: string): string {
  const own = `${opts.prefix}/helm/${namespace}/index.yaml`;
  const mount = ctx.path.endsWith(own) ? ctx.path.slice(0, -own.length) : '';
  return `${new URL(publicBase(ctx, opts, mount)).pathname.replace(/\/+$/, '')}/helm`;
}

async function index(ctx: Context, params: { namespace: string }, { repo, opts }: Deps): Promise<void> {
  const namespace = checkName('namespace', params.namespace);
  const built = await repo.index(namespace, callerState(ctx).visible, contextPath(ctx, opts, namespace));
  if (built.charts === 0) await requireNamespaceRead(ctx, opts, namespace, 'helm-index');
  ctx.status = 200;
  ctx.etag = built.etag;
  // Who asks decides what is listed: caches must revalidate, per caller.
  ctx.set('Cache-Control', 'private, no-cache');
  ctx.vary('Authorization');
  if (ctx.fresh) {
    ctx.status = 304;
    return;
  }
  ctx.type = 'application/x-yaml';
  ctx.body = built.body;
}

/**
 * An index with no chart for this caller is answered 401/403 unless the caller may read the namespace itself
 * (`authorize(caller, 'read', {namespace})`): `helm repo add` of a private repository without the right
 * credentials fails loudly instead of adding an empty repository. A namespace that does not exist, or holds only
 * private charts, answers alike, so the answer tells nothing about private charts.
 */
async function requireNamespaceRead(
  ctx: Context,
  opts: ResolvedOptions,
  namespace: string,
  action: string,
): Promise<void> {
  const authorize = opts.auth.authorize;
  if (!authorize) return;
  const { caller } = callerState(ctx);
  if ((await authorize(caller, 'read', { namespace, action }, ctx)) === true) return;
  if (caller === null) {
    const realm = (opts.auth.realm ?? 'appr').replace(/["\\]/g, '');
    throw new ApprError(
      'unauthorized-access',
      `Authentication required to read the chart repository ${namespace}`,
      {},
      {
        'WWW-Authenticate': `Basic realm="${realm}", Bearer realm="${realm}"`,
      },
    );
  }
  throw new ApprError('forbidden', `You are not allowed to read the chart repository ${namespace}`, { namespace });
}

/**
 * The guard of `charts/{name}-{version}.tgz`: the package the guard checks is the chart name, which has to be
 * cut out of the file name first. Nothing else happens before the guard; a name that is no chart file name
 * at all is a 404 that says nothing about any package.
 */
function chartFileGuard(guard: Middleware): Middleware {
  const middleware = async (ctx: Context, next: Next): Promise<void> => {
    const split = chartFile((ctx.params as ParamsOf<typeof CHART_FILE>).file);
    Object.assign(ctx.params, { package: split.name, version: split.version });
    await guard(ctx, next);
  };
  Object.defineProperty(middleware, GUARD, { value: (guard as unknown as Record<symbol, unknown>)[GUARD] });
  return middleware;
}

/**
 * `{name}-{version}.tgz` to name and version. Names may contain `-` and versions may too (`1.0.0-rc-1`), so the
 * split is at the last `-` that is followed by a whole release and preceded by a valid package name:
 * `my-chart-1.0.0-rc-1.tgz` is `my-chart` at `1.0.0-rc-1`. (A chart whose name itself ends in `-<release>` and a
 * pre-release made of a release, `a-1.0.0-2.0.0`, cannot both exist unambiguously: the shorter version wins.)
 */
/** `splitChartFile`, or a 404 that says nothing about any package. */
function chartFile(file: string): { name: string; version: string } {
  const split = splitChartFile(file);
  if (!split) throw new ApprError('not-found', `${file} is not a chart file name ({name}-{version}.tgz)`);
  return split;
}

export function splitChartFile(file: string): { name: string; version: string } | null {
  if (!file.endsWith('.tgz')) return null;
  const stem = file.slice(0, -'.tgz'.length);
  for (let dash = stem.lastIndexOf('-'); dash > 0; dash = stem.lastIndexOf('-', dash - 1)) {
    const name = stem.slice(0, dash);
    const version = stem.slice(dash + 1);
    if (isExactRelease(version) && isPackageName(name)) return { name, version };
  }
  return null;
}

function isPackageName(name: string): boolean {
  try {
    checkName('package', name);
    return true;
  } catch {
    return false;
  }
}

async function download(ctx: Context, { namespace, file }: ParamsOf<typeof CHART_FILE>, { opts }: Deps): Promise<void> {
  const { name, version } = chartFile(file);
  const missing = `chart ${file} not found`;
  const manifests = await opts.registry.packageManifests(namespace, name, HELM_MEDIA_TYPE).catch(notFound(missing));
  const manifest = manifests.find((m) => m.release === version);
  if (!manifest) throw new ApprError('package-not-found', missing);
  const found = await opts.registry.blob(namespace, name, manifest.content.digest);
  sendBlob(ctx, found, found.digest, file, null);
}

// ---- ChartMuseum API ----------------------------------------------------------------------------------------------

/** `GET /api/{ns}/charts`: `{name: [versions, newest first]}`, ChartMuseum's `offset` and `limit` over names. */
async function listCharts(ctx: Context, params: { namespace: string }, { repo, opts }: Deps): Promise<void> {
  const namespace = checkName('namespace', params.namespace);
  const offset = queryInt(ctx, 'offset', 0, 0);
  const limit = queryInt(ctx, 'limit', -1, 1);
  const entries = await repo.entries(namespace, callerState(ctx).visible);
  const names = Object.keys(entries);
  if (names.length === 0) await requireNamespaceRead(ctx, opts, namespace, 'helm-api-list');
  const kept = names.slice(offset, limit === -1 ? undefined : offset + limit);
  ctx.body = Object.fromEntries(kept.map((name) => [name, entries[name]]));
}

function queryInt(ctx: Context, field: string, fallback: number, min: number): number {
  const raw = ctx.query[field];
  if (raw === undefined) return fallback;
  const value = Number(Array.isArray(raw) ? raw[0] : raw);
  if (!Number.isSafeInteger(value) || value < min) {
    throw new ApprError('invalid-usage', `${field} is not a valid ${min === 0 ? 'non-negative' : 'positive'} integer`);
  }
  return value;
}

async function versionsOf({ namespace, package: name }: ChartParams, repo: HelmRepository): Promise<ChartVersion[]> {
  const versions = await repo.chartVersions(namespace, name).catch(notFound('chart not found'));
  if (versions.length === 0)
    throw new ApprError('package-not-found', 'chart not found', { package: `${namespace}/${name}` });
  return versions;
}

type ChartParams = { namespace: string; package: string };

async function showChart(ctx: Context, params: ChartParams, { repo }: Deps): Promise<void> {
  ctx.body = await versionsOf(params, repo);
}

/** `latest` is the newest version that is not a pre-release, as ChartMuseum (Helm's `IndexFile.Get`) resolves it. */
async function showVersion(ctx: Context, params: ChartParams & { version: string }, { repo }: Deps): Promise<void> {
  const { package: name, version } = params;
  const versions = await versionsOf(params, repo);
  const found =
    version === 'latest'
      ? versions.find((v) => !v.version.split('+')[0]!.includes('-'))
      : versions.find((v) => v.version === version);
  if (!found) throw new ApprError('package-not-found', `no chart version found for ${name}-${version}`);
  ctx.body = found;
}

async function deleteVersion(ctx: Context, params: ChartParams & { version: string }, { opts }: Deps): Promise<void> {
  const { namespace, package: name, version } = params;
  await opts.registry
    .deleteRelease(namespace, name, version, HELM_MEDIA_TYPE)
    .catch(notFound(`chart ${chartFileName(name, version)} not found`));
  ctx.body = { deleted: true };
}

/**
 * `POST /api/{ns}/charts`: the chart as multipart field `chart` (what `helm cm-push` sends) or as the raw body
 * (`curl --data-binary @chart.tgz`); `?force` (present, any value) replaces an existing version. It is an appr
 * push of media type `helm`: package = chart name, release = chart version, metadata = the Chart.yaml fields.
 *
 * The chart's name is inside the body, so only the caller is checked before the body is read (the guard:
 * `anonymous: false` answers 401 at once); the push permission on the package (`write`, or `create` for a new
 * chart) is decided by the same guard as soon as Chart.yaml is read, before anything is stored. Only then does the
 * upload count in `maxPushBytesInFlight` (503 `too-busy` beyond it, nothing stored).
 */
async function upload(ctx: Context, params: { namespace: string }, { opts, access, budget }: Deps): Promise<void> {
  const namespace = checkName('namespace', params.namespace);
  const force = Object.hasOwn(ctx.query, 'force');
  await withUpload(ctx, opts.maxPushSize, opts.registry.pushTmpDir, async (path, size) => {
    const archive = await readChartArchive(createReadStream(path));
    if (!archive.chart) throw new ApprError('invalid-usage', `not a Helm chart: ${archive.problem}`);
    const chart = archive.chart;
    if (!isPackageName(chart.name)) {
      throw new ApprError(
        'invalid-usage',
        `chart name "${echoed(chart.name)}" cannot be a package name: ` +
          'it must match [A-Za-z0-9][A-Za-z0-9._-]{0,127}',
      );
    }
    // The permission first, as on an appr push: a caller who may not push learns nothing more about the chart.
    Object.assign(ctx.params, { package: chart.name });
    await access.guard('push', 'helm-api-upload')(ctx, async () => undefined);
    const { createOnly } = callerState(ctx);
    const release = asRelease(chart);
    const metadata = chart;
    if (Buffer.byteLength(JSON.stringify(metadata)) > MAX_METADATA_BYTES) {
      throw new ApprError(
        'invalid-parameters',
        `Chart.yaml's index fields are larger than ${MAX_METADATA_BYTES} bytes`,
      );
    }
    // Counted in `maxPushBytesInFlight` with the appr pushes from here on, for the bytes it spooled: only once its
    // caller may push it, so that callers who may not cannot keep those who may from pushing. Before that, what it
    // holds is bounded by `maxPushSize` alone (README "maxPushBytesInFlight").
    if (!budget.take(size)) throw tooBusy();
    try {
      // Streamed from the spool file: the push checks the tar again and captures Chart.yaml as every helm push does.
      await opts.registry.push({
        namespace,
        name: chart.name,
        release,
        mediaType: HELM_MEDIA_TYPE,
        blob: createReadStream(path),
        metadata,
        force,
        createOnly,
      });
    } catch (err) {
      if (isApprError(err) && err.code === 'package-exists') {
        throw new ApprError(
          'package-exists',
          `chart ${chart.name} version ${release} already exists ` + '(upload with ?force to replace it)',
          err.details,
        );
      }
      throw err;
    } finally {
      budget.give(size);
    }
  });
  ctx.status = 201;
  ctx.body = { saved: true };
}

/** A chart version that Helm accepts but appr's release rule (strict SemVer 2.0) does not is refused with 422. */
function asRelease(chart: ChartMetadata): string {
  try {
    return checkRelease(chart.version, { label: 'chart version' });
  } catch (err) {
    if (!isApprError(err)) throw err;
    throw new ApprError(
      'invalid-release',
      `${err.message}. Helm accepts it, but charts are stored as appr releases, which must be strict SemVer: ` +
        'set version in Chart.yaml to MAJOR.MINOR.PATCH (for example 1.2.3, without a leading "v")',
      { version: echoed(chart.version) },
    );
  }
}

/**
 * Run `use` with the upload's chart spooled to a temporary file (at most `limit` bytes; 413 beyond), then remove
 * every temporary file of the request: nothing of the body is held in memory while it arrives. The files are in a
 * private directory of their own in `tmpDir` (the registry's `pushTmpDir`; undefined: the OS temp directory), mode
 * 0600 as a push's temp file (lib/core/blob.ts). A body refused before it is read whole is answered, then its
 * connection closed without a reset (lib/http/linger.ts). A body a host parser read before the registry is taken from
 * what the parser left (`hostChart`), never waited for.
 */
async function withUpload<T>(
  ctx: Context,
  limit: number,
  tmpDir: string | undefined,
  use: (path: string, size: number) => Promise<T>,
): Promise<T> {
  const spooled = consumed(ctx.req) ? await hostChart(ctx, limit, tmpDir) : await spoolBody(ctx, limit, tmpDir);
  try {
    if (spooled.size === 0) throw new ApprError('invalid-usage', 'The request carries no chart');
    return await use(spooled.path, spooled.size);
  } finally {
    await spooled.remove();
  }
}

/** The request's own body (no host parser read it), raw or a multipart form, spooled (see `withUpload`). */
async function spoolBody(ctx: Context, limit: number, tmpDir: string | undefined): Promise<Spooled> {
  const multipart = Boolean(ctx.is('multipart'));
  const announced = Number(ctx.get('Content-Length') || 0);
  if (announced > (multipart ? limit + MULTIPART_ALLOWANCE : limit)) {
    closeAfterAnswer(ctx, lingerBounds(limit));
    throw tooLarge(limit);
  }
  try {
    refuseTransferCodings(ctx);
    return multipart ? await spoolMultipart(ctx, limit, tmpDir) : await spoolRaw(ctx, limit, tmpDir);
  } catch (err) {
    closeAfterAnswer(ctx, lingerBounds(limit));
    throw err;
  }
}

interface Spooled {
  path: string;
  size: number;
  remove: () => Promise<void>;
}

function tooLarge(limit: number): ApprError {
  return new ApprError('payload-too-large', `The chart is larger than ${limit} bytes`, { limit });
}

/** A raw body (`curl --data-binary`), whatever its Content-Type, to a file of its own. */
async function spoolRaw(ctx: Context, limit: number, tmpDir: string | undefined): Promise<Spooled> {
  const dir = await spoolDir(tmpDir);
  const remove = () => rm(dir, { recursive: true, force: true });
  const path = join(dir, 'chart.tgz');
  const file = createWriteStream(path, { mode: 0o600 });
  // Listened to at once: a write or close that fails (ENOSPC, EIO) is emitted as an error event, and one nobody
  // listens to (a close fails after the end's callback ran) is an uncaught exception, which stops the server.
  let failed: Error | undefined;
  file.on('error', (err) => (failed ??= ownFailure(err)));
  let size = 0;
  try {
    // Not destroyed when left early: the request's socket must stay open for the answer (the caller drops the rest).
    for await (const chunk of ctx.req.iterator({ destroyOnReturn: false })) {
      size += (chunk as Buffer).length;
      if (size > limit) throw tooLarge(limit);
      if (failed !== undefined) throw failed;
      if (!file.write(chunk)) await once(file, 'drain');
    }
    // Closed, not only finished: close(2) may report a delayed write error.
    file.end();
    await once(file, 'close');
    if (failed !== undefined) throw failed;
    return { path, size, remove };
  } catch (err) {
    file.destroy();
    await remove();
    if (failed !== undefined && !isApprError(err)) throw spoolFailed(failed);
    throw err;
  }
}

/**
 * A private directory (mode 0700, `mkdtemp`'s) of its own in `tmpDir` (undefined: the OS temp directory) for an
 * upload's spool files; 503 when `tmpDir` cannot have one.
 */
async function spoolDir(tmpDir: string | undefined): Promise<string> {
  const dir = tmpDir ?? tmpdir();
  sweepSpools(dir);
  try {
    return await mkdtemp(join(dir, HELM_SPOOL_PREFIX));
  } catch (err) {
    throw spoolFailed(err);
  }
}

/**
 * A spool file's error when it is the file's own failure (ENOSPC, EIO), undefined for `ERR_STREAM_DESTROYED`: a write
 * still in flight when the file was destroyed on purpose (formidable destroys its files on a refused form, a chart
 * over `maxFileSize` among them; `spoolRaw` and `spoolMultipart` theirs on a refusal or a client gone). The answer is
 * then the refusal's (413, 400) or none (the client is gone), not a failing disk's 503 reported to `onError`.
 */
function ownFailure(err: Error): Error | undefined {
  return (err as NodeJS.ErrnoException).code === 'ERR_STREAM_DESTROYED' ? undefined : err;
}

/** The spool file of an upload cannot be created, written or closed: the server's disk failing, not the client. */
function spoolFailed(err: unknown): StorageUnavailableError {
  return new StorageUnavailableError('helm upload: cannot write the spool file of a chart', err);
}

/**
 * The `chart` field of a multipart form (what `helm cm-push` sends). formidable (through koa-body) writes each
 * file to a temporary file in the upload's spool directory (`spoolDir`), never more than `limit` bytes; all of them
 * are removed with it. A temporary file that cannot be created, written or closed is the server's disk failing (503),
 * not the form's fault.
 */
async function spoolMultipart(ctx: Context, limit: number, tmpDir: string | undefined): Promise<Spooled> {
  const dir = await spoolDir(tmpDir);
  const remove = () => rm(dir, { recursive: true, force: true });
  // formidable's files are written through streams of ours: private, as the raw body's, and their own failures told
  // apart from the form's (formidable reports both alike, or not at all when its file fails after the form ended).
  const streams: { file: WriteStream; closed: Promise<Error | undefined> }[] = [];
  const parse = koaBody({
    multipart: true,
    json: false,
    urlencoded: false,
    text: false,
    formidable: {
      uploadDir: dir,
      // formidable's VolatileFile is typed without the `filepath` it is given (in `uploadDir`).
      fileWriteStreamHandler: (part) => {
        const file = createWriteStream((part as unknown as { filepath: string }).filepath, { mode: 0o600 });
        let failed: Error | undefined;
        file.on('error', (err) => (failed ??= ownFailure(err)));
        streams.push({ file, closed: new Promise((resolve) => file.once('close', () => resolve(failed))) });
        return file;
      },
      maxFileSize: limit,
      maxTotalFileSize: limit + MULTIPART_ALLOWANCE,
      maxFiles: FORM_MAX_FILES,
      maxFields: FORM_MAX_FIELDS,
      maxFieldsSize: FORM_FIELDS_BYTES,
    },
  });
  let refused: FormidableError | undefined;
  try {
    await parse(ctx, async () => undefined);
  } catch (err) {
    refused = err as FormidableError; // koa-body rejects with formidable's error as it is
    // Answered now: stop reading the form here, not once its files are closed and removed (the rest of a body
    // sent meanwhile would be read through formidable, and the connection kept as if the form were read whole).
    closeAfterAnswer(ctx, lingerBounds(limit));
  }
  // Closed, not only finished (close(2) may report a delayed write error); those of a refused form at once.
  if (refused !== undefined) for (const { file } of streams) file.destroy();
  const failed = (await Promise.all(streams.map((stream) => stream.closed))).find((err) => err !== undefined);
  const files = (ctx.request as { files?: Record<string, unknown> }).files ?? {};
  let chart: { filepath: string; size: number };
  try {
    if (failed !== undefined) throw spoolFailed(failed);
    if (refused !== undefined) throw formRefused(refused, limit);
    chart = oneChart(files) as { filepath: string; size: number };
  } catch (err) {
    await remove();
    throw err;
  }
  return { path: chart.filepath, size: chart.size, remove };
}

/** What formidable rejects a form with: its `code` (formidable's `FormidableError.js`) and the HTTP status it gives. */
type FormidableError = Error & { code?: unknown; httpCode?: unknown };

/** formidable's codes for the form limits of `spoolMultipart` that are not the chart's size. */
const FORM_LIMITS: Record<number, string> = {
  1006: `The form's fields are larger than ${FORM_FIELDS_BYTES} bytes`, // maxFieldsSizeExceeded
  1007: `The form has more than ${FORM_MAX_FIELDS} fields`, // maxFieldsExceeded
  1015: `The form has more than ${FORM_MAX_FILES} files (a chart, and its provenance file)`, // maxFilesExceeded
};

/**
 * The answer to a form formidable refused: 413 for a chart over `limit` (or files over the form's allowance), 413
 * naming the limit for too many or too large fields or too many files (not the chart's size, which they say nothing
 * of), 400 for any other form it cannot read.
 */
function formRefused(err: FormidableError, limit: number): ApprError {
  const form = typeof err.code === 'number' ? FORM_LIMITS[err.code] : undefined;
  if (form !== undefined) return new ApprError('payload-too-large', form);
  if (err.httpCode === 413) return tooLarge(limit);
  return new ApprError('invalid-usage', 'The multipart body could not be read');
}

/** The one file of form field `chart` in formidable's `files` (a file, or a list of them): 400 for none or several. */
function oneChart(files: Record<string, unknown>): unknown {
  const charts = ([] as unknown[]).concat(files.chart ?? []);
  if (charts.length > 1) throw severalCharts();
  if (charts[0] === undefined) throw noChart();
  return charts[0];
}

function noChart(): ApprError {
  return new ApprError('invalid-usage', 'no chart found in form field "chart"');
}

/**
 * A form with more than one `chart` file: formidable lists a field's files in the order their temp files were
 * written, not the form's, so which one an upload took would be chance (ChartMuseum takes the form's first).
 */
function severalCharts(): ApprError {
  return new ApprError('invalid-usage', 'several files in form field "chart": upload one chart at a time');
}

/**
 * The chart of a request whose body a host body parser (koa-body, koa-bodyparser, @koa/bodyparser) read before the
 * registry, as the appr push route takes its values (lib/http/body-parser.ts): the request stream is over, so only
 * what the parser kept can be used, at once. The first such request of the process warns, as a push does
 * (`KOA_APPR_HOST_BODY_PARSER`).
 *
 * - A multipart form a parser kept files of (koa-body's `multipart: true`: `ctx.request.files`, formidable's temp
 *   files, `filepath`, or `path` before formidable 2): the `chart` file, read from the parser's temp file, which
 *   stays the host's to remove. None, or several: 400, as without a host parser. Over `limit`: 413. Gone, or no regular
 *   file (a directory, a FIFO): 503.
 * - Any other body: the raw bytes the parser kept, `ctx.request.rawBody` (koa-bodyparser; koa-body's
 *   `includeUnparsed`), older koa-body's `Symbol.for('unparsedBody')` or `ctx.request.body`, as a Buffer or a string
 *   of bytes (one character per byte, `encoding: 'latin1'`), spooled to a temporary file. Over `limit`: 413.
 * - Nothing kept at all (no `ctx.request.body`: a parser whose `onError` let the request go on, koa-body's
 *   `patchKoa: false`): `HostSetupError` (500, explained in the log), the server's setup and not the request's.
 * - Nothing of the bytes kept (a parsed form only), or a string decoded as UTF-8 text (the parsers' default for a
 *   urlencoded body, what `curl --data-binary` sends: a gzip archive never survives that decoding): 400
 *   `invalid-usage`, saying to send the chart as `application/gzip` (which the parsers leave unread) or to mount the
 *   registry before body parsers.
 */
async function hostChart(ctx: Context, limit: number, tmpDir: string | undefined): Promise<Spooled> {
  warnHostParser();
  const request = ctx.request as HostRequest;
  const files = request.files;
  if (ctx.is('multipart') && isObject(files)) {
    const chart = oneChart(files);
    const path = isObject(chart) ? (chart.filepath ?? chart.path) : undefined;
    if (typeof path !== 'string') throw noChart();
    // The host's temp file is gone (a clean-up job, a full disk), or is no regular file (a directory would fail
    // the read with a 500, a FIFO never end): not the client's fault, and no path is told.
    const unreadable = () => new ApprError('storage-unavailable', 'The uploaded chart could not be read');
    const found = await stat(path).catch(() => {
      throw unreadable();
    });
    if (!found.isFile()) throw unreadable();
    const { size } = found;
    if (size > limit) throw tooLarge(limit);
    return { path, size, remove: async () => undefined };
  }
  const raw = keptBytes(request);
  if (raw === 'text') {
    throw new ApprError(
      'invalid-usage',
      `The chart was decoded as text by a body parser that ran before the registry (Content-Type ` +
        `${echoed(ctx.get('Content-Type')) || 'none'}), which loses its bytes: send it with Content-Type: ` +
        'application/gzip (curl -H "Content-Type: application/gzip" --data-binary @chart.tgz), or mount the registry ' +
        'before body parsers',
    );
  }
  if (raw === undefined && request.body === undefined) throw new HostSetupError(ctx);
  if (raw === undefined) {
    throw new ApprError(
      'invalid-usage',
      'The request body was read by a body parser before the registry and not kept: send the chart with ' +
        'Content-Type: application/gzip, or mount the registry before body parsers',
    );
  }
  if (raw.length > limit) throw tooLarge(limit);
  const dir = await spoolDir(tmpDir);
  const remove = () => rm(dir, { recursive: true, force: true });
  const path = join(dir, 'chart.tgz');
  try {
    await writeFile(path, raw, { mode: 0o600 });
  } catch (err) {
    await remove();
    throw spoolFailed(err);
  }
  return { path, size: raw.length, remove };
}

/**
 * The raw body a host parser kept: bytes, `'text'` for a string that cannot be the bytes (a character past
 * U+00FF: decoded as UTF-8, where every byte that is no UTF-8 became U+FFFD), undefined when none was kept.
 */
function keptBytes(request: HostRequest): Buffer | 'text' | undefined {
  for (const kept of keptRawBodies(request)) {
    if (Buffer.isBuffer(kept)) return kept;
    if (typeof kept === 'string') return /[\u0100-\uffff]/.test(kept) ? 'text' : Buffer.from(kept, 'latin1');
  }
  return undefined;
}

/** The registry's 404 for an absent package, reworded the way ChartMuseum says it. */
function notFound(message: string) {
  return (err: unknown): never => {
    if (isApprError(err) && err.code === 'package-not-found') throw new ApprError('package-not-found', message);
    throw err;
  };
}
