/**
 * src/ipfix.ts against an independent reading of RFC 7011: a small decoder
 * here parses what the encoder wrote (header, template sets with RFC 5103
 * enterprise fields, data sets) and gives back each record's values.
 */
import fc from 'fast-check';
import { isIPv6 } from 'node:net';
import { describe, expect, it } from 'vitest';
import type { FlowRecord } from '../../src/flows.js';
import { IE, IpfixEncoder, NAT_EVENT, REVERSE_PEN } from '../../src/ipfix.js';

interface Field { id: number; length: number; pen?: number }
interface Decoded {
  version: number;
  length: number;
  exportTime: number;
  sequence: number;
  domain: number;
  templates: Map<number, Field[]>;
  records: { template: number; values: Map<string, bigint | string> }[];
}

function address(b: Buffer): string {
  if (b.length === 4) return [...b].join('.');
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(b.readUInt16BE(i).toString(16));
  return groups.join(':');
}

/** Parses one message; `known` carries templates learnt from earlier messages, as a collector keeps them. */
function decode(msg: Buffer, known = new Map<number, Field[]>()): Decoded {
  const d: Decoded = {
    version: msg.readUInt16BE(0), length: msg.readUInt16BE(2), exportTime: msg.readUInt32BE(4),
    sequence: msg.readUInt32BE(8), domain: msg.readUInt32BE(12), templates: new Map(), records: [],
  };
  let o = 16;
  while (o < msg.length) {
    const setId = msg.readUInt16BE(o);
    const setEnd = o + msg.readUInt16BE(o + 2);
    o += 4;
    if (setId === 2) {
      while (o < setEnd) {
        const id = msg.readUInt16BE(o);
        const count = msg.readUInt16BE(o + 2);
        o += 4;
        const fields: Field[] = [];
        for (let i = 0; i < count; i++) {
          const raw = msg.readUInt16BE(o);
          const f: Field = { id: raw & 0x7fff, length: msg.readUInt16BE(o + 2) };
          o += 4;
          if (raw & 0x8000) (f.pen = msg.readUInt32BE(o)), (o += 4);
          fields.push(f);
        }
        d.templates.set(id, fields);
        known.set(id, fields);
      }
    } else {
      const fields = known.get(setId)!;
      expect(fields, `template ${setId} known before its data`).toBeDefined();
      while (o < setEnd) {
        const values = new Map<string, bigint | string>();
        for (const f of fields) {
          const b = msg.subarray(o, o + f.length);
          const key = `${f.pen === REVERSE_PEN ? 'reverse:' : ''}${f.id}`;
          values.set(key, f.length === 4 || f.length === 16 ? address(b) : f.length === 8 ? b.readBigUInt64BE() : BigInt(b.readUIntBE(0, f.length)));
          o += f.length;
        }
        d.records.push({ template: setId, values });
      }
    }
    o = setEnd;
  }
  return d;
}

const v4 = fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255), fc.nat(255)).map((a) => a.join('.'));
const v6 = fc.array(fc.nat(0xffff), { minLength: 8, maxLength: 8 }).map((g) => g.map((x) => x.toString(16)).join(':'));
const port = fc.nat(65535);
const counter = fc.nat(2 ** 40);

const record: fc.Arbitrary<FlowRecord> = fc.boolean().chain((six) => {
  const addr = six ? v6 : v4;
  const endpoint = fc.record({ address: addr, port });
  return fc.record({
    event: fc.constantFrom('start' as const, 'end' as const),
    id: fc.nat(2 ** 32 - 1),
    family: fc.constant(six ? 'ipv6' as const : 'ipv4' as const),
    protocol: fc.constantFrom('tcp' as const, 'udp' as const),
    original: fc.record({ src: addr, dst: addr, sport: port, dport: port }),
    reply: fc.record({ src: addr, dst: addr, sport: port, dport: port }),
    nat: fc.option(fc.record({ source: endpoint, destination: endpoint }, { requiredKeys: [] }), { nil: undefined }),
    startMs: fc.integer({ min: 1e12, max: 2e12 }),
    endMs: fc.integer({ min: 2e12, max: 3e12 }),
    packets: fc.record({ original: counter, reply: counter }),
    bytes: fc.record({ original: counter, reply: counter }),
    zone: fc.constant(0),
  }).map(({ nat, ...rest }) => (nat === undefined ? rest : { ...rest, nat }) as FlowRecord);
});

/** What a collector should read back from a record. */
function expected(r: FlowRecord): Map<string, bigint | string> {
  const full = (a: string): string => (isIPv6(a) ? a.split(':').map((g) => Number.parseInt(g, 16).toString(16)).join(':') : a);
  const six = r.family === 'ipv6';
  const m = new Map<string, bigint | string>([
    [String(six ? IE.sourceIPv6Address : IE.sourceIPv4Address), full(r.original.src)],
    [String(six ? IE.destinationIPv6Address : IE.destinationIPv4Address), full(r.original.dst)],
    [String(IE.sourceTransportPort), BigInt(r.original.sport!)], [String(IE.destinationTransportPort), BigInt(r.original.dport!)],
    [String(IE.protocolIdentifier), r.protocol === 'tcp' ? 6n : 17n],
    [String(IE.octetDeltaCount), BigInt(r.bytes!.original)], [String(IE.packetDeltaCount), BigInt(r.packets!.original)],
    [`reverse:${IE.octetDeltaCount}`, BigInt(r.bytes!.reply)], [`reverse:${IE.packetDeltaCount}`, BigInt(r.packets!.reply)],
    [String(IE.flowStartMilliseconds), BigInt(r.startMs!)], [String(IE.flowEndMilliseconds), BigInt(r.endMs!)],
  ]);
  if (r.nat) {
    const src = r.nat.source ?? { address: r.original.src, port: r.original.sport };
    const dst = r.nat.destination ?? { address: r.original.dst, port: r.original.dport };
    m.set(String(six ? IE.postNATSourceIPv6Address : IE.postNATSourceIPv4Address), full(src.address));
    m.set(String(six ? IE.postNATDestinationIPv6Address : IE.postNATDestinationIPv4Address), full(dst.address));
    m.set(String(IE.postNAPTSourceTransportPort), BigInt(src.port!));
    m.set(String(IE.postNAPTDestinationTransportPort), BigInt(dst.port!));
    m.set(String(IE.natEvent), BigInt(NAT_EVENT[r.family][r.event]));
  }
  return m;
}

describe('IPFIX encoder (RFC 7011)', () => {
  it('every record reads back with its values, in order, in messages no longer than the MTU whose sequence numbers count the data records before them', () => {
    fc.assert(fc.property(fc.array(record, { maxLength: 80 }), fc.integer({ min: 600, max: 1500 }), (records, mtu) => {
      const enc = new IpfixEncoder({ domain: 7, mtu });
      const msgs: Buffer[] = [];
      for (const r of records) msgs.push(...enc.add(r, 5_000));
      const last = enc.flush(5_000);
      if (last) msgs.push(last);
      const known = new Map<number, Field[]>();
      const got: Map<string, bigint | string>[] = [];
      let seq = 0;
      for (const m of msgs) {
        const d = decode(m, known);
        expect(d).toMatchObject({ version: 10, length: m.length, exportTime: 5, sequence: seq, domain: 7 });
        expect(m.length).toBeLessThanOrEqual(mtu);
        seq += d.records.length;
        got.push(...d.records.map((r) => r.values));
      }
      expect(got).toEqual(records.map(expected));
      expect(enc.sequence).toBe(records.length);
    }), { seed: Number(process.env.CONNTRACK_PBT_SEED ?? Date.now()), verbose: true });
  });

  it('announces four templates, the reply counters as RFC 5103 reverse elements, NAT elements only in the NAT templates', () => {
    const d = decode(new IpfixEncoder().flush(0)!);
    expect([...d.templates.keys()]).toEqual([256, 257, 258, 259]);
    const v4 = d.templates.get(256)!;
    expect(v4.filter((f) => f.pen === REVERSE_PEN).map((f) => f.id)).toEqual([IE.octetDeltaCount, IE.packetDeltaCount]);
    expect(v4.some((f) => f.id === IE.natEvent)).toBe(false);
    expect(d.templates.get(258)!.map((f) => f.id)).toEqual(expect.arrayContaining([IE.postNATSourceIPv4Address, IE.postNATDestinationIPv4Address, IE.postNAPTSourceTransportPort, IE.postNAPTDestinationTransportPort, IE.natEvent]));
    expect(d.templates.get(259)!.map((f) => f.id)).toEqual(expect.arrayContaining([IE.postNATSourceIPv6Address, IE.postNATDestinationIPv6Address]));
    expect(d.records).toEqual([]);
  });

  it('sends the templates again once templateRefreshMs has passed, alone when no record waits (RFC 7011 §8.4)', () => {
    const enc = new IpfixEncoder({ templateRefreshMs: 1000 });
    const r = fc.sample(record, { numRuns: 1, seed: 1 })[0]!;
    enc.add(r, 0);
    expect(decode(enc.flush(0)!).templates.size).toBe(4);
    expect(enc.flush(500)).toBeUndefined();
    enc.add(r, 600);
    const again = decode(enc.flush(700)!, new Map(decode(new IpfixEncoder().flush(0)!).templates));
    expect(again.templates.size).toBe(0);
    expect(again.records).toHaveLength(1);
    expect(decode(enc.flush(1000)!).templates.size).toBe(4);
    const byDefault = new IpfixEncoder();
    expect(byDefault.flush(0)).toBeDefined();
    expect(byDefault.flush(9_999)).toBeUndefined();
    expect(decode(byDefault.flush(10_000)!).templates.size).toBe(4);
  });
});
