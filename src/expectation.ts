/**
 * Expectations: the connections a helper (ftp, sip, tftp, ...) predicts from
 * what it read in a master connection, so that the related one is let in
 * (`conntrack -L expect`). The type, its codec to and from the native
 * ExpectRecord (native/expect.h), and the table's operations live here, as
 * flow.ts holds the entries'.
 */
import { checkFamily, checkKnownKeys, checkOptions, checkProtocol, checkUint, describe, own, toList } from './check.js';
import { protocolName, type Family, type ProtocolName, type Tuple } from './entry.js';
import { ConntrackError, wrapNative } from './errors.js';
import { addon, type NativeExpectSpec, type NativeHandle, type NativeTuple } from './native.js';
import { dataViewOf, named, readStrings, RECORD_SIZE, recordEnd, tupleOf } from './record.js';
import { encodeTuple } from './tuple.js';

/** NF_CT_EXPECT_* flags as conntrack prints them. */
export const EXPECT_FLAGS = ['PERMANENT', 'INACTIVE', 'USERSPACE'] as const;
export type ExpectFlag = (typeof EXPECT_FLAGS)[number];

export interface Expectation {
  /** The kernel's id of the expectation. */
  id: number;
  family: Family;
  /** The expected connection's protocol. */
  protocol: ProtocolName | number;
  /** The expected connection's original tuple; where `mask` has 0 bits, any value matches (a source port of 0 under a 0 mask is "any"). */
  tuple: Tuple;
  /** Which bits of `tuple` must match: addresses as masks (255.255.255.255), ports 0 (any) or 65535 (exact). */
  mask: Tuple;
  /** The original tuple of the master entry the helper read it from. */
  master: Tuple;
  masterProtocol: ProtocolName | number;
  /** Seconds left. */
  timeout: number;
  /** 0 is the default zone. */
  zone: number;
  flags: readonly ExpectFlag[];
  /** The helper's expectation class (ftp has one, sip several). */
  class?: number;
  helper?: string;
  /** Where the helper NATs the expected connection. */
  nat?: { direction: 'original' | 'reply' };
}

/** What identifies an expectation: its protocol and expected tuple (an Expectation is one). */
export interface ExpectationKey {
  protocol: ProtocolName | number;
  tuple: Tuple;
  zone?: number;
  /** With delete(): only if it still has this id (an Expectation's id is sent). */
  id?: number;
}

/** conntrack -I expect: a new expectation on an existing master entry. */
export interface ExpectationSpec {
  /** The master entry: its protocol and original tuple (an Entry will do). */
  master: { protocol: ProtocolName | number; original: Tuple };
  protocol: ProtocolName | number;
  tuple: Tuple;
  /** Default: every address bit and port of `tuple` must match. */
  mask?: Tuple;
  /** Seconds until it expires unused. */
  timeout: number;
  /** Needed when the master entry has no helper (a user-space helper). */
  helper?: string;
  zone?: number;
  flags?: readonly ('PERMANENT' | 'INACTIVE')[];
  class?: number;
}

const LAYOUT = addon.RECORD_LAYOUT.expect;
const X = named(LAYOUT?.fields, [
  'id', 'timeout', 'flags', 'klass', 'natDir', 'present', 'zone', 'family', 'protocol', 'masterProtocol', 'kind', 'tuple', 'mask', 'master', 'tailBytes',
] as const, 'expectation field');
const XP = named(LAYOUT?.present, [
  'zone', 'class', 'nat', 'flags', 'tuplePorts', 'tupleIcmp', 'maskPorts', 'maskIcmp', 'masterPorts', 'masterIcmp',
] as const, 'expectation bit');

/** Decodes the ExpectRecord at `off`. */
export function decodeExpectation(buf: Buffer, dv: DataView, off: number): Expectation {
  const present = dv.getUint32(off + X.present, true);
  const v4 = buf[off + X.family] !== 10;
  const protonum = buf[off + X.protocol]!;
  const masterProtonum = buf[off + X.masterProtocol]!;
  const flagBits = dv.getUint32(off + X.flags, true);
  const x: Expectation = {
    id: dv.getUint32(off + X.id, true),
    family: v4 ? 'ipv4' : 'ipv6',
    protocol: protocolName(protonum),
    tuple: tupleOf(buf, dv, off + X.tuple, v4, (present & XP.tuplePorts) !== 0, (present & XP.tupleIcmp) !== 0, protonum),
    mask: tupleOf(buf, dv, off + X.mask, v4, (present & XP.maskPorts) !== 0, (present & XP.maskIcmp) !== 0, protonum),
    master: tupleOf(buf, dv, off + X.master, v4, (present & XP.masterPorts) !== 0, (present & XP.masterIcmp) !== 0, masterProtonum),
    masterProtocol: protocolName(masterProtonum),
    timeout: dv.getUint32(off + X.timeout, true),
    zone: present & XP.zone ? dv.getUint16(off + X.zone, true) : 0,
    flags: EXPECT_FLAGS.filter((_, i) => flagBits & (1 << i)),
  };
  if (present & XP.class) x.class = dv.getUint32(off + X.klass, true);
  readStrings(buf, dv, off, x);
  if (present & XP.nat) x.nat = { direction: dv.getUint32(off + X.natDir, true) === 0 ? 'original' : 'reply' };
  return x;
}

export function decodeExpectations(buf: Buffer): Expectation[] {
  const dv = dataViewOf(buf);
  const out: Expectation[] = [];
  for (let off = 0; off + RECORD_SIZE <= buf.length; off = recordEnd(dv, off)) out.push(decodeExpectation(buf, dv, off));
  return out;
}

const SPEC_KEYS = new Set(['master', 'protocol', 'tuple', 'mask', 'timeout', 'helper', 'zone', 'flags', 'class']);
const FAMILY_KEYS = new Set(['family']);

/** All ones over the fields `t` has: an exact match. */
function exactMask(t: NativeTuple, family: 2 | 10): NativeTuple {
  const ones = Buffer.alloc(family === 2 ? 4 : 16, 0xff);
  const m: NativeTuple = { src: ones, dst: ones };
  if (t.protocol !== undefined) m.protocol = t.protocol;
  if (t.sport !== undefined) (m.sport = 0xffff), (m.dport = 0xffff);
  if (t.icmpType !== undefined) (m.icmpType = 0xff), (m.icmpCode = 0xff), (m.icmpId = 0xffff);
  return m;
}

function encodeKey(key: unknown, op: string): NativeExpectSpec {
  const k = checkOptions(key, op, 'key');
  // An Expectation is a key: its other fields are fine.
  const protocol = checkProtocol(own(k, 'protocol'), op);
  const { tuple, family } = encodeTuple(own(k, 'tuple'), protocol, op, 'tuple');
  const spec: NativeExpectSpec = { family, tuple };
  const zone = own(k, 'zone');
  if (zone !== undefined) spec.zone = checkUint(zone, 65535, op, 'zone');
  return spec;
}

function encodeSpec(input: unknown, op: string): NativeExpectSpec {
  const o = checkOptions(input, op, 'spec');
  checkKnownKeys(o, SPEC_KEYS, op, 'spec');
  const master = own(o, 'master');
  if (typeof master !== 'object' || master === null) throw ConntrackError.invalid(op, `master must be { protocol, original } (an Entry will do), got ${describe(master)}`);
  const masterProtocol = checkProtocol(own(master, 'protocol'), op);
  const m = encodeTuple(own(master, 'original'), masterProtocol, op, 'master.original');
  const protocol = checkProtocol(own(o, 'protocol'), op);
  const t = encodeTuple(own(o, 'tuple'), protocol, op, 'tuple');
  if (t.family !== m.family) throw ConntrackError.invalid(op, 'the expected tuple and the master must be of the same family');
  const maskOpt = own(o, 'mask');
  const mask = maskOpt === undefined ? exactMask(t.tuple, t.family) : encodeTuple(maskOpt, protocol, op, 'mask').tuple;
  const timeout = own(o, 'timeout');
  if (timeout === undefined) throw ConntrackError.invalid(op, 'timeout (seconds) is required');
  const spec: NativeExpectSpec = { family: t.family, master: m.tuple, tuple: t.tuple, mask, timeout: checkUint(timeout, 0xffffffff, op, 'timeout') };
  if (spec.timeout === 0) throw ConntrackError.invalid(op, 'timeout must be at least 1 second');
  const helper = own(o, 'helper');
  if (helper !== undefined) {
    if (typeof helper !== 'string' || !/^[\w.-]{1,15}$/.test(helper)) throw ConntrackError.invalid(op, `helper must be a helper name of at most 15 characters, got ${describe(helper)}`);
    spec.helper = helper;
  }
  const zone = own(o, 'zone');
  if (zone !== undefined) spec.zone = checkUint(zone, 65535, op, 'zone');
  const flags = own(o, 'flags');
  if (flags !== undefined) {
    if (!Array.isArray(flags)) throw ConntrackError.invalid(op, 'flags must be a list of PERMANENT, INACTIVE');
    let bits = 0;
    for (const f of toList(flags)) {
      const i = typeof f === 'string' ? ['PERMANENT', 'INACTIVE'].indexOf(f.toUpperCase()) : -1;
      if (i < 0) throw ConntrackError.invalid(op, `unknown expectation flag ${describe(f)} (PERMANENT, INACTIVE; USERSPACE is the kernel's)`);
      bits |= 1 << i;
    }
    spec.flags = bits;
  }
  const klass = own(o, 'class');
  if (klass !== undefined) spec.class = checkUint(klass, 0xffffffff, op, 'class');
  return spec;
}

/** The expectation table of a handle's namespace (`ct.expectations`). */
export class Expectations {
  readonly #native: () => NativeHandle;

  /** @internal Use Conntrack's `expectations`. */
  constructor(native: () => NativeHandle) {
    this.#native = native;
  }

  /** Every expectation (conntrack -L expect), or those of one family. */
  async list(options: { family?: Family } = {}): Promise<Expectation[]> {
    const op = 'expectations.list';
    const family = readFamily(options, op);
    try {
      return decodeExpectations(await this.#native().expectDump({ family }));
    } catch (e) {
      throw wrapNative(e, op);
    }
  }

  /** The same as an async iterator (the table is small: one read). */
  async *dump(options: { family?: Family } = {}): AsyncIterableIterator<Expectation> {
    yield* await this.list(options);
  }

  /** The expectation for this expected tuple (conntrack -G expect), or null. */
  async get(key: ExpectationKey): Promise<Expectation | null> {
    const op = 'expectations.get';
    const spec = encodeKey(key, op);
    try {
      const buf = await this.#native().expectGet(spec);
      return buf ? decodeExpectation(buf, dataViewOf(buf), 0) : null;
    } catch (e) {
      throw wrapNative(e, op);
    }
  }

  /** Adds an expectation to an existing master entry (conntrack -I expect). EEXIST when the tuple is expected already. */
  async create(spec: ExpectationSpec): Promise<void> {
    const op = 'expectations.create';
    const native = encodeSpec(spec, op);
    try {
      await this.#native().expectCreate(native);
    } catch (e) {
      throw wrapNative(e, op, {
        ENOENT: 'no such master entry: create() needs the master connection in the table',
        EOPNOTSUPP: 'the master entry has no helper: give helper (the name of a user-space helper)',
      });
    }
  }

  /** Removes one expectation (conntrack -D expect); false when it was already gone. */
  async delete(key: ExpectationKey): Promise<boolean> {
    const op = 'expectations.delete';
    const spec = encodeKey(key, op);
    const id = own(key, 'id');
    if (id !== undefined) spec.id = checkUint(id, 0xffffffff, op, 'id');
    try {
      return await this.#native().expectDelete(spec);
    } catch (e) {
      throw wrapNative(e, op);
    }
  }

  /** Removes every expectation (conntrack -F expect). */
  async flush(options: { family?: Family } = {}): Promise<void> {
    const op = 'expectations.flush';
    const family = readFamily(options, op);
    try {
      await this.#native().expectFlush({ family });
    } catch (e) {
      throw wrapNative(e, op);
    }
  }
}

function readFamily(options: unknown, op: string): number {
  const o = checkOptions(options, op);
  checkKnownKeys(o, FAMILY_KEYS, op, 'option');
  const f = own(o, 'family');
  return f === undefined ? 0 : checkFamily(f, op);
}
