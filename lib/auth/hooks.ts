import type { Context } from 'koa';
import type { Visibility } from '../core/registry.js';

/*
 * The contract between the registry and the host's authentication: the hooks a host gives as `auth`, and the
 * values they are called with. It sits below both its users, the HTTP guard (lib/http/access.ts) that calls the
 * hooks and the user store (lib/auth/user-store.ts) that implements them.
 */

/**
 * What a caller may do on a namespace or package (docs/api.md section 11):
 *  - read: show, pull, blobs, channels (a public package needs none)
 *  - write: push to an existing package, delete a release, add/remove channel releases, delete a channel
 *  - create: the first push of a new package in a namespace (asked about the namespace, `name` absent)
 *  - admin: change a package's visibility
 * Hosts that want finer rules (say, robots may push but not delete) look at `target.action`.
 */
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
  /**
   * Known only where it was read anyway: a push to an existing package, and the list/search filter. Never
   * looked up just to answer the hook, so the check stays ahead of any storage read.
   */
  visibility?: Visibility;
  /**
   * The route asking: `push`, `delete-release`, `add-channel-release`, `delete-channel-release`,
   * `delete-channel`, `set-visibility`, `pull`, `show-manifest`, ..., or `list-packages` / `search-packages`
   * for the list filter. For finer rules than the four permissions.
   */
  action?: string | undefined;
}

/**
 * The host's hooks. All may be async. Without any, everybody may do everything, as with the reference server.
 * `P` is the host's own notion of a caller (a user record, a JWT's claims...).
 */
export interface AuthHooks<P = unknown> {
  /**
   * Who is calling. Return null (or undefined) for an anonymous caller. Gets the parsed `Authorization` header
   * (null when absent); may also read what the host's own middleware left in `ctx.state`. Throwing an ApprError
   * (e.g. 'unauthorized-access' for a bad token) answers with it. Not called on open routes (version, discovery,
   * login, signup, unknown paths): their caller is always anonymous, so a stale token never stops `appr login`
   * from replacing it and no credential is verified where none is needed.
   */
  identify?:
    | ((ctx: Context, credentials: Credentials | null) => P | null | undefined | Promise<P | null | undefined>)
    | undefined;
  /** May `caller` (null = anonymous) have `permission` on `target`? Default: yes. */
  authorize?:
    | ((caller: P | null, permission: Permission, target: AccessTarget, ctx: Context) => boolean | Promise<boolean>)
    | undefined;
  /** Whether anonymous callers may use the API at all (default true). When false they get 401. */
  anonymous?: boolean | undefined;
  /** `POST /api/v1/users/login`: return the token the CLI will send back verbatim, or null for bad credentials. */
  login?: ((username: string, password: string, ctx: Context) => string | null | Promise<string | null>) | undefined;
  /** `POST /api/v1/users`: create an account and return its token, or null to refuse. */
  signup?:
    | ((
        input: { username: string; password: string; email?: string },
        ctx: Context,
      ) => string | null | Promise<string | null>)
    | undefined;
  /** Realm named in `WWW-Authenticate` (default 'appr'). */
  realm?: string | undefined;
  /**
   * The caller's name in audit events and request logs (default: its `name`, `username` or `id`, or the caller
   * itself when it is a string; see `defaultActorName`). Not called for anonymous callers (their actor is null).
   */
  actorName?: ((caller: P) => string | null) | undefined;
}
