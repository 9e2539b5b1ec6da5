#!/usr/bin/env bash
# A throwaway local PostgreSQL server for the tests and local runs (never for real data:
# fsync is off).
#
#   scripts/postgres.sh start   # install (apt, as root) and initialise on first use, start, wait until ready
#   scripts/postgres.sh stop
#   scripts/postgres.sh url     # the JDBC URL of its database
#
# Environment: TWOTOWER_PG_DIR (default /tmp/twotower-pg: cluster, socket, log),
# TWOTOWER_PG_PORT (default 54329), TWOTOWER_PG_PASSWORD (password of the role
# `twotower`; the default is for tests only). Clients connect over TCP on 127.0.0.1 as
# PGUSER=twotower PGPASSWORD=...; the role may create databases and roles (the tests do).
set -euo pipefail
dir="${TWOTOWER_PG_DIR:-/tmp/twotower-pg}"
port="${TWOTOWER_PG_PORT:-54329}"
password="${TWOTOWER_PG_PASSWORD:-twotower-test}"
role=twotower
db=twotower
data="$dir/data"
log="$dir/server.log"

die() { echo "error: $*" >&2; exit 2; }
note() { echo "[postgres] $*" >&2; }

case "$port" in ''|*[!0-9]*) die "TWOTOWER_PG_PORT must be a port number, got '$port'";; esac

# The server binaries: on PATH, else the newest Debian/Ubuntu install.
bindir() {
  local d
  if command -v pg_ctl >/dev/null && command -v initdb >/dev/null; then
    dirname "$(readlink -f "$(command -v pg_ctl)")"; return
  fi
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    [ -x "$d/pg_ctl" ] && [ -x "$d/initdb" ] && { echo "$d"; return; }
  done
}

# initdb and the server refuse to run as root: as root they run as the `postgres` user.
as_owner() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# Superuser SQL over the server's own socket (trust, reachable only by its owner).
admin_sql() {
  as_owner "$bin/psql" -X -q -v ON_ERROR_STOP=1 -h "$dir" -p "$port" -U postgres -d postgres "$@"
}

running() { [ -f "$data/PG_VERSION" ] && as_owner "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; }

start() {
  bin="$(bindir)"
  if [ -z "$bin" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      note "installing PostgreSQL with apt-get"
      { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; } >&2 \
        || die "apt-get could not install postgresql"
      bin="$(bindir)"
    fi
    [ -n "$bin" ] || die "PostgreSQL server binaries (initdb, pg_ctl) not found; install PostgreSQL (apt-get install postgresql)"
  fi
  if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || die "running as root needs a 'postgres' OS user to own the server (useradd postgres)"
  fi

  # One start at a time (test sessions may start it together). The server must not
  # inherit the lock's descriptor, or it would hold the lock for as long as it runs.
  mkdir -p "$(dirname "$dir")"
  exec 9>"$dir.lock"
  flock -w 120 9 || die "another 'postgres.sh start' holds $dir.lock"

  if ! [ -f "$data/PG_VERSION" ]; then
    [ -e "$data" ] && die "$data exists but holds no PostgreSQL cluster; remove it or set TWOTOWER_PG_DIR"
    note "initialising a cluster in $data"
    if ! [ -d "$dir" ]; then
      mkdir -p "$dir"; chmod 700 "$dir"  # the socket lives here: only its owner may connect
      if [ "$(id -u)" = 0 ]; then chown postgres: "$dir"; fi
    fi
    as_owner "$bin/initdb" -D "$data" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
      -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
      || die "initdb failed in $data; see $dir/initdb.log"
    # Throwaway server: durability off for speed; TCP on loopback only.
    cat >>"$data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
EOF
  fi

  if running; then
    note "already running on 127.0.0.1:$port"
  else
    as_owner "$bin/pg_ctl" -D "$data" -l "$log" -o "-p $port" -w -t 60 start >/dev/null 2>&1 9>&- \
      || die "PostgreSQL did not start on 127.0.0.1:$port (port in use?); see $log"
    note "started on 127.0.0.1:$port (data $data)"
  fi
  local i
  for i in $(seq 1 60); do
    "$bin/pg_isready" -q -h 127.0.0.1 -p "$port" && break
    [ "$i" = 60 ] && die "PostgreSQL on 127.0.0.1:$port is not ready after 60 s; see $log"
    sleep 1
  done

  # The role and database, created or brought in line with the environment.
  admin_sql -v role="$role" -v pw="$password" <<'SQL' || die "could not set up role $role; see $log"
SELECT format('CREATE ROLE %I LOGIN CREATEDB CREATEROLE', :'role')
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'role') \gexec
SELECT format('ALTER ROLE %I PASSWORD %L', :'role', :'pw') \gexec
SQL
  admin_sql -v role="$role" -v db="$db" <<'SQL' || die "could not create database $db; see $log"
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'role')
 WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'db') \gexec
SQL
}

stop() {
  bin="$(bindir)"
  [ -n "$bin" ] || die "PostgreSQL server binaries (pg_ctl) not found"
  if running; then
    as_owner "$bin/pg_ctl" -D "$data" -m fast -w stop >/dev/null || die "pg_ctl stop failed; see $log"
    note "stopped"
  else
    note "not running"
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  url) echo "jdbc:postgresql://127.0.0.1:$port/$db" ;;
  *) echo "usage: $0 start|stop|url" >&2; exit 2 ;;
esac
