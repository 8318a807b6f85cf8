#!/usr/bin/env bash
# Runs the core workloads of docs/benchmarks.md, each against a fresh release server, and
# writes their JSON to docs/bench/<tag>-<workload>.json.
#
#   scripts/bench-core.sh <tag> [server-binary] [bench-binary] [workload …]
#
# Binaries default to the release build in the shared target dir. An A/B of two commits runs
# this once per commit's server with the same bench binary (the bench speaks only the wire
# protocol), e.g. `scripts/bench-core.sh base /tmp/kalamdb-server-base`.
set -euo pipefail
cd "$(dirname "$0")/.."
usage="scripts/bench-core.sh <tag> [server] [bench] [workload …]"
source scripts/bench-args.sh
if [ ${#workloads[@]} -eq 0 ]; then
  workloads=(insert-single-c1 insert-single-c10 insert-batch-c1 point-select-c1 live-latency
             live-fanout-10k health-under-load point-select-under-load)
fi
for w in "${workloads[@]}"; do
  data=$(mktemp -d)
  KALAMDB_DATA_DIR=$data KALAMDB_ROOT_PASSWORD=$KALAMDB_BENCH_PASSWORD KALAMDB_LOG_LEVEL=warn \
    KALAMDB_SERVER_PORT=18080 KALAMDB_WEBSOCKET_MAX_MESSAGES_PER_SEC=100000 \
    "$server" --config "$data/absent.toml" >/dev/null 2>&1 &
  pid=$!
  for _ in $(seq 1 100); do
    curl -sf http://127.0.0.1:18080/health >/dev/null 2>&1 && break
    sleep 0.1
  done
  args=(--url http://127.0.0.1:18080 --duration 8 --server-pid "$pid" --json "docs/bench/$tag-$w.json")
  case $w in
    insert-single-c1) "$bench" --workload insert-single --concurrency 1 "${args[@]}" ;;
    insert-single-c10) "$bench" --workload insert-single --concurrency 10 "${args[@]}" ;;
    insert-batch-c1) "$bench" --workload insert-batch --concurrency 1 --batch 1000 "${args[@]}" ;;
    point-select-c1) "$bench" --workload point-select --concurrency 1 --rows 100000 "${args[@]}" ;;
    point-select-20k-c1) "$bench" --workload point-select --concurrency 1 --rows 20000 "${args[@]}" ;;
    flush-100k) "$bench" --workload flush --rows 100000 --batch 5 "${args[@]}" ;;
    live-latency) "$bench" --workload live-latency "${args[@]}" ;;
    live-fanout-10k) "$bench" --workload live-fanout --sockets 100 --subs-per-socket 100 "${args[@]}" ;;
    # The same with a WHERE on a column, and with one on a JSON path (both hold for every row).
    live-fanout-10k-where) "$bench" --workload live-fanout --sockets 100 --subs-per-socket 100 \
      --live-where "score >= 0" "${args[@]}" ;;
    live-fanout-10k-json) "$bench" --workload live-fanout --sockets 100 --subs-per-socket 100 \
      --live-where "doc->>'kind' = 'k'" "${args[@]}" ;;
    health-under-load) "$bench" --workload health-under-load --heavy 2 "${args[@]}" ;;
    point-select-under-load) "$bench" --workload point-select-under-load --heavy 2 "${args[@]}" ;;
    tx-insert-c10) "$bench" --workload tx-insert --concurrency 10 "${args[@]}" ;;
    tx-transfer-c10) "$bench" --workload tx-transfer --concurrency 10 --rows 100 "${args[@]}" ;;
    topic-latency) "$bench" --workload topic-latency "${args[@]}" ;;
    topic-publish) "$bench" --workload topic-publish --concurrency 2 --batch 1000 "${args[@]}" ;;
    topic-consume) "$bench" --workload topic-consume --rows 200000 --batch 1000 "${args[@]}" ;;
    topic-consume-flushed) "$bench" --workload topic-consume-flushed --rows 200000 --batch 1000 "${args[@]}" ;;
    topic-source-insert-c10) "$bench" --workload topic-source-insert --concurrency 10 "${args[@]}" ;;
    *) echo "unknown workload $w" >&2 ;;
  esac || echo "workload $w failed" >&2
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rm -rf "$data"
done
