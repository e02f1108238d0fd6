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

# The CNI plugin's tests run it next to the stock reference plugins (host-local, tuning,
# bridge), as a container runtime would.
if [ ! -x /usr/lib/cni/host-local ] && command -v apt-get >/dev/null; then
  if ! apt-cache show containernetworking-plugins >/dev/null 2>&1; then
    apt-get update -qq || true
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    containernetworking-plugins >/dev/null ||
    echo "tests/run.sh: containernetworking-plugins not installed; the CNI tests will say skipped" >&2
fi
# The benchmark harness's own tests build the kernel's and Open vSwitch's topologies too.
if ! bash bench/install-peers.sh; then
  echo "tests/run.sh: some peers not installed; their tests will say skipped" >&2
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked -- --test-threads=4
