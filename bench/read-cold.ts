/**
 * How long a new instance takes to serve its first list of a large registry on S3 (the tests' RGW):
 *
 *   source /tmp/appr-s3/env && npx tsx bench/read-cold.ts        (BENCH_PACKAGES, default 10000)
 *
 * Writes BENCH_PACKAGES package documents straight into a fresh prefix (as a registry would have, 3 releases
 * each), lets a first registry build and store the catalog snapshot (the first instance ever reads every document),
 * then times a new registry's first `listPackages()`: one snapshot read and one listing of recent changes.
 */
import { performance } from 'node:perf_hooks';
import { keys } from '../lib/core/keys.js';
import { mapLimit } from '../lib/storage/util.js';
import { Registry } from '../lib/index.js';
import { S3Storage, s3ClientFromEnv } from '../lib/s3.js';

const COUNT = Number(process.env.BENCH_PACKAGES ?? 10_000);
const client = s3ClientFromEnv();
const storage = new S3Storage({
  client,
  bucket: process.env.APPR_TEST_S3_BUCKET ?? 'appr-test',
  prefix: `appr-bench/cold-${Date.now().toString(36)}`,
  ifMatchUnquoted: process.env.S3_IFMATCH_UNQUOTED === '1',
});
const quiet = { pollMs: 0, sweepPerSecond: 0 };

const names = Array.from({ length: COUNT }, (_, i) => ({
  namespace: `ns${i % 20}`,
  name: `pkg${String(i).padStart(5, '0')}`,
}));
let t = performance.now();
await mapLimit(names, 64, async ({ namespace, name }) => {
  const record = (n: number) => ({
    helm: {
      digest: String(n).repeat(64).slice(0, 64),
      size: 2000,
      created_at: '2026-01-01T00:00:00.000Z',
      metadata: null,
    },
  });
  const doc = {
    namespace,
    name,
    created_at: '2026-01-01T00:00:00.000Z',
    visibility: 'public',
    releases: { '1.0.0': record(1), '1.1.0': record(2), '2.0.0': record(3) },
    channels: {},
  };
  await storage.put(keys.packageDoc(namespace, name), Buffer.from(JSON.stringify(doc)));
});
console.log(`wrote ${COUNT} package documents in ${((performance.now() - t) / 1000).toFixed(1)} s`);

t = performance.now();
const first = new Registry({ storage, coherence: quiet });
await first.listPackages();
await first.close();
console.log(
  `first instance ever (reads every document, writes the snapshot): ${((performance.now() - t) / 1000).toFixed(1)} s`,
);

t = performance.now();
const fresh = new Registry({ storage, coherence: quiet });
const listed = await fresh.listPackages();
const ms = performance.now() - t;
await fresh.close();
const snapshot = await storage.head(keys.snapshot());
console.log(
  `a new instance's first list of ${listed.length} packages: ${ms.toFixed(0)} ms (snapshot ${((snapshot?.size ?? 0) / 1e6).toFixed(1)} MB)`,
);
client.destroy();
