#!/usr/bin/env bash
# Store benchmark: the same aica binary on SQLite, on PostgreSQL, and as three
# replicas on one PostgreSQL database, all on this machine, all with the demo
# data set. Two loads, each for DUR with wrk:
#   cold reads  every request a different page of the article listing
#               (bench/cold.lua), so the read cache answers almost nothing;
#   writes      16 connections creating articles (bench/write.lua).
# Three replicas are loaded by three wrk processes at once (CONNS/3 and 16/3
# connections each, summed), as a load balancer would spread them.
# Needs wrk and a PostgreSQL server: BENCH_PG_URL (default
# postgres://postgres@127.0.0.1:5432/postgres) must be allowed to CREATE DATABASE.
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${DUR:-10s}
CONNS=${CONNS:-48}
WRITERS=${WRITERS:-16}
PG_ADMIN=${BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}

command -v wrk >/dev/null || { echo "wrk is missing. Try: apt-get install wrk" >&2; exit 2; }
command -v psql >/dev/null || { echo "psql is missing. Try: apt-get install postgresql-client" >&2; exit 2; }

echo "== building (release)" >&2
cargo build --release --locked -q
AICA_BIN=${AICA_BIN:-${CARGO_TARGET_DIR:-target}/release/aica}

WORK=$(mktemp -d)
DB="aica_bench_$$"
PG_URL="${PG_ADMIN%/*}/$DB"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  psql -q "$PG_ADMIN" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
psql -q "$PG_ADMIN" -c "CREATE DATABASE $DB" >/dev/null

wait_http() { for _ in $(seq 1 300); do curl -sf -o /dev/null "$1" && return 0; sleep 0.1; done; echo "not answering: $1" >&2; return 1; }

# start NAME [env...] -> sets URL to the backend; the server runs in $WORK/NAME
# (not in a command substitution: PIDS must reach stop_all)
start() {
  local name=$1; shift
  mkdir -p "$WORK/$name"
  env "$@" "$AICA_BIN" --dir "$WORK/$name" serve --port 0 --console-port 0 --set backup.schedule= >"$WORK/$name.out" 2>&1 &
  PIDS+=("$!")
  for _ in $(seq 1 600); do [ -f "$WORK/$name/run/aica.pid" ] && break; sleep 0.1; done
  [ -f "$WORK/$name/run/aica.pid" ] || { echo "aica ($name) did not start:" >&2; cat "$WORK/$name.out" >&2; return 1; }
  local url
  url="http://$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["backend"])' "$WORK/$name/run/aica.pid")"
  wait_http "$url/health/ready"
  URL=$url
}

# start3 -> R1 R2 R3: three replicas on the PostgreSQL database, 4 connections each
start3() {
  start r1 DATABASE_URL="$PG_URL" AICA_DATABASE_POOL_SIZE=4; R1=$URL
  start r2 DATABASE_URL="$PG_URL" AICA_DATABASE_POOL_SIZE=4; R2=$URL
  start r3 DATABASE_URL="$PG_URL" AICA_DATABASE_POOL_SIZE=4; R3=$URL
}

stop_all() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  PIDS=()
}

# key DIR [env...] -> an editor key (creating the database and the demo data on first use)
key() {
  local dir=$1; shift
  mkdir -p "$dir"
  env "$@" "$AICA_BIN" --dir "$dir" keys create --role editor --name "bench-$RANDOM$RANDOM" 2>/dev/null | head -1
}

# rps URL SCRIPT CONNS -> requests per second (non-2xx are reported on stderr)
rps() {
  local out
  out=$(BENCH_RUN="$RANDOM$RANDOM" wrk -t1 -c"$3" -d"$DUR" -s "$2" "$1")
  awk '/Non-2xx|Socket errors/' <<<"$out" | sed "s|^|   wrk ($1): |" >&2
  awk '/^Requests\/sec:/ {print $2}' <<<"$out"
}

# rps3 SCRIPT CONNS URL... -> summed requests per second of one wrk per URL, run together
rps3() {
  local script=$1 conns=$2; shift 2
  local n=$# each files=() pids=() i=0
  each=$(( (conns + n - 1) / n ))
  for u in "$@"; do
    files+=("$WORK/rps.$i")
    rps "$u" "$script" "$each" >"$WORK/rps.$i" &
    pids+=("$!")
    i=$((i + 1))
  done
  for p in "${pids[@]}"; do wait "$p"; done
  cat "${files[@]}" | awk '{s += $1} END {print s}'
}

export COLD_MAX_SKIP=5000

# Reads first on every configuration, then writes: the writes add thousands of
# rows that PostgreSQL's counts read from the heap until autovacuum marks them
# all-visible, which would handicap whichever configuration reads after them.
export BENCH_KEY
BENCH_KEY=$(key "$WORK/sqlite")
PG_KEY=$(key "$WORK/pg-setup" DATABASE_URL="$PG_URL")
psql -q "$PG_URL" -c "VACUUM ANALYZE" >/dev/null

echo "== reads: SQLite (one process)" >&2
start sqlite; s_cold=$(rps "$URL" bench/cold.lua "$CONNS"); stop_all
echo "== reads: PostgreSQL (one replica)" >&2
start pg1 DATABASE_URL="$PG_URL"; p_cold=$(rps "$URL" bench/cold.lua "$CONNS"); stop_all
echo "== reads: PostgreSQL (three replicas)" >&2
start3
r_cold=$(rps3 bench/cold.lua "$CONNS" "$R1" "$R2" "$R3"); stop_all

echo "== writes: SQLite" >&2
start sqlite; s_write=$(rps "$URL" bench/write.lua "$WRITERS"); stop_all
BENCH_KEY=$PG_KEY
echo "== writes: PostgreSQL (one replica)" >&2
start pg1 DATABASE_URL="$PG_URL"; p_write=$(rps "$URL" bench/write.lua "$WRITERS"); stop_all
echo "== writes: PostgreSQL (three replicas)" >&2
start3
r_write=$(rps3 bench/write.lua "$WRITERS" "$R1" "$R2" "$R3"); stop_all

python3 - "$s_cold" "$s_write" "$p_cold" "$p_write" "$r_cold" "$r_write" "$DUR" "$CONNS" "$WRITERS" <<'PY'
import sys
s_c, s_w, p_c, p_w, r_c, r_w = map(float, sys.argv[1:7])
dur, conns, writers = sys.argv[7:]
print(f"{'load':<34}{'SQLite':>10}{'PostgreSQL':>12}{'3 replicas':>12}")
print(f"{'cold reads, ' + conns + ' conns (req/s)':<34}{s_c:>10,.0f}{p_c:>12,.0f}{r_c:>12,.0f}")
print(f"{'writes, ' + writers + ' writers (req/s)':<34}{s_w:>10,.0f}{p_w:>12,.0f}{r_w:>12,.0f}")
print()
print(f"PostgreSQL cold reads / SQLite  = {p_c / s_c * 100:6.1f}%   (target >= 50%)")
print(f"PostgreSQL writes / SQLite      = {p_w / s_w * 100:6.1f}%   (target >= 100%)")
print(f"3 replicas / 1, cold reads      = {r_c / p_c * 100:6.1f}%   (target >= 100%)")
print(f"3 replicas / 1, writes          = {r_w / p_w * 100:6.1f}%   (target >= 100%)")
PY
