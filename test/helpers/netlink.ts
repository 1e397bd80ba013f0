/**
 * Netlink messages built attribute by attribute, as the kernel sends them
 * (linux/netfilter/nfnetlink_conntrack.h), for root-free tests of the
 * native decoder and of what is written from its records; and a fast-check
 * arbitrary of conntrack event messages over every attribute a flow record reads.
 */
import fc from 'fast-check';

// linux/netfilter/nfnetlink_conntrack.h
export const CTA = { TUPLE_ORIG: 1, TUPLE_REPLY: 2, STATUS: 3, PROTOINFO: 4, HELP: 5, TIMEOUT: 7, MARK: 8, COUNTERS_ORIG: 9, COUNTERS_REPLY: 10, USE: 11, ID: 12, SECMARK: 17, ZONE: 18, SECCTX: 19, TIMESTAMP: 20, LABELS: 22 };
export const TUPLE = { IP: 1, PROTO: 2, ZONE: 3 };
export const IP = { V4_SRC: 1, V4_DST: 2, V6_SRC: 3, V6_DST: 4 };
export const PROTO = { NUM: 1, SRC_PORT: 2, DST_PORT: 3, ICMP_ID: 4, ICMP_TYPE: 5, ICMP_CODE: 6 };
export const EXP = { MASTER: 1, TUPLE: 2, MASK: 3, TIMEOUT: 4, ID: 5, HELP_NAME: 6, ZONE: 7, FLAGS: 8, CLASS: 9 };
export const MSG = { CT_NEW: 0x100, CT_DELETE: 0x102, EXP_NEW: 0x200 };
export const NLM_F_CREATE = 0x400;
export const NLM_F_EXCL = 0x200;
export const NLA_F_NESTED = 0x8000;

// ---- message building ------------------------------------------------------

export function attr(type: number, payload: Buffer): Buffer {
  const head = Buffer.alloc(4);
  head.writeUInt16LE(4 + payload.length, 0);
  head.writeUInt16LE(type, 2);
  return Buffer.concat([head, payload, Buffer.alloc((4 - (payload.length % 4)) % 4)]);
}
export const nest = (type: number, ...children: Buffer[]): Buffer => attr(type | NLA_F_NESTED, Buffer.concat(children));
export const u8 = (v: number): Buffer => Buffer.from([v]);
export const be16 = (v: number): Buffer => Buffer.from([v >> 8, v & 0xff]);
export const be32 = (v: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(v);
  return b;
};
export const be64 = (v: bigint): Buffer => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(v);
  return b;
};
export const strz = (s: string, size = s.length + 1): Buffer => {
  const b = Buffer.alloc(size);
  b.write(s, 'latin1');
  return b;
};

export function message(type: number, attrs: Buffer[], { flags = 0, family = 2, pid = 0 } = {}): Buffer {
  const body = Buffer.concat([Buffer.from([family, 0, 0, 0]), ...attrs]);
  const head = Buffer.alloc(16);
  head.writeUInt32LE(16 + body.length, 0);
  head.writeUInt16LE(type, 4);
  head.writeUInt16LE(flags, 6);
  head.writeUInt32LE(1, 8);
  head.writeUInt32LE(pid, 12);
  return Buffer.concat([head, body]);
}

export function tuple(src: number[], dst: number[], proto: Buffer[]): Buffer {
  const v6 = src.length === 16;
  return Buffer.concat([
    nest(TUPLE.IP, attr(v6 ? IP.V6_SRC : IP.V4_SRC, Buffer.from(src)), attr(v6 ? IP.V6_DST : IP.V4_DST, Buffer.from(dst))),
    nest(TUPLE.PROTO, ...proto),
  ]);
}
export const tcp = (sport: number, dport: number): Buffer[] => [attr(PROTO.NUM, u8(6)), attr(PROTO.SRC_PORT, be16(sport)), attr(PROTO.DST_PORT, be16(dport))];

// ---- generated conntrack events ---------------------------------------------

const PROTOINFO = { TCP: 1, DCCP: 2, SCTP: 3 } as const;
const COUNTERS = { PACKETS: 1, BYTES: 2 };
const TIMESTAMP = { START: 1, STOP: 2 };
const ICMPV6 = { ID: 7, TYPE: 8, CODE: 9 };

/** Addresses a logger meets, and the forms IPv6 text has rules for (runs of zeros, a v4-mapped tail). */
const v4Address = fc.uint8Array({ minLength: 4, maxLength: 4 });
const v6Address = fc.oneof(
  fc.uint8Array({ minLength: 16, maxLength: 16 }),
  fc.tuple(fc.nat(7), fc.nat(8), fc.uint8Array({ minLength: 16, maxLength: 16 })).map(([at, run, b]) => b.map((x, i) => (i >= 2 * at && i < 2 * (at + run) ? 0 : x))),
  v4Address.map((a) => Uint8Array.from([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, ...a])),
  v4Address.map((a) => Uint8Array.from([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, ...a])),
);
const u16 = fc.nat(0xffff);
const u64 = fc.oneof(fc.bigInt({ min: 0n, max: 2n ** 40n }), fc.bigUint64Array({ minLength: 1, maxLength: 1 }).map((a) => a[0]!));
/** Nanoseconds since the epoch: today's, and any the 64 bits can hold. */
const nanoseconds = fc.oneof(fc.bigInt({ min: 1_600_000_000n * 10n ** 9n, max: 1_900_000_000n * 10n ** 9n }), u64);

/** The protocol part of a tuple: ports (GRE keys), ICMP fields, or nothing, as the protocol has. */
function protoAttrs(protocol: number, six: boolean, sport: number, dport: number, icmp: [number, number, number]): Buffer[] {
  const num = attr(PROTO.NUM, u8(protocol));
  if (protocol === 1 || protocol === 58) {
    const k = protocol === 58 ? ICMPV6 : { ID: PROTO.ICMP_ID, TYPE: PROTO.ICMP_TYPE, CODE: PROTO.ICMP_CODE };
    return [num, attr(k.ID, be16(icmp[2])), attr(k.TYPE, u8(icmp[0])), attr(k.CODE, u8(icmp[1]))];
  }
  if ([6, 17, 33, 47, 132, 136].includes(protocol)) return [num, attr(PROTO.SRC_PORT, be16(sport)), attr(PROTO.DST_PORT, be16(dport))];
  void six;
  return [num];
}

function tupleNest(type: number, six: boolean, src: Uint8Array, dst: Uint8Array, proto: Buffer[], zone: number | null): Buffer {
  return nest(type,
    nest(TUPLE.IP, attr(six ? IP.V6_SRC : IP.V4_SRC, Buffer.from(src)), attr(six ? IP.V6_DST : IP.V4_DST, Buffer.from(dst))),
    nest(TUPLE.PROTO, ...proto),
    ...(zone === null ? [] : [attr(TUPLE.ZONE, be16(zone))]));
}

function protoinfo(protocol: number, state: number): Buffer[] {
  const kind = protocol === 6 ? PROTOINFO.TCP : protocol === 132 ? PROTOINFO.SCTP : protocol === 33 ? PROTOINFO.DCCP : undefined;
  return kind === undefined ? [] : [nest(CTA.PROTOINFO, nest(kind, attr(1, u8(state))))];
}

const counterPair = (type: number, packets: bigint, bytes: bigint): Buffer => nest(type, attr(COUNTERS.PACKETS, be64(packets)), attr(COUNTERS.BYTES, be64(bytes)));
const optional = <T>(a: fc.Arbitrary<T>): fc.Arbitrary<T | null> => fc.option(a, { nil: null });

/**
 * A NEW (created) or DESTROY event of one flow, with any subset of the
 * attributes a flow record reads: both families, protocols with ports, GRE
 * keys, ICMP fields or none; NAT status bits; counters and timestamps up to
 * 2^64; state, mark, zones, labels; a reply tuple or none.
 */
export const flowEventMessage: fc.Arbitrary<Buffer> = fc.record({
  destroy: fc.boolean(),
  six: fc.boolean(),
  protocol: fc.constantFrom(6, 17, 132, 33, 136, 47, 1, 58, 50, 253),
  ends: fc.tuple(v4Address, v4Address, v6Address, v6Address, v4Address, v4Address, v6Address, v6Address),
  ports: fc.tuple(u16, u16, u16, u16),
  icmp: fc.tuple(fc.nat(255), fc.nat(255), u16),
  reply: fc.boolean(),
  status: fc.oneof(fc.constantFrom(0, 0x10, 0x20, 0x30, 0x1be, 0x18e), fc.nat(0xffff)),
  id: optional(fc.nat(0xffffffff)),
  counters: optional(fc.tuple(u64, u64, u64, u64)),
  start: optional(nanoseconds),
  stop: optional(nanoseconds),
  state: optional(fc.nat(12)),
  mark: optional(fc.nat(0xffffffff)),
  zone: optional(u16),
  tupleZones: fc.tuple(optional(u16), optional(u16)),
  labels: optional(fc.uint8Array({ minLength: 16, maxLength: 16 })),
}).map((g) => {
  const [o4s, o4d, o6s, o6d, r4s, r4d, r6s, r6d] = g.ends;
  const [os, od, rs, rd] = g.six ? [o6s, o6d, r6s, r6d] : [o4s, o4d, r4s, r4d];
  const [sp, dp, rsp, rdp] = g.ports;
  const attrs = [tupleNest(CTA.TUPLE_ORIG, g.six, os, od, protoAttrs(g.protocol, g.six, sp, dp, g.icmp), g.tupleZones[0])];
  if (g.reply) attrs.push(tupleNest(CTA.TUPLE_REPLY, g.six, rs, rd, protoAttrs(g.protocol, g.six, rsp, rdp, g.icmp), g.tupleZones[1]));
  attrs.push(attr(CTA.STATUS, be32(g.status)));
  if (g.state !== null) attrs.push(...protoinfo(g.protocol, g.state));
  if (g.mark !== null) attrs.push(attr(CTA.MARK, be32(g.mark)));
  if (g.id !== null) attrs.push(attr(CTA.ID, be32(g.id)));
  if (g.zone !== null) attrs.push(attr(CTA.ZONE, be16(g.zone)));
  if (g.counters) attrs.push(counterPair(CTA.COUNTERS_ORIG, g.counters[0], g.counters[1]), counterPair(CTA.COUNTERS_REPLY, g.counters[2], g.counters[3]));
  const stamps = [...(g.start === null ? [] : [attr(TIMESTAMP.START, be64(g.start))]), ...(g.stop === null ? [] : [attr(TIMESTAMP.STOP, be64(g.stop))])];
  if (stamps.length) attrs.push(nest(CTA.TIMESTAMP, ...stamps));
  if (g.labels) attrs.push(attr(CTA.LABELS, Buffer.from(g.labels)));
  return g.destroy ? message(MSG.CT_DELETE, attrs, { family: g.six ? 10 : 2 }) : message(MSG.CT_NEW, attrs, { flags: NLM_F_CREATE | NLM_F_EXCL, family: g.six ? 10 : 2 });
});
