/** The standalone server's built-in user store: hashes, roles, tokens, the file, and the hooks over HTTP. */
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { expect } from 'chai';
import {
  checkUserFile,
  hashPassword,
  isPasswordHash,
  readUserFile,
  UserStore,
  verifyPassword,
  type UserFile,
} from '../../lib/index.js';
import { main as usersCli } from '../../lib/server/users.js';
import { basic, pushPackage, startRegistry } from './helpers.js';
import { makeTarGz } from '../helpers/blobs.js';
import { rejection } from '../helpers/expect.js';
import { tempDir } from '../helpers/temp.js';
import { FAST_HASH, TEST_SECRET, userFile } from '../helpers/users.js';

async function sampleFile(extra: Partial<UserFile> = {}): Promise<UserFile> {
  return userFile(
    {
      alice: ['alice-pw', { alice: 'admin', acme: 'write' }],
      reader: ['reader-pw', { '*': 'read', acme: 'admin' }],
      nobody: ['nobody-pw'],
    },
    extra,
  );
}

describe('password hashes', () => {
  it('verifies the right password and refuses a wrong one', async () => {
    const hash = await hashPassword('correct horse', FAST_HASH);
    expect(hash).to.match(/^\$scrypt\$ln=10,r=8,p=1\$[A-Za-z0-9+/]+\$[A-Za-z0-9+/]+$/);
    expect(await verifyPassword('correct horse', hash)).to.equal(true);
    expect(await verifyPassword('correct horse ', hash)).to.equal(false);
    expect(await verifyPassword('', hash)).to.equal(false);
  });

  it('salts: the same password hashes differently each time', async () => {
    expect(await hashPassword('pw', FAST_HASH)).not.to.equal(await hashPassword('pw', FAST_HASH));
  });

  it('uses the parameters stored in the hash (default cost ln=15)', async () => {
    const strong = await hashPassword('pw');
    expect(strong).to.match(/^\$scrypt\$ln=15,r=8,p=1\$/);
    expect(await verifyPassword('pw', strong)).to.equal(true);
  });

  it('treats a malformed or out-of-range hash as a mismatch, never as a match', async () => {
    for (const bad of ['pw', '', '$scrypt$ln=30,r=8,p=1$AAAA$AAAA', '$scrypt$ln=10,r=8,p=1$AAAA$', '$2b$10$abcdefg']) {
      expect(isPasswordHash(bad), bad).to.equal(false);
      expect(await verifyPassword('pw', bad), bad).to.equal(false);
    }
    await expectReject(() => hashPassword('pw', { ln: 30 }), /out of range/);
  });
});

describe('user file', () => {
  it('accepts the documented format', async () => {
    expect(checkUserFile(await sampleFile())).to.be.an('object');
  });

  it('refuses what would silently weaken it', async () => {
    const good = await sampleFile();
    const alice = good.users.alice!;
    const cases: [unknown, RegExp][] = [
      [[], /JSON object/],
      [{ users: [] }, /users must be an object/],
      [{ users: { alice: { password: 'plaintext' } } }, /password must be a hash/],
      [{ users: { alice: { ...alice, roles: { acme: 'owner' } } } }, /read, write or admin/],
      [{ users: { alice: { ...alice, roles: { '../x': 'read' } } } }, /invalid namespace/],
      [{ users: { 'a:b': alice } }, /invalid user name/],
      [{ anonymousRead: 'yes', users: {} }, /anonymousRead/],
      [{ defaultVisibility: 'secret', users: {} }, /defaultVisibility/],
      [{ secret: 'short', users: {} }, /secret/],
      [{ tokenTtlDays: 0, users: {} }, /tokenTtlDays/],
    ];
    for (const [data, message] of cases)
      expect(() => checkUserFile(data), JSON.stringify(data)).to.throw(TypeError, message);
  });
});

describe('UserStore', () => {
  let store: UserStore;
  before(async () => {
    store = new UserStore(await sampleFile());
  });

  it('checks passwords', async () => {
    expect((await store.checkPassword('alice', 'alice-pw'))?.username).to.equal('alice');
    expect(await store.checkPassword('alice', 'reader-pw')).to.equal(null);
    expect(await store.checkPassword('mallory', 'alice-pw')).to.equal(null);
    expect(await store.checkPassword('constructor', 'x')).to.equal(null);
  });

  it('gives each user the higher of its namespace role and its "*" role', async () => {
    const alice = (await store.checkPassword('alice', 'alice-pw'))!;
    const reader = (await store.checkPassword('reader', 'reader-pw'))!;
    const nobody = (await store.checkPassword('nobody', 'nobody-pw'))!;
    expect(store.roleOf(alice, 'alice')).to.equal('admin');
    expect(store.roleOf(alice, 'acme')).to.equal('write');
    expect(store.roleOf(alice, 'other')).to.equal(null);
    expect(store.roleOf(reader, 'other')).to.equal('read');
    expect(store.roleOf(reader, 'acme')).to.equal('admin');
    expect(store.roleOf(nobody, 'acme')).to.equal(null);
  });

  it('maps roles to permissions: read < write (= create) < admin', async () => {
    const alice = (await store.checkPassword('alice', 'alice-pw'))!;
    const reader = (await store.checkPassword('reader', 'reader-pw'))!;
    const table: [typeof alice | null, string, string, boolean][] = [
      [alice, 'read', 'acme', true],
      [alice, 'write', 'acme', true],
      [alice, 'create', 'acme', true],
      [alice, 'admin', 'acme', false],
      [alice, 'admin', 'alice', true],
      [alice, 'read', 'other', false],
      [reader, 'read', 'other', true],
      [reader, 'write', 'other', false],
      [reader, 'create', 'other', false],
      [null, 'read', 'acme', false],
    ];
    for (const [user, permission, namespace, allowed] of table) {
      expect(
        store.can(user, permission as 'read', { namespace }),
        `${user?.username} ${permission} ${namespace}`,
      ).to.equal(allowed);
    }
  });

  it('issues tokens it accepts, and refuses tampered, foreign, expired and revoked ones', async () => {
    let now = Date.now();
    const data = await sampleFile();
    const clocked = new UserStore(data, { now: () => now });
    const token = clocked.issueToken('alice', 60);
    expect((await clocked.checkToken(token))?.username).to.equal('alice');

    const [prefix, payload, signature] = token.split('.') as [string, string, string];
    const forged = Buffer.from(
      JSON.stringify({ ...JSON.parse(Buffer.from(payload, 'base64url').toString()), u: 'reader' }),
    ).toString('base64url');
    expect(await clocked.checkToken(`${prefix}.${forged}.${signature}`)).to.equal(null);
    expect(await clocked.checkToken(`${prefix}.${payload}.${signature.slice(0, -2)}AA`)).to.equal(null);
    expect(await clocked.checkToken('garbage')).to.equal(null);
    expect(await new UserStore(data, { secret: 'another-secret-0123456789' }).checkToken(token)).to.equal(null);

    now += 61_000;
    expect(await clocked.checkToken(token)).to.equal(null);

    const fresh = clocked.issueToken('alice');
    data.users.alice!.password = await hashPassword('new-pw', FAST_HASH);
    expect(await clocked.checkToken(fresh), 'a new password revokes older tokens').to.equal(null);
    const again = clocked.issueToken('alice');
    delete data.users.alice;
    expect(await clocked.checkToken(again), 'a removed user has no valid token').to.equal(null);
  });

  it('identifies Basic (cached) and Bearer credentials, and nobody from wrong ones', async () => {
    const token = store.issueToken('alice');
    const viaBasic = { scheme: 'basic' as const, username: 'alice', password: 'alice-pw', token: '' };
    expect((await store.identify(viaBasic))?.username).to.equal('alice');
    const started = process.hrtime.bigint();
    expect((await store.identify(viaBasic))?.username).to.equal('alice');
    expect(Number(process.hrtime.bigint() - started) / 1e6, 'cached: no second scrypt').to.be.lessThan(5);
    expect(await store.identify({ ...viaBasic, password: 'nope' })).to.equal(null);
    expect((await store.identify({ scheme: 'bearer', token }))?.username).to.equal('alice');
    expect((await store.identify({ scheme: 'other', token }))?.username).to.equal('alice');
    expect(await store.identify({ scheme: 'bearer', token: 'nope' })).to.equal(null);
    expect(await store.identify(null)).to.equal(null);
  });

  it("exposes the anonymous-read switch as the hooks' anonymous flag", async () => {
    expect(new UserStore(await sampleFile({ anonymousRead: true })).hooks().anonymous).to.equal(true);
    expect(new UserStore(await sampleFile({ anonymousRead: false })).hooks().anonymous).to.equal(false);
    const { anonymousRead: _omit, ...withoutSwitch } = await sampleFile();
    expect(new UserStore(withoutSwitch).hooks().anonymous, 'absent means off').to.equal(false);
  });

  it('signs with a random secret when none is configured, and says so', async () => {
    const { secret: _omit, ...data } = await sampleFile();
    const a = new UserStore(data);
    expect(a.ephemeralSecret).to.equal(true);
    expect(await new UserStore(data).checkToken(a.issueToken('alice'))).to.equal(null);
    expect(new UserStore(data, { secret: TEST_SECRET }).ephemeralSecret).to.equal(false);
  });
});

describe('UserStore.fromFile', () => {
  let dir: string;
  tempDir('appr-users-', 'each', (path) => {
    dir = path;
  });

  it('notices edits of the file, and keeps the previous users when an edit is broken', async () => {
    const path = join(dir, 'users.json');
    const data = await sampleFile();
    await writeFile(path, JSON.stringify(data));
    let now = 0;
    const logged: string[] = [];
    const store = await UserStore.fromFile(path, {
      reloadIntervalMs: 1000,
      now: () => now,
      log: (m) => logged.push(m),
    });
    const viaBasic = { scheme: 'basic' as const, username: 'alice', password: 'alice-pw', token: '' };
    expect((await store.identify(viaBasic))?.roles).to.deep.equal({ alice: 'admin', acme: 'write' });

    data.users.alice!.roles = { acme: 'read' };
    data.anonymousRead = false;
    await writeFile(path, `${JSON.stringify(data)}\n`);
    now += 1500;
    expect(await store.identify(null), 'an anonymous request triggers the reload too').to.equal(null);
    expect(store.hooks().anonymous).to.equal(false);
    expect((await store.identify(viaBasic))?.roles).to.deep.equal({ acme: 'read' });

    await writeFile(path, '{ not json');
    now += 1500;
    expect((await store.identify(viaBasic))?.roles).to.deep.equal({ acme: 'read' });
    expect(logged.join('\n')).to.match(/keeping the previous users/);
  });
});

describe('users.ts (the user file CLI)', () => {
  let dir: string;
  tempDir('appr-users-cli-', 'each', (path) => {
    dir = path;
    const log = console.log;
    console.log = () => {};
    return async () => {
      console.log = log;
    };
  });

  it('adds users with roles, changes them, mints tokens, and removes users', async () => {
    const file = join(dir, 'users.json');
    const run = (...args: string[]) => usersCli(['--file', file, ...args]);
    expect(await run('add', 'alice', '--password', 'pw1')).to.equal(0);
    expect(await run('add', 'ci', '--role', 'acme:write', '--role', '*:read', '--password', 'pw2')).to.equal(0);
    let data = await readUserFile(file);
    expect(data.users.alice!.roles).to.deep.equal({ alice: 'admin' });
    expect(data.users.ci!.roles).to.deep.equal({ acme: 'write', '*': 'read' });
    expect(data.secret).to.be.a('string');
    expect(data.anonymousRead).to.equal(true);
    expect(await verifyPassword('pw2', data.users.ci!.password)).to.equal(true);
    expect(await readFile(file, 'utf8')).not.to.include('pw2');

    expect(await run('role', 'ci', 'team:admin', '--remove', '*')).to.equal(0);
    expect(await run('anonymous-read', 'off')).to.equal(0);
    expect(await run('default-visibility', 'private')).to.equal(0);
    expect(await run('passwd', 'alice', '--password', 'pw3')).to.equal(0);
    data = await readUserFile(file);
    expect(data.users.ci!.roles).to.deep.equal({ acme: 'write', team: 'admin' });
    expect(data.anonymousRead).to.equal(false);
    expect(data.defaultVisibility).to.equal('private');
    expect(await verifyPassword('pw3', data.users.alice!.password)).to.equal(true);

    let printed = '';
    console.log = (line: string) => {
      printed += line;
    };
    expect(await run('token', 'ci', '--days', '1')).to.equal(0);
    const store = await UserStore.fromFile(file);
    expect((await store.checkToken(printed.replace(/^Bearer /, '')))?.username).to.equal('ci');

    expect(await run('remove', 'ci')).to.equal(0);
    expect(Object.keys((await readUserFile(file)).users)).to.deep.equal(['alice']);
    await expectReject(() => run('add', 'alice', '--password', 'x'), /exists/);
    await expectReject(() => run('role', 'alice', 'acme:owner'), /namespace:read\|write\|admin/);
  });
});

describe('the user store in front of the registry', () => {
  const blob = async () => (await makeTarGz()).toString('base64');

  async function start(extra: Partial<UserFile> = {}) {
    const store = new UserStore(await sampleFile(extra));
    const server = await startRegistry({
      auth: store.hooks(),
      ...(store.defaultVisibility ? { defaultVisibility: store.defaultVisibility } : {}),
    });
    return { store, server };
  }

  it('logs in, then pushes to its namespaces only, with the token login returned', async () => {
    const { server } = await start();
    try {
      const login = await server.api('POST', '/api/v1/users/login', {
        json: { user: { username: 'alice', password: 'alice-pw' } },
      });
      expect(login.status).to.equal(200);
      expect(login.json.token).to.match(/^Bearer appr1\./);
      const auth = login.json.token as string;
      const push = (ns: string) =>
        server.api('POST', `/api/v1/packages/${ns}/app`, {
          auth,
          json: { release: '1.0.0', media_type: 'helm', blob: '' },
        });
      const ok = await server.api('POST', '/api/v1/packages/acme/app', {
        auth,
        json: { release: '1.0.0', media_type: 'helm', blob: await blob(), visibility: 'private' },
      });
      expect(ok.status, ok.text).to.equal(200);
      expect((await push('other')).status).to.equal(403);
      const bad = await server.api('POST', '/api/v1/users/login', {
        json: { user: { username: 'alice', password: 'x' } },
      });
      expect(bad.status).to.equal(401);
    } finally {
      await server.close();
    }
  });

  it('accepts Basic credentials in any case, and keeps private packages from users without a role', async () => {
    const { server } = await start();
    try {
      await pushPackage(server.registry, 'acme/app', { visibility: 'private' });
      for (const scheme of ['Basic', 'basic']) {
        expect(
          (await server.api('GET', '/api/v1/packages/acme/app', { auth: basic('alice', 'alice-pw', scheme) })).status,
        ).to.equal(200);
      }
      expect(
        (await server.api('GET', '/api/v1/packages/acme/app', { auth: basic('nobody', 'nobody-pw') })).status,
      ).to.equal(403);
      expect((await server.api('GET', '/api/v1/packages/acme/app', { auth: basic('alice', 'wrong') })).status).to.equal(
        401,
      );
    } finally {
      await server.close();
    }
  });

  it('lets anonymous callers read public packages only when anonymousRead is on', async () => {
    for (const anonymousRead of [true, false]) {
      const { server } = await start({ anonymousRead });
      try {
        await pushPackage(server.registry, 'acme/pub', { visibility: 'public' });
        await pushPackage(server.registry, 'acme/priv', { visibility: 'private' });
        expect((await server.api('GET', '/api/v1/packages/acme/pub')).status).to.equal(anonymousRead ? 200 : 401);
        expect((await server.api('GET', '/api/v1/packages/acme/priv')).status).to.equal(401);
        const list = await server.api('GET', '/api/v1/packages');
        if (anonymousRead) expect(list.json.map((p: { name: string }) => p.name)).to.deep.equal(['acme/pub']);
        else expect(list.status).to.equal(401);
        // "logged out": a push without credentials is told to log in
        const push = await server.api('POST', '/api/v1/packages/acme/pub', {
          json: { release: '2.0.0', blob: await blob() },
        });
        expect(push.status).to.equal(401);
        expect(push.json.message).to.match(/log in/);
      } finally {
        await server.close();
      }
    }
  });

  it("creates packages with the file's defaultVisibility", async () => {
    const { server } = await start({ defaultVisibility: 'private' });
    try {
      const res = await server.api('POST', '/api/v1/packages/acme/app', {
        auth: basic('alice', 'alice-pw'),
        json: { release: '1.0.0', blob: await blob() },
      });
      expect(res.status).to.equal(200);
      expect(await server.registry.packageVisibility('acme', 'app')).to.equal('private');
    } finally {
      await server.close();
    }
  });
});

async function expectReject(fn: () => Promise<unknown>, message: RegExp): Promise<void> {
  expect((await rejection(fn())).message).to.match(message);
}
