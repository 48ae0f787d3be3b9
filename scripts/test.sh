#!/usr/bin/env bash
# Install everything, then run the test suite (unit, service over loopback,
# PostgreSQL storage suite, real FUSE mounts, USD). Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

pgdir=$(mktemp -d /tmp/prodfs-pg.XXXXXX)
cleanup() { bash scripts/pg-test-server.sh stop "$pgdir"; rm -rf "$pgdir"; }
trap cleanup EXIT
if PRODFS_TEST_PG_URL=$(bash scripts/pg-test-server.sh start "$pgdir"); then
  export PRODFS_TEST_PG_URL
else
  echo "test: could not start PostgreSQL; its tests will fail" >&2
fi

status=0
.venv/bin/python -m pytest "$@" || status=$?
# pytest's 5 means no test ran: that is a failure here.
exit $status
