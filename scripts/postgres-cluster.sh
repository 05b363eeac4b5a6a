#!/usr/bin/env bash
# A private PostgreSQL 15 cluster for the test suite (Debian's postgresql-15,
# installed by scripts/install-test-deps.sh): initdb/pg_ctl as the `postgres`
# user, on a free loopback port and a socket directory inside DIR, with
# SCRAM password authentication. Nothing runs as a system service.
#
#   scripts/postgres-cluster.sh start DIR   # prints `export …` lines to eval
#   scripts/postgres-cluster.sh stop DIR
#
# The exported PULLPASS_TEST_POSTGRES (admin URL, no password) and
# PULLPASS_TEST_POSTGRES_PASSWORD_FILE let each test create its own database.
# fsync is off: tests that check durability start clusters of their own.
set -euo pipefail
BIN=/usr/lib/postgresql/15/bin
cmd=${1:?usage: postgres-cluster.sh start|stop DIR}
dir=${2:?usage: postgres-cluster.sh start|stop DIR}

as_postgres() {
  if [ "$(id -u)" -eq 0 ]; then su postgres -s /bin/sh -c "$1"; else sh -c "$1"; fi
}

case "$cmd" in
  start)
    [ -x "$BIN/initdb" ] || { echo "PostgreSQL 15 is missing: run scripts/install-test-deps.sh" >&2; exit 1; }
    mkdir -p "$dir"
    head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$dir/password"
    echo >> "$dir/password"
    [ "$(id -u)" -ne 0 ] || chown -R postgres:postgres "$dir"
    as_postgres "$BIN/initdb -D '$dir/data' -U pullpass -A scram-sha-256 --pwfile='$dir/password' -E UTF8 --no-sync >/dev/null"
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    as_postgres "$BIN/pg_ctl -D '$dir/data' -l '$dir/server.log' -w -t 30 \
      -o '-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=1000 -c fsync=off -c synchronous_commit=off -c full_page_writes=off' start >/dev/null"
    echo "export PULLPASS_TEST_POSTGRES='postgres://pullpass@127.0.0.1:$port/postgres?sslmode=disable'"
    echo "export PULLPASS_TEST_POSTGRES_PASSWORD_FILE='$dir/password'"
    echo "export PULLPASS_TEST_POSTGRES_DIR='$dir'"
    ;;
  stop)
    [ -d "$dir/data" ] && as_postgres "$BIN/pg_ctl -D '$dir/data' -m immediate -w stop >/dev/null" || true
    rm -rf "$dir"
    ;;
  *) echo "usage: postgres-cluster.sh start|stop DIR" >&2; exit 2 ;;
esac
