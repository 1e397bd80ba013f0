/**
 * What TestNamespace.fill() creates: `count` distinct entries, the i-th
 * found by arithmetic (no set of what was made), spread over the source
 * addresses first, then the source ports, then the destination ports. Pure:
 * the kernel part is in src/testing.ts.
 */
import { parseHost, parsePrefix, formatIPv4, formatIPv6 } from './address.js';
import { checkKnownKeys, checkOptions, checkUint, own } from './check.js';
import type { StateName } from './entry.js';
import { ConntrackError } from './errors.js';
import type { CreateSpec } from './flow.js';

/** A port, or an inclusive range of ports `[first, last]`. */
export type PortRange = number | readonly [number, number];

export interface FillOptions {
  /** 'tcp' (default), 'udp', 'udplite', 'sctp' or 'dccp': a protocol with ports. */
  protocol?: 'tcp' | 'udp' | 'udplite' | 'sctp' | 'dccp' | undefined;
  /** Source addresses: a CIDR (or one address) the entries spread over. Default '10.0.0.0/8' ('fd00::/8' when `dst` is IPv6). */
  src?: string | undefined;
  /** The destination address of every entry. Default '192.0.2.1' ('fd00::1' when `src` is IPv6). */
  dst?: string | undefined;
  /** Source ports. Default [1024, 65535]. */
  sport?: PortRange | undefined;
  /** Destination ports. Default 80. */
  dport?: PortRange | undefined;
  /** The entries' state (`tcp` default 'ESTABLISHED'; other protocols: the kernel's default unless given). */
  state?: StateName | undefined;
  /** Seconds. Default 600. */
  timeout?: number | undefined;
  /** The entries' mark. Default 0. */
  mark?: number | undefined;
}

const FILL_KEYS = new Set(['protocol', 'src', 'dst', 'sport', 'dport', 'state', 'timeout', 'mark']);
const PORT_PROTOCOLS = new Set(['tcp', 'udp', 'udplite', 'sctp', 'dccp']);

/** A checked fill plan: the i-th entry of `count` is `plan.spec(i)`. */
export interface FillPlan {
  count: number;
  /** How many distinct entries the options allow (addresses × source ports × destination ports). */
  capacity: bigint;
  spec(i: number): CreateSpec;
}

function portRange(v: unknown, fallback: readonly [number, number], what: string): [number, number] {
  if (v === undefined) return [fallback[0], fallback[1]];
  if (typeof v === 'number') return [checkUint(v, 65535, 'fill', what, 1), v];
  if (Array.isArray(v) && v.length === 2) {
    const first = checkUint(v[0], 65535, 'fill', `${what}[0]`, 1);
    const last = checkUint(v[1], 65535, 'fill', `${what}[1]`, first);
    return [first, last];
  }
  throw ConntrackError.invalid('fill', `${what} must be a port or a [first, last] range`, what);
}

function bytesToBig(b: Uint8Array): bigint {
  let n = 0n;
  for (const x of b) n = (n << 8n) | BigInt(x);
  return n;
}

function bigToAddress(n: bigint, family: 4 | 6): string {
  const len = family === 4 ? 4 : 16;
  const b = new Uint8Array(len);
  for (let i = len - 1; i >= 0; i--, n >>= 8n) b[i] = Number(n & 0xffn);
  return family === 4 ? formatIPv4(b, 0) : formatIPv6(b, 0);
}

/** Checks `count` and `options` (ERR_INVALID_ARG naming the option) and returns the plan. */
export function planFill(count: unknown, options: unknown = {}): FillPlan {
  const n = checkUint(count, 2 ** 32 - 1, 'fill', 'count');
  const o = checkOptions(options, 'fill');
  checkKnownKeys(o, FILL_KEYS, 'fill', 'option');
  const protocol = (own(o, 'protocol') ?? 'tcp') as NonNullable<FillOptions['protocol']>;
  if (!PORT_PROTOCOLS.has(protocol)) throw ConntrackError.invalid('fill', `protocol must be one of ${[...PORT_PROTOCOLS].join(', ')}, got ${String(protocol)}`, 'protocol');
  const srcOpt = own(o, 'src');
  const dstOpt = own(o, 'dst');
  const v6 = (typeof srcOpt === 'string' && srcOpt.includes(':')) || (srcOpt === undefined && typeof dstOpt === 'string' && dstOpt.includes(':'));
  const src = parsePrefix(srcOpt ?? (v6 ? 'fd00::/8' : '10.0.0.0/8'), 'fill', 'src');
  const dstHost = parseHost(dstOpt ?? (v6 ? 'fd00::1' : '192.0.2.1'), 'fill', 'dst');
  if (dstHost.family !== src.family) throw ConntrackError.invalid('fill', 'src and dst must be of one family', 'dst');
  const dst = bigToAddress(bytesToBig(dstHost.bytes), dstHost.family);
  const [sportLo, sportHi] = portRange(own(o, 'sport'), [1024, 65535], 'sport');
  const [dportLo, dportHi] = portRange(own(o, 'dport'), [80, 80], 'dport');
  const timeout = own(o, 'timeout') === undefined ? 600 : checkUint(own(o, 'timeout'), 2 ** 31 - 1, 'fill', 'timeout', 1);
  const mark = own(o, 'mark') === undefined ? undefined : checkUint(own(o, 'mark'), 2 ** 32 - 1, 'fill', 'mark');
  const state = (own(o, 'state') ?? (protocol === 'tcp' ? 'ESTABLISHED' : undefined)) as StateName | undefined;

  const bits = BigInt((src.family === 4 ? 32 : 128) - src.length);
  const hosts = 1n << bits;
  const base = (bytesToBig(src.bytes) >> bits) << bits;
  const sports = BigInt(sportHi - sportLo + 1);
  const dports = BigInt(dportHi - dportLo + 1);
  const capacity = hosts * sports * dports;
  if (BigInt(n) > capacity) {
    throw ConntrackError.invalid('fill', `${n} distinct entries do not fit in ${capacity} (src ${String(srcOpt ?? 'default')} × ${sports} source ports × ${dports} destination ports): widen src or the port ranges`, 'count');
  }
  // The i-th entry: index i < count < 2^32, so only the host part can need a bigint (a prefix wider than 2^32 hosts).
  const hostCount = hosts > BigInt(n) ? Math.max(n, 1) : Number(hosts);
  const nSports = Number(sports);
  const address = (host: number): string => {
    if (src.family === 4) {
      const a = Number(base) + host;
      return `${a >>> 24}.${(a >>> 16) & 255}.${(a >>> 8) & 255}.${a & 255}`;
    }
    return bigToAddress(base + BigInt(host), 6);
  };
  return {
    count: n,
    capacity,
    spec(i: number): CreateSpec {
      const host = i % hostCount;
      const k = Math.floor(i / hostCount);
      const sport = sportLo + (k % nSports);
      const dport = dportLo + Math.floor(k / nSports);
      const spec: CreateSpec = { protocol, original: { src: address(host), dst, sport, dport }, timeout };
      if (state !== undefined) spec.state = state;
      if (mark !== undefined) spec.mark = mark;
      return spec;
    },
  };
}
