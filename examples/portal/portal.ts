/**
 * Stand-in for the host's existing authentication: users, teams, a signed-cookie session for browsers and
 * HMAC-signed bearer tokens (a minimal HS256 JWT) for API clients. A real portal has its own (passport, an SSO
 * proxy, `jose`, a database...); the registry only needs the few calls `app.ts` makes.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import type { Context, Next } from 'koa';
import { hashPassword, verifyPassword } from '../../lib/index.js';

export type Grant = 'read' | 'write' | 'admin';

export interface PortalUser {
  name: string;
  teams: string[];
}

interface Team {
  members: string[];
  /** What the team may do in each registry namespace. */
  namespaces: Record<string, Grant>;
}

export interface PortalData {
  users: Record<string, { passwordHash: string }>;
  teams: Record<string, Team>;
}

const RANK: Record<Grant, number> = { read: 1, write: 2, admin: 3 };

export class Portal {
  readonly #data: PortalData;
  readonly #secret: Buffer;

  constructor(data: PortalData, secret: string) {
    this.#data = data;
    this.#secret = Buffer.from(secret);
  }

  /** A demo directory: alice runs the platform team, ci-bot is a robot of it, bob is a developer who reads. */
  static async demo(secret: string): Promise<Portal> {
    const hash = (pw: string) => hashPassword(pw, { ln: 12 });
    return new Portal(
      {
        users: {
          alice: { passwordHash: await hash('alice-pw') },
          bob: { passwordHash: await hash('bob-pw') },
          'ci-bot': { passwordHash: await hash('ci-bot-pw') },
          eve: { passwordHash: await hash('eve-pw') },
        },
        teams: {
          platform: { members: ['alice'], namespaces: { acme: 'admin', tools: 'admin' } },
          robots: { members: ['ci-bot'], namespaces: { acme: 'write' } },
          developers: { members: ['bob', 'alice'], namespaces: { acme: 'read', tools: 'read' } },
        },
      },
      secret,
    );
  }

  user(name: string): PortalUser | null {
    if (!Object.hasOwn(this.#data.users, name)) return null;
    const teams = Object.entries(this.#data.teams)
      .filter(([, team]) => team.members.includes(name))
      .map(([team]) => team);
    return { name, teams };
  }

  async checkPassword(name: string, password: string): Promise<PortalUser | null> {
    const record = Object.hasOwn(this.#data.users, name) ? this.#data.users[name] : undefined;
    return record && (await verifyPassword(password, record.passwordHash)) ? this.user(name) : null;
  }

  /** The best grant any of the user's teams has on `namespace`. */
  grant(user: PortalUser, namespace: string): Grant | null {
    let best: Grant | null = null;
    for (const team of user.teams) {
      const grant = this.#data.teams[team]?.namespaces[namespace];
      if (grant && (!best || RANK[grant] > RANK[best])) best = grant;
    }
    return best;
  }

  /** HS256 JWT with `sub` and `exp`. */
  issueToken(user: PortalUser, ttlSeconds = 8 * 3600): string {
    const head = b64url({ alg: 'HS256', typ: 'JWT' });
    const body = b64url({ sub: user.name, exp: Math.floor(Date.now() / 1000) + ttlSeconds });
    return `${head}.${body}.${this.#mac(`${head}.${body}`)}`;
  }

  verifyToken(token: string): PortalUser | null {
    const [head, body, mac] = token.split('.');
    if (!head || !body || !mac) return null;
    const expected = Buffer.from(this.#mac(`${head}.${body}`));
    if (expected.length !== mac.length || !timingSafeEqual(expected, Buffer.from(mac))) return null;
    try {
      const claims = JSON.parse(Buffer.from(body, 'base64url').toString()) as { sub?: unknown; exp?: unknown };
      if (typeof claims.sub !== 'string' || typeof claims.exp !== 'number' || claims.exp * 1000 < Date.now())
        return null;
      return this.user(claims.sub);
    } catch {
      return null;
    }
  }

  /**
   * The portal's authentication middleware: a session cookie (browsers) or a bearer token (API clients) puts the
   * user in `ctx.state.user`. It never refuses a request itself; each route decides what it needs.
   */
  middleware() {
    return async (ctx: Context, next: Next): Promise<void> => {
      const session = ctx.cookies.get('portal_session', { signed: true });
      const bearer = /^bearer\s+(\S+)$/i.exec(ctx.get('Authorization'))?.[1];
      const user = (session ? this.user(session) : null) ?? (bearer ? this.verifyToken(bearer) : null);
      if (user) ctx.state.user = user;
      await next();
    };
  }

  #mac(data: string): string {
    return createHmac('sha256', this.#secret).update(data).digest('base64url');
  }
}

function b64url(value: unknown): string {
  return Buffer.from(JSON.stringify(value)).toString('base64url');
}
