/**
 * The standalone server behind reverse proxies (`APPR_TRUST_PROXY`, README "The standalone server"): with the
 * number of trusted proxies set, the failed-credential limit per client address (30 a minute, then 429) keys on the
 * address the nearest of them saw (X-Forwarded-For, counted from the right), and the request log names that address;
 * off (the default), X-Forwarded-For is ignored and every client behind a proxy shares the proxy's limit.
 */
import { join } from 'node:path';
import { expect } from 'chai';
import { writeUserFile } from '../../lib/auth/user-store.js';
import { DEFAULT_PER_CLIENT } from '../../lib/auth/limits.js';
import { startInstance, type Instance } from '../helpers/instances.js';
import { tempDir } from '../helpers/temp.js';
import { uniqueName } from '../helpers/unique.js';
import { userFile } from '../helpers/users.js';

/** A failed login as `user` (a name no stored user can have: refused without a hash, counted all the same). */
async function failedLogin(instance: Instance, user: string, forwardedFor?: string): Promise<number> {
  const res = await fetch(`${instance.url}/api/v1/users/login`, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      ...(forwardedFor === undefined ? {} : { 'x-forwarded-for': forwardedFor }),
    },
    body: JSON.stringify({ user: { username: `nobody!${user}`, password: 'wrong' } }),
  });
  await res.arrayBuffer();
  return res.status;
}

/**
 * Once the server's output satisfies `ready` (its log reaches this process through a pipe, after the answers it
 * logs), the output; rejects with the output after 10 s.
 */
function outputOnce(instance: Instance, ready: (output: string) => boolean): Promise<string> {
  const stdout = instance.process.stdout!;
  return new Promise((resolve, reject) => {
    const check = (): void => {
      if (!ready(instance.output())) return;
      clearTimeout(timer);
      stdout.off('data', check);
      resolve(instance.output());
    };
    const timer = setTimeout(() => {
      stdout.off('data', check);
      reject(new Error(`the server did not log what was expected:\n${instance.output()}`));
    }, 10_000);
    stdout.on('data', check);
    check();
  });
}

/** The `ip` of each request log line of the login route, in order, once there are `count` of them. */
async function loggedAddresses(instance: Instance, count: number): Promise<unknown[]> {
  const addresses = (output: string): unknown[] =>
    output
      .split('\n')
      .filter((line) => line.startsWith('{'))
      .map((line) => JSON.parse(line) as { msg?: string; route?: string; ip?: unknown })
      .filter((line) => line.msg === 'request' && line.route === 'login')
      .map((line) => line.ip);
  return addresses(await outputOnce(instance, (output) => addresses(output).length >= count));
}

describe('koa-appr serve: APPR_TRUST_PROXY (clients behind reverse proxies)', function () {
  this.timeout(60_000);
  let dir: string;
  let users: string;
  const instances: Instance[] = [];
  const serve = async (env: Record<string, string>): Promise<Instance> => {
    const instance = await startInstance({
      APPR_STORAGE: join(dir, uniqueName('data')),
      APPR_USERS: users,
      APPR_LOG_LEVEL: 'info',
      ...env,
    });
    instances.push(instance);
    return instance;
  };
  tempDir('koa-appr-trust-proxy-', 'all', async (path) => {
    dir = path;
    users = join(path, 'users.json');
    await writeUserFile(users, await userFile({ alice: ['alice-pw', { acme: 'admin' }] }));
    return async () => {
      await Promise.all(instances.map((instance) => instance.stop()));
    };
  });

  const LIMIT = DEFAULT_PER_CLIENT.failures;

  it('set to 1: limits each forwarded client on its own, and a client cannot pick its address', async () => {
    const instance = await serve({ APPR_TRUST_PROXY: '1' });
    expect(await outputOnce(instance, (output) => output.includes('APPR_TRUST_PROXY'))).to.include(
      'X-Forwarded-For, behind 1 trusted proxy',
    );
    // The client prepends addresses of its choosing; the one proxy appends the address it saw.
    for (let i = 0; i < LIMIT; i++) {
      expect(await failedLogin(instance, `a${i}`, `198.51.100.${i}, 203.0.113.1`), `failure ${i + 1}`).to.equal(401);
    }
    expect(await failedLogin(instance, 'a-next', '203.0.113.1'), 'over the limit').to.equal(429);
    expect(await failedLogin(instance, 'a-forged', '198.51.100.77, 203.0.113.1'), 'still over it').to.equal(429);
    expect(await failedLogin(instance, 'b', '203.0.113.2'), 'another client behind the proxy').to.equal(401);
    expect(await failedLogin(instance, 'direct'), 'no header: the socket address').to.equal(401);
    const logged = await loggedAddresses(instance, LIMIT + 4);
    expect(logged.slice(0, LIMIT + 2)).to.deep.equal(Array(LIMIT + 2).fill('203.0.113.1'));
    expect(logged.slice(LIMIT + 2)).to.deep.equal(['203.0.113.2', '127.0.0.1']);
  });

  it('set to 1: a proxy that writes the client port too (IP:port) keeps one limit per address', async () => {
    const instance = await serve({ APPR_TRUST_PROXY: '1' });
    // Each connection from another port: a limit keyed on address and port would never be reached.
    for (let i = 0; i < LIMIT; i++) {
      expect(await failedLogin(instance, `p${i}`, `203.0.113.9:${40000 + i}`), `failure ${i + 1}`).to.equal(401);
    }
    expect(await failedLogin(instance, 'p-next', '203.0.113.9:50000'), 'over the limit').to.equal(429);
    expect(await failedLogin(instance, 'v6', '[2001:db8::7]:443')).to.equal(401);
    expect(await failedLogin(instance, 'v6-bare', '2001:db8::8')).to.equal(401);
    const logged = await loggedAddresses(instance, LIMIT + 3);
    expect(logged.slice(LIMIT - 1)).to.deep.equal(['203.0.113.9', '203.0.113.9', '2001:db8::7', '2001:db8::8']);
  });

  it('set to 2: takes the address the outer proxy saw (the second from the right)', async () => {
    const instance = await serve({ APPR_TRUST_PROXY: '2' });
    expect(await failedLogin(instance, 'c', 'forged, 203.0.113.7, 10.0.0.2')).to.equal(401);
    expect(await failedLogin(instance, 'd', '203.0.113.8, 10.0.0.2')).to.equal(401);
    expect(await loggedAddresses(instance, 2)).to.deep.equal(['203.0.113.7', '203.0.113.8']);
  });

  it('off (the default): ignores X-Forwarded-For, so every client behind a proxy shares its limit', async () => {
    const instance = await serve({});
    for (let i = 0; i < LIMIT; i++) {
      expect(await failedLogin(instance, `e${i}`, '203.0.113.1'), `failure ${i + 1}`).to.equal(401);
    }
    expect(await failedLogin(instance, 'f', '203.0.113.2'), 'another forwarded address').to.equal(429);
    const logged = await loggedAddresses(instance, LIMIT + 1);
    expect(logged).to.deep.equal(Array(LIMIT + 1).fill('127.0.0.1'));
    expect(instance.output()).not.to.include('APPR_TRUST_PROXY');
  });
});
