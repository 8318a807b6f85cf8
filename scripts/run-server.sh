#!/usr/bin/env bash
# Builds (release) and starts kalamdb-server. Extra arguments go to the server, e.g.
# `--config server.toml`. Without a config file the built-in defaults apply: 127.0.0.1:8080,
# data under ./data.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec cargo run --release --locked -p kalamdb-server -- "$@"
