/**
 * What this process may do, read from the kernel rather than guessed from
 * the uid: inside a container uid 0 is root and may still lack a capability,
 * `/proc/sys` may be mounted read-only and `/dev/kmsg` may be absent. Error
 * messages and `conntrack/testing`'s `privileges()` are computed from here.
 */
import { closeSync, constants as fsConstants, openSync, readFileSync } from 'node:fs';

/** The capabilities this package uses, with their bit in the kernel's sets (linux/capability.h). */
export const CAPABILITY_BITS = { CAP_NET_ADMIN: 12, CAP_NET_RAW: 13, CAP_SYS_ADMIN: 21 } as const;
export type Capability = keyof typeof CAPABILITY_BITS;

/** What the package needs: CAP_NET_ADMIN for the conntrack table, CAP_SYS_ADMIN to enter or make another network namespace. */
export const NEEDED_CAPABILITIES: readonly Capability[] = ['CAP_NET_ADMIN', 'CAP_SYS_ADMIN'];

export interface ProcessPrivileges {
  /** Nothing in `missing`: every call of this package can be made. */
  ok: boolean;
  /** The needed capabilities missing from the effective set, e.g. `['CAP_SYS_ADMIN']`. */
  missing: Capability[];
  /** The process's uid (0 inside a container is root there, capabilities or not). */
  uid: number;
  /** `/proc/sys` is writable here: false where a container runtime mounts it read-only (sysctl writes fail EROFS). */
  procSysWritable: boolean;
  /** `/dev/kmsg` can be read (the kernel's "table full" lines, for `ctmon doctor`). */
  kernelLogReadable: boolean;
}

/** The process's effective capability set (CapEff in /proc/self/status), or undefined where it cannot be read. */
export function effectiveCapabilities(): bigint | undefined {
  try {
    const line = /^CapEff:\s*([0-9a-f]+)$/m.exec(readFileSync('/proc/self/status', 'utf8'));
    return line ? BigInt(`0x${line[1]}`) : undefined;
  } catch {
    return undefined;
  }
}

/** Which of `wanted` the effective set lacks (all of them where the set cannot be read). */
export function missingCapabilities(wanted: readonly Capability[] = NEEDED_CAPABILITIES, set = effectiveCapabilities()): Capability[] {
  return wanted.filter((c) => set === undefined || (set & (1n << BigInt(CAPABILITY_BITS[c]))) === 0n);
}

/** True inside a user namespace other than the initial one (its uid map is not the identity over all uids). */
export function inUserNamespace(): boolean {
  try {
    const map = readFileSync('/proc/self/uid_map', 'utf8').trim().split(/\s+/);
    return !(map.length === 3 && map[0] === '0' && map[1] === '0' && map[2] === '4294967295');
  } catch {
    return false;
  }
}

/** The mount options of the mount that holds `path` (the longest mount point that prefixes it), from /proc/self/mountinfo. */
function mountOptionsOf(path: string): string[] | undefined {
  let best: { point: string; options: string[] } | undefined;
  let info: string;
  try {
    info = readFileSync('/proc/self/mountinfo', 'utf8');
  } catch {
    return undefined;
  }
  for (const line of info.split('\n')) {
    const fields = line.split(' ');
    const point = fields[4]?.replace(/\\040/g, ' ');
    if (point === undefined) continue;
    const holds = path === point || path.startsWith(point.endsWith('/') ? point : `${point}/`);
    if (holds && (best === undefined || point.length >= best.point.length)) best = { point, options: (fields[5] ?? '').split(',') };
  }
  return best?.options;
}

/** False where `/proc/sys` (or the file under it) is on a read-only mount, as container runtimes mount it. */
export function procSysWritable(path = '/proc/sys/net/netfilter'): boolean {
  const options = mountOptionsOf(path);
  return options !== undefined && !options.includes('ro');
}

/** True if `/dev/kmsg` opens for reading here. */
export function kernelLogReadable(): boolean {
  try {
    closeSync(openSync('/dev/kmsg', fsConstants.O_RDONLY | fsConstants.O_NONBLOCK));
    return true;
  } catch {
    return false;
  }
}

/** What this process may do: a test file skips (or fails) on `ok: false` with `missing` as the reason. */
export function privileges(): ProcessPrivileges {
  const missing = missingCapabilities();
  return { ok: missing.length === 0, missing, uid: process.getuid?.() ?? -1, procSysWritable: procSysWritable(), kernelLogReadable: kernelLogReadable() };
}

/**
 * Why a call that needs `wanted` was refused, in words true where the process
 * is: which capabilities are missing, never "run as root" to uid 0, and what
 * a user namespace or a container changes.
 */
export function capabilityAdvice(wanted: readonly Capability[], what: string): string {
  const missing = missingCapabilities(wanted);
  const uid = process.getuid?.() ?? -1;
  const names = (missing.length > 0 ? missing : wanted).join(' and ');
  if (inUserNamespace()) {
    return `${what} needs ${names} over the network namespace, and this process is in a user namespace: its capabilities reach only namespaces that user namespace owns (run in the initial user namespace, or open a network namespace created inside this one)`;
  }
  if (missing.length === 0) {
    return `${what} was refused although this process has ${names}: a security module (seccomp, AppArmor, SELinux) or the namespace's owner refuses it`;
  }
  const flags = missing.map((c) => `--cap-add ${c.slice(4)}`).join(' ');
  if (uid === 0) {
    return `${what} needs ${names}; this process is uid 0 but its effective capability set lacks ${missing.join(' and ')} (in a container: ${flags}, or --privileged)`;
  }
  return `${what} needs ${names}: run as root, or grant ${missing.join(' and ')} (setcap ${missing.map((c) => c.toLowerCase()).join(',')}+ep, or a container with ${flags})`;
}

/** Why a write under /proc/sys failed EROFS: the mount is read-only, and how each runtime makes it writable. */
export function readOnlyProcSysAdvice(path: string): string {
  return `cannot write ${path}: /proc/sys is mounted read-only here (a container runtime does so unless told otherwise): run with --privileged, or Docker's --security-opt systempaths=unconfined, or podman's --security-opt unmask=/proc/sys`;
}
