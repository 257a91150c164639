import type { S3Client } from '@aws-sdk/client-s3';

export interface S3RequestCounter {
  /** HTTP requests sent since the last reset (each SDK retry attempt counts). */
  readonly count: number;
  /** One entry per request: "CommandName METHOD", e.g. "PutObjectCommand PUT". */
  readonly requests: readonly string[];
  reset(): void;
  /** Take the middleware off the client. */
  remove(): void;
}

let serial = 0;

/**
 * Counts the HTTP requests an S3Client sends, with a middleware in the `finalizeRequest` step: below the retry
 * middleware, so every attempt is counted, and above the HTTP handler, so only requests really sent are.
 */
export function countS3Requests(client: S3Client): S3RequestCounter {
  const requests: string[] = [];
  const name = `apprTestRequestCounter${++serial}`;
  const middleware =
    (next: (args: { request?: { method?: string } }) => Promise<unknown>, context: { commandName?: string }) =>
    async (args: { request?: { method?: string } }): Promise<unknown> => {
      requests.push(`${context.commandName ?? '?'} ${args.request?.method ?? '?'}`);
      return next(args);
    };
  // `as never`: structural type above; the SDK's own middleware types live in @smithy/types.
  client.middlewareStack.add(middleware as never, { step: 'finalizeRequest', name });
  return {
    get count() {
      return requests.length;
    },
    get requests() {
      return [...requests];
    },
    reset() {
      requests.length = 0;
    },
    remove() {
      client.middlewareStack.remove(name);
    },
  };
}
