#!/usr/bin/env bash
# Backup benchmark: on a ~1 GiB database of realistic content, time
#   (a) the original way: cp of the database files + tar -czf
#   (b) sqlite3 .backup + zstd -3 -T0
#   (c) aica backup create
# and restore: zstd -d + PRAGMA integrity_check  vs  aica backup restore (verifies).
# Prints times, archive sizes and ratios. BENCH_DB_MB sets the database size.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET_MB=${BENCH_DB_MB:-1024}
for tool in sqlite3 zstd; do
  command -v $tool >/dev/null || { echo "$tool is missing. Try: apt-get install $tool" >&2; exit 2; }
done
echo "== building (release)" >&2
cargo build --release --locked -q
AICA=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/release/aica
WORK=$(mktemp -d "${TMPDIR:-/tmp}/aica-bench-backup.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
D=$WORK/aica
mkdir -p "$D"
"$AICA" --dir "$D" keys create --role admin --name bench >/dev/null 2>&1
DB=$D/data/aica_sys.db

echo "== growing the demo database to ~${TARGET_MB} MB" >&2
gen=0
while [ $(( $(stat -c %s "$DB") / 1048576 )) -lt "$TARGET_MB" ]; do
  gen=$((gen + 1))
  sqlite3 "$DB" "INSERT INTO articles (slug, title, summary, body, author, category, status, published_at, created_at, updated_at)
    SELECT slug || '-g$gen', title, summary, body || ' ' || hex(randomblob(400)), author, category, status, published_at, created_at, updated_at FROM articles;
    INSERT INTO article_tags (article_id, tag) SELECT a2.id, t.tag FROM article_tags t JOIN articles a1 ON a1.id = t.article_id JOIN articles a2 ON a2.slug = a1.slug || '-g$gen';"
done
sqlite3 "$DB" "PRAGMA wal_checkpoint(TRUNCATE);" >/dev/null
SIZE=$(stat -c %s "$DB")
echo "== database: $((SIZE / 1048576)) MiB, $(sqlite3 "$DB" 'SELECT COUNT(*) FROM articles') articles" >&2

t() { local s e; s=$(date +%s.%N); "$@" >/dev/null 2>&1; e=$(date +%s.%N); awk "BEGIN{print $e - $s}"; }
sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true

mkdir -p "$WORK/a" "$WORK/b"
A_TIME=$(t bash -c "cp '$DB' '$WORK/a/db' && { cp '$DB-wal' '$WORK/a/db-wal' 2>/dev/null || true; } && tar -czf '$WORK/a/backup.tar.gz' -C '$WORK/a' db")
A_SIZE=$(stat -c %s "$WORK/a/backup.tar.gz")
B1=$(t sqlite3 "$DB" ".backup '$WORK/b/db'")
B2=$(t zstd -q -3 -T0 "$WORK/b/db" -o "$WORK/b/db.zst")
B_SIZE=$(stat -c %s "$WORK/b/db.zst")
C_TIME=$(t "$AICA" --dir "$D" backup create)
C_NAME=$("$AICA" --dir "$D" backup list --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["name"])')
C_SIZE=$(stat -c %s "$D/backups/$C_NAME")

mkdir -p "$WORK/rb"
RB1=$(t zstd -q -d "$WORK/b/db.zst" -o "$WORK/rb/db")
RB2=$(t sqlite3 "$WORK/rb/db" "PRAGMA integrity_check;")
RC=$(t "$AICA" --dir "$D" backup restore "$C_NAME" --yes --target "$WORK/rc/aica_sys.db")
[ -f "$WORK/rc/aica_sys.db" ] || { echo "aica restore produced no database" >&2; exit 1; }

python3 - "$SIZE" "$A_TIME" "$A_SIZE" "$B1" "$B2" "$B_SIZE" "$C_TIME" "$C_SIZE" "$RB1" "$RB2" "$RC" <<'PY'
import sys
size, a, a_size, b1, b2, b_size, c, c_size, rb1, rb2, rc = map(float, sys.argv[1:])
mb = lambda x: f"{x / 1048576:,.0f} MiB"
b = b1 + b2
rb = rb1 + rb2
print(f"database {mb(size)}")
print(f"{'create':<44}{'seconds':>9}{'archive':>12}")
print(f"{'(a) cp + tar -czf (the original)':<44}{a:>9.2f}{mb(a_size):>12}")
print(f"{'(b) sqlite3 .backup + zstd -3 -T0':<44}{b:>9.2f}{mb(b_size):>12}   (.backup {b1:.2f} s, zstd {b2:.2f} s)")
print(f"{'(c) aica backup create':<44}{c:>9.2f}{mb(c_size):>12}")
print(f"{'restore':<44}{'seconds':>9}")
print(f"{'(b) zstd -d + PRAGMA integrity_check':<44}{rb:>9.2f}   (zstd -d {rb1:.2f} s, integrity_check {rb2:.2f} s)")
print(f"{'(c) aica backup restore (verifies)':<44}{rc:>9.2f}")
print()
print(f"create:  aica / (b) = {c / b:.2f}x time (target <= 0.7), (a) / aica = {a / c:.1f}x faster (target >= 10)")
print(f"archive: aica / (b) = {c_size / b_size:.3f}x size (target <= 1.0)")
print(f"restore: aica / (b) = {rc / rb:.2f}x time (target <= 1.1)")
PY
