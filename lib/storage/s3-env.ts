/**
 * Building an S3 client and storage from environment variables (the standalone server, tests, quick starts). Kept
 * apart from the adapter so that a host passing its own `S3Client` to `S3Storage` reads only the adapter.
 */
import { S3Client, type S3ClientConfig } from '@aws-sdk/client-s3';
import { S3Storage } from './s3.js';

type Env = Record<string, string | undefined>;

function envInt(env: Env, name: string, fallback: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0) throw new TypeError(`${name} must be a non-negative integer, not ${raw}`);
  return n;
}

function envFlag(env: Env, name: string): boolean {
  const raw = (env[name] ?? '').toLowerCase();
  return raw === '1' || raw === 'true' || raw === 'yes';
}

/**
 * An S3Client configured from environment variables, with the settings S3-compatible servers need:
 * - endpoint: `AWS_ENDPOINT_URL_S3`, else `AWS_ENDPOINT_URL`, else `S3_ENDPOINT` (unset: AWS);
 * - region: `AWS_REGION`, default `us-east-1`;
 * - path-style addressing when an endpoint is set or `S3_FORCE_PATH_STYLE=true`;
 * - `requestChecksumCalculation` / `responseChecksumValidation` `'WHEN_REQUIRED'`: the SDK default sends streamed
 *   bodies `aws-chunked` with a trailing checksum, which Ceph RGW 16.2 rejects (411);
 * - no `cacheMiddleware`: with it, all requests of one command type share one handler execution context, into
 *   which the endpoint middleware writes the resolved endpoint (path-style, with the bucket) for the serializer to
 *   read later, so concurrent requests to two buckets on one client went to one of them (seen with 3.1175;
 *   test/storage/s3-shared-client.test.ts);
 * - credentials: `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` (/ `AWS_SESSION_TOKEN`) from `env` when set, else
 *   the SDK's default provider chain;
 * - `AWS_MAX_ATTEMPTS` (SDK default 3);
 * - timeouts, so that a hung backend becomes a 503 instead of a hung request: `S3_CONNECT_TIMEOUT_MS` (default
 *   5000) and `S3_SOCKET_TIMEOUT_MS` (default 30000: a socket idle that long fails the request; it also ends a
 *   handed-out download stream whose consumer stalls that long). No total-time limit by default, so large uploads
 *   are not cut: `S3_REQUEST_TIMEOUT_MS` sets one (until the response headers), as an error, not the SDK's
 *   default warning.
 */
export function s3ClientFromEnv(env: Env = process.env): S3Client {
  const endpoint = env.AWS_ENDPOINT_URL_S3 || env.AWS_ENDPOINT_URL || env.S3_ENDPOINT || undefined;
  const config: S3ClientConfig = {
    region: env.AWS_REGION || 'us-east-1',
    forcePathStyle: endpoint !== undefined || env.S3_FORCE_PATH_STYLE === 'true',
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    // The SDK's requestTimeout only logs a warning unless throwOnRequestTimeout is set (measured with 3.1175).
    requestHandler: {
      connectionTimeout: envInt(env, 'S3_CONNECT_TIMEOUT_MS', 5000),
      socketTimeout: envInt(env, 'S3_SOCKET_TIMEOUT_MS', 30000),
      requestTimeout: envInt(env, 'S3_REQUEST_TIMEOUT_MS', 0),
      throwOnRequestTimeout: true,
    },
  };
  if (endpoint !== undefined) config.endpoint = endpoint;
  if (env.AWS_MAX_ATTEMPTS) config.maxAttempts = envInt(env, 'AWS_MAX_ATTEMPTS', 3) || 1;
  if (env.AWS_ACCESS_KEY_ID && env.AWS_SECRET_ACCESS_KEY) {
    config.credentials = {
      accessKeyId: env.AWS_ACCESS_KEY_ID,
      secretAccessKey: env.AWS_SECRET_ACCESS_KEY,
      ...(env.AWS_SESSION_TOKEN ? { sessionToken: env.AWS_SESSION_TOKEN } : {}),
    };
  }
  return new S3Client(config);
}

/**
 * `s3://bucket/optional/prefix` to an S3Storage over `s3ClientFromEnv(env)` (which the storage owns: `close()`
 * destroys it). `S3_IFMATCH_UNQUOTED=1` selects the unquoted If-Match that Ceph RGW needs.
 */
export function s3StorageFromUrl(url: string, env: Env = process.env): S3Storage {
  const match = /^s3:\/\/([^/?#]+)(?:\/([^?#]*))?$/.exec(url);
  if (!match?.[1]) throw new TypeError(`not an s3://bucket/prefix URL: ${url}`);
  return new S3Storage({
    client: s3ClientFromEnv(env),
    bucket: match[1],
    prefix: match[2] ?? '',
    ifMatchUnquoted: envFlag(env, 'S3_IFMATCH_UNQUOTED'),
    ownsClient: true,
  });
}
