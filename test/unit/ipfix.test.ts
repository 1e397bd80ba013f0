/**
 * src/ipfix.ts against an independent reading of RFC 7011: a small decoder
 * here parses what the encoder wrote (header, template sets with RFC 5103
 * enterprise fields, data sets) and gives back each record's values.
 */
import fc from 'fast-check';
import { isIPv6 } from 'node:net';
import { describe, expect, it } from 'vitest';
import { parseAddress } from '../../src/address.js';
import { protocolNumber } from '../../src/entry.js';
import { flowRecord, type FlowRecord } from '../../src/flows.js';
import { IE, IpfixEncoder, NAT_EVENT, REVERSE_PEN } from '../../src/ipfix.js';
import { addon } from '../../src/native.js';
import { dataViewOf, decodeEntry, RECORD_SIZE, recordEnd, recordKind, RecordKind } from '../../src/record.js';
import { flowEventMessage } from '../helpers/netlink.js';

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

/** A batch of event records from generated netlink messages, and the flow record for await yields of each: the reference. */
function batchOf(messages: Buffer[]): { batch: Buffer; records: FlowRecord[] } {
  const batch = Buffer.concat(messages.map((m) => addon.decodeMessages(m, true)));
  const records: FlowRecord[] = [];
  const dv = dataViewOf(batch);
  for (let off = 0; off + RECORD_SIZE <= batch.length; off = recordEnd(dv, off)) {
    records.push(flowRecord(recordKind(batch, off) === RecordKind.new ? 'start' : 'end', decodeEntry(batch, dv, off)));
  }
  return { batch, records };
}

/** Counters compared as the Numbers a flow record holds (the encoder copies all 64 bits). */
const asNumber = (v: bigint): bigint => BigInt(Number(v));

/** What a collector should read back from a record: absent values as zeros. */
function expected(r: FlowRecord): Map<string, bigint | string> {
  const six = r.family === 'ipv6';
  const full = (a: string): string => (a === '' ? (six ? '0:0:0:0:0:0:0:0' : '0.0.0.0') : isIPv6(a) ? address(Buffer.from(parseAddress(a)!.bytes)) : a);
  const m = new Map<string, bigint | string>([
    [String(six ? IE.sourceIPv6Address : IE.sourceIPv4Address), full(r.original.src)],
    [String(six ? IE.destinationIPv6Address : IE.destinationIPv4Address), full(r.original.dst)],
    [String(IE.sourceTransportPort), BigInt(r.original.sport ?? 0)], [String(IE.destinationTransportPort), BigInt(r.original.dport ?? 0)],
    [String(IE.protocolIdentifier), BigInt(protocolNumber(r.protocol))],
    [String(IE.octetDeltaCount), BigInt(r.bytes?.original ?? 0)], [String(IE.packetDeltaCount), BigInt(r.packets?.original ?? 0)],
    [`reverse:${IE.octetDeltaCount}`, BigInt(r.bytes?.reply ?? 0)], [`reverse:${IE.packetDeltaCount}`, BigInt(r.packets?.reply ?? 0)],
    [String(IE.flowStartMilliseconds), BigInt(r.startMs ?? 0)], [String(IE.flowEndMilliseconds), BigInt(r.endMs ?? 0)],
  ]);
  if (r.nat) {
    const src = r.nat.source ?? { address: r.original.src, port: r.original.sport };
    const dst = r.nat.destination ?? { address: r.original.dst, port: r.original.dport };
    m.set(String(six ? IE.postNATSourceIPv6Address : IE.postNATSourceIPv4Address), full(src.address));
    m.set(String(six ? IE.postNATDestinationIPv6Address : IE.postNATDestinationIPv4Address), full(dst.address));
    m.set(String(IE.postNAPTSourceTransportPort), BigInt(src.port ?? 0));
    m.set(String(IE.postNAPTDestinationTransportPort), BigInt(dst.port ?? 0));
    m.set(String(IE.natEvent), BigInt(NAT_EVENT[r.family][r.event]));
  }
  return m;
}

const COUNTER_KEYS = [String(IE.octetDeltaCount), String(IE.packetDeltaCount), `reverse:${IE.octetDeltaCount}`, `reverse:${IE.packetDeltaCount}`];
function countersAsNumbers(values: Map<string, bigint | string>): Map<string, bigint | string> {
  for (const k of COUNTER_KEYS) values.set(k, asNumber(values.get(k) as bigint));
  return values;
}

describe('IPFIX encoder (RFC 7011)', () => {
  it('every record reads back with its values, in order, in messages no longer than the MTU whose sequence numbers count the data records before them', () => {
    fc.assert(fc.property(fc.array(flowEventMessage, { maxLength: 80 }), fc.integer({ min: 600, max: 1500 }), (messages, mtu) => {
      const { batch, records } = batchOf(messages);
      const enc = new IpfixEncoder({ domain: 7, mtu });
      const msgs: Buffer[] = [];
      // In batches of any split, as the stream takes them.
      const cut = batch.length === 0 ? 0 : recordEnd(dataViewOf(batch), 0);
      msgs.push(...enc.addRecords(batch.subarray(0, cut), 5_000), ...enc.addRecords(batch.subarray(cut), 5_000));
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
        got.push(...d.records.map((r) => countersAsNumbers(r.values)));
      }
      expect(got).toEqual(records.map((r) => countersAsNumbers(expected(r))));
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
    const { batch: r } = batchOf(fc.sample(flowEventMessage, { numRuns: 1, seed: 1 }));
    enc.addRecords(r, 0);
    expect(decode(enc.flush(0)!).templates.size).toBe(4);
    expect(enc.flush(500)).toBeUndefined();
    enc.addRecords(r, 600);
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
