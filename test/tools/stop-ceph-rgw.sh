#!/usr/bin/env bash
# Stop the daemons started by start-ceph-rgw.sh (only the PIDs in its pid files).
#   stop-ceph-rgw.sh          SIGTERM, wait up to 10 s (radosgw needs ~7 s), then SIGKILL; keeps data+logs
#   stop-ceph-rgw.sh --purge  SIGKILL at once and delete the data directory
# Idempotent: does nothing if nothing is running. CEPH_RGW_DIR says which cluster.
set -uo pipefail
BASE=${CEPH_RGW_DIR:-/tmp/ceph-rgw}
sig=TERM; [ "${1:-}" = --purge ] && sig=KILL
running() { kill -0 "$1" 2>/dev/null && ! grep -q '^State:.*zombie' "/proc/$1/status" 2>/dev/null; }
pids=()
for f in "$BASE"/run/*.pid; do
  [ -f "$f" ] || continue
  p=$(cat "$f")
  # only signal it if it is still one of our ceph daemons (pid not reused)
  if kill -0 "$p" 2>/dev/null && grep -q -- "$BASE/ceph.conf" "/proc/$p/cmdline" 2>/dev/null; then
    kill -"$sig" "$p"; pids+=("$p")
  fi
done
left=("${pids[@]}")
for i in $(seq 100); do
  [ ${#left[@]} -eq 0 ] && break
  [ "$i" -eq 50 ] && for p in "${left[@]}"; do kill -KILL "$p" 2>/dev/null; done
  sleep 0.2
  still=(); for p in "${left[@]}"; do running "$p" && still+=("$p"); done; left=("${still[@]}")
done
rm -f "$BASE"/run/*.pid "$BASE"/run/*.asok
[ "${1:-}" = --purge ] && rm -rf "$BASE"
echo "stopped (${#pids[@]} processes)"
