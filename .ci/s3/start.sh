#!/usr/bin/env bash
# .ci/s3/start.sh - start a throw-away, real S3 server (Ceph RADOS Gateway from the Debian packages) on 127.0.0.1
# for the S3 adapter's tests: one ceph-mon, one ceph-osd, one radosgw; no auth inside the cluster, SigV4 at the
# gateway. Installs the packages if missing (apt-get only), bootstraps a fresh cluster under $S3_DIR, creates the
# test bucket(s), waits until a signed PUT/GET round-trip works, then writes a PID file ($S3_DIR/s3.pid) and an env
# file ($S3_DIR/env) for the tests.
#
# Adapted from the team's tested Ceph RGW recipe (its notes explain how
# each setting was found); the project carries its own copy because CI only has the project checkout. Differences:
# memstore (RAM) by default (3-4 s start instead of 7-9 s for bluestore), data under /tmp/appr-s3, the test bucket
# created by default, and APPR_TEST_S3_BUCKET in the env file.
#
# usage:  bash .ci/s3/start.sh && source /tmp/appr-s3/env && npx mocha test/storage/s3.test.ts
#         bash .ci/s3/stop.sh
# env knobs (all optional):
#   S3_DIR=/tmp/appr-s3  S3_PORT=7480  S3_MON_PORT=6789
#   S3_ACCESS_KEY=ci-access-key  S3_SECRET_KEY=ci-secret-key  S3_REGION=us-east-1
#   S3_STORE=memstore|bluestore   memstore: RAM only, fastest (default); bluestore: sparse file on disk (needs
#                                 O_DIRECT, so never on tmpfs: memstore is used there automatically)
#   S3_MEMSTORE_GB=4              memstore capacity (RAM is only used for what is stored)
#   S3_BLOCK_SIZE_GB=20           bluestore sparse file size
#   S3_BUCKETS="appr-test"        buckets to create (the first one is exported as APPR_TEST_S3_BUCKET)
#   S3_START_TIMEOUT=120
#   S3_APT_LOCK_TIMEOUT=600       seconds to wait for another apt's lock before the install fails
#
# Several clusters can run side by side with their own S3_DIR, S3_PORT and S3_MON_PORT (any free ports).
#
# What the client must do against radosgw 16.2 (verified with @aws-sdk/client-s3; lib/storage/s3.ts does it):
#   - forcePathStyle: true, region us-east-1;
#   - requestChecksumCalculation/responseChecksumValidation 'WHEN_REQUIRED': with the SDK default a stream body
#     goes out aws-chunked with a trailing checksum, which radosgw rejects (411 MissingContentLength);
#   - PutObject If-Match with the ETag UNQUOTED (S3_IFMATCH_UNQUOTED=1): radosgw compares the raw header;
#   - keep versioning off on the bucket: If-None-Match: * is ignored on versioned buckets.
set -euo pipefail

PORT=${S3_PORT:-7480}
MON_PORT=${S3_MON_PORT:-6789}
DIR=${S3_DIR:-/tmp/appr-s3}
AK=${S3_ACCESS_KEY:-ci-access-key}
SK=${S3_SECRET_KEY:-ci-secret-key}
REGION=${S3_REGION:-us-east-1}
STORE=${S3_STORE:-memstore}
MEM_GB=${S3_MEMSTORE_GB:-4}
BLOCK_GB=${S3_BLOCK_SIZE_GB:-20}
BUCKETS=${S3_BUCKETS:-appr-test}
TIMEOUT=${S3_START_TIMEOUT:-120}
ENDPOINT="http://127.0.0.1:${PORT}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

log() { echo "[start-s3] $*" >&2; }
t0=$(date +%s%N)
ms() { echo $(( ($(date +%s%N) - t0) / 1000000 )); }
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# ---- already running? ----
if [ -f "$DIR/s3.pid" ]; then
  alive=1
  while read -r pid; do [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || alive=0; done < "$DIR/s3.pid"
  if [ "$alive" = 1 ] && [ -f "$DIR/env" ] && curl -s -o /dev/null -m 2 "$ENDPOINT/"; then
    log "already running ($ENDPOINT)"; cat "$DIR/env"; exit 0
  fi
  log "stale PID file, stopping leftovers"
  S3_DIR="$DIR" bash "$HERE/stop.sh" >/dev/null 2>&1 || true
fi

# ---- install (Debian packages only) ----
if ! command -v radosgw >/dev/null || ! command -v ceph-mon >/dev/null || ! command -v ceph-osd >/dev/null \
   || ! command -v curl >/dev/null; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  log "installing radosgw ceph-mon ceph-osd curl from apt (~61 MB download, ~267 MB on disk)"
  export DEBIAN_FRONTEND=noninteractive
  # Another apt (unattended upgrades, a parallel CI step) may hold the locks: wait for it instead of failing at
  # once. DPkg::Lock::Timeout covers the dpkg lock of `install`; `update` takes the lists lock, so retry it.
  APT=(-o DPkg::Lock::Timeout="${S3_APT_LOCK_TIMEOUT:-600}")
  for attempt in $(seq 1 60); do
    $SUDO apt-get "${APT[@]}" update -qq >&2 && break
    log "apt-get update failed (attempt $attempt; another apt holding the lock?), retrying in 5 s"; sleep 5
  done
  $SUDO apt-get "${APT[@]}" install -y -qq --no-install-recommends radosgw ceph-mon ceph-osd curl >&2
  log "installed after $(ms)ms"
fi

if port_busy "$PORT"; then log "port $PORT is already in use by something else (set S3_PORT)"; exit 1; fi
if port_busy "$MON_PORT"; then log "port $MON_PORT is already in use by something else (set S3_MON_PORT)"; exit 1; fi

# ---- fresh cluster directory ----
rm -rf "$DIR"; mkdir -p "$DIR"/{mon,osd,log,run,rgw}
if [ "$STORE" = bluestore ] && [ "$(stat -f -c %T "$DIR")" = tmpfs ]; then
  log "$DIR is on tmpfs (no O_DIRECT): using memstore"; STORE=memstore
fi
FSID=$(cat /proc/sys/kernel/random/uuid)
OSD_UUID=$(cat /proc/sys/kernel/random/uuid)
CONF="$DIR/ceph.conf"
cat > "$CONF" <<CONF
[global]
fsid = $FSID
mon host = v1:127.0.0.1:$MON_PORT
public addr = 127.0.0.1
cluster addr = 127.0.0.1
public network = 127.0.0.0/8
ms bind msgr2 = false
ms bind ipv6 = false
auth cluster required = none
auth service required = none
auth client required = none
auth allow insecure global id reclaim = true
mon allow pool size one = true
mon warn on pool no redundancy = false
mon warn on insecure global id reclaim = false
mon warn on insecure global id reclaim allowed = false
mon data avail crit = 1
# fast paxos: pool creation etc. in ~50 ms instead of ~2 s
paxos propose interval = 0.05
paxos min wait = 0.01
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
# the OSD must not place itself in the CRUSH map at start: that mon command races the monmap (seen: 'wrong fsid',
# then the OSD exits); it is placed explicitly below
osd crush update on start = false
osd class update on start = false
osd objectstore = $STORE
osd memory target = 1073741824
memstore device bytes = $(( MEM_GB * 1024 * 1024 * 1024 ))
bluestore block create = true
bluestore block size = $(( BLOCK_GB * 1024 * 1024 * 1024 ))
osd max object name len = 460
osd max object namespace len = 64
run dir = $DIR/run
admin socket = $DIR/run/\$name.asok
pid file = $DIR/run/\$name.pid
log file = $DIR/log/\$name.log
mon data = $DIR/mon/\$name
osd data = $DIR/osd/\$name
keyring = $DIR/keyring
debug ms = 0/0
debug rgw = 0/5
[client.rgw]
# tcp_nodelay: without it small GETs take ~45 ms each (Nagle + delayed ACK)
rgw frontends = beast endpoint=127.0.0.1:$PORT tcp_nodelay=1
rgw data = $DIR/rgw
CONF
C=(-c "$CONF")
fail() {
  log "FAILED: $*"
  for f in "$DIR"/log/*.log; do [ -s "$f" ] && { log "--- tail $f"; tail -n 15 "$f" >&2; }; done
  S3_DIR="$DIR" S3_KEEP_DATA=1 bash "$HERE/stop.sh" >/dev/null 2>&1 || true
  log "logs kept in $DIR/log"
  exit 1
}
wait_for() { # <seconds> <cmd...>
  local end=$(( $(date +%s) + $1 )); shift
  until "$@" >/dev/null 2>&1; do [ "$(date +%s)" -ge "$end" ] && return 1; sleep 0.1; done
}
record_pid() { # <pidfile>
  wait_for 20 test -s "$1" || fail "no pid file $1"
  cat "$1" >> "$DIR/s3.pid"
}
: > "$DIR/s3.pid"

# ---- mon ----
ceph-authtool --create-keyring "$DIR/keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
ceph-authtool "$DIR/keyring" --gen-key -n client.admin --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' >/dev/null
# --addv with an explicit v1 address: `--add` records a v2 address for any port but 6789, which the v1-only
# config above cannot reach (the mon then never forms a quorum)
monmaptool --create --fsid "$FSID" --addv a "[v1:127.0.0.1:$MON_PORT]" "$DIR/monmap" >/dev/null
ceph-mon "${C[@]}" --mkfs -i a --monmap "$DIR/monmap" --keyring "$DIR/keyring" || fail "mon mkfs"
# daemons fork into the background: never let them inherit the caller's stdout/stderr pipes
ceph-mon "${C[@]}" -i a >>"$DIR/log/daemon.out" 2>&1 </dev/null || fail "mon start"
record_pid "$DIR/run/mon.a.pid"
wait_for 30 timeout 10 ceph "${C[@]}" --connect-timeout 5 mon stat || fail "mon not answering"
log "mon up $(ms)ms"

# ---- osd ----
OSD_ID=$(timeout 30 ceph "${C[@]}" osd new "$OSD_UUID") || fail "osd new"
timeout 30 ceph "${C[@]}" osd crush add "osd.$OSD_ID" 1.0 root=default host=localhost >/dev/null 2>&1 || fail "osd crush add"
mkdir -p "$DIR/osd/osd.$OSD_ID"
ceph-osd "${C[@]}" -i "$OSD_ID" --mkfs --osd-uuid "$OSD_UUID" >>"$DIR/log/daemon.out" 2>&1 </dev/null || fail "osd mkfs"
ceph-osd "${C[@]}" -i "$OSD_ID" >>"$DIR/log/daemon.out" 2>&1 </dev/null || fail "osd start"
record_pid "$DIR/run/osd.$OSD_ID.pid"
osd_up() { timeout 10 ceph "${C[@]}" osd stat -f json | grep -q '"num_up_osds":1'; }
wait_for 60 osd_up || fail "osd not up"
log "osd up $(ms)ms ($STORE)"
# pre-create the bucket pools so the first CreateBucket/PutObject do not pay for it (~2 s)
for pool in default.rgw.buckets.index default.rgw.buckets.data default.rgw.buckets.non-ec; do
  timeout 30 ceph "${C[@]}" osd pool create "$pool" 8 8 >/dev/null 2>&1 || fail "pool create $pool"
  timeout 30 ceph "${C[@]}" osd pool application enable "$pool" rgw >/dev/null 2>&1 || true
done

# ---- radosgw ----
radosgw "${C[@]}" -n client.rgw >>"$DIR/log/daemon.out" 2>&1 </dev/null || fail "radosgw start"
record_pid "$DIR/run/client.rgw.pid"
wait_for "$TIMEOUT" curl -sf -o /dev/null -m 2 "$ENDPOINT/" || fail "radosgw not answering on $ENDPOINT"
timeout 60 radosgw-admin "${C[@]}" user create --uid=ci --display-name=ci \
  --access-key="$AK" --secret="$SK" >/dev/null || fail "user create"

# ---- smoke test (signed bucket create, PUT, GET, DELETE with curl --aws-sigv4), then the test buckets ----
S=(curl -sf -m 10 --aws-sigv4 "aws:amz:$REGION:s3" --user "$AK:$SK" -H "x-amz-content-sha256: UNSIGNED-PAYLOAD")
probe="ci-s3-probe-$$"
"${S[@]}" -X PUT "$ENDPOINT/$probe" -o /dev/null || fail "smoke: create bucket"
"${S[@]}" -X PUT --data-binary ok "$ENDPOINT/$probe/k" -o /dev/null || fail "smoke: put"
[ "$("${S[@]}" "$ENDPOINT/$probe/k")" = ok ] || fail "smoke: get"
"${S[@]}" -X DELETE "$ENDPOINT/$probe/k" -o /dev/null || fail "smoke: delete object"
"${S[@]}" -X DELETE "$ENDPOINT/$probe" -o /dev/null || fail "smoke: delete bucket"
for b in $BUCKETS; do "${S[@]}" -X PUT "$ENDPOINT/$b" -o /dev/null || fail "create bucket $b"; done
first_bucket=${BUCKETS%% *}

cat > "$DIR/env.tmp" <<ENV
export S3_ENDPOINT=$ENDPOINT
export S3_DIR=$DIR
export AWS_ENDPOINT_URL_S3=$ENDPOINT
export AWS_ACCESS_KEY_ID=$AK
export AWS_SECRET_ACCESS_KEY=$SK
export AWS_REGION=$REGION
export S3_FORCE_PATH_STYLE=true
export AWS_REQUEST_CHECKSUM_CALCULATION=WHEN_REQUIRED
export AWS_RESPONSE_CHECKSUM_VALIDATION=WHEN_REQUIRED
# radosgw 16.2 matches PutObject If-Match only against the UNQUOTED ETag
export S3_IFMATCH_UNQUOTED=1
export APPR_TEST_S3_BUCKET=$first_bucket
export S3_PID_FILE=$DIR/s3.pid
ENV
mv "$DIR/env.tmp" "$DIR/env"
log "ready in $(ms)ms: $ENDPOINT (radosgw $(radosgw --version 2>/dev/null | awk '{print $3}'), $STORE, buckets: $BUCKETS, pids $(tr '\n' ' ' < "$DIR/s3.pid"))"
log "env file: source $DIR/env"
cat "$DIR/env"
