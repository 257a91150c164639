/** Audit events: one per stored change, with the actor the user store identified; none for refused changes. */
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { expect } from 'chai';
import Koa from 'koa';
import {
  createApprRouter,
  jsonLinesAudit,
  MemoryStorage,
  Registry,
  StorageUnavailableError,
  UserStore,
  type AuditEvent,
  type StoreUser,
} from '../../lib/index.js';
import { basic, listen, type Running } from '../auth/helpers.js';
import { SwitchableStorage } from './helpers.js';
import { makeTarGz } from '../helpers/blobs.js';
import { userFile } from '../helpers/users.js';

const PKG = '/cnr/api/v1/packages/acme/app';

describe('audit events', () => {
  let events: AuditEvent[];
  let server: Running;
  let blob: Buffer;
  let other: Buffer;
  const alice = basic('alice', 'alice-pw');
  const bob = basic('bob', 'bob-pw');
  const reader = basic('reader', 'reader-pw');

  before(async () => {
    blob = await makeTarGz({ 'Chart.yaml': 'name: app\nversion: 1.0.0\n' });
    other = await makeTarGz({ 'Chart.yaml': 'name: app\nversion: 1.0.0\n', 'values.yaml': 'x: 1\n' });
  });

  beforeEach(async () => {
    events = [];
    const users = new UserStore(
      await userFile({
        alice: ['alice-pw', { acme: 'admin' }],
        bob: ['bob-pw', { acme: 'write' }],
        reader: ['reader-pw', { acme: 'read' }],
      }),
    );
    const app = new Koa();
    const router = createApprRouter<StoreUser>({
      storage: new MemoryStorage(),
      auth: users.hooks(),
      audit: (event) => {
        events.push(event);
      },
    });
    app.use(router.routes()).use(router.allowedMethods());
    server = await listen(app);
  });

  afterEach(() => server.close());

  const push = (auth: string, release: string, body = blob, force = false) =>
    server.send('POST', PKG, {
      auth,
      json: { release, media_type: 'helm', blob: body.toString('base64'), force },
    });

  it('reports each change once, with the actor, and nothing for refused or failed requests', async () => {
    const login = (password: string) =>
      server.send('POST', '/cnr/api/v1/users/login', {
        json: { user: { username: 'alice', password } },
      });
    expect((await login('wrong')).status).to.equal(401);
    expect((await login('alice-pw')).status).to.equal(200);

    expect((await push(alice, '1.0.0')).status).to.equal(200);
    expect((await push(bob, '1.1.0')).status).to.equal(200);
    expect((await push(bob, '1.1.0', other)).status, 'exists').to.equal(409);
    expect((await push(bob, '1.1.0', other, true)).status).to.equal(200);
    expect((await push(reader, '2.0.0')).status, 'no write role').to.equal(403);
    expect((await server.send('POST', `${PKG}/channels/stable/1.0.0`, { auth: bob })).status).to.equal(200);
    expect((await server.send('POST', `${PKG}/channels/stable/1.1.0`, { auth: bob })).status).to.equal(200);
    expect((await server.send('DELETE', `${PKG}/channels/stable/1.1.0`, { auth: bob })).status).to.equal(200);
    expect((await server.send('DELETE', `${PKG}/channels/stable`, { auth: alice })).status).to.equal(200);
    expect((await server.send('DELETE', `${PKG}/channels/stable`, { auth: alice })).status, 'gone').to.equal(404);
    expect(
      (await server.send('POST', `${PKG}/visibility`, { auth: alice, json: { visibility: 'private' } })).status,
    ).to.equal(200);
    expect(
      (await server.send('POST', `${PKG}/visibility`, { auth: bob, json: { visibility: 'public' } })).status,
      'bob is no admin',
    ).to.equal(403);
    expect((await server.send('DELETE', `${PKG}/1.0.0/helm`, { auth: bob })).status).to.equal(200);
    expect((await server.send('DELETE', `${PKG}/1.0.0/helm`, { auth: bob })).status, 'gone').to.equal(404);
    expect((await server.send('DELETE', `${PKG}/1.1.0/helm`, { auth: alice })).status).to.equal(200);

    for (const event of events) expect(event.time, event.type).to.match(/^\d{4}-\d\d-\d\dT[\d:.]+Z$/);
    const shapes = events.map(({ time: _time, ...rest }) => rest as Record<string, unknown>);
    // The release's digest, as the contract defines it: of the uncompressed tar.
    const digest = (bytes: Buffer) => createHash('sha256').update(gunzipSync(bytes)).digest('hex');
    expect(digest(blob)).to.match(/^[0-9a-f]{64}$/);
    expect(digest(other))
      .to.match(/^[0-9a-f]{64}$/)
      .and.not.equal(digest(blob));
    expect(shapes).to.deep.equal([
      { type: 'login', actor: 'alice', outcome: 'failure' },
      { type: 'login', actor: 'alice', outcome: 'success' },
      {
        type: 'push',
        actor: 'alice',
        package: 'acme/app',
        release: '1.0.0',
        mediaType: 'helm',
        digest: digest(blob),
        size: blob.length,
        forced: false,
        created: true,
      },
      {
        type: 'push',
        actor: 'bob',
        package: 'acme/app',
        release: '1.1.0',
        mediaType: 'helm',
        digest: digest(blob),
        size: blob.length,
        forced: false,
        created: false,
      },
      {
        type: 'push',
        actor: 'bob',
        package: 'acme/app',
        release: '1.1.0',
        mediaType: 'helm',
        digest: digest(other),
        size: other.length,
        forced: true,
        created: false,
      },
      { type: 'channel-add', actor: 'bob', package: 'acme/app', channel: 'stable', release: '1.0.0' },
      { type: 'channel-add', actor: 'bob', package: 'acme/app', channel: 'stable', release: '1.1.0' },
      { type: 'channel-remove', actor: 'bob', package: 'acme/app', channel: 'stable', release: '1.1.0' },
      { type: 'channel-delete', actor: 'alice', package: 'acme/app', channel: 'stable' },
      { type: 'visibility', actor: 'alice', package: 'acme/app', visibility: 'private', previous: 'public' },
      { type: 'delete', actor: 'bob', package: 'acme/app', release: '1.0.0', mediaType: 'helm', packageDeleted: false },
      {
        type: 'delete',
        actor: 'alice',
        package: 'acme/app',
        release: '1.1.0',
        mediaType: 'helm',
        packageDeleted: true,
      },
    ]);
    expect(JSON.stringify(events)).not.to.include('alice-pw').and.not.to.include('wrong');
  });

  it('reports each purge once, with the actor and what it withdrew; nothing for a refused or unknown one', async () => {
    const digest = (bytes: Buffer) => createHash('sha256').update(gunzipSync(bytes)).digest('hex');
    const third = await makeTarGz({ 'Chart.yaml': 'name: app\nversion: 3.0.0\n' });
    expect((await push(alice, '1.0.0')).status).to.equal(200);
    expect((await push(bob, '1.1.0')).status).to.equal(200);
    expect((await push(bob, '2.0.0', other)).status).to.equal(200);
    expect((await push(bob, '3.0.0', third)).status).to.equal(200);
    // Its blob stays after the delete: a purge then withdraws the blob alone.
    expect((await server.send('DELETE', `${PKG}/3.0.0/helm`, { auth: bob })).status).to.equal(200);
    events = [];
    const purge = (auth: string, hex: string) => server.send('DELETE', `${PKG}/blobs/sha256/${hex}`, { auth });

    expect((await purge(bob, digest(blob))).status, 'bob is no admin').to.equal(403);
    expect((await purge(reader, digest(blob))).status, 'reader is no admin').to.equal(403);
    expect((await purge(alice, digest(third))).status).to.equal(200);
    expect((await purge(alice, digest(blob))).status).to.equal(200);
    expect((await purge(alice, digest(blob))).status, 'gone').to.equal(404);
    expect((await purge(alice, 'not-a-digest')).status, 'invalid').to.equal(404);
    expect((await purge(alice, digest(other))).status).to.equal(200);

    for (const event of events) expect(event.time, event.type).to.match(/^\d{4}-\d\d-\d\dT[\d:.]+Z$/);
    expect(events.map(({ time: _time, ...rest }) => rest)).to.deep.equal([
      {
        type: 'purge',
        actor: 'alice',
        package: 'acme/app',
        digest: digest(third),
        releases: [],
        blobDeleted: true,
        packageDeleted: false,
      },
      {
        type: 'purge',
        actor: 'alice',
        package: 'acme/app',
        digest: digest(blob),
        releases: [
          { release: '1.0.0', mediaType: 'helm' },
          { release: '1.1.0', mediaType: 'helm' },
        ],
        blobDeleted: true,
        packageDeleted: false,
      },
      {
        type: 'purge',
        actor: 'alice',
        package: 'acme/app',
        digest: digest(other),
        releases: [{ release: '2.0.0', mediaType: 'helm' }],
        blobDeleted: true,
        packageDeleted: true,
      },
    ]);
  });

  it('a push that recreates a deleted package says so', async () => {
    expect((await push(alice, '1.0.0')).status).to.equal(200);
    expect((await server.send('DELETE', `${PKG}/1.0.0/helm`, { auth: alice })).status).to.equal(200);
    expect((await push(bob, '1.0.0')).status).to.equal(200);
    const pushes = events.filter((e) => e.type === 'push');
    expect(pushes.map((e) => [e.actor, e.type === 'push' && e.created])).to.deep.equal([
      ['alice', true],
      ['bob', true],
    ]);
  });
});

describe('audit hooks and writers', () => {
  it('a failing hook is logged and the change stands', async () => {
    const logged: { obj: object; msg?: string | undefined }[] = [];
    const logger = {
      info: () => undefined,
      warn: () => undefined,
      error: (obj: object, msg?: string) => {
        logged.push({ obj, msg });
      },
    };
    const registry = new Registry({
      storage: new MemoryStorage(),
      logger,
      audit: async () => {
        throw new Error('audit store down');
      },
    });
    await registry.push({ namespace: 'acme', name: 'app', release: '1.0.0', blob: await makeTarGz(), actor: 'ci' });
    expect(await registry.packageVisibility('acme', 'app')).to.equal('public');
    expect(logged).to.have.length(1);
    expect(logged[0]!.msg).to.match(/audit hook failed/);
    expect((logged[0]!.obj as { err: Error }).err.message).to.equal('audit store down');
  });

  it('changes made from code carry the actor they are given, or null', async () => {
    const events: AuditEvent[] = [];
    const registry = new Registry({
      storage: new MemoryStorage(),
      audit: (event) => {
        events.push(event);
      },
    });
    await registry.push({ namespace: 'acme', name: 'app', release: '1.0.0', blob: await makeTarGz() });
    await registry.setVisibility('acme', 'app', 'private', { actor: 'cron' });
    const { content } = await registry.showManifest('acme', 'app', '1.0.0', 'kpm');
    await registry.purgeBlob('acme', 'app', content.digest, { actor: 'security' });
    expect(events.map((e) => [e.type, e.actor])).to.deep.equal([
      ['push', null],
      ['visibility', 'cron'],
      ['purge', 'security'],
    ]);
  });

  it('reports no purge that failed on storage, and the purge that then succeeds once', async () => {
    const events: AuditEvent[] = [];
    const storage = new SwitchableStorage(new MemoryStorage());
    const app = new Koa();
    const router = createApprRouter({
      storage,
      audit: (event) => {
        events.push(event);
      },
    });
    app.use(router.routes());
    const running = await listen(app);
    try {
      const blob = await makeTarGz();
      const pushed = await running.send('POST', PKG, { json: { release: '1.0.0', blob: blob.toString('base64') } });
      expect(pushed.status).to.equal(200);
      const hex = createHash('sha256').update(gunzipSync(blob)).digest('hex');
      storage.readOnly = true;
      expect((await running.send('DELETE', `${PKG}/blobs/sha256/${hex}`)).status).to.equal(503);
      storage.readOnly = false;
      expect((await running.send('DELETE', `${PKG}/blobs/sha256/${hex}`)).status).to.equal(200);
    } finally {
      await running.close();
    }
    expect(events.map((e) => [e.type, e.actor])).to.deep.equal([
      ['push', null],
      ['purge', null],
    ]);
  });

  it('reports the releases a purge deleted before storage failed on the blob, and the blob on the retry', async () => {
    const events: AuditEvent[] = [];
    // The package document's change goes through; deleting the blob then fails (the S3 outage that starts midway).
    class BlobDeleteFails extends MemoryStorage {
      failBlobDeletes = false;
      override async delete(key: string, options?: { ifMatch?: string }): Promise<boolean> {
        if (this.failBlobDeletes && key.includes('blobs/')) throw new StorageUnavailableError('AccessDenied');
        return super.delete(key, options);
      }
    }
    const storage = new BlobDeleteFails();
    const app = new Koa();
    const router = createApprRouter({ storage, audit: (event) => void events.push(event) });
    app.use(router.routes());
    const running = await listen(app);
    let hex: string;
    try {
      const blob = await makeTarGz();
      const pushed = await running.send('POST', PKG, { json: { release: '1.0.0', blob: blob.toString('base64') } });
      expect(pushed.status).to.equal(200);
      hex = createHash('sha256').update(gunzipSync(blob)).digest('hex');
      storage.failBlobDeletes = true;
      expect((await running.send('DELETE', `${PKG}/blobs/sha256/${hex}`)).status).to.equal(503);
      expect((await running.send('GET', `${PKG}/1.0.0/kpm/pull`)).status, 'the release is gone').to.equal(404);
      storage.failBlobDeletes = false;
      expect((await running.send('DELETE', `${PKG}/blobs/sha256/${hex}`)).status).to.equal(200);
    } finally {
      await running.close();
    }
    const purges = events.filter((e) => e.type === 'purge').map(({ time: _time, ...rest }) => rest);
    expect(purges).to.deep.equal([
      {
        type: 'purge',
        package: 'acme/app',
        digest: hex,
        releases: [{ release: '1.0.0', mediaType: 'kpm' }],
        blobDeleted: false,
        packageDeleted: true,
        actor: null,
      },
      {
        type: 'purge',
        package: 'acme/app',
        digest: hex,
        releases: [],
        blobDeleted: true,
        packageDeleted: false,
        actor: null,
      },
    ]);
  });

  it('names callers with auth.actorName when the host gives it', async () => {
    const events: AuditEvent[] = [];
    const app = new Koa();
    const router = createApprRouter<{ sub: string }>({
      storage: new MemoryStorage(),
      audit: (event) => {
        events.push(event);
      },
      auth: { identify: () => ({ sub: 'user-42' }), actorName: (caller) => `oidc:${caller.sub}` },
    });
    app.use(router.routes());
    const running = await listen(app);
    try {
      const res = await running.send('POST', PKG, {
        json: { release: '1.0.0', blob: (await makeTarGz()).toString('base64') },
      });
      expect(res.status).to.equal(200);
    } finally {
      await running.close();
    }
    expect(events.map((e) => e.actor)).to.deep.equal(['oidc:user-42']);
  });

  it('jsonLinesAudit appends one JSON object per line to a file', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'appr-audit-'));
    try {
      const file = join(dir, 'audit.jsonl');
      const writer = jsonLinesAudit(file);
      const registry = new Registry({ storage: new MemoryStorage(), audit: writer.hook });
      await registry.push({ namespace: 'acme', name: 'app', release: '1.0.0', blob: await makeTarGz(), actor: 'ci' });
      await registry.deleteRelease('acme', 'app', '1.0.0', 'kpm', { actor: 'ops' });
      await writer.close();
      const lines = (await readFile(file, 'utf8')).split('\n');
      expect(lines.pop()).to.equal('');
      expect(lines.map((line) => JSON.parse(line)).map((e: AuditEvent) => [e.type, e.actor])).to.deep.equal([
        ['push', 'ci'],
        ['delete', 'ops'],
      ]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
