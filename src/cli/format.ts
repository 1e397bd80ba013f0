/**
 * Output formats of ctmon: `conntrack` (the exact line `conntrack -L` and
 * `-E` print, so existing scripts keep working), `table`, `json`, `ndjson`.
 */
import { PROTOCOL_NUMBERS as IPPROTO, type Entry, type Tuple } from '../entry.js';
import type { ConntrackEvent } from '../events.js';
import type { Expectation } from '../expectation.js';
import type { LabelMap } from '../labels.js';
import type { OptionSpec } from './args.js';

export type OutputFormat = 'table' | 'conntrack' | 'json' | 'ndjson';
export const OUTPUT_FORMATS: readonly OutputFormat[] = ['table', 'conntrack', 'json', 'ndjson'];
/** conntrack's -o options that change its line: each implies -o conntrack. */
export const CONNTRACK_OUTPUT_OPTIONS = ['extended', 'id', 'labels'] as const;
export type ConntrackOutputOption = (typeof CONNTRACK_OUTPUT_OPTIONS)[number];

export const OUTPUT_OPTION: OptionSpec = {
  name: 'output',
  short: 'o',
  type: 'string',
  placeholder: 'FORMAT',
  choices: [...OUTPUT_FORMATS, ...CONNTRACK_OUTPUT_OPTIONS],
  help: 'table (default); conntrack (the exact line conntrack prints); json (one array); ndjson (one object per line); conntrack\'s extended, id, labels (comma-separated, as conntrack -o extended,id,labels; they imply conntrack)',
};
export const FLAGS_LEGEND = 'FLAGS: A assured, U unreplied (no reply seen yet), S source NAT, D destination NAT, - none';
export const JSON_NOTE = 'JSON: 64-bit counters, byte counts and timestamps are strings (JSON numbers lose precision above 2^53).';

// libnetfilter_conntrack's proto2str.
const CLI_PROTOCOL_NAMES: Record<number, string> = {
  1: 'icmp', 2: 'igmp', 6: 'tcp', 17: 'udp', 33: 'dccp', 47: 'gre', 58: 'icmpv6', 132: 'sctp', 136: 'udplite',
};
const PROTOCOL_NUMBERS: Record<string, number> = Object.fromEntries(Object.entries(CLI_PROTOCOL_NAMES).map(([k, v]) => [v, Number(k)]));

function protonum(e: { protocol: Entry['protocol'] }): number {
  return typeof e.protocol === 'number' ? e.protocol : PROTOCOL_NUMBERS[e.protocol]!;
}

// As libnetfilter_conntrack's __snprintf_proto: the fields follow the
// protocol number, with 0 for what the kernel did not send (a DCCP entry of
// a kernel without DCCP tracking has no ports, and conntrack prints 0s).
function tupleText(t: Tuple, protocol: number, zonePrefix: string, counters?: { packets: number; bytes: number }, names = ['src', 'dst']): string {
  let s = `${names[0]}=${t.src} ${names[1]}=${t.dst} `;
  const P = IPPROTO;
  switch (protocol) {
    case P.tcp: case P.udp: case P.udplite: case P.sctp: case P.dccp:
      s += `sport=${t.sport ?? 0} dport=${t.dport ?? 0} `;
      break;
    case P.gre:
      s += `srckey=0x${(t.srcKey ?? 0).toString(16)} dstkey=0x${(t.dstKey ?? 0).toString(16)} `;
      break;
    case P.icmp: case P.icmpv6:
      s += `type=${t.icmp?.type ?? 0} code=${t.icmp?.code ?? 0} id=${t.icmp?.id ?? 0} `;
      break;
  }
  if (t.zone !== undefined) s += `zone-${zonePrefix}=${t.zone} `;
  if (counters) s += `packets=${counters.packets} bytes=${counters.bytes} `;
  return s;
}

export interface ConntrackLineOptions {
  /** Event kind prefix as conntrack -E prints it ('[NEW]' padded to 9). */
  event?: 'new' | 'update' | 'destroy';
  /** Append id= (conntrack -o id). */
  id?: boolean;
  /** Prefix the layer-3 protocol (conntrack -o extended). */
  extended?: boolean;
  nowSeconds?: number;
  /** Events caused by a netlink request: conntrack -E appends `[USERSPACE] portid=N progname=NAME`. */
  portid?: number;
  progname?: string;
  /** Append `labels=NAME,...` with these names (conntrack -o labels); bits without a name are not printed. */
  labels?: LabelMap;
}

/** One entry exactly as libnetfilter_conntrack's default snprintf prints it. */
export function conntrackLine(e: Entry, options: ConntrackLineOptions = {}): string {
  const num = protonum(e);
  let s = '';
  if (options.event) s += `${`[${options.event.toUpperCase()}]`.padStart(9)} `;
  if (options.extended) s += `${e.family.padEnd(8)} ${e.family === 'ipv4' ? 2 : 10} `;
  s += `${(CLI_PROTOCOL_NAMES[num] ?? 'unknown').padEnd(8)} ${num} `;
  s += `${e.timeout} `;
  if (e.state !== undefined) s += `${e.state} `;
  s += tupleText(e.original, num, 'orig', e.counters?.original);
  if (!e.status.includes('SEEN_REPLY')) s += '[UNREPLIED] ';
  s += tupleText(e.reply, num, 'reply', e.counters?.reply);
  if (e.status.includes('HW_OFFLOAD')) s += '[HW_OFFLOAD] ';
  else if (e.status.includes('OFFLOAD')) s += '[OFFLOAD] ';
  else if (e.status.includes('ASSURED')) s += '[ASSURED] ';
  // Events carry a mark only when it is set or changed, and never a use count: print what was sent.
  if (e.mark !== undefined) s += `mark=${e.mark} `;
  if (e.zone !== 0) s += `zone=${e.zone} `;
  if (e.timestamp) {
    const now = options.nowSeconds ?? Math.floor(Date.now() / 1000);
    const stop = e.timestamp.stop ? Number(e.timestamp.stop / 1_000_000_000n) : now;
    s += `delta-time=${stop - Number(e.timestamp.start / 1_000_000_000n)} `;
  }
  if (e.helper) s += `helper=${e.helper} `;
  if (e.use !== undefined) s += `use=${e.use} `;
  if (options.id) s += `id=${e.id} `;
  if (options.labels && e.labels) {
    const names = e.labels.map((b) => options.labels!.names.get(b)).filter((n): n is string => !!n);
    // As libnetfilter_conntrack: 'labels=' then the names; with none named, the '=' goes too.
    s += names.length ? `labels=${names.join(',')} ` : 'labels ';
  }
  if (options.portid) s += `[USERSPACE] portid=${options.portid} ${options.progname ? `progname=${options.progname} ` : ''}`;
  return s.slice(0, -1);
}

/** One expectation exactly as libnetfilter_conntrack's expectation printer (conntrack -L expect, -E expect). */
export function expectationLine(x: Expectation, options: { event?: 'new' | 'destroy' } = {}): string {
  const num = protonum(x);
  let s = options.event ? `${`[${options.event.toUpperCase()}]`.padStart(9)} ` : '';
  s += `${x.timeout} proto=${num} `;
  s += tupleText(x.tuple, num, 'orig');
  s += tupleText(x.mask, num, 'orig', undefined, ['mask-src', 'mask-dst']);
  s += tupleText(x.master, protonum({ protocol: x.masterProtocol }), 'orig', undefined, ['master-src', 'master-dst']);
  if (x.zone !== 0) s += `zone=${x.zone} `;
  if (x.flags.length) s += `${x.flags.join(',')} `;
  if (x.class !== undefined) s += `class=${x.class} `;
  if (x.helper !== undefined) s += `helper=${x.helper}`;
  return s.endsWith(' ') ? s.slice(0, -1) : s;
}

/** Bigints anywhere (events' entries, stats) as entryToJSON writes an Entry's: decimal strings. */
function jsonReplacer(_key: string, value: unknown): unknown {
  return typeof value === 'bigint' ? value.toString() : value;
}

export function toJson(value: unknown, pretty = false): string {
  return JSON.stringify(value, jsonReplacer, pretty ? 2 : undefined);
}

const TABLE_COLUMNS = ['PROTO', 'SOURCE', 'DESTINATION', 'STATE', 'TIMEOUT', 'FLAGS', 'MARK', 'ZONE'] as const;
const WIDTHS = [7, 46, 46, 12, 8, 10, 6, 5];

function endpoint(addr: string, port: number | undefined, v6: boolean): string {
  if (port === undefined) return addr;
  return v6 ? `[${addr}]:${port}` : `${addr}:${port}`;
}

function flagsOf(e: Entry): string {
  const f: string[] = [];
  if (e.status.includes('ASSURED')) f.push('A');
  if (!e.status.includes('SEEN_REPLY')) f.push('U');
  if (e.status.includes('SRC_NAT')) f.push('S');
  if (e.status.includes('DST_NAT')) f.push('D');
  return f.join('') || '-';
}

export function tableHeader(): string {
  return TABLE_COLUMNS.map((c, i) => c.padEnd(WIDTHS[i]!)).join(' ').trimEnd();
}

export function tableRow(e: Entry, prefix = ''): string {
  const v6 = e.family === 'ipv6';
  const cells = [
    String(e.protocol),
    endpoint(e.original.src, e.original.sport, v6),
    endpoint(e.original.dst, e.original.dport, v6),
    e.state ?? '-',
    String(e.timeout),
    flagsOf(e),
    e.mark === undefined ? '-' : String(e.mark),
    String(e.zone),
  ];
  return prefix + cells.map((c, i) => c.padEnd(WIDTHS[i]!)).join(' ').trimEnd();
}

/** Formats one event for `ctmon watch`. Overruns are the caller's (they go to stderr). */
export function eventLine(ev: Exclude<ConntrackEvent, { type: 'overrun' }>, format: OutputFormat, line: ConntrackLineOptions = {}): string {
  switch (format) {
    case 'conntrack':
      return conntrackLine(ev.entry, { ...line, event: ev.type, portid: ev.portid, ...(ev.process ? { progname: ev.process.name } : {}) });
    case 'json':
    case 'ndjson':
      return toJson(ev);
    default:
      return tableRow(ev.entry, `${ev.type.toUpperCase().padEnd(8)} `);
  }
}
