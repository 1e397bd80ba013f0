/**
 * TableTally: what fills a conntrack table, counted entry by entry and
 * reversible. The doctor fills one from a single walk of the table; the
 * live table (live-table.ts) keeps its own counts natively. Both read the
 * same TableFacts (factsOf).
 */
import type { Entry } from './entry.js';

export interface SourceShare {
  src: string;
  entries: number;
  share: number;
}

export interface DestinationShare {
  /** `dst:dport` (`[v6]:port`), or the address alone for protocols without ports: `address` and `port` as printed. */
  dst: string;
  /** The original direction's destination address. */
  address: string;
  /** Its destination port; absent for protocols without ports (ICMP, GRE). */
  port?: number;
  protocol: string;
  entries: number;
  share: number;
}

export interface TableFacts {
  /** Entries read (all of them unless `sampleLimit` stopped the walk). */
  sampled: number;
  complete: boolean;
  byProtocol: Record<string, number>;
  /** `tcp ESTABLISHED`, `udp`, ... */
  byState: Record<string, number>;
  unassured: number;
  /** Unassured TCP entries in SYN_SENT or SYN_RECV: half-open handshakes. */
  synUnassured: number;
  timeWait: number;
  udp: number;
  topSources: SourceShare[];
  topDestinations: DestinationShare[];
}

/** Entries of one protocol in one state (state '' for protocols without states). */
export interface StateGroup {
  readonly protocol: string;
  readonly state: string;
  entries: number;
  /** Of those, entries with ASSURED set. */
  assured: number;
}

/** A shared counter: one per source address, one per destination endpoint. */
interface Counter {
  readonly name: string;
  readonly protocol: string;
  readonly address: string;
  readonly port: number | undefined;
  entries: number;
}

/**
 * Where one entry is counted. Holds shared counters, not strings of its own,
 * so a million tracked entries cost one small object each.
 */
export interface TallySlot {
  readonly group: StateGroup;
  readonly assured: boolean;
  readonly source: Counter;
  readonly destination: Counter;
}

/** `addr:port`, `[v6]:port`, or the address alone. */
export function endpoint(addr: string, port: number | undefined): string {
  if (port === undefined) return addr;
  return addr.includes(':') ? `[${addr}]:${port}` : `${addr}:${port}`;
}

/** The `n` largest counters, largest first (ties by name), in one pass. */
export function largest<T extends { entries: number; name: string }>(items: Iterable<T>, n: number): T[] {
  const top: T[] = [];
  if (n <= 0) return top;
  const before = (a: T, b: T): boolean => a.entries > b.entries || (a.entries === b.entries && a.name < b.name);
  for (const item of items) {
    if (top.length === n && !before(item, top[n - 1]!)) continue;
    let i = top.length === n ? n - 1 : top.length;
    while (i > 0 && before(item, top[i - 1]!)) {
      top[i] = top[i - 1]!;
      i--;
    }
    top[i] = item;
  }
  return top;
}

export class TableTally {
  readonly #groups = new Map<string, StateGroup>();
  readonly #sources = new Map<string, Counter>();
  readonly #destinations = new Map<string, Counter>();
  #entries = 0;
  #assured = 0;

  get entries(): number {
    return this.#entries;
  }

  get assured(): number {
    return this.#assured;
  }

  /** Every protocol/state pair with entries. */
  groups(): IterableIterator<StateGroup> {
    return this.#groups.values();
  }

  /** Counts `entry`; the slot is what remove() needs to take it back. */
  add(entry: Entry, previousState?: string): TallySlot {
    const protocol = String(entry.protocol);
    const state = entry.state ?? previousState ?? '';
    const groupKey = `${protocol} ${state}`;
    let group = this.#groups.get(groupKey);
    if (!group) this.#groups.set(groupKey, (group = { protocol, state, entries: 0, assured: 0 }));
    const assured = entry.status.includes('ASSURED');
    const o = entry.original;
    const source = counter(this.#sources, o.src, o.src, '', o.src, undefined);
    const dst = endpoint(o.dst, o.dport);
    const destination = counter(this.#destinations, `${protocol} ${dst}`, dst, protocol, o.dst, o.dport);
    group.entries++;
    source.entries++;
    destination.entries++;
    this.#entries++;
    if (assured) {
      group.assured++;
      this.#assured++;
    }
    return { group, assured, source, destination };
  }

  remove(slot: TallySlot): void {
    slot.group.entries--;
    if (slot.assured) {
      slot.group.assured--;
      this.#assured--;
    }
    this.#entries--;
    if (slot.group.entries === 0) this.#groups.delete(`${slot.group.protocol} ${slot.group.state}`);
    if (--slot.source.entries === 0) this.#sources.delete(slot.source.name);
    if (--slot.destination.entries === 0) this.#destinations.delete(`${slot.destination.protocol} ${slot.destination.name}`);
  }

  /** The `n` sources with the most entries. */
  topSources(n: number): { src: string; entries: number }[] {
    return largest(this.#sources.values(), n).map((c) => ({ src: c.name, entries: c.entries }));
  }

  facts(complete = true, top = 10): TableFacts {
    return factsOf({
      entries: this.#entries,
      assured: this.#assured,
      groups: this.#groups.values(),
      topSources: this.topSources(top),
      topDestinations: largest(this.#destinations.values(), top).map((d) => ({
        dst: d.name, address: d.address, ...(d.port !== undefined ? { port: d.port } : {}), protocol: d.protocol, entries: d.entries,
      })),
    }, complete);
  }
}

/** What TableFacts are read from: a TableTally's counts, or a live table's. */
export interface TallyReading {
  entries: number;
  assured: number;
  groups: Iterable<Readonly<StateGroup>>;
  topSources: { src: string; entries: number }[];
  /** As DestinationShare, without the share. */
  topDestinations: Omit<DestinationShare, 'share'>[];
}

export function factsOf(r: TallyReading, complete = true): TableFacts {
  const sampled = r.entries;
  const share = (n: number): number => (sampled ? n / sampled : 0);
  const byProtocol: Record<string, number> = {};
  const byState: Record<string, number> = {};
  let synUnassured = 0;
  let timeWait = 0;
  for (const g of r.groups) {
    byProtocol[g.protocol] = (byProtocol[g.protocol] ?? 0) + g.entries;
    const name = g.state ? `${g.protocol} ${g.state}` : g.protocol;
    byState[name] = (byState[name] ?? 0) + g.entries;
    if (g.protocol === 'tcp' && (g.state === 'SYN_SENT' || g.state === 'SYN_RECV')) synUnassured += g.entries - g.assured;
    if (g.state === 'TIME_WAIT') timeWait += g.entries;
  }
  return {
    sampled,
    complete,
    byProtocol,
    byState,
    unassured: sampled - r.assured,
    synUnassured,
    timeWait,
    udp: byProtocol.udp ?? 0,
    topSources: r.topSources.map((s) => ({ ...s, share: share(s.entries) })),
    topDestinations: r.topDestinations.map((d) => ({ ...d, share: share(d.entries) })),
  };
}

function counter(map: Map<string, Counter>, key: string, name: string, protocol: string, address: string, port: number | undefined): Counter {
  let c = map.get(key);
  if (!c) map.set(key, (c = { name, protocol, address, port, entries: 0 }));
  return c;
}
