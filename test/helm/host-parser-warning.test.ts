/**
 * The process warning `KOA_APPR_HOST_BODY_PARSER` (README "Host body parsers"): the first request whose body a host
 * parser read before the registry says so once, whether it is an appr push or a ChartMuseum upload. Each case runs in
 * a process of its own (host-parser-warning-worker.ts), where no request came before.
 */
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { expect } from 'chai';

const worker = fileURLToPath(new URL('./host-parser-warning-worker.ts', import.meta.url));

async function run(kind: 'push' | 'helm'): Promise<{ status: number; codes: unknown[] }> {
  const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', worker, kind], {
    timeout: 15_000,
  });
  return JSON.parse(stdout.trim().split('\n').at(-1) as string) as { status: number; codes: unknown[] };
}

describe('the host body parser warning (KOA_APPR_HOST_BODY_PARSER)', function () {
  it('is emitted once by an appr push behind a parser that read its body', async function () {
    expect(await run('push')).to.deep.equal({ status: 200, codes: ['KOA_APPR_HOST_BODY_PARSER'] });
  });

  it('is emitted once by a ChartMuseum upload behind a parser that read its body', async function () {
    expect(await run('helm')).to.deep.equal({ status: 201, codes: ['KOA_APPR_HOST_BODY_PARSER'] });
  });
});
