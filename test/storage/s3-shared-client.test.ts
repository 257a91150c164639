/**
 * One client from `s3ClientFromEnv` shared by storages of two buckets (and the host's own commands): every request
 * must go to the bucket its command names. With the SDK's `cacheMiddleware`, a command type's handler, and with it
 * one handler execution context, is shared by all its requests; the endpoint middleware writes the resolved
 * endpoint (path-style: it holds the bucket) into that context and the serializer reads it back later, so
 * concurrent PutObjects to two buckets were sent to one of them (seen: 50 of 100 to the wrong bucket).
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import { expect } from 'chai';
import { S3Storage, s3ClientFromEnv } from '../../lib/s3.js';

/** An HTTP server answering every request (once its body is read) with `reply`, and an s3ClientFromEnv client on it. */
async function fakeS3(reply: (req: IncomingMessage, res: ServerResponse) => void, env: Record<string, string> = {}) {
  const server = createServer((req, res) => {
    req.resume();
    req.on('end', () => reply(req, res));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  const client = s3ClientFromEnv({
    S3_ENDPOINT: `http://127.0.0.1:${port}`,
    AWS_ACCESS_KEY_ID: 'test',
    AWS_SECRET_ACCESS_KEY: 'test',
    ...env,
  });
  return { server, client };
}

describe('s3ClientFromEnv: one client shared by storages of several buckets', () => {
  it('sends every concurrent PutObject and HeadObject to the bucket its command names', async () => {
    const seen: string[] = [];
    const { server, client } = await fakeS3((req, res) => {
      seen.push(`${req.method} ${req.url}`);
      res.writeHead(200, { ETag: '"e"', 'Content-Length': '0' });
      res.end();
    });
    try {
      const a = new S3Storage({ client, bucket: 'bucket-a' });
      const b = new S3Storage({ client, bucket: 'bucket-b' });
      const jobs: Promise<unknown>[] = [];
      for (let i = 0; i < 20; i += 1) {
        jobs.push(a.put(`a-${i}`, Buffer.from('a')), b.put(`b-${i}`, Buffer.from('b')), a.head(`a-${i}`));
        // The host's own command on the same client, to a third bucket.
        jobs.push(client.send(new PutObjectCommand({ Bucket: 'host', Key: `h-${i}`, Body: 'h' })));
      }
      await Promise.all(jobs);
      expect(seen).to.have.length(80);
      const misrouted = seen.filter((line) => {
        const [, bucket, key] = /^[A-Z]+ \/([^/]+)\/([^?]+)/.exec(line) ?? [];
        return ({ a: 'bucket-a', b: 'bucket-b', h: 'host' } as Record<string, string>)[key?.[0] ?? ''] !== bucket;
      });
      expect(misrouted).to.deep.equal([]);
    } finally {
      client.destroy();
      await new Promise((resolve) => server.close(resolve));
    }
  });

  it("applies each storage's casRetry to its own conditional PUTs when two share a client and race", async () => {
    const seen: string[] = [];
    const { server, client } = await fakeS3(
      (req, res) => {
        seen.push(/^\/b\/([^?]+)/.exec(req.url ?? '')?.[1] ?? '?');
        const body = '<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError</Code></Error>';
        res.writeHead(500, { 'Content-Type': 'application/xml', 'Content-Length': String(body.length) });
        res.end(body);
      },
      { AWS_MAX_ATTEMPTS: '3' },
    );
    try {
      const none = new S3Storage({ client, bucket: 'b' });
      const sdk = new S3Storage({ client, bucket: 'b', casRetry: 'sdk' });
      const answers = await Promise.all([
        none.put('none', Buffer.from('x'), { ifMatch: 'e' }),
        sdk.put('sdk', Buffer.from('x'), { ifMatch: 'e' }),
        none.put('none', Buffer.from('x'), { ifNoneMatch: '*' }),
      ]);
      expect(answers).to.deep.equal([null, null, null]); // a 500 on a conditional PUT is a lost race either way
      expect(seen.filter((key) => key === 'none')).to.have.length(2); // not retried
      expect(seen.filter((key) => key === 'sdk')).to.have.length(3); // retried by the SDK
    } finally {
      client.destroy();
      await new Promise((resolve) => server.close(resolve));
    }
  });
});
