#!/usr/bin/env bash
# podswitch's test command: sets up what the tests need on a fresh machine, then runs the
# whole suite (format and lint checks, unit and property tests, behaviour tests with real
# namespaces and real packets). Run as root: the tests create network namespaces and TAP
# devices, and only ever inside namespaces they created themselves.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "tests/run.sh: run as root (the tests create network namespaces and TAP devices)" >&2
  exit 1
fi
if [ -f "$HOME/.cargo/env" ]; then
  # shellcheck disable=SC1091
  . "$HOME/.cargo/env"
fi
if ! command -v cargo >/dev/null; then
  echo "tests/run.sh: cargo not found; install Rust (https://rustup.rs) first" >&2
  exit 1
fi
# TAP devices need the tun driver and its device node.
if [ ! -e /dev/net/tun ]; then
  modprobe tun 2>/dev/null || true
  if [ ! -e /dev/net/tun ]; then
    mkdir -p /dev/net && mknod /dev/net/tun c 10 200 && chmod 0666 /dev/net/tun
  fi
fi
# Crates with C parts need a C compiler.
if ! command -v cc >/dev/null; then
  apt-get update && apt-get install -y --no-install-recommends build-essential
fi

# The benchmark harness's own tests build the kernel's and Open vSwitch's topologies too.
if ! bash bench/install-peers.sh; then
  echo "tests/run.sh: peers not installed; their tests will say skipped" >&2
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked -- --test-threads=4
