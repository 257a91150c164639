import { uniqueName } from './unique.js';

/**
 * Where the S3 suites find their server: `.ci/s3/start.sh` writes an env file with these variables (`npm test`
 * sources it). Without an endpoint the S3 suites are skipped, unless APPR_REQUIRE_S3=1 (CI), which makes that a
 * failure.
 */
export const S3_ENDPOINT = process.env.AWS_ENDPOINT_URL_S3 || process.env.S3_ENDPOINT || '';
export const S3_REQUIRED = process.env.APPR_REQUIRE_S3 === '1';
export const S3_BUCKET = process.env.APPR_TEST_S3_BUCKET || 'appr-test';

/** A key prefix no other run or test uses, so suites can share one bucket. */
export function uniqueS3Prefix(label: string): string {
  return `appr-test-runs/${uniqueName(label)}`;
}

/** `describe` for suites that need a live S3 server. */
export function describeWithS3(title: string, body: (this: Mocha.Suite) => void): void {
  if (S3_ENDPOINT) {
    describe(title, body);
    return;
  }
  describe(title, () => {
    if (S3_REQUIRED) {
      it('has an S3 server to run against', () => {
        throw new Error('APPR_REQUIRE_S3=1 but no S3 endpoint (AWS_ENDPOINT_URL_S3) is configured');
      });
    } else {
      it.skip('needs an S3 server: `bash .ci/s3/start.sh && source /tmp/appr-s3/env` (or npm test)');
    }
  });
}
