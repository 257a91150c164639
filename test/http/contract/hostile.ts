/** The HTTP contract suite, docs/api.md sections 10 and 13.1-13.2: hostile input (no 500, no HTML, nothing changes). */
import { gzipSync } from 'node:zlib';
import { expect } from 'chai';
import type { StorageAdapter } from '../../../lib/index.js';
import { BLOBS, expectError, type TestServer } from '../../helpers/http.js';
import {
  type HttpContract,
  newPkg,
  enc,
  rawExchange,
  catchUncaught,
  recordingStorage,
  type RequestInitLike,
} from './shared.js';

export function describeHostileInput(t: HttpContract): void {
  const { serverWith, push, addToChannel, snapshot } = t;

  // ---------------------------------------------------------------------------------------------------------
  describe('hostile input: no 500, no HTML, nothing changes (sections 10 and 13.1-13.2)', function () {
    const HOSTILE: [label: string, segment: string, decoded: string][] = [
      ['..', '..', '..'],
      ['.', '.', '.'],
      ['%2F', 'a%2Fb', 'a/b'],
      ['%2F..%2F', '..%2F..%2Fetc', '../../etc'],
      ['%00', 'a%00b', 'a\u0000b'],
      ['10,000 characters', 'a'.repeat(10_000), 'a'.repeat(10_000)],
      ['malformed %-encoding', '%E0%A4%A', '%E0%A4%A'],
      ['%2E%2E', '%2E%2E', '..'],
      ['a leading dash', '-rf', '-rf'],
      ['a backslash', 'a%5Cb', 'a\\b'],
    ];

    const p = newPkg();
    let spy: { storage: StorageAdapter; keys: string[] };
    let guarded: TestServer;
    let before0: unknown;
    before(async function () {
      await push(p, '1.0.0');
      await addToChannel(p, 'stable', '1.0.0');
      spy = recordingStorage(t.storage);
      guarded = await serverWith({}, spy.storage);
      before0 = await snapshot(p);
    });

    /** A test that must also leave the package exactly as it was. */
    const itUnchanged = (title: string, fn: () => Promise<void>) =>
      it(title, async function () {
        await fn();
        expect(await snapshot(p)).to.deep.equal(before0);
      });

    const body = () => ({ json: { blob: BLOBS.HELM_1_0_0.b64, release: '2.0.0', media_type: 'helm' } });

    /** Requests with `v` in one name position, each expected to be 400 invalid-usage. */
    const POSITIONS: Record<string, (v: string) => [string, string, object?][]> = {
      namespace: (v) => [
        ['POST', `/api/v1/packages/${v}/${p.name}`, body()],
        ['GET', `/api/v1/packages/${v}/${p.name}`],
        ['GET', `/api/v1/packages/${v}/${p.name}/1.0.0`],
        ['GET', `/api/v1/packages/${v}/${p.name}/1.0.0/helm`],
        ['GET', `/api/v1/packages/${v}/${p.name}/1.0.0/helm/pull`],
        ['DELETE', `/api/v1/packages/${v}/${p.name}/1.0.0/helm`],
        ['GET', `/api/v1/packages/${v}/${p.name}/blobs/sha256/${BLOBS.HELM_1_0_0.digest}`],
        ['GET', `/api/v1/packages/${v}/${p.name}/channels`],
        ['POST', `/api/v1/packages/${v}/${p.name}/channels/stable/1.0.0`],
        ['GET', `/api/v1/packages?namespace=${v}`],
      ],
      package: (v) => [
        ['POST', `/api/v1/packages/${p.ns}/${v}`, body()],
        ['GET', `/api/v1/packages/${p.ns}/${v}`],
        ['GET', `/api/v1/packages/${p.ns}/${v}/1.0.0/helm`],
        ['GET', `/api/v1/packages/${p.ns}/${v}/default/-/pull/json`],
        ['DELETE', `/api/v1/packages/${p.ns}/${v}/1.0.0/helm`],
        ['GET', `/api/v1/packages/${p.ns}/${v}/blobs/sha256/${BLOBS.HELM_1_0_0.digest}/json`],
        ['DELETE', `/api/v1/packages/${p.ns}/${v}/channels/stable`],
      ],
      channel: (v) => [
        ['GET', `${p.path}/channels/${v}`],
        ['POST', `${p.path}/channels/${v}/1.0.0`],
        ['DELETE', `${p.path}/channels/${v}/1.0.0`],
        ['DELETE', `${p.path}/channels/${v}`],
      ],
      'media type': (v) => [
        ['GET', `${p.path}/1.0.0/${v}`],
        ['GET', `${p.path}/1.0.0/${v}/pull`],
        ['GET', `${p.path}/1.0.0/${v}/pull/json`],
        ['DELETE', `${p.path}/1.0.0/${v}`],
        ['GET', `${p.path}?media_type=${v}`],
        ['GET', `/api/v1/packages?media_type=${v}`],
      ],
    };

    for (const [position, requests] of Object.entries(POSITIONS)) {
      for (const [label, segment, decoded] of HOSTILE) {
        // `.` and `..` segments would be resolved by any URL parser; as query values they are plain strings.
        itUnchanged(
          `answers 400 invalid-usage to ${label} as a ${position} name, before any storage access`,
          async function () {
            spy.keys.length = 0;
            for (const [method, path, options] of requests(segment)) {
              const res = await guarded.request(method, path, { ...(options ?? {}), raw: true });
              const where = `${method} ${path.slice(0, 100)}`;
              expect(res.status, `${where}: ${res.text.slice(0, 200)}`).to.equal(400);
              expectError(res, 400, 'invalid-usage');
            }
            for (const key of spy.keys) {
              expect(key.includes(decoded) && decoded.length > 2, `storage saw ${key.slice(0, 100)}`).to.equal(false);
              expect(
                key
                  .split('/')
                  .every((s, i, all) =>
                    s === '' ? i === all.length - 1 : /^[A-Za-z0-9._+-]+$/.test(s) && s !== '..' && s !== '.',
                  ),
                `storage key ${key.slice(0, 100)}`,
              ).to.equal(true);
            }
          },
        );
      }
    }

    for (const [label, mediaType] of [
      ['../x', '../x'],
      ['a/b', 'a/b'],
      ['NUL', 'helm\u0000'],
      ['10,000 characters', 'm'.repeat(10_000)],
      ['a manifest type wrapping ..', 'application/vnd.appr.package-manifest.../...v0.json'],
      ['a manifest type wrapping a slash', 'application/vnd.cnr.package-manifest.a/b.v0.json'],
      ['an empty string', ''],
    ] as const) {
      itUnchanged(`rejects the pushed media type ${label} without storing anything`, async function () {
        const res = await guarded.request('POST', p.path, {
          json: { blob: BLOBS.HELM_1_1_0.b64, release: '3.0.0', media_type: mediaType },
        });
        // An empty media type is rejected like any other bad one: it is not read as absent (kpm) nor stored as "".
        expectError(res, 400, 'invalid-usage');
      });
    }

    for (const [label, release] of [
      ['..', '..'],
      ['../1.0.0', '../1.0.0'],
      ['1.0.0/..', '1.0.0/..'],
      ['NUL', '1.0.0\u0000'],
      ['of 10,000 numbers', `${'1.'.repeat(5_000)}0`],
      ['of 10,000 characters ending in an empty identifier', `1.0.0-${'a.'.repeat(5_000)}`],
    ] as const) {
      itUnchanged(`answers 422 invalid-release to the pushed release ${label}`, async function () {
        const res = await guarded.request('POST', p.path, {
          json: { blob: BLOBS.HELM_1_1_0.b64, release, media_type: 'helm' },
        });
        expectError(res, 422, 'invalid-release');
      });
    }

    itUnchanged(
      'answers release path segments with .., %2F, %00 or 10,000 characters with a JSON 4xx',
      async function () {
        // (A segment whose percent-encoding does not decode is a 400 in any position: path-encoding.test.ts.)
        for (const segment of ['..', '%2E%2E', 'a%2Fb', '1.0.0%00', '9'.repeat(10_000)]) {
          // The answer depends on the route, not on the segment: a release that names no stored release is not found
          // where the route looks one up by name, and an invalid release where the route parses a selector or a release.
          for (const [method, path, status, code] of [
            ['GET', `${p.path}/${segment}`, 404, 'package-not-found'],
            ['GET', `${p.path}/${segment}/helm`, 422, 'invalid-release'],
            ['GET', `${p.path}/${segment}/helm/pull`, 422, 'invalid-release'],
            ['DELETE', `${p.path}/${segment}/helm`, 404, 'package-not-found'],
            ['POST', `${p.path}/channels/stable/${segment}`, 422, 'invalid-release'],
            ['DELETE', `${p.path}/channels/stable/${segment}`, 404, 'package-not-found'],
          ] as const) {
            const res = await guarded.request(method, path, { raw: true });
            expect(res.status, `${method} ${path.slice(0, 80)}`).to.equal(status);
            expectError(res, status, code);
          }
        }
      },
    );

    itUnchanged(
      'answers digest segments with .., %2F or 10,000 characters with 404 package-not-found',
      async function () {
        for (const segment of ['..', 'a%2Fb', '%00', 'f'.repeat(10_000), `sha256:${'a'.repeat(9_990)}`]) {
          const res = await guarded.request('GET', `${p.path}/blobs/sha256/${segment}`, { raw: true });
          expectError(res, 404, 'package-not-found');
        }
      },
    );

    // Long selectors are kept to what fits, URL-encoded, in Node's default 16 KiB request head.
    for (const selector of [
      'latest',
      ')(',
      '>=1.0.0,,',
      '^^1',
      '~~1',
      '*.*.*.*',
      '>=1.0.0 || <2',
      '\u0000',
      'x'.repeat(10_000),
      '~'.repeat(10_000),
      '1'.repeat(10_000),
      `${'0.'.repeat(4_999)}0`,
      '1-'.repeat(5_000),
      `${'>=0.0.0,'.repeat(700)}>=9.0.0`,
      `<0.0.1-${'a.'.repeat(4_990)}a`,
    ]) {
      const title =
        selector.length > 40 ? `${selector.slice(0, 20)}... (${selector.length} characters)` : JSON.stringify(selector);
      // No timing here: a selector over 256 characters is refused before it is parsed (lib/core/release.ts), so the
      // work is bounded by construction; the hardening benchmarks measure time.
      itUnchanged(`answers the selector ${title} with a JSON 422 invalid-release`, async function () {
        for (const path of [`${p.path}/${enc(selector)}/helm`, `${p.path}/${enc(selector)}/helm/pull`]) {
          const res = await guarded.request('GET', path);
          expectError(res, 422, 'invalid-release');
        }
      });
    }

    describe('push bodies', function () {
      // One status and one code per body: the answer depends only on the body, not on the storage or the host.
      const cases: [string, RequestInitLike, number, string][] = [
        [
          'a body that is not JSON',
          { body: '{"release": "2.0.0", "blob": ', headers: { 'content-type': 'application/json' } },
          400,
          'invalid-usage',
        ],
        ['a JSON array', { json: [{ release: '2.0.0', blob: BLOBS.HELM_1_0_0.b64 }] }, 400, 'invalid-usage'],
        ['JSON null', { body: 'null', headers: { 'content-type': 'application/json' } }, 400, 'invalid-usage'],
        ['a JSON string', { json: 'release=2.0.0' }, 400, 'invalid-usage'],
        ['a JSON number', { json: 42 }, 400, 'invalid-usage'],
        ['an empty body', { body: '', headers: { 'content-type': 'application/json' } }, 400, 'invalid-usage'],
        ['invalid base64', { json: { release: '2.0.0', blob: '!!! not base64 !!!' } }, 422, 'invalid-parameters'],
        ['base64 with a bad length', { json: { release: '2.0.0', blob: 'H4sIA' } }, 422, 'invalid-parameters'],
        [
          'valid base64 of something that is not gzip',
          { json: { release: '2.0.0', blob: Buffer.from('hello, world').toString('base64') } },
          422,
          'invalid-parameters',
        ],
        [
          'gzip that is not a tar archive',
          {
            json: {
              release: '2.0.0',
              blob: gzipSync(Buffer.from('just some text, not a tar archive')).toString('base64'),
            },
          },
          422,
          'invalid-parameters',
        ],
        [
          'gzip of 512 bytes that are no tar header',
          { json: { release: '2.0.0', blob: gzipSync(Buffer.alloc(512, 0x41)).toString('base64') } },
          422,
          'invalid-parameters',
        ],
        [
          'gzip of nothing',
          { json: { release: '2.0.0', blob: gzipSync(Buffer.alloc(0)).toString('base64') } },
          422,
          'invalid-parameters',
        ],
        [
          'a truncated gzip',
          { json: { release: '2.0.0', blob: BLOBS.HELM_1_0_0.bytes.subarray(0, 100).toString('base64') } },
          422,
          'invalid-parameters',
        ],
        [
          'a gzip cut inside its header',
          { json: { release: '2.0.0', blob: BLOBS.HELM_1_0_0.bytes.subarray(0, 8).toString('base64') } },
          422,
          'invalid-parameters',
        ],
        [
          'a gzip without its trailer',
          {
            json: {
              release: '2.0.0',
              blob: BLOBS.HELM_1_0_0.bytes.subarray(0, BLOBS.HELM_1_0_0.size - 8).toString('base64'),
            },
          },
          422,
          'invalid-parameters',
        ],
        [
          'a gzip with trailing garbage',
          {
            json: {
              release: '2.0.0',
              blob: Buffer.concat([BLOBS.HELM_1_1_0.bytes, Buffer.from('garbage')]).toString('base64'),
            },
          },
          422,
          'invalid-parameters',
        ],
        ['release as a number', { json: { release: 2, blob: BLOBS.HELM_1_0_0.b64 } }, 422, 'invalid-parameters'],
        [
          'release as an object',
          { json: { release: { major: 2 }, blob: BLOBS.HELM_1_0_0.b64 } },
          422,
          'invalid-parameters',
        ],
        [
          'blob as an object',
          { json: { release: '2.0.0', blob: { data: BLOBS.HELM_1_0_0.b64 } } },
          422,
          'invalid-parameters',
        ],
        ['blob as an array', { json: { release: '2.0.0', blob: [BLOBS.HELM_1_0_0.b64] } }, 422, 'invalid-parameters'],
        ['blob as a number', { json: { release: '2.0.0', blob: 12345 } }, 422, 'invalid-parameters'],
        [
          'media_type as an array',
          { json: { release: '2.0.0', blob: BLOBS.HELM_1_0_0.b64, media_type: ['helm'] } },
          422,
          'invalid-parameters',
        ],
        [
          'a form with an invalid blob',
          { body: 'release=2.0.0&blob=%%%', headers: { 'content-type': 'application/x-www-form-urlencoded' } },
          400,
          'invalid-usage',
        ],
        [
          'a form with a repeated release',
          {
            body: `release=2.0.0&release=3.0.0&blob=${enc(BLOBS.HELM_1_0_0.b64)}`,
            headers: { 'content-type': 'application/x-www-form-urlencoded' },
          },
          422,
          'invalid-parameters',
        ],
      ];

      for (const [label, options, status, code] of cases) {
        itUnchanged(`answers ${label} with a JSON ${status} ${code} and stores nothing`, async function () {
          // An error event nobody listens to would take a real host process down: none may escape.
          const { result: res, uncaught } = await catchUncaught(() => guarded.request('POST', p.path, options as any));
          expect(
            uncaught.map((e) => e.message),
            'uncaught exceptions in the server',
          ).to.deep.equal([]);
          expect(res.status, res.text.slice(0, 200)).to.equal(status);
          expectError(res, status, code);
        });
      }

      itUnchanged(
        'answers 413 payload-too-large quickly to Content-Length: 4294967296 with a tiny body, without waiting for 4 GB',
        async function () {
          const res = await rawExchange(
            guarded.url,
            `POST /cnr${p.path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 4294967296\r\n\r\n`,
            '{"release": "2.0.0"}',
            3000,
          );
          expect(res.status, `no response after ${res.elapsedMs} ms`).to.equal(413);
          expect(res.headers['content-type']).to.match(/^application\/json/);
          expect(JSON.parse(res.body).code).to.equal('payload-too-large');
        },
      );

      itUnchanged(
        'answers 413 payload-too-large quickly to a Content-Length just over the limit with a tiny body',
        async function () {
          const res = await rawExchange(
            guarded.url,
            `POST /cnr${p.path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: ${64 * 1024 * 1024}\r\n\r\n`,
            '{"release": "2.0.0"}',
            3000,
          );
          expect(res.status, `no response after ${res.elapsedMs} ms`).to.equal(413);
          expect(JSON.parse(res.body).code).to.equal('payload-too-large');
        },
      );
    });

    itUnchanged('answers hostile query strings on list and search with JSON, never a 500', async function () {
      // [query, list status, search status]: only list takes a namespace filter and validates it (a name of 10,000
      // characters is invalid usage); search reads q alone and ignores the other parameters.
      for (const [query, listStatus, searchStatus] of [
        [`?query=${'a'.repeat(10_000)}`, 200, 200],
        ['?query=%00', 200, 200],
        ['?query=%E0%A4%A', 200, 200],
        ['?namespace=a&namespace=b', 200, 200],
        ['?query=a&query=b', 200, 200],
        ['?media_type=a&media_type=b', 200, 200],
        [`?namespace=${'n'.repeat(10_000)}`, 400, 200],
      ] as const) {
        for (const [path, status] of [
          [`/api/v1/packages${query}`, listStatus],
          [`/api/v1/packages/search${query.replace('query', 'q')}`, searchStatus],
        ] as const) {
          const res = await guarded.request('GET', path);
          expect(res.status, `${path.slice(0, 80)}: ${res.text.slice(0, 200)}`).to.equal(status);
          if (status === 400) expectError(res, 400, 'invalid-usage');
          else expect(res.json, path.slice(0, 80)).to.be.an('array');
          expect(res.headers.get('content-type')).to.match(/^application\/json/);
        }
      }
    });
  });
}
