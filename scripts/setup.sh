#!/usr/bin/env bash
# System packages this project needs on Debian/Ubuntu: the netfilter
# libraries and headers for the addon, the conntrack CLI (the tests' oracle),
# iproute2 and nftables for throwaway namespaces, ping for ICMP traffic,
# tmux for terminal tests, clang for the fuzz and sanitizer builds.
set -euo pipefail
if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/setup.sh installs system packages: run it as root (sudo bash scripts/setup.sh)" >&2
  exit 77
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
  build-essential python3 pkg-config cmake \
  libnetfilter-conntrack-dev libmnl-dev \
  conntrack iproute2 nftables iputils-ping util-linux procps tmux \
  clang libclang-rt-14-dev >/dev/null
echo "system packages installed"
