/**
 * A sequential push loop straight into the Registry core over FsStorage (no HTTP), for profiling the filesystem
 * write path:
 *
 *   node --cpu-prof --cpu-prof-dir=/tmp/prof --import tsx bench/push-profile.ts
 *   strace -f -c node --import tsx bench/push-profile.ts        (system calls per push: divide by N)
 *
 * Prints wall time and process CPU per push. BENCH_N pushes (default 1500) over 16 packages, 600 B of metadata.
 * BENCH_STORAGE=memory runs the same loop over MemoryStorage: the core's own cost, without the filesystem's writes
 * (their difference is what the filesystem store adds per push: its writer threads' round trips and system calls).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Registry } from '../lib/index.js';
import { FsStorage } from '../lib/storage/fs.js';
import { MemoryStorage } from '../lib/storage/memory.js';
import { makeTarGz } from '../test/helpers/blobs.js';

const N = Number(process.env.BENCH_N ?? 1500);
const STORAGE = process.env.BENCH_STORAGE ?? 'fs';
if (STORAGE !== 'fs' && STORAGE !== 'memory') throw new Error(`BENCH_STORAGE: fs or memory, not ${STORAGE}`);
const dir = await mkdtemp(join(tmpdir(), 'appr-push-profile-'));
try {
  const registry = new Registry({ storage: STORAGE === 'fs' ? new FsStorage({ root: dir }) : new MemoryStorage() });
  const blobs = await Promise.all(
    Array.from({ length: N }, (_, i) => makeTarGz({ 'Chart.yaml': `version: 1.${i}.0\n` })),
  );
  const metadata = { description: 'x'.repeat(400), maintainers: [{ name: 'bench', email: 'bench@example.com' }] };
  const started = performance.now();
  const cpu0 = process.cpuUsage();
  for (let i = 0; i < N; i++) {
    await registry.push({
      namespace: 'profile',
      name: `p${i % 16}`,
      release: `1.${Math.floor(i / 16)}.0`,
      mediaType: 'helm',
      blob: blobs[i] as Buffer,
      metadata,
    });
  }
  const cpu = process.cpuUsage(cpu0);
  console.log(
    `${N} sequential pushes (${STORAGE}): ${((performance.now() - started) / N).toFixed(2)} ms/push wall, ` +
      `${((cpu.user + cpu.system) / 1000 / N).toFixed(2)} ms/push CPU`,
  );
} finally {
  await rm(dir, { recursive: true, force: true });
}
