/**
 * Tuples going to the kernel: validation of a Tuple of a given protocol, its
 * conversion to the native spec (addresses as bytes, GRE keys in the port
 * attributes, CTA_TUPLE_ZONE), and the reply tuple conntrack -I derives when
 * none is given. The decoding direction is in record.ts.
 */
import { parseHost } from './address.js';
import { checkKnownKeys, checkPlainObject, checkUint, describe, own } from './check.js';
import { PROTOCOL_NUMBERS } from './entry.js';
import { ConntrackError } from './errors.js';
import type { NativeTuple } from './native.js';

const IPPROTO = PROTOCOL_NUMBERS;
const PORT_PROTOCOLS = new Set<number>([IPPROTO.tcp, IPPROTO.udp, IPPROTO.dccp, IPPROTO.sctp, IPPROTO.udplite]);
// A kernel built without DCCP tracking (Linux >= 6.16 has none) keeps DCCP
// entries without ports: such an entry's tuple has none to give back.
const PORTS_OPTIONAL = new Set<number>([IPPROTO.dccp]);
const TUPLE_KEYS = new Set(['src', 'dst', 'sport', 'dport', 'icmp', 'srcKey', 'dstKey', 'zone']);
const ICMP_KEYS = new Set(['type', 'code', 'id']);

// Echo, timestamp, info and address-mask requests and their replies, both
// ways, as the kernel's and libnetfilter_conntrack's invmap tables pair them.
const ICMP_REPLY_TYPES: Readonly<Record<number, number>> = { 8: 0, 0: 8, 13: 14, 14: 13, 15: 16, 16: 15, 17: 18, 18: 17 };
const ICMPV6_REPLY_TYPES: Readonly<Record<number, number>> = { 128: 129, 129: 128, 139: 140, 140: 139 };

export interface EncodedTuple {
  tuple: NativeTuple;
  family: 2 | 10;
}

/**
 * Checks `t` as a tuple of `protocol` and converts it. `what` names it in
 * messages ('original', 'reply'). Fields of another protocol are refused, so
 * a GRE key given as a port, or ports on ICMP, are caught here.
 */
export function encodeTuple(t: unknown, protocol: number, op: string, what: string): EncodedTuple {
  checkPlainObject(t, op, what, { shape: 'a tuple { src, dst, ... }', argument: what });
  checkKnownKeys(t, TUPLE_KEYS, op, `${what} tuple`, what);
  const src = parseHost(own(t, 'src'), op, `${what}.src`);
  const dst = parseHost(own(t, 'dst'), op, `${what}.dst`);
  if (src.family !== dst.family) throw ConntrackError.invalid(op, `${what}: src and dst must both be IPv4 or both IPv6`);
  const family = src.family === 4 ? 2 : 10;
  const tuple: NativeTuple = { src: Buffer.from(src.bytes), dst: Buffer.from(dst.bytes), protocol };
  const sport = own(t, 'sport');
  const dport = own(t, 'dport');
  const srcKey = own(t, 'srcKey');
  const dstKey = own(t, 'dstKey');
  const icmp = own(t, 'icmp');
  const refuse = (field: string): never => {
    throw ConntrackError.invalid(op, `${what}.${field} does not apply to protocol ${protocol}`);
  };
  if (PORT_PROTOCOLS.has(protocol) && !(PORTS_OPTIONAL.has(protocol) && sport === undefined && dport === undefined)) {
    if (sport === undefined || dport === undefined) throw ConntrackError.invalid(op, `${what}: sport and dport are required for this protocol`);
    tuple.sport = checkUint(sport, 65535, op, `${what}.sport`);
    tuple.dport = checkUint(dport, 65535, op, `${what}.dport`);
  } else if (sport !== undefined) refuse('sport');
  else if (dport !== undefined) refuse('dport');
  if (protocol === IPPROTO.gre) {
    if (srcKey === undefined || dstKey === undefined) throw ConntrackError.invalid(op, `${what}: srcKey and dstKey are required for gre`);
    // GRE keys travel in the port attributes, as conntrack --srckey/--dstkey sends them.
    tuple.sport = checkUint(srcKey, 65535, op, `${what}.srcKey`);
    tuple.dport = checkUint(dstKey, 65535, op, `${what}.dstKey`);
  } else if (srcKey !== undefined) refuse('srcKey');
  else if (dstKey !== undefined) refuse('dstKey');
  if (protocol === IPPROTO.icmp || protocol === IPPROTO.icmpv6) {
    if ((protocol === IPPROTO.icmp) !== (family === 2)) {
      throw ConntrackError.invalid(op, `${what}: ${protocol === IPPROTO.icmp ? 'icmp needs IPv4' : 'icmpv6 needs IPv6'} addresses`);
    }
    if (typeof icmp !== 'object' || icmp === null || Array.isArray(icmp)) {
      throw ConntrackError.invalid(op, `${what}.icmp { type, code, id } is required for ICMP`);
    }
    checkKnownKeys(icmp, ICMP_KEYS, op, `${what}.icmp`, `${what}.icmp`);
    tuple.icmpType = checkUint(own(icmp, 'type'), 255, op, `${what}.icmp.type`);
    tuple.icmpCode = checkUint(own(icmp, 'code'), 255, op, `${what}.icmp.code`);
    tuple.icmpId = checkUint(own(icmp, 'id'), 65535, op, `${what}.icmp.id`);
  } else if (icmp !== undefined) refuse('icmp');
  const zone = own(t, 'zone');
  if (zone !== undefined) tuple.zone = checkUint(zone, 65535, op, `${what}.zone`);
  return { tuple, family };
}

/**
 * The reply tuple the kernel would expect for `orig`: what conntrack -I
 * derives when no reply is given. The mapping is its own inverse, so it also
 * gives the original tuple of a reply (conntrack -I with -r/-q only).
 */
export function invertTuple(orig: NativeTuple, protocol: number): NativeTuple {
  const reply: NativeTuple = { protocol };
  if (orig.src) reply.dst = orig.src;
  if (orig.dst) reply.src = orig.dst;
  if (orig.sport !== undefined) reply.dport = orig.sport;
  if (orig.dport !== undefined) reply.sport = orig.dport;
  if (orig.icmpType !== undefined) {
    const table = protocol === IPPROTO.icmp ? ICMP_REPLY_TYPES : ICMPV6_REPLY_TYPES;
    reply.icmpType = table[orig.icmpType] ?? orig.icmpType;
    reply.icmpCode = orig.icmpCode ?? 0;
    reply.icmpId = orig.icmpId ?? 0;
  }
  return reply;
}
