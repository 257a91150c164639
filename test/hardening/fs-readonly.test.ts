/**
 * Issue 12 item 17: a server started on a read-only data directory serves reads and refuses writes with a clear
 * 503 (a start-up probe that writes a file used to make every request a 503). The directory is made read-only for
 * real: a read-only bind mount in a private mount namespace (`unshare -m`, root only; skipped elsewhere), so
 * nothing on the machine changes.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { expect } from 'chai';
import { FsStorage, Registry } from '../../lib/index.js';
import { makeTarGz } from '../helpers/blobs.js';

const run = promisify(execFile);
const WORKER = fileURLToPath(new URL('./fs-readonly-worker.ts', import.meta.url));

async function canUnshare(): Promise<boolean> {
  if (process.getuid?.() !== 0) return false;
  try {
    await run('unshare', ['--mount', '--propagation', 'private', 'true']);
    return true;
  } catch {
    return false;
  }
}

describe('hardening: FsStorage on a read-only data directory', function () {
  this.timeout(60_000);
  let root = '';
  before(async function () {
    if (!(await canUnshare())) return this.skip();
    root = await mkdtemp(join(tmpdir(), 'appr-ro-'));
    const registry = new Registry({ storage: new FsStorage({ root }) });
    await registry.push({ namespace: 'ns', name: 'app', release: '1.0.0', mediaType: 'helm', blob: await makeTarGz() });
  });
  after(async () => {
    if (root) await rm(root, { recursive: true, force: true });
  });

  it('serves list, show and pull, and answers push and delete 503 storage-unavailable saying why', async () => {
    const script =
      'mount --bind "$1" "$1" && mount -o remount,ro,bind "$1" && touch "$1/probe" 2>/dev/null && exit 9; ' +
      'exec node --import tsx "$2" "$1"';
    const { stdout } = await run('unshare', [
      '--mount',
      '--propagation',
      'private',
      'bash',
      '-c',
      script,
      'ro',
      root,
      WORKER,
    ]);
    const { answers, logged } = JSON.parse(stdout.trim().split('\n').pop() ?? '{}') as {
      answers: Record<string, { status: number; json: any }>;
      logged: string[];
    };
    expect(answers.list!.status).to.equal(200);
    expect(answers.list!.json.map((p: { name: string }) => p.name)).to.deep.equal(['ns/app']);
    expect(answers.show!.status).to.equal(200);
    expect(answers.pull!.status).to.equal(200);
    for (const write of ['push', 'delete']) {
      expect(answers[write]!.status, write).to.equal(503);
      expect(answers[write]!.json.code).to.equal('storage-unavailable');
      expect(answers[write]!.json.message).not.to.include(root);
    }
    // 5xx bodies carry only the error table's message; the reason goes to the host's log (onError).
    expect(logged).to.have.length(2);
    for (const message of logged)
      expect(message).to.match(/the data directory is read-only: reads are served, writes are refused/);
    expect(answers['show-after']!.status).to.equal(200);
  });
});
