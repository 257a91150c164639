/**
 * A garbage collector in its own process, for the race test (test/ops/gc-race.test.ts):
 *
 *   node --import tsx gc-worker.ts s3://bucket/prefix
 *
 * Prints `ready`, then runs `registry.gc({ graceMs: 0 })` back to back until a line arrives on stdin, and prints
 * what it removed in total as one JSON line.
 */
import { Registry } from '../../lib/index.js';
import { s3StorageFromUrl } from '../../lib/s3.js';

const storage = s3StorageFromUrl(process.argv[2] ?? '');
const registry = new Registry({ storage });
let stop = false;
process.stdin.once('data', () => {
  stop = true;
});
process.stdout.write('ready\n');
const total = { runs: 0, blobs: 0, metadata: 0, charts: 0, tombstones: 0, errors: 0 };
while (!stop) {
  try {
    const report = await registry.gc({ graceMs: 0 });
    total.blobs += report.blobs.length;
    total.metadata += report.metadata.length;
    total.charts += report.charts.length;
    total.tombstones += report.tombstones.length;
  } catch (err) {
    // RGW answers a tight CAS race with a 500 at times: the collector's answer is to run again, as a job would.
    total.errors += 1;
    process.stderr.write(`gc run failed: ${(err as Error).message}\n`);
  }
  total.runs += 1;
}
process.stdin.destroy();
process.stdout.write(`${JSON.stringify(total)}\n`);
await storage.close?.();
