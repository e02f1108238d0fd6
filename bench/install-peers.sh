#!/usr/bin/env bash
# Installs the peers the benchmarks compare podswitch with, from the distribution's packages:
# iptables and nftables (kube-proxy's two layouts) and Open vSwitch (run by the harness with
# its own private database and daemons; the package's system service is not used). Skips what
# is already there. Debian/Ubuntu (apt); run as root.
set -euo pipefail

need=()
command -v iptables-restore >/dev/null || need+=(iptables)
command -v nft >/dev/null || need+=(nftables)
command -v ovs-vsctl >/dev/null || need+=(openvswitch-switch)
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "bench/install-peers.sh: install ${need[*]} with your package manager" >&2
  exit 1
fi
echo "bench/install-peers.sh: installing ${need[*]}" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# The package may start the system's OVS where an init system exists; the harness never talks
# to it (its daemons use a private directory), so it is left alone.
