#!/usr/bin/env bash
# Installs what building KalamDB needs on a fresh Debian machine: libclang (RocksDB's bindgen)
# a C++ compiler, and moto (the S3 test server, from PyPI); with --browser also Chromium (the
# headless browser the CORS tests drive). Idempotent: skips whatever is already there.
set -euo pipefail
need=()
if [ "${1:-}" = "--browser" ]; then
  command -v chromium >/dev/null 2>&1 || need+=(chromium)
fi
dpkg -s libclang-dev >/dev/null 2>&1 || need+=(libclang-dev)
command -v g++ >/dev/null 2>&1 || need+=(g++)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v python3 >/dev/null 2>&1 || need+=(python3 python3-pip)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
fi
# The S3 tests run against moto's S3 server (a real HTTP server process on loopback).
if ! python3 -c 'import moto.server, flask' >/dev/null 2>&1; then
  pip_install() { python3 -m pip install --quiet --disable-pip-version-check "$@" 'moto[server]==5.2.1'; }
  # Debian's own python3 refuses global installs (PEP 668) unless told.
  pip_install || pip_install --break-system-packages
fi
