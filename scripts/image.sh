#!/usr/bin/env bash
# Builds the ctmon exporter image (Dockerfile) from this working tree, with
# docker or podman, whichever is installed (CONTAINER_ENGINE picks one).
# The build context is a temporary directory holding the Dockerfile, the
# packed checkout (npm pack, or CONNTRACK_TARBALL if given) and an offline
# npm cache of its dependencies, filled here: the build itself reaches no npm
# registry. BASE_IMAGE replaces the Dockerfile's base (CI builds a stand-in,
# scripts/containers/debian-image.sh, as no image registry is reachable there).
#
#   scripts/image.sh TAG
set -euo pipefail
if [ $# -ne 1 ]; then echo "usage: scripts/image.sh TAG" >&2; exit 64; fi
TAG=$1
root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/scripts/containers/engine.sh"
pick_engine

ctx=$(mktemp -d /var/tmp/conntrack-image.XXXXXX)
trap 'rm -rf "$ctx"' EXIT
cp "$root/Dockerfile" "$ctx/"
if [ -n "${CONNTRACK_TARBALL:-}" ]; then
  cp "$CONNTRACK_TARBALL" "$ctx/conntrack.tgz"
else
  (cd "$root" && npm pack --silent --pack-destination "$ctx" >/dev/null)
  mv "$ctx"/conntrack-*.tgz "$ctx/conntrack.tgz"
fi
bash "$root/scripts/containers/npm-cache.sh" "$ctx/conntrack.tgz" "$ctx/npm-cache"
tar cf "$ctx/npm-cache.tar" -C "$ctx" npm-cache
rm -rf "$ctx/npm-cache"

build_args=()
if [ -n "${BASE_IMAGE:-}" ]; then build_args+=(--build-arg "BASE_IMAGE=$BASE_IMAGE"); fi
# BUILD_NETWORK=none where the base image has the libraries already (CI's
# stand-in): the build then needs no network, and podman sets up none (its
# default network leaves nat and filter tables in the host's namespace).
if [ -n "${BUILD_NETWORK:-}" ]; then build_args+=(--network "$BUILD_NETWORK"); fi
$ENGINE build --tag "$TAG" "${build_args[@]}" "$ctx"
