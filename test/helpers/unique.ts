import { randomBytes } from 'node:crypto';

/**
 * A name no other test (nor another run sharing the same S3 bucket) will use: `<prefix>-<12 hex>`. Valid as a
 * namespace, package or channel name, and as a storage key segment.
 */
export function uniqueName(prefix = 't'): string {
  return `${prefix}-${randomBytes(6).toString('hex')}`;
}
