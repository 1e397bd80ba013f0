/**
 * What identifies, creates and changes one entry: the FlowKey that get(),
 * update() and delete() take, the CreateSpec, UpdateSpec and UpdateChanges,
 * and their codec to the native request. An Entry is each of them: every
 * field it carries is accepted, the ones that describe it as read (id,
 * family, use, counters, ...) used where the kernel can use them or else
 * ignored. One concept, one place, as ti-mo/conntrack's flow.go.
 */
import { checkKnownKeys, checkOptions, checkPlainObject, checkProtocol, checkUint, describe, own, toList } from './check.js';
import {
  stateIndex, stateTable, statusBits,
  type Entry, type Family, type ProtocolName, type StateName, type StatusFlag, type Tuple,
} from './entry.js';
import { ConntrackError } from './errors.js';
import type { NativeChange, NativeEntrySpec, NativeTuple } from './native.js';
import { parseHost } from './address.js';
import { labelBitmap } from './labels.js';
import { encodeTuple, invertTuple } from './tuple.js';

/**
 * What an Entry carries that describes it as read and that no request sets:
 * accepted, so that an Entry passes back as it is, and ignored (`family` is
 * checked against the tuples; `id` is used where the call says so).
 */
export interface EntryReadings {
  id?: number;
  family?: Family;
  use?: number;
  counters?: Entry['counters'];
  timestamp?: Entry['timestamp'];
  helper?: string;
}

/**
 * What identifies one entry: get(), update() and delete() take it, and an
 * Entry (from list(), dump(), get() or an event) is one. `original.zone` /
 * `reply.zone` are zones of one direction (conntrack --orig-zone/--reply-zone).
 */
export interface FlowKey extends EntryReadings {
  protocol: ProtocolName | number;
  original: Tuple;
  /** The zone of both directions (conntrack -w). */
  zone?: number;
  /**
   * An Entry's id pins that very flow: delete() sends it (the kernel leaves a
   * newer flow on the same tuple alone) and update() checks it; get() finds
   * by tuple and ignores it.
   */
  id?: number;
  /** Ignored: the kernel finds an entry by its original tuple. */
  reply?: Tuple;
}

export interface CreateSpec extends EntryReadings {
  protocol: ProtocolName | number;
  /** Derived from `reply` when omitted (conntrack -I with -r/-q only); one of the two is required. */
  original?: Tuple;
  /**
   * Derived from `original` (addresses and ports swapped, ICMP echo -> echo
   * reply) when omitted. With SRC_NAT or DST_NAT in `status` (an Entry of a
   * NATed flow), the translation is taken from it: the kernel sets up that
   * NAT and derives the same reply tuple.
   */
  reply?: Tuple;
  /**
   * Seconds, at least 1. The kernel caps it at INT_MAX jiffies (about 24.8
   * days at HZ=1000, 99 days at HZ=250) without saying so.
   */
  timeout: number;
  state?: StateName | undefined;
  /**
   * Flags to set. EXPECTED and DYING are the kernel's (a created entry has no
   * master and is not dying) and are left out; NAT and offload flags come
   * from what the kernel sets up; CONFIRMED is always sent.
   */
  status?: readonly StatusFlag[];
  mark?: number;
  /** The zone of both directions; a zone of one direction goes in original.zone or reply.zone. */
  zone?: number;
  /** Labels to set (conntrack --label-add): bit numbers, or names from /etc/xtables/connlabel.conf. */
  labels?: readonly (number | string)[];
  /** SCTP verification tags, with `state` (conntrack --orig-vtag, --reply-vtag). */
  vtag?: SctpVtags;
  /** DCCP role of the original tuple, with `state` (conntrack --role). */
  role?: 'client' | 'server';
  /**
   * Create the entry NATed (conntrack -I --src-nat/--dst-nat): the kernel
   * sets up the translation and derives the reply tuple from it, so give no
   * `reply` with it.
   */
  nat?: { src?: NatTarget; dst?: NatTarget };
}

/** An address to translate to, optionally with a port (conntrack's IP[:PORT]). */
export type NatTarget = string | { address: string; port?: number };

export interface SctpVtags {
  original: number;
  reply: number;
}

/**
 * What an update changes, as conntrack -U computes it on the entry as it is
 * now: ct.update() takes these beside a key, ct.updateWhere() alone.
 */
export interface UpdateChanges {
  /** Seconds, at least 1 (capped by the kernel as for create()); refused (EPERM) on a FIXED_TIMEOUT entry. */
  timeout?: number;
  /**
   * Flags to set, kept with those the entry has (the kernel never clears one,
   * conntrack -U -u). Only SEEN_REPLY, ASSURED, FIXED_TIMEOUT, NAT_CLASH and
   * HELPER can be set: the kernel keeps the others for itself.
   */
  status?: readonly StatusFlag[];
  /** The new mark, or { value, mask }: the bits under mask are cleared, then value is XORed in (conntrack -U -m MARK/MASK). */
  mark?: number | { value: number; mask: number };
  /** Replaces the whole label set ([] clears it, as conntrack --label-del with no label). */
  labels?: readonly (number | string)[];
  /** Sets these labels, leaving the others (conntrack --label-add). */
  labelsAdd?: readonly (number | string)[];
  /** Clears these labels, leaving the others (conntrack --label-del LABEL). */
  labelsDelete?: readonly (number | string)[];
}

export interface UpdateSpec extends UpdateChanges, EntryReadings {
  protocol: ProtocolName | number;
  original: Tuple;
  zone?: number;
  /** Checked as for delete(): the entry must still be the flow with this id. */
  id?: number;
  /** Ignored: the kernel finds an entry by its original tuple, and a reply tuple never changes. */
  reply?: Tuple;
  state?: StateName | undefined;
  /** SCTP verification tags, with `state` (the kernel sets all three together); without them, the entry's own are kept. */
  vtag?: SctpVtags;
  /** DCCP role, with `state`. */
  role?: 'client' | 'server';
}

const READINGS = ['id', 'family', 'use', 'counters', 'timestamp', 'helper'];
const CHANGE_KEYS = new Set(['timeout', 'status', 'mark', 'labels', 'labelsAdd', 'labelsDelete']);
const CREATE_KEYS = new Set([
  ...READINGS, 'protocol', 'original', 'reply', 'timeout', 'state', 'status', 'mark', 'zone', 'labels', 'vtag', 'role', 'nat',
]);
const UPDATE_KEYS = new Set([...READINGS, ...CHANGE_KEYS, 'protocol', 'original', 'reply', 'zone', 'state', 'vtag', 'role']);
/** A key may be an Entry, a CreateSpec or an UpdateSpec: what one of them holds is no typo. */
const KEY_KEYS = new Set([...CREATE_KEYS, ...UPDATE_KEYS]);
const NAT_KEYS = new Set(['src', 'dst']);
const NAT_TARGET_KEYS = new Set(['address', 'port']);
const VTAG_KEYS = new Set(['original', 'reply']);
const DCCP_ROLES: Readonly<Record<string, number>> = { client: 0, server: 1 };
const PORT_PROTOCOLS = new Set([6, 17, 33, 132, 136]);

// Status bits (include/uapi/linux/netfilter/nf_conntrack_common.h).
const IPS_EXPECTED = 1 << 0;
const IPS_CONFIRMED = 1 << 3;
const IPS_SRC_NAT = 1 << 4;
const IPS_DST_NAT = 1 << 5;
const IPS_DYING = 1 << 9;
/** What ctnetlink lets a request set: the rest is IPS_UNCHANGEABLE_MASK (native/change.h kSettableStatus). */
const SETTABLE_STATUS = (1 << 1) | (1 << 2) | (1 << 10) | (1 << 12) | (1 << 13);
const ALL_LABELS = Buffer.alloc(16, 0xff);

function stateNumber(state: unknown, protocol: number, op: string): number {
  const table = stateTable(protocol);
  if (!table) throw ConntrackError.invalid(op, `state: protocol ${protocol} has no state`, 'state');
  const n = typeof state === 'string' ? stateIndex(protocol, state) : -1;
  if (n < 0) throw ConntrackError.invalid(op, `state ${describe(state)} is unknown (one of ${table.join(', ')})`, 'state');
  return n;
}

function checkStatus(status: unknown, op: string): number {
  if (!Array.isArray(status)) throw ConntrackError.invalid(op, 'status must be a list of flag names', 'status');
  return statusBits(toList(status), (m) => ConntrackError.invalid(op, `status: ${m}`, 'status'));
}

function checkTimeout(v: unknown, op: string): number {
  // The kernel accepts 0 and the entry expires at once: never what was meant (delete() removes an entry).
  return checkUint(v, 0xffffffff, op, 'timeout', 1);
}

/**
 * Protocol, original tuple and the zones of a key or spec, checked together.
 * With `fromReply` (create), a missing original is derived from the reply.
 */
function keySpec(o: object, op: string, fromReply = false): { protocol: number; spec: NativeEntrySpec } {
  const protocolOpt = own(o, 'protocol');
  if (protocolOpt === undefined) throw ConntrackError.invalid(op, 'protocol is required', 'protocol');
  const protocol = checkProtocol(protocolOpt, op);
  let spec: NativeEntrySpec;
  if (fromReply && own(o, 'original') === undefined) {
    if (own(o, 'reply') === undefined) throw ConntrackError.invalid(op, 'an original or a reply tuple is required', 'original');
    const reply = encodeTuple(own(o, 'reply'), protocol, op, 'reply');
    spec = { family: reply.family, original: invertTuple(reply.tuple, protocol), reply: reply.tuple };
  } else {
    const { tuple, family } = encodeTuple(own(o, 'original'), protocol, op, 'original');
    spec = { family, original: tuple };
  }
  const zone = own(o, 'zone');
  if (zone !== undefined) spec.zone = checkUint(zone, 65535, op, 'zone');
  const family = own(o, 'family');
  if (family !== undefined && family !== (spec.family === 2 ? 'ipv4' : 'ipv6')) {
    throw ConntrackError.invalid(op, `family ${describe(family)} does not match the tuple's addresses`, 'family');
  }
  checkOneZone(spec, op);
  return { protocol, spec };
}

function idOf(o: object, op: string): number | undefined {
  const id = own(o, 'id');
  return id === undefined ? undefined : checkUint(id, 0xffffffff, op, 'id');
}

/**
 * A FlowKey for get() and delete(): protocol, original tuple and zones, plus
 * the id when one is given (checked for both; only delete() sends it). An
 * Entry, a CreateSpec or an UpdateSpec is a key; anything else is a typo.
 */
export function encodeFlowKey(key: unknown, op: string): { spec: NativeEntrySpec; id: number | undefined } {
  const k = checkOptions(key, op, 'key');
  checkKnownKeys(k, KEY_KEYS, op, 'key');
  return { spec: keySpec(k, op).spec, id: idOf(k, op) };
}

/** The kernel holds one zone per entry: for both directions, or for one of them. */
function checkOneZone(spec: NativeEntrySpec, op: string): void {
  const both = spec.zone ?? 0;
  const orig = spec.original?.zone;
  const reply = spec.reply?.zone;
  const set = [both !== 0, orig !== undefined, reply !== undefined].filter(Boolean).length;
  if (set > 1) throw ConntrackError.invalid(op, 'an entry has one zone: give zone (both directions), original.zone or reply.zone, not several');
}

type ProtoInfo = Pick<NativeEntrySpec, 'state' | 'vtagOriginal' | 'vtagReply' | 'dccpRole'>;

/** State with the SCTP tags or DCCP role the kernel sets together with it. */
function protoInfo(o: object, protocol: number, op: 'create' | 'update'): ProtoInfo {
  const out: ProtoInfo = {};
  const state = own(o, 'state');
  const vtag = own(o, 'vtag');
  const role = own(o, 'role');
  if (vtag !== undefined) {
    if (protocol !== 132) throw ConntrackError.invalid(op, 'vtag applies to sctp only', 'vtag');
    if (state === undefined) throw ConntrackError.invalid(op, 'vtag needs state: the kernel sets the SCTP state and both tags together', 'vtag');
    checkPlainObject(vtag, op, 'vtag', { shape: '{ original, reply }', known: VTAG_KEYS, argument: 'vtag' });
    out.vtagOriginal = checkUint(own(vtag, 'original'), 0xffffffff, op, 'vtag.original');
    out.vtagReply = checkUint(own(vtag, 'reply'), 0xffffffff, op, 'vtag.reply');
  }
  // The kernel takes an SCTP state only together with both verification
  // tags: an update without them sends the entry's own (native/change.cc);
  // create() sends 0 tags when none are given (a new entry has no
  // association to break).
  if (role !== undefined) {
    if (protocol !== 33) throw ConntrackError.invalid(op, 'role applies to dccp only', 'role');
    if (state === undefined) throw ConntrackError.invalid(op, 'role needs state: the kernel sets the DCCP state and role together', 'role');
    if (typeof role !== 'string' || !Object.hasOwn(DCCP_ROLES, role)) throw ConntrackError.invalid(op, `role must be 'client' or 'server', got ${describe(role)}`, 'role');
    out.dccpRole = DCCP_ROLES[role]!;
  }
  if (state !== undefined) out.state = stateNumber(state, protocol, op);
  return out;
}

function labelList(v: unknown, what: string, op: string): Buffer {
  if (!Array.isArray(v)) throw ConntrackError.invalid(op, `${what} must be a list of label bits or names, got ${describe(v)}`, what);
  return labelBitmap(toList(v), op, what);
}

function markOf(mark: unknown, op: string): Pick<NativeChange, 'mark' | 'markMask'> {
  if (typeof mark !== 'object' || mark === null) return { mark: checkUint(mark, 0xffffffff, op, 'mark') };
  checkKnownKeys(mark, new Set(['value', 'mask']), op, 'mark', 'mark');
  return { mark: checkUint(own(mark, 'value'), 0xffffffff, op, 'mark.value'), markMask: checkUint(own(mark, 'mask'), 0xffffffff, op, 'mark.mask') };
}

/**
 * The change fields of an UpdateSpec or of updateWhere's `changes`, as
 * native/change.h applies them to the entry as it is: a mark under its mask,
 * status flags added, labels replaced (mask all ones) or added and cleared.
 */
function changeOf(o: object, op: string): NativeChange {
  const change: NativeChange = {};
  const timeout = own(o, 'timeout');
  if (timeout !== undefined) change.timeout = checkTimeout(timeout, op);
  const status = own(o, 'status');
  if (status !== undefined) change.status = checkStatus(status, op);
  const mark = own(o, 'mark');
  if (mark !== undefined) Object.assign(change, markOf(mark, op));
  const labels = own(o, 'labels');
  const labelsAdd = own(o, 'labelsAdd');
  const labelsDelete = own(o, 'labelsDelete');
  if (labels !== undefined) {
    if (labelsAdd !== undefined || labelsDelete !== undefined) throw ConntrackError.invalid(op, 'give labels (the whole set) or labelsAdd/labelsDelete, not both', 'labels');
    change.labels = labelList(labels, 'labels', op);
    change.labelsMask = ALL_LABELS;
  } else if (labelsAdd !== undefined || labelsDelete !== undefined) {
    // The kernel replaces the bits under the mask: added ones set, deleted ones cleared, the rest kept.
    const add = labelsAdd === undefined ? Buffer.alloc(16) : labelList(labelsAdd, 'labelsAdd', op);
    const del = labelsDelete === undefined ? Buffer.alloc(16) : labelList(labelsDelete, 'labelsDelete', op);
    if (add.some((b, i) => (b & del[i]!) !== 0)) throw ConntrackError.invalid(op, 'a label is both in labelsAdd and labelsDelete', 'labelsDelete');
    change.labels = add;
    change.labelsMask = Buffer.from(add.map((b, i) => b | del[i]!));
  }
  return change;
}

/**
 * update(): the key (with the id to check, when given) and the change. An
 * Entry or a spread of one passes: what it carries that no update sets is
 * ignored, and native/change.h sends only what differs from the entry now.
 */
export function encodeUpdate(input: unknown): { key: NativeEntrySpec; id: number | undefined; change: NativeChange } {
  const op = 'update';
  const o = checkOptions(input, op, 'spec');
  if (own(o, 'nat') !== undefined) {
    throw ConntrackError.invalid(op, 'nat cannot be changed on an existing entry (the kernel sets up NAT only when it creates one)', 'nat');
  }
  checkKnownKeys(o, UPDATE_KEYS, op, 'spec');
  const { protocol, spec } = keySpec(o, op);
  return { key: spec, id: idOf(o, op), change: { ...changeOf(o, op), ...protoInfo(o, protocol, op) } };
}

/** updateWhere()'s changes: an UpdateChanges, checked; the kernel's own status flags are refused. */
export function encodeChanges(input: unknown, op: string): NativeChange {
  checkPlainObject(input, op, 'changes', { known: CHANGE_KEYS });
  const change = changeOf(input, op);
  if (Object.keys(change).length === 0) throw ConntrackError.invalid(op, `changes is empty: give ${[...CHANGE_KEYS].join(', ')}`);
  if (change.status !== undefined && (change.status & ~SETTABLE_STATUS) !== 0) {
    throw ConntrackError.invalid(op, 'status: only SEEN_REPLY, ASSURED, FIXED_TIMEOUT, NAT_CLASH and HELPER can be set; the kernel keeps the other flags for itself', 'status');
  }
  return change;
}

/** '10.0.0.1:8080' or '[2001:db8::1]:8080', as conntrack writes IP:PORT: what to write instead. */
function natTargetHint(s: string): string | undefined {
  const m = /^(\d{1,3}(?:\.\d{1,3}){3}):(\d+)$/.exec(s) ?? /^\[([0-9A-Fa-f:.]+)\]:(\d+)$/.exec(s);
  return m ? `write { address: '${m[1]}', port: ${m[2]} }, not '${s}' (an address with a port is an object here)` : undefined;
}

function encodeNatTarget(t: unknown, family: number, op: string, what: string): { address: Buffer; port?: number } {
  if (typeof t === 'string') {
    const hint = natTargetHint(t);
    if (hint) throw ConntrackError.invalid(op, `${what}: ${hint}`, what);
  }
  const target = typeof t === 'string' ? { address: t } : t;
  checkPlainObject(target, op, what, { shape: 'an address or { address, port? }', known: NAT_TARGET_KEYS, argument: what });
  const host = parseHost(own(target, 'address'), op, `${what}.address`);
  if ((host.family === 4 ? 2 : 10) !== family) throw ConntrackError.invalid(op, `${what}.address must be of the tuple's family`, `${what}.address`);
  const out: { address: Buffer; port?: number } = { address: Buffer.from(host.bytes) };
  const port = own(target, 'port');
  if (port !== undefined) out.port = checkUint(port, 65535, op, `${what}.port`);
  return out;
}

/**
 * The translation a NATed entry's reply tuple records (an Entry passed back
 * to create()): source NAT rewrote the source to the reply's destination,
 * destination NAT the destination to the reply's source.
 */
function natFromReply(status: number, reply: NativeTuple, protocol: number): Pick<NativeEntrySpec, 'snat' | 'dnat'> {
  const out: Pick<NativeEntrySpec, 'snat' | 'dnat'> = {};
  const ports = PORT_PROTOCOLS.has(protocol) && reply.sport !== undefined;
  if (status & IPS_SRC_NAT) out.snat = { address: reply.dst!, ...(ports ? { port: reply.dport! } : {}) };
  if (status & IPS_DST_NAT) out.dnat = { address: reply.src!, ...(ports ? { port: reply.sport! } : {}) };
  return out;
}

/** create(): a CreateSpec or an Entry, checked and encoded for the native request. */
export function encodeCreate(input: unknown): NativeEntrySpec {
  const op = 'create';
  const o = checkOptions(input, op, 'spec');
  checkKnownKeys(o, CREATE_KEYS, op, 'spec');
  idOf(o, op);
  const { protocol, spec } = keySpec(o, op, true);
  const timeout = own(o, 'timeout');
  if (timeout === undefined) throw ConntrackError.invalid(op, 'timeout (seconds) is required', 'timeout');
  spec.timeout = checkTimeout(timeout, op);
  const replyOpt = own(o, 'reply');
  if (!spec.reply && replyOpt !== undefined) {
    const reply = encodeTuple(replyOpt, protocol, op, 'reply');
    if (reply.family !== spec.family) throw ConntrackError.invalid(op, 'original and reply must be of the same family', 'reply');
    spec.reply = reply.tuple;
  }
  Object.assign(spec, protoInfo(o, protocol, op));
  const labels = own(o, 'labels');
  if (labels !== undefined) spec.labels = labelList(labels, 'labels', op);
  const status = own(o, 'status');
  const bits = status === undefined ? 0 : checkStatus(status, op);
  // The kernel refuses (EBUSY) a status that would set EXPECTED or DYING, or clear CONFIRMED.
  if (status !== undefined) spec.status = ((bits & ~(IPS_EXPECTED | IPS_DYING)) | IPS_CONFIRMED) >>> 0;
  const mark = own(o, 'mark');
  if (mark !== undefined) spec.mark = checkUint(mark, 0xffffffff, op, 'mark');
  const nat = own(o, 'nat');
  if (nat !== undefined) {
    checkPlainObject(nat, op, 'nat', { shape: '{ src?, dst? }', known: NAT_KEYS, argument: 'nat' });
    if (replyOpt !== undefined) throw ConntrackError.invalid(op, 'give nat or reply, not both: the kernel rewrites the reply tuple from the NAT', 'nat');
    for (const side of ['src', 'dst'] as const) {
      const t = own(nat, side);
      if (t !== undefined) spec[side === 'src' ? 'snat' : 'dnat'] = encodeNatTarget(t, spec.family, op, `nat.${side}`);
    }
  } else if (spec.reply && (bits & (IPS_SRC_NAT | IPS_DST_NAT))) {
    Object.assign(spec, natFromReply(bits, spec.reply, protocol));
  }
  // With NAT the reply sent is the plain inverse; the kernel rewrites it from the translation.
  if (spec.snat || spec.dnat || !spec.reply) spec.reply = { ...invertTuple(spec.original!, protocol), ...(spec.reply?.zone !== undefined ? { zone: spec.reply.zone } : {}) };
  checkOneZone(spec, op);
  return spec;
}
