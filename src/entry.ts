/**
 * Entry, Tuple and the names conntrack prints for protocols, states and
 * status flags. The decoder from native records to Entry objects is in record.ts.
 */

export type Family = 'ipv4' | 'ipv6';
export type ProtocolName = 'tcp' | 'udp' | 'udplite' | 'icmp' | 'icmpv6' | 'sctp' | 'dccp' | 'gre';

export const PROTOCOL_NUMBERS: Readonly<Record<ProtocolName, number>> = {
  icmp: 1,
  tcp: 6,
  udp: 17,
  dccp: 33,
  gre: 47,
  icmpv6: 58,
  sctp: 132,
  udplite: 136,
};
const PROTOCOL_NAMES = new Map<number, ProtocolName>(
  Object.entries(PROTOCOL_NUMBERS).map(([k, v]) => [v, k as ProtocolName]),
);

/** State names as conntrack prints them, indexed by the kernel's state number. */
export const TCP_STATES = [
  'NONE', 'SYN_SENT', 'SYN_RECV', 'ESTABLISHED', 'FIN_WAIT', 'CLOSE_WAIT', 'LAST_ACK', 'TIME_WAIT', 'CLOSE', 'SYN_SENT2',
] as const;
export const SCTP_STATES = [
  'NONE', 'CLOSED', 'COOKIE_WAIT', 'COOKIE_ECHOED', 'ESTABLISHED', 'SHUTDOWN_SENT', 'SHUTDOWN_RECD',
  'SHUTDOWN_ACK_SENT', 'HEARTBEAT_SENT', 'HEARTBEAT_ACKED',
] as const;
export const DCCP_STATES = [
  'NONE', 'REQUEST', 'RESPOND', 'PARTOPEN', 'OPEN', 'CLOSEREQ', 'CLOSING', 'TIMEWAIT', 'IGNORE', 'INVALID',
] as const;
export type TcpState = (typeof TCP_STATES)[number];
export type SctpState = (typeof SCTP_STATES)[number];
export type DccpState = (typeof DCCP_STATES)[number];
export type StateName = TcpState | SctpState | DccpState;

/** Other names conntrack accepts for a TCP state: LISTEN is the old name of state 9. */
export const TCP_STATE_ALIASES: Readonly<Record<string, number>> = { LISTEN: 9 };

/** State number for a name of `protocol`'s table (or alias), -1 when unknown. */
export function stateIndex(protocol: number, name: string): number {
  const table = stateTable(protocol);
  if (!table) return -1;
  const upper = name.toUpperCase();
  const i = table.indexOf(upper);
  return i >= 0 ? i : protocol === 6 ? (TCP_STATE_ALIASES[upper] ?? -1) : -1;
}

/** The state table of a protocol number, if it has states. */
export function stateTable(protocol: number): readonly string[] | undefined {
  return protocol === 6 ? TCP_STATES : protocol === 132 ? SCTP_STATES : protocol === 33 ? DCCP_STATES : undefined;
}

/** Status flag names (IPS_* without the prefix), indexed by bit. */
export const STATUS_FLAGS = [
  'EXPECTED', 'SEEN_REPLY', 'ASSURED', 'CONFIRMED', 'SRC_NAT', 'DST_NAT', 'SEQ_ADJUST', 'SRC_NAT_DONE',
  'DST_NAT_DONE', 'DYING', 'FIXED_TIMEOUT', 'TEMPLATE', 'NAT_CLASH', 'HELPER', 'OFFLOAD', 'HW_OFFLOAD',
] as const;
export type StatusFlag = (typeof STATUS_FLAGS)[number];

export interface IcmpInfo {
  type: number;
  code: number;
  id: number;
}

/**
 * One direction of a flow. Which of ports, ICMP fields and GRE keys a tuple
 * has depends on the protocol: sport/dport for tcp, udp, udplite, sctp and
 * dccp; icmp for icmp and icmpv6; srcKey/dstKey for gre.
 */
export interface Tuple {
  /** Address as Node prints it: '10.0.0.1', '2001:db8::1'. */
  src: string;
  dst: string;
  sport?: number;
  dport?: number;
  icmp?: IcmpInfo;
  /** GRE keys (16 bits, as conntrack's --srckey/--dstkey and `srckey=0x..`). */
  srcKey?: number;
  dstKey?: number;
  /**
   * A zone that applies to this direction only (conntrack --orig-zone /
   * --reply-zone, `zone-orig=`/`zone-reply=`). Absent when the entry has no
   * such zone; a zone for both directions is the entry's `zone`.
   */
  zone?: number;
}

export interface Counters {
  packets: number;
  bytes: number;
}

export interface Entry {
  /** The kernel's id of this flow (conntrack -o id). */
  id: number;
  family: Family;
  protocol: ProtocolName | number;
  original: Tuple;
  reply: Tuple;
  /** TCP, SCTP or DCCP state as conntrack prints it; undefined for stateless protocols. */
  state: StateName | undefined;
  status: readonly StatusFlag[];
  /** Seconds until the entry expires. */
  timeout: number;
  /**
   * The connection mark. Absent only where the kernel sent none: events carry
   * it when it is set or has changed (conntrack -E then prints no `mark=`).
   */
  mark?: number;
  /** The zone of both directions (conntrack -w, `zone=`); 0 is the default zone. See Tuple.zone for a zone of one direction. */
  zone: number;
  /** Reference count; dumps and get() carry it, events never do. */
  use?: number;
  /** Per-direction counters; present when net.netfilter.nf_conntrack_acct is on. */
  counters?: { original: Counters; reply: Counters };
  /** Nanoseconds since the epoch; present when net.netfilter.nf_conntrack_timestamp is on. */
  timestamp?: { start: bigint; stop?: bigint };
  /** Bit numbers of the connection labels that are set. */
  labels?: number[];
  /** SCTP verification tags (conntrack --orig-vtag/--reply-vtag); dumps carry them, events only with a state change. */
  vtag?: { original: number; reply: number };
  helper?: string;
}

export function protocolName(n: number): ProtocolName | number {
  return PROTOCOL_NAMES.get(n) ?? n;
}

export function protocolNumber(p: ProtocolName | number): number {
  return typeof p === 'number' ? p : PROTOCOL_NUMBERS[p];
}

const statusCache = new Map<number, readonly StatusFlag[]>();

/** Status bits -> frozen list of names (shared between entries with the same status). */
export function statusNames(bits: number): readonly StatusFlag[] {
  let names = statusCache.get(bits);
  if (!names) {
    const list: StatusFlag[] = [];
    for (let i = 0; i < STATUS_FLAGS.length; i++) if (bits & (1 << i)) list.push(STATUS_FLAGS[i]!);
    names = Object.freeze(list);
    if (statusCache.size < 4096) statusCache.set(bits, names);
  }
  return names;
}

export function statusBits(names: readonly unknown[], invalid: (msg: string) => Error): number {
  let bits = 0;
  for (const n of names) {
    const i = typeof n === 'string' ? (STATUS_FLAGS as readonly string[]).indexOf(n.toUpperCase()) : -1;
    if (i < 0) throw invalid(`unknown status flag ${typeof n === 'string' ? `'${n}'` : `(${typeof n})`} (one of ${STATUS_FLAGS.join(', ')})`);
    bits |= 1 << i;
  }
  return bits >>> 0;
}

/** An Entry as plain JSON data: what entryToJSON() returns and `ctmon -o json` prints. */
export type EntryJSON = Omit<Entry, 'timestamp'> & { timestamp?: { start: string; stop?: string } };

/**
 * An Entry that JSON.stringify can write: the nanosecond timestamps, the
 * only bigints, as decimal strings (a JSON number loses precision above
 * 2^53, and JSON.stringify throws on a bigint). Everything else is as it is.
 */
export function entryToJSON(entry: Entry): EntryJSON {
  const { timestamp, ...rest } = entry;
  if (!timestamp) return rest;
  return { ...rest, timestamp: timestamp.stop === undefined ? { start: String(timestamp.start) } : { start: String(timestamp.start), stop: String(timestamp.stop) } };
}
