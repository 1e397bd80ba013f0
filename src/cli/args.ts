/**
 * A small flag parser for ctmon (no dependencies), and the conntrack-style
 * filter flags every data command shares.
 */
import type { Filter } from '../filter.js';

export class UsageError extends Error {
  override readonly name = 'UsageError';
}

export interface OptionSpec {
  name: string;
  short?: string;
  /** 'list' options may repeat and take comma-separated values. */
  type: 'string' | 'boolean' | 'number' | 'list';
  help: string;
  aliases?: string[];
}

export type ParsedArgs = Record<string, string | boolean | number | string[] | undefined> & { _: string[] };

export function parseArgs(argv: readonly string[], specs: readonly OptionSpec[]): ParsedArgs {
  const byLong = new Map<string, OptionSpec>();
  const byShort = new Map<string, OptionSpec>();
  for (const s of specs) {
    byLong.set(s.name, s);
    for (const a of s.aliases ?? []) byLong.set(a, s);
    if (s.short) byShort.set(s.short, s);
  }
  const out: ParsedArgs = { _: [] };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--') {
      out._.push(...argv.slice(i + 1));
      break;
    }
    let spec: OptionSpec | undefined;
    let inline: string | undefined;
    if (arg.startsWith('--')) {
      const eq = arg.indexOf('=');
      const name = eq < 0 ? arg.slice(2) : arg.slice(2, eq);
      if (eq >= 0) inline = arg.slice(eq + 1);
      spec = byLong.get(name);
      if (!spec) throw new UsageError(`unknown option --${name}`);
    } else if (arg.startsWith('-') && arg.length > 1 && !/^-\d/.test(arg)) {
      spec = byShort.get(arg.slice(1));
      if (!spec) throw new UsageError(`unknown option ${arg}`);
    } else {
      out._.push(arg);
      continue;
    }
    if (spec.type === 'boolean') {
      if (inline !== undefined) throw new UsageError(`--${spec.name} takes no value`);
      out[spec.name] = true;
      continue;
    }
    const value = inline ?? argv[++i];
    if (value === undefined) throw new UsageError(`--${spec.name} needs a value`);
    if (spec.type === 'number') {
      const n = Number(value);
      if (!Number.isFinite(n) || value.trim() === '') throw new UsageError(`--${spec.name} needs a number, got '${value}'`);
      out[spec.name] = n;
    } else if (spec.type === 'list') {
      const prev = (out[spec.name] as string[] | undefined) ?? [];
      out[spec.name] = [...prev, ...value.split(',').filter(Boolean)];
    } else {
      out[spec.name] = value;
    }
  }
  return out;
}

export const COMMON_OPTIONS: OptionSpec[] = [
  { name: 'netns', type: 'string', help: 'network namespace: a name under /run/netns or a path like /proc/PID/ns/net' },
  { name: 'help', short: 'h', type: 'boolean', help: 'show this help' },
];

/** conntrack's own filter flags. */
export const FILTER_OPTIONS: OptionSpec[] = [
  { name: 'src', short: 's', type: 'list', aliases: ['orig-src'], help: 'original source address or CIDR (repeatable)' },
  { name: 'dst', short: 'd', type: 'list', aliases: ['orig-dst'], help: 'original destination address or CIDR (repeatable)' },
  { name: 'proto', short: 'p', type: 'string', help: 'layer-4 protocol: tcp, udp, icmp, icmpv6, sctp, dccp, gre, udplite or a number' },
  { name: 'sport', type: 'list', aliases: ['orig-port-src'], help: 'original source port (repeatable)' },
  { name: 'dport', type: 'list', aliases: ['orig-port-dst'], help: 'original destination port (repeatable)' },
  { name: 'state', type: 'list', help: 'TCP/SCTP/DCCP state, e.g. ESTABLISHED (repeatable)' },
  { name: 'status', short: 'u', type: 'list', help: 'status flags that must be set, e.g. ASSURED' },
  { name: 'mark', short: 'm', type: 'string', help: 'mark value[/mask]' },
  { name: 'zone', short: 'w', type: 'number', help: 'conntrack zone (both directions)' },
  { name: 'orig-zone', type: 'number', help: 'zone of the original direction only' },
  { name: 'reply-zone', type: 'number', help: 'zone of the reply direction only' },
  { name: 'family', short: 'f', type: 'string', help: 'ipv4 or ipv6' },
];

function toPorts(v: string[] | undefined, what: string): number[] | undefined {
  if (!v) return undefined;
  return v.map((p) => {
    if (!/^\d+$/.test(p)) throw new UsageError(`--${what} needs port numbers, got '${p}'`);
    return Number(p);
  });
}

/** Turns the filter flags into a Filter; the library validates values and says what is wrong. */
export function filterFromArgs(a: ParsedArgs): Filter {
  const f: Filter = {};
  if (a.src) f.src = a.src as string[];
  if (a.dst) f.dst = a.dst as string[];
  if (a.proto !== undefined) {
    const p = String(a.proto);
    f.protocol = /^\d+$/.test(p) ? Number(p) : (p.toLowerCase() as Filter['protocol'] & string);
  }
  const sport = toPorts(a.sport as string[] | undefined, 'sport');
  const dport = toPorts(a.dport as string[] | undefined, 'dport');
  if (sport) f.sport = sport;
  if (dport) f.dport = dport;
  if (a.state) f.state = (a.state as string[]).map((s) => s.toUpperCase()) as Filter['state'] & string[];
  if (a.status) f.status = (a.status as string[]).map((s) => s.toUpperCase()) as Filter['status'] & string[];
  if (a.mark !== undefined) {
    const [value, mask] = String(a.mark).split('/');
    const num = (s: string): number => {
      const n = Number(s);
      if (!Number.isInteger(n) || s.trim() === '') throw new UsageError(`--mark needs value[/mask], got '${String(a.mark)}'`);
      return n;
    };
    f.mark = mask === undefined ? num(value!) : { value: num(value!), mask: num(mask) };
  }
  if (a.zone !== undefined) f.zone = a.zone as number;
  if (a['orig-zone'] !== undefined) f.origZone = a['orig-zone'] as number;
  if (a['reply-zone'] !== undefined) f.replyZone = a['reply-zone'] as number;
  if (a.family !== undefined) f.family = String(a.family) as Filter['family'] & string;
  return f;
}

export function usage(command: string, summary: string, specs: readonly OptionSpec[]): string {
  const lines = [`usage: ctmon ${command}`, '', summary, '', 'options:'];
  for (const s of specs) {
    const flag = `${s.short ? `-${s.short}, ` : '    '}--${s.name}${s.type === 'boolean' ? '' : ' VALUE'}`;
    lines.push(`  ${flag.padEnd(30)} ${s.help}`);
  }
  return lines.join('\n');
}
