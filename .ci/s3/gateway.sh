#!/usr/bin/env bash
# .ci/s3/gateway.sh kill|start - take the S3 gateway (radosgw) of the cluster started by start.sh down hard, or bring
# it back, leaving the monitor and OSD (the data) alone. For the outage test: the registry must answer 503 while
# the gateway is down and recover by itself when it is back.
set -euo pipefail
DIR=${S3_DIR:-/tmp/appr-s3}
PORT=${S3_PORT:-7480}
PIDFILE="$DIR/s3.pid"
[ -f "$PIDFILE" ] || { echo "[gateway] no $PIDFILE: start.sh has not run" >&2; exit 1; }
mapfile -t pids < "$PIDFILE"   # mon, osd, rgw (start.sh's order)

case "${1:-}" in
  kill)
    rgw=${pids[2]:-}
    [ -n "$rgw" ] && [ "$(cat "/proc/$rgw/comm" 2>/dev/null)" = radosgw ] && kill -KILL "$rgw"
    for _ in $(seq 1 100); do curl -s -o /dev/null -m 1 "http://127.0.0.1:$PORT/" || exit 0; sleep 0.1; done
    echo "[gateway] still answering after kill" >&2; exit 1 ;;
  start)
    rm -f "$DIR/run/client.rgw.pid"
    radosgw -c "$DIR/ceph.conf" -n client.rgw >>"$DIR/log/daemon.out" 2>&1 </dev/null
    for _ in $(seq 1 300); do [ -s "$DIR/run/client.rgw.pid" ] && break; sleep 0.1; done
    printf '%s\n%s\n%s\n' "${pids[0]}" "${pids[1]}" "$(cat "$DIR/run/client.rgw.pid")" > "$PIDFILE"
    for _ in $(seq 1 600); do curl -sf -o /dev/null -m 1 "http://127.0.0.1:$PORT/" && exit 0; sleep 0.1; done
    echo "[gateway] radosgw did not come back" >&2; exit 1 ;;
  *) echo "usage: $0 kill|start" >&2; exit 2 ;;
esac
