/**
 * Filter: what users ask for, validated and compiled into
 *  - the part the kernel applies during a dump (family, mark, status, and an
 *    exact original tuple via CTA_FILTER on Linux >= 5.8), and
 *  - the part native code applies to each decoded entry before any JS object
 *    exists (prefix sets, port sets, state lists, zone). The native matcher
 *    always re-checks everything, so results do not depend on the kernel.
 *
 * conntrack CLI equivalents: family `-f`, protocol `-p`, src `-s/--orig-src`,
 * dst `-d/--orig-dst`, sport `--sport`, dport `--dport`, state `--state`,
 * status `-u/--status`, mark `-m/--mark value[/mask]`, zone `-w/--zone`.
 */
import { parsePrefix, type Prefix } from './address.js';
import {
  DCCP_STATES, PROTOCOL_NUMBERS, SCTP_STATES, STATUS_FLAGS, TCP_STATES, stateIndex, statusBits,
  type Family, type ProtocolName, type StateName, type StatusFlag,
} from './entry.js';
import { ConntrackError } from './errors.js';
import type { NativeKernelFilter, NativeMatch } from './native.js';

export interface MarkMatch {
  value: number;
  mask: number;
}

export interface Filter {
  family?: Family;
  protocol?: ProtocolName | number;
  /** Original source: an address, a CIDR, or a list of them (IPv4 and IPv6 may mix). */
  src?: string | readonly string[];
  /** Original destination: an address, a CIDR, or a list of them. */
  dst?: string | readonly string[];
  sport?: number | readonly number[];
  dport?: number | readonly number[];
  /** TCP/SCTP/DCCP state names; entries of other protocols never match a state filter. */
  state?: StateName | readonly StateName[];
  /** Every listed status flag must be set. */
  status?: StatusFlag | readonly StatusFlag[];
  mark?: number | MarkMatch;
  zone?: number;
}

/** Which tuple's source a source match tests (deleteBySource's `direction`). */
export type Direction = 'original' | 'reply' | 'either';

export interface CompiledFilter {
  kernel: NativeKernelFilter;
  match: NativeMatch;
  /** True when the filter selects every entry (count() can use the kernel's counter). */
  empty: boolean;
  /** Prefixes kept for the event socket's kernel filter. */
  srcPrefixes: Prefix[];
  dstPrefixes: Prefix[];
  protocol?: number;
}

const AF = { ipv4: 2, ipv6: 10 } as const;

// CTA_FILTER_F_* bits (include/uapi/linux/netfilter/nfnetlink_conntrack.h).
const F_IP_SRC = 1 << 0;
const F_IP_DST = 1 << 1;
const F_PROTO_NUM = 1 << 3;
const F_SRC_PORT = 1 << 4;
const F_DST_PORT = 1 << 5;

const FILTER_KEYS = new Set(['family', 'protocol', 'src', 'dst', 'sport', 'dport', 'state', 'status', 'mark', 'zone']);

function toList<T>(v: T | readonly T[]): readonly T[] {
  return Array.isArray(v) ? (v as readonly T[]) : [v as T];
}

export function checkUint(v: unknown, max: number, op: string, what: string): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > max) {
    throw ConntrackError.invalid(op, `${what} must be an integer from 0 to ${max}, got ${JSON.stringify(v)}`);
  }
  return v;
}

export function checkProtocol(p: unknown, op: string): number {
  if (typeof p === 'number') return checkUint(p, 255, op, 'protocol');
  if (typeof p === 'string' && Object.hasOwn(PROTOCOL_NUMBERS, p.toLowerCase())) {
    return PROTOCOL_NUMBERS[p.toLowerCase() as ProtocolName];
  }
  throw ConntrackError.invalid(op, `unknown protocol ${JSON.stringify(p)} (one of ${Object.keys(PROTOCOL_NUMBERS).join(', ')}, or a number)`);
}

export function checkFamily(f: unknown, op: string): 2 | 10 {
  if (f === 'ipv4' || f === 'ipv6') return AF[f];
  throw ConntrackError.invalid(op, `family must be 'ipv4' or 'ipv6', got ${JSON.stringify(f)}`);
}

/** Packs prefixes for native/convert.cc: family u8, length u8, 16 address bytes. */
export function packPrefixes(prefixes: readonly Prefix[]): Buffer {
  const out = Buffer.alloc(prefixes.length * 18);
  prefixes.forEach((p, i) => {
    out[i * 18] = p.family === 4 ? 2 : 10;
    out[i * 18 + 1] = p.length;
    out.set(p.bytes, i * 18 + 2);
  });
  return out;
}

function parsePrefixList(v: unknown, op: string, what: string): Prefix[] {
  if (v === undefined) return [];
  const list = toList(v as string | readonly string[]);
  if (list.length === 0) throw ConntrackError.invalid(op, `${what} is an empty list`);
  return list.map((s, i) => parsePrefix(s, op, list.length > 1 ? `${what}[${i}]` : what));
}

function parsePorts(v: unknown, op: string, what: string): number[] | undefined {
  if (v === undefined) return undefined;
  const list = toList(v as number | readonly number[]);
  if (list.length === 0) throw ConntrackError.invalid(op, `${what} is an empty list`);
  return list.map((p) => checkUint(p, 65535, op, what));
}

function stateMasks(v: unknown, op: string): { tcp: number; sctp: number; dccp: number } | undefined {
  if (v === undefined) return undefined;
  const list = toList(v as string | readonly string[]);
  if (list.length === 0) throw ConntrackError.invalid(op, 'state is an empty list');
  const masks = { tcp: 0, sctp: 0, dccp: 0 };
  for (const raw of list) {
    const s = typeof raw === 'string' ? raw.toUpperCase() : '';
    const t = stateIndex(6, s);
    const sc = (SCTP_STATES as readonly string[]).indexOf(s);
    const d = (DCCP_STATES as readonly string[]).indexOf(s);
    if (t < 0 && sc < 0 && d < 0) {
      throw ConntrackError.invalid(op, `unknown state ${JSON.stringify(raw)} (TCP: ${TCP_STATES.join(', ')})`);
    }
    if (t >= 0) masks.tcp |= 1 << t;
    if (sc >= 0) masks.sctp |= 1 << sc;
    if (d >= 0) masks.dccp |= 1 << d;
  }
  return masks;
}

/** Validates a Filter (throws ConntrackError EINVAL) and compiles it. */
export function compileFilter(filter: Filter | undefined, op: string, direction: Direction = 'original'): CompiledFilter {
  const kernel: NativeKernelFilter = {};
  const match: NativeMatch = {};
  if (filter === undefined || filter === null) {
    return { kernel, match, empty: true, srcPrefixes: [], dstPrefixes: [] };
  }
  if (typeof filter !== 'object' || Array.isArray(filter)) throw ConntrackError.invalid(op, 'filter must be an object');
  for (const k of Object.keys(filter)) {
    if (!FILTER_KEYS.has(k)) throw ConntrackError.invalid(op, `unknown filter field '${k}' (known: ${[...FILTER_KEYS].join(', ')})`);
  }
  let empty = true;
  let family: 2 | 10 | undefined;
  if (filter.family !== undefined) {
    family = checkFamily(filter.family, op);
    empty = false;
  }
  let protocol: number | undefined;
  if (filter.protocol !== undefined) {
    protocol = checkProtocol(filter.protocol, op);
    match.protocol = protocol;
    empty = false;
  }
  const src = parsePrefixList(filter.src, op, 'src');
  const dst = parsePrefixList(filter.dst, op, 'dst');
  // Addresses of one family imply it: an IPv4 source never matches an IPv6 entry.
  const addressFamilies = new Set([...src, ...dst].map((p) => (p.family === 4 ? 2 : 10) as 2 | 10));
  const impliedFamily = addressFamilies.size === 1 ? [...addressFamilies][0] : undefined;
  if (family !== undefined && [...src, ...dst].some((p) => (p.family === 4 ? 2 : 10) !== family)) {
    throw ConntrackError.invalid(op, `an address does not belong to family ${filter.family}`);
  }
  if (src.length) (match.src = packPrefixes(src)), (empty = false);
  if (dst.length) (match.dst = packPrefixes(dst)), (empty = false);
  if (direction !== 'original') match.srcDirection = direction === 'reply' ? 1 : 2;

  const sports = parsePorts(filter.sport, op, 'sport');
  const dports = parsePorts(filter.dport, op, 'dport');
  if (sports) (match.sports = sports), (empty = false);
  if (dports) (match.dports = dports), (empty = false);

  const states = stateMasks(filter.state, op);
  if (states) {
    match.tcpStates = states.tcp;
    match.sctpStates = states.sctp;
    match.dccpStates = states.dccp;
    empty = false;
  }
  if (filter.status !== undefined) {
    const list = toList(filter.status as string | readonly string[]);
    const bits = statusBits(list, op, (m) => ConntrackError.invalid(op, m));
    match.statusValue = match.statusMask = kernel.status = kernel.statusMask = bits;
    empty = false;
  }
  if (filter.mark !== undefined) {
    const m = filter.mark;
    const value = typeof m === 'number' ? checkUint(m, 0xffffffff, op, 'mark') : checkUint(m?.value, 0xffffffff, op, 'mark.value');
    const mask = typeof m === 'number' ? 0xffffffff : checkUint(m?.mask, 0xffffffff, op, 'mark.mask');
    if ((value & mask) >>> 0 !== value) throw ConntrackError.invalid(op, 'mark.value has bits outside mark.mask');
    match.markValue = kernel.mark = value;
    match.markMask = kernel.markMask = mask;
    empty = false;
  }
  if (filter.zone !== undefined) {
    match.zone = checkUint(filter.zone, 65535, op, 'zone');
    empty = false;
  }

  const fam = family ?? impliedFamily;
  if (fam !== undefined) {
    kernel.family = fam;
    match.family = fam;
    empty = false;
  }
  // Exact original-tuple fields the kernel can match itself (CTA_FILTER).
  if (fam !== undefined && direction === 'original') {
    const hostLen = fam === 2 ? 32 : 128;
    let flags = 0;
    const tuple: NonNullable<NativeKernelFilter['tuple']> = {};
    if (src.length === 1 && src[0]!.length === hostLen) (flags |= F_IP_SRC), (tuple.src = Buffer.from(src[0]!.bytes));
    if (dst.length === 1 && dst[0]!.length === hostLen) (flags |= F_IP_DST), (tuple.dst = Buffer.from(dst[0]!.bytes));
    if (protocol !== undefined) {
      flags |= F_PROTO_NUM;
      tuple.protocol = protocol;
      // The kernel compares ports only for TCP and UDP.
      if (protocol === 6 || protocol === 17) {
        if (sports?.length === 1) (flags |= F_SRC_PORT), (tuple.sport = sports[0]!);
        if (dports?.length === 1) (flags |= F_DST_PORT), (tuple.dport = dports[0]!);
      }
    }
    if (flags) {
      kernel.origFlags = flags;
      kernel.tuple = tuple;
    }
  }
  const compiled: CompiledFilter = { kernel, match, empty, srcPrefixes: src, dstPrefixes: dst };
  if (protocol !== undefined) compiled.protocol = protocol;
  return compiled;
}

export { STATUS_FLAGS };
