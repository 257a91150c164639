/**
 * The standalone server from source: settings from flags and environment, what each setting does over HTTP,
 * Node's HTTP parser errors in the JSON error format (issue 12 item 8), and a clean stop on SIGTERM/SIGINT.
 * The packed tarball and its `bin` are tested in tarball.test.ts.
 */
import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ERRORS } from '../../lib/errors.js';
import { ACCEPTS, ConfigError, parseServerConfig, SETTINGS, type SettingKind } from '../../lib/server/config.js';
import { startServer, type RunningServer } from '../../lib/server/server.js';
import { makeTarGz } from '../helpers/blobs.js';
import { parseRawResponse } from '../helpers/http.js';
import { runCli, startInstance } from '../helpers/instances.js';
import { tempDir } from '../helpers/temp.js';
import { userFile } from '../helpers/users.js';
import { writeUserFile } from '../../lib/auth/user-store.js';

const quiet = (): void => undefined;

/**
 * Send raw bytes, read until the server closes the connection. `then` is sent once what was received so far
 * includes `after` (a second request on the same connection, after the first response).
 */
function rawRequest(url: string, payload: string, then?: { after: string; payload: string }): Promise<string> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), hostname);
    let received = '';
    let next = then;
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      received += chunk;
      if (next && received.includes(next.after)) {
        socket.write(next.payload);
        next = undefined;
      }
    });
    socket.on('error', reject);
    socket.on('close', () => resolve(received));
    socket.write(payload);
  });
}

/** A value each kind refuses, and one it accepts (with the typed result). */
const SAMPLES: Record<Exclude<SettingKind, 'string'>, { bad: string[]; good: [string, unknown] }> = {
  port: { bad: ['abc', '-1', '65536', '80.5', '1e3'], good: ['8080', 8080] },
  bytes: { bad: ['1GB', '0', '-5', '1.5', 'ten', '99999999999999999'], good: ['1048576', 1048576] },
  bytesOrZero: { bad: ['1GB', '-5', '1.5', 'ten', '99999999999999999'], good: ['0', 0] },
  count: { bad: ['0', '-1', '2.5', 'many'], good: ['500', 500] },
  // "true" would trust every entry, the client's own included: the number of proxies is asked for instead.
  hops: { bad: ['true', 'yes', '-1', '1.5', 'all', '99999999999999999'], good: ['2', 2] },
  // Beyond 2^31 - 1 a timer fires at once (TimeoutOverflowWarning) and Node's HTTP parser wraps its timeouts at 2^32.
  ms: { bad: ['-1', '1s', '0.5', 'soon', '2147483648', '4294967596', '99999999999999999'], good: ['0', 0] },
  boolean: { bad: ['maybe', 'tru', '2'], good: ['off', false] },
  visibility: { bad: ['secret', 'Public'], good: ['private', 'private'] },
  level: { bad: ['verbose', 'INFO'], good: ['warn', 'warn'] },
  url: {
    bad: ['example.com', 'ftp://example.com', 'https://example.com/?a=1', '/relative', 'https://u:p@example.com'],
    good: ['https://example.com/registry', 'https://example.com/registry'],
  },
};

describe('koa-appr serve: settings from flags and environment', () => {
  it('uses the defaults of the table when nothing is given', () => {
    const { config, help } = parseServerConfig([], {});
    expect(help).to.equal(false);
    expect(config).to.deep.equal({
      host: '127.0.0.1',
      port: 5000,
      prefix: '/cnr',
      storage: './data',
      trustProxy: 0,
      metrics: true,
      logLevel: 'info',
      shutdownTimeoutMs: 10000,
      requestTimeoutMs: 300000,
      headersTimeoutMs: 60000,
    });
  });

  it('prefers a flag (either spelling) over the environment, and the environment over the default', () => {
    const env = { PORT: '6000', APPR_PREFIX: '/env', APPR_CORS: 'false', APPR_CACHE_BYTES: '7' };
    const { config } = parseServerConfig(['--port', '7000', '--prefix=/flag', '--max-push-size', '1024'], env);
    expect(config).to.include({ port: 7000, prefix: '/flag', cors: false, cacheBytes: 7, maxPushSize: 1024 });
  });

  it('treats an empty variable as unset, except APPR_PREFIX where empty means "no prefix"', () => {
    const { config } = parseServerConfig([], { PORT: '', APPR_PREFIX: '', APPR_MAX_PUSH_SIZE: '' });
    expect(config.port).to.equal(5000);
    expect(config.prefix).to.equal('');
    expect(config).not.to.have.property('maxPushSize');
  });

  for (const setting of SETTINGS.filter((s) => s.kind !== 'string')) {
    const samples = SAMPLES[setting.kind as Exclude<SettingKind, 'string'>];
    it(`${setting.env} / --${setting.flag}: accepts ${samples.good[0]} and refuses ${samples.bad.join(', ')} naming itself`, () => {
      expect(parseServerConfig([], { [setting.env]: samples.good[0] }).config[setting.name]).to.deep.equal(
        samples.good[1],
      );
      for (const bad of samples.bad) {
        for (const [argv, env] of [
          [[], { [setting.env]: bad }],
          [[`--${setting.flag}=${bad}`], {}],
        ] as const) {
          const attempt = (): unknown => parseServerConfig(argv, env);
          expect(attempt).to.throw(ConfigError, setting.env);
          expect(attempt).to.throw(ConfigError, ACCEPTS[setting.kind]);
          expect(attempt).to.throw(ConfigError, JSON.stringify(bad));
        }
      }
    });
  }

  it('refuses an empty flag (which would be an empty path or name), except --prefix= which mounts at the root', () => {
    for (const flag of ['storage', 'users', 'host', 'audit-log']) {
      expect(() => parseServerConfig([`--${flag}=`], {}), flag).to.throw(ConfigError, `--${flag}=""`);
    }
    expect(() => parseServerConfig(['--storage='], {})).to.throw(
      ConfigError,
      'APPR_STORAGE (--storage) must not be empty',
    );
    expect(parseServerConfig(['--prefix='], {}).config.prefix).to.equal('');
  });

  it('refuses an unknown flag, a positional argument and a flag without a value', () => {
    expect(() => parseServerConfig(['--max-push-szie', '10'], {})).to.throw(ConfigError, "'--max-push-szie'");
    expect(() => parseServerConfig(['extra'], {})).to.throw(ConfigError, 'extra');
    expect(() => parseServerConfig(['--port'], {})).to.throw(ConfigError, '--port');
  });

  it('has one flag and one variable per setting, all distinct, and help for each', () => {
    expect(new Set(SETTINGS.map((s) => s.env)).size).to.equal(SETTINGS.length);
    expect(new Set(SETTINGS.map((s) => s.flag)).size).to.equal(SETTINGS.length);
    for (const s of SETTINGS) expect(s.help, s.name).to.have.length.greaterThan(10);
  });

  it('is documented: the README table has a row per setting with its variable and flag', async () => {
    const readme = await readFile(fileURLToPath(new URL('../../README.md', import.meta.url)), 'utf8');
    const section = readme.slice(readme.indexOf('## The standalone server'), readme.indexOf('## Storage'));
    for (const s of SETTINGS) expect(section, s.env).to.include(`| \`${s.env}\` | \`--${s.flag}\` |`);
  });

  it('prints every flag and variable with --help and exits 0; exits 2 naming a bad variable before listening', async () => {
    const help = await runCli(['serve', '--help']);
    expect(help.code).to.equal(0);
    for (const s of SETTINGS) expect(help.out).to.include(`--${s.flag}`).and.include(s.env);
    const bad = await runCli(['serve'], { APPR_MAX_UNPACKED_SIZE: '1GB' });
    expect(bad.code).to.equal(2);
    expect(bad.out).to.include('APPR_MAX_UNPACKED_SIZE').and.include('"1GB"').and.not.include('listening');
    const badPrefix = await runCli(['serve', '--prefix', 'no-slash'], { APPR_STORAGE: tmpdir() });
    expect(badPrefix.code).to.equal(2);
    expect(badPrefix.out).to.include('prefix').and.not.include('listening');
    const unknown = await runCli(['frobnicate']);
    expect(unknown.code).to.equal(2);
    expect(unknown.out).to.include('Usage: koa-appr');
  });
});

describe('koa-appr serve: what the settings do', function () {
  this.timeout(30_000);
  let dir: string;
  const running: RunningServer[] = [];
  const start = async (argv: string[]): Promise<RunningServer> => {
    const { config } = parseServerConfig(['--port', '0', '--storage', dir, ...argv], {});
    const server = await startServer(config, quiet);
    running.push(server);
    return server;
  };
  tempDir('appr-serve-', 'all', (path) => {
    dir = path;
    return async () => {
      await Promise.all(running.map((s) => s.close()));
    };
  });

  it('passes the size limit and the error envelope to the router', async () => {
    const server = await start(['--max-push-size', '64', '--error-envelope', 'true', '--prefix', '/reg']);
    expect(server.url).to.match(/^http:\/\/127\.0\.0\.1:\d+\/reg$/);
    const blob = await makeTarGz({ 'app/Chart.yaml': 'name: app\n'.repeat(50) });
    const res = await fetch(`${server.url}/api/v1/packages/ns/app`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ blob: blob.toString('base64'), release: '1.0.0', media_type: 'helm' }),
    });
    expect(res.status).to.equal(413);
    expect((await res.json()).error.code).to.equal('payload-too-large');
  });

  it('turns CORS and discovery off when told, and serves a push and a pull', async () => {
    const server = await start(['--cors', 'false', '--discovery', 'no']);
    const root = new URL(server.url).origin;
    expect((await fetch(`${root}/.well-known/app-registry-uri.json`)).status).to.equal(404);
    const blob = await makeTarGz({ 'app/Chart.yaml': 'name: app\n' });
    const push = await fetch(`${server.url}/api/v1/packages/ns/app`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', origin: 'https://elsewhere.example' },
      body: JSON.stringify({ blob: blob.toString('base64'), release: '1.0.0', media_type: 'helm' }),
    });
    expect(push.status).to.equal(200);
    expect(push.headers.get('access-control-allow-origin')).to.equal(null);
    const pull = await fetch(`${server.url}/api/v1/packages/ns/app/1.0.0/helm/pull`);
    expect(Buffer.from(await pull.arrayBuffer()).equals(blob)).to.equal(true);
  });

  it('passes the default visibility and the unpacked-size limit to the registry', async () => {
    const server = await start(['--default-visibility', 'private', '--max-unpacked-size', '4096', '--prefix', '/vis']);
    const push = (name: string, blob: Buffer): Promise<Response> =>
      fetch(`${server.url}/api/v1/packages/vis/${name}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ blob: blob.toString('base64'), release: '1.0.0', media_type: 'helm' }),
      });
    expect((await push('small', await makeTarGz({ 'small/Chart.yaml': 'name: small\n' }))).status).to.equal(200);
    const list = await fetch(`${server.url}/api/v1/packages?namespace=vis`);
    expect(((await list.json()) as any[]).map((p) => [p.name, p.visibility])).to.deep.equal([['vis/small', 'private']]);
    const bomb = await push('bomb', await makeTarGz({ 'bomb/big.txt': 'x'.repeat(64 * 1024) }));
    expect(bomb.status).to.be.within(400, 499);
    expect(JSON.stringify(await bomb.json())).to.include('"max_unpacked_size":4096');
  });

  it('turns the Helm routes off when told (with a storage deadline given, which the schema accepts)', async () => {
    const server = await start(['--helm', 'false', '--storage-timeout-ms', '2000', '--prefix', '/nohelm']);
    const res = await fetch(`${server.url}/helm/ns/index.yaml`);
    expect(res.status).to.equal(404);
    expect((await res.json()).code).to.equal('not-found');
    const on = await start(['--prefix', '/withhelm']);
    expect((await fetch(`${on.url}/helm/ns/index.yaml`)).status).not.to.equal(404);
  });

  it('gives discovery the public URL instead of the Host header', async () => {
    const server = await start(['--public-url', 'https://registry.example.com/appr', '--prefix', '/pub']);
    const res = await fetch(`${new URL(server.url).origin}/.well-known/app-registry-uri.json`);
    expect((await res.json()).uri_prefix).to.equal('https://registry.example.com/appr');
  });

  /** The error `startServer` rejects with for these flags, or undefined when it started. */
  const startError = async (argv: string[], env: Record<string, string> = {}): Promise<Error | undefined> => {
    const { config } = parseServerConfig(['--port', '0', '--storage', dir, ...argv], env);
    try {
      running.push(await startServer(config, quiet));
      return undefined;
    } catch (err) {
      return err as Error;
    }
  };

  it('names the variable and the flag when the router refuses a setting the table let through', async () => {
    const error = await startError([], { APPR_PREFIX: 'cnr' });
    expect(error).to.be.instanceOf(ConfigError);
    expect(error!.message).to.match(/^APPR_PREFIX \(--prefix\): option "prefix" must be a path like "\/cnr"/);
  });

  it('names APPR_SECRET, and never prints it, when the secret is too short; says "koa-appr" once', async () => {
    const users = join(dir, 'users-secret.json');
    await writeUserFile(users, await userFile({ alice: ['alice-pw'] }));
    const error = await startError(['--users', users], { APPR_SECRET: 'short-secret' });
    expect(error).to.be.instanceOf(ConfigError);
    expect(error!.message).to.include('APPR_SECRET (--secret)').and.include('16');
    expect(error!.message).not.to.include('short-secret').and.not.to.include('koa-appr:');
    const broken = join(dir, 'users-broken.json');
    await writeFile(broken, '{not json');
    const parse = await startError(['--users', broken]);
    expect(parse!.message).to.match(/^APPR_USERS=.*users-broken\.json: .*not valid JSON/);
    expect(parse!.message).not.to.include('koa-appr:');
  });

  it('refuses an audit log it cannot open for appending, before listening (changes would go unaudited)', async () => {
    for (const path of [join(dir, 'no-such-dir', 'audit.jsonl'), dir]) {
      const error = await startError(['--audit-log', path]);
      expect(error, path).to.be.instanceOf(ConfigError);
      expect(error!.message).to.include(`APPR_AUDIT_LOG=${path}`);
    }
    expect(await startError(['--audit-log', join(dir, 'audit.jsonl')])).to.equal(undefined);
  });

  it('refuses, as a bad setting, a listen address that does not resolve', async () => {
    const error = await startError(['--host', 'no-such-host.invalid']);
    expect(error).to.be.instanceOf(ConfigError);
    expect(error!.message).to.include('cannot listen on no-such-host.invalid').and.include('HOST');
  });

  it('fails at start-up naming APPR_USERS when the user file cannot be read', async () => {
    const error = await startError(['--users', join(dir, 'missing.json')]);
    expect(error).to.be.instanceOf(ConfigError);
    expect(error!.message).to.include('APPR_USERS');
  });
});

describe('koa-appr serve: Node HTTP parser errors in the JSON error format', function () {
  this.timeout(30_000);
  let server: RunningServer;
  let enveloped: RunningServer;
  tempDir('appr-client-error-', 'all', async (dir) => {
    server = await startServer(parseServerConfig(['--port', '0', '--storage', dir], {}).config, quiet);
    enveloped = await startServer(
      parseServerConfig(['--port', '0', '--storage', dir, '--error-envelope', 'true'], {}).config,
      quiet,
    );
    return async () => {
      await server.close();
      await enveloped.close();
    };
  });

  const push = 'POST /cnr/api/v1/packages/ns/app HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n';
  const cases: { title: string; payload: string; code: keyof typeof ERRORS }[] = [
    {
      title: 'Content-Length with Transfer-Encoding: chunked',
      payload: `${push}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`,
      code: 'invalid-usage',
    },
    {
      title: 'two different Content-Lengths',
      payload: `${push}Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!`,
      code: 'invalid-usage',
    },
    {
      title: 'a chunk size that is not hex',
      payload: `${push}Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n`,
      code: 'invalid-usage',
    },
    {
      title: 'a bad chunk size after the body started',
      payload: `${push}Transfer-Encoding: chunked\r\n\r\n2\r\n{"\r\nq!\r\n\r\n`,
      code: 'invalid-usage',
    },
    {
      title: "headers over Node's 16 KiB limit",
      payload: `GET /cnr/version HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`,
      code: 'header-too-large',
    },
    {
      title: 'an Expect other than 100-continue',
      payload: 'GET /cnr/version HTTP/1.1\r\nHost: x\r\nExpect: teapot\r\n\r\n',
      code: 'expectation-failed',
    },
    { title: 'a request line that is not HTTP', payload: 'HELLO THERE\r\n\r\n', code: 'invalid-usage' },
  ];
  for (const { title, payload, code } of cases) {
    it(`answers ${title} with ${ERRORS[code].status} ${code} JSON and closes the connection`, async () => {
      const res = parseRawResponse(await rawRequest(server.url, payload));
      expect(res.status).to.equal(ERRORS[code].status);
      expect(res.headers['content-type']).to.equal('application/json');
      expect(res.headers.connection).to.equal('close');
      expect(res.body).to.have.keys('code', 'message', 'details');
      expect(res.body.code).to.equal(code);
      expect(res.body.message).not.to.include('aaaa');
    });
  }

  it('wraps the error in {"error": ...} when the error envelope is on', async () => {
    const res = parseRawResponse(await rawRequest(enveloped.url, cases[1]!.payload));
    expect(res.status).to.equal(400);
    expect(res.body.error.code).to.equal('invalid-usage');
  });

  it("answers a bad second request on a kept-alive connection after the first one's complete response", async () => {
    const raw = await rawRequest(server.url, 'GET /cnr/version HTTP/1.1\r\nHost: x\r\n\r\n', {
      after: '"appr-api"',
      payload: 'GET /cnr/version HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab',
    });
    const second = raw.indexOf('HTTP/1.1 400');
    expect(raw.startsWith('HTTP/1.1 200')).to.equal(true);
    expect(second).to.be.greaterThan(0);
    expect(parseRawResponse(raw.slice(second)).body.code).to.equal('invalid-usage');
  });

  // Bytes the parser refuses after a request read whole are not that request's: a push stored meanwhile was
  // answered with Node's 400, and its client told it had failed.
  for (const [label, stray] of [
    ['a request line that is not HTTP', 'xx\r\n\r\n'],
    ['two stray bytes (and Connection: close)', 'xx'],
  ] as const) {
    it(`answers a push followed by ${label} with the push's own answer, then closes`, async () => {
      const blob = await makeTarGz({ 'stray/Chart.yaml': 'name: stray\n' });
      const release = label.startsWith('two') ? '1.0.1' : '1.0.0';
      const body = JSON.stringify({ blob: blob.toString('base64'), release, media_type: 'helm' });
      const head = `${push}Content-Length: ${Buffer.byteLength(body)}\r\n`;
      const raw = await rawRequest(
        server.url,
        `${head}${label.startsWith('two') ? 'Connection: close\r\n' : ''}\r\n${body}${stray}`,
      );
      expect(raw.match(/HTTP\/1\.1 /g), raw.slice(0, 300)).to.have.length(1);
      const res = parseRawResponse(raw);
      expect(res.status, raw.slice(0, 300)).to.equal(200);
      expect(res.headers.connection).to.equal('close');
      expect(res.body).to.deep.equal({ status: 'ok' });
      const shown = await fetch(`${server.url}/api/v1/packages/ns/app/${release}/helm`);
      expect(shown.status).to.equal(200);
    });
  }

  /** A push request of chart `name` (with `size` random bytes in it), as raw HTTP. */
  const rawPush = async (name: string, size = 0): Promise<string> => {
    const files = {
      [`${name}/Chart.yaml`]: `name: ${name}\n`,
      ...(size ? { [`${name}/n.bin`]: randomBytes(size) } : {}),
    };
    const body = JSON.stringify({
      blob: (await makeTarGz(files)).toString('base64'),
      release: '1.0.0',
      media_type: 'helm',
    });
    return `${push}Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`.replace('/ns/app ', `/ns/${name} `);
  };

  it('answers each of two pipelined pushes followed by stray bytes, then closes', async () => {
    const raw = await rawRequest(server.url, (await rawPush('pipe-a')) + (await rawPush('pipe-b')) + 'xx\r\n\r\n');
    expect(raw.match(/HTTP\/1\.1 \d+/g), raw.slice(0, 300)).to.deep.equal(['HTTP/1.1 200', 'HTTP/1.1 200']);
    for (const name of ['pipe-a', 'pipe-b']) {
      expect((await fetch(`${server.url}/api/v1/packages/ns/${name}/1.0.0/helm`)).status, name).to.equal(200);
    }
  });

  it('marks the connection once however many stray pieces arrive while the push is stored', async () => {
    const warnings: string[] = [];
    const onWarning = (warning: Error) => warnings.push(warning.name);
    process.on('warning', onWarning);
    try {
      const { hostname, port } = new URL(server.url);
      const raw = await new Promise<string>((resolve) => {
        const socket = connect(Number(port), hostname);
        let received = '';
        socket.setEncoding('utf8');
        socket.on('data', (chunk: string) => (received += chunk));
        socket.on('error', () => undefined);
        socket.on('close', () => resolve(received));
        void rawPush('trickle', 3_000_000).then((payload) =>
          socket.write(`${payload}xx\r\n\r\n`, () => {
            // Node reports each piece after a parser error again: one a millisecond while the push is stored.
            const timer = setInterval(() => (socket.destroyed ? clearInterval(timer) : socket.write('y')), 1);
          }),
        );
      });
      expect(raw).to.match(/^HTTP\/1\.1 200/);
    } finally {
      process.off('warning', onWarning);
    }
    expect(warnings).not.to.include('MaxListenersExceededWarning');
  });

  it('sends a whole pull followed by stray bytes in two pieces, to a client reading slowly, then closes', async () => {
    const blob = await makeTarGz({ 'slow/noise.bin': randomBytes(4 * 1024 * 1024) });
    const pushed = await fetch(`${server.url}/api/v1/packages/ns/slow`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ release: '1.0.0', media_type: 'helm', blob: blob.toString('base64') }),
    });
    expect(pushed.status).to.equal(200);
    const { hostname, port } = new URL(server.url);
    const socket = connect(Number(port), hostname);
    socket.on('error', () => undefined);
    const chunks: Buffer[] = [];
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    const closed = once(socket, 'close');
    socket.pause(); // the answer waits in the socket's buffers while the stray pieces arrive
    socket.write('GET /cnr/api/v1/packages/ns/slow/1.0.0/helm/pull HTTP/1.1\r\nHost: x\r\n\r\nxx');
    await new Promise((resolve) => setTimeout(resolve, 300));
    socket.write('yy'); // a second piece: Node reports the parser error again
    await new Promise((resolve) => setTimeout(resolve, 300));
    socket.resume();
    await closed;
    const raw = Buffer.concat(chunks);
    const headEnd = raw.indexOf('\r\n\r\n');
    const head = raw.subarray(0, headEnd).toString();
    expect(head).to.match(/^HTTP\/1\.1 200 /);
    expect(raw.length - headEnd - 4).to.equal(blob.length);
    expect(raw.subarray(headEnd + 4).equals(blob)).to.equal(true);
  });

  it('answers a push whose Content-Length is shorter than its body with its own error (the JSON is cut short)', async () => {
    const body = '{"release": "1.0.0", "media_type": "helm", "blob": "QUJD"}';
    const raw = await rawRequest(server.url, `${push}Content-Length: 10\r\n\r\n${body}`);
    expect(raw.match(/HTTP\/1\.1 /g), raw.slice(0, 300)).to.have.length(1);
    const res = parseRawResponse(raw);
    expect(res.status, raw.slice(0, 300)).to.equal(400);
    expect(res.body.message).to.match(/JSON/);
    expect(res.body.details).not.to.have.property('parserError');
  });

  it('still serves well-formed requests', async () => {
    const res = await fetch(`${server.url}/version`);
    expect(res.status).to.equal(200);
  });
});

describe('koa-appr serve: stopping', function () {
  this.timeout(60_000);
  let dir: string;
  tempDir('appr-standalone-', 'all', (path) => {
    dir = path;
  });

  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    it(`logs the URL it serves, serves there, and on ${signal} frees the port and exits 0`, async () => {
      const instance = await startInstance({ APPR_STORAGE: dir, APPR_PREFIX: '/registry' });
      expect(instance.url).to.match(/^http:\/\/127\.0\.0\.1:\d+\/registry$/);
      const version = await fetch(`${instance.url}/version`);
      expect(((await version.json()) as Record<string, string>)['appr-api']).to.equal('0.7.4');
      expect(instance.output()).to.include('OPEN');
      // A kept-alive idle connection must not hold the shutdown up.
      const idle = connect(Number(new URL(instance.url).port), '127.0.0.1');
      await once(idle, 'connect');
      const exited = once(instance.process, 'exit');
      instance.process.kill(signal);
      const [code] = await exited;
      expect(code).to.equal(0);
      expect(instance.output()).to.include(`${signal}, stopping`);
      const refused = await fetch(`${instance.url}/version`).then(
        () => false,
        () => true,
      );
      expect(refused).to.equal(true);
      idle.destroy();
    });
  }

  it('removes the spool file of a push cut off at the shutdown timeout before it exits', async () => {
    const spool = join(dir, 'spool');
    await mkdir(spool);
    const instance = await startInstance({
      APPR_STORAGE: join(dir, 'cut-off'),
      APPR_SHUTDOWN_TIMEOUT_MS: '300',
      TMPDIR: spool,
    });
    const blob = await makeTarGz({ 'cutoff/noise.bin': randomBytes(3 * 1024 * 1024) });
    const body = JSON.stringify({ release: '1.0.0', media_type: 'helm', blob: blob.toString('base64') });
    const socket = connect(Number(new URL(instance.url).port), '127.0.0.1');
    socket.on('error', () => undefined);
    await once(socket, 'connect');
    socket.write(
      `POST /cnr/api/v1/packages/ns/cutoff HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n` +
        `Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body.slice(0, body.length / 2)}`,
    );
    // Past the 1 MiB kept in memory: the push has its spool file.
    const spooled = async () => (await readdir(spool)).filter((name) => name.startsWith('koa-appr-push-'));
    for (let i = 0; i < 500 && (await spooled()).length === 0; i++) await new Promise((r) => setTimeout(r, 20));
    expect(await spooled()).to.have.length(1);
    const exited = once(instance.process, 'exit');
    instance.process.kill('SIGTERM');
    const [code] = await exited;
    expect(code).to.equal(0);
    expect(await spooled()).to.deep.equal([]);
    socket.destroy();
  });

  it('stops once however often close() is called: every caller waits for the same stop', async () => {
    const running = await startServer(
      parseServerConfig(['--port', '0', '--storage', join(dir, 'twice')], {}).config,
      () => undefined,
    );
    const first = running.close();
    const second = running.close();
    expect(second).to.equal(first);
    await first;
    expect(running.close()).to.equal(first);
  });

  it('lets a push that is in flight when SIGTERM arrives finish, then exits 0', async () => {
    const instance = await startInstance({ APPR_STORAGE: dir });
    const blob = await makeTarGz({ 'inflight/Chart.yaml': 'name: inflight\n' });
    const body = JSON.stringify({ blob: blob.toString('base64'), release: '1.0.0', media_type: 'helm' });
    const socket = connect(Number(new URL(instance.url).port), '127.0.0.1');
    await once(socket, 'connect');
    let received = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      received += chunk;
    });
    const closed = once(socket, 'close');
    socket.write(
      `POST /cnr/api/v1/packages/ns/inflight HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n` +
        `Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body.slice(0, 10)}`,
    );
    await new Promise((resolve) => setTimeout(resolve, 300)); // the request has reached the handler
    const exited = once(instance.process, 'exit');
    instance.process.kill('SIGTERM');
    await new Promise((resolve) => setTimeout(resolve, 300)); // the signal has been handled
    socket.write(body.slice(10));
    await closed;
    expect(received).to.match(/^HTTP\/1\.1 200 /);
    expect(received.toLowerCase()).to.include('connection: close');
    const [code] = await exited;
    expect(code).to.equal(0);
  });
});
