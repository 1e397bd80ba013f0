/**
 * ctmon's options: one table per command (src/cli/commands.ts) drives the
 * parser (node:util's parseArgs), `--help`, the shell completions and the man
 * page, so none of them can drift from the others. This file also holds the
 * conntrack-style filter flags every data command shares.
 */
import { isIP } from 'node:net';
import { parseArgs as parseArgv, type ParseArgsConfig } from 'node:util';
import { ConntrackError } from '../errors.js';
import type { Filter } from '../filter.js';

export class UsageError extends Error {
  override readonly name = 'UsageError';
}

export interface OptionSpec {
  /** Long name; the parsed value is stored under it. */
  name: string;
  short?: string;
  /**
   * 'list' options may repeat and take comma-separated values. 'optional'
   * takes a value only when one follows that `optionalValue` accepts
   * (conntrack's `--src-nat [IP]`); alone, it parses as ''.
   */
  type: 'string' | 'boolean' | 'number' | 'list' | 'optional';
  /** For 'optional': whether the next word is this option's value. */
  optionalValue?: (word: string) => boolean;
  /** What the value is, as help and the man page show it: ADDR, PORT, NAME ... */
  placeholder?: string;
  help: string;
  /** Other long spellings, conntrack's (--orig-src for --src). */
  aliases?: string[];
  /** The values a shell may complete. */
  choices?: readonly string[];
}

export type ParsedArgs = Record<string, string | boolean | number | string[] | undefined> & { _: string[] };

/** An option's value if it is of the type its spec gives it; a value of another type is this program's own mistake. */
function valueOf<T>(a: ParsedArgs, name: string, is: (v: unknown) => v is T, type: string): T | undefined {
  const v = a[name];
  if (v === undefined || is(v)) return v;
  throw new Error(`ctmon: option --${name} holds ${typeof v}, not ${type}: its spec has another type`);
}
const isString = (v: unknown): v is string => typeof v === 'string';
const isNumber = (v: unknown): v is number => typeof v === 'number';
const isList = (v: unknown): v is string[] => Array.isArray(v) && v.every(isString);

/** A 'string' or 'optional' option's value, or undefined when not given. */
export const stringArg = (a: ParsedArgs, name: string): string | undefined => valueOf(a, name, isString, 'a string');
/** A 'number' option's value, or undefined when not given. */
export const numberArg = (a: ParsedArgs, name: string): number | undefined => valueOf(a, name, isNumber, 'a number');
/** A 'list' option's values (every use, comma lists split), or undefined when not given. */
export const listArg = (a: ParsedArgs, name: string): string[] | undefined => valueOf(a, name, isList, 'a list');

/** How each option of a parse was last typed ('-s', '--src', '--orig-src'), by its spec name. */
const typed = new WeakMap<ParsedArgs, Map<string, string>>();

/** The spelling the user typed for option `name`, or its long form. */
export function spellingOf(args: ParsedArgs, name: string): string {
  return typed.get(args)?.get(name) ?? `--${name}`;
}

/** The spelling help shows for an option: `-s, --src, --orig-src ADDR`. */
export function optionLabel(s: OptionSpec): string {
  const names = [...(s.short ? [`-${s.short}`] : []), `--${s.name}`, ...(s.aliases ?? []).map((a) => `--${a}`)];
  const value = s.placeholder ?? 'VALUE';
  return names.join(', ') + (s.type === 'boolean' ? '' : s.type === 'optional' ? ` [${value}]` : ` ${value}`);
}

/** Rewrites a bare 'optional' flag whose next word is not its value to `--flag=`, so the parser needs no special case. */
function settleOptionalValues(argv: readonly string[], specs: readonly OptionSpec[]): string[] {
  const optional = new Map<string, OptionSpec>();
  for (const s of specs) {
    if (s.type !== 'optional') continue;
    for (const n of [s.name, ...(s.aliases ?? [])]) optional.set(`--${n}`, s);
    if (s.short) optional.set(`-${s.short}`, s);
  }
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const word = argv[i]!;
    if (word === '--') {
      out.push(...argv.slice(i));
      break;
    }
    const spec = optional.get(word);
    if (!spec) {
      out.push(word);
      continue;
    }
    const next = argv[i + 1];
    if (next !== undefined && !next.startsWith('-') && (spec.optionalValue?.(next) ?? true)) out.push(word, next), i++;
    else out.push(word.startsWith('--') ? `${word}=` : `--${spec.name}=`);
  }
  return out;
}

/**
 * Parses argv as conntrack, ip and ss users type it: `-s10.0.0.1`,
 * `--src=10.0.0.1`, `--src 10.0.0.1`, bundled boolean flags (`-ny`), `--`.
 */
export function parseArgs(argv: readonly string[], specs: readonly OptionSpec[]): ParsedArgs {
  const config: NonNullable<ParseArgsConfig['options']> = {};
  for (const s of specs) {
    const type = s.type === 'boolean' ? 'boolean' : 'string';
    const multiple = s.type === 'list';
    config[s.name] = { type, multiple, ...(s.short ? { short: s.short } : {}) };
    for (const a of s.aliases ?? []) config[a] = { type, multiple };
  }
  let values: Record<string, string | boolean | (string | boolean)[] | undefined>;
  let positionals: string[];
  let tokens: { kind: string; name?: string; rawName?: string }[];
  try {
    ({ values, positionals, tokens } = parseArgv({ args: settleOptionalValues(argv, specs), options: config, strict: true, allowPositionals: true, tokens: true }));
  } catch (e) {
    throw new UsageError(parseErrorMessage(e, specs));
  }
  const out: ParsedArgs = { _: positionals };
  const spelled = new Map<string, string>();
  for (const t of tokens) {
    const spec = t.kind === 'option' ? specs.find((s) => s.name === t.name || s.aliases?.includes(t.name!)) : undefined;
    if (spec && t.rawName) spelled.set(spec.name, t.rawName);
  }
  typed.set(out, spelled);
  for (const s of specs) {
    const given = [s.name, ...(s.aliases ?? [])].map((k) => values[k]).filter((v) => v !== undefined);
    if (!given.length) continue;
    if (s.type === 'boolean') out[s.name] = true;
    else if (s.type === 'list') out[s.name] = given.flat().map(String).flatMap((x) => x.split(',').filter(Boolean));
    else {
      const value = String(given.at(-1));
      if (s.type === 'number') {
        const n = Number(value);
        if (!Number.isFinite(n) || value.trim() === '') throw new UsageError(`--${s.name} needs a number, got '${value}'`);
        out[s.name] = n;
      } else out[s.name] = value;
    }
  }
  return out;
}

/** node:util's messages name its own API; ours name the flag and what it wants. */
function parseErrorMessage(e: unknown, specs: readonly OptionSpec[]): string {
  const err = e as { code?: string; message?: string };
  const message = err.message ?? String(e);
  const long = /'(?:-\w, )?--([\w-]+)/.exec(message)?.[1];
  const short = /'-(\w)[',]/.exec(message)?.[1];
  const flag = long ? `--${long}` : short ? `-${short}` : undefined;
  if (err.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') return `unknown option ${flag ?? /'([^']+)'/.exec(message)?.[1] ?? message}`;
  if (err.code !== 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE') return message;
  const spec = specs.find((s) => (long !== undefined && (s.name === long || s.aliases?.includes(long))) || (long === undefined && s.short === short));
  const name = spec && long === spec.name ? `--${spec.name}` : (flag ?? 'an option');
  if (spec?.type === 'boolean') return `${name} takes no value`;
  if (/ambiguous/.test(message)) return `${name} needs a value; for one that starts with '-', write ${name}=VALUE`;
  return `${name} needs a value${spec?.placeholder ? ` (${spec.placeholder})` : ''}`;
}

export const COMMON_OPTIONS: OptionSpec[] = [
  { name: 'netns', type: 'string', placeholder: 'NAME', help: 'network namespace: a name under /run/netns or a path like /proc/PID/ns/net' },
  { name: 'help', short: 'h', type: 'boolean', help: 'show this help' },
];

const PROTOCOLS = ['tcp', 'udp', 'udplite', 'icmp', 'icmpv6', 'sctp', 'dccp', 'gre'] as const;
const STATES = ['SYN_SENT', 'SYN_RECV', 'ESTABLISHED', 'FIN_WAIT', 'CLOSE_WAIT', 'LAST_ACK', 'TIME_WAIT', 'CLOSE', 'SYN_SENT2'] as const;
const STATUS = ['EXPECTED', 'SEEN_REPLY', 'ASSURED', 'CONFIRMED', 'SRC_NAT', 'DST_NAT', 'SEQ_ADJUST', 'DYING', 'FIXED_TIMEOUT', 'TEMPLATE', 'OFFLOAD', 'HW_OFFLOAD'] as const;
export const FAMILIES = ['ipv4', 'ipv6'] as const;

/** conntrack's own filter flags, with its long spellings. */
export const FILTER_OPTIONS: OptionSpec[] = [
  { name: 'src', short: 's', type: 'list', placeholder: 'ADDR', aliases: ['orig-src'], help: 'original source address or CIDR (repeatable, comma-separated)' },
  { name: 'dst', short: 'd', type: 'list', placeholder: 'ADDR', aliases: ['orig-dst'], help: 'original destination address or CIDR (repeatable, comma-separated)' },
  { name: 'proto', short: 'p', type: 'string', placeholder: 'PROTO', choices: PROTOCOLS, help: 'layer-4 protocol: tcp, udp, udplite, icmp, icmpv6, sctp, dccp, gre or a number' },
  { name: 'sport', type: 'list', placeholder: 'PORT', aliases: ['orig-port-src'], help: 'original source port (repeatable)' },
  { name: 'dport', type: 'list', placeholder: 'PORT', aliases: ['orig-port-dst'], help: 'original destination port (repeatable)' },
  { name: 'state', type: 'list', placeholder: 'STATE', choices: STATES, help: 'TCP/SCTP/DCCP state, e.g. ESTABLISHED (repeatable)' },
  { name: 'status', short: 'u', type: 'list', placeholder: 'FLAG', choices: STATUS, help: 'status flags that must be set, e.g. ASSURED' },
  { name: 'mark', short: 'm', type: 'string', placeholder: 'MARK[/MASK]', help: 'connection mark, optionally under a mask' },
  { name: 'zone', short: 'w', type: 'number', placeholder: 'ZONE', help: 'conntrack zone (both directions)' },
  { name: 'orig-zone', type: 'number', placeholder: 'ZONE', help: 'zone of the original direction only' },
  { name: 'reply-zone', type: 'number', placeholder: 'ZONE', help: 'zone of the reply direction only' },
  { name: 'family', short: 'f', type: 'string', placeholder: 'FAMILY', choices: FAMILIES, help: 'ipv4 or ipv6' },
  { name: 'reply-src', short: 'r', type: 'list', placeholder: 'ADDR', help: 'reply source address or CIDR (repeatable)' },
  { name: 'reply-dst', short: 'q', type: 'list', placeholder: 'ADDR', help: 'reply destination address or CIDR (repeatable)' },
  { name: 'reply-port-src', type: 'list', placeholder: 'PORT', help: 'reply source port (repeatable)' },
  { name: 'reply-port-dst', type: 'list', placeholder: 'PORT', help: 'reply destination port (repeatable)' },
  { name: 'icmp-type', type: 'number', placeholder: 'TYPE', aliases: ['icmpv6-type'], help: 'ICMP/ICMPv6 type of the original tuple' },
  { name: 'icmp-code', type: 'number', placeholder: 'CODE', aliases: ['icmpv6-code'], help: 'ICMP/ICMPv6 code' },
  { name: 'icmp-id', type: 'number', placeholder: 'ID', aliases: ['icmpv6-id'], help: 'ICMP/ICMPv6 id' },
  { name: 'src-nat', type: 'optional', placeholder: 'ADDR', optionalValue: looksLikeAddress, help: 'source-NATed entries; with ADDR, NATed to that address' },
  { name: 'dst-nat', type: 'optional', placeholder: 'ADDR', optionalValue: looksLikeAddress, help: 'destination-NATed entries; with ADDR, NATed to that address' },
  { name: 'any-nat', type: 'optional', placeholder: 'ADDR', optionalValue: looksLikeAddress, help: 'source- or destination-NATed entries; with ADDR, NATed to that address' },
  { name: 'label', short: 'l', type: 'list', placeholder: 'LABEL', help: 'labels that must be set: names from /etc/xtables/connlabel.conf or bit numbers (repeatable, comma-separated)' },
];

/** An IPv4 or IPv6 address: what may follow --src-nat as its value (anything else is the next argument). */
function looksLikeAddress(word: string): boolean {
  return isIP(word) !== 0;
}

function toPorts(v: string[] | undefined, what: string): number[] | undefined {
  if (!v) return undefined;
  return v.map((p) => {
    if (!/^\d+$/.test(p)) throw new UsageError(`--${what} needs port numbers, got '${p}'`);
    return Number(p);
  });
}

/**
 * Which option a refused argument of the library came from: a Filter field,
 * or a change of ctmon update (the library names it in ConntrackError.argument).
 */
const ARGUMENT_OPTIONS: Readonly<Record<string, string>> = {
  src: 'src', dst: 'dst', sport: 'sport', dport: 'dport', state: 'state', status: 'status', mark: 'mark', zone: 'zone',
  origZone: 'orig-zone', replyZone: 'reply-zone', family: 'family', protocol: 'proto', labels: 'label',
  'reply.src': 'reply-src', 'reply.dst': 'reply-dst', 'reply.sport': 'reply-port-src', 'reply.dport': 'reply-port-dst',
  'icmp.type': 'icmp-type', 'icmp.code': 'icmp-code', 'icmp.id': 'icmp-id',
  timeout: 'timeout', labelsAdd: 'label-add', labelsDelete: 'label-del',
};

/**
 * A library refusal of one argument, told as a usage error naming the flag
 * the user typed ('ctmon: -s: ...' rather than 'dump: src[0]: ...').
 * Anything else is returned as it is.
 */
export function namedByFlag(e: unknown, args: ParsedArgs): unknown {
  if (!(e instanceof ConntrackError) || e.code !== 'ERR_INVALID_ARG' || e.argument === undefined) return e;
  // src[2] -> src, mark.value -> mark, nat.address -> whichever NAT flag was given.
  const path = e.argument.replace(/\[\d+\]/g, '');
  const root = path.startsWith('nat') ? ['src-nat', 'dst-nat', 'any-nat'].find((n) => args[n] !== undefined) : (ARGUMENT_OPTIONS[path] ?? ARGUMENT_OPTIONS[path.split('.')[0]!]);
  if (root === undefined || args[root] === undefined) return e;
  const prefix = `${e.op}: ${e.argument}`;
  const rest = e.message.startsWith(prefix) ? e.message.slice(prefix.length) : `: ${e.message.slice(e.op.length + 2)}`;
  return new UsageError(`${spellingOf(args, root)}${rest}`);
}

/** Turns the filter flags into a Filter; the library validates values and says what is wrong. */
export function filterFromArgs(a: ParsedArgs): Filter {
  const f: Filter = {};
  const src = listArg(a, 'src');
  const dst = listArg(a, 'dst');
  if (src) f.src = src;
  if (dst) f.dst = dst;
  if (a.proto !== undefined) {
    const p = String(a.proto);
    f.protocol = /^\d+$/.test(p) ? Number(p) : (p.toLowerCase() as Filter['protocol'] & string);
  }
  const sport = toPorts(listArg(a, 'sport'), 'sport');
  const dport = toPorts(listArg(a, 'dport'), 'dport');
  if (sport) f.sport = sport;
  if (dport) f.dport = dport;
  // Names as typed, upper-cased: the library checks them and says which is unknown.
  const state = listArg(a, 'state')?.map((s) => s.toUpperCase());
  const status = listArg(a, 'status')?.map((s) => s.toUpperCase());
  if (state) f.state = state as Filter['state'] & string[];
  if (status) f.status = status as Filter['status'] & string[];
  const mark = markFromArgs(a);
  if (mark !== undefined) f.mark = mark;
  const zones = [['zone', 'zone'], ['orig-zone', 'origZone'], ['reply-zone', 'replyZone']] as const;
  for (const [flag, key] of zones) {
    const zone = numberArg(a, flag);
    if (zone !== undefined) f[key] = zone;
  }
  if (a.family !== undefined) f.family = String(a.family) as Filter['family'] & string;
  const reply: NonNullable<Filter['reply']> = {};
  const rsrc = listArg(a, 'reply-src');
  const rdst = listArg(a, 'reply-dst');
  if (rsrc) reply.src = rsrc;
  if (rdst) reply.dst = rdst;
  const rsport = toPorts(listArg(a, 'reply-port-src'), 'reply-port-src');
  const rdport = toPorts(listArg(a, 'reply-port-dst'), 'reply-port-dst');
  if (rsport) reply.sport = rsport;
  if (rdport) reply.dport = rdport;
  if (Object.keys(reply).length) f.reply = reply;
  const icmp: NonNullable<Filter['icmp']> = {};
  for (const key of ['type', 'code', 'id'] as const) {
    const value = numberArg(a, `icmp-${key}`);
    if (value !== undefined) icmp[key] = value;
  }
  if (Object.keys(icmp).length) f.icmp = icmp;
  const nats = (['src', 'dst', 'any'] as const).filter((k) => a[`${k}-nat`] !== undefined);
  if (nats.length > 1) throw new UsageError('give one of --src-nat, --dst-nat, --any-nat');
  if (nats.length === 1) {
    const address = String(a[`${nats[0]}-nat`]);
    f.nat = address === '' ? nats[0]! : { type: nats[0]!, address };
  }
  const labels = listArg(a, 'label');
  if (labels) f.labels = labelNumbers(labels);
  return f;
}

/** --mark MARK[/MASK] (filters and updates alike), or undefined when not given; the library checks the range. */
export function markFromArgs(a: ParsedArgs): number | { value: number; mask: number } | undefined {
  if (a.mark === undefined) return undefined;
  const [value, mask] = String(a.mark).split('/');
  const num = (s: string): number => {
    const n = Number(s);
    if (!Number.isInteger(n) || s.trim() === '') throw new UsageError(`--mark needs MARK[/MASK], got '${String(a.mark)}'`);
    return n;
  };
  return mask === undefined ? num(value!) : { value: num(value!), mask: num(mask) };
}

/** Labels as typed: a bit number where it is all digits, else a name from connlabel.conf. */
export function labelNumbers(list: readonly string[]): (number | string)[] {
  return list.map((l) => (/^\d+$/.test(l) ? Number(l) : l));
}
