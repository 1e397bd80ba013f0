/**
 * Filter: what users ask for, validated and compiled into the three places
 * that apply it:
 *  - `kernel`: what the kernel applies during a dump (family, mark, status,
 *    and an exact IPv4 address / protocol / TCP-UDP port via CTA_FILTER on
 *    Linux >= 5.8);
 *  - `match`: what native code applies to each decoded entry before any JS
 *    object exists (everything, re-checked: results never depend on what the
 *    kernel filtered);
 *  - `socketFilter`: the BPF rows an event socket attaches (protocols and
 *    original-direction prefixes), so the kernel drops unwanted events early.
 *
 * conntrack CLI equivalents: family `-f`, protocol `-p`, src `-s/--orig-src`,
 * dst `-d/--orig-dst`, sport `--sport`, dport `--dport`, state `--state`,
 * status `-u/--status`, mark `-m/--mark value[/mask]`, zone `-w/--zone`,
 * origZone `--orig-zone`, replyZone `--reply-zone`, reply `-r/-q/
 * --reply-port-src/--reply-port-dst`, icmp `--icmp-type/--icmp-code/
 * --icmp-id`, nat `--src-nat/--dst-nat/--any-nat [IP]`, labels `-l`.
 */
import { parsePrefix, type Prefix } from './address.js';
import {
  DCCP_STATES, SCTP_STATES, TCP_STATES, stateIndex, statusBits,
  type Family, type ProtocolName, type StateName, type StatusFlag,
} from './entry.js';
import { AF, checkFamily, checkKnownKeys, checkProtocol, checkUint, describe, own, toList } from './check.js';
import { ConntrackError } from './errors.js';
import { labelBitmap } from './labels.js';
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
  /** Original source port(s): entries of protocols without ports (icmp, gre, ...) never match. */
  sport?: number | readonly number[];
  dport?: number | readonly number[];
  /** TCP/SCTP/DCCP state names; entries of other protocols never match a state filter. */
  state?: StateName | readonly StateName[];
  /** Every listed status flag must be set. */
  status?: StatusFlag | readonly StatusFlag[];
  mark?: number | MarkMatch;
  /** The entry's zone (both directions, conntrack -w); 0 matches entries in the default zone. */
  zone?: number;
  /** The original direction's own zone (conntrack --orig-zone); 0 matches entries without one. */
  origZone?: number;
  /** The reply direction's own zone (conntrack --reply-zone); 0 matches entries without one. */
  replyZone?: number;
  /** The reply tuple (conntrack -r/--reply-src, -q/--reply-dst, --reply-port-src, --reply-port-dst). */
  reply?: ReplyMatch;
  /** ICMP/ICMPv6 fields of the original tuple (--icmp-type, --icmp-code, --icmp-id); other protocols never match. */
  icmp?: IcmpMatch;
  /**
   * NAT (conntrack --src-nat, --dst-nat, --any-nat): entries whose source,
   * destination, or either was translated; with an address, translated to it.
   */
  nat?: NatKind | NatMatch;
  /** Every one of these labels is set (conntrack -l): bit numbers, or names from /etc/xtables/connlabel.conf. */
  labels?: number | string | readonly (number | string)[];
}

export interface ReplyMatch {
  /** Reply source: an address, a CIDR, or a list of them. */
  src?: string | readonly string[];
  dst?: string | readonly string[];
  sport?: number | readonly number[];
  dport?: number | readonly number[];
}

export interface IcmpMatch {
  type?: number;
  code?: number;
  id?: number;
}

export type NatKind = 'src' | 'dst' | 'any';

export interface NatMatch {
  type: NatKind;
  /** The translated address: the reply destination for source NAT, the reply source for destination NAT. */
  address?: string;
}

/** Which tuple's source a source match tests (deleteBySource's `direction`). */
export type Direction = 'original' | 'reply' | 'either';

export interface CompiledFilter {
  kernel: NativeKernelFilter;
  match: NativeMatch;
  /** Rows for the event socket's BPF filter (native/events.cc), or undefined for none. */
  socketFilter: Buffer | undefined;
  /** True when no filter was given: count() can use the kernel's counter. */
  empty: boolean;
  /**
   * The families of which the filter, whatever its syntax, selects every
   * entry: both for {}, a /0 of each family, a mark mask of 0 or only
   * CONFIRMED; one for nothing but a family, or a /0 of it ('0.0.0.0/0' is
   * every IPv4 entry). Bulk deletes and updates refuse a filter that sweeps
   * a whole family unless the caller says `all: true`.
   */
  wholeFamilies: readonly Family[];
}

// CTA_FILTER_F_* bits (include/uapi/linux/netfilter/nfnetlink_conntrack.h).
const F_IP_SRC = 1 << 0;
const F_IP_DST = 1 << 1;
const F_PROTO_NUM = 1 << 3;
const F_SRC_PORT = 1 << 4;
const F_DST_PORT = 1 << 5;

const FILTER_KEYS = new Set([
  'family', 'protocol', 'src', 'dst', 'sport', 'dport', 'state', 'status', 'mark', 'zone', 'origZone', 'replyZone',
  'reply', 'icmp', 'nat', 'labels',
]);
const REPLY_KEYS = new Set(['src', 'dst', 'sport', 'dport']);
const ICMP_KEYS = new Set(['type', 'code', 'id']);
const NAT_KEYS = new Set(['type', 'address']);
const NAT_BITS: Readonly<Record<NatKind, number>> = { src: 1, dst: 2, any: 3 };
const IPS_CONFIRMED = 1 << 3;

/** Above this many prefixes the event socket filter is skipped (libnetfilter_conntrack's BPF limits). */
const MAX_SOCKET_FILTER_PREFIXES = 16;
/** Socket filter row: kind u8 (0 protocol, 1 src, 2 dst), family u8, prefix length u8, pad, 16 address bytes. */
const SOCKET_ROW = 20;

function familyOf(p: Prefix): 2 | 10 {
  return p.family === 4 ? AF.ipv4 : AF.ipv6;
}

/** Packs prefixes for native/convert.cc: family u8, length u8, 16 address bytes. */
export function packPrefixes(prefixes: readonly Prefix[]): Buffer {
  const out = Buffer.alloc(prefixes.length * 18);
  prefixes.forEach((p, i) => {
    out[i * 18] = familyOf(p);
    out[i * 18 + 1] = p.length;
    out.set(p.bytes, i * 18 + 2);
  });
  return out;
}

function parsePrefixList(v: unknown, op: string, what: string): Prefix[] {
  if (v === undefined) return [];
  const list = toList(v);
  if (list.length === 0) throw ConntrackError.invalid(op, `${what} is an empty list`);
  return list.map((s, i) => parsePrefix(s, op, Array.isArray(v) ? `${what}[${i}]` : what));
}

function parsePorts(v: unknown, op: string, what: string): number[] | undefined {
  if (v === undefined) return undefined;
  const list = toList(v);
  if (list.length === 0) throw ConntrackError.invalid(op, `${what} is an empty list`);
  return list.map((p) => checkUint(p, 65535, op, what));
}

function stateMasks(v: unknown, op: string): { tcp: number; sctp: number; dccp: number } | undefined {
  if (v === undefined) return undefined;
  const list = toList(v);
  if (list.length === 0) throw ConntrackError.invalid(op, 'state is an empty list');
  const masks = { tcp: 0, sctp: 0, dccp: 0 };
  for (const raw of list) {
    const s = typeof raw === 'string' ? raw.toUpperCase() : '';
    const t = stateIndex(6, s);
    const sc = (SCTP_STATES as readonly string[]).indexOf(s);
    const d = (DCCP_STATES as readonly string[]).indexOf(s);
    if (t < 0 && sc < 0 && d < 0) {
      throw ConntrackError.invalid(op, `state ${describe(raw)} is unknown (TCP: ${TCP_STATES.join(', ')})`, 'state');
    }
    if (t >= 0) masks.tcp |= 1 << t;
    if (sc >= 0) masks.sctp |= 1 << sc;
    if (d >= 0) masks.dccp |= 1 << d;
  }
  return masks;
}

function parseMark(m: unknown, op: string): MarkMatch {
  if (typeof m === 'number') return { value: checkUint(m, 0xffffffff, op, 'mark'), mask: 0xffffffff };
  if (typeof m !== 'object' || m === null || Array.isArray(m)) throw ConntrackError.invalid(op, `mark must be a number or { value, mask }, got ${describe(m)}`);
  const value = checkUint(own(m, 'value'), 0xffffffff, op, 'mark.value');
  const mask = checkUint(own(m, 'mask'), 0xffffffff, op, 'mark.mask');
  if ((value & mask) >>> 0 !== value) throw ConntrackError.invalid(op, 'mark.value has bits outside mark.mask');
  return { value, mask };
}

/**
 * The families in play of which every entry passes the address conditions:
 * each side (src, dst, reply src, reply dst) is either not given or holds a
 * /0 of that family.
 */
function familiesPassingAddresses(sides: readonly (readonly Prefix[])[], families: ReadonlySet<2 | 10>): Family[] {
  const out: Family[] = [];
  for (const f of families) {
    if (sides.every((side) => side.length === 0 || side.some((p) => p.length === 0 && familyOf(p) === f))) out.push(f === AF.ipv4 ? 'ipv4' : 'ipv6');
  }
  return out;
}

function socketFilterRows(protocol: number | undefined, src: readonly Prefix[], dst: readonly Prefix[]): Buffer | undefined {
  const rows: Buffer[] = [];
  if (protocol !== undefined) {
    const row = Buffer.alloc(SOCKET_ROW);
    row[4] = protocol;
    rows.push(row);
  }
  const addPrefixes = (kind: 1 | 2, list: readonly Prefix[]): void => {
    if (list.length === 0 || list.length > MAX_SOCKET_FILTER_PREFIXES) return;
    for (const p of list) {
      const row = Buffer.alloc(SOCKET_ROW);
      row[0] = kind;
      row[1] = familyOf(p);
      row[2] = p.length;
      row.set(p.bytes, 4);
      rows.push(row);
    }
  };
  addPrefixes(1, src);
  addPrefixes(2, dst);
  return rows.length ? Buffer.concat(rows) : undefined;
}

/** Validates a Filter (throws ConntrackError ERR_INVALID_ARG) and compiles it. */
export function compileFilter(filter: Filter | undefined, op: string, direction: Direction = 'original'): CompiledFilter {
  const kernel: NativeKernelFilter = {};
  const match: NativeMatch = {};
  if (filter === undefined || filter === null) {
    return { kernel, match, socketFilter: undefined, empty: true, wholeFamilies: ['ipv4', 'ipv6'] };
  }
  if (typeof filter !== 'object' || Array.isArray(filter)) throw ConntrackError.invalid(op, `filter must be an object, got ${describe(filter)}`);
  checkKnownKeys(filter, FILTER_KEYS, op, 'filter');
  const get = (k: keyof Filter): unknown => own(filter, k);

  let empty = true;
  // Conditions besides family and addresses that can exclude an entry.
  let restricts = false;
  let family: 2 | 10 | undefined;
  const familyOpt = get('family');
  if (familyOpt !== undefined) {
    family = checkFamily(familyOpt, op);
    empty = false;
  }
  let protocol: number | undefined;
  const protocolOpt = get('protocol');
  if (protocolOpt !== undefined) {
    protocol = checkProtocol(protocolOpt, op);
    match.protocol = protocol;
    empty = false;
    restricts = true;
  }
  const src = parsePrefixList(get('src'), op, 'src');
  const dst = parsePrefixList(get('dst'), op, 'dst');
  const addressFamilies = new Set([...src, ...dst].map(familyOf));
  if (family !== undefined && addressFamilies.size > 0 && [...addressFamilies].some((f) => f !== family)) {
    throw ConntrackError.invalid(op, `an address does not belong to family ${String(familyOpt)}`);
  }
  // Addresses of one family imply it: an IPv4 source never matches an IPv6 entry.
  const impliedFamily = addressFamilies.size === 1 ? [...addressFamilies][0] : undefined;
  if (src.length) (match.src = packPrefixes(src)), (empty = false);
  if (dst.length) (match.dst = packPrefixes(dst)), (empty = false);
  if (direction !== 'original') match.srcDirection = direction === 'reply' ? 1 : 2;
  const fam = family ?? impliedFamily;
  const familiesInPlay = new Set<2 | 10>(fam !== undefined ? [fam] : [AF.ipv4, AF.ipv6]);

  const sports = parsePorts(get('sport'), op, 'sport');
  const dports = parsePorts(get('dport'), op, 'dport');
  if (sports) (match.sports = sports), (empty = false), (restricts = true);
  if (dports) (match.dports = dports), (empty = false), (restricts = true);

  const states = stateMasks(get('state'), op);
  if (states) {
    match.tcpStates = states.tcp;
    match.sctpStates = states.sctp;
    match.dccpStates = states.dccp;
    empty = false;
    restricts = true;
  }
  const statusOpt = get('status');
  if (statusOpt !== undefined) {
    const list = toList(statusOpt);
    if (list.length === 0) throw ConntrackError.invalid(op, 'status is an empty list');
    const bits = statusBits(list, (m) => ConntrackError.invalid(op, `status: ${m}`, 'status'));
    match.statusValue = match.statusMask = kernel.status = kernel.statusMask = bits;
    empty = false;
    // Every entry in the table is CONFIRMED: asking for it alone excludes nothing.
    if ((bits & ~IPS_CONFIRMED) !== 0) restricts = true;
  }
  const markOpt = get('mark');
  if (markOpt !== undefined) {
    const { value, mask } = parseMark(markOpt, op);
    match.markValue = kernel.mark = value;
    match.markMask = kernel.markMask = mask;
    empty = false;
    if (mask !== 0) restricts = true;
  }
  for (const key of ['zone', 'origZone', 'replyZone'] as const) {
    const v = get(key);
    if (v === undefined) continue;
    match[key] = checkUint(v, 65535, op, key);
    empty = false;
    restricts = true;
  }

  const replyOpt = get('reply');
  let replyPrefixes: Prefix[] = [];
  let replySides: Prefix[][] = [];
  if (replyOpt !== undefined) {
    if (typeof replyOpt !== 'object' || replyOpt === null || Array.isArray(replyOpt)) {
      throw ConntrackError.invalid(op, `reply must be { src?, dst?, sport?, dport? }, got ${describe(replyOpt)}`);
    }
    checkKnownKeys(replyOpt, REPLY_KEYS, op, 'reply');
    const rsrc = parsePrefixList(own(replyOpt, 'src'), op, 'reply.src');
    const rdst = parsePrefixList(own(replyOpt, 'dst'), op, 'reply.dst');
    replyPrefixes = [...rsrc, ...rdst];
    replySides = [rsrc, rdst];
    if (rsrc.length) match.replySrc = packPrefixes(rsrc);
    if (rdst.length) match.replyDst = packPrefixes(rdst);
    const rsports = parsePorts(own(replyOpt, 'sport'), op, 'reply.sport');
    const rdports = parsePorts(own(replyOpt, 'dport'), op, 'reply.dport');
    if (rsports) match.replySports = rsports;
    if (rdports) match.replyDports = rdports;
    if (rsrc.length || rdst.length || rsports || rdports) empty = false;
    if (rsports || rdports) restricts = true;
  }
  const icmpOpt = get('icmp');
  if (icmpOpt !== undefined) {
    if (typeof icmpOpt !== 'object' || icmpOpt === null || Array.isArray(icmpOpt)) {
      throw ConntrackError.invalid(op, `icmp must be { type?, code?, id? }, got ${describe(icmpOpt)}`);
    }
    checkKnownKeys(icmpOpt, ICMP_KEYS, op, 'icmp');
    const type = own(icmpOpt, 'type');
    const code = own(icmpOpt, 'code');
    const id = own(icmpOpt, 'id');
    if (type !== undefined) match.icmpType = checkUint(type, 255, op, 'icmp.type');
    if (code !== undefined) match.icmpCode = checkUint(code, 255, op, 'icmp.code');
    if (id !== undefined) match.icmpId = checkUint(id, 65535, op, 'icmp.id');
    if (type !== undefined || code !== undefined || id !== undefined) (empty = false), (restricts = true);
  }
  const natOpt = get('nat');
  if (natOpt !== undefined) {
    const kind = typeof natOpt === 'object' && natOpt !== null && !Array.isArray(natOpt) ? own(natOpt, 'type') : natOpt;
    if (typeof kind !== 'string' || !Object.hasOwn(NAT_BITS, kind)) {
      throw ConntrackError.invalid(op, `nat must be 'src', 'dst', 'any' or { type, address? }, got ${describe(natOpt)}`);
    }
    match.nat = NAT_BITS[kind as NatKind];
    if (typeof natOpt === 'object' && natOpt !== null) {
      checkKnownKeys(natOpt, NAT_KEYS, op, 'nat');
      const address = own(natOpt, 'address');
      if (address !== undefined) {
        const p = parsePrefix(address, op, 'nat.address');
        const full = p.family === 4 ? 32 : 128;
        if (p.length !== full) throw ConntrackError.invalid(op, `nat.address must be one address, not a prefix: ${describe(address)}`);
        if (fam !== undefined && familyOf(p) !== fam) throw ConntrackError.invalid(op, `nat.address does not belong to family ${String(familyOpt)}`);
        match.natAddress = Buffer.from(p.bytes);
        replyPrefixes.push(p);
      }
    }
    empty = false;
    restricts = true;
  }
  const labelsOpt = get('labels');
  if (labelsOpt !== undefined) {
    if (Array.isArray(labelsOpt) && labelsOpt.length === 0) throw ConntrackError.invalid(op, 'labels is an empty list');
    match.labels = labelBitmap(toList(labelsOpt), op, 'labels');
    empty = false;
    restricts = true;
  }
  // Reply-side addresses pin the family too: one family's address never matches the other's entry.
  const replyFamilies = new Set(replyPrefixes.map(familyOf));
  if (family !== undefined && [...replyFamilies].some((f) => f !== family)) {
    throw ConntrackError.invalid(op, `a reply address does not belong to family ${String(familyOpt)}`);
  }

  if (fam !== undefined) {
    kernel.family = fam;
    match.family = fam;
    empty = false;
  }
  // Exact original-tuple fields the kernel can match itself (CTA_FILTER).
  if (fam !== undefined && direction === 'original') {
    let flags = 0;
    const tuple: NonNullable<NativeKernelFilter['tuple']> = {};
    // IPv4 only: the kernel's IPv6 address comparison in CTA_FILTER is
    // inverted (ctnetlink_filter_match_tuple tests `!ipv6_addr_cmp()`, true
    // when the addresses are equal), so an exact IPv6 address there would
    // exclude exactly the entries asked for. The native matcher handles it.
    if (fam === AF.ipv4) {
      if (src.length === 1 && src[0]!.length === 32) (flags |= F_IP_SRC), (tuple.src = Buffer.from(src[0]!.bytes));
      if (dst.length === 1 && dst[0]!.length === 32) (flags |= F_IP_DST), (tuple.dst = Buffer.from(dst[0]!.bytes));
    }
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
  const socketFilter = direction === 'original' ? socketFilterRows(protocol, src, dst) : undefined;
  const wholeFamilies = restricts ? [] : familiesPassingAddresses([src, dst, ...replySides], familiesInPlay);
  return { kernel, match, socketFilter, empty, wholeFamilies };
}

