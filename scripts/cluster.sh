#!/usr/bin/env bash
# A KalamDB cluster on loopback, from the built release binary (docs/cluster.md).
#
#   scripts/cluster.sh up N BASE_PORT DATA_DIR   start N nodes; node i serves HTTP on
#                                                BASE_PORT+i-1 and Raft RPC on BASE_PORT+100+i-1
#   scripts/cluster.sh down DATA_DIR             stop them
#   scripts/cluster.sh start DATA_DIR I          start node I again (after a stop or a crash)
#   scripts/cluster.sh add DATA_DIR              start one more node (the next id, the next
#                                                ports) and add it: CLUSTER ADD NODE
#   scripts/cluster.sh remove DATA_DIR I         CLUSTER REMOVE NODE I (through another node),
#                                                then stop node I
#
# The root password comes from KALAMDB_ROOT_PASSWORD (default "kalamdb-root"; quotes and
# backslashes are not allowed in it), the shared token secret from KALAMDB_JWT_SECRET. `up` waits until
# every node is ready (GET /health/ready) and prints one line per node (`add`: the new one):
#   node <id> http://127.0.0.1:<port> pid <pid>
# KALAMDB_SERVER_BIN overrides the binary (tests use the debug one); each node's log is
# DATA_DIR/node-<i>/server.log. With KALAMDB_CLUSTER_TLS_DIR set, the nodes' RPC runs over mTLS
# with that folder's ca.pem, node.pem and node.key (one certificate for 127.0.0.1 serves every
# node on loopback; docs/cluster.md §2 shows how to make them).
set -euo pipefail

usage() {
  echo "usage: $0 up N BASE_PORT DATA_DIR | down DATA_DIR | start DATA_DIR I |" \
    "add DATA_DIR | remove DATA_DIR I" >&2
  exit 2
}

binary() {
  if [[ -n "${KALAMDB_SERVER_BIN:-}" ]]; then
    echo "$KALAMDB_SERVER_BIN"
    return
  fi
  local root target
  root="$(cd "$(dirname "$0")/.." && pwd)"
  target=$(cd "$root" && cargo metadata --format-version 1 --no-deps \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
  if [[ ! -x "$target/release/kalamdb-server" ]]; then
    echo "no release build at $target/release/kalamdb-server: run" \
      "cargo build --release --locked --workspace --bins" >&2
    exit 1
  fi
  echo "$target/release/kalamdb-server"
}

up() {
  local n=$1 base=$2 dir=$3
  if [[ "${KALAMDB_ROOT_PASSWORD:-}${KALAMDB_JWT_SECRET:-}" == *[\"\\]* ]]; then
    echo "KALAMDB_ROOT_PASSWORD and KALAMDB_JWT_SECRET may not hold quotes or backslashes" >&2
    exit 2
  fi
  [[ "$n" =~ ^[0-9]+$ && "$n" -ge 1 && "$base" =~ ^[0-9]+$ ]] || usage
  local bin
  bin=$(binary)
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  local peers=""
  for i in $(seq 1 "$n"); do
    peers+=$'\n[[cluster.peers]]\n'"node_id = $i"$'\n'
    peers+="rpc_addr = \"127.0.0.1:$((base + 100 + i - 1))\""$'\n'
    peers+="api_addr = \"http://127.0.0.1:$((base + i - 1))\""$'\n'
  done
  for i in $(seq 1 "$n"); do
    write_config "$dir/node-$i" "$i" "$base" "$peers" false
    launch "$bin" "$dir/node-$i"
  done
  for i in $(seq 1 "$n"); do
    wait_ready "$dir/node-$i"
  done
  for i in $(seq 1 "$n"); do
    echo "node $i $(node_url "$dir/node-$i") pid $(cat "$dir/node-$i/pid")"
  done
}

# Writes the configuration of node $2 in folder $1: ports from base $3, peers $4 (TOML),
# joining a running cluster when $5 is true.
write_config() {
  local node=$1 i=$2 base=$3 peers=$4 join=$5
  mkdir -p "$node"
  cat >"$node/server.toml" <<EOF
[server]
host = "127.0.0.1"
port = $((base + i - 1))

[storage]
data_path = "$node/data"

[auth]
jwt_secret = "${KALAMDB_JWT_SECRET:-loopback-cluster-secret-0123456789abcdef}"
root_password = "${KALAMDB_ROOT_PASSWORD:-kalamdb-root}"
bcrypt_cost = ${KALAMDB_AUTH_BCRYPT_COST:-12}

[logging]
level = "${KALAMDB_LOG_LEVEL:-info}"

[stream]
eviction_interval_secs = ${KALAMDB_STREAM_EVICTION_SECS:-60}

[cluster]
node_id = $i
rpc_addr = "127.0.0.1:$((base + 100 + i - 1))"
api_addr = "http://127.0.0.1:$((base + i - 1))"
heartbeat_interval_ms = ${KALAMDB_CLUSTER_HEARTBEAT_MS:-100}
election_timeout_ms = [${KALAMDB_CLUSTER_ELECTION_MIN_MS:-600}, ${KALAMDB_CLUSTER_ELECTION_MAX_MS:-1200}]
user_shards = ${KALAMDB_CLUSTER_USER_SHARDS:-8}
$peers
EOF
  if [[ -n "${KALAMDB_CLUSTER_TLS_DIR:-}" ]]; then
    local tls
    tls=$(cd "$KALAMDB_CLUSTER_TLS_DIR" && pwd)
    printf '\n[cluster.tls]\nca = "%s/ca.pem"\ncert = "%s/node.pem"\nkey = "%s/node.key"\n' \
      "$tls" "$tls" "$tls" >>"$node/server.toml"
  fi
  if [[ "$join" == true ]]; then
    # Before the peers table: a key after [[cluster.peers]] would belong to the peer.
    sed -i 's/^user_shards = .*/&\njoin = true/' "$node/server.toml"
  fi
}

# Runs statement $2 as root on the node in folder $1; fails with the server's answer.
sql() {
  local url token answer
  url=$(node_url "$1")
  local login
  login=$(python3 -c 'import json,sys; print(json.dumps({"user": "root", "password": sys.argv[1]}))' \
    "${KALAMDB_ROOT_PASSWORD:-kalamdb-root}")
  token=$(curl -sf -X POST "$url/v1/api/auth/login" -H 'content-type: application/json' \
    -d "$login" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])') || {
    echo "cannot log in as root on $url" >&2
    return 1
  }
  answer=$(curl -s -X POST "$url/v1/api/sql" -H "authorization: Bearer $token" \
    -H 'content-type: application/json' \
    -d "$(python3 -c 'import json,sys; print(json.dumps({"sql": sys.argv[1]}))' "$2")")
  if [[ "$answer" != *'"status":"success"'* ]]; then
    echo "$2: $answer" >&2
    return 1
  fi
}

# The folder of a running node of cluster $1 other than node $2.
other_node() {
  local dir=$1 skip=$2 node
  for node in "$dir"/node-*; do
    [[ "$node" == "$dir/node-$skip" || ! -f "$node/pid" ]] && continue
    if alive "$(cat "$node/pid")"; then
      echo "$node"
      return
    fi
  done
  echo "no running node in $dir" >&2
  return 1
}

add() {
  local dir=$1 last=0 node id
  [[ -f "$dir/node-1/server.toml" ]] || { echo "no cluster in $dir" >&2; exit 1; }
  dir=$(cd "$dir" && pwd)
  for node in "$dir"/node-*; do
    id=${node##*-}
    [[ "$id" =~ ^[0-9]+$ && "$id" -gt "$last" ]] && last=$id
  done
  local i=$((last + 1)) base via
  base=$(sed -n 's/^port = //p' "$dir/node-1/server.toml" | head -n 1)
  via=$(other_node "$dir" "$i")
  local rpc="127.0.0.1:$((base + 100 + i - 1))" api="http://127.0.0.1:$((base + i - 1))"
  local peers=$'\n[[cluster.peers]]\n'"node_id = $i"$'\n'"rpc_addr = \"$rpc\""$'\n'
  peers+="api_addr = \"$api\""$'\n'
  write_config "$dir/node-$i" "$i" "$base" "$peers" true
  launch "$(binary)" "$dir/node-$i"
  if ! sql "$via" "CLUSTER ADD NODE $i RPC '$rpc' API '$api'"; then
    stop_node "$dir/node-$i"
    exit 1
  fi
  wait_ready "$dir/node-$i"
  echo "node $i $(node_url "$dir/node-$i") pid $(cat "$dir/node-$i/pid")"
}

remove() {
  local dir=$1 i=$2 node="$1/node-$2"
  [[ -f "$node/server.toml" ]] || { echo "no node $i in $dir" >&2; exit 1; }
  local via
  via=$(other_node "$dir" "$i")
  sql "$via" "CLUSTER REMOVE NODE $i"
  stop_node "$node"
}

# Stops the node in folder $1 (SIGTERM, then SIGKILL after 15 s).
stop_node() {
  local pidfile="$1/pid" pid
  [[ -f "$pidfile" ]] || return 0
  pid=$(cat "$pidfile")
  rm -f "$pidfile"
  kill "$pid" 2>/dev/null && reap "$pid"
  return 0
}

# Waits up to 15 s for process $1 (sent SIGTERM) to end, then kills it.
reap() {
  for _ in $(seq 1 150); do
    kill -0 "$1" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -9 "$1" 2>/dev/null || true
}

# Whether process $1 runs (a killed process its parent has not reaped yet does not). A killed
# process's main thread can be a zombie while its other threads still exit and hold its files
# (the store's lock): it runs until only the zombie is left.
alive() {
  local state threads
  read -r state threads < <(ps -o stat=,nlwp= -p "$1" 2>/dev/null) || return 1
  [[ -n "$state" ]] || return 1
  [[ "$state" != Z* || "${threads:-1}" -gt 1 ]]
}

# Starts the node whose folder is $2 with binary $1, in the background.
launch() {
  local bin=$1 node=$2
  # The config file is the whole truth: no inherited KALAMDB_* variable overrides it.
  env -i PATH="$PATH" HOME="${HOME:-/tmp}" \
    nohup "$bin" --config "$node/server.toml" >>"$node/server.log" 2>&1 &
  echo $! >"$node/pid"
}

node_url() {
  echo "http://127.0.0.1:$(sed -n 's/^port = //p' "$1/server.toml" | head -n 1)"
}

# Waits until the node in folder $1 answers ready.
wait_ready() {
  local node=$1 waited=0 url
  url=$(node_url "$node")
  until curl -sf "$url/health/ready" >/dev/null 2>&1; do
    if ! alive "$(cat "$node/pid")"; then
      echo "$node exited; its log:" >&2
      tail -n 30 "$node/server.log" >&2
      exit 1
    fi
    waited=$((waited + 1))
    if [[ $waited -gt 1200 ]]; then
      echo "$node not ready after 120 s; see $node/server.log" >&2
      exit 1
    fi
    sleep 0.1
  done
}

start() {
  local dir=$1 i=$2 node="$1/node-$2"
  [[ -f "$node/server.toml" ]] || { echo "no node $i in $dir" >&2; exit 1; }
  # A node just killed may take a moment to go.
  local waited=0
  while [[ -f "$node/pid" ]] && alive "$(cat "$node/pid")"; do
    if [[ $waited -ge 50 ]]; then
      echo "node $i is running (pid $(cat "$node/pid"))" >&2
      exit 1
    fi
    waited=$((waited + 1))
    sleep 0.1
  done
  launch "$(binary)" "$node"
  wait_ready "$node"
  echo "node $i $(node_url "$node") pid $(cat "$node/pid")"
}

down() {
  local dir=$1
  local pids=()
  for pidfile in "$dir"/node-*/pid; do
    [[ -f "$pidfile" ]] || continue
    local pid
    pid=$(cat "$pidfile")
    if kill "$pid" 2>/dev/null; then
      pids+=("$pid")
    fi
    rm -f "$pidfile"
  done
  for pid in ${pids[@]+"${pids[@]}"}; do
    reap "$pid"
  done
}

case "${1:-}" in
  up) [[ $# -eq 4 ]] || usage; up "$2" "$3" "$4" ;;
  down) [[ $# -eq 2 ]] || usage; down "$2" ;;
  start) [[ $# -eq 3 ]] || usage; start "$2" "$3" ;;
  add) [[ $# -eq 2 ]] || usage; add "$2" ;;
  remove) [[ $# -eq 3 ]] || usage; remove "$2" "$3" ;;
  *) usage ;;
esac
