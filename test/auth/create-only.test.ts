/** A caller allowed to create packages in a namespace, but not to write to existing ones (a "new packages only" robot). */
import { expect } from 'chai';
import type { AuthHooks } from '../../lib/index.js';
import { startRegistry, type RegistryServer } from './helpers.js';
import { makeTarGz } from '../helpers/blobs.js';

describe('a push allowed only by create permission', () => {
  let server: RegistryServer;
  let createdMeanwhile: (() => Promise<void>) | undefined;
  const hooks: AuthHooks<string> = {
    identify: (_ctx, credentials) => (credentials?.scheme === 'bearer' ? credentials.token : null),
    authorize: async (caller, permission) => {
      if (caller === 'owner') return true;
      if (caller !== 'creator') return false;
      if (permission === 'create') {
        // Another caller creates the package after this one was authorized, before its push is applied.
        await createdMeanwhile?.();
        return true;
      }
      return false;
    },
  };

  beforeEach(async () => {
    createdMeanwhile = undefined;
    server = await startRegistry<string>({ auth: hooks });
  });
  afterEach(() => server.close());

  const push = async (release: string) =>
    server.api('POST', '/api/v1/packages/acme/app', {
      auth: 'Bearer creator',
      json: { release, media_type: 'helm', blob: (await makeTarGz()).toString('base64') },
    });

  /** Release 1.0.0 of acme/app, pushed through the core as the owner would. */
  const pushDirectly = async () => {
    await server.registry.push({
      namespace: 'acme',
      name: 'app',
      release: '1.0.0',
      mediaType: 'helm',
      blob: await makeTarGz(),
    });
  };
  const releases = async () => (await server.registry.packageManifests('acme', 'app')).map((m) => m.release);

  it('creates a new package', async () => {
    expect((await push('1.0.0')).status).to.equal(200);
    expect(await releases()).to.deep.equal(['1.0.0']);
  });

  it('is refused (403) once the package exists', async () => {
    await pushDirectly();
    const res = await push('2.0.0');
    expect(res.status).to.equal(403);
    expect(await releases()).to.deep.equal(['1.0.0']);
  });

  it('is refused (403), not added, when someone else creates the package between the check and the write', async () => {
    createdMeanwhile = pushDirectly;
    const res = await push('2.0.0');
    expect(res.status).to.equal(403);
    expect(res.json.code).to.equal('forbidden');
    expect(await releases()).to.deep.equal(['1.0.0']);
  });
});
