/**
 * The standalone registry: `npm start`.
 *
 *   HOST          listen address (default 127.0.0.1)
 *   PORT          listen port (default 5000)
 *   APPR_PREFIX   mount point of the API (default /cnr)
 *   APPR_STORAGE  a directory for the filesystem store (default ./data), or s3://bucket/prefix
 *   APPR_USERS    a user file (see users.ts: `npx tsx examples/standalone/users.ts add alice`): `appr login`
 *                 then works and package routes need the users' roles. Without it the registry is open to all.
 *   APPR_SECRET   signs login tokens (overrides the user file's `secret`)
 */
import Koa from 'koa';
import {
  createApprRouter, FsStorage, UserStore, type ApprRouterOptions, type StorageAdapter, type StoreUser,
} from '../../lib/index.js';

export async function storageFromEnv(spec: string): Promise<StorageAdapter> {
  if (spec.startsWith('s3://')) {
    const { s3StorageFromUrl } = await import('../../lib/s3.js');
    return s3StorageFromUrl(spec);
  }
  return new FsStorage({ root: spec });
}

const host = process.env.HOST ?? '127.0.0.1';
const port = Number(process.env.PORT ?? 5000);
const prefix = process.env.APPR_PREFIX ?? '/cnr';
const storageSpec = process.env.APPR_STORAGE ?? './data';

const usersFile = process.env.APPR_USERS;

const storage = await storageFromEnv(storageSpec);
const access = await accessFromEnv(usersFile);
const app = new Koa();
const router = createApprRouter({ storage, prefix, ...access.options });
app.use(router.routes()).use(router.allowedMethods());

const server = app.listen(port, host, () => {
  const address = server.address();
  const actualPort = typeof address === 'object' && address ? address.port : port;
  console.log(`koa-appr listening on http://${host}:${actualPort}${prefix} (storage: ${storage.name} ${storageSpec})`);
  for (const line of access.log) console.log(line);
});

/** The built-in user store when APPR_USERS names a file; otherwise no hooks at all (open, as the reference). */
async function accessFromEnv(file: string | undefined): Promise<{ options: Partial<ApprRouterOptions<StoreUser>>; log: string[] }> {
  if (!file) {
    return {
      options: {},
      log: ['koa-appr: WARNING: no APPR_USERS file: the registry is OPEN, anyone can push, pull and delete. ' +
        'Create one with `npx tsx examples/standalone/users.ts add <user>` and set APPR_USERS.'],
    };
  }
  const users = await UserStore.fromFile(file, process.env.APPR_SECRET ? { secret: process.env.APPR_SECRET } : {});
  const log = [`koa-appr: users from ${file} (${users.usernames.length} users; anonymous read of public packages ` +
    `${users.anonymousRead ? 'on' : 'off'}; new packages ${users.defaultVisibility ?? 'public'} by default)`];
  if (users.ephemeralSecret) {
    log.push('koa-appr: WARNING: the user file has no "secret" and APPR_SECRET is unset: login tokens will stop ' +
      'working when the server restarts');
  }
  return {
    options: { auth: users.hooks(), ...(users.defaultVisibility ? { defaultVisibility: users.defaultVisibility } : {}) },
    log,
  };
}

function shutdown(signal: string): void {
  console.log(`koa-appr: ${signal}, stopping`);
  server.close(() => {
    void Promise.resolve(storage.close?.()).finally(() => process.exit(0));
  });
  server.closeIdleConnections();
  setTimeout(() => process.exit(0), 5000).unref();
}
process.once('SIGINT', () => shutdown('SIGINT'));
process.once('SIGTERM', () => shutdown('SIGTERM'));
