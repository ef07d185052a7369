#!/usr/bin/env bash
# A throwaway PostgreSQL for the bench's baseline (issue #3, "the common design").
#
#   bench/scripts/postgres.sh start DIR PORT   # prints the database URL on stdout
#   bench/scripts/postgres.sh stop DIR
#   bench/scripts/postgres.sh url DIR          # the URL of a cluster started in DIR
#   bench/scripts/postgres.sh pids DIR         # its server processes (to count CPU and RSS)
#
# Uses Debian's packages: when no `initdb` is found it runs
# `apt-get update && apt-get install -y postgresql` (as root, or through sudo).
# As root, the cluster is created and run as the `postgres` user (PostgreSQL
# refuses to run as root); DIR is handed to that user and any parent directory
# it cannot traverse gets o+x (traverse only, not list).
#
# The cluster: DIR/data, log DIR/postgres.log, TCP on 127.0.0.1:PORT, Unix
# socket in DIR, trust authentication (local only), `fsync=on` and
# `synchronous_commit=on` (durable commits, as the engine's), database `bench`.
# Everything else is Debian's default configuration.
set -euo pipefail

die() { echo "postgres.sh: $*" >&2; exit 1; }
say() { echo "postgres.sh: $*" >&2; }

usage() {
    sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

find_bindir() {
    local candidate
    # Debian installs versioned binaries; take the newest.
    for candidate in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        if [ -x "$candidate/initdb" ] && [ -x "$candidate/pg_ctl" ]; then
            echo "$candidate"
            return 0
        fi
    done
    if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
        dirname "$(readlink -f "$(command -v initdb)")"
        return 0
    fi
    return 1
}

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root (or sudo) to run: $*"
    fi
}

install_postgresql() {
    say "initdb not found; installing Debian's postgresql package"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update >&2
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql >&2
}

# Runs a command as the cluster's owner: `postgres` when we are root, else ourselves.
as_owner() {
    if [ "$(id -u)" -eq 0 ]; then
        if command -v runuser >/dev/null 2>&1; then
            runuser -u postgres -- "$@"
        else
            su postgres -s /bin/sh -c "$(printf '%q ' "$@")"
        fi
    else
        "$@"
    fi
}

ensure_postgres_user() {
    if ! id postgres >/dev/null 2>&1; then
        say "creating system user postgres"
        useradd --system --home-dir /var/lib/postgresql --shell /bin/sh postgres
    fi
}

# As root: make DIR reachable and writable by `postgres`.
hand_dir_to_postgres() {
    local dir=$1 parent
    chown postgres: "$dir"
    parent=$(dirname "$dir")
    while [ "$parent" != "/" ]; do
        if ! as_owner test -x "$parent" 2>/dev/null; then
            say "granting o+x on $parent so user postgres can reach $dir"
            chmod o+x "$parent"
        fi
        parent=$(dirname "$parent")
    done
    as_owner test -w "$dir" || die "user postgres cannot write to $dir"
}

url_of() {
    local dir=$1 port
    [ -f "$dir/port" ] || die "no cluster started in $dir"
    port=$(cat "$dir/port")
    echo "postgres://postgres@127.0.0.1:$port/bench"
}

start() {
    local dir=$1 port=$2 bindir
    [[ "$port" =~ ^[0-9]+$ ]] || die "PORT must be a number, got '$port'"
    bindir=$(find_bindir) || { install_postgresql; bindir=$(find_bindir) || die "postgresql installed but initdb not found"; }
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd -P)
    export LC_ALL=C
    if [ "$(id -u)" -eq 0 ]; then
        ensure_postgres_user
        hand_dir_to_postgres "$dir"
    fi
    if [ ! -f "$dir/data/PG_VERSION" ]; then
        as_owner "$bindir/initdb" --pgdata="$dir/data" --username=postgres --auth=trust \
            --encoding=UTF8 --locale=C >"$dir/initdb.log" 2>&1 \
            || { cat "$dir/initdb.log" >&2; die "initdb failed"; }
    fi
    # Ours, last in the file, so they win over anything above.
    as_owner sh -c "cat > '$dir/data/postgresql.auto.conf'" <<EOF
# Written by bench/scripts/postgres.sh
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
fsync = on
synchronous_commit = on
full_page_writes = on
max_connections = 200
EOF
    echo "$port" >"$dir/port"
    if as_owner "$bindir/pg_ctl" --pgdata="$dir/data" status >/dev/null 2>&1; then
        say "already running in $dir"
    else
        as_owner "$bindir/pg_ctl" --pgdata="$dir/data" --log="$dir/postgres.log" --wait --timeout=60 start >&2 \
            || { tail -n 30 "$dir/postgres.log" >&2 || true; die "PostgreSQL did not start (log: $dir/postgres.log)"; }
    fi
    if ! "$bindir/psql" -h 127.0.0.1 -p "$port" -U postgres -d postgres -tAc \
        "SELECT 1 FROM pg_database WHERE datname = 'bench'" | grep -q 1; then
        "$bindir/createdb" -h 127.0.0.1 -p "$port" -U postgres bench
    fi
    url_of "$dir"
}

stop() {
    local dir=$1 bindir
    [ -d "$dir/data" ] || die "no cluster in $dir"
    dir=$(cd "$dir" && pwd -P)
    bindir=$(find_bindir) || die "initdb/pg_ctl not found"
    if as_owner "$bindir/pg_ctl" --pgdata="$dir/data" status >/dev/null 2>&1; then
        as_owner "$bindir/pg_ctl" --pgdata="$dir/data" --mode=fast --wait stop >&2
    else
        say "not running in $dir"
    fi
}

# The postmaster and its children (backends, WAL writer, checkpointer, ...):
# the baseline's CPU and memory are mostly spent here, not in its own process.
pids() {
    local dir=$1 postmaster
    [ -f "$dir/data/postmaster.pid" ] || die "not running in $dir"
    postmaster=$(head -n 1 "$dir/data/postmaster.pid")
    echo "$postmaster"
    if command -v pgrep >/dev/null 2>&1; then
        pgrep -P "$postmaster" || true
    else
        ps -o pid= --ppid "$postmaster" | tr -d ' ' || true
    fi
}

case "${1:-}" in
    start) [ $# -eq 3 ] || usage; start "$2" "$3" ;;
    stop) [ $# -eq 2 ] || usage; stop "$2" ;;
    url) [ $# -eq 2 ] || usage; url_of "$2" ;;
    pids) [ $# -eq 2 ] || usage; pids "$2" ;;
    *) usage ;;
esac
