import Router from '@koa/router';
import type { Context, Middleware } from 'koa';
import { ApprError } from '../errors.js';
import { resolveOptions, type ApprRouterOptions, type ResolvedOptions } from '../options.js';
import type { Visibility } from '../core/registry.js';
import { AccessControl, type Access, type CallerState } from './access.js';
import { pushBodyLimit, bodyReader, pushInput, requestValues } from './push.js';
import { preflight, responder, sendBlob, sendJson, sendJsonText } from './respond.js';

export const API_VERSION = '0.7.4';

type Handler = (ctx: Context, opts: ResolvedOptions) => Promise<void> | void;

interface RouteDef {
  name: string;
  method: 'get' | 'post' | 'delete';
  path: string;
  access: Access;
  handler: Handler;
  /** Runs after the guard and before the handler (the push body reader). */
  before?: (opts: ResolvedOptions) => Middleware;
}

type Params = Record<string, string>;
const params = (ctx: Context): Params => ctx.params as Params;
const pkg = '/api/v1/packages/:namespace/:package';
const isJson = (ctx: Context): boolean => ctx.query.format === 'json' || ctx.path.replace(/\/+$/, '').endsWith('/json');
const visible = (ctx: Context) => (ctx.state.appr as CallerState).visible;

/**
 * The route table (contract section 3). Order matters: @koa/router runs the first matching route, so static
 * segments (`channels`, `blobs`, `search`) are registered before the parameters they could be mistaken for.
 */
const ROUTES: RouteDef[] = [
  { name: 'discovery', method: 'get', path: '/', access: 'open', handler: discoveryPage },
  { name: 'discovery-bare', method: 'get', path: '', access: 'open', handler: discoveryPage },
  { name: 'version', method: 'get', path: '/version', access: 'open', handler: (ctx) => {
    ctx.body = { 'appr-api': API_VERSION, server: 'koa-appr' };
  } },
  { name: 'login', method: 'post', path: '/api/v1/users/login', access: 'open', handler: login,
    before: (o) => bodyReader(o.loginBodyLimit) },
  { name: 'signup', method: 'post', path: '/api/v1/users', access: 'open', handler: signup,
    before: (o) => bodyReader(o.loginBodyLimit) },
  { name: 'search-packages', method: 'get', path: '/api/v1/packages/search', access: 'list', handler: async (ctx, o) => {
    sendJsonText(ctx, await o.registry.searchJson(String(ctx.query.q ?? ''), visible(ctx)));
  } },
  { name: 'list-packages', method: 'get', path: '/api/v1/packages', access: 'list', handler: async (ctx, o) => {
    const q = (name: string): string | undefined => (typeof ctx.query[name] === 'string' ? ctx.query[name] as string : undefined);
    const filter = { namespace: q('namespace') || undefined, query: q('query'), mediaType: q('media_type') || undefined };
    sendJsonText(ctx, await o.registry.listPackagesJson(filter, visible(ctx)));
  } },
  { name: 'list-channels', method: 'get', path: `${pkg}/channels`, access: 'read', handler: async (ctx, o) => {
    const p = params(ctx);
    ctx.body = await o.registry.listChannels(p.namespace!, p.package!);
  } },
  { name: 'show-channel', method: 'get', path: `${pkg}/channels/:channel`, access: 'read', handler: async (ctx, o) => {
    const p = params(ctx);
    ctx.body = await o.registry.showChannel(p.namespace!, p.package!, p.channel!);
  } },
  { name: 'add-channel-release', method: 'post', path: `${pkg}/channels/:channel/:release`, access: 'write',
    handler: async (ctx, o) => {
      const p = params(ctx);
      ctx.body = await o.registry.addChannelRelease(p.namespace!, p.package!, p.channel!, p.release!);
    } },
  { name: 'delete-channel-release', method: 'delete', path: `${pkg}/channels/:channel/:release`, access: 'write',
    handler: async (ctx, o) => {
      const p = params(ctx);
      ctx.body = await o.registry.removeChannelRelease(p.namespace!, p.package!, p.channel!, p.release!);
    } },
  { name: 'delete-channel', method: 'delete', path: `${pkg}/channels/:channel`, access: 'write', handler: async (ctx, o) => {
    const p = params(ctx);
    ctx.body = await o.registry.deleteChannel(p.namespace!, p.package!, p.channel!);
  } },
  { name: 'blob', method: 'get', path: `${pkg}/blobs/sha256/:digest`, access: 'read', handler: blob },
  { name: 'blob-json', method: 'get', path: `${pkg}/blobs/sha256/:digest/json`, access: 'read', handler: blob },
  // Not in the wire contract: the owner's way to change what section 11 calls a package's visibility.
  { name: 'set-visibility', method: 'post', path: `${pkg}/visibility`, access: 'admin', handler: setVisibility,
    before: (o) => bodyReader(o.loginBodyLimit) },
  { name: 'push', method: 'post', path: pkg, access: 'push', handler: push,
    before: (o) => bodyReader(pushBodyLimit(o.maxPushSize)) },
  { name: 'package-manifests', method: 'get', path: pkg, access: 'read', handler: async (ctx, o) => {
    const p = params(ctx);
    const mediaType = typeof ctx.query.media_type === 'string' && ctx.query.media_type ? ctx.query.media_type : undefined;
    sendJson(ctx, await o.registry.packageManifestsJson(p.namespace!, p.package!, mediaType));
  } },
  { name: 'release-manifests', method: 'get', path: `${pkg}/:release`, access: 'read', handler: async (ctx, o) => {
    const p = params(ctx);
    sendJson(ctx, await o.registry.releaseManifestsJson(p.namespace!, p.package!, p.release!));
  } },
  { name: 'show-manifest', method: 'get', path: `${pkg}/:release/:media_type`, access: 'read', handler: async (ctx, o) => {
    const p = params(ctx);
    sendJson(ctx, await o.registry.showManifestJson(p.namespace!, p.package!, p.release, p.media_type!));
  } },
  { name: 'delete-release', method: 'delete', path: `${pkg}/:release/:media_type`, access: 'write',
    handler: async (ctx, o) => {
      const p = params(ctx);
      ctx.body = await o.registry.deleteRelease(p.namespace!, p.package!, p.release!, p.media_type!);
    } },
  { name: 'pull', method: 'get', path: `${pkg}/:release/:media_type/pull`, access: 'read', handler: pull },
  { name: 'pull-json', method: 'get', path: `${pkg}/:release/:media_type/pull/json`, access: 'read', handler: pull },
];

/**
 * The whole appr API as a @koa/router instance, every route under `prefix` (default `/cnr`):
 *
 *     app.use(createApprRouter({ storage }).routes())
 *
 * Its error mapping, CORS and body parsing apply to its own routes only. Unknown paths under the prefix answer
 * 404 `not-found`, known paths with another method 405 `method-not-allowed`, in the JSON error format.
 */
export function createApprRouter<P = unknown>(options: ApprRouterOptions<P>): Router {
  const opts = resolveOptions(options);
  const access = new AccessControl<P>(opts.auth as ApprRouterOptions<P>['auth'] & object, opts.registry);
  const router = new Router();
  const prefix = opts.prefix;
  router.use(responder(opts));

  for (const route of ROUTES) {
    if (route.path === '' && prefix === '') continue;
    const chain: Middleware[] = [access.guard(route.access, route.name)];
    if (route.before) chain.push(route.before(opts));
    chain.push(async (ctx) => route.handler(ctx, opts));
    router[route.method](route.name, `${prefix}${route.path}`, ...(chain as [Middleware]));
  }

  if (opts.discovery) {
    router.get('well-known', '/.well-known/app-registry-uri.json', access.guard('open', 'well-known'), (ctx) => {
      ctx.body = { version: API_VERSION, uri_prefix: `${origin(ctx)}${prefix}` };
    });
  }

  // Everything else under the prefix: preflight, 405 or 404, never the host's HTML.
  const unmatched: Middleware = (ctx) => {
    const allowed = allowedMethods(router, requestPath(ctx));
    if (ctx.method === 'OPTIONS') return preflight(ctx, [...allowed, 'OPTIONS'], opts.cors);
    if (allowed.length) {
      throw new ApprError('method-not-allowed', `${ctx.method} is not allowed here`, { allowed }, {
        Allow: [...allowed, 'OPTIONS'].join(', '),
      });
    }
    throw new ApprError('not-found', `No route ${ctx.path}`);
  };
  for (const path of prefix ? [prefix, `${prefix}/{*rest}`] : ['/api/{*rest}']) {
    router.all('fallback', path, access.guard('open', 'fallback'), unmatched);
  }
  return router;
}

/** The path @koa/router matched against (a parent router may have rewritten it). */
function requestPath(ctx: Context): string {
  return (ctx as Context & { newRouterPath?: string }).newRouterPath ?? ctx.path;
}

function allowedMethods(router: Router, path: string): string[] {
  const methods = new Set<string>();
  for (const layer of router.stack) {
    if (layer.name === 'fallback' || !layer.methods.length || !layer.match(path)) continue;
    for (const method of layer.methods) methods.add(method);
  }
  return [...methods];
}

// ---- handlers that are more than one line ---------------------------------------------------------------------

function discoveryPage(ctx: Context, opts: ResolvedOptions): void {
  const base = `${origin(ctx)}${opts.prefix}`;
  const content = `${ctx.host}/{name} ${base}/api/v1/packages/{name}/pull`;
  ctx.type = 'text/html';
  ctx.body = `<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n` +
    `<meta name="appr-package" content="${escapeHtml(content)}">\n</head>\n<body></body>\n</html>\n`;
}

async function push(ctx: Context, opts: ResolvedOptions): Promise<void> {
  const p = params(ctx);
  const { createOnly } = ctx.state.appr as CallerState;
  await opts.registry.push({ ...pushInput(ctx, p.namespace!, p.package!, opts.maxPushSize), createOnly });
  ctx.body = { status: 'ok' };
}

/** `{"visibility": "public" | "private"}` as JSON, a form field or the query string. */
async function setVisibility(ctx: Context, opts: ResolvedOptions): Promise<void> {
  const p = params(ctx);
  // The registry checks the value (422 unless "public" or "private").
  ctx.body = await opts.registry.setVisibility(p.namespace!, p.package!, requestValues(ctx).visibility as Visibility);
}

async function pull(ctx: Context, opts: ResolvedOptions): Promise<void> {
  const p = params(ctx);
  const pulled = await opts.registry.pull(p.namespace!, p.package!, p.release, p.media_type!);
  const pkgName = `${p.namespace}/${p.package}`;
  const filename = `${p.namespace}_${p.package}_${pulled.release}.tar.gz`;
  sendBlob(ctx, Object.assign(pulled.blob, { digest: pulled.digest }), filename, isJson(ctx)
    ? { package: pkgName, release: pulled.release, media_type: pulled.mediaType }
    : null);
}

async function blob(ctx: Context, opts: ResolvedOptions): Promise<void> {
  const p = params(ctx);
  const found = await opts.registry.blob(p.namespace!, p.package!, p.digest!);
  const filename = `${p.namespace}_${p.package}_${found.digest.slice(0, 8)}.tar.gz`;
  sendBlob(ctx, found, filename, isJson(ctx) ? { package: `${p.namespace}/${p.package}`, release: found.digest } : null,
    found.visibility === 'public' ? 'public' : 'private');
}

async function login(ctx: Context, opts: ResolvedOptions): Promise<void> {
  const hook = opts.auth.login;
  if (!hook) throw new ApprError('unsupported', 'This registry has no login');
  const user = userFields(ctx);
  const token = await hook(user.username, user.password, ctx);
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
  const { username, password, email } = (typeof user === 'object' && user !== null ? user : {}) as Record<string, unknown>;
  if (typeof username !== 'string' || typeof password !== 'string' || !username) {
    throw new ApprError('invalid-parameters', 'user.username and user.password are required', { field: 'user' });
  }
  return { username, password, ...(typeof email === 'string' ? { email } : {}) };
}

/** Scheme and host as the client addressed us (honours X-Forwarded-* when the host's app sets `proxy`). */
function origin(ctx: Context): string {
  return `${ctx.protocol}://${ctx.host}`;
}

function escapeHtml(value: string): string {
  return value.replace(/&/g, '&amp;').replace(/"/g, '&quot;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}
