#!/usr/bin/env bash
# The ProdFS demo: install everything, start a PVC service, publish the demo
# show (once: a second run finds it and publishes nothing), mount it, and print
# what to try. Runs unattended; run it as root (or with sudo) on Debian.
#
#   bash scripts/demo.sh              # everything, mounted at $PRODFS_DEMO_MOUNT (/p)
#   bash scripts/demo.sh --no-mount   # stop after publishing
#
# Environment: PRODFS_DEMO_DATA (service data, default /var/lib/prodfs-demo),
# PRODFS_DEMO_MOUNT (default /p), PRODFS_DEMO_PORT (default 8750).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

usage() { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; }

do_mount=1
for arg in "$@"; do
  case $arg in
    --no-mount) do_mount=0 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "demo: unknown option: $arg" >&2; usage >&2; exit 2 ;;
  esac
done

DATA=${PRODFS_DEMO_DATA:-/var/lib/prodfs-demo}
MNT=${PRODFS_DEMO_MOUNT:-/p}
PORT=${PRODFS_DEMO_PORT:-8750}
URL="http://127.0.0.1:$PORT"
LOG="$DATA/pvc.log"
READY="$DATA/pvc.ready"
PIDFILE="$DATA/pvc.pid"
SHOW_JSON="$DATA/demo-show.json"
# The mounts' payload cache lives with the service's data: cached version trees
# belong to this service's store, and go away with it.
CACHE="$DATA/cache"
PY="$ROOT/.venv/bin/python"

bash scripts/setup.sh

mkdir -p "$DATA"

healthy() {
  "$PY" - "$1" <<'EOF' >/dev/null 2>&1
import sys, httpx
r = httpx.get(sys.argv[1] + "/api/v1/health", timeout=2.0, trust_env=False)
sys.exit(0 if r.status_code == 200 and r.json().get("status") == "ok" else 1)
EOF
}

# -- the service: reuse the one a previous run started, else start one --------------------------
if healthy "$URL"; then
  echo "demo: using the PVC service already running at $URL"
else
  rm -f "$READY"
  echo "demo: starting the PVC service on $URL (data in $DATA, log in $LOG)"
  # setsid + nohup: the service outlives this script (stop it with the command printed below)
  setsid nohup "$ROOT/.venv/bin/pvc" serve --data "$DATA" --port "$PORT" --ready-file "$READY" \
    >>"$LOG" 2>&1 </dev/null &
  echo $! >"$PIDFILE"
  for _ in $(seq 600); do
    [[ -s $READY ]] && break
    if ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
      echo "demo: the PVC service stopped while starting; the end of $LOG:" >&2
      tail -n 20 "$LOG" >&2
      exit 1
    fi
    sleep 0.1
  done
  if [[ ! -s $READY ]]; then
    echo "demo: the PVC service did not become ready within 60 s; see $LOG" >&2
    exit 1
  fi
  URL=$(cat "$READY")
fi

# -- the show (idempotent) ----------------------------------------------------------------------
"$PY" -m prodfs_demo --url "$URL" --json "$SHOW_JSON"

# a day of the history to pin to: the third day, when lighting v2 sits on the diamond
PIN_DAY=$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["contexts"]["day3"]["date"])' "$SHOW_JSON")
LGT=spies:100:10-lgt:walter
STOP_SERVICE="kill \$(cat $PIDFILE)"
[[ -f $PIDFILE ]] || STOP_SERVICE="stop the PVC service at $URL"

if ((do_mount == 0)); then
  cat <<EOF

The demo show is published on $URL (description: $SHOW_JSON).
Mount it with:  $ROOT/.venv/bin/prodfs mount $MNT --pvc $URL --cache-dir $CACHE
Stop the service with:  $STOP_SERVICE
EOF
  exit 0
fi

# -- the mount ----------------------------------------------------------------------------------
mkdir -p "$MNT"
if mountpoint -q "$MNT"; then
  echo "demo: $MNT is already mounted; leaving it as it is"
else
  "$ROOT/.venv/bin/prodfs" mount "$MNT" --pvc "$URL" --cache-dir "$CACHE"
fi

P="$ROOT/.venv/bin/prodfs"
cat <<EOF

ProdFS demo ready: the show 'spies' from $URL is mounted at $MNT.
What it contains, version by version: docs/demo.md (description: $SHOW_JSON).

Try:
  # every product, side by side
  ls $MNT
  # versionless: the version this mount resolves (the newest)
  cat $MNT/$LGT/walter.usda
  # an explicit version, always exactly v1; the version carrying a label
  ls -l $MNT/spies:asset:walter-model@1/ $MNT/$LGT@approved/
  # compose the shot through the mount: which model did it get?
  $PY -c "from pxr import Usd; s = Usd.Stage.Open('$MNT/$LGT/walter.usda'); print(s.GetPrimAtPath('/walter').GetAttribute('demo:model').Get())"
  # a second mount showing the store as it was at the end of $PIN_DAY
  mkdir -p $MNT-pinned && $P mount $MNT-pinned --pvc $URL --cache-dir $CACHE --pin $PIN_DAY
  # the version, rule and context of a name, as extended attributes; and why
  getfattr -d $MNT/$LGT
  $P why $MNT/$LGT

Stop:
  $P umount $MNT-pinned; $P umount $MNT
  $STOP_SERVICE
EOF
