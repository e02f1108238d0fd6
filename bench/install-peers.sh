#!/usr/bin/env bash
# Installs the peers the benchmarks compare podswitch with, from the distribution's packages:
# iptables and nftables (kube-proxy's two layouts) and Open vSwitch (run by the harness with
# its own private database and daemons; the package's system service is neither needed nor
# started). Skips what is already there. Debian/Ubuntu (apt); run as root. Exits non-zero if
# something could not be installed (what was installed stays).
set -uo pipefail

if ! command -v apt-get >/dev/null; then
  echo "bench/install-peers.sh: no apt-get; install iptables, nftables and openvswitch-switch yourself" >&2
  exit 1
fi
updated=0
install() {
  if [ "$updated" -eq 0 ]; then
    apt-get update -qq || true
    updated=1
  fi
  echo "bench/install-peers.sh: installing $*" >&2
  # policy-rc.d 101 keeps package scripts from starting services (none are wanted here, and
  # machines without an init system fail on them).
  local policy=/usr/sbin/policy-rc.d created=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && created=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
  local rc=$?
  if [ "$created" -eq 1 ]; then
    rm -f "$policy"
  fi
  return $rc
}

status=0
need=()
command -v iptables-restore >/dev/null || need+=(iptables)
command -v nft >/dev/null || need+=(nftables)
if [ ${#need[@]} -gt 0 ]; then
  install "${need[@]}" || status=1
fi
if ! command -v ovs-vsctl >/dev/null; then
  install openvswitch-switch || status=1
fi
exit $status
