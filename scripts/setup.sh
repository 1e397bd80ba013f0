#!/usr/bin/env bash
# System packages this project needs on Debian/Ubuntu: the netfilter
# libraries and headers for the addon, the conntrack CLI (the tests' oracle),
# iproute2 and nftables for throwaway namespaces, ping for ICMP traffic,
# tmux for terminal tests, clang for the fuzz and sanitizer builds, zsh and
# fish to check ctmon's completions; and for the arm64 prebuild
# (scripts/prebuild.mjs, run by `npm pack`): the aarch64 cross compiler, the
# arm64 -dev packages and qemu-user to test the result; podman (with runc)
# and mmdebstrap for the container tests (test/meta/containers.test.ts builds
# its Debian 12 image locally, scripts/containers/debian-image.sh).
set -euo pipefail
if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/setup.sh installs system packages: run it as root (sudo bash scripts/setup.sh)" >&2
  exit 77
fi
export DEBIAN_FRONTEND=noninteractive
dpkg --add-architecture arm64
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
  build-essential python3 pkg-config cmake \
  libnetfilter-conntrack-dev libmnl-dev \
  conntrack iproute2 nftables iputils-ping util-linux procps tmux nfdump ulogd2 ulogd2-json \
  clang libclang-rt-14-dev zsh fish man-db prometheus \
  g++-aarch64-linux-gnu libc6:arm64 libstdc++6:arm64 libmnl-dev:arm64 libnetfilter-conntrack-dev:arm64 qemu-user \
  podman runc mmdebstrap >/dev/null
bash "$(dirname "$0")/containers/podman-conf.sh"
echo "system packages installed"
