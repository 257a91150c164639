import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { readFile, rename, stat, writeFile } from 'node:fs/promises';
import { LRUCache } from 'lru-cache';
import type { Visibility } from '../core/registry.js';
import type { AccessTarget, AuthHooks, Credentials, Permission } from './hooks.js';
import { userStoreOptions } from './options.js';
import { parseOptions } from '../options/validate.js';
import { FailureLimiter, HashSlots, type FailureLimitOptions } from './limits.js';
import { hashPassword, isPasswordHash, verifyPassword } from './password.js';

/**
 * The built-in user store of the standalone server: one JSON file.
 *
 *     {
 *       "anonymousRead": true,
 *       "defaultVisibility": "private",
 *       "secret": "<random, signs login tokens>",
 *       "tokenTtlDays": 30,
 *       "users": {
 *         "alice": { "password": "$scrypt$ln=15,r=8,p=1$...$...", "roles": { "alice": "admin", "*": "read" } },
 *         "ci":    { "password": "$scrypt$...", "roles": { "acme": "write" } }
 *       }
 *     }
 *
 * Roles are per namespace (`*` = every namespace); a user's role on a namespace is the higher of its own entry
 * and `*`. `read` reads private packages; `write` also pushes (creating packages), deletes and moves channels;
 * `admin` also changes visibility. Public packages are readable by every logged-in user, and by anonymous
 * callers when `anonymousRead` is true; when it is false, anonymous callers get 401 on every package route.
 */
export type Role = 'read' | 'write' | 'admin';

export interface UserRecord {
  /** A hash from `hashPassword` (`$scrypt$...`). */
  password: string;
  roles?: Record<string, Role>;
}

export interface UserFile {
  /** Anonymous callers may read (and list) public packages (default false). */
  anonymousRead?: boolean;
  /** Visibility of a package whose first push does not say (default: the registry's, `public`). */
  defaultVisibility?: Visibility;
  /** Signs the tokens `login` hands out. Without one (and no `secret` option) a random per-process secret is used. */
  secret?: string;
  /** Lifetime of login tokens in days (default 30). */
  tokenTtlDays?: number;
  users: Record<string, UserRecord>;
}

/** The caller, as the store's hooks identify it. */
export interface StoreUser {
  username: string;
  roles: Readonly<Record<string, Role>>;
}

export interface UserStoreOptions {
  /** Overrides the file's `secret` (e.g. from an environment variable). */
  secret?: string | undefined;
  /** How often at most a file-backed store checks whether the file changed (default 2000 ms; 0 = never). */
  reloadIntervalMs?: number;
  /** Where reload failures go (default console.error). */
  log?: (message: string) => void;
  /** Clock in ms, for tests. */
  now?: () => number;
  /**
   * Failed logins and failed Basic checks allowed per client address and per user name before further checks are
   * answered 429 with `Retry-After` (defaults: 30 a minute per address, then blocked a minute; 20 in five minutes
   * per user name, then blocked five minutes). `false` turns one off.
   */
  failureLimits?: FailureLimitOptions | undefined;
  /** Password hashes computed at once (default 2; each takes a libuv thread for 50-150 ms). */
  maxConcurrentHashes?: number;
  /** Checks that may wait for a hash slot (default 64); beyond, 429 with `Retry-After: 1`. */
  maxQueuedHashes?: number;
  /** How long a failed user name + password pair is remembered without hashing again (default 30000 ms; 0 = never). */
  failureCacheMs?: number;
}

const ROLE_RANK: Record<Role, number> = { read: 1, write: 2, admin: 3 };
const NEEDS: Record<Permission, number> = { read: 1, write: 2, create: 2, admin: 3 };
/** User names: also `+` for Quay-style robot accounts (`org+deployer`), and `@` for e-mail-like names. */
const USERNAME = /^[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}$/;
/** Longer passwords are refused without hashing (a hash of megabytes of password would be a cheap attack). */
const MAX_PASSWORD_LENGTH = 1024;
const NAMESPACE = /^(\*|[A-Za-z0-9][A-Za-z0-9._-]{0,127})$/;
const TOKEN_PREFIX = 'appr1';

/** Validate a parsed user file; throws a TypeError naming the first problem. */
export function checkUserFile(data: unknown, source = 'user file'): UserFile {
  const fail = (why: string): never => {
    throw new TypeError(`koa-appr: ${source}: ${why}`);
  };
  if (!data || typeof data !== 'object' || Array.isArray(data)) fail('must be a JSON object');
  const file = data as Record<string, unknown>;
  if (file.anonymousRead !== undefined && typeof file.anonymousRead !== 'boolean')
    fail('anonymousRead must be true or false');
  if (
    file.defaultVisibility !== undefined &&
    file.defaultVisibility !== 'public' &&
    file.defaultVisibility !== 'private'
  ) {
    fail('defaultVisibility must be "public" or "private"');
  }
  if (file.secret !== undefined && (typeof file.secret !== 'string' || file.secret.length < 16)) {
    fail('secret must be a string of at least 16 characters');
  }
  if (file.tokenTtlDays !== undefined && !(typeof file.tokenTtlDays === 'number' && file.tokenTtlDays > 0)) {
    fail('tokenTtlDays must be a positive number');
  }
  const users = file.users;
  if (!users || typeof users !== 'object' || Array.isArray(users)) fail('users must be an object');
  for (const [name, record] of Object.entries(users as Record<string, unknown>)) {
    if (!USERNAME.test(name)) fail(`invalid user name ${JSON.stringify(name)}`);
    const user = record as Record<string, unknown> | null;
    if (!user || typeof user !== 'object') fail(`user ${name} must be an object`);
    if (typeof user!.password !== 'string' || !isPasswordHash(user!.password)) {
      fail(`user ${name}: password must be a hash made by hashPassword ("$scrypt$...")`);
    }
    const roles = user!.roles ?? {};
    if (typeof roles !== 'object' || Array.isArray(roles)) fail(`user ${name}: roles must be an object`);
    for (const [namespace, role] of Object.entries(roles as Record<string, unknown>)) {
      if (!NAMESPACE.test(namespace)) fail(`user ${name}: invalid namespace ${JSON.stringify(namespace)}`);
      if (role !== 'read' && role !== 'write' && role !== 'admin') {
        fail(`user ${name}: role on ${namespace} must be read, write or admin`);
      }
    }
  }
  return data as UserFile;
}

export async function readUserFile(path: string): Promise<UserFile> {
  const text = await readFile(path, 'utf8');
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (err) {
    throw new TypeError(`koa-appr: ${path} is not valid JSON: ${(err as Error).message}`, { cause: err });
  }
  return checkUserFile(data, path);
}

/** Write atomically (temporary file, then rename), readable by its owner only: it holds hashes and the secret. */
export async function writeUserFile(path: string, data: UserFile): Promise<void> {
  checkUserFile(data, path);
  const temp = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  await writeFile(temp, `${JSON.stringify(data, null, 2)}\n`, { mode: 0o600 });
  await rename(temp, path);
}

export function newSecret(): string {
  return randomBytes(32).toString('base64url');
}

interface Loaded {
  file: UserFile;
  secret: Buffer;
}

/**
 * Users, roles and tokens from a `UserFile`, and the `AuthHooks` that put them in front of the registry:
 *
 *     const users = await UserStore.fromFile('users.json');
 *     createApprRouter({ storage, auth: users.hooks(), defaultVisibility: users.defaultVisibility });
 *
 * Credentials accepted: `Basic base64(user:password)` (any case, as Quay's login token and curl send it),
 * checked against the scrypt hash (at most `maxConcurrentHashes` at once; successes cached for five minutes,
 * failures for `failureCacheMs`; failures limited per client and per user name, see `failureLimits`); and the `Bearer appr1.<payload>.<hmac>`
 * tokens that `login` returns (HMAC-SHA256 with the secret; they carry the user, an expiry and a fingerprint of
 * the user's password hash, so changing a password or removing a user revokes them).
 */
export class UserStore {
  #loaded: Loaded;
  readonly #ephemeralSecret: boolean;
  readonly #options: Required<Omit<UserStoreOptions, 'secret' | 'failureLimits'>> &
    Pick<UserStoreOptions, 'secret' | 'failureLimits'>;
  readonly #now: () => number;
  readonly #basicCache = new LRUCache<string, { username: string; fingerprint: string }>({
    max: 1000,
    ttl: 5 * 60_000,
  });
  /** Failed pairs, keyed like the success cache; valid only while the user's hash (or absence) is unchanged. */
  readonly #failureCache: LRUCache<string, { fingerprint: string }> | undefined;
  readonly #limits: FailureLimiter;
  readonly #slots: HashSlots;
  #dummyHash: Promise<string> | undefined;
  #path: string | undefined;
  #stamp = '';
  #checkedAt = 0;
  #reloading: Promise<void> | undefined;

  /** Throws an `OptionError` (lib/options/validate.ts) for a bad option; the schema is lib/options/schema.ts. */
  constructor(file: UserFile, input: UserStoreOptions = {}) {
    checkUserFile(file);
    const options = parseOptions(userStoreOptions, input, 'UserStore');
    this.#options = options;
    this.#now = options.now;
    this.#limits = new FailureLimiter(options.failureLimits);
    this.#slots = new HashSlots(options.maxConcurrentHashes, options.maxQueuedHashes);
    const failureTtl = options.failureCacheMs;
    this.#failureCache = failureTtl > 0 ? new LRUCache({ max: 10_000, ttl: failureTtl }) : undefined;
    this.#ephemeralSecret = !options.secret && !file.secret;
    this.#loaded = this.#load(file, this.#ephemeralSecret ? randomBytes(32) : undefined);
  }

  /** Load a user file; the store notices later edits of it (see `reloadIntervalMs`). */
  static async fromFile(path: string, options: UserStoreOptions = {}): Promise<UserStore> {
    const store = new UserStore(await readUserFile(path), options);
    store.#path = path;
    store.#stamp = await fileStamp(path);
    store.#checkedAt = store.#now();
    return store;
  }

  get anonymousRead(): boolean {
    return this.#loaded.file.anonymousRead === true;
  }

  get defaultVisibility(): Visibility | undefined {
    return this.#loaded.file.defaultVisibility;
  }

  /** True when tokens are signed with a random per-process secret: they stop working at restart. */
  get ephemeralSecret(): boolean {
    return this.#ephemeralSecret;
  }

  get usernames(): string[] {
    return Object.keys(this.#loaded.file.users);
  }

  /** Hashes computed, running and waiting for a slot (for metrics and tests). */
  get hashStats(): { computed: number; active: number; queued: number } {
    return { computed: this.#slots.computed, active: this.#slots.active, queued: this.#slots.queued };
  }

  /**
   * The user if `password` is theirs, else null. Unknown users cost a hash too, so timing does not tell them apart.
   * `client` (an address) counts failures per client too. Throws ApprError `too-many-requests` (429, with
   * `Retry-After`) when the client or the user name has failed too often, or too many hashes are waiting.
   * Successes are cached five minutes and failures `failureCacheMs`, both keyed by a SHA-256 of name and password
   * and dropped when the user's hash changes.
   */
  async checkPassword(username: string, password: string, client?: string): Promise<StoreUser | null> {
    await this.#maybeReload();
    const key = createHash('sha256').update(`${username}\0${password}`).digest('base64url');
    const record = this.#record(username);
    const print = record ? fingerprint(record) : '-';
    const cached = this.#basicCache.get(key);
    if (record && cached && cached.username === username && cached.fingerprint === print) {
      return this.#user(username, record);
    }
    await this.#limits.check(client, username);
    const failed = async (): Promise<null> => {
      this.#failureCache?.set(key, { fingerprint: print });
      await this.#limits.fail(client, username);
      return null;
    };
    if (this.#failureCache?.get(key)?.fingerprint === print) return failed();
    // Names and passwords no stored user can have are refused without a hash (nothing secret is revealed).
    if (!USERNAME.test(username) || password.length > MAX_PASSWORD_LENGTH) return failed();
    const ok = await this.#slots.run(async () => {
      if (!record) {
        this.#dummyHash ??= hashPassword(randomBytes(16).toString('hex'));
        await verifyPassword(password, await this.#dummyHash);
        return false;
      }
      return verifyPassword(password, record.password);
    });
    // The file may have been reloaded while hashing: only the record that was checked counts.
    if (!ok || !record || this.#record(username) !== record) return failed();
    this.#basicCache.set(key, { username, fingerprint: print });
    return this.#user(username, record);
  }

  /** A signed token for `username` (no password check: for `login` after one, and for minting robot tokens). */
  issueToken(username: string, ttlSeconds?: number): string {
    const record = this.#record(username);
    if (!record) throw new TypeError(`koa-appr: no user ${username}`);
    const ttl = ttlSeconds ?? (this.#loaded.file.tokenTtlDays ?? 30) * 86_400;
    const payload = Buffer.from(
      JSON.stringify({
        u: username,
        f: fingerprint(record),
        exp: Math.floor(this.#now() / 1000) + Math.round(ttl),
      }),
    ).toString('base64url');
    const body = `${TOKEN_PREFIX}.${payload}`;
    return `${body}.${this.#sign(body)}`;
  }

  /** The user a token from `issueToken` names, if its signature, expiry and password fingerprint still hold. */
  async checkToken(token: string): Promise<StoreUser | null> {
    await this.#maybeReload();
    const parts = token.split('.');
    if (parts.length !== 3 || parts[0] !== TOKEN_PREFIX) return null;
    const expected = Buffer.from(this.#sign(`${parts[0]}.${parts[1]}`));
    const given = Buffer.from(parts[2] ?? '');
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) return null;
    let claims: { u?: unknown; f?: unknown; exp?: unknown };
    try {
      claims = JSON.parse(Buffer.from(parts[1] ?? '', 'base64url').toString('utf8')) as typeof claims;
    } catch {
      return null;
    }
    if (typeof claims.u !== 'string' || typeof claims.exp !== 'number' || claims.exp * 1000 <= this.#now()) return null;
    const record = this.#record(claims.u);
    if (!record || claims.f !== fingerprint(record)) return null;
    return this.#user(claims.u, record);
  }

  /** Who the credentials name, or null (absent, wrong, expired: the caller is then anonymous). */
  async identify(credentials: Credentials | null, client?: string): Promise<StoreUser | null> {
    // Also for anonymous callers: the anonymous-read switch is read right after this, and may have changed.
    await this.#maybeReload();
    if (!credentials) return null;
    if (credentials.scheme === 'basic') return this.checkPassword(credentials.username, credentials.password, client);
    return this.checkToken(credentials.token);
  }

  /** A user's role on a namespace: the higher of its own entry and `*`. */
  roleOf(user: StoreUser, namespace: string): Role | null {
    const own = Object.hasOwn(user.roles, namespace) ? user.roles[namespace] : undefined;
    const any = Object.hasOwn(user.roles, '*') ? user.roles['*'] : undefined;
    const best = [own, any].filter((r): r is Role => r !== undefined).sort((a, b) => ROLE_RANK[b] - ROLE_RANK[a])[0];
    return best ?? null;
  }

  can(user: StoreUser | null, permission: Permission, target: AccessTarget): boolean {
    if (!user) return false;
    const role = this.roleOf(user, target.namespace);
    return role !== null && ROLE_RANK[role] >= NEEDS[permission];
  }

  /** The registry hooks: identify, authorize, anonymous, login (which returns `Bearer <token>`). No signup. */
  hooks(): AuthHooks<StoreUser> {
    // `anonymous` is a getter (the file can change), where `this` is the hooks object: keep the store by name.
    // eslint-disable-next-line @typescript-eslint/no-this-alias
    const store = this;
    return {
      identify: (ctx, credentials) => store.identify(credentials, ctx.ip),
      authorize: (user, permission, target) => store.can(user, permission, target),
      get anonymous() {
        return store.anonymousRead;
      },
      login: async (username, password, ctx) => {
        const user = await store.checkPassword(username, password, ctx.ip);
        return user ? `Bearer ${store.issueToken(user.username)}` : null;
      },
      realm: 'koa-appr',
    };
  }

  #record(username: string): UserRecord | undefined {
    const users = this.#loaded.file.users;
    return Object.hasOwn(users, username) ? users[username] : undefined;
  }

  #user(username: string, record: UserRecord): StoreUser {
    return { username, roles: { ...(record.roles ?? {}) } };
  }

  #sign(body: string): string {
    return createHmac('sha256', this.#loaded.secret).update(body).digest('base64url');
  }

  #load(file: UserFile, fallbackSecret?: Buffer): Loaded {
    const secret = this.#options.secret ?? file.secret;
    return { file, secret: secret ? Buffer.from(secret) : (fallbackSecret ?? this.#loaded.secret) };
  }

  /** Re-read the file when its size or mtime changed; a broken edit keeps the previous version (and says so). */
  async #maybeReload(): Promise<void> {
    const interval = this.#options.reloadIntervalMs;
    if (!this.#path || interval <= 0 || this.#now() - this.#checkedAt < interval) return;
    this.#reloading ??= (async () => {
      const path = this.#path as string;
      try {
        const stamp = await fileStamp(path);
        if (stamp !== this.#stamp) {
          const file = await readUserFile(path);
          this.#loaded = this.#load(file);
          this.#stamp = stamp;
          this.#basicCache.clear();
          this.#failureCache?.clear();
        }
      } catch (err) {
        this.#options.log(`koa-appr: keeping the previous users: ${(err as Error).message}`);
      } finally {
        this.#checkedAt = this.#now();
        this.#reloading = undefined;
      }
    })();
    await this.#reloading;
  }
}

/** Changes when a password hash changes: tokens carry it, so a new password revokes the old tokens. */
function fingerprint(record: UserRecord): string {
  return createHash('sha256').update(record.password).digest('base64url').slice(0, 16);
}

async function fileStamp(path: string): Promise<string> {
  const info = await stat(path);
  return `${info.size}:${info.mtimeMs}`;
}
