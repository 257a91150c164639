/**
 * What one poll of the change feed costs the filesystem adapter when the feed holds the 10 minutes of a steady 100
 * changes per second (the default `retentionMs`): `BENCH_ENTRIES` (default 60,000) change entries spread evenly
 * over the last 10 minutes, stored through `FsStorage` in a temporary directory (`BENCH_DIR`, default the OS's),
 * once in each layout:
 *
 * - `flat`: the keys before time buckets (`changes/<time>+...`, one directory), polled as that version polled
 *   (`startAfter: changes/<time>`);
 * - `bucketed`: the keys of lib/core/keys.ts (`changes/<10-second bucket>/<time>+...`), polled as lib/core/feed.ts
 *   polls (`startAfter: keys.changesAfter(from)`);
 * - `flat, polled now`: the flat store polled as this version polls it, as for the `retentionMs` after an upgrade.
 *
 * A poll is what `#poll` asks of storage: every page of the listing after `from` = now - 10 s (`maxClockSkewMs`),
 * each key parsed (`keys.parseChange`); it returns the same 1,000 or so entries in every layout. Reported per poll,
 * the median of `BENCH_ROUNDS` rounds (default 5) that alternate between the layouts: CPU of the main thread (from
 * /proc, Linux only) and of the whole process (`process.cpuUsage()`: the thread pool's `readdir` too).
 *
 *   npx tsx bench/feed-poll.ts        (about 30 s, most of it writing the entries)
 */
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { keys } from '../lib/core/keys.js';
import { FsStorage } from '../lib/index.js';
import { mapLimit } from '../lib/storage/util.js';
import { flatChange, flatChangesAfter } from '../test/helpers/flat-changes.js';
import { median } from './lib/stats.js';

const ENTRIES = Number(process.env.BENCH_ENTRIES ?? 60_000);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const SPAN_MS = 10 * 60_000;
const SKEW_MS = 10_000;
/** Polls per round of each layout: enough main-thread CPU to be counted in /proc's 10 ms ticks. */
const POLLS = { flat: 10, bucketed: 100 } as const;

const dir = await mkdtemp(join(process.env.BENCH_DIR ?? tmpdir(), 'appr-feed-poll-'));
try {
  const now = Date.now();
  const times = Array.from({ length: ENTRIES }, (_, i) => now - SPAN_MS + Math.floor((i * SPAN_MS) / ENTRIES));
  const flat = new FsStorage({ root: join(dir, 'flat'), fsync: false });
  const bucketed = new FsStorage({ root: join(dir, 'bucketed'), fsync: false });
  const started = performance.now();
  await mapLimit([...times.keys()], 64, async (i) => {
    const time = times[i]!;
    await flat.put(flatChange(time, 'a1b2c3d4', i, 'team-ns', 'some-app'), Buffer.alloc(0), { ifNoneMatch: '*' });
    await bucketed.put(keys.change(time, 'a1b2c3d4', i, 'team-ns', 'some-app'), Buffer.alloc(0), {
      ifNoneMatch: '*',
    });
  });
  console.log(`wrote ${ENTRIES} entries in each layout in ${((performance.now() - started) / 1000).toFixed(1)} s`);

  const from = now - SKEW_MS;
  const targets = [
    { label: 'flat', storage: flat, startAfter: flatChangesAfter(from), polls: POLLS.flat },
    { label: 'bucketed', storage: bucketed, startAfter: keys.changesAfter(from), polls: POLLS.bucketed },
    { label: 'flat, polled now', storage: flat, startAfter: keys.changesAfter(from), polls: POLLS.flat },
  ];
  const samples = new Map(targets.map((t) => [t.label, { main: [] as number[], process: [] as number[], n: 0 }]));
  for (const target of targets) await poll(target.storage, target.startAfter, from); // warm-up
  for (let round = 0; round < ROUNDS; round += 1) {
    for (const target of targets) {
      const mainBefore = mainThreadCpuMs();
      const processBefore = process.cpuUsage();
      let n = 0;
      for (let i = 0; i < target.polls; i += 1) n = await poll(target.storage, target.startAfter, from);
      const used = process.cpuUsage(processBefore);
      const sample = samples.get(target.label)!;
      sample.main.push((mainThreadCpuMs() - mainBefore) / target.polls);
      sample.process.push((used.user + used.system) / 1000 / target.polls);
      sample.n = n;
    }
  }
  console.log(`\none poll, ${ENTRIES} entries over 10 min, median of ${ROUNDS} rounds (ms of CPU per poll)\n`);
  console.log('| layout | entries returned | main thread | process |');
  console.log('| --- | ---: | ---: | ---: |');
  for (const { label } of targets) {
    const s = samples.get(label)!;
    console.log(`| ${label} | ${s.n} | ${median(s.main).toFixed(2)} | ${median(s.process).toFixed(2)} |`);
  }
} finally {
  await rm(dir, { recursive: true, force: true });
}

/** What `#poll` asks of storage: every page after `startAfter`, each key parsed. The entries timed `from` or later. */
async function poll(storage: FsStorage, startAfter: string, from: number): Promise<number> {
  let count = 0;
  let cursor: string | undefined;
  do {
    const page = await storage.list(keys.changes(), cursor === undefined ? { startAfter } : { cursor });
    for (const key of page.keys) if ((keys.parseChange(key)?.time ?? -1) >= from) count += 1;
    cursor = page.next;
  } while (cursor !== undefined);
  return count;
}

/** User + system CPU of this process's main thread so far, in ms (Linux: its thread id is the process id). */
function mainThreadCpuMs(): number {
  const fields = readFileSync(`/proc/self/task/${process.pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(fields[11]) + Number(fields[12])) * 10; // utime, stime in clock ticks (USER_HZ = 100)
}
