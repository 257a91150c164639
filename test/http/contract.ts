/**
 * The HTTP contract suite (docs/api.md, by section): every rule, through a real Koa app on a real
 * socket, parameterised by the storage adapter so that every adapter runs the same tests.
 *
 * Every test works on packages with random names (`uniqueName`), so the suite may share one storage (and one S3
 * bucket with other runs): list checks are always scoped to the test's own namespace.
 *
 * This file starts the server under test and runs the sections in order; each section of docs/api.md has its file in
 * test/http/contract/, and test/http/contract/shared.ts holds what they share (the `HttpContract` they receive).
 */
import { expect } from 'chai';
import type { StorageAdapter } from '../../lib/index.js';
import {
  BLOBS,
  expectOk,
  startServer,
  KOA_VERSIONS,
  type Blob,
  type RequestFn,
  type StartOptions,
  type TestServer,
} from '../helpers/http.js';
import { describeMounting } from './contract/mounting.js';
import { describeDiscovery } from './contract/discovery.js';
import { describeRoutesAndShapes } from './contract/shapes.js';
import { describeReleases } from './contract/releases.js';
import { describePush } from './contract/push.js';
import { describePull } from './contract/pull.js';
import { describeChannels } from './contract/channels.js';
import { describeDelete } from './contract/delete.js';
import { describeListAndSearch } from './contract/search.js';
import { describeErrors } from './contract/errors.js';
import { describeAuth } from './contract/auth.js';
import { describeHostileInput } from './contract/hostile.js';
import { describeConcurrency } from './contract/concurrency.js';
import { type HttpContract, type StorageUnderTest, type Pkg, enc } from './contract/shared.js';

export type { StorageUnderTest } from './contract/shared.js';

export function describeHttpContract(
  label: string,
  makeStorage: () => Promise<StorageUnderTest>,
  { koa = '3' }: { koa?: '3' | '2' } = {},
): void {
  const KoaImpl = KOA_VERSIONS[koa];
  describe(`appr HTTP contract over ${label} storage (Koa ${koa})`, function () {
    let underTest: StorageUnderTest | undefined;
    let srv: TestServer;
    const servers: TestServer[] = [];

    before(async function () {
      underTest = await makeStorage();
      srv = await startServer({ storage: underTest.storage, koa: KoaImpl });
    });

    after(async function () {
      for (const s of servers) await s.close();
      await srv?.close();
      await underTest?.cleanup();
    });

    const req: RequestFn = (method, path, options) => srv.request(method, path, options);

    /** Another server over the same storage, with other options; closed after the suite. */
    async function serverWith(options: Omit<StartOptions, 'storage'>, storage?: StorageAdapter): Promise<TestServer> {
      const s = await startServer({
        storage: storage ?? (underTest as StorageUnderTest).storage,
        koa: KoaImpl,
        ...options,
      });
      servers.push(s);
      return s;
    }

    async function push(
      p: Pkg,
      release: string,
      blob: Blob = BLOBS.HELM_1_0_0,
      fields: Record<string, unknown> = {},
      send: RequestFn = req,
    ): Promise<void> {
      const res = await send('POST', p.path, { json: { blob: blob.b64, release, media_type: 'helm', ...fields } });
      expectOk(res);
    }

    async function addToChannel(p: Pkg, channel: string, release: string): Promise<any> {
      const res = await req('POST', `${p.path}/channels/${channel}/${release}`);
      expectOk(res);
      return res.json;
    }

    /** The package of transcripts 8-21: helm 1.0.0, helm 1.1.0, kpm 1.0.0, helm 2.0.0-rc.1. */
    async function seedMychart(p: Pkg): Promise<void> {
      await push(p, '1.0.0', BLOBS.HELM_1_0_0);
      await push(p, '1.1.0', BLOBS.HELM_1_1_0, { media_type: 'application/vnd.appr.package-manifest.helm.v0.json' });
      await push(p, '1.0.0', BLOBS.KPM_1_0_0, { media_type: 'kpm' });
      await push(p, '2.0.0-rc.1', BLOBS.HELM_2_0_0_RC1);
    }

    async function listNamespace(ns: string, query = ''): Promise<any[]> {
      const res = await req('GET', `/api/v1/packages?namespace=${enc(ns)}${query}`);
      expectOk(res);
      expect(res.json).to.be.an('array');
      return res.json;
    }

    /** Everything observable about a package, to prove a request changed nothing. */
    async function snapshot(p: Pkg): Promise<unknown> {
      const parts = await Promise.all([
        req('GET', `/api/v1/packages?namespace=${enc(p.ns)}`),
        req('GET', p.path),
        req('GET', `${p.path}/channels`),
      ]);
      return parts.map((r) => ({ status: r.status, body: r.json }));
    }

    const t: HttpContract = {
      get srv() {
        return srv;
      },
      get storage() {
        return (underTest as StorageUnderTest).storage;
      },
      KoaImpl,
      track: (server) => {
        servers.push(server);
      },
      req,
      serverWith,
      push,
      addToChannel,
      seedMychart,
      listNamespace,
      snapshot,
    };

    describeMounting(t);
    describeDiscovery(t);
    describeRoutesAndShapes(t);
    describeReleases(t);
    describePush(t);
    describePull(t);
    describeChannels(t);
    describeDelete(t);
    describeListAndSearch(t);
    describeErrors(t);
    describeAuth(t);
    describeHostileInput(t);
    describeConcurrency(t);
  });
}
