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
import { parseAddress } from './address.js';
import type { FlowRecord } from './flows.js';
import { PROTOCOL_NUMBERS } from './entry.js';

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
  domain?: number;
  /** Largest message in bytes: a UDP datagram that needs no IP fragmentation on Ethernet. Default 1400. */
  mtu?: number;
  /** Templates are sent again when this much time has passed since they last were. Default 10000. */
  templateRefreshMs?: number;
}

const HEADER = 16;
const SET_HEADER = 4;

/**
 * Writes an address of the record's family (4 or 16 bytes). Dotted quads,
 * nearly every address a logger sees, are read digit by digit: parsing each
 * with the general parser cost more than the rest of the record.
 */
function putAddress(buf: Buffer, off: number, address: string, length: number): void {
  if (length === 4) {
    let octet = 0;
    let at = off;
    for (let i = 0; i < address.length; i++) {
      const c = address.charCodeAt(i);
      if (c === 46) (buf[at++] = octet), (octet = 0);
      else octet = octet * 10 + c - 48;
    }
    buf[at] = octet;
    return;
  }
  const parsed = parseAddress(address);
  if (parsed && parsed.bytes.length === length) buf.set(parsed.bytes, off);
  else buf.fill(0, off, off + length);
}

/** An unsigned 64-bit field from a number below 2^53 (counters, milliseconds): no BigInt per value. */
function putU64(buf: Buffer, off: number, v: number): void {
  buf.writeUInt32BE(Math.floor(v / 2 ** 32), off);
  buf.writeUInt32BE(v >>> 0, off + 4);
}

/** The template of a record: by family, and whether it carries a translation. */
function templateOf(r: FlowRecord): number {
  const v6 = r.family === 'ipv6';
  return r.nat ? (v6 ? TEMPLATE_IDS.ipv6nat : TEMPLATE_IDS.ipv4nat) : (v6 ? TEMPLATE_IDS.ipv6 : TEMPLATE_IDS.ipv4);
}

/** Writes `r` at `o` in its template's layout; returns the offset after it. */
function writeRecord(b: Buffer, o: number, r: FlowRecord): number {
  const a = r.family === 'ipv6' ? 16 : 4;
  putAddress(b, o, r.original.src, a);
  putAddress(b, o + a, r.original.dst, a);
  o += 2 * a;
  b.writeUInt16BE(r.original.sport ?? 0, o);
  b.writeUInt16BE(r.original.dport ?? 0, o + 2);
  b[o + 4] = typeof r.protocol === 'number' ? r.protocol : PROTOCOL_NUMBERS[r.protocol];
  o += 5;
  putU64(b, o, r.bytes?.original ?? 0);
  putU64(b, o + 8, r.packets?.original ?? 0);
  putU64(b, o + 16, r.bytes?.reply ?? 0);
  putU64(b, o + 24, r.packets?.reply ?? 0);
  putU64(b, o + 32, r.startMs ?? 0);
  putU64(b, o + 40, r.endMs ?? 0);
  o += 48;
  if (!r.nat) return o;
  // Post-NAT values: the translated side where there was one, the original where not.
  const src = r.nat.source ?? { address: r.original.src, port: r.original.sport };
  const dst = r.nat.destination ?? { address: r.original.dst, port: r.original.dport };
  putAddress(b, o, src.address, a);
  putAddress(b, o + a, dst.address, a);
  o += 2 * a;
  b.writeUInt16BE(src.port ?? 0, o);
  b.writeUInt16BE(dst.port ?? 0, o + 2);
  b[o + 4] = NAT_EVENT[r.family][r.event];
  return o + 5;
}

/**
 * Packs records into IPFIX messages of at most `mtu` bytes, written in
 * place into the message being filled. add() returns the message it
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
    this.#mtu = Math.max(options.mtu ?? 1400, HEADER + TEMPLATE_SET.length + SET_HEADER + Math.max(...RECORD_LENGTH.values()));
    this.#refreshMs = options.templateRefreshMs ?? 10_000;
  }

  /** Data records encoded so far. */
  get sequence(): number {
    return this.#sequence + this.#records;
  }

  add(r: FlowRecord, nowMs = Date.now()): Buffer[] {
    const template = templateOf(r);
    const need = RECORD_LENGTH.get(template)! + (template === this.#setTemplate ? 0 : SET_HEADER);
    const out: Buffer[] = [];
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
    this.#off = writeRecord(b, this.#off, r);
    this.#records++;
    return out;
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
