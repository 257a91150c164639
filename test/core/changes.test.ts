/**
 * The changing methods of Registry return domain values (names as the registry keeps them, `mediaType` in camel
 * case); the HTTP handlers shape the wire bodies from them (test/http/contract.ts checks those bodies).
 */
import { expect } from 'chai';
import { MemoryStorage, Registry } from '../../lib/index.js';
import { digestOf, makeTarGz } from '../helpers/blobs.js';

describe('Registry: what the changing methods return', () => {
  let registry: Registry;
  let digest: string;

  beforeEach(async () => {
    registry = new Registry({ storage: new MemoryStorage() });
    const bytes = await makeTarGz({ 'manifest.yaml': 'name: app\n' });
    digest = await digestOf(bytes);
    for (const release of ['1.0.0', '1.1.0']) {
      await registry.push({ namespace: 'acme', name: 'app', release, mediaType: 'helm', blob: bytes });
    }
    await registry.addChannelRelease('acme', 'app', 'stable', '1.0.0');
    await registry.addChannelRelease('acme', 'app', 'beta', '1.1.0');
  });

  it('setVisibility returns the package and its visibility', async () => {
    expect(await registry.setVisibility('acme', 'app', 'private')).to.deep.equal({
      namespace: 'acme',
      name: 'app',
      visibility: 'private',
    });
  });

  it('deleteRelease returns the release and media type it deleted, and whether the package went with it', async () => {
    expect(
      await registry.deleteRelease('acme', 'app', '1.1.0', 'application/vnd.appr.package-manifest.helm.v0.json'),
    ).to.deep.equal({ namespace: 'acme', name: 'app', release: '1.1.0', mediaType: 'helm', packageDeleted: false });
    expect(await registry.deleteRelease('acme', 'app', '1.0.0', 'helm')).to.deep.equal({
      namespace: 'acme',
      name: 'app',
      release: '1.0.0',
      mediaType: 'helm',
      packageDeleted: true,
    });
  });

  it('removeChannelRelease and deleteChannel return the channel they changed', async () => {
    expect(await registry.removeChannelRelease('acme', 'app', 'stable', '1.0.0')).to.deep.equal({
      namespace: 'acme',
      name: 'app',
      channel: 'stable',
      release: '1.0.0',
    });
    expect(await registry.deleteChannel('acme', 'app', 'beta')).to.deep.equal({
      namespace: 'acme',
      name: 'app',
      channel: 'beta',
    });
  });

  it('purgeBlob returns the digest and every release x media type it removed', async () => {
    const purged = await registry.purgeBlob('acme', 'app', `sha256:${digest}`);
    expect(purged).to.deep.equal({
      namespace: 'acme',
      name: 'app',
      digest,
      removed: [
        { release: '1.0.0', mediaType: 'helm' },
        { release: '1.1.0', mediaType: 'helm' },
      ],
    });
  });
});
