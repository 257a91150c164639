/**
 * The portal example as a server: `npx tsx examples/portal/server.ts`, then
 *
 *   appr login -u ci-bot -p ci-bot-pw http://127.0.0.1:5200        # the portal's users, through the registry
 *   appr push http://127.0.0.1:5200/acme/mychart -t helm       # ci-bot's team may write to acme
 *   curl -c jar -d '{"username":"bob","password":"bob-pw"}' http://127.0.0.1:5200/login
 *   curl -b jar http://127.0.0.1:5200/cnr/api/v1/packages      # bob's session cookie works on the registry too
 *
 * PORT (default 5200), PORTAL_SECRET (signs tokens), PORTAL_KEYS (comma-separated cookie keys). Memory storage:
 * everything is gone when it stops.
 */
import { randomBytes } from 'node:crypto';
import { MemoryStorage } from '../../lib/index.js';
import { createPortalApp } from './app.js';
import { Portal } from './portal.js';

const port = Number(process.env.PORT ?? 5200);
const portal = await Portal.demo(process.env.PORTAL_SECRET ?? randomBytes(32).toString('hex'));
const keys = (process.env.PORTAL_KEYS ?? randomBytes(32).toString('hex')).split(',');
const app = createPortalApp({ portal, storage: new MemoryStorage(), keys });
app.listen(port, '127.0.0.1', () => {
  console.log(
    `portal on http://127.0.0.1:${port} (registry under /cnr); users alice, bob, ci-bot, eve (password <name>-pw)`,
  );
});
