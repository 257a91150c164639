/**
 * Issue 12 items 4, 9, 13, 15 and 16 over a real socket: bounded echoes, nosniff everywhere, safe
 * Content-Disposition, the exact release winning over its build variants, Quay's `cnr-api` key, and private and
 * absent packages costing the same storage work.
 */
import { expect } from 'chai';
import Koa from 'koa';
import { createApprRouter, MemoryStorage, type AuthHooks } from '../../lib/index.js';
import { setAttachment } from '../../lib/http/headers.js';
import { listen, startRegistry, type RegistryServer } from '../auth/helpers.js';
import { makeTarGz } from '../helpers/blobs.js';
import { beforeEachCall } from '../helpers/stores.js';

const blob = async (text = 'x') => (await makeTarGz({ 'Chart.yaml': text })).toString('base64');

describe('hardening: responses', () => {
  let server: RegistryServer;
  before(async () => {
    server = await startRegistry();
    for (const release of ['1.0.1', '1.0.1+build.5', '1.0.0']) {
      const res = await server.api('POST', '/api/v1/packages/ns/app', {
        json: { release, media_type: 'helm', blob: await blob(release) },
      });
      expect(res.status, res.text).to.equal(200);
    }
  });
  after(() => server.close());

  it("/version carries Quay's cnr-api key next to appr-api", async () => {
    const res = await server.api('GET', '/version');
    expect(res.json).to.deep.equal({ 'appr-api': '0.7.4', 'cnr-api': '0.7.4', server: 'koa-appr' });
  });

  it('sends X-Content-Type-Options: nosniff on answers, errors, 404s, 405s, preflights, pulls and HEADs', async () => {
    const pull = await server.api('GET', '/api/v1/packages/ns/app/1.0.0/helm/pull');
    const cases = [
      await server.api('GET', '/version'),
      await server.api('GET', '/api/v1/packages'),
      await server.api('GET', '/api/v1/packages/ns/absent'),
      await server.api('GET', '/no/such/route'),
      await server.api('PUT', '/api/v1/packages'),
      await server.api('OPTIONS', '/api/v1/packages'),
      await server.api('GET', '/'),
      await server.send('GET', '/.well-known/app-registry-uri.json'),
      pull,
      await server.api('HEAD', '/api/v1/packages/ns/app/1.0.0/helm/pull'),
      await server.api('POST', '/api/v1/packages/ns/app', {
        body: '{not json',
        headers: { 'content-type': 'application/json' },
      }),
    ];
    expect(cases.map((r) => r.status)).to.deep.equal([200, 200, 404, 404, 405, 204, 200, 200, 200, 200, 400]);
    for (const res of cases) expect(res.headers.get('x-content-type-options'), String(res.status)).to.equal('nosniff');
  });

  it("an exact release wins over its build variants in show, pull and the release's manifests alike", async () => {
    expect((await server.api('GET', '/api/v1/packages/ns/app/1.0.1/helm')).json.release).to.equal('1.0.1');
    const pulled = await server.api('GET', '/api/v1/packages/ns/app/1.0.1/helm/pull');
    expect(pulled.headers.get('content-disposition')).to.equal('attachment; filename="ns_app_1.0.1.tar.gz"');
    expect(
      (await server.api('GET', '/api/v1/packages/ns/app/1.0.1')).json.map((m: { release: string }) => m.release),
    ).to.deep.equal(['1.0.1']);
    expect((await server.api('GET', '/api/v1/packages/ns/app/1.0.1+build.5/helm')).json.release).to.equal(
      '1.0.1+build.5',
    );
  });

  it('refuses a release of a million digits quickly with a short 413, a long or unsafe one with a short 422, and stores nothing', async () => {
    const huge = '1'.repeat(1_000_000);
    for (const [release, status, code] of [
      // Over the push body's bound for the fields other than the blob: refused while it arrives.
      [`${huge}.0.0`, 413, 'payload-too-large'],
      [`999.0.0+${'a'.repeat(100_000)}`, 422, 'invalid-release'],
      ['9007199254740992.0.0', 422, 'invalid-release'],
    ] as const) {
      const res = await server.api('POST', '/api/v1/packages/ns/big', {
        json: { release, media_type: 'helm', blob: await blob() },
      });
      expect(res.status).to.equal(status);
      expect(res.json.code).to.equal(code);
      expect(res.text.length, `${res.text.length} bytes of error`).to.be.below(1024);
    }
    expect((await server.api('GET', '/api/v1/packages/ns/big')).status).to.equal(404);
  });

  it('never echoes more than a bounded part of a long URL value in an error body', async () => {
    const long = `1.0.0-${'a'.repeat(8000)}`;
    for (const path of [
      `/api/v1/packages/ns/app/${long}/helm`,
      `/api/v1/packages/ns/app/${long}/helm/pull`,
      `/api/v1/packages/ns/app/channels/stable/${long}`,
      `/api/v1/packages/ns/app/${long}`,
      `/x/${'y'.repeat(8000)}`,
    ]) {
      const res = await server.api(path.includes('channels') ? 'POST' : 'GET', path);
      expect(res.status, path.slice(0, 60)).to.be.within(400, 499);
      expect(res.text.length, `${res.text.length} bytes for ${path.slice(0, 40)}`).to.be.below(2048);
    }
  });

  it('builds Content-Disposition safely for any name: RFC 6266 filename* for non-ASCII, bounded length', async () => {
    const names = [
      'ns_app_1.0.0.tar.gz',
      'ns_app_😀.tar.gz',
      'a"b\\c\r\nSet-Cookie: x=1.tar.gz',
      `ns_app_1.0.0+${'b'.repeat(5000)}.tar.gz`,
    ];
    const app = new Koa();
    app.use((ctx) => {
      setAttachment(ctx, names[Number(ctx.query.i)]!);
      ctx.body = 'ok';
    });
    const running = await listen(app);
    try {
      const got: string[] = [];
      for (let i = 0; i < names.length; i++)
        got.push((await running.send('GET', `/?i=${i}`)).headers.get('content-disposition')!);
      expect(got[0]).to.equal('attachment; filename="ns_app_1.0.0.tar.gz"');
      expect(got[1]).to.equal('attachment; filename="ns_app_??.tar.gz"; filename*=UTF-8\'\'ns_app_%F0%9F%98%80.tar.gz');
      expect(got[2]).to.match(
        /^attachment; filename="a\\"b\\\\c\?\?Set-Cookie: x=1\.tar\.gz"; filename\*=UTF-8''a%22b%5Cc%0D%0ASet-Cookie/,
      );
      expect(got[3]!.length).to.be.below(260);
      expect(got[3]).to.match(/~\.tar\.gz"$/);
    } finally {
      await running.close();
    }
  });
});

describe('hardening: private and absent packages cost the same storage work (item 16)', () => {
  /** The storage calls that read. */
  const READS = new Set(['get', 'getStream', 'head', 'list']);

  it("a stranger's request costs the same storage operations, and gets the same answer, for both", async () => {
    // Each read of the store, by operation.
    let calls: string[] = [];
    const storage = beforeEachCall(new MemoryStorage(), (method) => {
      if (READS.has(method)) calls.push(method);
    });
    const hooks: AuthHooks<string> = {
      identify: (_ctx, credentials) => (credentials?.scheme === 'bearer' ? credentials.token : null),
      authorize: (caller) => caller === 'owner',
    };
    const app = new Koa();
    const router = createApprRouter({ storage, auth: hooks });
    app.use(router.routes()).use(router.allowedMethods());
    const running = await listen(app);
    try {
      const owner = { auth: 'Bearer owner' };
      expect(
        (
          await running.send('POST', '/cnr/api/v1/packages/ns/secret', {
            ...owner,
            json: { release: '1.0.0', media_type: 'helm', blob: await blob(), visibility: 'private' },
          })
        ).status,
      ).to.equal(200);
      for (const suffix of ['', '/1.0.0/helm', '/1.0.0/helm/pull', `/blobs/sha256/${'a'.repeat(64)}`, '/channels']) {
        const answers: string[] = [];
        const costs: string[][] = [];
        for (const name of ['secret', 'absent']) {
          calls = [];
          const res = await running.send('GET', `/cnr/api/v1/packages/ns/${name}${suffix}`, {
            auth: 'Bearer stranger',
          });
          costs.push(calls);
          answers.push(`${res.status} ${res.text.replaceAll(name, 'NAME')}`);
        }
        expect(answers[0], suffix).to.equal(answers[1]);
        expect(costs[0], suffix).to.deep.equal(costs[1]);
        expect(costs[0]).to.deep.equal(['get']);
      }
    } finally {
      await running.close();
    }
  });
});
