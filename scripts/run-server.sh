#!/usr/bin/env bash
# Builds (release) the server and the `kalam` CLI, then starts kalamdb-server. Extra arguments
# go to the server, e.g. `--config server.toml`. Without a config file the built-in defaults
# apply: 127.0.0.1:8080, data under ./data.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# The whole workspace's binaries: the same features as the test build, so nothing is built twice.
cargo build --release --locked --workspace --bins
target=$(cargo metadata --format-version 1 --no-deps \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
echo "kalam (the CLI) is at $target/release/kalam" >&2
exec "$target/release/kalamdb-server" "$@"
