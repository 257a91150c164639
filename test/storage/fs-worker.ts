/**
 * A child process for the multi-process tests of FsStorage (test/storage/fs.test.ts):
 *
 *   node --import tsx fs-worker.ts '<json task>'
 *
 * It opens the storage, prints `ready`, waits for a line on stdin so that all workers start racing together, runs
 * its task and prints the result as one JSON line. The `hold-lock` task instead prints `ready` once it holds the
 * key's lock, and then waits to be killed.
 */
import { FsStorage } from '../../lib/storage/fs.js';

export type WorkerTask =
  | { mode: 'increment'; root: string; key: string; times: number }
  | { mode: 'create'; root: string; keys: string[]; id: string }
  | { mode: 'hold-lock'; root: string; key: string };

const task = JSON.parse(process.argv[2] ?? '') as WorkerTask;
const storage = new FsStorage({ root: task.root });
await storage.list('warm-up/'); // Create the directories and clean temp files before the race, not during it.

if (task.mode === 'hold-lock') {
  // Reaches into the (TypeScript-)private lock so that a real process dies holding it.
  const internals = storage as unknown as { withLock(key: string, fn: () => Promise<void>): Promise<void> };
  await internals.withLock(task.key, async () => {
    process.stdout.write('ready\n');
    await new Promise(() => setInterval(() => {}, 1000)); // Hold it until killed.
  });
} else {
  process.stdout.write('ready\n');
  await new Promise((resolve) => process.stdin.once('data', resolve));
  process.stdin.destroy();
  const result = task.mode === 'increment' ? await increment(task.key, task.times) : await create(task.keys, task.id);
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

async function increment(key: string, times: number): Promise<{ conflicts: number }> {
  let conflicts = 0;
  for (let done = 0; done < times;) {
    const current = await storage.get(key);
    if (current === null || current.notModified) throw new Error('the counter is missing');
    const { n } = JSON.parse(current.body.toString()) as { n: number };
    if ((await storage.put(key, Buffer.from(JSON.stringify({ n: n + 1 })), { ifMatch: current.etag })) === null) {
      conflicts++;
      await new Promise((resolve) => setTimeout(resolve, Math.random() * 3));
    } else {
      done++;
    }
  }
  return { conflicts };
}

async function create(keys: string[], id: string): Promise<{ won: string[] }> {
  const won: string[] = [];
  for (const key of keys) {
    if ((await storage.put(key, Buffer.from(id), { ifNoneMatch: '*' })) !== null) won.push(key);
  }
  return { won };
}
