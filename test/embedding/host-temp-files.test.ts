/**
 * The temp files of a host multipart parser (koa-body `multipart: true`: formidable writes every file part to
 * `uploadDir`, `os.tmpdir()` by default, and neither it nor koa-body removes them once parsed). A push's `blob` part
 * and an upload's `chart` part are read from those files and left where they are: they are the host's, as they are
 * for its own routes, and a host that removes them after the request (the README's recipe) must find them there.
 * Over a real Koa app on a socket, with a directory of the test's own as `uploadDir`.
 */
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import Koa from 'koa';
import { koaBody } from 'koa-body';
import { createApprRouter, MemoryStorage } from '../../lib/index.js';
import { makeTarGz } from '../helpers/blobs.js';
import { listen, type TestServer } from '../helpers/http.js';
import { chartTgz } from '../helm/clients.js';

/** The README's recipe, first in the app: the parser's temp files of every request removed once it is answered. */
const removeUploads: Koa.Middleware = async (ctx, next) => {
  try {
    await next();
  } finally {
    const files = (ctx.request as { files?: Record<string, { filepath: string } | { filepath: string }[]> }).files;
    const all = Object.values(files ?? {}).flat();
    await Promise.all(all.map((file) => rm(file.filepath, { force: true })));
  }
};

for (const recipe of [false, true]) {
  describe(`koa-body's multipart temp files behind the registry${recipe ? ', removed by the host (README recipe)' : ''}`, function () {
    let dir: string;
    let server: TestServer;

    before(async function () {
      dir = await mkdtemp(join(tmpdir(), 'koa-appr-test-uploads-'));
      const app = new Koa();
      if (recipe) app.use(removeUploads);
      app.use(koaBody({ multipart: true, formidable: { uploadDir: dir } }));
      const appr = createApprRouter({ storage: new MemoryStorage() });
      app.use(appr.routes()).use(appr.allowedMethods());
      server = await listen(app, '/cnr');
    });
    after(async function () {
      await server.close();
      await rm(dir, { recursive: true, force: true });
    });

    it(`${recipe ? 'pushes, and the host removes' : 'pushes, and leaves the host'} the blob file part`, async function () {
      const blob = await makeTarGz({ 'tmpf/Chart.yaml': 'name: tmpf\n' });
      const form = new FormData();
      form.append('release', '1.0.0');
      form.append('blob', new Blob([blob.toString('base64')]), 'chart.b64');
      const res = await fetch(`${server.base}/api/v1/packages/tf/tmpf`, { method: 'POST', body: form });
      expect(res.status, await res.text()).to.equal(200);
      expect(await readdir(dir)).to.have.length(recipe ? 0 : 1);
    });

    it(`${recipe ? 'uploads, and the host removes' : 'uploads, and leaves the host'} the chart and prov file parts`, async function () {
      for (const name of await readdir(dir)) await rm(join(dir, name), { force: true }); // the push's, if left
      const form = new FormData();
      form.append('chart', new Blob([new Uint8Array(await chartTgz({ name: 'tmpf', version: '1.0.0' }))]), 'c.tgz');
      form.append('prov', new Blob(['-----BEGIN PGP SIGNED MESSAGE-----\n']), 'c.tgz.prov');
      const res = await fetch(`${server.base}/helm/api/tf/charts`, { method: 'POST', body: form });
      expect(res.status, await res.text()).to.equal(201);
      expect(await readdir(dir)).to.have.length(recipe ? 0 : 2);
    });
  });
}
