/**
 * What identifies and what creates one entry: the FlowKey that get(),
 * update() and delete() take (an Entry is one), the CreateSpec and
 * UpdateSpec, and their codec to the native request. One concept, one
 * place, as ti-mo/conntrack's flow.go.
 */
import { checkKnownKeys, checkOptions, checkProtocol, checkUint, describe, own, toList } from './check.js';
import { stateIndex, stateTable, statusBits, type ProtocolName, type StateName, type StatusFlag, type Tuple } from './entry.js';
import { ConntrackError } from './errors.js';
import type { NativeEntrySpec } from './native.js';
import { parseHost } from './address.js';
import { labelBitmap } from './labels.js';
import { encodeTuple, invertTuple } from './tuple.js';

/**
 * What identifies one entry: get(), update() and delete() take it, and an
 * Entry (from list(), dump(), get() or an event) is one. `original.zone` /
 * `reply.zone` are zones of one direction (conntrack --orig-zone/--reply-zone).
 */
export interface FlowKey {
  protocol: ProtocolName | number;
  original: Tuple;
  /** The zone of both directions (conntrack -w). */
  zone?: number;
  /** With delete(): only delete if the entry still has this id (an Entry's id is sent). */
  id?: number;
}

export interface CreateSpec {
  protocol: ProtocolName | number;
  /** Derived from `reply` when omitted (conntrack -I with -r/-q only); one of the two is required. */
  original?: Tuple;
  /** Derived from `original` (addresses and ports swapped, ICMP echo -> echo reply) when omitted. */
  reply?: Tuple;
  /**
   * Seconds, at least 1. The kernel caps it at INT_MAX jiffies (about 24.8
   * days at HZ=1000, 99 days at HZ=250) without saying so.
   */
  timeout: number;
  state?: StateName;
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

export interface UpdateSpec {
  protocol: ProtocolName | number;
  original: Tuple;
  zone?: number;
  /** Seconds, at least 1 (capped by the kernel as for create()). */
  timeout?: number;
  state?: StateName;
  status?: readonly StatusFlag[];
  /** The new mark, or { value, mask }: the bits under mask are cleared, then value is XORed in (conntrack -U -m MARK/MASK). */
  mark?: number | { value: number; mask: number };
  /** Replaces the whole label set ([] clears it, as conntrack --label-del with no label). */
  labels?: readonly (number | string)[];
  /** Sets these labels, leaving the others (conntrack --label-add). */
  labelsAdd?: readonly (number | string)[];
  /** Clears these labels, leaving the others (conntrack --label-del LABEL). */
  labelsDelete?: readonly (number | string)[];
  /** SCTP verification tags, required with an SCTP `state` (the kernel sets all three together). */
  vtag?: SctpVtags;
  /** DCCP role, with `state`. */
  role?: 'client' | 'server';
}

const CREATE_KEYS = new Set(['protocol', 'original', 'reply', 'timeout', 'state', 'status', 'mark', 'zone', 'labels', 'vtag', 'role', 'nat']);
const NAT_KEYS = new Set(['src', 'dst']);
const NAT_TARGET_KEYS = new Set(['address', 'port']);
const UPDATE_KEYS = new Set([
  'protocol', 'original', 'zone', 'timeout', 'state', 'status', 'mark', 'labels', 'labelsAdd', 'labelsDelete', 'vtag', 'role',
]);
const VTAG_KEYS = new Set(['original', 'reply']);
const DCCP_ROLES: Readonly<Record<string, number>> = { client: 0, server: 1 };
const IPS_CONFIRMED = 1 << 3;

function stateNumber(state: unknown, protocol: number, op: string): number {
  const table = stateTable(protocol);
  if (!table) throw ConntrackError.invalid(op, `protocol ${protocol} has no state`);
  const n = typeof state === 'string' ? stateIndex(protocol, state) : -1;
  if (n < 0) throw ConntrackError.invalid(op, `unknown state ${describe(state)} (one of ${table.join(', ')})`);
  return n;
}

function checkStatus(status: unknown, op: string): number {
  if (!Array.isArray(status)) throw ConntrackError.invalid(op, 'status must be a list of flag names');
  return statusBits(toList(status), (m) => ConntrackError.invalid(op, m));
}

function checkTimeout(v: unknown, op: string): number {
  const t = checkUint(v, 0xffffffff, op, 'timeout');
  // The kernel accepts 0 and the entry expires at once: never what was meant.
  if (t === 0) throw ConntrackError.invalid(op, 'timeout must be at least 1 second (delete() removes an entry)');
  return t;
}

/**
 * Protocol, original tuple and the zones of a key or spec, checked together.
 * With `fromReply` (create), a missing original is derived from the reply.
 */
function keySpec(o: object, op: string, fromReply = false): { protocol: number; spec: NativeEntrySpec } {
  const protocolOpt = own(o, 'protocol');
  if (protocolOpt === undefined) throw ConntrackError.invalid(op, 'protocol is required');
  const protocol = checkProtocol(protocolOpt, op);
  let spec: NativeEntrySpec;
  if (fromReply && own(o, 'original') === undefined) {
    if (own(o, 'reply') === undefined) throw ConntrackError.invalid(op, 'an original or a reply tuple is required');
    const reply = encodeTuple(own(o, 'reply'), protocol, op, 'reply');
    spec = { family: reply.family, original: invertTuple(reply.tuple, protocol), reply: reply.tuple };
  } else {
    const { tuple, family } = encodeTuple(own(o, 'original'), protocol, op, 'original');
    spec = { family, original: tuple };
  }
  const zone = own(o, 'zone');
  if (zone !== undefined) spec.zone = checkUint(zone, 65535, op, 'zone');
  return { protocol, spec };
}

/**
 * A FlowKey for get() and delete(): protocol, original tuple and zones, plus
 * the id when one is given (checked for both; only delete() sends it).
 * Extra fields are fine: an Entry is a key.
 */
export function encodeFlowKey(key: unknown, op: string): { spec: NativeEntrySpec; id: number | undefined } {
  const k = checkOptions(key, op, 'key');
  const { spec } = keySpec(k, op);
  checkOneZone(spec, op);
  const id = own(k, 'id');
  return { spec, id: id === undefined ? undefined : checkUint(id, 0xffffffff, op, 'id') };
}

/** The kernel holds one zone per entry: for both directions, or for one of them. */
function checkOneZone(spec: NativeEntrySpec, op: string): void {
  const both = spec.zone ?? 0;
  const orig = spec.original?.zone;
  const reply = spec.reply?.zone;
  const set = [both !== 0, orig !== undefined, reply !== undefined].filter(Boolean).length;
  if (set > 1) throw ConntrackError.invalid(op, 'an entry has one zone: give zone (both directions), original.zone or reply.zone, not several');
}

/** A CreateSpec or UpdateSpec, checked and encoded for the native request. */
export function encodeEntrySpec(input: unknown, op: 'create' | 'update'): NativeEntrySpec {
  const o = checkOptions(input, op, 'spec');
  checkKnownKeys(o, op === 'create' ? CREATE_KEYS : UPDATE_KEYS, op, 'spec');
  const { protocol, spec } = keySpec(o, op, op === 'create');
  if (op === 'create') {
    const timeout = own(o, 'timeout');
    if (timeout === undefined) throw ConntrackError.invalid(op, 'timeout (seconds) is required');
    const replyOpt = own(o, 'reply');
    if (spec.reply) {
      // Derived from the reply above.
    } else if (replyOpt !== undefined) {
      const reply = encodeTuple(replyOpt, protocol, op, 'reply');
      if (reply.family !== spec.family) throw ConntrackError.invalid(op, 'original and reply must be of the same family');
      spec.reply = reply.tuple;
    } else {
      spec.reply = invertTuple(spec.original!, protocol);
    }
  }
  const timeout = own(o, 'timeout');
  if (timeout !== undefined) spec.timeout = checkTimeout(timeout, op);
  const state = own(o, 'state');
  const vtag = own(o, 'vtag');
  const role = own(o, 'role');
  if (vtag !== undefined) {
    if (protocol !== 132) throw ConntrackError.invalid(op, 'vtag applies to sctp only');
    if (state === undefined) throw ConntrackError.invalid(op, 'vtag needs state: the kernel sets the SCTP state and both tags together');
    if (typeof vtag !== 'object' || vtag === null || Array.isArray(vtag)) throw ConntrackError.invalid(op, `vtag must be { original, reply }, got ${describe(vtag)}`);
    checkKnownKeys(vtag, VTAG_KEYS, op, 'vtag');
    spec.vtagOriginal = checkUint(own(vtag, 'original'), 0xffffffff, op, 'vtag.original');
    spec.vtagReply = checkUint(own(vtag, 'reply'), 0xffffffff, op, 'vtag.reply');
  }
  // The kernel takes an SCTP state only together with both verification
  // tags: an update without them would overwrite a live association's tags
  // with 0. (create() sends 0 tags when none are given: a new entry has no
  // association to break.)
  if (state !== undefined && op === 'update' && protocol === 132 && vtag === undefined) {
    throw ConntrackError.invalid(op, "an SCTP entry's state cannot be updated without its verification tags (vtag: { original, reply }; the kernel would reset them to 0)");
  }
  if (role !== undefined) {
    if (protocol !== 33) throw ConntrackError.invalid(op, 'role applies to dccp only');
    if (state === undefined) throw ConntrackError.invalid(op, 'role needs state: the kernel sets the DCCP state and role together');
    if (typeof role !== 'string' || !Object.hasOwn(DCCP_ROLES, role)) throw ConntrackError.invalid(op, `role must be 'client' or 'server', got ${describe(role)}`);
    spec.dccpRole = DCCP_ROLES[role]!;
  }
  if (state !== undefined) spec.state = stateNumber(state, protocol, op);
  const labels = own(o, 'labels');
  const labelsAdd = own(o, 'labelsAdd');
  const labelsDelete = own(o, 'labelsDelete');
  const labelList = (v: unknown, what: string): unknown[] => {
    if (!Array.isArray(v)) throw ConntrackError.invalid(op, `${what} must be a list of label bits or names, got ${describe(v)}`);
    return toList(v);
  };
  if (labels !== undefined) {
    if (labelsAdd !== undefined || labelsDelete !== undefined) throw ConntrackError.invalid(op, 'give labels (the whole set) or labelsAdd/labelsDelete, not both');
    spec.labels = labelBitmap(labelList(labels, 'labels'), op, 'labels');
  } else if (labelsAdd !== undefined || labelsDelete !== undefined) {
    // The kernel replaces the bits under the mask: added ones set, deleted ones cleared, the rest kept.
    const add = labelBitmap(labelsAdd === undefined ? [] : labelList(labelsAdd, 'labelsAdd'), op, 'labelsAdd');
    const del = labelBitmap(labelsDelete === undefined ? [] : labelList(labelsDelete, 'labelsDelete'), op, 'labelsDelete');
    if (add.some((b, i) => (b & del[i]!) !== 0)) throw ConntrackError.invalid(op, 'a label is both in labelsAdd and labelsDelete');
    spec.labels = add;
    spec.labelsMask = Buffer.from(add.map((b, i) => b | del[i]!));
  }
  // The kernel refuses (EBUSY) a status that would clear CONFIRMED; libnetfilter_conntrack sets it too.
  const status = own(o, 'status');
  if (status !== undefined) spec.status = (checkStatus(status, op) | IPS_CONFIRMED) >>> 0;
  const mark = own(o, 'mark');
  if (typeof mark === 'object' && mark !== null && op === 'update') {
    checkKnownKeys(mark, new Set(['value', 'mask']), op, 'mark');
    spec.mark = checkUint(own(mark, 'value'), 0xffffffff, op, 'mark.value');
    spec.markMask = checkUint(own(mark, 'mask'), 0xffffffff, op, 'mark.mask');
  } else if (mark !== undefined) spec.mark = checkUint(mark, 0xffffffff, op, 'mark');
  const nat = own(o, 'nat');
  if (nat !== undefined) {
    if (typeof nat !== 'object' || nat === null || Array.isArray(nat)) throw ConntrackError.invalid(op, `nat must be { src?, dst? }, got ${describe(nat)}`);
    checkKnownKeys(nat, NAT_KEYS, op, 'nat');
    if (own(o, 'reply') !== undefined) throw ConntrackError.invalid(op, 'give nat or reply, not both: the kernel rewrites the reply tuple from the NAT');
    for (const side of ['src', 'dst'] as const) {
      const t = own(nat, side);
      if (t === undefined) continue;
      const target = typeof t === 'string' ? { address: t } : t;
      if (typeof target !== 'object' || target === null) throw ConntrackError.invalid(op, `nat.${side} must be an address or { address, port? }`);
      checkKnownKeys(target, NAT_TARGET_KEYS, op, `nat.${side}`);
      const host = parseHost(own(target, 'address'), op, `nat.${side}.address`);
      if ((host.family === 4 ? 2 : 10) !== spec.family) throw ConntrackError.invalid(op, `nat.${side}.address must be of the tuple's family`);
      const out: { address: Buffer; port?: number } = { address: Buffer.from(host.bytes) };
      const port = own(target, 'port');
      if (port !== undefined) out.port = checkUint(port, 65535, op, `nat.${side}.port`);
      spec[side === 'src' ? 'snat' : 'dnat'] = out;
    }
    // The reply sent is the plain inverse; the kernel rewrites it from the translation.
  }
  checkOneZone(spec, op);
  return spec;
}
