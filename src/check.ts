/**
 * Argument checking shared by every public call. Whatever a caller passes
 * (wrong types, bigints, Proxies, null-prototype or prototype-polluted
 * objects, sparse arrays) either becomes a ConntrackError ERR_INVALID_ARG here or is
 * the caller's own exception passed through unchanged: nothing else escapes.
 *
 * Only own properties are read: a polluted Object.prototype (`family`,
 * `dryRun`, `direction`...) must never widen or redirect an operation.
 */
import { PROTOCOL_NUMBERS, type ProtocolName } from './entry.js';
import { ConntrackError } from './errors.js';

/** A short, always-printable description of any value for an error message. */
export function describe(v: unknown): string {
  switch (typeof v) {
    case 'string':
      return JSON.stringify(v.length > 64 ? `${v.slice(0, 64)}…` : v);
    case 'bigint':
      return `${v}n`;
    case 'symbol':
    case 'function':
      return typeof v;
    case 'object': {
      if (v === null) return 'null';
      if (Array.isArray(v)) return 'an array';
      return 'an object';
    }
    default:
      return String(v);
  }
}

/**
 * `o[key]` if `o` has it as an own property, else undefined: an own
 * property whose value is undefined reads as an absent one, everywhere
 * options are read. Getters run; what they throw propagates.
 */
export function own(o: object, key: string): unknown {
  return Object.prototype.hasOwnProperty.call(o, key) ? (o as Record<string, unknown>)[key] : undefined;
}

/** How checkPlainObject words its refusal and what else it checks. */
export interface PlainObjectRules {
  /** What the value must be, for the message: 'an object' unless given, e.g. '{ value, mask }'. */
  shape?: string;
  /** Own keys allowed (checkKnownKeys); anything else is refused. */
  known?: ReadonlySet<string>;
  /** The argument to blame (ConntrackError.argument): the object's path; an unknown key's is under it. */
  argument?: string;
}

/** A plain object, not null, an array or a primitive (and with only `known` keys): `${what} must be ${shape}, got ...` otherwise. */
export function checkPlainObject(v: unknown, op: string, what: string, rules: PlainObjectRules = {}): asserts v is object {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) {
    throw ConntrackError.invalid(op, `${what} must be ${rules.shape ?? 'an object'}, got ${describe(v)}`, rules.argument);
  }
  if (rules.known) checkKnownKeys(v, rules.known, op, what, rules.argument);
}

/** An options object (or undefined): plain data, not an array or a primitive. */
export function checkOptions(o: unknown, op: string, what = 'options'): object {
  if (o === undefined) return {};
  checkPlainObject(o, op, what);
  return o;
}

/**
 * Refuses own properties not in `known` (a typo must not silently widen a
 * filter or a delete). A property whose value is undefined is taken as
 * absent, as own() takes it: options built with spreads and conditional
 * values (`{ ...base, timeoutMs: t }`) mean nothing by it, and it can widen
 * nothing. `at` is the object's path in the call's arguments ('nat',
 * 'original.icmp'; none for the top level): the refusal's `argument` is the
 * unknown key's path under it.
 */
export function checkKnownKeys(o: object, known: ReadonlySet<string>, op: string, what: string, at?: string): void {
  for (const k of Reflect.ownKeys(o)) {
    if (typeof k === 'symbol' || !known.has(k)) {
      // The descriptor, not a read: an accessor's getter is not run for a key that is refused anyway.
      const d = Reflect.getOwnPropertyDescriptor(o, k);
      if (d !== undefined && 'value' in d && d.value === undefined) continue;
      const name = typeof k === 'symbol' ? `[${k.description ?? ''}]` : k;
      const argument = at === undefined ? name : `${at}.${name}`;
      throw ConntrackError.invalid(op, `unknown ${what} field ${describe(k)} (known: ${[...known].join(', ')})`, argument);
    }
  }
}

/**
 * A value or a list of values, copied element by element into a plain array:
 * holes become undefined (and are then rejected), and a replaced
 * `constructor` or Symbol.species cannot change what we build.
 */
export function toList(v: unknown): unknown[] {
  if (!Array.isArray(v)) return [v];
  const len = v.length;
  const out = new Array<unknown>(len);
  for (let i = 0; i < len; i++) out[i] = v[i];
  return out;
}

/** An integer from `min` to `max`; `what` names the argument (its path: 'timeout', 'original.sport'). */
export function checkUint(v: unknown, max: number, op: string, what: string, min = 0): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    throw ConntrackError.invalid(op, `${what} must be an integer from ${min} to ${max}, got ${describe(v)}`, what);
  }
  return v;
}

export function checkProtocol(p: unknown, op: string): number {
  if (typeof p === 'number') return checkUint(p, 255, op, 'protocol');
  if (typeof p === 'string' && Object.hasOwn(PROTOCOL_NUMBERS, p.toLowerCase())) {
    return PROTOCOL_NUMBERS[p.toLowerCase() as ProtocolName];
  }
  throw ConntrackError.invalid(op, `protocol ${describe(p)} is unknown (one of ${Object.keys(PROTOCOL_NUMBERS).join(', ')}, or a number)`, 'protocol');
}

export const AF = { ipv4: 2, ipv6: 10 } as const;

export function checkFamily(f: unknown, op: string): 2 | 10 {
  if (f === 'ipv4' || f === 'ipv6') return AF[f];
  throw ConntrackError.invalid(op, `family must be 'ipv4' or 'ipv6', got ${describe(f)}`, 'family');
}

export function checkBoolean(v: unknown, op: string, what: string): boolean | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== 'boolean') throw ConntrackError.invalid(op, `${what} must be true or false, got ${describe(v)}`, what);
  return v;
}

export function checkSignal(v: unknown, op: string): AbortSignal | undefined {
  if (v === undefined) return undefined;
  if (!(v instanceof AbortSignal)) throw ConntrackError.invalid(op, `signal must be an AbortSignal, got ${describe(v)}`, 'signal');
  return v;
}
