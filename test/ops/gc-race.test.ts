/**
 * Garbage collection racing pushes on a real S3 (Ceph RGW): a collector in another process runs back to back with
 * graceMs 0 while this process deletes releases (orphaning their blobs and metadata objects) and pushes them
 * again, with the same metadata (the push finds the object stored and reuses it), and pushes new ones. After every
 * round, every release of every package must have its blob, byte for byte, and its metadata object.
 */
import { createHash } from 'node:crypto';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { expect } from 'chai';
import { Registry } from '../../lib/index.js';
import { s3StorageFromUrl } from '../../lib/s3.js';
import { keys } from '../../lib/core/keys.js';
import { digestOf, makeTarGz } from '../helpers/blobs.js';
import { describeWithS3, S3_BUCKET, uniqueS3Prefix } from '../helpers/s3-env.js';

const WORKER = fileURLToPath(new URL('./gc-worker.ts', import.meta.url));
const ROUNDS = 20;
const PACKAGES = ['p0', 'p1', 'p2'];
/** The metadata of a release: the same for every push of it, so a push after a delete reuses its object. */
const metadataOf = (pkg: string, release: string) => ({ description: `${pkg} ${release}` });

describeWithS3('garbage collection racing pushes on S3 (Ceph RGW, collector in another process)', function () {
  this.timeout(600_000);

  it(`never leaves a release without its blob or its metadata, ${ROUNDS} rounds in a row`, async () => {
    const url = `s3://${S3_BUCKET}/${uniqueS3Prefix('gc-race')}`;
    const storage = s3StorageFromUrl(url);
    const registry = new Registry({ storage });
    const worker = spawn(process.execPath, ['--import', 'tsx', WORKER, url], { stdio: ['pipe', 'pipe', 'pipe'] });
    const blobs = new Map<string, Buffer>();
    let out = '';
    let err = '';
    worker.stdout.on('data', (chunk: Buffer) => {
      out += chunk.toString();
    });
    worker.stderr.on('data', (chunk: Buffer) => {
      err += chunk.toString();
    });
    try {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`gc worker did not start: ${err}`)), 30_000);
        worker.stdout.on('data', () => {
          if (out.includes('ready\n')) {
            clearTimeout(timer);
            resolve();
          }
        });
      });

      // The release's blob: the same bytes for every push of it, unless `variant` asks for other bytes.
      const chart = async (pkg: string, release: string, variant = '') =>
        makeTarGz({
          'Chart.yaml': `name: ${pkg}\nversion: ${release}\n`,
          ...(variant ? { 'variant.txt': variant } : {}),
        });
      const push = async (pkg: string, release: string, variant = '') => {
        const blob = await chart(pkg, release, variant);
        await registry.push({
          namespace: 'race',
          name: pkg,
          release,
          mediaType: 'helm',
          blob,
          metadata: metadataOf(pkg, release),
          force: true,
        });
        blobs.set(`${pkg}@${release}`, blob);
      };

      for (const pkg of PACKAGES) await push(pkg, '0.0.1');
      for (let round = 1; round <= ROUNDS; round += 1) {
        await Promise.all(
          PACKAGES.map(async (pkg, i) => {
            const again = `1.0.${round % 3}`; // pushed, deleted, pushed again: its blob goes orphan in between
            await push(pkg, again);
            await registry.deleteRelease('race', pkg, again, 'helm');
            await new Promise((resolve) => setTimeout(resolve, (round * 7 + i * 13) % 40));
            await push(pkg, again);
            await push(pkg, `2.${round}.0`); // a new release and blob
            // Pushed, deleted, pushed again with new bytes: only the metadata object is reused, not the blob.
            const meta = `3.0.${round % 2}`;
            await push(pkg, meta, `${round}a`);
            await registry.deleteRelease('race', pkg, meta, 'helm');
            await new Promise((resolve) => setTimeout(resolve, (round * 5 + i * 17) % 40));
            await push(pkg, meta, `${round}b`);
            if (round % 4 === 0) {
              // The whole package deleted (a tombstone, every blob an orphan), then its releases pushed again.
              const releases = (await registry.packageManifests('race', pkg)).map((m) => m.release);
              for (const release of releases) await registry.deleteRelease('race', pkg, release, 'helm');
              await new Promise((resolve) => setTimeout(resolve, (round * 11 + i * 5) % 40));
              for (const release of releases) await push(pkg, release);
            }
          }),
        );
        await verify(registry, storage, blobs, round);
      }
    } finally {
      worker.stdin.write('stop\n');
      await new Promise((resolve) => worker.once('exit', resolve));
    }
    const total = JSON.parse(out.split('\n').filter(Boolean).pop() ?? '{}') as {
      runs: number;
      blobs: number;
      metadata: number;
    };
    // The race really happened: the collector ran through the rounds and removed orphans while pushes went on.
    expect(total.runs, err).to.be.at.least(ROUNDS);
    expect(total.blobs, err).to.be.at.least(1);
    expect(total.metadata, err).to.be.at.least(1);
    await verify(registry, storage, blobs, 'after');
    await storage.close?.();
  });
});

/**
 * Every release of every package has its blob, with the digest its manifest names, and its metadata object (at
 * the hash of the metadata the manifest shows; this process may hold it in its cache, storage must hold it too).
 */
async function verify(
  registry: Registry,
  storage: ReturnType<typeof s3StorageFromUrl>,
  blobs: Map<string, Buffer>,
  round: number | string,
) {
  for (const summary of await registry.listPackages({ namespace: 'race' })) {
    const name = summary.name.slice(summary.namespace.length + 1); // summaries name packages `ns/name`
    for (const manifest of await registry.packageManifests(summary.namespace, name)) {
      const key = keys.blob(summary.namespace, name, manifest.content.digest);
      const stored = await storage.getStream(key);
      expect(stored, `round ${round}: ${name}@${manifest.release} lost its blob`).not.to.equal(null);
      const chunks: Buffer[] = [];
      for await (const chunk of stored!.body) chunks.push(chunk as Buffer);
      const bytes = Buffer.concat(chunks);
      expect(await digestOf(bytes)).to.equal(manifest.content.digest);
      expect(bytes.equals(blobs.get(`${name}@${manifest.release}`) as Buffer)).to.equal(true);
      expect(manifest.metadata).to.deep.equal(metadataOf(name, manifest.release));
      const hash = createHash('sha256').update(JSON.stringify(manifest.metadata)).digest('hex');
      expect(
        await storage.head(keys.metadata(summary.namespace, name, hash)),
        `round ${round}: ${name}@${manifest.release} lost its metadata`,
      ).not.to.equal(null);
    }
  }
}
