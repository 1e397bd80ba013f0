#!/usr/bin/env bash
# Builds the local Debian 12 image the container tests run in and the
# exporter image stands on (no image registry is reachable from CI):
# mmdebstrap from the Debian mirrors apt already uses, this machine's `node`
# and npm copied in where the official node images keep them (/usr/local),
# and what the tests call inside: conntrack, iproute2, nftables, ping, mount and the
# addon's two libraries.
#
#   scripts/containers/debian-image.sh [TAG]    (default localhost/conntrack-debian:12)
#
# Built once: the image carries a label with a key over everything that goes
# into it (mmdebstrap's arguments, the mirror lines, node's binary, npm's
# version), and a later call with the same key does nothing; a rebuild
# removes the image it replaces. Prints the tag.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/engine.sh"
pick_engine
TAG=${1:-localhost/conntrack-debian:12}
PACKAGES=ca-certificates,procps,mount,iproute2,nftables,conntrack,iputils-ping,libmnl0,libnetfilter-conntrack3,libstdc++6
LABEL=org.conntrack.image-key

# The bookworm mirrors apt uses here, as sources.list lines for the image.
mirrors=$(apt-get indextargets --format '$(ORIGIN)|$(TARGET_OF) $(REPO_URI) $(RELEASE) $(COMPONENT)' 'Created-By: Packages' \
  | awk -F'|' '$1 == "Debian" { print $2 }' | grep -E ' bookworm(-updates|-security)? ' | sort -u)
if [ -z "$mirrors" ]; then
  echo "no Debian bookworm mirror in apt's sources (/etc/apt/sources.list*): this script builds from the mirror apt uses" >&2
  exit 1
fi
node=$(readlink -f "$(command -v node)")
npm_dir=$(dirname "$(dirname "$(readlink -f "$(command -v npm)")")")
# --variant=apt: essential + apt, as Debian's own slim images; the hooks put
# node and npm where the official node images have them, without the host's
# machine-specific builtin npmrc.
recipe=(--quiet --variant=apt --include="$PACKAGES"
  --customize-hook="cp '$node' \"\$1/usr/local/bin/node\""
  --customize-hook="mkdir -p \"\$1/usr/local/lib/node_modules\" && cp -a '$npm_dir' \"\$1/usr/local/lib/node_modules/npm\" && rm -f \"\$1/usr/local/lib/node_modules/npm/npmrc\""
  --customize-hook="ln -s ../lib/node_modules/npm/bin/npm-cli.js \"\$1/usr/local/bin/npm\" && ln -s ../lib/node_modules/npm/bin/npx-cli.js \"\$1/usr/local/bin/npx\""
  --customize-hook="chroot \"\$1\" node --version >/dev/null"
  bookworm)
config=(--change 'CMD ["bash"]')
key=$( { printf '%s\n' "${recipe[@]}" "${config[@]}" "$mirrors"; sha256sum "$node"; cat "$npm_dir/package.json"; } | sha256sum | cut -c1-16)

have=$($ENGINE image inspect --format "{{ index .Config.Labels \"$LABEL\" }}" "$TAG" 2>/dev/null || true)
if [ "$have" = "$key" ]; then
  echo "$TAG is up to date (key $key)" >&2
  echo "$TAG"
  exit 0
fi
old=$($ENGINE image inspect --format '{{ .Id }}' "$TAG" 2>/dev/null || true)

work=$(mktemp -d /var/tmp/conntrack-debian.XXXXXX)
trap 'rm -rf "$work"' EXIT
printf '%s\n' "$mirrors" >"$work/sources.list"
started=$(date +%s)
mmdebstrap "${recipe[@]}" "$work/rootfs.tar" "$work/sources.list"
if ! $ENGINE import --change "LABEL $LABEL=$key" "${config[@]}" "$work/rootfs.tar" "$TAG" >"$work/import.log" 2>&1; then
  cat "$work/import.log" >&2
  exit 1
fi
# The replaced image, unless something still uses it (a container, an image built on it).
if [ -n "$old" ]; then $ENGINE rmi "$old" >/dev/null 2>&1 || true; fi
echo "built $TAG (key $key) in $(( $(date +%s) - started )) s" >&2
echo "$TAG"
