/**
 * How the registry's errors and URLs reach a host app: 5xx bodies that say only what a client may know, details
 * through Koa's `app.on('error')`, client aborts that are not errors, host hooks' `ctx.throw()` kept, the
 * `onResponseError` remap, and discovery URLs behind proxies (`publicUrl`, `Forwarded`, `X-Forwarded-Prefix`).
 */
import { request as httpRequest } from 'node:http';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { expect } from 'chai';
import Koa from 'koa';
import createHttpError from 'http-errors';
import {
  createApprRouter,
  FsStorage,
  MemoryStorage,
  StorageUnavailableError,
  type ApprRouterOptions,
  type StorageAdapter,
} from '../../lib/index.js';
import { listen, type TestServer } from '../helpers/http.js';
import { makeTarGz } from '../helpers/blobs.js';

async function host(
  options: Partial<ApprRouterOptions> & { proxy?: boolean } = {},
): Promise<{ server: TestServer; app: Koa; errors: unknown[] }> {
  const { proxy, ...rest } = options;
  const app = new Koa();
  if (proxy) app.proxy = true;
  const errors: unknown[] = [];
  app.on('error', (err) => errors.push(err));
  const appr = createApprRouter({ storage: new MemoryStorage(), ...rest });
  app.use(appr.routes()).use(appr.allowedMethods());
  const server = await listen(app, '/cnr');
  app.silent = false; // listen() silences Koa; these tests listen for 'error' themselves
  return { server, app, errors };
}

/** A store whose every operation fails the way a real backend's errors read: with paths and bucket names. */
function brokenStorage(): StorageAdapter {
  const fail = async (): Promise<never> => {
    throw new StorageUnavailableError(
      'GET s3://secret-bucket/registry/packages/acme/app.json: connect ECONNREFUSED 10.0.0.7:7480',
    );
  };
  const storage = new MemoryStorage();
  return Object.assign(Object.create(storage) as StorageAdapter, {
    get: fail,
    put: fail,
    putStream: fail,
    getStream: fail,
    head: fail,
    delete: fail,
    list: fail,
  });
}

describe('errors as a host app sees them', () => {
  it('answers a storage failure 503 with the table message only, and hands the details to app.on("error")', async () => {
    const { server, errors } = await host({ storage: brokenStorage() });
    try {
      for (const path of [
        '/api/v1/packages',
        '/api/v1/packages/acme/app',
        '/api/v1/packages/acme/app/1.0.0/helm/pull',
      ]) {
        const res = await server.request('GET', path);
        expect(res.status).to.equal(503);
        expect(res.json).to.deep.equal({ code: 'storage-unavailable', message: 'Storage unavailable', details: {} });
        expect(res.text).not.to.match(/secret-bucket|packages\/acme|10\.0\.0\.7/);
      }
      expect(errors).to.have.length(3);
      expect((errors[0] as Error).message).to.contain('secret-bucket');
    } finally {
      await server.close();
    }
  });

  it('leaves out of app.on("error") a login or signup on a registry without those hooks (501): a host onError gets it', async () => {
    const { server, errors } = await host();
    try {
      for (const path of ['/api/v1/users/login', '/api/v1/users']) {
        const res = await server.request('POST', path, { json: { user: { username: 'a', password: 'b' } } });
        expect(res.status, path).to.equal(501);
        expect(res.json).to.deep.include({ code: 'unsupported' });
      }
      expect(errors).to.deep.equal([]);
    } finally {
      await server.close();
    }
    const seen: unknown[] = [];
    const own = await host({ onError: (err) => seen.push(err) });
    try {
      expect((await own.server.request('POST', '/api/v1/users/login', { json: {} })).status).to.equal(501);
      expect(seen.map((err) => (err as { code?: string }).code)).to.deep.equal(['unsupported']);
      expect(own.errors).to.deep.equal([]);
    } finally {
      await own.server.close();
    }
  });

  it('sends storage failures to onError instead when the host gives one, and to nobody else', async () => {
    const seen: unknown[] = [];
    const { server, errors } = await host({ storage: brokenStorage(), onError: (err) => seen.push(err) });
    try {
      expect((await server.request('GET', '/api/v1/packages')).status).to.equal(503);
      expect(seen).to.have.length(1);
      expect(errors).to.deep.equal([]);
    } finally {
      await server.close();
    }
  });

  for (const kind of ['memory', 'fs'] as const)
    it(`does not report a client that aborts a pull as an error (${kind})`, async () => {
      const root = await mkdtemp(join(tmpdir(), 'koa-appr-abort-'));
      const storage = kind === 'memory' ? new MemoryStorage() : new FsStorage({ root });
      const seen: unknown[] = [];
      const { server, errors } = await host({ storage, onError: (err) => seen.push(err) });
      try {
        const big = Buffer.alloc(8 * 1024 * 1024);
        for (let i = 0; i < big.length; i += 1) big[i] = (i * 2654435761) >>> 24;
        const blob = await makeTarGz({ 'big/data.bin': big });
        const push = await server.request('POST', '/api/v1/packages/acme/big', {
          json: { release: '1.0.0', blob: blob.toString('base64') },
        });
        expect(push.status).to.equal(200);
        for (const suffix of ['', '/json']) {
          await new Promise<void>((resolve, reject) => {
            const url = new URL(`${server.base}/api/v1/packages/acme/big/1.0.0/kpm/pull${suffix}`);
            const req = httpRequest({ host: url.hostname, port: url.port, path: url.pathname }, (res) => {
              res.once('data', () => {
                req.destroy();
                resolve();
              });
            });
            req.on('error', (err) => ((err as NodeJS.ErrnoException).code === 'ECONNRESET' ? undefined : reject(err)));
            req.end();
          });
        }
        await sleep(300);
        expect(seen).to.deep.equal([]);
        expect(errors).to.deep.equal([]);
        // And the server is fine afterwards.
        expect((await server.request('GET', '/version')).status).to.equal(200);
      } finally {
        await server.close();
        await rm(root, { recursive: true, force: true });
      }
    });

  it("keeps the status, message and headers of a host hook's ctx.throw() and http-errors", async () => {
    const { server } = await host({
      auth: {
        identify: (ctx, credentials) => {
          if (credentials?.token === 'expired')
            ctx.throw(401, 'Token expired', { headers: { 'WWW-Authenticate': 'Bearer error="invalid_token"' } });
          if (credentials?.token === 'plain') ctx.throw(401);
          if (credentials?.token === 'banned') throw createHttpError(403, 'You are banned');
          if (credentials?.token === 'slow')
            throw createHttpError(429, 'Slow down', { headers: { 'Retry-After': '7' } });
          if (credentials?.token === 'gone') ctx.throw(404);
          return { name: 'someone' };
        },
      },
    });
    // 429 has its own entry in the error table (too-many-requests): status, message and Retry-After are kept.
    const cases: [token: string, status: number, body: Record<string, string>, header?: [string, string | RegExp]][] = [
      [
        'expired',
        401,
        { code: 'unauthorized-access', message: 'Token expired' },
        ['www-authenticate', 'Bearer error="invalid_token"'],
      ],
      ['plain', 401, { code: 'unauthorized-access' }, ['www-authenticate', /^Basic realm=/]],
      ['banned', 403, { code: 'forbidden', message: 'You are banned' }],
      ['slow', 429, { code: 'too-many-requests', message: 'Slow down' }, ['retry-after', '7']],
      ['gone', 404, { code: 'not-found' }],
    ];
    try {
      for (const [token, status, body, header] of cases) {
        const res = await server.request('GET', '/api/v1/packages', { headers: { Authorization: `Bearer ${token}` } });
        expect(res.status, token).to.equal(status);
        expect(res.json, token).to.deep.include(body);
        if (header === undefined) continue;
        const [name, want] = header;
        if (want instanceof RegExp) expect(res.headers.get(name), token).to.match(want);
        else expect(res.headers.get(name), token).to.equal(want);
      }
    } finally {
      await server.close();
    }
  });

  it('lets onResponseError replace an error response, and keeps ours when it returns undefined', async () => {
    const { server } = await host({
      onResponseError: (err) =>
        err.code === 'package-not-found'
          ? { status: 410, body: { gone: err.details.package }, headers: { 'X-Portal': 'remapped' } }
          : undefined,
    });
    try {
      const remapped = await server.request('GET', '/api/v1/packages/acme/none');
      expect(remapped.status).to.equal(410);
      expect(remapped.json).to.deep.equal({ gone: 'acme/none' });
      expect(remapped.headers.get('x-portal')).to.equal('remapped');
      const kept = await server.request('POST', '/version');
      expect(kept.status).to.equal(405);
      expect(kept.json.code).to.equal('method-not-allowed');
    } finally {
      await server.close();
    }
  });
});

describe('absolute URLs behind proxies', () => {
  const discovery = (server: TestServer, headers: Record<string, string> = {}) =>
    server.requestRoot('GET', '/.well-known/app-registry-uri.json', { headers });
  const page = (server: TestServer, headers: Record<string, string> = {}) => server.request('GET', '/', { headers });

  it('uses publicUrl for discovery and the discovery page, whatever the request headers say', async () => {
    const { server } = await host({ publicUrl: 'https://registry.example.com/portal/cnr/', proxy: true });
    try {
      const headers = {
        Host: 'evil.example',
        'X-Forwarded-Host': 'evil2.example',
        'X-Forwarded-Prefix': '/x',
        Forwarded: 'host=evil3.example',
      };
      expect((await discovery(server, headers)).json.uri_prefix).to.equal('https://registry.example.com/portal/cnr');
      const html = (await page(server, headers)).text;
      expect(html).to.contain(
        'content="registry.example.com/{name} https://registry.example.com/portal/cnr/api/v1/packages/{name}/pull"',
      );
      expect(html).not.to.contain('evil');
    } finally {
      await server.close();
    }
  });

  it('honours Forwarded and X-Forwarded-Prefix only when the app trusts its proxy', async () => {
    const headers = {
      Forwarded: 'for=10.1.2.3;proto=https;host="registry.example.com", for=10.9.9.9',
      'X-Forwarded-Prefix': '/tools/',
    };
    const trusted = await host({ proxy: true });
    const untrusted = await host();
    try {
      expect((await discovery(trusted.server, headers)).json.uri_prefix).to.equal(
        'https://registry.example.com/tools/cnr',
      );
      expect((await page(trusted.server, headers)).text).to.contain(
        'https://registry.example.com/tools/cnr/api/v1/packages/{name}/pull',
      );
      expect(
        (await discovery(trusted.server, { 'X-Forwarded-Proto': 'https', 'X-Forwarded-Host': 'r.example' })).json
          .uri_prefix,
      ).to.equal('https://r.example/cnr');
      expect((await discovery(untrusted.server, headers)).json.uri_prefix).to.equal(`${untrusted.server.url}/cnr`);
    } finally {
      await trusted.server.close();
      await untrusted.server.close();
    }
  });

  it('ignores forwarded values that are not a plain host or path', async () => {
    const { server } = await host({ proxy: true });
    try {
      const res = await discovery(server, { Forwarded: 'host="a.example/<script>"', 'X-Forwarded-Prefix': '/a/../b' });
      expect(res.json.uri_prefix).to.equal(`${server.url}/cnr`);
      // X-Forwarded-Host (Koa's `host` under a trusted proxy) alike: the request's own Host, not localhost.
      for (const forwardedHost of ['evil.example/x', 'a b', 'r.example:99999']) {
        const headers = { 'X-Forwarded-Host': forwardedHost, 'X-Forwarded-Proto': 'https' };
        expect((await discovery(server, headers)).json.uri_prefix, forwardedHost).to.equal(
          `https://${server.url.slice('http://'.length)}/cnr`,
        );
      }
      // The request's own Host as Koa reads it: its first value, without user information.
      const own = { 'X-Forwarded-Host': 'a/b', Host: 'user@reg.example:8080, other.example' };
      const ownRes = await server.requestRoot('GET', '/.well-known/app-registry-uri.json', { headers: own, raw: true });
      expect(ownRes.json.uri_prefix).to.equal('http://reg.example:8080/cnr');
    } finally {
      await server.close();
    }
  });

  it('ignores an X-Forwarded-Proto that is not http or https: no 500, no other scheme or host', async () => {
    const { server } = await host({ proxy: true });
    try {
      for (const proto of ['a b', 'https://evil.example/x?', 'gopher', 'javascript']) {
        const headers = { 'X-Forwarded-Proto': proto };
        const res = await discovery(server, headers);
        expect(res.status, proto).to.equal(200);
        expect(res.json.uri_prefix, proto).to.equal(`${server.url}/cnr`);
        const html = await page(server, headers);
        expect(html.status, proto).to.equal(200);
        expect(html.text, proto).to.contain(`content="${server.url.slice('http://'.length)}/{name} ${server.url}/cnr/`);
        const index = await server.request('GET', '/helm/default/index.yaml', { headers });
        expect(index.status, proto).to.equal(200);
        expect(index.text, proto).to.contain('contextPath: /cnr/helm\n');
      }
    } finally {
      await server.close();
    }
  });

  it('takes a Host or Forwarded host that makes no URL as localhost: no 500, with or without a trusted proxy', async () => {
    const untrusted = await host();
    const trusted = await host({ proxy: true });
    try {
      for (const bad of ['a.example:99999', '999.999.999.999', '[1.2.3.4]', '[::1]:70000']) {
        for (const [server, headers] of [
          [untrusted.server, { Host: bad } as Record<string, string>],
          [trusted.server, { Forwarded: `host="${bad}"` } as Record<string, string>],
        ] as const) {
          // A bad Host gives way to localhost, as a Host that is no host name does; a bad Forwarded host to Host.
          const origin = 'Host' in headers ? 'http://localhost' : server.url;
          const res = await server.requestRoot('GET', '/.well-known/app-registry-uri.json', { headers, raw: true });
          expect(res.status, bad).to.equal(200);
          expect(res.json.uri_prefix, bad).to.equal(`${origin}/cnr`);
          const html = await server.request('GET', '/', { headers, raw: true });
          expect(html.status, bad).to.equal(200);
          expect(html.text, bad).to.contain(`${origin}/cnr/api/v1/packages/{name}/pull`);
          const index = await server.request('GET', '/helm/default/index.yaml', { headers, raw: true });
          expect(index.status, bad).to.equal(200);
        }
      }
    } finally {
      await untrusted.server.close();
      await trusted.server.close();
    }
  });

  it('refuses a publicUrl that is not an absolute http(s) URL, at start-up', () => {
    for (const publicUrl of ['registry.example.com', 'ftp://x.example', 'https://x.example/?a=1', '/cnr']) {
      expect(() => createApprRouter({ storage: new MemoryStorage(), publicUrl }), publicUrl).to.throw(
        TypeError,
        /publicUrl/,
      );
    }
  });
});
