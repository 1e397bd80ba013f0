# ctmon exporter image: slim Node, the two runtime libraries of the addon, and conntrack from npm
# (the package ships prebuilt x64 and arm64 binaries: no compiler in the image).
#   docker build -t ctmon --build-arg CONNTRACK_VERSION=0.1.0 .
#   docker run --rm --network host --cap-add NET_ADMIN ctmon exporter --listen 0.0.0.0:9466
# (--cap-add SYS_ADMIN and -v /run/netns:/run/netns for --netns.)
FROM node:20-bookworm-slim
ARG CONNTRACK_VERSION=0.1.0
RUN apt-get update \
 && apt-get install -y --no-install-recommends libnetfilter-conntrack3 libmnl0 \
 && rm -rf /var/lib/apt/lists/* \
 && npm install -g conntrack@${CONNTRACK_VERSION} \
 && npm cache clean --force
EXPOSE 9466
ENTRYPOINT ["ctmon"]
CMD ["exporter", "--listen", "0.0.0.0:9466"]
