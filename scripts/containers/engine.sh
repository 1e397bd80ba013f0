# Sourced by the container scripts: picks the container engine once.
# CONTAINER_ENGINE=docker|podman forces one; otherwise docker if its daemon
# answers (a docker CLI without a daemon is common: the CLI alone is useless),
# else podman. Sets ENGINE, or exits 69 (EX_UNAVAILABLE) saying what to install.
pick_engine() {
  if [ -n "${CONTAINER_ENGINE:-}" ]; then
    ENGINE=$CONTAINER_ENGINE
  elif command -v docker >/dev/null && docker info >/dev/null 2>&1; then
    ENGINE=docker
  elif command -v podman >/dev/null; then
    ENGINE=podman
  else
    echo "no container engine: install podman (Debian: apt-get install podman runc) or docker with a running daemon" >&2
    exit 69
  fi
}
