#!/usr/bin/env bash
# Start a throw-away PostgreSQL server for the storage tests and print its URL.
# Usage: scripts/pg-test-server.sh start DIR | stop DIR
set -euo pipefail
action=$1; dir=$2
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)
port=${PRODFS_TEST_PG_PORT:-55432}
run() { if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi; }
case $action in
  start)
    mkdir -p "$dir"
    [[ $(id -u) -eq 0 ]] && chown postgres "$dir"
    if [[ ! -f $dir/PG_VERSION ]]; then
      run "$bin/initdb" -D "$dir" -A trust -U postgres >/dev/null
    fi
    run "$bin/pg_ctl" -D "$dir" -o "-p $port -k $dir -c listen_addresses=127.0.0.1" -l "$dir/log" -w start >/dev/null
    echo "postgresql://postgres@127.0.0.1:$port/postgres"
    ;;
  stop)
    run "$bin/pg_ctl" -D "$dir" -m fast -w stop >/dev/null || true
    ;;
esac
