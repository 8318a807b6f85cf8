#!/usr/bin/env bash
# Times /metrics scrapes of the release server: idle, then while insert-single c10 runs.
# Usage: scripts/scrape-timing.sh <server-binary> <bench-binary>
data=$(mktemp -d)
KALAMDB_DATA_DIR=$data KALAMDB_ROOT_PASSWORD=bench-pass-123 KALAMDB_LOG_LEVEL=warn KALAMDB_SERVER_PORT=18080 \
  "${1:?server binary}" --config $data/absent.toml >/dev/null 2>&1 &
pid=$!
for _ in $(seq 1 100); do curl -sf http://127.0.0.1:18080/health >/dev/null 2>&1 && break; sleep 0.1; done
export KALAMDB_BENCH_PASSWORD=bench-pass-123
"${2:?bench binary}" --url http://127.0.0.1:18080 --workload insert-batch --batch 1000 --duration 3 >/dev/null 2>&1
t() { for i in $(seq 1 200); do curl -s -o /dev/null -w '%{time_total}\n' http://127.0.0.1:18080/metrics; done | sort -n | awk '{a[NR]=$1} END {printf "p50 %.2f ms p99 %.2f ms max %.2f ms\n", a[int(NR*0.5)]*1000, a[int(NR*0.99)]*1000, a[NR]*1000}'; }
echo "idle: $(t)"
"${2:?bench binary}" --url http://127.0.0.1:18080 --workload insert-single --concurrency 10 --duration 12 >/dev/null 2>&1 &
b=$!
sleep 3
echo "under insert-single c10: $(t)"
wait $b
curl -s http://127.0.0.1:18080/metrics | wc -c
kill -9 $pid; rm -rf $data
