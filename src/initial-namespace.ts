/**
 * Whether a network namespace is the initial one (the host's): where the
 * host-wide nf_conntrack_max and buckets are writable, where /etc/sysctl.d
 * applies and where kernel log lines that name no namespace come from. The
 * doctor and the exporter's `host`/`self` label both ask here.
 *
 * Decided by identity, never by whether a sysctl can be written: a container
 * on the host's network with a read-only /proc/sys is still in the initial
 * namespace. In order:
 * 1. the kernel's own number: Linux 6.18 gives the initial namespace the
 *    fixed nsfs inode PROC_NET_INIT_INO (dynamic numbers start at 0xf0000000,
 *    so on older kernels no namespace has it);
 * 2. where PID 1 is the host's init (its PID namespace has the fixed inode
 *    PROC_PID_INIT_INO, Linux 3.8 on), the namespace of PID 1;
 * 3. where PID 1 is a container's init (whose network may be the
 *    container's own) or cannot be seen, and the namespace is this process's:
 *    the mode of nf_conntrack_max, which the kernel makes 0444 in every other
 *    namespace (a read-only mount changes the mount, not the mode).
 * A handle on a namespace other than this process's, on an older kernel,
 * in a container that cannot see the host's PID 1, is taken as not initial.
 */
import { stat } from 'node:fs/promises';
import type { NamespaceId } from './conntrack.js';

/** include/linux/proc_ns.h: the initial network namespace's nsfs inode (Linux 6.18 on). */
export const PROC_NET_INIT_INO = 0xeffffff9;
/** include/linux/proc_ns.h: the initial PID namespace's nsfs inode (Linux 3.8 on). */
export const PROC_PID_INIT_INO = 0xeffffffc;

type NsfsId = Pick<NamespaceId, 'dev' | 'inode'>;

/** What the decision reads, replaceable for tests. */
export interface NamespaceProbes {
  /** The nsfs identity a /proc/PID/ns link points to; rejects where it cannot be read. */
  nsfs(path: string): Promise<NsfsId>;
  /** The mode bits of this process's /proc/sys/net/netfilter/nf_conntrack_max; rejects where absent. */
  maxMode(): Promise<number>;
}

const PROC: NamespaceProbes = {
  nsfs: async (path) => {
    const st = await stat(path);
    return { dev: st.dev, inode: st.ino };
  },
  maxMode: async () => (await stat('/proc/sys/net/netfilter/nf_conntrack_max')).mode,
};

/** Whether two nsfs identities are one namespace (its device and inode; a reused number is the caller's to tell apart). */
export const sameNamespace = (a: NsfsId, b: NsfsId): boolean => a.dev === b.dev && a.inode === b.inode;
const orNull = <T>(p: Promise<T>): Promise<T | null> => p.catch(() => null);

/** Whether the namespace `id` (a handle's `namespaceId`) is the initial network namespace. */
export async function isInitialNamespace(id: NsfsId, probes: NamespaceProbes = PROC): Promise<boolean> {
  if (id.inode === PROC_NET_INIT_INO) return true;
  const [pid1Pid, pid1Net] = await Promise.all([orNull(probes.nsfs('/proc/1/ns/pid')), orNull(probes.nsfs('/proc/1/ns/net'))]);
  if (pid1Pid?.inode === PROC_PID_INIT_INO && pid1Net) return sameNamespace(id, pid1Net);
  const own = await orNull(probes.nsfs('/proc/self/ns/net'));
  if (!own || !sameNamespace(id, own)) return false;
  const mode = await orNull(probes.maxMode());
  return mode !== null && (mode & 0o200) !== 0;
}
