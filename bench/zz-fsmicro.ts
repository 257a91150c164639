import { mkdtemp, rm } from 'node:fs/promises';
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FsStorage } from '../lib/storage/fs.js';
const N = 1000;
const dir = await mkdtemp(join(tmpdir(), 'appr-fsmicro-'));
const s = new FsStorage({ root: dir });
const body = Buffer.alloc(600, 'x');
await s.put('warm', body);
let t = performance.now();
for (let i = 0; i < N; i++) await s.put(`a/k${i}`, body, { ifNoneMatch: '*' });
console.log('create-only put', ((performance.now() - t) / N).toFixed(3), 'ms');
let etag = await s.put('doc', body, { ifNoneMatch: '*' });
t = performance.now();
for (let i = 0; i < N; i++) etag = await s.put('doc', body, { ifMatch: etag as string });
console.log('cas put', ((performance.now() - t) / N).toFixed(3), 'ms');
t = performance.now();
for (let i = 0; i < N; i++) await s.get('doc', { ifNoneMatch: etag as string });
console.log('get 304', ((performance.now() - t) / N).toFixed(3), 'ms');
// sync variant of create-only
fs.mkdirSync(join(dir, 'b'));
t = performance.now();
for (let i = 0; i < N; i++) {
  const p = join(dir, 'tmp', `x${i}`);
  const fd = fs.openSync(p, 'wx'); fs.writeSync(fd, body); fs.futimesSync(fd, Date.now() / 1000, Date.now() / 1000);
  await new Promise<void>((res, rej) => fs.fsync(fd, (e) => (e ? rej(e) : res())));
  fs.linkSync(p, join(dir, 'b', `k${i}`)); fs.unlinkSync(p); fs.fstatSync(fd, { bigint: true }); fs.closeSync(fd);
}
console.log('sync create-only (async fsync)', ((performance.now() - t) / N).toFixed(3), 'ms');
t = performance.now();
for (let i = 0; i < N; i++) {
  const p = join(dir, 'tmp', `y${i}`);
  const fd = fs.openSync(p, 'wx'); fs.writeSync(fd, body); fs.futimesSync(fd, Date.now() / 1000, Date.now() / 1000);
  fs.linkSync(p, join(dir, 'b', `j${i}`)); fs.unlinkSync(p); fs.fstatSync(fd, { bigint: true }); fs.closeSync(fd);
}
console.log('sync create-only (no fsync)', ((performance.now() - t) / N).toFixed(3), 'ms');
t = performance.now();
for (let i = 0; i < N; i++) {
  const fd = fs.openSync(join(dir, 'tmp', `z${i}`), 'wx'); fs.writeSync(fd, body);
  await new Promise<void>((res, rej) => fs.fsync(fd, (e) => (e ? rej(e) : res()))); fs.closeSync(fd);
}
console.log('fsync alone-ish', ((performance.now() - t) / N).toFixed(3), 'ms');
await rm(dir, { recursive: true, force: true });
