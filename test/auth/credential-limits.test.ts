/**
 * Issue 12 items 3 and 14: credential checks cannot be used to burn the server's CPU (no verification where a route
 * does not need it, bounded concurrent hashing, failures cached, failures rate-limited per client and per user
 * name with 429 + Retry-After), and Quay-style robot names (`org+name`) are valid user names.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { ApprError } from '../../lib/errors.js';
import {
  checkUserFile,
  hashPassword,
  UserStore,
  writeUserFile,
  type UserFile,
  type UserStoreOptions,
} from '../../lib/index.js';
import { basic, pushPackage, startRegistry } from './helpers.js';
import { makeTarGz } from '../helpers/blobs.js';
import { apprRejection } from '../helpers/expect.js';
import { FAST_HASH, userFile } from '../helpers/users.js';

const NO_LIMITS: UserStoreOptions = { failureLimits: { perClient: false, perUser: false } };

async function file(): Promise<UserFile> {
  return userFile({
    alice: ['alice-pw', { alice: 'admin' }],
    bob: ['bob-pw', { bob: 'admin' }],
    'acme+deployer': ['robot-pw', { acme: 'write' }],
  });
}

describe('credential checks: cached failures and bounded hashing (user store)', () => {
  it('answers a repeated wrong name + password pair from the failure cache, without hashing again', async () => {
    const store = new UserStore(await file(), NO_LIMITS);
    for (let i = 0; i < 5; i++) expect(await store.checkPassword('alice', 'wrong')).to.equal(null);
    for (let i = 0; i < 5; i++) expect(await store.checkPassword('mallory', 'wrong')).to.equal(null);
    expect(store.hashStats.computed).to.equal(2);
    // The right password is a different pair: hashed once, then cached as a success.
    expect((await store.checkPassword('alice', 'alice-pw'))?.username).to.equal('alice');
    expect((await store.checkPassword('alice', 'alice-pw'))?.username).to.equal('alice');
    expect(store.hashStats.computed).to.equal(3);
  });

  it("forgets a cached failure when the user's password changes to that value", async () => {
    const dir = await mkdtemp(join(tmpdir(), 'appr-limits-'));
    try {
      const path = join(dir, 'users.json');
      const data = await file();
      await writeUserFile(path, data);
      let now = 0;
      const store = await UserStore.fromFile(path, { ...NO_LIMITS, now: () => now, reloadIntervalMs: 10 });
      expect(await store.checkPassword('alice', 'new-pw')).to.equal(null);
      data.users.alice = { password: await hashPassword('new-pw', FAST_HASH), roles: { alice: 'admin' } };
      await writeUserFile(path, data);
      now += 1000;
      expect((await store.checkPassword('alice', 'new-pw'))?.username).to.equal('alice');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('refuses over-long passwords and impossible user names without hashing', async () => {
    const store = new UserStore(await file(), NO_LIMITS);
    expect(await store.checkPassword('alice', 'x'.repeat(5000))).to.equal(null);
    expect(await store.checkPassword('a'.repeat(10_000), 'pw')).to.equal(null);
    expect(await store.checkPassword('../etc', 'pw')).to.equal(null);
    expect(store.hashStats.computed).to.equal(0);
  });

  it('hashes at most maxConcurrentHashes at once and refuses checks beyond maxQueuedHashes with 429', async () => {
    const store = new UserStore(await file(), { ...NO_LIMITS, maxConcurrentHashes: 2, maxQueuedHashes: 3 });
    const checks = Array.from({ length: 10 }, (_, i) =>
      store.checkPassword('alice', `wrong-${i}`).then(
        (user) => ({ user }),
        (err: unknown) => ({ err: err as ApprError }),
      ),
    );
    // Every check got as far as the slots in the same turn of the event loop: two run, three wait.
    await new Promise((resolve) => setImmediate(resolve));
    expect(store.hashStats.active).to.equal(2);
    expect(store.hashStats.queued).to.equal(3);
    const results = await Promise.all(checks);
    const refused = results.filter((r): r is { err: ApprError } => 'err' in r);
    expect(refused).to.have.length(5);
    for (const { err } of refused) {
      expect(err.code).to.equal('too-many-requests');
      expect(err.status).to.equal(429);
      expect(err.headers['Retry-After']).to.equal('1');
    }
    expect(results.filter((r) => 'user' in r && r.user === null)).to.have.length(5);
    expect(store.hashStats).to.deep.equal({ computed: 5, active: 0, queued: 0 });
  });
});

describe('credential checks: failures limited per client and per user name (user store)', () => {
  it('blocks a client after its failures with 429 + Retry-After, before any hash; other clients go on', async () => {
    const store = new UserStore(await file(), {
      failureLimits: { perClient: { failures: 3, windowSec: 60, blockSec: 120 }, perUser: false },
    });
    for (let i = 0; i < 3; i++) expect(await store.checkPassword('alice', `wrong-${i}`, '10.0.0.1')).to.equal(null);
    const hashed = store.hashStats.computed;
    const err = await apprRejection(store.checkPassword('alice', 'alice-pw', '10.0.0.1'));
    expect(err.code).to.equal('too-many-requests');
    expect(Number(err.headers['Retry-After'])).to.be.within(1, 120);
    expect(err.details.retry_after).to.equal(Number(err.headers['Retry-After']));
    expect(store.hashStats.computed).to.equal(hashed);
    expect((await store.checkPassword('alice', 'alice-pw', '10.0.0.2'))?.username).to.equal('alice');
  });

  it('blocks a user name after failures from many clients; other names go on', async () => {
    const store = new UserStore(await file(), {
      failureLimits: { perClient: false, perUser: { failures: 3, windowSec: 60, blockSec: 60 } },
    });
    for (let i = 0; i < 3; i++) expect(await store.checkPassword('bob', `wrong-${i}`, `10.0.1.${i}`)).to.equal(null);
    expect((await apprRejection(store.checkPassword('bob', 'bob-pw', '10.0.2.1'))).status).to.equal(429);
    expect((await store.checkPassword('alice', 'alice-pw', '10.0.2.1'))?.username).to.equal('alice');
  });

  it('counts unknown user names like known ones (a 429 does not reveal which names exist)', async () => {
    const limits = {
      failureLimits: { perClient: false as const, perUser: { failures: 2, windowSec: 60, blockSec: 60 } },
    };
    const store = new UserStore(await file(), limits);
    for (const name of ['bob', 'mallory']) {
      expect(await store.checkPassword(name, 'a')).to.equal(null);
      expect(await store.checkPassword(name, 'b')).to.equal(null);
      expect((await apprRejection(store.checkPassword(name, 'c'))).code).to.equal('too-many-requests');
    }
  });

  it('still accepts a credential it has already verified while the client is blocked', async () => {
    const store = new UserStore(await file(), {
      failureLimits: { perClient: { failures: 2, windowSec: 60, blockSec: 60 }, perUser: false },
    });
    expect((await store.checkPassword('alice', 'alice-pw', '10.0.0.9'))?.username).to.equal('alice');
    await store.checkPassword('alice', 'x', '10.0.0.9');
    await store.checkPassword('alice', 'y', '10.0.0.9');
    expect((await apprRejection(store.checkPassword('alice', 'z', '10.0.0.9'))).status).to.equal(429);
    expect((await store.checkPassword('alice', 'alice-pw', '10.0.0.9'))?.username).to.equal('alice');
  });

  it('refuses a failure limit that is not made of positive integers', async () => {
    const data = await file();
    expect(
      () => new UserStore(data, { failureLimits: { perClient: { failures: 0, windowSec: 1, blockSec: 1 } } }),
    ).to.throw(TypeError, /failureLimits.perClient/);
    expect(() => new UserStore(data, { maxConcurrentHashes: 0 })).to.throw(TypeError, /maxConcurrentHashes/);
  });
});

describe('credential checks over HTTP', () => {
  it('never verifies credentials on open routes: 40 wrong Basic headers on /version cost no hash', async () => {
    const store = new UserStore(await file());
    const server = await startRegistry({ auth: store.hooks() });
    try {
      for (let i = 0; i < 40; i++) {
        const res = await server.api('GET', '/version', { auth: basic('alice', `wrong-${i}`) });
        expect(res.status).to.equal(200);
      }
      expect((await server.api('GET', '/', { auth: basic('alice', 'nope') })).status).to.equal(200);
      expect((await server.api('GET', '/no/such/path', { auth: basic('alice', 'nope') })).status).to.equal(404);
      expect(store.hashStats.computed).to.equal(0);
    } finally {
      await server.close();
    }
  });

  it('answers failed logins beyond the per-client limit with 429 JSON and Retry-After', async () => {
    const store = new UserStore(await file(), {
      failureLimits: { perClient: { failures: 3, windowSec: 60, blockSec: 60 }, perUser: false },
    });
    const server = await startRegistry({ auth: store.hooks() });
    try {
      const login = (password: string) =>
        server.api('POST', '/api/v1/users/login', {
          json: { user: { username: 'alice', password } },
        });
      for (let i = 0; i < 3; i++) expect((await login(`wrong-${i}`)).status).to.equal(401);
      const limited = await login('alice-pw');
      expect(limited.status).to.equal(429);
      expect(limited.headers.get('content-type')).to.match(/^application\/json/);
      expect(limited.json.code).to.equal('too-many-requests');
      expect(Number(limited.headers.get('retry-after'))).to.be.within(1, 60);
    } finally {
      await server.close();
    }
  });

  it('answers failed Basic checks on package routes beyond the limit with 429 JSON', async () => {
    const store = new UserStore(await file(), {
      failureLimits: { perClient: false, perUser: { failures: 2, windowSec: 60, blockSec: 60 } },
    });
    const server = await startRegistry({ auth: store.hooks() });
    try {
      await pushPackage(server.registry, 'alice/app', { visibility: 'private' });
      await pushPackage(server.registry, 'alice/pub');
      const show = (password: string) =>
        server.api('GET', '/api/v1/packages/alice/app', { auth: basic('alice', password) });
      expect((await show('x')).status).to.equal(401);
      expect((await show('y')).status).to.equal(401);
      const limited = await show('z');
      expect(limited.status).to.equal(429);
      expect(limited.json).to.include({ code: 'too-many-requests' });
      expect(limited.headers.get('retry-after')).to.match(/^\d+$/);
      // Anonymous reads of a public package are not affected.
      expect((await server.api('GET', '/api/v1/packages/alice/pub')).status).to.equal(200);
    } finally {
      await server.close();
    }
  });
});

describe('robot user names (Quay style org+name)', () => {
  it('the user file accepts org+name, and still refuses names with other characters', async () => {
    const data = await file();
    expect(() => checkUserFile(data)).not.to.throw();
    for (const bad of ['acme deployer', 'acme/deployer', 'acme:deployer', '+acme', 'a'.repeat(129)]) {
      const broken = { ...data, users: { [bad]: data.users.alice! } };
      expect(() => checkUserFile(broken), bad).to.throw(TypeError, /invalid user name/);
    }
  });

  it('a robot logs in with Basic credentials and pushes to its organisation', async () => {
    const store = new UserStore(await file());
    const server = await startRegistry({ auth: store.hooks() });
    try {
      const auth = basic('acme+deployer', 'robot-pw');
      const pushed = await server.api('POST', '/api/v1/packages/acme/app', {
        auth,
        json: { release: '1.0.0', media_type: 'helm', blob: (await makeTarGz()).toString('base64') },
      });
      expect(pushed.status, pushed.text).to.equal(200);
      const login = await server.api('POST', '/api/v1/users/login', {
        json: { user: { username: 'acme+deployer', password: 'robot-pw' } },
      });
      expect(login.status).to.equal(200);
      expect((await server.api('GET', '/api/v1/packages/acme/app', { auth: login.json.token })).status).to.equal(200);
    } finally {
      await server.close();
    }
  });
});
