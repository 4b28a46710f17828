#!/usr/bin/env bash
# Starts or stops a private PostgreSQL cluster for maskpbx (make run, tests).
# Postgres refuses to run as root, so as root the cluster belongs to the
# unprivileged "postgres" user; otherwise it runs as whoever calls this.
#
#   deploy/pg.sh start DIR PORT   create DIR if needed, start on 127.0.0.1:PORT
#   deploy/pg.sh stop DIR         fast shutdown
#   deploy/pg.sh url DIR PORT     print the database URL
set -euo pipefail

cmd=${1:?usage: pg.sh start|stop|url DIR [PORT]}
dir=${2:?cluster directory}
port=${3:-55432}

pgbin=${PGBIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}
if [ -z "$pgbin" ] || [ ! -x "$pgbin/initdb" ]; then
  echo "pg.sh: PostgreSQL server binaries not found; installing postgresql" >&2
  if [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql) >&2
    pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  else
    echo "pg.sh: run as root once or install postgresql" >&2; exit 1
  fi
fi

as_owner() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

case "$cmd" in
start)
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  if [ "$(id -u)" = 0 ]; then
    chown postgres: "$dir"
    # postgres must be able to reach the directory through its parents.
    p=$dir
    while [ "$p" != / ]; do p=$(dirname "$p"); chmod o+x "$p" 2>/dev/null || true; done
  fi
  chmod 700 "$dir"
  if [ ! -f "$dir/PG_VERSION" ]; then
    as_owner "$pgbin/initdb" -D "$dir" -A trust -U maskpbx -E UTF8 --no-locale >"$dir.initdb.log" 2>&1 \
      || { cat "$dir.initdb.log" >&2; exit 1; }
  fi
  if as_owner "$pgbin/pg_ctl" -D "$dir" status >/dev/null 2>&1; then
    exit 0
  fi
  as_owner "$pgbin/pg_ctl" -D "$dir" -w -t 60 -l "$dir/server.log" start \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=${PG_FSYNC:-on}" >/dev/null \
    || { tail -n 30 "$dir/server.log" >&2; exit 1; }
  ;;
stop)
  [ -f "$dir/PG_VERSION" ] || exit 0
  as_owner "$pgbin/pg_ctl" -D "$dir" -m fast -w stop >/dev/null 2>&1 || true
  ;;
url)
  echo "postgres://maskpbx@127.0.0.1:$port/postgres?sslmode=disable"
  ;;
*)
  echo "pg.sh: unknown command $cmd" >&2; exit 2
  ;;
esac
