#!/usr/bin/env bash
# Start a throw-away single-node Ceph cluster (1 mon, 1 osd, optional mgr) plus one
# radosgw (S3) on 127.0.0.1, without systemd. Everything lives under $CEPH_RGW_DIR.
# Idempotent: if the gateway is already up it only prints the connection info.
# Needs: apt-get install -y --no-install-recommends radosgw ceph-mon ceph-osd ceph-common [ceph-mgr]
#
# Used by test/helpers/s3.ts (once per test run, on random ports in a temp dir).
# Environment: CEPH_RGW_DIR (where), RGW_PORT and CEPH_MON_PORT (on which
# 127.0.0.1 ports), CEPH_OBJECTSTORE, CEPH_WITH_MGR, S3_ACCESS_KEY, S3_SECRET_KEY,
# CEPH_EXTRA_CONF (more ceph.conf lines, appended; a key must not repeat one of ours in the same section).
# Prints S3_ENDPOINT=…, S3_ACCESS_KEY=…, S3_SECRET_KEY=…, S3_REGION=… on stdout.
set -euo pipefail

BASE=${CEPH_RGW_DIR:-/tmp/ceph-rgw}
RGW_PORT=${RGW_PORT:-7480}
MON_PORT=${CEPH_MON_PORT:-3300}
STORE=${CEPH_OBJECTSTORE:-bluestore}   # bluestore (sparse file, data on disk) | memstore (RAM)
WITH_MGR=${CEPH_WITH_MGR:-0}           # 1 = also start ceph-mgr (not needed for S3)
AK=${S3_ACCESS_KEY:-testaccesskey}
SK=${S3_SECRET_KEY:-testsecretkey}
CONF=$BASE/ceph.conf
ENDPOINT=http://127.0.0.1:$RGW_PORT
C=(-c "$CONF")

log() { echo "[$(date +%T.%3N)] $*" >&2; }
alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
die() { log "ERROR: $*; logs in $BASE/log"; exit 1; }
# wait_for SECONDS DESCRIPTION CMD... : poll CMD every 0.2 s
wait_for() { local n=$(( $1 * 5 )) what=$2; shift 2
  for ((i = 0; i < n; i++)); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done; die "timeout waiting for $what"; }
osd_up() { ceph "${C[@]}" --connect-timeout 5 osd dump | grep -q "^osd.$1 up"; }
info() { echo "S3_ENDPOINT=$ENDPOINT"; echo "S3_ACCESS_KEY=$AK"; echo "S3_SECRET_KEY=$SK"; echo "S3_REGION=us-east-1"; }

if alive "$BASE/run/client.rgw.a.pid" && curl -fsS -o /dev/null "$ENDPOINT/"; then
  log "already running"; info; exit 0
fi
# A port someone else listens on would make a daemon die later with a vaguer message.
port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in "$RGW_PORT" "$MON_PORT"; do
  if port_taken "$p"; then log "ERROR: port $p on 127.0.0.1 is already in use"; exit 1; fi
done
# Anything left over (crashed/partial run): stop it and start from scratch.
if [ -d "$BASE" ]; then "$(dirname "$0")/stop-ceph-rgw.sh" --purge >/dev/null 2>&1 || true; fi
rm -rf "$BASE"
mkdir -p "$BASE"/{run,log,mon/ceph-a,osd,mgr/ceph-x,rgw,crash}

FSID=$(cat /proc/sys/kernel/random/uuid)
cat >"$CONF" <<EOF
[global]
fsid = $FSID
mon host = v2:127.0.0.1:$MON_PORT
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind msgr1 = false
auth cluster required = none
auth service required = none
auth client required = none
auth allow insecure global id reclaim = false
run dir = $BASE/run
admin socket = $BASE/run/\$name.asok
pid file = $BASE/run/\$name.pid
log file = $BASE/log/\$name.log
mon cluster log file = $BASE/log/cluster.log
crash dir = $BASE/crash
log to stderr = false
err to stderr = true
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon max pg per osd = 1000
mon warn on pool no redundancy = false
mon data avail warn = 1
mon data avail crit = 0
[mon]
mon data = $BASE/mon/ceph-\$id
paxos propose interval = 0.05
[mgr]
mgr data = $BASE/mgr/ceph-\$id
[osd]
osd data = $BASE/osd/ceph-\$id
osd objectstore = $STORE
osd memory target = 939524096
bluestore block create = true
bluestore block size = 21474836480
bluestore fsck on mkfs = false
bluestore fsck on mount = false
memstore device bytes = 8589934592
[client.rgw.a]
rgw frontends = beast endpoint=127.0.0.1:$RGW_PORT tcp_nodelay=1
# radosgw defaults to a 'secure' mon connection, impossible with auth none
ms mon client mode = crc
rgw data = $BASE/rgw/ceph-rgw.a
rgw thread pool size = 64
rgw enable usage log = false
rgw enable ops log = false
# reclaim space of deleted objects after ~1 min instead of 2 h
rgw gc obj min wait = 60
rgw gc processor period = 60
EOF
[ -z "${CEPH_EXTRA_CONF:-}" ] || printf '%s\n' "$CEPH_EXTRA_CONF" >>"$CONF"

log "mon: mkfs + start"
monmaptool --create --clobber --fsid "$FSID" --addv a "[v2:127.0.0.1:$MON_PORT]" "$BASE/monmap" >/dev/null
ceph-mon "${C[@]}" --mkfs -i a --monmap "$BASE/monmap"
ceph-mon "${C[@]}" -i a
wait_for 20 mon ceph "${C[@]}" --connect-timeout 2 mon stat

log "osd: create + mkfs ($STORE) + start"
OSD_UUID=$(cat /proc/sys/kernel/random/uuid)
OSD_ID=$(ceph "${C[@]}" --connect-timeout 10 osd new "$OSD_UUID")
mkdir -p "$BASE/osd/ceph-$OSD_ID"
ceph-osd "${C[@]}" -i "$OSD_ID" --mkfs --osd-uuid "$OSD_UUID" 2>>"$BASE/log/osd-mkfs.log"
ceph-osd "${C[@]}" -i "$OSD_ID"

if [ "$WITH_MGR" = 1 ]; then log "mgr: start"; ceph-mgr "${C[@]}" -i x; fi

wait_for 60 "osd.$OSD_ID up" osd_up "$OSD_ID"
log "osd up"

log "pools: pre-create rgw pools (else the first bucket/put/multipart each stall ~2 s)"
/usr/bin/python3 - "$CONF" <<'PY'
import json, sys, rados
r = rados.Rados(conffile=sys.argv[1]); r.connect(timeout=30)
for p in ['.rgw.root', 'default.rgw.control', 'default.rgw.meta', 'default.rgw.log',
          'default.rgw.buckets.index', 'default.rgw.buckets.data', 'default.rgw.buckets.non-ec']:
    for cmd in ({"prefix": "osd pool create", "pool": p, "pg_num": 8, "pgp_num": 8},
                {"prefix": "osd pool application enable", "pool": p, "app": "rgw"}):
        rc, _, err = r.mon_command(json.dumps(cmd), b'')
        if rc != 0: sys.exit(f"{cmd}: {rc} {err}")
r.shutdown()
PY

log "rgw: start"
radosgw "${C[@]}" -n client.rgw.a
wait_for 60 "radosgw on $ENDPOINT" curl -fsS -o /dev/null "$ENDPOINT/"
alive "$BASE/run/client.rgw.a.pid" || die "radosgw exited (port $RGW_PORT taken?)"

radosgw-admin "${C[@]}" user info --uid=test >/dev/null 2>&1 ||
  radosgw-admin "${C[@]}" user create --uid=test --display-name=test \
    --access-key="$AK" --secret-key="$SK" >/dev/null
log "ready"
info
