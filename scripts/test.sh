#!/usr/bin/env bash
# Runs the whole test suite: unit tests, end-to-end tests against a real server, sqllogictest
# files. Installs what is missing first.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --browser
# No module cycles inside any crate (see docs/architecture.md).
python3 scripts/module-graph.py
if ! cargo nextest --version >/dev/null 2>&1; then
  cargo install cargo-nextest --locked
fi
cargo nextest run --workspace --locked "$@"
