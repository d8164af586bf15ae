#!/usr/bin/env bash
# Run a throwaway PostgreSQL server from the OS packages.
#
# Why: integration tests need a real PostgreSQL, and CI machines may have no Docker engine.
# The server listens on 127.0.0.1 only with trust auth, keeps everything (data, socket, log)
# inside DIR, and is tuned for tests (fsync off). See README.md, "Tests".
#
#   postgres-local.sh install          apt-get install postgresql unless a pg_ctl exists (root)
#   postgres-local.sh start DIR [PORT] initdb into DIR, start, create database `interlock`;
#                                      prints the connection URL
#   postgres-local.sh stop DIR         stop it (fast shutdown, then immediate, then SIGKILL)
#
# Environment: PG_BIN (a directory with pg_ctl/initdb/psql; default the newest
# /usr/lib/postgresql/*/bin), INTERLOCK_PG_START_TIMEOUT (seconds, 60), INTERLOCK_PYTHON
# (used to pick a free port), INTERLOCK_WATCH_PID (stop the server when that process exits;
# with INTERLOCK_WATCH_REMOVE=1 also delete DIR then).
set -euo pipefail

SCRIPT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"
DB_NAME="interlock"
DB_USER="postgres"
DB_PASSWORD="interlock"   # ignored by trust auth; present so URLs look like production ones

die() { echo "postgres-local: $*" >&2; exit 1; }
log() { echo "postgres-local: $*" >&2; }

usage() {
    # The header comment is the manual.
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$SCRIPT" >&2
    exit 2
}

# The directory holding pg_ctl: $PG_BIN, else the newest Debian-packaged version, else $PATH.
find_pg_bin() {
    local d
    if [[ -n "${PG_BIN:-}" ]]; then
        [[ -x "$PG_BIN/pg_ctl" ]] || die "PG_BIN=$PG_BIN has no pg_ctl"
        echo "$PG_BIN"
        return 0
    fi
    d="$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
    if [[ -n "$d" && -x "$d/pg_ctl" ]]; then
        echo "$d"
        return 0
    fi
    if command -v pg_ctl >/dev/null 2>&1; then
        dirname "$(readlink -f "$(command -v pg_ctl)")"
        return 0
    fi
    return 1
}

cmd_install() {
    if compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null; then
        log "PostgreSQL already installed: $(find_pg_bin)"
        return 0
    fi
    [[ "$(id -u)" == 0 ]] || die "PostgreSQL is not installed and installing it needs root (apt-get install -y postgresql)"
    command -v apt-get >/dev/null 2>&1 || die "no apt-get: install PostgreSQL with your OS package manager"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y --no-install-recommends postgresql >/dev/null; then
        log "apt-get install failed; refreshing the package lists and retrying"
        apt-get update >/dev/null
        apt-get install -y --no-install-recommends postgresql >/dev/null
    fi
    compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null || die "postgresql installed but no pg_ctl found"
    log "installed PostgreSQL: $(find_pg_bin)"
}

free_port() {
    local py p
    for py in "${INTERLOCK_PYTHON:-}" python3; do
        if [[ -n "$py" ]] && command -v "$py" >/dev/null 2>&1; then
            "$py" -c 'import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
            return
        fi
    done
    for _ in $(seq 50); do
        p=$(( 20000 + RANDOM % 40000 ))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
    done
    die "no free port found"
}

# Run a command as the server's OS user: root may not run PostgreSQL, so use `postgres`.
as_owner() {
    if [[ "$(id -u)" == 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

# True while PID is a live process (a zombie awaiting its reaper counts as gone).
alive() {
    [[ -n "$1" ]] && kill -0 "$1" 2>/dev/null || return 1
    local state
    state="$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null || true)"
    [[ "$state" != Z ]]
}

log_tail() {
    local f="$1/server.log"
    [[ -f "$f" ]] && { echo "--- last lines of $f ---"; tail -n 30 "$f"; } >&2
    return 0
}

cmd_start() {
    local dir="${1:-}" port="${2:-0}"
    [[ -n "$dir" ]] || usage
    [[ "$port" =~ ^[0-9]+$ ]] || die "PORT must be a number, got '$port'"
    local bin
    bin="$(find_pg_bin)" || die "PostgreSQL not found (no pg_ctl); run: $SCRIPT install"
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd)"
    # The socket path must fit in sun_path (107 bytes).
    (( ${#dir} <= 80 )) || die "DIR path too long for a unix socket (${#dir} > 80 chars): $dir"
    if [[ "$(id -u)" == 0 ]]; then
        id postgres >/dev/null 2>&1 || die "running as root but there is no 'postgres' OS user to run the server"
        chown -R postgres: "$dir"
        chmod 700 "$dir"
        runuser -u postgres -- test -w "$dir" \
            || die "user postgres cannot reach $dir (a parent directory is not searchable); use a directory under /tmp"
    fi
    if [[ -f "$dir/data/postmaster.pid" ]] && as_owner "$bin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
        die "a server is already running from $dir"
    fi
    [[ "$port" == 0 ]] && port="$(free_port)"

    rm -rf "$dir/data"
    printf '%s\n' "$DB_PASSWORD" >"$dir/pwfile"
    [[ "$(id -u)" == 0 ]] && chown postgres: "$dir/pwfile"
    if ! as_owner "$bin/initdb" -D "$dir/data" -U "$DB_USER" --pwfile="$dir/pwfile" \
            --auth=trust -E UTF8 --locale=C >"$dir/initdb.log" 2>&1; then
        cat "$dir/initdb.log" >&2
        die "initdb into $dir/data failed (output above)"
    fi
    rm -f "$dir/pwfile"
    cat >"$dir/data/pg_hba.conf" <<HBA
# Written by scripts/postgres-local.sh: trust, loopback and the private socket only.
local all all              trust
host  all all 127.0.0.1/32 trust
HBA
    cat >>"$dir/data/postgresql.conf" <<CONF

# scripts/postgres-local.sh: a throwaway test server.
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
max_connections = 200
fsync = off
synchronous_commit = off
full_page_writes = off
logging_collector = off
CONF
    [[ "$(id -u)" == 0 ]] && chown postgres: "$dir/data/pg_hba.conf"

    local timeout_s="${INTERLOCK_PG_START_TIMEOUT:-60}"
    log "starting PostgreSQL ($bin) on 127.0.0.1:$port, state in $dir"
    # setsid: keep the test runner's terminal signals away; we stop it ourselves.
    if ! as_owner setsid "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t "$timeout_s" \
            start </dev/null >"$dir/pg_ctl.log" 2>&1; then
        cat "$dir/pg_ctl.log" >&2
        log_tail "$dir"
        cmd_stop "$dir" >/dev/null 2>&1 || true
        die "PostgreSQL did not start on 127.0.0.1:$port within ${timeout_s}s"
    fi
    echo "$port" >"$dir/port"
    if ! as_owner "$bin/psql" -X -q -h "$dir" -p "$port" -U "$DB_USER" -d postgres \
            -v ON_ERROR_STOP=1 -c "CREATE DATABASE $DB_NAME" >"$dir/createdb.log" 2>&1; then
        cat "$dir/createdb.log" >&2
        cmd_stop "$dir" >/dev/null 2>&1 || true
        die "could not create database $DB_NAME"
    fi

    if [[ -n "${INTERLOCK_WATCH_PID:-}" ]]; then
        # Stop the server when the watched process (the test run) goes away.
        # shellcheck disable=SC2016  # $1.. are the inner script's arguments
        setsid bash -c 'while kill -0 "$1" 2>/dev/null && [[ -f "$2/data/postmaster.pid" ]]; do sleep 2; done
                        if [[ -f "$2/data/postmaster.pid" ]]; then "$3" stop "$2"; [[ "$4" != 1 ]] || rm -rf "$2"; fi' \
            watch "$INTERLOCK_WATCH_PID" "$dir" "$SCRIPT" "${INTERLOCK_WATCH_REMOVE:-0}" \
            </dev/null >/dev/null 2>&1 &
    fi
    echo "postgresql://$DB_USER:$DB_PASSWORD@127.0.0.1:$port/$DB_NAME"
}

cmd_stop() {
    local dir="${1:-}"
    [[ -n "$dir" ]] || usage
    [[ -f "$dir/data/postmaster.pid" ]] || { log "no running server in $dir"; return 0; }
    local bin pid
    pid="$(head -n 1 "$dir/data/postmaster.pid")"
    if bin="$(find_pg_bin)"; then
        as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w -t 20 stop >/dev/null 2>&1 && return 0
        as_owner "$bin/pg_ctl" -D "$dir/data" -m immediate -w -t 10 stop >/dev/null 2>&1 && return 0
    fi
    # pg_ctl could not stop it: kill the postmaster if the pid is still a postgres process.
    if alive "$pid" && grep -q postgres "/proc/$pid/cmdline" 2>/dev/null; then
        log "postmaster $pid did not stop; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$dir/data/postmaster.pid"
}

case "${1:-}" in
    install) shift; cmd_install "$@" ;;
    start) shift; cmd_start "$@" ;;
    stop) shift; cmd_stop "$@" ;;
    *) usage ;;
esac
