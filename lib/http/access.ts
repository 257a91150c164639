import type { Context, Middleware, Next } from 'koa';
import { ApprError } from '../errors.js';
import { checkName } from '../core/names.js';
import { EVERYONE } from '../core/catalog.js';
import type { Registry, VisibleFilter } from '../core/registry.js';
import type { AccessTarget, AuthHooks, Credentials, Permission } from '../auth/hooks.js';

/**
 * How a route is guarded. Every route of the router declares one; `guard()` is the only way a route handler is
 * reached, and a test walks the router to check that.
 *  - open: no package involved (version, discovery, login, unknown routes)
 *  - list: list and search; the result is filtered by read permission
 *  - read: read a package (or its blobs, channels); `read` permission or a public package
 *  - write: change an existing package (delete, channels); `write` permission
 *  - push: `write` on an existing package, `create` on the namespace for a new one
 *  - admin: manage a package (visibility); `admin` permission
 */
export type Access = 'open' | 'list' | 'read' | 'write' | 'push' | 'admin';

export interface CallerState<P = unknown> {
  caller: P | null;
  /** List/search filter for this caller. */
  visible: VisibleFilter;
  /**
   * Set on a push that was allowed only because the package did not exist (create permission without write
   * permission): the push must then create the package, not add to one that someone created meanwhile.
   */
  createOnly: boolean;
}

/** The package a route is about, from its `:namespace` and `:package` parameters. */
export interface PackageParams {
  namespace: string;
  package: string;
}

/**
 * The route's `:namespace` and `:package`, checked (400 `invalid-usage` unless valid names, before any hook or
 * storage sees them). The guard calls it once for every route about a package; handlers then read `ctx.params`.
 */
export function packageParams(ctx: Context): PackageParams {
  const { namespace, package: name } = ctx.params as Partial<PackageParams>;
  return { namespace: checkName('namespace', namespace ?? ''), package: checkName('package', name ?? '') };
}

/** Tags the guard middleware (its value is the route's `Access`), so tests can check every route starts with it. */
export const GUARD = Symbol('koa-appr.guard');

/** `middleware`, tagged as a guard of `access` (GUARD). */
function asGuard<M extends (ctx: Context, next: Next) => Promise<void>>(middleware: M, access: Access): M {
  Object.defineProperty(middleware, GUARD, { value: access });
  return middleware;
}

export function parseAuthorization(header: string | undefined): Credentials | null {
  if (!header || !header.trim()) return null;
  const trimmed = header.trim();
  const space = trimmed.search(/\s/);
  const scheme = (space < 0 ? trimmed : trimmed.slice(0, space)).toLowerCase();
  const value = space < 0 ? '' : trimmed.slice(space + 1).trim();
  if (scheme === 'bearer' && value) return { scheme: 'bearer', token: value };
  if (scheme === 'basic' && value) {
    const decoded = Buffer.from(value, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon > 0) {
      return { scheme: 'basic', username: decoded.slice(0, colon), password: decoded.slice(colon + 1), token: value };
    }
  }
  return { scheme: 'other', token: trimmed };
}

/** The state of an anonymous caller where nothing is checked (open routes, or no hooks at all). Shared: frozen. */
const ANONYMOUS: CallerState<never> = Object.freeze({ caller: null, createOnly: false, visible: EVERYONE });

const DENIED: Record<Exclude<Access, 'open' | 'list'>, string> = {
  read: 'You are not allowed to read',
  write: 'You are not allowed to change',
  push: 'You are not allowed to push to',
  admin: 'You are not allowed to manage',
};

export class AccessControl<P = unknown> {
  readonly #hooks: AuthHooks<P>;
  readonly #registry: Registry;

  constructor(hooks: AuthHooks<P>, registry: Registry) {
    this.#hooks = hooks ?? {};
    this.#registry = registry;
  }

  /**
   * The middleware every route starts with. It decides from the caller and the URL alone; the only storage read
   * it may do is a package's visibility (read of a package the caller has no read permission on; push, to tell
   * a new package from an existing one). `action` is the route's name, passed to the hooks.
   */
  guard(access: Access, action?: string) {
    const hooks = this.#hooks;
    // Without hooks every caller is anonymous and may do everything: one shared state, nothing to work out per
    // request (reads answered from memory are cheap enough for this to show).
    const unguarded = !hooks.identify && !hooks.authorize && hooks.anonymous !== false;
    const named = access !== 'open' && access !== 'list';
    // No open route uses the caller: identifying it would only let anyone make the server verify credentials (an
    // scrypt hash per wrong Basic password with the user store) for free. Not async: nothing to wait for, and a
    // read answered from memory feels every extra promise. (A malformed name throws here; Koa's compose turns it
    // into a rejection like any other.)
    const anonymous = (ctx: Context, next: Next): Promise<void> => {
      // Malformed names are answered 400 first: they are no secret, and no hook or storage ever sees them.
      if (named) packageParams(ctx);
      ctx.state.appr = ANONYMOUS;
      return next();
    };
    if (unguarded || access === 'open') return asGuard(anonymous, access);
    const checked = access;
    const guarded = async (ctx: Context, next: Next): Promise<void> => {
      const names = named ? packageParams(ctx) : null;
      const credentials = parseAuthorization(ctx.get('Authorization') || undefined);
      const caller = await this.#identify(ctx, credentials);
      if (caller === null && hooks.anonymous === false) throw this.#unauthorized(credentials);
      const createOnly = await this.#check(ctx, caller, credentials, checked, action, names);
      const state: CallerState<P> = {
        caller,
        createOnly,
        visible: hooks.authorize
          ? (pkg) => pkg.visibility === 'public' || this.#can(ctx, caller, 'read', { ...pkg, action })
          : EVERYONE,
      };
      ctx.state.appr = state;
      // eslint-disable-next-line @typescript-eslint/no-unsafe-return -- Koa types next() as Promise<any>
      return next();
    };
    return asGuard(guarded, access);
  }

  /**
   * The guard with the route's last step (`handle`, which never calls on) run by it: one middleware instead of
   * two, a step of Koa's middleware chain fewer on every read. Tagged as the guard it starts with.
   */
  guardThen(access: Access, action: string, handle: (ctx: Context) => Promise<void> | void): Middleware {
    const guard = this.guard(access, action);
    return asGuard((ctx: Context): Promise<void> => guard(ctx, () => Promise.resolve(handle(ctx))), access);
  }

  async #identify(ctx: Context, credentials: Credentials | null): Promise<P | null> {
    if (!this.#hooks.identify) return null;
    return (await this.#hooks.identify(ctx, credentials)) ?? null;
  }

  /** Throws when the caller may not; for a push, returns whether it may only create the package. */
  async #check(
    ctx: Context,
    caller: P | null,
    credentials: Credentials | null,
    access: Exclude<Access, 'open'>,
    action: string | undefined,
    names: PackageParams | null,
  ): Promise<boolean> {
    if (access === 'list' || names === null) return false;
    if (!this.#hooks.authorize) return false; // everybody may do everything: no visibility read needed
    const { namespace, package: name } = names;
    const scope = { namespace, ...(action === undefined ? {} : { action }) };
    const target: AccessTarget = { ...scope, name };
    if (access === 'read') {
      if (await this.#can(ctx, caller, 'read', target)) return false;
      // Absent and private answer alike: the caller cannot tell them apart.
      if ((await this.#registry.packageVisibility(namespace, name)) === 'public') return false;
    } else if (access === 'write' || access === 'admin') {
      if (await this.#can(ctx, caller, access, target)) return false;
    } else {
      // Which permission depends on whether the package exists; the answer to a refusal does not.
      const visibility = await this.#registry.packageVisibility(namespace, name);
      if (visibility !== null) {
        if (await this.#can(ctx, caller, 'write', { ...target, visibility })) return false;
      } else if (await this.#can(ctx, caller, 'create', scope)) {
        return !(await this.#can(ctx, caller, 'write', target));
      }
    }
    // Anonymous callers are asked to log in (401 + WWW-Authenticate); known callers are refused (403).
    if (caller === null) throw this.#unauthorized(credentials);
    throw new ApprError('forbidden', `${DENIED[access]} ${namespace}/${name}`, { package: `${namespace}/${name}` });
  }

  async #can(ctx: Context, caller: P | null, permission: Permission, target: AccessTarget): Promise<boolean> {
    if (!this.#hooks.authorize) return true;
    return (await this.#hooks.authorize(caller, permission, target, ctx)) === true;
  }

  #unauthorized(credentials: Credentials | null): ApprError {
    const realm = (this.#hooks.realm ?? 'appr').replace(/["\\]/g, '');
    const message =
      credentials === null
        ? 'Authentication required: log in first (appr login)'
        : 'Invalid or expired credentials: log in again (appr login)';
    return new ApprError(
      'unauthorized-access',
      message,
      {},
      {
        'WWW-Authenticate': `Basic realm="${realm}", Bearer realm="${realm}"`,
      },
    );
  }
}
