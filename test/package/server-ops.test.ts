/**
 * The standalone server operated as the README's "Operating it" says: `/metrics`, `/healthz` and `/readyz` outside
 * the prefix, the audit log from `APPR_AUDIT_LOG`, one JSON log line per request, and the `gc` sub-command over the
 * same store, all configured from the environment alone.
 */
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { expect } from 'chai';
import { makeTarGz } from '../helpers/blobs.js';
import { runCli, startInstance, type Instance } from '../helpers/instances.js';
import { describeWithS3, S3_BUCKET, uniqueS3Prefix } from '../helpers/s3-env.js';
import { tempDir } from '../helpers/temp.js';

describe('koa-appr serve: metrics, health, audit log, request log and gc from the environment', function () {
  this.timeout(60_000);
  let dir: string;
  let instance: Instance;
  let root: string;

  tempDir('koa-appr-server-ops-', 'all', async (path) => {
    dir = path;
    instance = await startInstance({
      APPR_STORAGE: join(dir, 'data'),
      APPR_AUDIT_LOG: join(dir, 'audit.jsonl'),
      APPR_LOG_LEVEL: 'info',
    });
    root = instance.url.replace(/\/cnr$/, '');
    return () => instance.stop();
  });

  it('serves /healthz, /readyz and /metrics outside the prefix, counting the requests it answered', async () => {
    const blob = (await makeTarGz({ 'app/README': 'hello' })).toString('base64');
    const push = await fetch(`${instance.url}/api/v1/packages/acme/app`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ release: '1.0.0', blob }),
    });
    expect(push.status).to.equal(200);
    expect((await fetch(`${instance.url}/api/v1/packages/acme/none`)).status).to.equal(404);

    expect((await fetch(`${root}/healthz`)).status).to.equal(200);
    const ready = await fetch(`${root}/readyz`);
    expect(ready.status).to.equal(200);
    const metrics = await (await fetch(`${root}/metrics`)).text();
    expect(metrics).to.match(/koa_appr_http_requests_total\{[^}]*route="push"[^}]*status="200"[^}]*\} 1/);
    expect(metrics).to.match(/koa_appr_http_requests_total\{[^}]*status="404"[^}]*\} 1/);
    expect(metrics).to.match(/process_cpu_seconds_total/);
  });

  it('writes one audit line per change, a purge included, and one JSON log line per request', async () => {
    const manifest = await fetch(`${instance.url}/api/v1/packages/acme/app/1.0.0/kpm`);
    const { digest } = ((await manifest.json()) as { content: { digest: string } }).content;
    const del = await fetch(`${instance.url}/api/v1/packages/acme/app/1.0.0/kpm`, { method: 'DELETE' });
    expect(del.status).to.equal(200);
    // The deleted release's blob stays downloadable until it is purged.
    const purge = await fetch(`${instance.url}/api/v1/packages/acme/app/blobs/sha256/${digest}`, { method: 'DELETE' });
    expect(purge.status).to.equal(200);
    await sleep(200);
    const audit = (await readFile(join(dir, 'audit.jsonl'), 'utf8'))
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line));
    expect(audit.map((e) => [e.type, e.package])).to.deep.equal([
      ['push', 'acme/app'],
      ['delete', 'acme/app'],
      ['purge', 'acme/app'],
    ]);
    expect(audit[2]).to.deep.include({
      actor: null,
      digest,
      releases: [],
      blobDeleted: true,
      packageDeleted: false,
    });
    const requests = instance
      .output()
      .split('\n')
      .filter((line) => line.startsWith('{'))
      .map((line) => JSON.parse(line))
      .filter((line) => line.route === 'delete-release');
    expect(requests).to.have.length(1);
    expect(requests[0]).to.include({ method: 'DELETE', status: 200 });
  });

  it('runs gc over the store named by APPR_STORAGE, reporting what it would remove in a dry run', async () => {
    const help = await runCli(['gc', '--help'], {});
    expect(help.code).to.equal(0);
    expect(help.out).to.contain('--dry-run');
    const bad = await runCli(['gc', '--grace', 'soon'], { APPR_STORAGE: join(dir, 'data') });
    expect(bad.code).to.equal(2);
    expect(bad.out).to.contain('--grace');
    const dry = await runCli(['gc', '--dry-run', '--grace', '0'], { APPR_STORAGE: join(dir, 'data') });
    expect(dry.code, dry.out).to.equal(0);
    const report = JSON.parse(dry.out.trim().split('\n').pop() as string);
    expect(report.dryRun).to.equal(true);
    expect(JSON.stringify(report)).to.contain('acme');
  });
});

describe('koa-appr gc and users: mistakes an operator makes', function () {
  this.timeout(30_000);
  let dir: string;
  tempDir('appr-cli-', 'all', (path) => {
    dir = path;
  });

  it('refuses gc over a data directory that does not exist (a mistyped APPR_STORAGE), and creates nothing', async () => {
    const missing = join(dir, 'no-such-data');
    const run = await runCli(['gc', '--dry-run'], { APPR_STORAGE: missing });
    expect(run.code, run.out).to.equal(2);
    expect(run.out).to.contain(`APPR_STORAGE=${missing}`).and.contain('does not exist');
    expect(existsSync(missing)).to.equal(false);
  });

  it('says that the user file does not exist when users list is given a wrong path', async () => {
    const missing = join(dir, 'no-such-users.json');
    const run = await runCli(['users', '--file', missing, 'list']);
    expect(run.code).to.equal(1);
    expect(run.out).to.contain(`${missing}: no such file`).and.not.contain('anonymous read');
  });

  it('says once who speaks, and which name is wrong, when users add gets a bad user name', async () => {
    const file = join(dir, 'users.json');
    const run = await runCli(['users', '--file', file, 'add', 'bad name', '--password', 'pw-123456']);
    expect(run.code).to.equal(1);
    expect(run.out)
      .to.contain('koa-appr users: ')
      .and.contain('"bad name"')
      .and.not.contain('koa-appr users: koa-appr:');
  });
});

/** Wait (bounded) until the instance's output matches, so a start-up line logged after "listening" can be read. */
async function outputMatching(instance: Instance, pattern: RegExp): Promise<string> {
  for (let i = 0; i < 600 && !pattern.test(instance.output()); i++) await sleep(50);
  return instance.output();
}

describe('koa-appr serve: a store that is not usable at start-up', function () {
  this.timeout(60_000);

  describeWithS3('on S3', () => {
    it('starts, logs that a bucket that does not exist is not reachable, and answers 503 until it is', async () => {
      const missing = `no-such-bucket-${process.pid}-${Date.now()}`;
      const instance = await startInstance({ APPR_STORAGE: `s3://${missing}/registry`, AWS_MAX_ATTEMPTS: '1' });
      try {
        const warning = new RegExp(`storage s3://${missing}/registry is not reachable`);
        expect(await outputMatching(instance, warning)).to.match(warning);
        const res = await fetch(`${instance.url}/api/v1/packages/acme/app/1.0.0/helm`);
        expect(res.status).to.equal(503);
        const body = (await res.json()) as { code: string; message: string };
        expect(body.code).to.equal('storage-unavailable');
        expect(body.message).to.not.contain(missing);
        expect((await fetch(`${instance.url.replace(/\/cnr$/, '')}/readyz`)).status).to.equal(503);
      } finally {
        await instance.stop();
      }
    });
  });

  describeWithS3('on Ceph RGW without S3_IFMATCH_UNQUOTED', () => {
    it('logs that the store refused a write conditional on its own ETag, naming S3_IFMATCH_UNQUOTED', async () => {
      const storage = `s3://${S3_BUCKET}/${uniqueS3Prefix('ifmatch')}`;
      const instance = await startInstance({ APPR_STORAGE: storage, S3_IFMATCH_UNQUOTED: '0' });
      try {
        const warning = /refused a write conditional on the ETag it had just given .*S3_IFMATCH_UNQUOTED=1/;
        expect(await outputMatching(instance, warning)).to.match(warning);
      } finally {
        await instance.stop();
      }
      // With the variable (the environment's), the same store passes: the check ends before the server stops.
      const good = await startInstance({ APPR_STORAGE: storage });
      await good.stop();
      expect(good.output()).to.not.match(/conditional/);
    });
  });

  describe('on a usable store', () => {
    let instance: Instance;
    tempDir('koa-appr-server-ready-', 'all', async (path) => {
      instance = await startInstance({ APPR_STORAGE: join(path, 'data') });
      return () => instance.stop();
    });

    it('logs nothing of the kind', async () => {
      // The probe has run once /readyz answers (it runs the same check).
      expect((await fetch(`${instance.url.replace(/\/cnr$/, '')}/readyz`)).status).to.equal(200);
      expect(instance.output()).to.not.match(/is not (reachable|writable)/);
    });
  });
});
