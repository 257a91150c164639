/**
 * An existing Koa portal with its own authentication (see portal.ts) that mounts the registry under /cnr and maps
 * its users and teams to registry permissions. The whole integration is the `auth` block below.
 */
import Koa from 'koa';
import Router from '@koa/router';
import { createApprRouter, type StorageAdapter } from '../../lib/index.js';
import type { Portal, PortalUser } from './portal.js';

const NEEDS = { read: 'read', write: 'write', create: 'write', admin: 'admin' } as const;
const RANK = { read: 1, write: 2, admin: 3 } as const;

export function createPortalApp(options: { portal: Portal; storage: StorageAdapter; keys: string[] }): Koa {
  const { portal, storage } = options;
  const app = new Koa();
  app.keys = options.keys;
  app.use(portal.middleware());

  // ---- the registry, with the portal's users and teams -----------------------------------------------------
  const registry = createApprRouter<PortalUser>({
    storage,
    prefix: '/cnr',
    defaultVisibility: 'private',
    auth: {
      // The portal's middleware already read the session cookie or bearer token; also take Basic for curl/CI.
      identify: async (ctx, credentials) =>
        (ctx.state.user as PortalUser | undefined) ??
        (credentials?.scheme === 'basic' ? portal.checkPassword(credentials.username, credentials.password) : null),
      // A user's teams grant read/write/admin per namespace; everyone owns the namespace named after them.
      authorize: (user, permission, { namespace }) => {
        if (!user) return false;
        const grant = namespace === user.name ? 'admin' : portal.grant(user, namespace);
        return grant !== null && RANK[grant] >= RANK[NEEDS[permission]];
      },
      // `appr login`: the CLI stores this and sends it back verbatim; the portal middleware verifies it.
      login: async (username, password) => {
        const user = await portal.checkPassword(username, password);
        return user ? `Bearer ${portal.issueToken(user)}` : null;
      },
    },
  });
  app.use(registry.routes()).use(registry.allowedMethods());

  // ---- the portal's own routes ------------------------------------------------------------------------------
  const site = new Router();
  site.post('/login', async (ctx) => {
    const { username, password } = await readJson(ctx);
    const user = await portal.checkPassword(
      typeof username === 'string' ? username : '',
      typeof password === 'string' ? password : '',
    );
    if (!user) {
      ctx.status = 401;
      ctx.body = { error: 'bad credentials' };
      return;
    }
    ctx.cookies.set('portal_session', user.name, { signed: true, httpOnly: true, sameSite: 'lax' });
    ctx.body = { user: user.name, token: portal.issueToken(user) };
  });
  site.get('/me', (ctx) => {
    const user = ctx.state.user as PortalUser | undefined;
    if (!user) {
      ctx.status = 401;
      ctx.body = { error: 'not logged in' };
      return;
    }
    ctx.body = user;
  });
  site.get('/', (ctx) => {
    ctx.type = 'html';
    ctx.body = '<!doctype html><title>Portal</title><p>Charts live under <a href="/cnr/api/v1/packages">/cnr</a>.</p>';
  });
  app.use(site.routes()).use(site.allowedMethods());
  return app;
}

async function readJson(ctx: Koa.Context): Promise<Record<string, unknown>> {
  let text = '';
  for await (const chunk of ctx.req) {
    text += String(chunk);
    if (text.length > 10_000) ctx.throw(413);
  }
  try {
    const value = JSON.parse(text) as unknown;
    return value && typeof value === 'object' ? (value as Record<string, unknown>) : {};
  } catch {
    return {};
  }
}
