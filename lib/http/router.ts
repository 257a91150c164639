import { METHODS } from 'node:http';
import Router from '@koa/router';
import type { Context, Middleware, Next } from 'koa';
import { ApprError } from '../errors.js';
import { resolveOptions, type ApprRouterOptions, type ResolvedOptions } from './options.js';
import type { Registry, Visibility } from '../core/registry.js';
import { AccessControl, type Access, type CallerState } from './access.js';
import { bodyReader, PushBudget, pushBodyReader, pushInput, requestValues } from './body-readers.js';
import { preflight, responder, sendBlob, sendJson, sendJsonText } from './respond.js';
import { mountHelmRoutes } from '../helm/router.js';
import { fastDispatch, narrowMatching } from './dispatch.js';
import { defaultActorName, type ChangeContext } from '../ops/audit.js';
import { httpMetricsRecorder } from '../ops/http.js';

export const API_VERSION = '0.7.4';

/** What a handler gets besides the context and the options; `Params` is typed from the route's path. */
interface RouteRequest<Params> {
  /** The route's `:name` parameters, URL-decoded; the guard has checked `namespace` and `package`. */
  params: Params;
  /** Whether to answer JSON rather than the tarball, from the route's `json` field. */
  json: boolean;
  /** The route's pattern as this router registered it (a parent router may have prefixed it since). */
  ownPath: string;
}

type Handler<Params = Record<string, string>> = (
  ctx: Context,
  opts: ResolvedOptions,
  req: RouteRequest<Params>,
) => Promise<void> | void;

/** The `:name` segments of a route pattern as an object type: `'/a/:b/c/:d'` gives `{ b: string } & { d: string }`. */
export type ParamsOf<Path extends string> = Path extends `${string}:${infer Name}/${infer Rest}`
  ? { [K in Name]: string } & ParamsOf<Rest>
  : Path extends `${string}:${infer Name}`
    ? { [K in Name]: string }
    : Record<never, never>;

interface RouteDef {
  name: string;
  method: 'get' | 'post' | 'delete';
  path: string;
  access: Access;
  /**
   * The body the route reads after the guard and before the handler: `values`, small request values (login,
   * signup, visibility; at most `loginBodyLimit` bytes), or `push`, a streamed push body (see body-readers.ts).
   */
  body?: 'values' | 'push';
  /** When the route answers JSON instead of a tarball: `always` (its `/json` form) or `query` (`?format=json`). */
  json?: 'always' | 'query';
  handler: Handler;
}

/**
 * A row of the route table: its handler sees the path's parameters by name (`params.namespace`...), typed from the
 * pattern; `extra` declares the body the route reads and when it answers JSON.
 */
function route<const Path extends string>(
  method: RouteDef['method'],
  name: string,
  path: Path,
  access: Access,
  handler: Handler<ParamsOf<Path>>,
  extra: Pick<RouteDef, 'body' | 'json'> = {},
): RouteDef {
  // @koa/router only runs the handler when the pattern matched, so every parameter the pattern names is there.
  return { name, method, path, access, ...extra, handler: handler as unknown as Handler };
}

const pkg = '/api/v1/packages/:namespace/:package';
const visible = (ctx: Context) => (ctx.state.appr as CallerState).visible;
/** Who is changing something, for the audit trail: `auth.actorName(caller)`, else `defaultActorName`. */
const by = (ctx: Context, o: ResolvedOptions): ChangeContext => {
  const { caller } = ctx.state.appr as CallerState;
  return { actor: caller === null ? null : (o.auth.actorName ?? defaultActorName)(caller) };
};

/**
 * The route table (docs/api.md section 3). Order matters: @koa/router runs the first matching route, so static
 * segments (`channels`, `blobs`, `search`) are registered before the parameters they could be mistaken for.
 */
const ROUTES: RouteDef[] = [
  route('get', 'discovery', '/', 'open', discoveryPage),
  route('get', 'discovery-bare', '', 'open', discoveryPage),
  route('get', 'version', '/version', 'open', (ctx) => {
    // `cnr-api` is Quay's key for the same version: clients written against Quay read it.
    ctx.body = { 'appr-api': API_VERSION, 'cnr-api': API_VERSION, server: 'koa-appr' };
  }),
  route('post', 'login', '/api/v1/users/login', 'open', login, { body: 'values' }),
  route('post', 'signup', '/api/v1/users', 'open', signup, { body: 'values' }),
  route('get', 'search-packages', '/api/v1/packages/search', 'list', async (ctx, o) => {
    sendJsonText(ctx, await o.registry.searchJson(String(ctx.query.q ?? ''), visible(ctx)));
  }),
  route('get', 'list-packages', '/api/v1/packages', 'list', listPackages),
  route('get', 'list-channels', `${pkg}/channels`, 'read', async (ctx, o, { params: p }) => {
    ctx.body = await o.registry.listChannels(p.namespace, p.package);
  }),
  route('get', 'show-channel', `${pkg}/channels/:channel`, 'read', async (ctx, o, { params: p }) => {
    ctx.body = await o.registry.showChannel(p.namespace, p.package, p.channel);
  }),
  route('post', 'add-channel-release', `${pkg}/channels/:channel/:release`, 'write', addChannelRelease),
  route('delete', 'delete-channel-release', `${pkg}/channels/:channel/:release`, 'write', removeChannelRelease),
  route('delete', 'delete-channel', `${pkg}/channels/:channel`, 'write', deleteChannel),
  route('get', 'blob', `${pkg}/blobs/sha256/:digest`, 'read', blob, { json: 'query' }),
  route('get', 'blob-json', `${pkg}/blobs/sha256/:digest/json`, 'read', blob, { json: 'always' }),
  // Not in the wire contract: withdraw a blob now (a leaked secret), with every release that names it.
  route('delete', 'purge-blob', `${pkg}/blobs/sha256/:digest`, 'admin', purgeBlob),
  // Not in the appr contract (docs/api.md section 15.1): the owner's way to change a package's visibility.
  route('post', 'set-visibility', `${pkg}/visibility`, 'admin', setVisibility, { body: 'values' }),
  route('post', 'push', pkg, 'push', push, { body: 'push' }),
  route('get', 'package-manifests', pkg, 'read', async (ctx, o, { params: p }) => {
    const mediaType =
      typeof ctx.query.media_type === 'string' && ctx.query.media_type ? ctx.query.media_type : undefined;
    sendJson(ctx, await o.registry.packageManifestsJson(p.namespace, p.package, mediaType));
  }),
  route('get', 'release-manifests', `${pkg}/:release`, 'read', async (ctx, o, { params: p }) => {
    sendJson(ctx, await o.registry.releaseManifestsJson(p.namespace, p.package, p.release));
  }),
  route('get', 'show-manifest', `${pkg}/:release/:media_type`, 'read', async (ctx, o, { params: p }) => {
    sendJson(ctx, await o.registry.showManifestJson(p.namespace, p.package, p.release, p.media_type));
  }),
  route('delete', 'delete-release', `${pkg}/:release/:media_type`, 'write', deleteRelease),
  route('get', 'pull', `${pkg}/:release/:media_type/pull`, 'read', pull, { json: 'query' }),
  route('get', 'pull-json', `${pkg}/:release/:media_type/pull/json`, 'read', pull, { json: 'always' }),
];

/** Where the discovery document lives: at the host root, whatever the prefix (docs/api.md section 12). */
export const WELL_KNOWN_PATH = '/.well-known/app-registry-uri.json';

interface Built {
  opts: ResolvedOptions;
  /** The responder instance: it is in the stack of every layer of this router, clones included (see mountPath). */
  respond: Middleware;
}
const BUILT = new WeakMap<Router, Built>();

/**
 * The whole appr API as a @koa/router instance, every route under `prefix` (default `/cnr`):
 *
 *     app.use(appr.routes()).use(appr.allowedMethods())
 *
 * or nested in a host router (`parent.use('/portal', appr.routes())`, @koa/router 12 to 15), in which case the
 * host also mounts `apprDiscovery(appr)` at the app level so the discovery document stays at the host root.
 *
 * Which paths it claims (README "Which paths the registry answers"): the routes of docs/api.md under the prefix,
 * every method on them (405 `method-not-allowed` or the OPTIONS preflight answer), and the discovery document.
 * Any other path is the host's: when mounted at the top level, a path under the prefix (under `/api/v1/` with
 * `prefix: ''`) that nothing downstream answered gets a JSON 404 `not-found` instead of Koa's text one. Every
 * route only uses `:param` segments, which path-to-regexp 6 (router 12, 13) and 8 (router 14, 15) read alike,
 * and no router-level middleware, which a parent router would have to re-compile.
 *
 * Its error mapping, CORS and body parsing apply to its own routes only.
 */
export function createApprRouter<P = unknown>(options: ApprRouterOptions<P>): Router {
  const opts = resolveOptions(options);
  const access = new AccessControl<P>(opts.auth as ApprRouterOptions<P>['auth'] & object, opts.registry);
  const router = new Router();
  const prefix = opts.prefix;
  const respond = responder({ ...opts, record: httpMetricsRecorder(opts.registry.metrics) });

  // One budget for every push body this router receives: appr pushes and Helm chart uploads.
  const pushBudget = new PushBudget(opts.maxPushBytesInFlight);
  const routes = ROUTES.filter((route) => !(route.path === '' && prefix === ''));
  for (const route of routes) {
    const ownPath = `${prefix}${route.path}`;
    // Not async: the handler's own promise is the route's (every frame counts on a read answered from memory).
    const handle = (ctx: Context) =>
      route.handler(ctx, opts, {
        params: ctx.params as Record<string, string>,
        // `ctx.query` parses the query string: only when there is one.
        json:
          route.json === 'always' || (route.json === 'query' && ctx.querystring !== '' && ctx.query.format === 'json'),
        ownPath,
      });
    const chain: Middleware[] = [respond];
    if (route.body === undefined) chain.push(access.guardThen(route.access, route.name, handle));
    else {
      const reader = route.body === 'values' ? bodyReader(opts.loginBodyLimit) : pushBodyReader(opts, pushBudget);
      chain.push(access.guard(route.access, route.name), reader, handle);
    }
    router[route.method](route.name, ownPath, ...(chain as [Middleware]));
  }

  // The Helm index is cached per catalog version (it changes with every package document this instance sees).
  const helmPaths = opts.helm
    ? mountHelmRoutes(
        router,
        opts,
        access as AccessControl<unknown>,
        pushBudget,
        {},
        () => opts.registry.catalogVersion,
      )
    : [];

  const wellKnown: Middleware = (ctx) => {
    // A parent router re-prefixes this route (`/portal/.well-known/...`): not the place clients look, and a
    // document there would mislead; `apprDiscovery()` serves it at the root instead.
    const layerPath = matchedLayerPath(ctx);
    if (layerPath !== undefined && layerPath !== WELL_KNOWN_PATH) {
      throw new ApprError(
        'not-found',
        `The discovery document is served at the host's root, ${WELL_KNOWN_PATH}, by apprDiscovery() (README "Nested in a host router")`,
      );
    }
    ctx.body = discoveryDocument(ctx, opts, respond);
  };
  if (opts.discovery) router.get('well-known', WELL_KNOWN_PATH, respond, access.guard('open', 'well-known'), wellKnown);

  // Every other method on a path of ours: the preflight answer or 405, in our format. One layer per path (not a
  // wildcard) so that it compiles under any path-to-regexp a parent router brings.
  const unmatched: Middleware = (ctx) => {
    const allowed = allowedMethods(ctx);
    if (ctx.method === 'OPTIONS') return preflight(ctx, [...allowed, 'OPTIONS'], opts.cors);
    throw new ApprError(
      'method-not-allowed',
      `${ctx.method} is not allowed here`,
      { allowed },
      {
        Allow: [...allowed, 'OPTIONS'].join(', '),
      },
    );
  };
  // Registered for the methods no route of the path answers only: a request a route answers matches one layer,
  // not two (@koa/router captures the parameters and composes the middleware of every layer that matches).
  const answered = new Map<string, Set<string>>();
  for (const layer of router.stack) {
    if (typeof layer.path !== 'string') continue;
    const methods = answered.get(layer.path) ?? new Set<string>();
    for (const method of layer.methods) methods.add(method);
    answered.set(layer.path, methods);
  }
  const paths = new Set([...routes.map((route) => `${prefix}${route.path}`), ...helmPaths]);
  if (opts.discovery) paths.add(WELL_KNOWN_PATH);
  const fallbackGuard = access.guard('open', 'fallback');
  for (const path of paths) {
    const others = METHODS.filter((method) => !answered.get(path)?.has(method));
    // @koa/router adds HEAD itself to a layer with GET.
    if (others.includes('GET')) others.splice(others.indexOf('HEAD'), 1);
    // A stack of its own per layer, as `router.all` gives: `router.param()` and parent routers change stacks in place.
    router.register(path, others, [respond, fallbackGuard, unmatched], { name: 'fallback' });
  }

  // Mounted at the top level: a path under the prefix that neither a route of ours nor anything downstream (the
  // host's own routes) answered is answered as JSON. Nested, a parent router copies the layers and never calls
  // this function: unknown paths are then the parent's to answer.
  const dispatch = router.middleware() as unknown as Middleware;
  const fast = fastDispatch(router, narrowMatching(router));
  const claims = (path: string): boolean =>
    prefix === ''
      ? path.startsWith('/api/v1/') || path === '/api/v1'
      : path === prefix || path.startsWith(`${prefix}/`);
  const routesMiddleware = Object.assign(
    async function apprRoutes(ctx: Context, next: Next): Promise<void> {
      // Nothing downstream answered: no body, and Koa's 404 or the status a host middleware set before us.
      const before = ctx.status;
      await (fast(ctx, next) ?? dispatch(ctx, next));
      // `ctx.path` is null when a host rewrote the URL to a bare query (`?x`): no path of ours.
      const path = ctx.path as string | null;
      if (ctx.body == null && (ctx.status === 404 || ctx.status === before) && path !== null && claims(path)) {
        await respond(ctx, async () => {
          throw new ApprError('not-found', 'No such route');
        });
      }
    },
    { router },
  );
  router.routes = router.middleware = () => routesMiddleware;

  BUILT.set(router, { opts, respond });
  return router;
}

/**
 * The discovery document (docs/api.md section 12) as app-level middleware, for hosts that nest the registry in a
 * router of their own: a parent router re-prefixes every route, so only the app can serve the host root.
 *
 *     portal.use('/portal', appr.routes());
 *     app.use(apprDiscovery(appr)).use(portal.routes()).use(portal.allowedMethods());
 *
 * `uri_prefix` includes the parent's mount path (found by looking for the registry's routes among the app's
 * routers) unless `publicUrl` is set. Throws TypeError unless `router` came from `createApprRouter()`.
 */
export function apprDiscovery(router: Router): Middleware {
  const built = BUILT.get(router);
  if (!built) throw new TypeError('koa-appr: apprDiscovery() takes a router made by createApprRouter()');
  const { opts, respond } = built;
  return async function apprDiscoveryDocument(ctx, next) {
    // eslint-disable-next-line @typescript-eslint/no-unsafe-return -- Koa types next() as Promise<any>
    if (ctx.path !== WELL_KNOWN_PATH) return next();
    await respond(ctx, async () => {
      if (ctx.method === 'OPTIONS') return preflight(ctx, ['GET', 'HEAD', 'OPTIONS'], opts.cors);
      if (ctx.method !== 'GET' && ctx.method !== 'HEAD') {
        throw new ApprError(
          'method-not-allowed',
          `${ctx.method} is not allowed here`,
          { allowed: ['GET', 'HEAD'] },
          {
            Allow: 'GET, HEAD, OPTIONS',
          },
        );
      }
      ctx.body = discoveryDocument(ctx, opts, respond);
    });
  };
}

/** The registry core a router built by `createApprRouter()` serves (the host's, or the one it built). */
export function registryOf(router: Router): Registry {
  const built = BUILT.get(router);
  if (!built) throw new TypeError('koa-appr: registryOf() takes a router made by createApprRouter()');
  return built.opts.registry;
}

/** The discovery document (docs/api.md section 12), wherever it is served from. */
function discoveryDocument(
  ctx: Context,
  opts: ResolvedOptions,
  respond: Middleware,
): { version: string; uri_prefix: string } {
  return {
    version: API_VERSION,
    uri_prefix: publicBase(ctx, opts, mountPathFromApp(ctx, respond, `${opts.prefix}/version`)),
  };
}

/** The pattern of the layer now running (a parent router's copy carries the parent's prefix). */
function matchedLayerPath(ctx: Context): string | undefined {
  const path = (ctx as Context & { _matchedRoute?: unknown })._matchedRoute;
  return typeof path === 'string' ? path : undefined;
}

/** What a parent router put in front of our own paths, seen from inside one of our routes ('' at the top level). */
function mountPath(ctx: Context, ownPath: string): string {
  const layerPath = matchedLayerPath(ctx);
  if (layerPath === undefined || layerPath === ownPath || !layerPath.endsWith(ownPath)) return '';
  return layerPath.slice(0, layerPath.length - ownPath.length);
}

const MOUNTS = new WeakMap<object, Map<Middleware, string>>();

/**
 * The parent's mount path, seen from outside our routes (the discovery document): the app's routers are searched
 * for their copy of our `version` route, recognised by our responder in its stack. Cached per app.
 */
function mountPathFromApp(ctx: Context, respond: Middleware, versionPath: string): string {
  const app = ctx.app as unknown as { middleware?: unknown[] };
  let perApp = MOUNTS.get(app);
  if (!perApp) MOUNTS.set(app, (perApp = new Map<Middleware, string>()));
  const known = perApp.get(respond);
  if (known !== undefined) return known;
  let found = '';
  for (const fn of app.middleware ?? []) {
    const stack =
      (fn as { router?: { stack?: { name?: string; path?: unknown; stack?: unknown[] }[] } }).router?.stack ?? [];
    const copy = stack.find((layer) => layer.name === 'version' && layer.stack?.includes(respond));
    if (copy && typeof copy.path === 'string' && copy.path.endsWith(versionPath)) {
      found = copy.path.slice(0, copy.path.length - versionPath.length);
      break;
    }
  }
  perApp.set(respond, found);
  return found;
}

/** Methods of the routes (ours or the host's) whose path matched this request, for 405 and OPTIONS. */
function allowedMethods(ctx: Context): string[] {
  const matched = (ctx as Context & { matched?: { name?: string | null; methods: string[] }[] }).matched ?? [];
  const methods = new Set<string>();
  for (const layer of matched) {
    if (layer.name === 'fallback') continue;
    for (const method of layer.methods) methods.add(method);
  }
  methods.delete('OPTIONS');
  return [...methods];
}

// ---- handlers that are more than one line ---------------------------------------------------------------------

function discoveryPage(ctx: Context, opts: ResolvedOptions, { ownPath }: RouteRequest<unknown>): void {
  const base = publicBase(ctx, opts, mountPath(ctx, ownPath));
  const content = `${new URL(base).host}/{name} ${base}/api/v1/packages/{name}/pull`;
  ctx.type = 'text/html';
  ctx.body =
    `<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n` +
    `<meta name="appr-package" content="${escapeHtml(content)}">\n</head>\n<body></body>\n</html>\n`;
}

type PackageParams = ParamsOf<typeof pkg>;

async function listPackages(ctx: Context, opts: ResolvedOptions): Promise<void> {
  const q = (name: string): string | undefined => (typeof ctx.query[name] === 'string' ? ctx.query[name] : undefined);
  const filter = {
    namespace: q('namespace') || undefined,
    query: q('query'),
    mediaType: q('media_type') || undefined,
  };
  sendJsonText(ctx, await opts.registry.listPackagesJson(filter, visible(ctx)));
}

async function addChannelRelease(
  ctx: Context,
  opts: ResolvedOptions,
  { params: p }: RouteRequest<ParamsOf<`${typeof pkg}/channels/:channel/:release`>>,
): Promise<void> {
  ctx.body = await opts.registry.addChannelRelease(p.namespace, p.package, p.channel, p.release, by(ctx, opts));
}

async function removeChannelRelease(
  ctx: Context,
  opts: ResolvedOptions,
  { params: p }: RouteRequest<ParamsOf<`${typeof pkg}/channels/:channel/:release`>>,
): Promise<void> {
  const removed = await opts.registry.removeChannelRelease(p.namespace, p.package, p.channel, p.release, by(ctx, opts));
  ctx.body = {
    status: 'deleted',
    package: `${removed.namespace}/${removed.name}`,
    name: removed.channel,
    release: removed.release,
  };
}

async function deleteChannel(
  ctx: Context,
  opts: ResolvedOptions,
  { params: p }: RouteRequest<ParamsOf<`${typeof pkg}/channels/:channel`>>,
): Promise<void> {
  const deleted = await opts.registry.deleteChannel(p.namespace, p.package, p.channel, by(ctx, opts));
  ctx.body = { channel: deleted.channel, package: `${deleted.namespace}/${deleted.name}`, action: 'delete' };
}

async function purgeBlob(
  ctx: Context,
  opts: ResolvedOptions,
  { params: p }: RouteRequest<ParamsOf<`${typeof pkg}/:digest`>>,
): Promise<void> {
  const purged = await opts.registry.purgeBlob(p.namespace, p.package, p.digest, by(ctx, opts));
  ctx.body = {
    status: 'purged',
    package: `${purged.namespace}/${purged.name}`,
    digest: purged.digest,
    releases: purged.removed.map(({ release, mediaType }) => ({ release, media_type: mediaType })),
  };
}

async function deleteRelease(
  ctx: Context,
  opts: ResolvedOptions,
  { params: p }: RouteRequest<ParamsOf<`${typeof pkg}/:release/:media_type`>>,
): Promise<void> {
  const deleted = await opts.registry.deleteRelease(p.namespace, p.package, p.release, p.media_type, by(ctx, opts));
  ctx.body = { status: 'deleted', package: `${deleted.namespace}/${deleted.name}`, release: deleted.release };
}

async function push(ctx: Context, opts: ResolvedOptions, { params: p }: RouteRequest<PackageParams>): Promise<void> {
  const { createOnly } = ctx.state.appr as CallerState;
  await opts.registry.push({
    ...pushInput(ctx, p.namespace, p.package, opts.maxPushSize),
    createOnly,
    ...by(ctx, opts),
  });
  ctx.body = { status: 'ok' };
}

/** `{"visibility": "public" | "private"}` as JSON, a form field or the query string. */
async function setVisibility(
  ctx: Context,
  opts: ResolvedOptions,
  { params: p }: RouteRequest<PackageParams>,
): Promise<void> {
  // The registry checks the value (422 unless "public" or "private").
  const visibility = requestValues(ctx).visibility as Visibility;
  const changed = await opts.registry.setVisibility(p.namespace, p.package, visibility, by(ctx, opts));
  ctx.body = { package: `${changed.namespace}/${changed.name}`, visibility: changed.visibility };
}

async function pull(
  ctx: Context,
  opts: ResolvedOptions,
  { params: p, json }: RouteRequest<ParamsOf<`${typeof pkg}/:release/:media_type`>>,
): Promise<void> {
  const pulled = await opts.registry.pull(p.namespace, p.package, p.release, p.media_type);
  sendBlob(
    ctx,
    pulled.blob,
    pulled.digest,
    `${p.namespace}_${p.package}_${pulled.release}.tar.gz`,
    json ? { package: `${p.namespace}/${p.package}`, release: pulled.release, media_type: pulled.mediaType } : null,
  );
}

async function blob(
  ctx: Context,
  opts: ResolvedOptions,
  { params: p, json }: RouteRequest<ParamsOf<`${typeof pkg}/:digest`>>,
): Promise<void> {
  const found = await opts.registry.blob(p.namespace, p.package, p.digest);
  const filename = `${p.namespace}_${p.package}_${found.digest.slice(0, 8)}.tar.gz`;
  sendBlob(
    ctx,
    found,
    found.digest,
    filename,
    json ? { package: `${p.namespace}/${p.package}`, release: found.digest } : null,
    found.visibility === 'public' ? 'public' : 'private',
  );
}

async function login(ctx: Context, opts: ResolvedOptions): Promise<void> {
  const hook = opts.auth.login;
  if (!hook) throw new ApprError('unsupported', 'This registry has no login');
  const user = userFields(ctx);
  const token = await hook(user.username, user.password, ctx);
  const time = new Date().toISOString();
  await opts.registry.audit({ type: 'login', time, actor: user.username, outcome: token ? 'success' : 'failure' });
  if (!token) throw new ApprError('unauthorized-access', 'Invalid username or password');
  ctx.body = { token };
}

async function signup(ctx: Context, opts: ResolvedOptions): Promise<void> {
  const hook = opts.auth.signup;
  if (!hook) throw new ApprError('unsupported', 'This registry has no signup');
  const user = userFields(ctx);
  const token = await hook(user, ctx);
  if (!token) throw new ApprError('forbidden', 'Signup refused');
  ctx.body = { token };
}

/** `{"user": {"username", "password", "email"?}}`, as the CLI sends it. */
function userFields(ctx: Context): { username: string; password: string; email?: string } {
  const user = requestValues(ctx).user;
  const { username, password, email } = (typeof user === 'object' && user !== null ? user : {}) as Record<
    string,
    unknown
  >;
  if (typeof username !== 'string' || typeof password !== 'string' || !username) {
    throw new ApprError('invalid-parameters', 'user.username and user.password are required', { field: 'user' });
  }
  return { username, password, ...(typeof email === 'string' ? { email } : {}) };
}

/**
 * The absolute URL of the registry's prefix as clients reach it: `publicUrl` when the host set one (then no request
 * header is ever used); otherwise scheme and host of the request, and when the app trusts its proxy (`app.proxy`),
 * RFC 7239 `Forwarded` (proto, host; it wins over Koa's `X-Forwarded-Proto`/`-Host`) and `X-Forwarded-Prefix`,
 * then the parent router's mount path and our prefix. Forwarded values that are not a plain host or path (Koa's
 * X-Forwarded-Host too), and a proto that is not http or https, are ignored, so a header cannot inject markup or
 * another URL; a request whose own Host makes no URL either is taken as `localhost`.
 */
export function publicBase(ctx: Context, opts: ResolvedOptions, mount: string): string {
  if (opts.publicUrl !== undefined) return opts.publicUrl;
  // Koa takes X-Forwarded-Proto's first entry as is when the app trusts its proxy: any text a client sent.
  let proto = ctx.protocol === 'https' ? 'https' : 'http';
  let host = ctx.host;
  let pathPrefix = '';
  if (ctx.app.proxy) {
    const forwarded = parseForwarded(ctx.get('Forwarded'));
    if (forwarded.proto === 'http' || forwarded.proto === 'https') proto = forwarded.proto;
    if (forwarded.host !== undefined && isUrlHost(forwarded.host)) host = forwarded.host;
    const xPrefix = (ctx.get('X-Forwarded-Prefix').split(',')[0] ?? '').trim().replace(/\/+$/, '');
    if (PATH_PREFIX.test(xPrefix) && !xPrefix.split('/').some((segment) => segment === '.' || segment === '..')) {
      pathPrefix = xPrefix;
    }
  }
  // Koa's `host` is X-Forwarded-Host's first entry when the app trusts its proxy: one that is no host is ignored
  // for the request's own Host (HTTP/2: `:authority`), as a `Forwarded` host is.
  if (!isUrlHost(host)) {
    const own = (ctx.req.httpVersionMajor >= 2 ? ctx.get(':authority') : '') || ctx.get('Host');
    // As Koa reads it: the first of comma-separated values, without user information.
    host = (own.split(',')[0] ?? '').trim().replace(/^[^@]*@/, '');
  }
  if (!isUrlHost(host)) host = 'localhost';
  return `${proto}://${host}${pathPrefix}${mount}${opts.prefix}`;
}

const HOST = /^(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?$/;

/**
 * A plain host name or address with an optional port, that a URL takes: not a port past 65535, an IPv4 address past
 * 255 or a bracketed one, which the pattern lets through and `new URL()` refuses (a 500 where a URL is parsed).
 */
function isUrlHost(host: string): boolean {
  return HOST.test(host) && URL.canParse(`http://${host}`);
}
const PATH_PREFIX = /^(?:\/[A-Za-z0-9._~-]+)+$/;

/** The first element of an RFC 7239 `Forwarded` header (the one the nearest client-facing proxy wrote). */
function parseForwarded(header: string): { proto?: string; host?: string } {
  const first = header.split(',')[0] ?? '';
  const result: { proto?: string; host?: string } = {};
  for (const pair of first.split(';')) {
    const eq = pair.indexOf('=');
    if (eq < 0) continue;
    const key = pair.slice(0, eq).trim().toLowerCase();
    const value = pair
      .slice(eq + 1)
      .trim()
      .replace(/^"(.*)"$/, '$1');
    if (key === 'proto') result.proto = value.toLowerCase();
    if (key === 'host') result.host = value;
  }
  return result;
}

function escapeHtml(value: string): string {
  return value.replace(/&/g, '&amp;').replace(/"/g, '&quot;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}
