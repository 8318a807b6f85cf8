#!/usr/bin/env bash
# Measures `kalam --import` of 1,000,000 rows (about 100 bytes each, the insert benches' row)
# from CSV and from Parquet into a fresh release server, and writes the CLI's summaries to
# docs/bench/<tag>-import.txt.
#
#   scripts/bench-import.sh <tag> [server-binary] [kalam-binary]
set -euo pipefail
cd "$(dirname "$0")/.."
tag=${1:?usage: scripts/bench-import.sh <tag> [server] [kalam]}
target=$(cargo metadata --format-version 1 --no-deps 2>/dev/null \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
server=${2:-$target/release/kalamdb-server}
kalam=${3:-$target/release/kalam}
work=$(mktemp -d)
trap 'kill -9 $pid 2>/dev/null || true; rm -rf "$work"' EXIT
KALAMDB_DATA_DIR=$work/data KALAMDB_ROOT_PASSWORD=bench-pass-123 KALAMDB_LOG_LEVEL=warn \
  KALAMDB_SERVER_PORT=18081 "$server" --config "$work/absent.toml" >/dev/null 2>&1 &
pid=$!
for _ in $(seq 1 100); do
  curl -sf http://127.0.0.1:18081/health >/dev/null 2>&1 && break
  sleep 0.1
done
python3 - "$work/rows.csv" <<'PY'
import sys
with open(sys.argv[1], "w") as f:
    f.write("id,name,score,payload\n")
    for i in range(1_000_000):
        f.write(f"{i},user-{i:08},{i % 1000}.5,payload for row {i:012} of the kalamdb bench ..........\n")
PY
k() { KALAM_HOME=$work/home "$kalam" -u http://127.0.0.1:18081 --user root --password bench-pass-123 "$@"; }
cols="(id BIGINT PRIMARY KEY, name TEXT, score DOUBLE, payload TEXT)"
k -c "CREATE NAMESPACE bench; CREATE SHARED TABLE bench.from_csv $cols; CREATE SHARED TABLE bench.from_parquet $cols" >/dev/null
out=docs/bench/$tag-import.txt
{
  echo "# $(git rev-parse --short HEAD) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) CPUs"
  echo "# scripts/bench-import.sh $tag"
  k --import bench.from_csv "$work/rows.csv" 2>/dev/null
  k -c "\\export \"SELECT id, name, score, payload FROM bench.from_csv\" $work/rows.parquet" >/dev/null
  k --import bench.from_parquet "$work/rows.parquet" 2>/dev/null
  k --csv -c "SELECT count(*) AS parquet_rows FROM bench.from_parquet"
} | tee "$out"
