/**
 * A child process for the crash test of FsStorage (test/storage/fs-writer-attack.test.ts):
 *
 *   node --import tsx fs-crash-worker.ts <root> <id>
 *
 * It prints `ready`, then writes until it is killed: create-if-absent, unconditional replace and empty creates of
 * self-checking bodies (small ones through the writer threads, some just over 1 MiB through the thread pool), and
 * compare-and-swap appends to shared documents, printing `applied <op>` after each append that succeeded.
 */
import { FsStorage } from '../../lib/storage/fs.js';

/** A body that names its own seed and length, so that a torn or truncated copy is detected: see `isWhole`. */
export function wholeBody(seed: number, length: number): Buffer {
  const header = Buffer.from(`${seed}:${length}\n`);
  const body = Buffer.alloc(Math.max(length, header.length));
  header.copy(body);
  let x = seed >>> 0 || 1;
  for (let i = header.length; i < body.length; i++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    body[i] = x >>> 24;
  }
  return body;
}

export function isWhole(body: Buffer): boolean {
  const match = /^(\d+):(\d+)\n/.exec(body.subarray(0, 32).toString('latin1'));
  return match !== null && wholeBody(Number(match[1]), Number(match[2])).equals(body);
}

const BIG = 1024 * 1024 + 1;

async function main(root: string, id: string): Promise<void> {
  const storage = new FsStorage({ root, staleLockMs: 2000 });
  await storage.list('warm-up/');
  process.stdout.write('ready\n');
  for (let n = 0; ; n++) {
    const pick = Math.random();
    const seed = Math.floor(Math.random() * 2 ** 31);
    const length = Math.random() < 0.05 ? BIG : 20 + Math.floor(Math.random() * 4000);
    if (pick < 0.25) {
      await storage.put(`c/${id}-${n}`, wholeBody(seed, length), { ifNoneMatch: '*' });
    } else if (pick < 0.45) {
      await storage.put(`r/${n % 3}`, wholeBody(seed, length));
    } else if (pick < 0.6) {
      await storage.put(`e/${id}-${n}`, new Uint8Array(0), { ifNoneMatch: '*' });
    } else {
      const key = `s/${n % 2}`;
      const op = `${id}-${n}`;
      for (;;) {
        const current = await storage.get(key);
        if (current !== null && current.notModified) throw new Error('a plain get answered not-modified');
        const ops = current === null ? [] : (JSON.parse(current.body.toString()) as { ops: string[] }).ops;
        const body = Buffer.from(JSON.stringify({ ops: [...ops, op] }));
        const done =
          current === null
            ? await storage.put(key, body, { ifNoneMatch: '*' })
            : await storage.put(key, body, { ifMatch: current.etag });
        if (done !== null) break;
      }
      process.stdout.write(`applied ${op}\n`);
    }
  }
}

if (process.argv[1] === new URL(import.meta.url).pathname) await main(process.argv[2]!, process.argv[3]!);
