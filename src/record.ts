/**
 * The record native code fills (native/record.h) and the decoder that turns
 * a batch of them into Entry objects. Decoding in JS from one Buffer per
 * batch costs far less than one N-API call per field. Every offset, presence
 * bit, kind and string tag comes from the addon itself (RECORD_LAYOUT, built
 * from the C++ struct with offsetof), so the two languages cannot disagree.
 * Each record is followed by its tail of string attributes (`tailBytes`
 * long): step through a batch with recordEnd().
 */
import { formatIPv4, formatIPv6 } from './address.js';
import { PROTOCOL_NUMBERS, protocolName, stateTable, statusNames, type Entry, type Family, type StateName, type Tuple } from './entry.js';
import { addon } from './native.js';

const LAYOUT = addon.RECORD_LAYOUT;

/** The names this decoder reads, checked against the binary at load: a stale build is refused, never misread. */
export function named<K extends string>(from: Readonly<Record<string, number>> | undefined, names: readonly K[], what: string): Readonly<Record<K, number>> {
  for (const n of names) {
    if (typeof from?.[n] !== 'number') throw new Error(`conntrack: the native binary has no record ${what} '${n}': it predates this version, rebuild it (npm rebuild conntrack)`);
  }
  return from as Readonly<Record<K, number>>;
}

/** Byte offsets of a record's fields, for readers of whole batches (ipfix.ts). */
export const F = named(LAYOUT?.fields, [
  'id', 'status', 'timeout', 'mark', 'use', 'present', 'zone', 'family', 'protocol', 'state', 'kind', 'origZone', 'orig', 'reply',
  'origPackets', 'origBytes', 'replyPackets', 'replyBytes', 'tsStart', 'tsStop', 'labels', 'portid', 'replyZone', 'pid', 'lost',
  'vtagOriginal', 'vtagReply', 'tailBytes',
] as const, 'field');
/** Byte offsets of a tuple's fields within it. */
export const T = named(LAYOUT.tuple, ['src', 'dst', 'sport', 'dport', 'icmpType', 'icmpCode', 'icmpId'] as const, 'tuple field');
/** Which optional attributes the kernel sent (bits of the record's `present`). */
export const Present = named(LAYOUT.present, [
  'status', 'timeout', 'mark', 'use', 'zone', 'state', 'counters', 'timestampStart', 'timestampStop', 'labels', 'reply',
  'ports', 'icmp', 'id', 'origZone', 'replyZone', 'vtags',
] as const, 'presence bit');
/** What a record is: an entry of a dump, an event, or an overrun marker. */
export const RecordKind = named(LAYOUT.kinds, ['entry', 'new', 'update', 'destroy', 'overrun', 'expectNew', 'expectDestroy', 'expectation'] as const, 'kind');
export const RECORD_SIZE = LAYOUT.size;

/** Where the record at `off` ends (and the next begins): its fixed part, then its string tail. */
export function recordEnd(dv: DataView, off: number): number {
  return off + RECORD_SIZE + dv.getUint16(off + F.tailBytes, true);
}

/** Field name by tag of the string attributes a tail may hold (native/record.h CT_RECORD_STRINGS). */
const STRING_NAMES: (string | undefined)[] = [];
for (const [name, tag] of Object.entries(LAYOUT.strings)) STRING_NAMES[tag] = name;

/**
 * The string attributes in the tail of the record at `off`, each set on
 * `into` under the name the addon gives its tag (entries and expectations
 * alike): a new string attribute needs no line here.
 */
export function readStrings(buf: Buffer, dv: DataView, off: number, into: object): void {
  const end = recordEnd(dv, off);
  for (let p = off + RECORD_SIZE; p + 4 <= end && buf[p] !== 0; ) {
    const len = dv.getUint16(p + 2, true);
    if (p + 4 + len > end) break;
    const name = STRING_NAMES[buf[p]!];
    if (name !== undefined) (into as Record<string, string>)[name] = buf.toString('latin1', p + 4, p + 4 + len);
    p += 4 + len;
  }
}

/** An event record's kind (RecordKind). */
export function recordKind(buf: Buffer, off: number): number {
  return buf[off + F.kind]!;
}
/** Overrun records: how many events were lost there. */
export function recordLost(dv: DataView, off: number): number {
  return dv.getUint32(off + F.lost, true);
}
/** Events: the netlink port of the process whose request caused it (0: the kernel). */
export function recordPortid(dv: DataView, off: number): number {
  return dv.getUint32(off + F.portid, true);
}
/** Events with process resolution: the requesting process (0: unknown). */
export function recordPid(dv: DataView, off: number): number {
  return dv.getUint32(off + F.pid, true);
}

function tupleAt(buf: Buffer, dv: DataView, off: number, v4: boolean, present: number, protonum: number): Tuple {
  return tupleOf(buf, dv, off, v4, (present & Present.ports) !== 0, (present & Present.icmp) !== 0, protonum);
}

/** A RecordTuple at `off`: addresses, and ports (GRE keys) or ICMP fields as the flags say the kernel sent. */
export function tupleOf(buf: Buffer, dv: DataView, off: number, v4: boolean, ports: boolean, icmp: boolean, protonum: number): Tuple {
  const src = v4 ? formatIPv4(buf, off + T.src) : formatIPv6(buf, off + T.src);
  const dst = v4 ? formatIPv4(buf, off + T.dst) : formatIPv6(buf, off + T.dst);
  if (ports) {
    const sport = dv.getUint16(off + T.sport, true);
    const dport = dv.getUint16(off + T.dport, true);
    // GRE keys travel in the port attributes (CTA_PROTO_SRC_PORT/DST_PORT).
    if (protonum === PROTOCOL_NUMBERS.gre) return { src, dst, srcKey: sport, dstKey: dport };
    return { src, dst, sport, dport };
  }
  if (icmp) {
    return { src, dst, icmp: { type: buf[off + T.icmpType]!, code: buf[off + T.icmpCode]!, id: dv.getUint16(off + T.icmpId, true) } };
  }
  return { src, dst };
}

function labelBits(buf: Buffer, off: number): number[] {
  const bits: number[] = [];
  for (let i = 0; i < LAYOUT.labelBytes; i++) {
    const byte = buf[off + i]!;
    if (!byte) continue;
    // The kernel's label bitmap is an array of longs: bit n lives in byte n/8 on little-endian hosts.
    for (let b = 0; b < 8; b++) if (byte & (1 << b)) bits.push(i * 8 + b);
  }
  return bits;
}

/** Decodes the record at byte offset `off`. */
export function decodeEntry(buf: Buffer, dv: DataView, off: number): Entry {
  const present = dv.getUint32(off + F.present, true);
  const family: Family = buf[off + F.family] === 10 ? 'ipv6' : 'ipv4';
  const v4 = family === 'ipv4';
  const protonum = buf[off + F.protocol]!;
  let state: StateName | undefined;
  if (present & Present.state) state = stateTable(protonum)?.[buf[off + F.state]!] as StateName | undefined;
  const original = tupleAt(buf, dv, off + F.orig, v4, present, protonum);
  const reply: Tuple = present & Present.reply ? tupleAt(buf, dv, off + F.reply, v4, present, protonum) : { src: '', dst: '' };
  if (present & Present.origZone) original.zone = dv.getUint16(off + F.origZone, true);
  if (present & Present.replyZone) reply.zone = dv.getUint16(off + F.replyZone, true);
  const entry: Entry = {
    id: dv.getUint32(off + F.id, true),
    family,
    protocol: protocolName(protonum),
    original,
    reply,
    state,
    status: statusNames(dv.getUint32(off + F.status, true)),
    timeout: dv.getUint32(off + F.timeout, true),
    zone: dv.getUint16(off + F.zone, true),
  };
  // What the kernel did not send stays absent (events: no use count, a mark only when set or changed).
  if (present & Present.mark) entry.mark = dv.getUint32(off + F.mark, true);
  if (present & Present.use) entry.use = dv.getUint32(off + F.use, true);
  if (present & Present.counters) {
    entry.counters = {
      original: { packets: Number(dv.getBigUint64(off + F.origPackets, true)), bytes: Number(dv.getBigUint64(off + F.origBytes, true)) },
      reply: { packets: Number(dv.getBigUint64(off + F.replyPackets, true)), bytes: Number(dv.getBigUint64(off + F.replyBytes, true)) },
    };
  }
  if (present & Present.timestampStart) {
    entry.timestamp = { start: dv.getBigUint64(off + F.tsStart, true) };
    if (present & Present.timestampStop) entry.timestamp.stop = dv.getBigUint64(off + F.tsStop, true);
  }
  if (present & Present.labels) entry.labels = labelBits(buf, off + F.labels);
  if (present & Present.vtags) entry.vtag = { original: dv.getUint32(off + F.vtagOriginal, true), reply: dv.getUint32(off + F.vtagReply, true) };
  readStrings(buf, dv, off, entry);
  return entry;
}

export function dataViewOf(buf: Buffer): DataView {
  return new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
}

/** The one entry of a Buffer that holds a single record (a get, an update's result, a bulk failure). */
export function decodeOne(buf: Buffer): Entry {
  return decodeEntry(buf, dataViewOf(buf), 0);
}

/** Decodes every record of a batch. */
export function decodeEntries(buf: Buffer, into: Entry[] = []): Entry[] {
  const dv = dataViewOf(buf);
  for (let off = 0; off + RECORD_SIZE <= buf.length; off = recordEnd(dv, off)) into.push(decodeEntry(buf, dv, off));
  return into;
}
