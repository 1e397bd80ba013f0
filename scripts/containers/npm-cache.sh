#!/usr/bin/env bash
# Fills DIR with an npm cache holding every dependency of the packed
# TARBALL, so `npm install --offline --cache DIR TARBALL` works where no
# registry is reachable (an image build, a container, CI's sample project).
# Fills it by installing the tarball once, here, into a throwaway prefix
# (reusing what DIR already holds).
#
#   scripts/containers/npm-cache.sh TARBALL DIR
set -euo pipefail
if [ $# -ne 2 ]; then echo "usage: npm-cache.sh TARBALL DIR" >&2; exit 64; fi
tarball=$(readlink -f "$1")
mkdir -p "$2"
cache=$(cd "$2" && pwd)
prefix=$(mktemp -d)
trap 'rm -rf "$prefix"' EXIT
npm install --global --prefix "$prefix" --cache "$cache" --prefer-offline --ignore-scripts \
  --no-audit --no-fund --loglevel=error "$tarball" >/dev/null
