#!/usr/bin/env bash
# Runs write workloads of docs/benchmarks.md ("A cluster") against a fresh three-member
# loopback cluster (scripts/cluster.sh) per workload, sent to the leader of the SHARED group,
# with the CPU of all three processes counted; JSON to docs/bench/<tag>-<workload>.json.
#
#   scripts/bench-cluster.sh <tag> [server-binary] [bench-binary] [workload …]
#
# Workloads: insert-single-c10 (default), insert-batch-c1, flush-100k (5 rounds of 100,000
# rows flushed, on a filesystem storage at an absolute path all members share), and
# point-select-follower[-linearizable] (20,000 rows; reads by key on a member that does not
# lead the group, from its applied state or linearizable), topic-latency (INSERT on the
# leader to the message in a long-polling consumer's hands) and topic-source-insert-c10
# (insert-single c10 into a table feeding a topic). Binaries default to the release
# build in the shared target dir; an A/B runs this once per server with the same bench.
set -euo pipefail
cd "$(dirname "$0")/.."
usage="scripts/bench-cluster.sh <tag> [server] [bench] [workload …]"
source scripts/bench-args.sh
[ ${#workloads[@]} -gt 0 ] || workloads=(insert-single-c10)
dir=$(mktemp -d)
trap 'scripts/cluster.sh down "$dir" >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
for w in "${workloads[@]}"; do
  scripts/cluster.sh down "$dir" >/dev/null 2>&1 || true
  rm -rf "${dir:?}"/node-*
  out=$(KALAMDB_SERVER_BIN=$server KALAMDB_ROOT_PASSWORD=$KALAMDB_BENCH_PASSWORD \
    KALAMDB_LOG_LEVEL=warn scripts/cluster.sh up 3 18080 "$dir")
  # The SHARED group is the last one: meta (0), 8 user shards, then the shared shard.
  token=$(curl -sf -X POST http://127.0.0.1:18080/v1/api/auth/login \
    -H 'content-type: application/json' \
    -d "{\"user\":\"root\",\"password\":\"$KALAMDB_BENCH_PASSWORD\"}" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
  leader=$(curl -sf -X POST http://127.0.0.1:18080/v1/api/sql -H "authorization: Bearer $token" \
    -H 'content-type: application/json' \
    -d '{"sql":"SELECT current_leader FROM system.cluster_groups WHERE group_id = '"'9'"'"}' \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["results"][0]["rows"][0][0])')
  follower=$(awk -v id="$leader" '$2 != id { print $3; exit }' <<<"$out")
  url=$(awk -v id="$leader" '$2 == id { print $3 }' <<<"$out")
  pid=$(awk -v id="$leader" '$2 == id { print $5 }' <<<"$out")
  others=$(awk -v id="$leader" '$2 != id { print $5 }' <<<"$out" | paste -sd, -)
  echo "$w: the SHARED group's leader is node $leader ($url)" >&2
  args=(--duration 8 --server-pid "$pid" --also-pids "$others" --json "docs/bench/$tag-$w.json")
  case $w in
    insert-single-c10) "$bench" --workload insert-single --concurrency 10 --url "$url" "${args[@]}" ;;
    insert-batch-c1) "$bench" --workload insert-batch --concurrency 1 --batch 1000 --url "$url" "${args[@]}" ;;
    flush-100k)
      curl -sf -X POST "$url/v1/api/sql" -H "authorization: Bearer $token" \
        -H 'content-type: application/json' \
        -d "{\"sql\":\"CREATE STORAGE shared TYPE 'filesystem' PATH '$dir/cold'\"}" >/dev/null
      "$bench" --workload flush --rows 100000 --batch 5 --storage shared --url "$url" "${args[@]}" ;;
    topic-latency) "$bench" --workload topic-latency --url "$url" "${args[@]}" ;;
    topic-source-insert-c10)
      "$bench" --workload topic-source-insert --concurrency 10 --url "$url" "${args[@]}" ;;
    point-select-follower)
      "$bench" --workload point-select --concurrency 1 --rows 20000 --url "$follower" "${args[@]}" ;;
    point-select-follower-linearizable)
      "$bench" --workload point-select --concurrency 1 --rows 20000 --consistency linearizable \
        --url "$follower" "${args[@]}" ;;
    *) echo "unknown workload $w" >&2 ;;
  esac || echo "workload $w failed" >&2
done
