/**
 * The oracle for filters the `conntrack` CLI cannot express (prefix lists,
 * port and state lists, either-direction sources): the entries as
 * `conntrack -L -o xml` prints them, and a plain matcher written
 * independently of src/ (its own address parsing, BigInt prefixes, string
 * states), checked against the CLI wherever the CLI can express the filter.
 */

export interface XmlTuple {
  src: string;
  dst: string;
  sport?: number;
  dport?: number;
  zone?: number;
}

export interface XmlEntry {
  family: 'ipv4' | 'ipv6';
  protonum: number;
  original: XmlTuple;
  reply: XmlTuple;
  state?: string;
  mark: number;
  zone: number;
  id: number;
  assured: boolean;
  unreplied: boolean;
  /** Identity independent of the kernel's 32-bit id (which can collide). */
  key: string;
}

// enum sctp_conntrack: the XML printer names SCTP states from the TCP table.
const TCP_NAMES = ['NONE', 'SYN_SENT', 'SYN_RECV', 'ESTABLISHED', 'FIN_WAIT', 'CLOSE_WAIT', 'LAST_ACK', 'TIME_WAIT', 'CLOSE', 'SYN_SENT2'];
const SCTP_NAMES = ['NONE', 'CLOSED', 'COOKIE_WAIT', 'COOKIE_ECHOED', 'ESTABLISHED', 'SHUTDOWN_SENT', 'SHUTDOWN_RECD', 'SHUTDOWN_ACK_SENT', 'HEARTBEAT_SENT', 'HEARTBEAT_ACKED'];

function tag(xml: string, name: string): string | undefined {
  return new RegExp(`<${name}>([^<]*)</${name}>`).exec(xml)?.[1];
}

function tupleOf(meta: string): XmlTuple {
  const t: XmlTuple = { src: tag(meta, 'src')!, dst: tag(meta, 'dst')! };
  const sport = tag(meta, 'sport');
  const dport = tag(meta, 'dport');
  if (sport !== undefined) t.sport = Number(sport);
  if (dport !== undefined) t.dport = Number(dport);
  // GRE keys print as <srckey>0x5</srckey>: kept as ports are not (a key is not a port).
  const zone = tag(meta, 'zone');
  if (zone !== undefined) t.zone = Number(zone);
  return t;
}

export function parseXml(xml: string): XmlEntry[] {
  const out: XmlEntry[] = [];
  for (const flow of xml.match(/<flow>.*?<\/flow>/gs) ?? []) {
    const metas = [...flow.matchAll(/<meta direction="(\w+)">(.*?)<\/meta>/gs)];
    const orig = metas.find((m) => m[1] === 'original')![2]!;
    const reply = metas.find((m) => m[1] === 'reply')![2]!;
    const ind = metas.find((m) => m[1] === 'independent')![2]!;
    const protonum = Number(/<layer4 protonum="(\d+)"/.exec(orig)![1]);
    const family = /protoname="ipv6"/.test(orig) ? 'ipv6' : 'ipv4';
    let state = tag(ind, 'state');
    if (state !== undefined && protonum === 132) state = SCTP_NAMES[TCP_NAMES.indexOf(state)];
    const original = tupleOf(orig);
    if (protonum === 47) {
      original.sport = undefined;
      original.dport = undefined;
    }
    const e: XmlEntry = {
      family, protonum, original, reply: tupleOf(reply), mark: Number(tag(ind, 'mark') ?? 0), zone: Number(tag(ind, 'zone') ?? 0),
      id: Number(tag(ind, 'id')), assured: ind.includes('<assured/>'), unreplied: ind.includes('<unreplied/>'), key: '',
    };
    if (state !== undefined) e.state = state;
    // The original tuple's layer-4 fields as printed (ports, keys or ICMP), plus zones: unique in a table.
    const l4 = /<layer4[^>]*>(.*?)<\/layer4>/s.exec(orig)?.[1] ?? '';
    e.key = [family, protonum, original.src, original.dst, l4, e.zone, original.zone ?? '-', e.reply.zone ?? '-'].join('|');
    out.push(e);
  }
  return out;
}

/** An IPv4 or IPv6 address as [family, BigInt], parsed plainly. */
export function addressValue(a: string): [4 | 6, bigint] {
  const v4 = (q: string): bigint => q.split('.').reduce((acc, p) => (acc << 8n) | BigInt(Number(p)), 0n);
  if (!a.includes(':')) return [4, v4(a)];
  let text = a;
  // A trailing dotted quad (::ffff:10.0.0.1) is two 16-bit groups.
  const dotted = /^(.*:)(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (dotted) {
    const v = v4(dotted[2]!);
    text = `${dotted[1]}${(v >> 16n).toString(16)}:${(v & 0xffffn).toString(16)}`;
  }
  const groups = (part: string): bigint[] => (part === '' ? [] : part.split(':').map((w) => BigInt(parseInt(w, 16))));
  let words: bigint[];
  if (text.includes('::')) {
    const [head, tail] = text.split('::') as [string, string];
    const h = groups(head);
    const t = groups(tail);
    words = [...h, ...new Array<bigint>(8 - h.length - t.length).fill(0n), ...t];
  } else {
    words = groups(text);
  }
  return [6, words.reduce((acc, w) => (acc << 16n) | w, 0n)];
}

export function inPrefix(address: string, prefix: string): boolean {
  const [net, lenText] = prefix.split('/');
  const [fa, va] = addressValue(address);
  const [fp, vp] = addressValue(net!);
  if (fa !== fp) return false;
  const bits = fa === 4 ? 32n : 128n;
  const len = lenText === undefined ? bits : BigInt(lenText);
  const shift = bits - len;
  return va >> shift === vp >> shift;
}

export interface RefFilter {
  family?: 'ipv4' | 'ipv6';
  protocol?: string;
  src?: string[];
  dst?: string[];
  sport?: number[];
  dport?: number[];
  state?: string[];
  status?: string[];
  mark?: { value: number; mask: number };
  zone?: number;
  origZone?: number;
  replyZone?: number;
}

const PROTONUM: Record<string, number> = { icmp: 1, tcp: 6, udp: 17, dccp: 33, gre: 47, icmpv6: 58, sctp: 132, udplite: 136 };
const PORT_PROTOCOLS = new Set([6, 17, 33, 132, 136]);

export function refMatches(e: XmlEntry, f: RefFilter, direction: 'original' | 'reply' | 'either' = 'original'): boolean {
  if (f.family !== undefined && e.family !== f.family) return false;
  if (f.protocol !== undefined && e.protonum !== PROTONUM[f.protocol]) return false;
  if (f.src) {
    const sources = direction === 'original' ? [e.original.src] : direction === 'reply' ? [e.reply.src] : [e.original.src, e.reply.src];
    if (!sources.some((s) => f.src!.some((p) => inPrefix(s, p)))) return false;
  }
  if (f.dst && !f.dst.some((p) => inPrefix(e.original.dst, p))) return false;
  const hasPorts = PORT_PROTOCOLS.has(e.protonum) && e.original.sport !== undefined;
  if (f.sport && !(hasPorts && f.sport.includes(e.original.sport!))) return false;
  if (f.dport && !(hasPorts && f.dport.includes(e.original.dport!))) return false;
  if (f.state && !(e.state !== undefined && [6, 132, 33].includes(e.protonum) && f.state.includes(e.state))) return false;
  for (const s of f.status ?? []) {
    if (s === 'ASSURED' && !e.assured) return false;
    if (s === 'SEEN_REPLY' && e.unreplied) return false;
  }
  if (f.mark && ((e.mark & f.mark.mask) >>> 0) !== f.mark.value) return false;
  if (f.zone !== undefined && e.zone !== f.zone) return false;
  if (f.origZone !== undefined && (e.original.zone ?? 0) !== f.origZone) return false;
  if (f.replyZone !== undefined && (e.reply.zone ?? 0) !== f.replyZone) return false;
  return true;
}

/** `conntrack -L` arguments for `f`, or undefined when the CLI cannot express it exactly. */
export function cliArgs(f: RefFilter): string[] | undefined {
  const args: string[] = [];
  if (f.family) args.push('-f', f.family);
  const single = <T>(v: T[] | undefined): T | undefined | null => (v === undefined ? undefined : v.length === 1 ? v[0] : null);
  const src = single(f.src);
  const dst = single(f.dst);
  const sport = single(f.sport);
  const dport = single(f.dport);
  const state = single(f.state);
  if (src === null || dst === null || sport === null || dport === null || state === null) return undefined;
  // The CLI refuses a source and a destination of different families (we match nothing).
  if (src !== undefined && dst !== undefined && src.includes(':') !== dst.includes(':')) return undefined;
  // -u knows ASSURED and SEEN_REPLY (and a few others), not CONFIRMED.
  if (f.status?.includes('CONFIRMED')) return undefined;
  // The CLI compares ports and states only under -p, and only for the protocols it knows them for.
  if ((sport !== undefined || dport !== undefined) && !['tcp', 'udp', 'udplite', 'sctp', 'dccp'].includes(f.protocol ?? '')) return undefined;
  // --state takes the states of -p's protocol; the CLI refuses an SCTP name under -p tcp (we match nothing).
  if (state !== undefined && (f.protocol !== 'tcp' || !TCP_NAMES.includes(state))) return undefined;
  // -u first: conntrack 1.4.7 lets a -u after -m overwrite the mark with the status bits, in
  // filters as in -I (`-m 0/0 -u ASSURED` lists nothing, `-u ASSURED -m 0/0` lists the entries).
  if (f.status) args.push('-u', f.status.join(','));
  if (f.protocol) args.push('-p', f.protocol);
  if (src !== undefined) args.push('-s', src);
  if (dst !== undefined) args.push('-d', dst);
  if (sport !== undefined) args.push('--sport', String(sport));
  if (dport !== undefined) args.push('--dport', String(dport));
  if (state !== undefined) args.push('--state', state);
  if (f.mark) args.push('-m', `${f.mark.value}/${f.mark.mask}`);
  if (f.zone !== undefined) args.push('-w', String(f.zone));
  if (f.origZone !== undefined) args.push('--orig-zone', String(f.origZone));
  if (f.replyZone !== undefined) args.push('--reply-zone', String(f.replyZone));
  return args;
}
