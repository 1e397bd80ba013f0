/**
 * What the doctor knows about the running kernel, without asking it: the
 * default timeouts of each version, how it sizes buckets for a max, and the
 * one max/buckets pair the doctor advises, priced in memory. Pure.
 */
import { release } from 'node:os';

/** The usual rule of thumb, and the kernel's own default sizing: about 65,536 entries per GiB of RAM. */
export const ENTRIES_PER_GIB = 65536;
export const GIB = 1024 ** 3;
export const MIB = 1024 ** 2;
/** Bytes per hash bucket (one pointer). */
export const BUCKET_BYTES = 8;

/** The kernel's default timeouts (seconds). udp_timeout_stream became 120 in Linux 6.0 (180 before). */
export function defaultTimeouts(major: number): Record<string, number> {
  return {
    nf_conntrack_tcp_timeout_syn_sent: 120,
    nf_conntrack_tcp_timeout_syn_recv: 60,
    nf_conntrack_tcp_timeout_established: 432000,
    nf_conntrack_tcp_timeout_fin_wait: 120,
    nf_conntrack_tcp_timeout_close_wait: 60,
    nf_conntrack_tcp_timeout_last_ack: 30,
    nf_conntrack_tcp_timeout_time_wait: 120,
    nf_conntrack_tcp_timeout_close: 10,
    nf_conntrack_tcp_timeout_max_retrans: 300,
    nf_conntrack_tcp_timeout_unacknowledged: 300,
    nf_conntrack_udp_timeout: 30,
    nf_conntrack_udp_timeout_stream: major >= 6 ? 120 : 180,
    nf_conntrack_icmp_timeout: 30,
    nf_conntrack_icmpv6_timeout: 30,
    nf_conntrack_generic_timeout: 600,
  };
}

/**
 * Buckets for a given max, as the running kernel's documentation sizes them.
 * Since Linux 5.15 (d532bcd0b269, "sanitize table size default settings")
 * the default max equals the bucket count, because every entry is hashed
 * twice (original and reply): a full table then has chains of 2. Before it,
 * the default max was 4 x buckets (chains of 8 at full).
 */
export function bucketsFor(max: number, major: number, minor: number): number {
  return bucketsEqualMax(major, minor) ? max : Math.max(1024, Math.round(max / 4));
}

/** Whether the kernel sizes buckets equal to the max (Linux 5.15 and later, d532bcd0b269). */
export function bucketsEqualMax(major: number, minor: number): boolean {
  return major > 5 || (major === 5 && minor >= 15);
}

/** The running kernel's version (os.release(), e.g. '6.18.44-...'). */
export function kernelVersion(r: string = release()): { major: number; minor: number } {
  const m = /^(\d+)\.(\d+)/.exec(r);
  return { major: Number(m?.[1] ?? 0), minor: Number(m?.[2] ?? 0) };
}

/** The max and bucket count the doctor advises, one consistent pair, and what a full table of that size costs. */
export interface Advice {
  /** What the RAM alone allows (~ENTRIES_PER_GIB per GiB, at least 65,536). */
  ramMax: number;
  max: number;
  buckets: number;
  /** Bytes when full (entries by the slab's entry size, plus the buckets); null where the entry size is unknown. */
  costBytes: number | null;
}

/**
 * A power of two at least the RAM's share, twice the max and twice the
 * count, with the buckets this kernel gives that max.
 */
export function adviseSize(
  table: { count: number; max: number },
  memory: { ramBytes: number; entryBytes: number | null },
  kernel: { major: number; minor: number },
): Advice {
  const ramMax = Math.max(65536, Math.round((memory.ramBytes / GIB) * ENTRIES_PER_GIB));
  const wanted = Math.max(ramMax, table.max * 2, 2 ** Math.ceil(Math.log2(Math.max(1, table.count) * 2)));
  const max = 2 ** Math.ceil(Math.log2(wanted));
  const buckets = bucketsFor(max, kernel.major, kernel.minor);
  const costBytes = memory.entryBytes === null ? null : max * memory.entryBytes + buckets * BUCKET_BYTES;
  return { ramMax, max, buckets, costBytes };
}
