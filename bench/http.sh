#!/usr/bin/env bash
# HTTP benchmark: aica vs a minimal FastAPI + uvicorn app (1 worker) vs a bare
# axum server, each loaded with wrk for 10 s at 64 connections on /health and
# /api/optimized/articles?limit=20, plus a cold path (every request a different
# page, random skip via bench/cold.lua, so no response cache can answer) for aica
# and FastAPI on the same database. Prints req/s, p99, the ratios, and aica's RSS.
# AICA_BIN selects the aica binary (default: $CARGO_TARGET_DIR or target, /release/aica).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DUR=${DUR:-10s}
CONNS=${CONNS:-64}
THREADS=${THREADS:-2}

command -v wrk >/dev/null || { echo "wrk is missing. Try: apt-get install wrk" >&2; exit 2; }

echo "== building (release)" >&2
cargo build --release --locked -q
AICA_BIN=${AICA_BIN:-${CARGO_TARGET_DIR:-target}/release/aica}
(cd bench/axum-hello && cargo build --release -q)
HELLO_BIN=${CARGO_TARGET_DIR:-bench/axum-hello/target}/release/axum-hello

if ! bench/.venv/bin/python -c "import fastapi, uvloop, httptools" 2>/dev/null; then
  echo "== installing FastAPI + uvicorn into bench/.venv" >&2
  python3 -m venv bench/.venv
  bench/.venv/bin/pip install -q fastapi "uvicorn[standard]"
fi

WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 1 200); do curl -sf -o /dev/null "$1" && return 0; sleep 0.1; done; echo "not answering: $1" >&2; return 1; }

# wrk URL [script] -> "req_per_s p99_ms"
load() {
  local out
  out=$(wrk -t"$THREADS" -c"$CONNS" -d"$DUR" --latency ${2:+-s "$2"} "$1")
  local rps p99
  rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {v=$2; if (v ~ /us$/) {sub(/us$/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v=v*1000}; print v}' <<<"$out")
  local errs
  errs=$(awk '/Non-2xx|Socket errors/' <<<"$out")
  [ -n "$errs" ] && echo "   wrk: $errs ($1)" >&2
  echo "$rps $p99"
}

echo "== starting aica" >&2
AICA_DIR="$WORK/aica" ; mkdir -p "$AICA_DIR"
"$AICA_BIN" --dir "$AICA_DIR" serve --port 0 --console-port 0 >/dev/null 2>&1 &
AICA_PID=$!; PIDS+=("$AICA_PID")
for _ in $(seq 1 300); do [ -f "$AICA_DIR/run/aica.pid" ] && break; sleep 0.1; done
AICA_URL="http://$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["backend"])' "$AICA_DIR/run/aica.pid")"
wait_http "$AICA_URL/health/ready"

echo "== starting FastAPI (uvicorn, 1 worker)" >&2
FP=$(free_port)
cp "$AICA_DIR/data/aica_sys.db" "$WORK/peer.db"
AICA_BENCH_DB="$WORK/peer.db" bench/.venv/bin/uvicorn --app-dir bench fastapi_app:app \
  --host 127.0.0.1 --port "$FP" --workers 1 --log-level warning >/dev/null 2>&1 &
PIDS+=("$!")
FAST_URL="http://127.0.0.1:$FP"
wait_http "$FAST_URL/health"

echo "== starting bare axum" >&2
AP=$(free_port)
"$HELLO_BIN" "$AP" >/dev/null &
PIDS+=("$!")
AXUM_URL="http://127.0.0.1:$AP"
wait_http "$AXUM_URL/health"

ART='/api/optimized/articles?limit=20'
echo "== loading: $DUR each, $CONNS connections, $THREADS wrk threads" >&2
read -r a_h a_h99 < <(load "$AICA_URL/health")
read -r f_h f_h99 < <(load "$FAST_URL/health")
read -r x_h x_h99 < <(load "$AXUM_URL/health")
read -r a_a a_a99 < <(load "$AICA_URL$ART")
read -r f_a f_a99 < <(load "$FAST_URL$ART")
RSS_KB=$(awk '/^VmRSS:/ {print $2}' "/proc/$AICA_PID/status")
export COLD_MAX_SKIP
COLD_MAX_SKIP=$(python3 -c 'import sqlite3,sys; print(max(0, sqlite3.connect(sys.argv[1]).execute("SELECT COUNT(*) FROM articles WHERE status=?", ("published",)).fetchone()[0] - 20))' "$WORK/peer.db")
echo "== cold path: random limit 1..100, random skip 0..$COLD_MAX_SKIP" >&2
read -r a_c a_c99 < <(load "$AICA_URL" bench/cold.lua)
read -r f_c f_c99 < <(load "$FAST_URL" bench/cold.lua)
RSS_COLD_KB=$(awk '/^VmRSS:/ {print $2}' "/proc/$AICA_PID/status")

python3 - "$a_h" "$a_h99" "$f_h" "$f_h99" "$x_h" "$x_h99" "$a_a" "$a_a99" "$f_a" "$f_a99" "$RSS_KB" "$a_c" "$a_c99" "$f_c" "$f_c99" "$RSS_COLD_KB" <<'PY'
import sys
a_h, a_h99, f_h, f_h99, x_h, x_h99, a_a, a_a99, f_a, f_a99, rss, a_c, a_c99, f_c, f_c99, rss_cold = map(float, sys.argv[1:])
print(f"{'endpoint':<28}{'server':<18}{'req/s':>12}{'p99 ms':>10}")
for ep, name, r, p in [("/health", "aica", a_h, a_h99), ("/health", "fastapi+uvicorn", f_h, f_h99),
                       ("/health", "bare axum", x_h, x_h99), ("articles?limit=20", "aica", a_a, a_a99),
                       ("articles?limit=20", "fastapi+uvicorn", f_a, f_a99),
                       ("cold: random skip", "aica", a_c, a_c99), ("cold: random skip", "fastapi+uvicorn", f_c, f_c99)]:
    print(f"{ep:<28}{name:<18}{r:>12,.0f}{p:>10.2f}")
print()
print(f"ratio /health   aica / fastapi   = {a_h / f_h:6.1f}x   (target >= 15x)")
print(f"ratio articles  aica / fastapi   = {a_a / f_a:6.1f}x   (target >= 30x)")
print(f"ratio cold path aica / fastapi   = {a_c / f_c:6.1f}x   (every request a different page)")
print(f"ratio /health   aica / bare axum = {a_h / x_h * 100:6.1f}%   (target >= 70%)")
print(f"aica p99: /health {a_h99:.2f} ms, articles {a_a99:.2f} ms   (target <= 10 ms)")
print(f"aica RSS after the run: {rss / 1024:.1f} MiB   (target <= 64 MiB)")
print(f"aica RSS after the cold path: {rss_cold / 1024:.1f} MiB   (target <= 64 MiB)")
PY
