#!/usr/bin/env bash
# .ci/s3/stop.sh - stop the throw-away Ceph RGW started by .ci/s3/start.sh, by PID only (never by name): radosgw
# (SIGTERM, SIGKILL after 2 s: its graceful exit takes ~6 s and the data is throw-away), then ceph-osd, then ceph-mon
# (SIGTERM, SIGKILL after 4 s each), then delete $S3_DIR unless S3_KEEP_DATA=1.
# Adapted from the team's tested Ceph RGW recipe.
set -uo pipefail
DIR=${S3_DIR:-/tmp/appr-s3}
PIDFILE="$DIR/s3.pid"
[ -f "$PIDFILE" ] || { echo "[stop-s3] no $PIDFILE: nothing to stop" >&2; exit 0; }

ours() { # <pid> -> true if it is still one of our daemons, alive (guards against PID reuse; zombies count as gone)
  local stat; stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  case "$stat" in *") Z "*) return 1;; esac
  case "$(cat "/proc/$1/comm" 2>/dev/null)" in radosgw|ceph-osd|ceph-mon) return 0;; *) return 1;; esac
}
stop_pids() { # <grace seconds> <pid>...
  local grace=$1; shift
  local live=()
  for p in "$@"; do ours "$p" && kill -TERM "$p" 2>/dev/null && live+=("$p"); done
  [ ${#live[@]} -eq 0 ] && return 0
  for _ in $(seq 1 $(( grace * 10 ))); do
    local still=()
    for p in "${live[@]}"; do ours "$p" && still+=("$p"); done
    [ ${#still[@]} -eq 0 ] && return 0
    live=("${still[@]}"); sleep 0.1
  done
  for p in "${live[@]}"; do ours "$p" && kill -KILL "$p" 2>/dev/null; done
  return 0
}

mapfile -t pids < "$PIDFILE"          # order written by start.sh: mon, osd, rgw
mon=${pids[0]:-}; osd=${pids[1]:-}; rgw=${pids[2]:-}
# one at a time, gateway first: an OSD whose mon is already gone hangs on SIGTERM
[ -n "$rgw" ] && stop_pids 2 "$rgw"
[ -n "$osd" ] && stop_pids 4 "$osd"
[ -n "$mon" ] && stop_pids 4 "$mon"
rm -f "$PIDFILE"
if [ "${S3_KEEP_DATA:-0}" != 1 ]; then rm -rf "$DIR"; fi
echo "[stop-s3] stopped" >&2
