/**
 * Generated conntrack tables for the property tests: entries of every
 * protocol conntrack can insert, IPv4 and IPv6 (v4-mapped and zero-run
 * addresses included), zones of both directions or of one, marks, states,
 * status flags, and optionally labels and NAT, as `conntrack -R` lines.
 */
import { mkdirSync, existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import fc from 'fast-check';
import { afterAll, beforeAll } from 'vitest';
import { CONNLABEL_CONF, reloadLabelMap } from '../../src/labels.js';
import type { Netns } from './netns.js';

export const PROTOCOLS = ['tcp', 'udp', 'udplite', 'icmp', 'icmpv6', 'sctp', 'dccp', 'gre'] as const;
export type Protocol = (typeof PROTOCOLS)[number];
export const TCP_STATES = ['SYN_SENT', 'SYN_RECV', 'ESTABLISHED', 'FIN_WAIT', 'CLOSE_WAIT', 'LAST_ACK', 'TIME_WAIT', 'CLOSE'];
export const SCTP_STATES = ['CLOSED', 'COOKIE_WAIT', 'COOKIE_ECHOED', 'ESTABLISHED', 'SHUTDOWN_SENT'];
export const PORTS = [1, 2, 53, 80, 443, 8080, 65535];
export const MARKS = [0, 1, 2, 3, 0x10, 0xff00, 0xffffffff];
/** Label names the tests write to connlabel.conf (useLabelConf), and their bits. */
export const LABELS = ['web', 'blue', 'green', 'quarantine'];
export const LABEL_CONF = '0 web\n1 set-by-rule\n3 blue\n9 green\n127 quarantine\n';
/** Addresses NATed entries are translated to. */
export const NAT_TO = ['198.51.100.1', '198.51.100.2'];

export const v4Arb = fc.tuple(fc.constantFrom(10, 192), fc.constantFrom(0, 1, 200), fc.integer({ min: 0, max: 3 }), fc.integer({ min: 0, max: 255 }))
  .map((b) => b.join('.'));
export const v6Arb = fc.oneof(
  fc.tuple(fc.constantFrom('2001:db8', '2001:db8:0:1', 'fd00'), fc.integer({ min: 0, max: 3 }), fc.integer({ min: 0, max: 0xffff }))
    .map(([p, a, b]) => `${p}::${a.toString(16)}:${b.toString(16)}`),
  v4Arb.map((a) => `::ffff:${a}`),
  fc.integer({ min: 1, max: 0xffff }).map((b) => `fe80::${b.toString(16)}`),
  fc.integer({ min: 1, max: 0xffff }).map((b) => `2001:db8:0:0:1::${b.toString(16)}`),
);

export interface GenEntry {
  protocol: Protocol;
  src: string;
  dst: string;
  a: number;
  b: number;
  state: string;
  mark: number;
  zone: [kind: 'none' | '-w' | '--orig-zone' | '--reply-zone', value: number];
  status: string;
  labels: string[];
  /** Source or destination NAT to NAT_TO[n] (IPv4 TCP and UDP entries only), to a port of this entry's own. */
  nat: [kind: 'none' | 'src' | 'dst', n: number];
  natPort: number;
}

export interface TableOptions {
  /** Entries in zones (conntrack -U finds no zoned entry: the update test leaves them out). */
  zones?: boolean;
  /** Entries with labels (the namespace must keep labels: enableLabels). */
  labels?: boolean;
  /** NATed entries (conntrack -I --src-nat/--dst-nat). */
  nat?: boolean;
}

function entryArb(o: TableOptions): fc.Arbitrary<GenEntry> {
  const none = fc.constant(['none', 0] as GenEntry['zone']);
  return fc.record({
    protocol: fc.constantFrom(...PROTOCOLS),
    v4: fc.boolean(),
    src4: v4Arb, dst4: v4Arb, src6: v6Arb, dst6: v6Arb,
    a: fc.constantFrom(...PORTS), b: fc.constantFrom(...PORTS),
    tcpState: fc.constantFrom(...TCP_STATES), sctpState: fc.constantFrom(...SCTP_STATES),
    mark: fc.constantFrom(...MARKS),
    zone: o.zones ? fc.tuple(fc.constantFrom('none', '-w', '--orig-zone', '--reply-zone') as fc.Arbitrary<GenEntry['zone'][0]>, fc.integer({ min: 1, max: 3 })) : none,
    status: fc.constantFrom('', 'SEEN_REPLY', 'ASSURED', 'SEEN_REPLY,ASSURED'),
    // Labels on one entry in three: conntrack -R cannot load them (see the update test), each costs a conntrack -I.
    labels: o.labels ? fc.oneof({ weight: 2, arbitrary: fc.constant<string[]>([]) }, { weight: 1, arbitrary: fc.subarray(LABELS, { minLength: 1 }) }) : fc.constant<string[]>([]),
    nat: o.nat ? fc.tuple(fc.constantFrom('none', 'src', 'dst') as fc.Arbitrary<GenEntry['nat'][0]>, fc.integer({ min: 0, max: 1 })) : fc.constant(['none', 0] as GenEntry['nat']),
  }).map((r) => {
    const v4 = r.protocol === 'icmp' ? true : r.protocol === 'icmpv6' ? false : r.v4;
    const natable = v4 && (r.protocol === 'tcp' || r.protocol === 'udp');
    return {
      protocol: r.protocol, src: v4 ? r.src4 : r.src6, dst: v4 ? r.dst4 : r.dst6, a: r.a, b: r.b,
      state: r.protocol === 'tcp' ? r.tcpState : r.protocol === 'sctp' ? r.sctpState : '',
      mark: r.mark, zone: r.zone, status: r.status, labels: r.labels, nat: natable ? r.nat : ['none', 0], natPort: 0,
    };
  });
}

/** Entries whose tuples cannot clash (neither direction of one equals a direction of another, NAT included). */
function clashKey(e: GenEntry): string {
  const ends = [`${e.src}#${e.a}`, `${e.dst}#${e.b}`].sort().join('|');
  return `${e.protocol}|${ends}|${e.zone[0] === 'none' ? 0 : e.zone[1]}`;
}

/** The `conntrack -I` line (for conntrack -R) that inserts `e`. */
export function insertLine(e: GenEntry): string {
  // -u before -m: conntrack 1.4.7 lets a later -u overwrite an earlier -m's mark with the status bits.
  const args = ['-I', '-p', e.protocol, '-s', e.src, '-d', e.dst, '-t', '300'];
  if (e.status) args.push('-u', e.status);
  args.push('-m', String(e.mark));
  switch (e.protocol) {
    case 'icmp': args.push('--icmp-type', '8', '--icmp-code', '0', '--icmp-id', String(e.a)); break;
    case 'icmpv6': args.push('--icmpv6-type', '128', '--icmpv6-code', '0', '--icmpv6-id', String(e.a)); break;
    case 'gre': args.push('--srckey', String(e.a), '--dstkey', String(e.b)); break;
    default: args.push('--sport', String(e.a), '--dport', String(e.b));
  }
  if (e.state) args.push('--state', e.state);
  if (e.protocol === 'sctp') args.push('--orig-vtag', '1', '--reply-vtag', '2');
  if (e.protocol === 'dccp') args.push('--state', 'OPEN', '--role', 'client');
  if (e.zone[0] !== 'none') args.push(e.zone[0], String(e.zone[1]));
  if (e.nat[0] !== 'none') args.push(`--${e.nat[0]}-nat`, `${NAT_TO[e.nat[1]]}:${e.natPort}`);
  if (e.labels.length) args.push('--label-add', e.labels.join(','));
  return args.join(' ');
}

/** Up to 24 entries that can all be in one table. */
export function tableArb(o: TableOptions = {}): fc.Arbitrary<GenEntry[]> {
  // A NAT port per entry: two translations to one address and port would give two entries one reply tuple.
  return fc.uniqueArray(entryArb(o), { minLength: 0, maxLength: 24, size: '+1', selector: clashKey })
    .map((es) => es.map((e, i) => ({ ...e, natPort: 40000 + i })));
}

/** Writes conntrack's label names for the tests, restoring whatever was there. */
export function useLabelConf(): void {
  let saved: string | undefined;
  beforeAll(() => {
    if (existsSync(CONNLABEL_CONF)) saved = readFileSync(CONNLABEL_CONF, 'utf8');
    mkdirSync('/etc/xtables', { recursive: true });
    writeFileSync(CONNLABEL_CONF, LABEL_CONF);
    reloadLabelMap();
  });
  afterAll(() => {
    if (saved === undefined) rmSync(CONNLABEL_CONF, { force: true });
    else writeFileSync(CONNLABEL_CONF, saved);
    reloadLabelMap();
  });
}

/** A rule that sets a label: from then on the namespace's entries keep theirs. */
export function enableLabels(ns: Netns): void {
  ns.exec('nft', ['add table inet ctlabels; add chain inet ctlabels out { type filter hook output priority 0; }; add rule inet ctlabels out ct label set 1']);
}
