# Sourced by the bench scripts: reads `<tag> [server-binary] [bench-binary] [workload …]`
# into $tag, $server, $bench (the release builds in the shared target dir by default) and the
# array $workloads, and sets the bench password. Usage text from $usage.
tag=${1:?usage: $usage}
target=$(cargo metadata --format-version 1 --no-deps 2>/dev/null \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
server=${2:-$target/release/kalamdb-server}
bench=${3:-$target/release/kalamdb-bench}
shift $(( $# < 3 ? $# : 3 ))
workloads=("$@")
export KALAMDB_BENCH_PASSWORD=bench-pass-123
