import { expect } from 'chai';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { makeTarGz } from '../helpers/blobs.js';
import { startInstance, type Instance } from '../helpers/instances.js';
import { describeWithS3, S3_BUCKET, uniqueS3Prefix } from '../helpers/s3-env.js';

const GATEWAY = fileURLToPath(new URL('../../.ci/s3/gateway.sh', import.meta.url));
const gateway = (action: 'kill' | 'start') => promisify(execFile)('bash', [GATEWAY, action]);

/**
 * The S3 gateway dies in the middle of a run of pushes: the registry answers 503 JSON while it is down, recovers
 * by itself when it is back (no restart of the registry), and never shows a release whose blob is missing.
 */
describeWithS3('a registry instance through an S3 outage (radosgw killed and restarted)', function () {
  this.timeout(180_000);
  let instance: Instance;
  let gatewayDown = false;

  before(async () => {
    instance = await startInstance({
      APPR_STORAGE: `s3://${S3_BUCKET}/${uniqueS3Prefix('outage')}`,
      S3_CONNECT_TIMEOUT_MS: '1000',
      AWS_MAX_ATTEMPTS: '2',
    });
  });
  after(async () => {
    if (gatewayDown) await gateway('start');
    await instance.stop();
  });

  it('answers 503 storage-unavailable while S3 is down, recovers by itself, and keeps every visible release pullable', async () => {
    const base = `${instance.url}/api/v1/packages/outage/app`;
    let n = 0;
    const push = async () => {
      const release = `1.0.${n++}`;
      const blob = await makeTarGz({ 'Chart.yaml': `version: ${release}\n` });
      const res = await fetch(base, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ release, media_type: 'helm', blob: blob.toString('base64') }),
      });
      return { release, status: res.status, body: (await res.json()) as { code?: string } };
    };

    const before = [await push(), await push(), await push()];
    expect(before.map((r) => r.status)).to.deep.equal([200, 200, 200]);

    // Pushes racing the kill, then pushes while the gateway is down.
    const racing = Promise.all([push(), push(), push()]);
    gatewayDown = true;
    await gateway('kill');
    const during = [...(await racing), await push(), await push()];
    for (const r of during) expect([200, 503]).to.include(r.status);
    const down = during.slice(3);
    expect(down.map((r) => r.status)).to.deep.equal([503, 503]);
    for (const r of down) expect(r.body.code).to.equal('storage-unavailable');
    // A package this instance does not know is looked up in storage (what it knows may be served from memory).
    const read = await fetch(`${instance.url}/api/v1/packages/outage/absent/1.0.0/helm`);
    expect(read.status).to.equal(503);
    expect(((await read.json()) as { code: string }).code).to.equal('storage-unavailable');

    await gateway('start');
    gatewayDown = false;
    // The same registry process, never restarted, recovers on its own.
    let after = await push();
    for (let i = 0; i < 20 && after.status !== 200; i += 1) {
      await new Promise((r) => setTimeout(r, 500));
      after = await push();
    }
    expect(after.status).to.equal(200);

    const manifests = (await (await fetch(base)).json()) as { release: string }[];
    const visible = manifests.map((m) => m.release);
    for (const r of [...before, after, ...during.filter((x) => x.status === 200)])
      expect(visible).to.include(r.release);
    for (const release of visible) {
      const pulled = await fetch(`${base}/${release}/helm/pull`);
      expect(pulled.status, `pull ${release}`).to.equal(200);
      expect((await pulled.arrayBuffer()).byteLength).to.be.greaterThan(0);
    }
  });
});
