import { ApprError, echoed } from '../errors.js';

/**
 * Name rules (docs/api.md section 10). Every name that reaches a storage key passes through here first, so a name
 * that could escape its key (`..`, `/`, `%2F` decoded by the router, NUL, over-long) never reaches storage.
 */
const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
const MEDIA_TYPE = /^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$/;
const MANIFEST_MEDIA_TYPE = /^application\/vnd\.(?:appr|cnr)\.package-manifest\.(.+)\.v\d+\.json$/;

export type NameKind = 'namespace' | 'package' | 'channel';

export function checkName(kind: NameKind, value: string): string {
  if (!NAME.test(value)) {
    throw new ApprError('invalid-usage', `Invalid ${kind} name`, { [kind]: echoed(value) });
  }
  return value;
}

/** `application/vnd.appr.package-manifest.helm.v0.json` (or the `vnd.cnr` spelling) becomes `helm`. */
export function normalizeMediaType(value: string): string {
  const short = MANIFEST_MEDIA_TYPE.exec(value)?.[1] ?? value;
  if (!MEDIA_TYPE.test(short)) {
    throw new ApprError('invalid-usage', 'Invalid media type', { media_type: echoed(value) });
  }
  return short;
}

export function manifestMediaType(mediaType: string): string {
  return `application/vnd.appr.package-manifest.${mediaType}.v0.json`;
}

export function contentMediaType(mediaType: string): string {
  return `application/vnd.appr.package.${mediaType}.v0.tar+gzip`;
}
