#!/usr/bin/env bash
# The whole test suite (the README's test command, `npm test`): starts a throw-away Ceph RGW (a real S3 server,
# installed from Debian packages on first use, which needs root), runs every mocha suite against it and the
# embedded stores, then stops it. `APPR_SKIP_S3=1 npm test` (or `npm run test:local`) runs everything that needs
# no S3 server; the S3 suites then report themselves as pending.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ -z "${APPR_SKIP_S3:-}" ]; then
  export S3_DIR=${S3_DIR:-/tmp/appr-s3}
  bash .ci/s3/start.sh >/dev/null || { echo "could not start Ceph RGW (see above); APPR_SKIP_S3=1 skips the S3 suites" >&2; exit 1; }
  # shellcheck disable=SC1091
  source "$S3_DIR/env"
  export APPR_REQUIRE_S3=1
  trap 'bash .ci/s3/stop.sh >/dev/null 2>&1' EXIT
fi

npx mocha "test/**/*.test.ts" "$@"
