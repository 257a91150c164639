import { createHash, randomBytes } from 'node:crypto';
import { readdir, readFile, utimes, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { gunzipSync, gzipSync } from 'node:zlib';
import { expect } from 'chai';
import { ApprError } from '../../lib/errors.js';
import { Base64Decoder, BlobStager, decodeBase64, stageBlob } from '../../lib/core/blob.js';
import {
  editTarHeaders,
  makeTarGz,
  paxData,
  rawExtendedHeader as ext,
  rawTarData as data,
  rawTarHeader as hdr,
  tarGzOf,
} from '../helpers/blobs.js';
import { ESCAPING_TARS, SAFE_TARS } from './tars.js';
import { apprRejection } from '../helpers/expect.js';
import { tempDir } from '../helpers/temp.js';

function decodeInPieces(text: string, size: number): Buffer {
  const decoder = new Base64Decoder();
  const parts: Buffer[] = [];
  for (let i = 0; i < text.length; i += size) parts.push(decoder.push(text.slice(i, i + size)));
  parts.push(decoder.end());
  return Buffer.concat(parts);
}

describe('push: streamed base64 (Base64Decoder)', function () {
  const bytes = randomBytes(1000);
  for (const length of [0, 1, 2, 3, 4, 5, 998, 999, 1000]) {
    it(`decodes ${length} bytes cut into pieces of every size from 1 to 9`, function () {
      const b64 = bytes.subarray(0, length).toString('base64');
      for (let size = 1; size <= 9; size++)
        expect(decodeInPieces(b64, size).equals(bytes.subarray(0, length))).to.equal(true);
      expect(decodeInPieces(b64.replace(/=+$/, ''), 3).equals(bytes.subarray(0, length)), 'without padding').to.equal(
        true,
      );
    });
  }

  it('tolerates line breaks as the base64 tool writes them, across pieces', function () {
    const b64 = bytes.toString('base64').replace(/(.{76})/g, '$1\r\n');
    expect(decodeInPieces(b64, 7).equals(bytes)).to.equal(true);
  });

  for (const [label, text] of [
    ['a character outside the alphabet', 'ab!d'],
    ['URL-safe base64', 'ab-_'],
    ['a space', 'ab d'],
    ['data after padding', 'ab==cd'],
    ['three padding characters', 'a==='],
    ['a length of 4n+1', 'abcde'],
    // Padding is optional, but when present must end the text on a multiple of 4 (Python's b64decode refuses the
    // first three and ignores the last; Go's StdEncoding refuses all four).
    ['4n+1 data characters, padded', 'QUJDQ='],
    ['4n+1 data characters, padded twice', 'QUJDQ=='],
    ['padding one short', 'QUJDQQ='],
    ['padding one too many', 'QUJDQUI=='],
  ]) {
    it(`refuses ${label} (422 invalid-parameters), whatever the cut`, function () {
      for (let size = 1; size <= 4; size++) {
        expect(() => decodeInPieces(text as string, size), `pieces of ${size}`).to.throw(ApprError, /not valid base64/);
      }
      expect(() => decodeBase64(text as string)).to.throw(ApprError);
    });
  }
});

describe('push: staging a blob (BlobStager)', function () {
  let dir: string;
  tempDir('appr-stage-', 'each', (path) => {
    dir = path;
  });

  it('gives the digest of the uncompressed tar and the gzip size, in memory for a small blob', async function () {
    const gzip = await makeTarGz({ 'Chart.yaml': 'name: x\n' });
    const staged = await stageBlob(gzip, { maxUnpackedSize: 1 << 20, tmpDir: dir });
    expect(staged.digest).to.equal(createHash('sha256').update(gunzipSync(gzip)).digest('hex'));
    expect(staged.size).to.equal(gzip.length);
    expect(staged.bytes?.equals(gzip)).to.equal(true);
    expect(await readdir(dir)).to.deep.equal([]);
  });

  it('spools a blob over memoryBytes to a private temp file, readable again, removed by dispose()', async function () {
    const gzip = await makeTarGz({ 'noise.bin': randomBytes(300_000) });
    const stager = new BlobStager({ maxUnpackedSize: 1 << 24, memoryBytes: 64 * 1024, tmpDir: dir });
    for (let i = 0; i < gzip.length; i += 10_000) await stager.write(gzip.subarray(i, i + 10_000));
    const staged = await stager.end();
    expect(staged.bytes).to.equal(undefined);
    expect(await readdir(dir)).to.have.length(1);
    // The file's path (for StorageAdapter.putFile), and the gzip bytes' sha256, hashed as they went there: the
    // first 64 KiB were kept in memory, then spooled with the rest.
    expect(staged.path).to.equal(join(dir, (await readdir(dir))[0]!));
    expect((await readFile(staged.path!)).equals(gzip)).to.equal(true);
    expect(await staged.gzipDigest()).to.equal(createHash('sha256').update(gzip).digest('hex'));
    for (let round = 0; round < 2; round++) {
      const chunks: Buffer[] = [];
      for await (const chunk of staged.open()) chunks.push(chunk as Buffer);
      expect(Buffer.concat(chunks).equals(gzip), `read ${round + 1}`).to.equal(true);
    }
    await staged.dispose();
    await staged.dispose();
    expect(await readdir(dir)).to.deep.equal([]);
  });

  it('removes the spool files older than an hour that a killed process left, the first time it spools there', async function () {
    const hoursAgo = (hours: number) => new Date(Date.now() - hours * 3600_000);
    for (const [name, hours] of [
      ['koa-appr-push-1-0123456789abcdef.tgz', 2],
      ['koa-appr-push-2-0123456789abcdef.tgz', 0.5],
      ['someone-else.tgz', 2],
    ] as const) {
      await writeFile(join(dir, name), 'left');
      await utimes(join(dir, name), hoursAgo(hours), hoursAgo(hours));
    }
    const gzip = await makeTarGz({ 'noise.bin': randomBytes(300_000) });
    const staged = await stageBlob(gzip, { maxUnpackedSize: 1 << 24, memoryBytes: 1024, tmpDir: dir });
    const left = async () => (await readdir(dir)).filter((name) => name !== basename(staged.path!)).sort();
    for (let i = 0; i < 200 && (await left()).length === 3; i++) await new Promise((r) => setTimeout(r, 10));
    expect(await left()).to.deep.equal(['koa-appr-push-2-0123456789abcdef.tgz', 'someone-else.tgz']);
    await staged.dispose();
  });

  it('removes its temp file when a blob fails half-way (a gzip cut short) and when aborted', async function () {
    const gzip = await makeTarGz({ 'noise.bin': randomBytes(300_000) });
    const refused = await apprRejection(
      stageBlob(gzip.subarray(0, 200_000), { maxUnpackedSize: 1 << 24, memoryBytes: 1024, tmpDir: dir }),
    );
    expect(refused.code).to.equal('invalid-parameters');
    expect(await readdir(dir)).to.deep.equal([]);

    const stager = new BlobStager({ maxUnpackedSize: 1 << 24, memoryBytes: 1024, tmpDir: dir });
    await stager.write(gzip.subarray(0, 100_000));
    expect(await readdir(dir)).to.have.length(1);
    await stager.abort();
    expect(await readdir(dir)).to.deep.equal([]);
  });

  it('answers 413 payload-too-large as soon as the gzip bytes pass maxSize', async function () {
    const gzip = await makeTarGz({ 'noise.bin': randomBytes(50_000) });
    const err = await apprRejection(stageBlob(gzip, { maxUnpackedSize: 1 << 24, maxSize: 10_000, tmpDir: dir }));
    expect(err.code).to.equal('payload-too-large');
  });

  it('refuses a gzip bomb past maxUnpackedSize (422)', async function () {
    const bomb = gzipSync(Buffer.alloc(4 << 20));
    const err = await apprRejection(stageBlob(bomb, { maxUnpackedSize: 1 << 20, tmpDir: dir }));
    expect(err.code).to.equal('invalid-parameters');
    expect(err.message).to.match(/unpacks to more/);
  });

  for (const [label, entries] of ESCAPING_TARS) {
    it(`refuses a tarball with ${label} (422, says why)`, async function () {
      const err = await apprRejection(stageBlob(await tarGzOf(entries), { maxUnpackedSize: 1 << 20, tmpDir: dir }));
      expect(err.code).to.equal('invalid-parameters');
      expect(err.message).to.match(/outside the package directory|may not contain/);
      expect(await readdir(dir)).to.deep.equal([]);
    });
  }

  for (const [label, entries] of SAFE_TARS) {
    it(`accepts a tarball with ${label}`, async function () {
      const staged = await stageBlob(await tarGzOf(entries), { maxUnpackedSize: 1 << 20, tmpDir: dir });
      expect(staged.digest).to.match(/^[0-9a-f]{64}$/);
    });
  }

  /**
   * What staging `gzip` comes to, checked whole and then streamed in pieces of `piece` bytes: `stored`, or the
   * error's code and message.
   */
  const wholeAndStreamed = async (gzip: Buffer, piece: number): Promise<string[]> => {
    const outcomes: string[] = [];
    for (const streamed of [false, true]) {
      const stager = new BlobStager({
        maxUnpackedSize: 1 << 24,
        ...(streamed ? { checkAtEndBytes: 0 } : {}),
        tmpDir: dir,
      });
      const size = streamed ? piece : gzip.length;
      try {
        for (let at = 0; at < gzip.length; at += size) await stager.write(gzip.subarray(at, at + size));
        await (await stager.end()).dispose();
        outcomes.push('stored');
      } catch (err) {
        await stager.abort();
        outcomes.push(err instanceof ApprError ? `${err.code}: ${err.message}` : String(err));
      }
    }
    return outcomes;
  };

  it('reads a Unix V7 tar (tar --format=v7), as Helm does: its chart, checked whole or streamed', async function () {
    const chart = { 'app/Chart.yaml': 'apiVersion: v2\nname: app\nversion: 1.0.0\n' };
    for (const [what, files, piece] of [
      ['small, checked whole', chart, Infinity],
      ['streamed in pieces', { ...chart, 'app/noise.bin': randomBytes(200_000) }, 16 * 1024],
    ] as const) {
      const entries = Object.entries(files).map(([name, content]) => ({ header: { name }, content }));
      const v7 = await tarGzOf(entries, 'v7');
      expect(gunzipSync(v7).toString('latin1', 257, 263), 'no ustar magic').to.equal('\0'.repeat(6));
      const stager = new BlobStager({ maxUnpackedSize: 1 << 24, tmpDir: dir });
      for (let at = 0; at < v7.length; at += Math.min(piece, v7.length))
        await stager.write(v7.subarray(at, at + piece));
      const staged = await stager.end();
      try {
        expect(staged.digest, what).to.equal(createHash('sha256').update(gunzipSync(v7)).digest('hex'));
        expect(staged.chartFiles.chart(), what).to.have.nested.property('chart.name', 'app');
      } finally {
        await staged.dispose();
      }
    }
  });

  describe('a path prefix where the header format has none (the appr CLI, Python tarfile, reads it anyway)', function () {
    /** A tar of `entries` whose headers `edit` changes, gzipped: staged whole and in pieces of 7 gzip bytes. */
    const staged = async (
      entries: Record<string, string | Uint8Array>,
      edit: (header: Buffer, index: number) => void,
    ) => {
      const tar = gunzipSync(await makeTarGz(entries));
      editTarHeaders(tar, edit);
      return wholeAndStreamed(gzipSync(tar), 7);
    };
    const prefix = (value: string) => (header: Buffer) => header.write(value, 345, 'latin1');
    const magic = (value: string) => (header: Buffer) => header.write(value, 257, 'latin1');
    const both =
      (...edits: ((header: Buffer) => unknown)[]) =>
      (header: Buffer) =>
        edits.forEach((edit) => edit(header));
    const REFUSED =
      'invalid-parameters: blob: entry "app/Chart.yaml" has a path prefix in a tar header whose format has none ' +
      '(extractors would read it differently)';
    const chart = { 'app/Chart.yaml': 'name: app\nversion: 1.0.0\n' };

    it('refuses a V7 header (no magic) with a prefix of ../: Python would write outside the directory', async function () {
      const v7 = both((header) => header.fill(0, 257, 500), prefix('../../../../tmp/escaped'));
      expect(await staged(chart, v7)).to.deep.equal([REFUSED, REFUSED]);
    });

    it('refuses a GNU header (magic "ustar  ") or any other magic with a prefix', async function () {
      for (const value of ['ustar  \0', 'ustaR\0', 'ustar 00']) {
        expect(await staged(chart, both(magic(value), prefix('x'))), value).to.deep.equal([REFUSED, REFUSED]);
      }
    });

    it("takes a ustar prefix as the name's start (as every extractor does), and V7 and GNU headers without one", async function () {
      expect(await staged({ 'Chart.yaml': 'name: app\n' }, prefix('app'))).to.deep.equal(['stored', 'stored']);
      expect(await staged(chart, magic('ustar  \0'))).to.deep.equal(['stored', 'stored']);
      expect(await staged(chart, (header) => header.fill(0, 257, 500))).to.deep.equal(['stored', 'stored']);
      const escaping = await staged({ 'Chart.yaml': 'x' }, prefix('..'));
      expect(escaping[0]).to.match(/"..\/Chart.yaml" is outside the package directory/);
    });

    it("reads no block of an entry's data as a header, whatever it holds", async function () {
      // Data blocks that look like V7 headers with a prefix, around and across the pieces the parser gets.
      const data = Buffer.alloc(64 * 512, 0x41);
      const entries = {
        'app/Chart.yaml': chart['app/Chart.yaml'],
        'app/files/data.bin': data,
        'app/values.yaml': 'a: 1\n',
      };
      expect(await staged(entries, (header) => header.fill(0, 257, 500))).to.deep.equal(['stored', 'stored']);
      const last = (header: Buffer, index: number) =>
        index === 2 ? both(magic('\0'), prefix('../up'))(header) : undefined;
      expect(await staged(entries, last)).to.deep.equal([
        REFUSED.replace('app/Chart.yaml', 'app/values.yaml'),
        REFUSED.replace('app/Chart.yaml', 'app/values.yaml'),
      ]);
    });
  });

  describe('what the appr CLI (Python tarfile, no filter) would extract elsewhere than the check reads it', function () {
    /** The outcome of staging the tar of `blocks` whole, then streamed in pieces of 5 gzip bytes. */
    const outcomes = (blocks: Buffer[]) =>
      wholeAndStreamed(gzipSync(Buffer.concat([...blocks, Buffer.alloc(1024)])), 5);
    const chart = [hdr({ name: 'app/Chart.yaml', size: 10 }), data('name: app\n')];
    const refused: [string, Buffer[], RegExp][] = [
      [
        'a size with a NUL before its digits (Python reads 0, tar-stream 512: the next block a header to one only)',
        [hdr({ name: 'app/a', sizeField: '\u000000000001000' }), hdr({ name: '../../evil' })],
        /"app\/a" has a size that is not plain octal/,
      ],
      [
        "a size with an _ (Python's int() takes it)",
        [hdr({ name: 'app/a', sizeField: '0000001_001\0' }), data('z')],
        /"app\/a" has a size that is not plain octal/,
      ],
      [
        'a header of type N (a long name to tar-stream, a file to Python)',
        [hdr({ name: '../../evil', type: 'N', size: 6 }), data('app/b\0'), hdr({ name: 'app/b' })],
        /"app\/b" has a header of type "N" before it/,
      ],
      [
        'a file whose name ends in / (a directory to Python, which reads no data)',
        [hdr({ name: 'app/d/', type: '\0', size: 512 }), hdr({ name: '../../evil' })],
        /"app\/d\/" is a file whose name ends in \//,
      ],
      [
        'a symbolic link with data (Python reads none)',
        [hdr({ name: 'app/s', type: '2', linkname: 'values.yaml', size: 512 }), hdr({ name: '../../evil' })],
        /"app\/s" has data after a header of a type that has none/,
      ],
      [
        'a GNU.sparse.name pax record (Python renames the entry)',
        [ext('x', paxData(['GNU.sparse.name=../../evil'])), hdr({ name: 'app/d' })],
        /"app\/d" has a pax record "GNU.sparse.name"/,
      ],
      [
        'a global pax header naming a path (Python applies it to later entries)',
        [ext('g', paxData(['path=../../evil'])), hdr({ name: 'app/g' })],
        /"app\/g" has a global pax header naming its path/,
      ],
      [
        'a pax record without = (tar-stream stops there, Python reads on)',
        [ext('x', `6 abc\n${paxData(['path=../../evil'])}`), hdr({ name: 'app/e' })],
        /"app\/e" has a pax header whose records are not well formed/,
      ],
      [
        'a GNU long name and a pax path (each parser keeps another)',
        [ext('L', '../../evil\0'), ext('x', paxData(['path=app/i'])), hdr({ name: 'app/i' })],
        /"app\/i" has both a pax header and a GNU long name/,
      ],
      [
        'two GNU long names',
        [ext('L', '../../evil\0'), ext('L', 'app/j\0'), hdr({ name: 'app/j' })],
        /"app\/j" has two extended headers of type L/,
      ],
      [
        'two pax headers',
        [ext('x', paxData(['path=../../evil'])), ext('x', paxData(['path=app/k'])), hdr({ name: 'app/k' })],
        /"app\/k" has two extended headers of type x/,
      ],
      [
        'a path through an earlier symbolic link (app/up -> .., then app/up/../evil)',
        [hdr({ name: 'app/up', type: '2', linkname: '..' }), hdr({ name: 'app/up/../evil', size: 1 }), data('x')],
        /"app\/up\/..\/evil" is written through the symbolic link "app\/up"/,
      ],
      [
        'a symbolic link made through another (app/l -> .., then app/l/m -> ..: dest/m points out)',
        [hdr({ name: 'app/l', type: '2', linkname: '..' }), hdr({ name: 'app/l/m', type: '2', linkname: '..' })],
        /"app\/l\/m" is written through the symbolic link "app\/l"/,
      ],
      [
        'a file written over an earlier symbolic link (Python opens it and follows it)',
        [
          hdr({ name: 'app/a', type: '2', linkname: 'b/../x' }),
          hdr({ name: 'app/b', type: '2', linkname: '..' }),
          hdr({ name: 'app/a', size: 1 }),
          data('x'),
        ],
        /"app\/a" is written through the symbolic link "app\/a"/,
      ],
      [
        'a symbolic link whose target goes through another (lexically inside, really outside)',
        [hdr({ name: 'app/b', type: '2', linkname: '..' }), hdr({ name: 'app/a', type: '2', linkname: 'b/../..' })],
        /"app\/a" links to or through the symbolic link "app\/b"/,
      ],
      [
        'a hard link to a symbolic link (Python links what it points to)',
        [
          hdr({ name: 'app/s', type: '2', linkname: 'values.yaml' }),
          hdr({ name: 'top', type: '1', linkname: 'app/s' }),
        ],
        /"top" links to or through the symbolic link "app\/s"/,
      ],
      [
        'a symbolic link to another (copied by Python where it cannot make the link: it then points elsewhere)',
        [
          hdr({ name: 'app/d/e/m', type: '2', linkname: '../..' }),
          hdr({ name: 'app/s', type: '2', linkname: 'd/e/m' }),
        ],
        /"app\/s" links to or through the symbolic link "app\/d\/e\/m"/,
      ],
      [
        'a link target longer than the system takes (Python copies the member it names instead)',
        [ext('x', paxData([`linkpath=${'./'.repeat(2100)}values.yaml`])), hdr({ name: 'app/s', type: '2' })],
        /"app\/s" has a link target longer than 1024 bytes/,
      ],
      [
        'a hard link to a directory (Python copies the member it names instead)',
        [hdr({ name: 'app/d/', type: '5' }), hdr({ name: 'app/h', type: '1', linkname: 'app/d' })],
        /"app\/h" is a hard link to a directory/,
      ],
      [
        "a pax size that is no whole number (Python's int() refuses 1024.0 and reads 0)",
        [ext('x', paxData(['size=1024.0'])), hdr({ name: 'app/f', size: 1024 }), data(Buffer.alloc(1024))],
        /"app\/f" has a pax size that is no number/,
      ],
      [
        "an empty pax path (tar-stream keeps the header's name, Python names the entry '')",
        [ext('x', paxData(['path='])), hdr({ name: 'app/m', type: '2', linkname: 'values.yaml' })],
        /"app\/m" has an empty pax path or link/,
      ],
      [
        'an empty GNU long name',
        [ext('L', '\0'), hdr({ name: 'app/m', size: 1 }), data('x')],
        /"app\/m" has an empty long name/,
      ],
    ];
    for (const [what, blocks, message] of refused) {
      it(`refuses ${what} (422)`, async function () {
        const results = await outcomes([...chart, ...blocks]);
        expect(results[0], 'checked whole').to.match(message);
        expect(results[1], 'streamed').to.equal(results[0]);
        expect(await readdir(dir)).to.deep.equal([]);
      });
    }

    it("takes what real writers write: long names (L, K, pax), git archive's global header, links inside", async function () {
      const long = `app/templates/${'d'.repeat(120)}/a.yaml`;
      const taken: Buffer[][] = [
        [ext('g', paxData(['comment=4b825dc642cb6eb9a060e54bf8d69288fbee4904'])), ...chart],
        [...chart, ext('L', `${long}\0`), hdr({ name: long.slice(0, 99), size: 1 }), data('x')],
        [
          ...chart,
          ext('x', paxData([`path=${long}`, 'mtime=1.5', 'atime=1.5'])),
          hdr({ name: 'x', size: 1 }),
          data('x'),
        ],
        [
          ...chart,
          ext('L', `app/${'l'.repeat(120)}\0`),
          ext('K', `${long}\0`),
          hdr({ name: 'app/l', type: '2', linkname: 'templates' }),
        ],
        [
          ...chart,
          hdr({ name: 'app/templates/', type: '5' }),
          hdr({ name: 'app/link', type: '2', linkname: 'templates' }),
          hdr({ name: 'app/templates/a.yaml', size: 1 }),
          data('x'),
          hdr({ name: 'app/hard', type: '1', linkname: 'app/templates/a.yaml' }),
        ],
      ];
      for (const blocks of taken) expect(await outcomes(blocks)).to.deep.equal(['stored', 'stored']);
    });
  });

  it("refuses a V7 tar's escaping entry, and a V7 header whose checksum is wrong (422)", async function () {
    const escaping = await tarGzOf(ESCAPING_TARS[0]![1], 'v7');
    expect((await apprRejection(stageBlob(escaping, { maxUnpackedSize: 1 << 20, tmpDir: dir }))).message).to.match(
      /outside the package directory/,
    );
    const tar = gunzipSync(await tarGzOf([{ header: { name: 'app/Chart.yaml' }, content: 'name: app\n' }], 'v7'));
    tar[0] = 'b'.charCodeAt(0); // the name changed, the checksum not
    const err = await apprRejection(stageBlob(gzipSync(tar), { maxUnpackedSize: 1 << 20, tmpDir: dir }));
    expect(err.code).to.equal('invalid-parameters');
    expect(err.message).to.match(/tar/);
  });
});
