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
  original: Tuple;
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
}

export interface UpdateSpec {
  protocol: ProtocolName | number;
  original: Tuple;
  zone?: number;
  /** Seconds, at least 1 (capped by the kernel as for create()). */
  timeout?: number;
  state?: StateName;
  status?: readonly StatusFlag[];
  mark?: number;
}

const CREATE_KEYS = new Set(['protocol', 'original', 'reply', 'timeout', 'state', 'status', 'mark', 'zone']);
const UPDATE_KEYS = new Set(['protocol', 'original', 'zone', 'timeout', 'state', 'status', 'mark']);
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

/** Protocol, original tuple and the zones of a key or spec, checked together. */
function keySpec(o: object, op: string): { protocol: number; spec: NativeEntrySpec } {
  const protocolOpt = own(o, 'protocol');
  if (protocolOpt === undefined) throw ConntrackError.invalid(op, 'protocol is required');
  const protocol = checkProtocol(protocolOpt, op);
  const { tuple, family } = encodeTuple(own(o, 'original'), protocol, op, 'original');
  const spec: NativeEntrySpec = { family, original: tuple };
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
  const { protocol, spec } = keySpec(o, op);
  if (op === 'create') {
    const timeout = own(o, 'timeout');
    if (timeout === undefined) throw ConntrackError.invalid(op, 'timeout (seconds) is required');
    const replyOpt = own(o, 'reply');
    if (replyOpt !== undefined) {
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
  // The kernel takes an SCTP state only together with both verification
  // tags, and this API does not carry them yet: an update would overwrite a
  // live association's tags with 0. (create() sends 0 tags: a new entry has
  // no association to break.)
  if (state !== undefined && op === 'update' && protocol === 132) {
    throw ConntrackError.invalid(op, "an SCTP entry's state cannot be updated without its verification tags (the kernel would reset them to 0)");
  }
  if (state !== undefined) spec.state = stateNumber(state, protocol, op);
  // The kernel refuses (EBUSY) a status that would clear CONFIRMED; libnetfilter_conntrack sets it too.
  const status = own(o, 'status');
  if (status !== undefined) spec.status = (checkStatus(status, op) | IPS_CONFIRMED) >>> 0;
  const mark = own(o, 'mark');
  if (mark !== undefined) spec.mark = checkUint(mark, 0xffffffff, op, 'mark');
  checkOneZone(spec, op);
  return spec;
}
