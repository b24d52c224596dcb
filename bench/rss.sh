#!/usr/bin/env bash
# Memory under concurrent distinct reads: start the release aica on the demo
# database, run N clients (default 16) of distinct listings, unknown slugs and
# mixed gzip/br/identity for S seconds (default 20), print peak and final RSS.
# Usage: bash bench/rss.sh [N] [S]   (ENCS=br bash bench/rss.sh to force one encoding)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-16}; S=${2:-20}
cargo build --release --locked -q
BIN=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/release/aica
D=$(mktemp -d "${TMPDIR:-/tmp}/aica-bench-rss.XXXXXX")
trap 'kill $P 2>/dev/null; wait $P 2>/dev/null; rm -rf "$D"' EXIT
"$BIN" --dir "$D" keys create --role admin --name bench >/dev/null 2>&1
"$BIN" --dir "$D" serve --port 0 --console-port 0 --set backup.schedule= >/dev/null 2>&1 &
P=$!
for _ in $(seq 200); do [ -f "$D/run/aica.pid" ] && break; sleep 0.1; done
PORT=$(python3 -c "import json,sys;print(json.load(open(sys.argv[1]))['backend'].split(':')[1])" "$D/run/aica.pid")
python3 bench/rss_load.py "$PORT" "$P" "$N" "$S"
