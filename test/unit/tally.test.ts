/**
 * TableTally and the upsert-by-key rule against a plain recount, on
 * generated entries and event sequences. No root needed.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { Entry, StatusFlag } from '../../src/entry.js';
import { largest, TableTally, type TallySlot } from '../../src/tally.js';
import { parseListen } from '../../src/cli/exporter.js';
import { UsageError } from '../../src/cli/args.js';

const SEED = Number(process.env.CONNTRACK_PBT_SEED ?? 1);

const entryArb = fc.record({
  protocol: fc.constantFrom('tcp', 'udp', 'icmp', 'sctp') as fc.Arbitrary<Entry['protocol']>,
  src: fc.constantFrom('10.0.0.1', '10.0.0.2', '2001:db8::1', '192.0.2.9'),
  dst: fc.constantFrom('10.1.0.1', '2001:db8::2'),
  sport: fc.integer({ min: 1, max: 4 }),
  dport: fc.constantFrom(53, 80),
  zone: fc.constantFrom(0, 0, 7),
  state: fc.constantFrom('ESTABLISHED', 'SYN_SENT', 'TIME_WAIT', undefined),
  assured: fc.boolean(),
}).map(({ protocol, src, dst, sport, dport, zone, state, assured }): Entry => {
  const ports = protocol !== 'icmp';
  return {
    id: 1, family: src.includes(':') ? 'ipv6' : 'ipv4', protocol,
    original: { src, dst, ...(ports ? { sport, dport } : { icmp: { type: 8, code: 0, id: sport } }) },
    reply: { src: dst, dst: src, ...(ports ? { sport: dport, dport: sport } : { icmp: { type: 0, code: 0, id: sport } }) },
    state: protocol === 'tcp' || protocol === 'sctp' ? (state as Entry['state']) : undefined,
    status: (assured ? ['CONFIRMED', 'ASSURED'] : ['CONFIRMED']) as StatusFlag[], timeout: 30, zone,
  };
});

/** An entry's identity: zone and original tuple. */
function entryKey(e: Entry): string {
  return JSON.stringify([e.zone, e.protocol, e.original]);
}

/** What a dump of `live` would count, recomputed from scratch. */
function recount(live: Map<string, Entry>, stateOf: Map<string, string>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, e] of live) {
    const key = `${String(e.protocol)} ${stateOf.get(k) ?? ''}`;
    out[key] = (out[key] ?? 0) + 1;
  }
  return out;
}

describe('TableTally (pure)', () => {
  it('add/remove in any order leaves exactly the recount of what is left', () => {
    fc.assert(fc.property(fc.array(fc.tuple(fc.constantFrom('new', 'update', 'destroy'), entryArb), { maxLength: 200 }), (ops) => {
      // The same upsert-by-key rule the live table applies, checked against a Map of entries.
      const tally = new TableTally();
      const slots = new Map<string, TallySlot>();
      const live = new Map<string, Entry>();
      const stateOf = new Map<string, string>();
      for (const [type, e] of ops) {
        const key = entryKey(e);
        const old = slots.get(key);
        if (old) tally.remove(old);
        if (type === 'destroy') {
          slots.delete(key);
          live.delete(key);
          stateOf.delete(key);
          continue;
        }
        slots.set(key, tally.add(e, old?.group.state));
        stateOf.set(key, e.state ?? stateOf.get(key) ?? '');
        live.set(key, e);
      }
      const got: Record<string, number> = {};
      for (const g of tally.groups()) got[`${g.protocol} ${g.state}`] = g.entries;
      expect(got).toEqual(recount(live, stateOf));
      expect(tally.entries).toBe(live.size);
      expect(tally.assured).toBe([...live.values()].filter((e) => e.status.includes('ASSURED')).length);
      const facts = tally.facts();
      const sources = new Map<string, number>();
      for (const e of live.values()) sources.set(e.original.src, (sources.get(e.original.src) ?? 0) + 1);
      expect(Object.fromEntries(facts.topSources.map((s) => [s.src, s.entries]))).toEqual(Object.fromEntries(sources));
      expect(facts.unassured + tally.assured).toBe(live.size);
    }), { seed: SEED, numRuns: 500 });
  });

  it('largest(n) is the first n of a full sort, ties by name', () => {
    const item = fc.record({ name: fc.string({ maxLength: 3 }), entries: fc.integer({ min: 0, max: 5 }) });
    fc.assert(fc.property(fc.uniqueArray(item, { selector: (i) => i.name, maxLength: 60 }), fc.integer({ min: 0, max: 12 }), (items, n) => {
      const sorted = [...items].sort((a, b) => b.entries - a.entries || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
      expect(largest(items, n)).toEqual(sorted.slice(0, n));
    }), { seed: SEED, numRuns: 1000 });
  });

  it('entryKey tells apart every field of the kernel key and nothing else', () => {
    fc.assert(fc.property(entryArb, entryArb, (a, b) => {
      const same = a.protocol === b.protocol && a.zone === b.zone && a.original.src === b.original.src && a.original.dst === b.original.dst
        && a.original.sport === b.original.sport && a.original.dport === b.original.dport
        && JSON.stringify(a.original.icmp) === JSON.stringify(b.original.icmp);
      expect(entryKey(a) === entryKey(b)).toBe(same);
    }), { seed: SEED, numRuns: 2000 });
  });
});

describe('ctmon exporter --listen (pure)', () => {
  it.each([
    ['127.0.0.1:9466', { host: '127.0.0.1', port: 9466 }],
    [':9466', { host: undefined, port: 9466 }],
    ['9466', { host: undefined, port: 9466 }],
    ['[::1]:0', { host: '::1', port: 0 }],
    ['[::]:9466', { host: '::', port: 9466 }],
    ['localhost:80', { host: 'localhost', port: 80 }],
  ])('%s', (value, expected) => {
    expect(parseListen(value)).toEqual(expected);
  });
  it.each(['', '127.0.0.1', '127.0.0.1:65536', '::1:9466', '[::1]', 'host:port', '1.2.3.4:-1'])('rejects %j', (value) => {
    expect(() => parseListen(value)).toThrow(UsageError);
  });
});
