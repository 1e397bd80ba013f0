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
  DCCP_STATES, PROTOCOL_NUMBERS, SCTP_STATES, TCP_STATES, stateIndex, statusBits,
  type Family, type ProtocolName, type StateName, type StatusFlag,
} from './entry.js';
import { AF, checkFamily, checkKnownKeys, checkPlainObject, checkProtocol, checkUint, describe, own, toList } from './check.js';
import { ConntrackError } from './errors.js';
import { labelBitmap } from './labels.js';
import { addon, type NativeKernelFilter, type NativeMatch } from './native.js';
import { named } from './record.js';

export interface MarkMatch {
  value: number;
  mask: number;
}

export interface Filter {
  family?: Family | undefined;
  protocol?: ProtocolName | number | undefined;
  /** Original source: an address, a CIDR, or a list of them (IPv4 and IPv6 may mix). */
  src?: string | readonly string[] | undefined;
  /** Original destination: an address, a CIDR, or a list of them. */
  dst?: string | readonly string[] | undefined;
  /** Original source port(s): entries of protocols without ports (icmp, gre, ...) never match. */
  sport?: number | readonly number[] | undefined;
  dport?: number | readonly number[] | undefined;
  /** TCP/SCTP/DCCP state names; entries of other protocols never match a state filter. */
  state?: StateName | readonly StateName[] | undefined;
  /** Every listed status flag must be set. */
  status?: StatusFlag | readonly StatusFlag[] | undefined;
  mark?: number | MarkMatch | undefined;
  /** The entry's zone (both directions, conntrack -w); 0 matches entries in the default zone. */
  zone?: number | undefined;
  /** The original direction's own zone (conntrack --orig-zone); 0 matches entries without one. */
  origZone?: number | undefined;
  /** The reply direction's own zone (conntrack --reply-zone); 0 matches entries without one. */
  replyZone?: number | undefined;
  /** The reply tuple (conntrack -r/--reply-src, -q/--reply-dst, --reply-port-src, --reply-port-dst). */
  reply?: ReplyMatch | undefined;
  /** ICMP/ICMPv6 fields of the original tuple (--icmp-type, --icmp-code, --icmp-id); other protocols never match. */
  icmp?: IcmpMatch | undefined;
  /**
   * NAT (conntrack --src-nat, --dst-nat, --any-nat): entries whose source,
   * destination, or either was translated; with an address, translated to it.
   */
  nat?: NatKind | NatMatch | undefined;
  /** Every one of these labels is set (conntrack -l): bit numbers, or names from /etc/xtables/connlabel.conf. */
  labels?: number | string | readonly (number | string)[] | undefined;
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

const REPLY_KEYS = new Set(['src', 'dst', 'sport', 'dport']);
const ICMP_KEYS = new Set(['type', 'code', 'id']);
const NAT_KEYS = new Set(['type', 'address']);
const NAT_BITS: Readonly<Record<NatKind, number>> = { src: 1, dst: 2, any: 3 };
const IPS_CONFIRMED = 1 << 3;

/** Above this many prefixes the event socket filter is skipped (libnetfilter_conntrack's BPF limits). */
const MAX_SOCKET_FILTER_PREFIXES = 16;
/** The packed rows' layouts, from the addon (native/convert.h), as the record's are. */
const ROWS = addon.ROW_LAYOUTS;
const PREFIX_ROW = named(ROWS?.prefix.fields, ['family', 'length', 'addr'] as const, 'prefix row field');
const SOCKET_ROW = named(ROWS?.socketFilter.fields, ['kind', 'family', 'length', 'addr'] as const, 'socket filter row field');
const SOCKET_KIND = named(ROWS?.socketFilter.kinds, ['protocol', 'src', 'dst'] as const, 'socket filter row kind');

function familyOf(p: Prefix): 2 | 10 {
  return p.family === 4 ? AF.ipv4 : AF.ipv6;
}

/** Packs prefixes for native/convert.cc, one PrefixRow each. */
export function packPrefixes(prefixes: readonly Prefix[]): Buffer {
  const size = ROWS.prefix.size;
  const out = Buffer.alloc(prefixes.length * size);
  prefixes.forEach((p, i) => {
    out[i * size + PREFIX_ROW.family] = familyOf(p);
    out[i * size + PREFIX_ROW.length] = p.length;
    out.set(p.bytes, i * size + PREFIX_ROW.addr);
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
  checkPlainObject(m, op, 'mark', { shape: 'a number or { value, mask }' });
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
  const size = ROWS.socketFilter.size;
  if (protocol !== undefined) {
    const row = Buffer.alloc(size);
    row[SOCKET_ROW.kind] = SOCKET_KIND.protocol;
    row[SOCKET_ROW.addr] = protocol;
    rows.push(row);
  }
  const addPrefixes = (kind: number, list: readonly Prefix[]): void => {
    if (list.length === 0 || list.length > MAX_SOCKET_FILTER_PREFIXES) return;
    for (const p of list) {
      const row = Buffer.alloc(size);
      row[SOCKET_ROW.kind] = kind;
      row[SOCKET_ROW.family] = familyOf(p);
      row[SOCKET_ROW.length] = p.length;
      row.set(p.bytes, SOCKET_ROW.addr);
      rows.push(row);
    }
  };
  addPrefixes(SOCKET_KIND.src, src);
  addPrefixes(SOCKET_KIND.dst, dst);
  return rows.length ? Buffer.concat(rows) : undefined;
}

/**
 * What a field's compiler leaves for the rest: `none` when the value sets no
 * condition (`reply: {}`), `narrows` when it selects by family or address
 * only (whether that is a whole family is decided from the prefixes),
 * `restricts` when it can exclude entries of any family.
 */
type Effect = 'none' | 'narrows' | 'restricts';

/** The compilation in progress: what the fields have set so far, read by later fields and by the kernel and socket parts. */
interface Compiling {
  readonly op: string;
  readonly match: NativeMatch;
  readonly kernel: NativeKernelFilter;
  // Every field is an own property from the start: a polluted Object.prototype must not answer for one.
  family: 2 | 10 | undefined;
  familyOpt: unknown;
  protocol: number | undefined;
  src: Prefix[];
  dst: Prefix[];
  sports: number[] | undefined;
  dports: number[] | undefined;
  /** Reply-side prefixes (reply.src, reply.dst, nat.address): they pin the family as original-side ones do. */
  replyPrefixes: Prefix[];
  replySides: Prefix[][];
}

/** The family the filter names, or the one its original-side addresses imply. */
function familyInPlay(c: Compiling): 2 | 10 | undefined {
  if (c.family !== undefined) return c.family;
  const families = new Set([...c.src, ...c.dst].map(familyOf));
  return families.size === 1 ? [...families][0] : undefined;
}

function compileFamily(v: unknown, c: Compiling): Effect {
  c.family = checkFamily(v, c.op);
  c.familyOpt = v;
  return 'narrows';
}

function compileProtocol(v: unknown, c: Compiling): Effect {
  c.protocol = c.match.protocol = checkProtocol(v, c.op);
  return 'restricts';
}

function compileAddresses(side: 'src' | 'dst'): (v: unknown, c: Compiling) => Effect {
  return (v, c) => {
    const list = parsePrefixList(v, c.op, side);
    if (c.family !== undefined && list.some((p) => familyOf(p) !== c.family)) throw ConntrackError.invalid(c.op, `an address does not belong to family ${String(c.familyOpt)}`);
    c[side] = list;
    c.match[side] = packPrefixes(list);
    return 'narrows';
  };
}

function compilePorts(side: 'sport' | 'dport'): (v: unknown, c: Compiling) => Effect {
  return (v, c) => {
    const ports = parsePorts(v, c.op, side)!;
    if (side === 'sport') c.sports = c.match.sports = ports;
    else c.dports = c.match.dports = ports;
    return 'restricts';
  };
}

function compileState(v: unknown, c: Compiling): Effect {
  const states = stateMasks(v, c.op)!;
  c.match.tcpStates = states.tcp;
  c.match.sctpStates = states.sctp;
  c.match.dccpStates = states.dccp;
  return 'restricts';
}

function compileStatus(v: unknown, c: Compiling): Effect {
  const list = toList(v);
  if (list.length === 0) throw ConntrackError.invalid(c.op, 'status is an empty list');
  const bits = statusBits(list, (m) => ConntrackError.invalid(c.op, `status: ${m}`, 'status'));
  c.match.statusValue = c.match.statusMask = c.kernel.status = c.kernel.statusMask = bits;
  // Every entry in the table is CONFIRMED: asking for it alone excludes nothing.
  return (bits & ~IPS_CONFIRMED) !== 0 ? 'restricts' : 'narrows';
}

function compileMark(v: unknown, c: Compiling): Effect {
  const { value, mask } = parseMark(v, c.op);
  c.match.markValue = c.kernel.mark = value;
  c.match.markMask = c.kernel.markMask = mask;
  return mask !== 0 ? 'restricts' : 'narrows';
}

function compileZone(key: 'zone' | 'origZone' | 'replyZone'): (v: unknown, c: Compiling) => Effect {
  return (v, c) => {
    c.match[key] = checkUint(v, 65535, c.op, key);
    return 'restricts';
  };
}

function compileReply(v: unknown, c: Compiling): Effect {
  checkPlainObject(v, c.op, 'reply', { shape: '{ src?, dst?, sport?, dport? }', known: REPLY_KEYS, argument: 'reply' });
  const rsrc = parsePrefixList(own(v, 'src'), c.op, 'reply.src');
  const rdst = parsePrefixList(own(v, 'dst'), c.op, 'reply.dst');
  c.replyPrefixes.push(...rsrc, ...rdst);
  c.replySides = [rsrc, rdst];
  if (rsrc.length) c.match.replySrc = packPrefixes(rsrc);
  if (rdst.length) c.match.replyDst = packPrefixes(rdst);
  const rsports = parsePorts(own(v, 'sport'), c.op, 'reply.sport');
  const rdports = parsePorts(own(v, 'dport'), c.op, 'reply.dport');
  if (rsports) c.match.replySports = rsports;
  if (rdports) c.match.replyDports = rdports;
  if (rsports || rdports) return 'restricts';
  return rsrc.length || rdst.length ? 'narrows' : 'none';
}

function compileIcmp(v: unknown, c: Compiling): Effect {
  checkPlainObject(v, c.op, 'icmp', { shape: '{ type?, code?, id? }', known: ICMP_KEYS, argument: 'icmp' });
  const fields = [['type', 'icmpType', 255], ['code', 'icmpCode', 255], ['id', 'icmpId', 65535]] as const;
  let effect: Effect = 'none';
  for (const [key, slot, max] of fields) {
    const value = own(v, key);
    if (value === undefined) continue;
    c.match[slot] = checkUint(value, max, c.op, `icmp.${key}`);
    effect = 'restricts';
  }
  return effect;
}

function compileNat(v: unknown, c: Compiling): Effect {
  const isObject = typeof v === 'object' && v !== null && !Array.isArray(v);
  const kind = isObject ? own(v, 'type') : v;
  if (typeof kind !== 'string' || !Object.hasOwn(NAT_BITS, kind)) {
    throw ConntrackError.invalid(c.op, `nat must be 'src', 'dst', 'any' or { type, address? }, got ${describe(v)}`);
  }
  c.match.nat = NAT_BITS[kind as NatKind];
  if (!isObject) return 'restricts';
  checkKnownKeys(v, NAT_KEYS, c.op, 'nat', 'nat');
  const address = own(v, 'address');
  if (address === undefined) return 'restricts';
  const p = parsePrefix(address, c.op, 'nat.address');
  if (p.length !== (p.family === 4 ? 32 : 128)) throw ConntrackError.invalid(c.op, `nat.address must be one address, not a prefix: ${describe(address)}`);
  const fam = familyInPlay(c);
  if (fam !== undefined && familyOf(p) !== fam) throw ConntrackError.invalid(c.op, `nat.address does not belong to family ${String(c.familyOpt)}`);
  c.match.natAddress = Buffer.from(p.bytes);
  c.replyPrefixes.push(p);
  return 'restricts';
}

function compileLabels(v: unknown, c: Compiling): Effect {
  if (Array.isArray(v) && v.length === 0) throw ConntrackError.invalid(c.op, 'labels is an empty list');
  c.match.labels = labelBitmap(toList(v), c.op, 'labels');
  return 'restricts';
}

/**
 * One compiler per Filter field, in the order they run: family first (the
 * address checks read it), nat after the addresses (its address must agree
 * with the family they imply). A new field is one row here.
 */
const FIELD_COMPILERS: { readonly [K in keyof Required<Filter>]: (v: unknown, c: Compiling) => Effect } = {
  family: compileFamily,
  protocol: compileProtocol,
  src: compileAddresses('src'),
  dst: compileAddresses('dst'),
  sport: compilePorts('sport'),
  dport: compilePorts('dport'),
  state: compileState,
  status: compileStatus,
  mark: compileMark,
  zone: compileZone('zone'),
  origZone: compileZone('origZone'),
  replyZone: compileZone('replyZone'),
  reply: compileReply,
  icmp: compileIcmp,
  nat: compileNat,
  labels: compileLabels,
};
const FILTER_KEYS: ReadonlySet<string> = new Set(Object.keys(FIELD_COMPILERS));

/** The exact original-tuple fields the kernel can match itself (CTA_FILTER), or nothing. */
function kernelTuple(c: Compiling, fam: 2 | 10): void {
  let flags = 0;
  const tuple: NonNullable<NativeKernelFilter['tuple']> = {};
  // IPv4 only: the kernel's IPv6 address comparison in CTA_FILTER is
  // inverted (ctnetlink_filter_match_tuple tests `!ipv6_addr_cmp()`, true
  // when the addresses are equal), so an exact IPv6 address there would
  // exclude exactly the entries asked for. The native matcher handles it.
  if (fam === AF.ipv4) {
    if (c.src.length === 1 && c.src[0]!.length === 32) (flags |= F_IP_SRC), (tuple.src = Buffer.from(c.src[0]!.bytes));
    if (c.dst.length === 1 && c.dst[0]!.length === 32) (flags |= F_IP_DST), (tuple.dst = Buffer.from(c.dst[0]!.bytes));
  }
  if (c.protocol !== undefined) {
    flags |= F_PROTO_NUM;
    tuple.protocol = c.protocol;
    // The kernel compares ports only for TCP and UDP.
    if (c.protocol === PROTOCOL_NUMBERS.tcp || c.protocol === PROTOCOL_NUMBERS.udp) {
      if (c.sports?.length === 1) (flags |= F_SRC_PORT), (tuple.sport = c.sports[0]!);
      if (c.dports?.length === 1) (flags |= F_DST_PORT), (tuple.dport = c.dports[0]!);
    }
  }
  if (flags) {
    c.kernel.origFlags = flags;
    c.kernel.tuple = tuple;
  }
}

/** Validates a Filter (throws ConntrackError ERR_INVALID_ARG) and compiles it. */
export function compileFilter(filter: Filter | undefined, op: string, direction: Direction = 'original'): CompiledFilter {
  const c: Compiling = {
    op, match: {}, kernel: {}, family: undefined, familyOpt: undefined, protocol: undefined,
    src: [], dst: [], sports: undefined, dports: undefined, replyPrefixes: [], replySides: [],
  };
  const effects: Effect[] = [];
  if (filter !== undefined && filter !== null) {
    checkPlainObject(filter, op, 'filter', { known: FILTER_KEYS });
    for (const [key, compile] of Object.entries(FIELD_COMPILERS)) {
      const v = own(filter, key);
      if (v !== undefined) effects.push(compile(v, c));
    }
  }
  if (direction !== 'original') c.match.srcDirection = direction === 'reply' ? 1 : 2;
  // Reply-side addresses pin the family too: one family's address never matches the other's entry.
  if (c.family !== undefined && c.replyPrefixes.some((p) => familyOf(p) !== c.family)) {
    throw ConntrackError.invalid(op, `a reply address does not belong to family ${String(c.familyOpt)}`);
  }
  const fam = familyInPlay(c);
  if (fam !== undefined) {
    c.kernel.family = c.match.family = fam;
    if (direction === 'original') kernelTuple(c, fam);
  }
  const familiesInPlay = new Set<2 | 10>(fam !== undefined ? [fam] : [AF.ipv4, AF.ipv6]);
  const empty = effects.every((e) => e === 'none');
  const wholeFamilies = effects.includes('restricts') ? [] : familiesPassingAddresses([c.src, c.dst, ...c.replySides], familiesInPlay);
  const socketFilter = direction === 'original' ? socketFilterRows(c.protocol, c.src, c.dst) : undefined;
  return { kernel: c.kernel, match: c.match, socketFilter, empty, wholeFamilies };
}
