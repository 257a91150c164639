/**
 * A purge (`Registry.purgeBlob`) that storage fails part-way, then retried by its client until it answers 200 or
 * 404: on memory, the filesystem and S3 (Ceph RGW). Each storage call of the purge fails in turn, in three ways: it
 * fails before it does anything; it is done but its answer is lost; or it is done and storage is down from then on
 * (every later call of that attempt fails). Whatever failed, once the client has its 200 or 404:
 *
 * - the blob's bytes and its chart record are gone from storage;
 * - another instance no longer serves the bytes from its memory once the change feed reaches it (it cached them
 *   when it pulled the release; for a purge of a blob no release names any more, it deleted that release itself);
 * - the audit events name no release but the one purged, and say the blob was deleted only when it was.
 */
import { expect } from 'chai';
import { MemoryStorage, Registry, StorageUnavailableError, type AuditEvent } from '../../lib/index.js';
import { keys } from '../../lib/core/keys.js';
import { makeTarGz } from '../helpers/blobs.js';
import { apprCode } from '../helpers/expect.js';
import { registriesPerTest, servesBlob } from '../helpers/registries.js';
import { describeWithS3 } from '../helpers/s3-env.js';
import { hookedStorage, tempFsStore, testS3Store, type StorageCall, type StoreFixture } from '../helpers/stores.js';

/** How the chosen call fails: before doing anything; done, answer lost; done, then storage down for the attempt. */
type Mode = 'fails' | 'lost' | 'outage';

interface Failure {
  /** The storage call that fails: its method and key prefix, and which of the attempt's matching calls (from 1). */
  method: string;
  prefix: string;
  nth?: number;
  mode: Mode;
}

interface Scenario {
  /** `named`: a release names the blob when the purge runs; `alone`: its release was deleted before. */
  blob: 'named' | 'alone';
  failure: Failure | null;
  /** The purge's answers: the failed attempt's, then the retries' until one is not 503. */
  answers: string[];
}

const PKG = { namespace: 'acme', name: 'app' };

/** Every storage call of a purge, in its order, with the blobs (named or alone) whose purge makes it. */
const POINTS: { label: string; blob: Scenario['blob'][]; method: string; prefix: string; nth?: number }[] = [
  { label: 'the package document', blob: ['named'], method: 'put', prefix: 'packages/' },
  { label: 'the look for the blob', blob: ['alone'], method: 'head', prefix: 'blobs/' },
  { label: 'the change entry before the delete', blob: ['named', 'alone'], method: 'put', prefix: 'changes/' },
  { label: 'the blob', blob: ['named', 'alone'], method: 'delete', prefix: 'blobs/' },
  { label: 'the chart record', blob: ['named', 'alone'], method: 'delete', prefix: 'charts/' },
  { label: 'the change entry after the delete', blob: ['named', 'alone'], method: 'put', prefix: 'changes/', nth: 2 },
];

/** What the client is answered, for each failure (`ok`: 200; codes of the error table otherwise). */
function expectedAnswers(point: (typeof POINTS)[number], mode: Mode): string[] {
  const unavailable = 'storage-unavailable';
  if (point.nth === 2) return ['ok']; // the blob is gone, and the other instances were told before it went
  if (point.method === 'delete' && point.prefix === 'blobs/') {
    // A delete whose answer was lost is looked for: gone, so the purge goes on. With storage down it cannot tell:
    // 503, and the retry finds nothing left (404).
    if (mode === 'lost') return ['ok'];
    if (mode === 'outage') return [unavailable, 'package-not-found'];
  }
  // The blob is gone already: the retry deletes the chart record left and answers 404 (nothing of it stored).
  if (point.prefix === 'charts/') return [unavailable, 'package-not-found'];
  return [unavailable, 'ok'];
}

/**
 * Whether the failed attempt wrote the package document without knowing it (its answer lost): the retry then finds
 * no release naming the blob, and neither answer nor event names the release deleted.
 */
function documentWritten(failure: Failure | null): boolean {
  return failure !== null && failure.prefix === 'packages/' && failure.mode !== 'fails';
}

function suite(label: string, open: () => Promise<StoreFixture> | StoreFixture): void {
  describe(`a purge that storage fails part-way, retried (${label})`, function () {
    this.timeout(60_000);
    let store: StoreFixture;
    const other = registriesPerTest();
    const purgers: Registry[] = [];

    beforeEach(async () => {
      store = await open();
    });
    afterEach(async () => {
      await Promise.all(purgers.splice(0).map((registry) => registry.close()));
    });
    afterEach(async () => {
      await store.cleanup();
    });

    /**
     * Instance `a` (which purges, through storage that fails as `failure` says while `failing` is on) and instance
     * `b`, which holds the blob in memory; the digest.
     */
    async function setup(scenario: Scenario) {
      const events: AuditEvent[] = [];
      let failing = false;
      let down = false;
      let seen = 0;
      const { failure } = scenario;
      const matches = (call: StorageCall) =>
        failure !== null && call.method === failure.method && call.key.startsWith(failure.prefix);
      const a = new Registry({
        storage: hookedStorage(store.storage, {
          before: (call) => {
            if (!failing) return;
            if (down) throw new StorageUnavailableError(`${call.method} ${call.key}: storage is down`);
            if (matches(call) && failure?.mode === 'fails' && ++seen === (failure.nth ?? 1)) {
              throw new StorageUnavailableError(`${call.method} ${call.key} failed`);
            }
          },
          after: (call) => {
            if (!failing || !matches(call) || failure?.mode === 'fails' || ++seen !== (failure?.nth ?? 1)) return;
            if (failure?.mode === 'outage') down = true;
            throw new StorageUnavailableError(`${call.method} ${call.key}: no answer`);
          },
        }),
        coherence: { pollMs: 0, sweepPerSecond: 0 },
        audit: (event) => void events.push(event),
      });
      purgers.push(a);
      const b = other(store.storage);
      const blob = await makeTarGz({ 'Chart.yaml': 'name: app\nversion: 1.0.0\n', 'values.yaml': 'password: x\n' });
      await a.push({ ...PKG, release: '1.0.0', mediaType: 'helm', blob });
      await a.flushChanges();
      await b.sync(); // a's push is applied: no later change entry but the purge's makes b drop its copy
      const digest = (await b.showManifest(PKG.namespace, PKG.name, '1.0.0', 'helm')).content.digest;
      const pulled = await b.pull(PKG.namespace, PKG.name, '1.0.0', 'helm');
      for await (const _ of pulled.blob.body); // b keeps the bytes in memory
      // b's own change: b keeps its copy (another instance's change entry is what makes it drop it).
      if (scenario.blob === 'alone') await b.deleteRelease(PKG.namespace, PKG.name, '1.0.0', 'helm');
      await a.flushChanges();
      events.length = 0;
      return {
        a,
        b,
        digest,
        events,
        fail: (on: boolean) => {
          failing = on;
          down = false;
          seen = 0;
        },
      };
    }

    /** Whether `registry` serves the blob by digest (from memory or storage). */
    const serves = (registry: Registry, digest: string) => servesBlob(registry, PKG.namespace, PKG.name, digest);

    /** The failed attempt, then retries while the answer is 503 (at most 3). */
    async function purgeUntilAnswered(setupDone: Awaited<ReturnType<typeof setup>>): Promise<string[]> {
      const { a, digest, fail } = setupDone;
      fail(true);
      const answers = [await apprCode(a.purgeBlob(PKG.namespace, PKG.name, digest))];
      fail(false);
      while (answers.at(-1) === 'storage-unavailable' && answers.length < 4) {
        answers.push(await apprCode(a.purgeBlob(PKG.namespace, PKG.name, digest)));
      }
      return answers;
    }

    async function expectWithdrawn(scenario: Scenario, state: Awaited<ReturnType<typeof setup>>) {
      const { a, b, digest, events } = state;
      expect(await store.storage.head(keys.blob(PKG.namespace, PKG.name, digest)), 'the blob').to.equal(null);
      expect(await store.storage.head(keys.chart(PKG.namespace, PKG.name, digest)), 'its chart record').to.equal(null);
      expect(await serves(a, digest), 'the purging instance serves it').to.equal(false);
      await a.flushChanges();
      await b.sync();
      expect(await serves(b, digest), 'the other instance serves it from memory').to.equal(false);
      const purges = events.filter((event) => event.type === 'purge');
      if (scenario.blob === 'named') expect(purges, 'the release deleted is reported').not.to.deep.equal([]);
      for (const event of purges) {
        expect(event.digest).to.equal(digest);
        expect(event.releases).to.deep.equal(
          scenario.blob === 'named' && event === purges[0] && !documentWritten(scenario.failure)
            ? [{ release: '1.0.0', mediaType: 'helm' }]
            : [],
        );
      }
      // Once the client has its 200, an event says the blob was deleted: the last one, when it was deleted.
      const deletedBy = purges.filter((event) => event.blobDeleted);
      expect(deletedBy.length, JSON.stringify(purges)).to.be.at.most(1);
      if (scenario.answers.at(-1) === 'ok') expect(deletedBy).to.have.length(1);
      expect(await b.packageManifests(PKG.namespace, PKG.name).catch(() => [])).to.deep.equal([]);
    }

    it('without a failure: 200, and the other instance serves its copy until the change entry reaches it', async () => {
      const state = await setup({ blob: 'named', failure: null, answers: ['ok'] });
      expect(await purgeUntilAnswered(state)).to.deep.equal(['ok']);
      expect(await serves(state.b, state.digest), 'before the change entry reaches it').to.equal(true);
      await expectWithdrawn({ blob: 'named', failure: null, answers: ['ok'] }, state);
    });

    for (const point of POINTS) {
      for (const blob of point.blob) {
        for (const mode of ['fails', 'lost', 'outage'] as const) {
          const answers = expectedAnswers(point, mode);
          const failure: Failure = { method: point.method, prefix: point.prefix, mode };
          if (point.nth !== undefined) failure.nth = point.nth;
          const scenario: Scenario = { blob, failure, answers };
          it(`${blob === 'named' ? 'a blob a release names' : 'a blob alone'}; ${point.label} ${mode}: ${answers.join(', ')}`, async () => {
            const state = await setup(scenario);
            expect(await purgeUntilAnswered(state)).to.deep.equal(answers);
            await expectWithdrawn(scenario, state);
          });
        }
      }
    }
  });
}

suite('memory', () => ({ storage: new MemoryStorage(), cleanup: async () => {} }));
suite('fs', () => tempFsStore('purge-failures'));
describeWithS3('S3', () => {
  suite('s3', () => testS3Store('purge-failures', { empty: true }));
});
