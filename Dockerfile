# ctmon exporter image: slim Node, the two runtime libraries of the addon, and conntrack
# (the package ships prebuilt x64 and arm64 binaries: no compiler in the image).
# From this checkout, with docker or podman (packs it; needs no npm registry):
#   scripts/image.sh ctmon
# From the registry, once published:
#   docker build -t ctmon --build-arg CONNTRACK_VERSION=0.1.0 .
# Then:
#   docker run --rm --network host --cap-add NET_ADMIN ctmon exporter --listen 0.0.0.0:9466
# (--cap-add SYS_ADMIN and -v /run/netns:/run/netns for --netns.)
ARG BASE_IMAGE=node:20-bookworm-slim
FROM ${BASE_IMAGE}
ARG CONNTRACK_VERSION=0.1.0
# scripts/image.sh's context holds conntrack.tgz (the packed checkout) and npm-cache.tar (its
# dependencies); the repository root has neither, and a glob may match nothing (Dockerfile always does).
COPY Dockerfile conntrack.tg[z] npm-cache.ta[r] /tmp/conntrack-image/
RUN (dpkg -s libnetfilter-conntrack3 libmnl0 >/dev/null 2>&1 || ( \
      apt-get update \
      && apt-get install -y --no-install-recommends libnetfilter-conntrack3 libmnl0 \
      && rm -rf /var/lib/apt/lists/*)) \
 && cd /tmp/conntrack-image \
 && if [ -e conntrack.tgz ]; then \
      tar xf npm-cache.tar && npm install -g --offline --cache ./npm-cache --no-audit --no-fund ./conntrack.tgz; \
    else \
      npm install -g conntrack@${CONNTRACK_VERSION}; \
    fi \
 && cd / && rm -rf /tmp/conntrack-image && npm cache clean --force
EXPOSE 9466
ENTRYPOINT ["ctmon"]
CMD ["exporter", "--listen", "0.0.0.0:9466"]
