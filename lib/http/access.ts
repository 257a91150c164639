import type { Context, Next } from 'koa';
import { ApprError } from '../errors.js';
import { checkName } from '../core/names.js';
import type { Registry, Visibility, VisibleFilter } from '../core/registry.js';

/** What a caller may do on a namespace or package (contract section 11). */
export type Permission = 'read' | 'write' | 'create' | 'admin';

/** Credentials as they arrived in the `Authorization` header. */
export type Credentials =
  | { scheme: 'basic'; username: string; password: string; token: string }
  | { scheme: 'bearer'; token: string }
  | { scheme: 'other'; token: string };

export interface AccessTarget {
  namespace: string;
  /** Absent for namespace-level questions (creating a new package in it). */
  name?: string;
  /** Known for an existing package when the question is about reading it. */
  visibility?: Visibility;
}

/**
 * The host's hooks. All may be async. Without any, everybody may do everything, as with the reference server.
 * `P` is the host's own notion of a caller (a user record, a JWT's claims...).
 */
export interface AuthHooks<P = unknown> {
  /**
   * Who is calling. Return null (or undefined) for an anonymous caller. Gets the parsed `Authorization` header
   * (null when absent); may also read what the host's own middleware left in `ctx.state`. Throwing an ApprError
   * (e.g. 'unauthorized-access' for a bad token) answers with it.
   */
  identify?: (ctx: Context, credentials: Credentials | null) => P | null | undefined | Promise<P | null | undefined>;
  /** May `caller` (null = anonymous) have `permission` on `target`? Default: yes. */
  authorize?: (caller: P | null, permission: Permission, target: AccessTarget, ctx: Context) => boolean | Promise<boolean>;
  /** Whether anonymous callers may use the API at all (default true). When false they get 401. */
  anonymous?: boolean;
  /** `POST /api/v1/users/login`: return the token the CLI will send back verbatim, or null for bad credentials. */
  login?: (username: string, password: string, ctx: Context) => string | null | Promise<string | null>;
  /** `POST /api/v1/users`: create an account and return its token, or null to refuse. */
  signup?: (input: { username: string; password: string; email?: string }, ctx: Context) => string | null | Promise<string | null>;
  /** Realm named in `WWW-Authenticate` (default 'appr'). */
  realm?: string;
}

/**
 * How a route is guarded. Every route of the router declares one; `guard()` is the only way a route handler is
 * reached, and a test walks the router to check that.
 *  - open: no package involved (version, discovery, login, unknown routes)
 *  - list: list and search; the result is filtered by read permission
 *  - read: read a package (or its blobs, channels)
 *  - write: change an existing package (delete, channels)
 *  - push: write to an existing package, or create a package in the namespace
 */
export type Access = 'open' | 'list' | 'read' | 'write' | 'push';

export interface CallerState<P = unknown> {
  caller: P | null;
  /** List/search filter for this caller. */
  visible: VisibleFilter;
}

export const GUARD = Symbol('koa-appr.guard');

export function parseAuthorization(header: string | undefined): Credentials | null {
  if (!header) return null;
  const space = header.indexOf(' ');
  const scheme = (space < 0 ? header : header.slice(0, space)).toLowerCase();
  const value = space < 0 ? '' : header.slice(space + 1).trim();
  if (scheme === 'bearer' && value) return { scheme: 'bearer', token: value };
  if (scheme === 'basic' && value) {
    const decoded = Buffer.from(value, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon > 0) {
      return { scheme: 'basic', username: decoded.slice(0, colon), password: decoded.slice(colon + 1), token: value };
    }
  }
  return { scheme: 'other', token: header.trim() };
}

export class AccessControl<P = unknown> {
  readonly #hooks: AuthHooks<P>;
  readonly #registry: Registry;

  constructor(hooks: AuthHooks<P>, registry: Registry) {
    this.#hooks = hooks;
    this.#registry = registry;
  }

  get hooks(): AuthHooks<P> {
    return this.#hooks;
  }

  /** The middleware every route starts with. It runs before any storage lookup but a visibility check. */
  guard(access: Access) {
    const middleware = async (ctx: Context, next: Next): Promise<void> => {
      const caller = await this.#identify(ctx);
      if (access !== 'open') {
        if (caller === null && this.#hooks.anonymous === false) throw this.#unauthorized();
        await this.#check(ctx, caller, access);
      }
      const state: CallerState<P> = {
        caller,
        visible: (pkg) => pkg.visibility === 'public' || this.#can(ctx, caller, 'read', pkg),
      };
      ctx.state.appr = state;
      await next();
    };
    Object.defineProperty(middleware, GUARD, { value: access });
    return middleware;
  }

  async #identify(ctx: Context): Promise<P | null> {
    if (!this.#hooks.identify) return null;
    const credentials = parseAuthorization(ctx.get('Authorization') || undefined);
    return (await this.#hooks.identify(ctx, credentials)) ?? null;
  }

  async #check(ctx: Context, caller: P | null, access: Access): Promise<void> {
    if (access === 'list') return;
    const { namespace, package: name } = ctx.params as { namespace: string; package: string };
    checkName('namespace', namespace);
    checkName('package', name);
    const target = { namespace, name };
    if (access === 'read') {
      if (await this.#can(ctx, caller, 'read', target)) return;
      if ((await this.#registry.packageVisibility(namespace, name)) === 'public') return;
    } else if (access === 'write') {
      if (await this.#can(ctx, caller, 'write', target)) return;
    } else if (access === 'push') {
      const visibility = await this.#registry.packageVisibility(namespace, name);
      const allowed = visibility === null
        ? await this.#can(ctx, caller, 'create', { namespace })
        : await this.#can(ctx, caller, 'write', { ...target, visibility });
      if (allowed) return;
    }
    throw caller === null ? this.#unauthorized() : new ApprError('forbidden', 'You are not allowed to do that', {
      package: `${namespace}/${name}`,
    });
  }

  async #can(ctx: Context, caller: P | null, permission: Permission, target: AccessTarget): Promise<boolean> {
    if (!this.#hooks.authorize) return true;
    return this.#hooks.authorize(caller, permission, target, ctx);
  }

  #unauthorized(): ApprError {
    const realm = this.#hooks.realm ?? 'appr';
    return new ApprError('unauthorized-access', 'Authentication required', {}, {
      'WWW-Authenticate': `Basic realm="${realm}", Bearer realm="${realm}"`,
    });
  }
}
