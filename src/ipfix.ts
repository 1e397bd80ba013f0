/**
 * IPFIX (RFC 7011) messages from flow records, for `ctmon log --format
 * ipfix`: pure encoding, no sockets. Four templates: IPv4 and IPv6, each
 * without and with RFC 8158's NAT elements, so a flow that was not NATed
 * carries no made-up translation. The reply direction's counters are RFC
 * 5103 reverse elements (enterprise 29305), which collectors such as nfdump
 * read as the flow's output counters. Over UDP a collector that starts (or
 * restarts) after the exporter learns the templates only when they are sent
 * again, so they go out at least every `templateRefreshMs` (RFC 7011 §8.4),
 * in a message of their own when nothing else is to be sent.
 */
import { PROTOCOL_NUMBERS } from './entry.js';
import { dataViewOf, F, Present, RecordKind, recordEnd, recordLost, RECORD_SIZE, T } from './record.js';

/** IANA IPFIX Information Element ids (and the reverse PEN of RFC 5103). */
export const IE = {
  octetDeltaCount: 1, packetDeltaCount: 2, protocolIdentifier: 4, sourceTransportPort: 7, sourceIPv4Address: 8,
  destinationTransportPort: 11, destinationIPv4Address: 12, sourceIPv6Address: 27, destinationIPv6Address: 28,
  flowStartMilliseconds: 152, flowEndMilliseconds: 153, postNATSourceIPv4Address: 225, postNATDestinationIPv4Address: 226,
  postNAPTSourceTransportPort: 227, postNAPTDestinationTransportPort: 228, natEvent: 230,
  postNATSourceIPv6Address: 281, postNATDestinationIPv6Address: 282,
} as const;
export const REVERSE_PEN = 29305;
/**
 * natEvent values (RFC 8158 §4.1): NAT44 session create 4 and delete 5; it
 * defines none for IPv6-to-IPv6 translation, for which the generic
 * translation create 1 and delete 2 are sent.
 */
export const NAT_EVENT = { ipv4: { start: 4, end: 5 }, ipv6: { start: 1, end: 2 } } as const;

/** One field of a template: element id, length, and whether it is the reverse (RFC 5103) element. */
type Field = readonly [id: number, length: number, reverse?: boolean];

function fields(v6: boolean, nat: boolean): Field[] {
  const a = v6 ? 16 : 4;
  const list: Field[] = [
    [v6 ? IE.sourceIPv6Address : IE.sourceIPv4Address, a], [v6 ? IE.destinationIPv6Address : IE.destinationIPv4Address, a],
    [IE.sourceTransportPort, 2], [IE.destinationTransportPort, 2], [IE.protocolIdentifier, 1],
    [IE.octetDeltaCount, 8], [IE.packetDeltaCount, 8], [IE.octetDeltaCount, 8, true], [IE.packetDeltaCount, 8, true],
    [IE.flowStartMilliseconds, 8], [IE.flowEndMilliseconds, 8],
  ];
  if (nat) {
    list.push(
      [v6 ? IE.postNATSourceIPv6Address : IE.postNATSourceIPv4Address, a], [v6 ? IE.postNATDestinationIPv6Address : IE.postNATDestinationIPv4Address, a],
      [IE.postNAPTSourceTransportPort, 2], [IE.postNAPTDestinationTransportPort, 2], [IE.natEvent, 1],
    );
  }
  return list;
}

/** Template ids (≥ 256, RFC 7011 §3.4.1) by family and NAT. */
export const TEMPLATE_IDS = { ipv4: 256, ipv6: 257, ipv4nat: 258, ipv6nat: 259 } as const;
const TEMPLATES = [
  { id: TEMPLATE_IDS.ipv4, fields: fields(false, false) },
  { id: TEMPLATE_IDS.ipv6, fields: fields(true, false) },
  { id: TEMPLATE_IDS.ipv4nat, fields: fields(false, true) },
  { id: TEMPLATE_IDS.ipv6nat, fields: fields(true, true) },
];
const RECORD_LENGTH = new Map<number, number>(TEMPLATES.map((t) => [t.id, t.fields.reduce((n, f) => n + f[1], 0)]));

/** The template set (set id 2) announcing all four templates. */
function templateSet(): Buffer {
  const parts: number[] = [];
  const u16 = (v: number): void => void parts.push(v >> 8, v & 255);
  for (const t of TEMPLATES) {
    u16(t.id);
    u16(t.fields.length);
    for (const [id, length, reverse] of t.fields) {
      u16(reverse ? id | 0x8000 : id);
      u16(length);
      if (reverse) parts.push(0, 0, REVERSE_PEN >> 8, REVERSE_PEN & 255);
    }
  }
  const set = Buffer.alloc(4 + parts.length);
  set.writeUInt16BE(2, 0);
  set.writeUInt16BE(set.length, 2);
  Buffer.from(parts).copy(set, 4);
  return set;
}
const TEMPLATE_SET = templateSet();

export interface IpfixOptions {
  /** Observation Domain ID of every message (one per namespace in ctmon log). Default 0. */
  domain?: number | undefined;
  /** Largest message in bytes, at least IPFIX_MIN_MTU (410: the templates and one record): a UDP datagram that needs no IP fragmentation on Ethernet. Default 1400. */
  mtu?: number | undefined;
  /** Templates are sent again when this much time has passed since they last were. Default 10000. */
  templateRefreshMs?: number | undefined;
}

const HEADER = 16;
const SET_HEADER = 4;
// The record offsets the hot path reads, as constants: reading them off the layout object per field cost a lookup each.
const { family: F_FAMILY, orig: F_ORIG, reply: F_REPLY, present: F_PRESENT, protocol: F_PROTOCOL, status: F_STATUS, kind: F_KIND } = F;
const { origBytes: F_ORIG_BYTES, origPackets: F_ORIG_PACKETS, replyBytes: F_REPLY_BYTES, replyPackets: F_REPLY_PACKETS, tsStart: F_TS_START, tsStop: F_TS_STOP } = F;
const { src: T_SRC, dst: T_DST, sport: T_SPORT, dport: T_DPORT } = T;
const { counters: HAS_COUNTERS, timestampStart: HAS_START, timestampStop: HAS_STOP, ports: HAS_PORTS } = Present;
const GRE = PROTOCOL_NUMBERS.gre;
const AF_INET6 = 10;
const SRC_NAT = 1 << 4; // IPS_SRC_NAT
const DST_NAT = 1 << 5; // IPS_DST_NAT

/** `n` bytes from `from` at `at` into `b` at `o`: a loop beats Buffer.copy()'s call for 4 or 16 bytes. */
function copyBytes(b: Buffer, o: number, from: Buffer, at: number, n: number): void {
  for (let i = 0; i < n; i++) b[o + i] = from[at + i]!;
}

/** A record's little-endian u64 at `at`, big-endian at `o`. */
function copyU64(b: Buffer, o: number, from: Buffer, at: number): void {
  for (let i = 0; i < 8; i++) b[o + i] = from[at + 7 - i]!;
}

/** Whole milliseconds of the kernel's nanoseconds at `at`, exactly, without a BigInt: 2^32 ns = 4294 ms + 967296 ns. */
function msAt(dv: DataView, at: number): number {
  const hi = dv.getUint32(at + 4, true);
  const lo = dv.getUint32(at, true);
  return hi * 4294 + Math.floor((hi * 967296 + lo) / 1e6);
}

/** An unsigned 64-bit field from a number below 2^53 (milliseconds): no BigInt per value. */
function putU64(buf: Buffer, off: number, v: number): void {
  buf.writeUInt32BE(Math.floor(v / 2 ** 32), off);
  buf.writeUInt32BE(v >>> 0, off + 4);
}

/** A transport port of the tuple at `tuple`, or 0 where it has none (ICMP; GRE, whose keys travel there). */
function portAt(src: Buffer, dv: DataView, off: number, tuple: number, field: number): number {
  const present = dv.getUint32(off + F_PRESENT, true);
  return present & HAS_PORTS && src[off + F_PROTOCOL] !== GRE ? dv.getUint16(tuple + field, true) : 0;
}

/** The template of the event record at `off`: by family, and whether it carries a translation. */
function templateAt(src: Buffer, dv: DataView, off: number): number {
  const v6 = src[off + F_FAMILY] === AF_INET6;
  const nat = (dv.getUint32(off + F_STATUS, true) & (SRC_NAT | DST_NAT)) !== 0;
  return nat ? (v6 ? TEMPLATE_IDS.ipv6nat : TEMPLATE_IDS.ipv4nat) : (v6 ? TEMPLATE_IDS.ipv6 : TEMPLATE_IDS.ipv4);
}

/**
 * Writes the event record at `off` (src/record.ts layout) in its template's
 * layout at `o`, straight from the record's bytes: what flows.ts
 * flowRecord() would say of it, without an Entry or a FlowRecord between.
 * Returns the offset after it.
 */
function writeRecord(b: Buffer, o: number, src: Buffer, dv: DataView, off: number): number {
  const v6 = src[off + F_FAMILY] === AF_INET6;
  const a = v6 ? 16 : 4;
  const orig = off + F_ORIG;
  const reply = off + F_REPLY;
  const present = dv.getUint32(off + F_PRESENT, true);
  copyBytes(b, o, src, orig + T_SRC, a);
  copyBytes(b, o + a, src, orig + T_DST, a);
  o += 2 * a;
  b.writeUInt16BE(portAt(src, dv, off, orig, T_SPORT), o);
  b.writeUInt16BE(portAt(src, dv, off, orig, T_DPORT), o + 2);
  b[o + 4] = src[off + F_PROTOCOL]!;
  o += 5;
  if (present & HAS_COUNTERS) {
    copyU64(b, o, src, off + F_ORIG_BYTES);
    copyU64(b, o + 8, src, off + F_ORIG_PACKETS);
    copyU64(b, o + 16, src, off + F_REPLY_BYTES);
    copyU64(b, o + 24, src, off + F_REPLY_PACKETS);
  } else {
    b.fill(0, o, o + 32);
  }
  putU64(b, o + 32, present & HAS_START ? msAt(dv, off + F_TS_START) : 0);
  // An end time only beside a start, as flowRecord() has it.
  putU64(b, o + 40, present & HAS_START && present & HAS_STOP ? msAt(dv, off + F_TS_STOP) : 0);
  o += 48;
  const status = dv.getUint32(off + F_STATUS, true);
  if (!(status & (SRC_NAT | DST_NAT))) return o;
  // Post-NAT values, read from the reply tuple as flows.ts natOf() reads
  // them: the translated side where there was one, the original where not.
  const [srcAt, srcPortAt, srcPort] = status & SRC_NAT ? [reply + T_DST, reply, T_DPORT] : [orig + T_SRC, orig, T_SPORT];
  const [dstAt, dstPortAt, dstPort] = status & DST_NAT ? [reply + T_SRC, reply, T_SPORT] : [orig + T_DST, orig, T_DPORT];
  copyBytes(b, o, src, srcAt, a);
  copyBytes(b, o + a, src, dstAt, a);
  o += 2 * a;
  b.writeUInt16BE(portAt(src, dv, off, srcPortAt, srcPort), o);
  b.writeUInt16BE(portAt(src, dv, off, dstPortAt, dstPort), o + 2);
  b[o + 4] = NAT_EVENT[v6 ? 'ipv6' : 'ipv4'][src[off + F_KIND] === RecordKind.new ? 'start' : 'end'];
  return o + 5;
}

/** The smallest message that holds the templates and one record of any of them. */
export const IPFIX_MIN_MTU = HEADER + TEMPLATE_SET.length + SET_HEADER + Math.max(...RECORD_LENGTH.values());

/**
 * Packs records into IPFIX messages of at most `mtu` bytes, written in
 * place into the message being filled. addRecords() returns the message it
 * finished to make room, if any; flush() finishes the one being filled (or,
 * when templates are due and nothing waits, a message of templates alone).
 * Whether a message carries the templates is decided when it is begun.
 */
export class IpfixEncoder {
  readonly #domain: number;
  readonly #mtu: number;
  readonly #refreshMs: number;
  /** Data records sent so far (RFC 7011 §3.1: the sequence number counts data records, modulo 2^32). */
  #sequence = 0;
  #templatesAt = -Infinity;
  /** The message being filled, or null before its first record. */
  #buf: Buffer | null = null;
  #off = 0;
  #records = 0;
  /** Offset and template of the data set being filled; -1 when none is open. */
  #setAt = -1;
  #setTemplate = -1;

  constructor(options: IpfixOptions = {}) {
    this.#domain = options.domain ?? 0;
    this.#mtu = Math.max(options.mtu ?? 1400, IPFIX_MIN_MTU);
    this.#refreshMs = options.templateRefreshMs ?? 10_000;
  }

  /** Data records encoded so far. */
  get sequence(): number {
    return this.#sequence + this.#records;
  }

  /**
   * Encodes a batch of event records (what FlowStream takes from the
   * reader): NEW as a flow's start, DESTROY as its end; `onLost` hears each
   * overrun record's count. Returns the messages it finished to make room.
   */
  addRecords(batch: Buffer, nowMs = Date.now(), onLost?: (count: number) => void): Buffer[] {
    const out: Buffer[] = [];
    const dv = dataViewOf(batch);
    for (let off = 0; off + RECORD_SIZE <= batch.length; off = recordEnd(dv, off)) {
      const kind = batch[off + F_KIND];
      if (kind === RecordKind.overrun) onLost?.(recordLost(dv, off));
      else if (kind === RecordKind.new || kind === RecordKind.destroy) this.#add(batch, dv, off, nowMs, out);
    }
    return out;
  }

  #add(src: Buffer, dv: DataView, off: number, nowMs: number, out: Buffer[]): void {
    const template = templateAt(src, dv, off);
    const need = RECORD_LENGTH.get(template)! + (template === this.#setTemplate ? 0 : SET_HEADER);
    if (this.#buf !== null && this.#off + need > this.#mtu) out.push(this.flush(nowMs)!);
    if (this.#buf === null) this.#begin(nowMs);
    const b = this.#buf!;
    if (template !== this.#setTemplate) {
      this.#closeSet();
      this.#setAt = this.#off;
      this.#setTemplate = template;
      b.writeUInt16BE(template, this.#off);
      this.#off += SET_HEADER;
    }
    this.#off = writeRecord(b, this.#off, src, dv, off);
    this.#records++;
  }

  /** Starts a message: the header's room, and the templates when they are due. */
  #begin(nowMs: number): void {
    this.#buf = Buffer.allocUnsafe(this.#mtu);
    this.#off = HEADER;
    if (nowMs - this.#templatesAt >= this.#refreshMs) {
      TEMPLATE_SET.copy(this.#buf, HEADER);
      this.#off += TEMPLATE_SET.length;
      this.#templatesAt = nowMs;
    }
  }

  #closeSet(): void {
    if (this.#setAt >= 0) this.#buf!.writeUInt16BE(this.#off - this.#setAt, this.#setAt + 2);
    this.#setAt = -1;
    this.#setTemplate = -1;
  }

  /** The message being filled, finished; templates-only when due and nothing waits; undefined otherwise. */
  flush(nowMs = Date.now()): Buffer | undefined {
    if (this.#buf === null) {
      if (nowMs - this.#templatesAt < this.#refreshMs) return undefined;
      this.#begin(nowMs);
    }
    this.#closeSet();
    const msg = this.#buf!.subarray(0, this.#off);
    msg.writeUInt16BE(10, 0);
    msg.writeUInt16BE(msg.length, 2);
    msg.writeUInt32BE(Math.floor(nowMs / 1000) >>> 0, 4);
    msg.writeUInt32BE(this.#sequence >>> 0, 8);
    msg.writeUInt32BE(this.#domain >>> 0, 12);
    this.#sequence = (this.#sequence + this.#records) % 2 ** 32;
    this.#records = 0;
    this.#buf = null;
    return msg;
  }
}
