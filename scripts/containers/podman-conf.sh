#!/usr/bin/env bash
# Makes Debian's podman run containers on machines like CI's VM, as root,
# by a drop-in (/etc/containers/containers.conf.d/50-conntrack.conf): an
# administrator's own containers.conf is never rewritten, and the drop-in
# says only what this machine needs, measured here:
# - a cgroup v1/hybrid layout: runtime = "runc" (crun 1.8 refuses it);
# - root without CAP_SYS_RESOURCE: it cannot raise a limit past its own hard
#   limit, and podman's defaults are higher (runc fails "error setting
#   rlimits"), so containers get this shell's hard limits, nproc no higher
#   than kernel.pid_max (on CI's VM any nproc above it was refused too).
# Nothing needed: no drop-in (an earlier one of ours is removed).
set -euo pipefail
command -v podman >/dev/null || { echo "podman not installed: nothing to configure"; exit 0; }
dir=/etc/containers/containers.conf.d
file=$dir/50-conntrack.conf
conf=""
if [ "$(stat -fc %T /sys/fs/cgroup)" != cgroup2fs ] && command -v runc >/dev/null; then
  conf+=$'[engine]\nruntime = "runc"\n'
fi
cap_eff=$(awk '/^CapEff:/ { print $2 }' /proc/self/status)
if (( (0x$cap_eff >> 24 & 1) == 0 )); then # bit 24: CAP_SYS_RESOURCE
  nofile=$(ulimit -Hn)
  nproc=$(ulimit -Hu)
  pid_max=$(cat /proc/sys/kernel/pid_max)
  if [ "$nproc" = unlimited ] || (( nproc > pid_max )); then nproc=$pid_max; fi
  conf+=$'[containers]\n'"default_ulimits = [\"nofile=$nofile:$nofile\", \"nproc=$nproc:$nproc\"]"$'\n'
fi
if [ -z "$conf" ]; then
  rm -f "$file"
  echo "podman needs no configuration here"
  exit 0
fi
conf="# Written by conntrack's scripts/containers/podman-conf.sh: what this machine needs (see that script)."$'\n'"$conf"
mkdir -p "$dir"
if [ "$(cat "$file" 2>/dev/null)" != "${conf%$'\n'}" ]; then printf '%s' "$conf" >"$file"; fi
echo "podman configured: $file"
