/**
 * The flow record codec and entryToJSON, on hand-made entries; the native
 * NDJSON writer against JSON.stringify of that codec on generated events: no root needed.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { entryToJSON, protocolName, stateTable, type Entry } from '../../src/entry.js';
import { flowRecord, flowRecordOf, type FlowLogRecord } from '../../src/flows.js';
import { addon, type NativeFlowJson } from '../../src/native.js';
import { dataViewOf, decodeEntry, F, Present, RECORD_SIZE, recordEnd, recordKind, RecordKind, recordLost } from '../../src/record.js';
import { flowEventMessage } from '../helpers/netlink.js';

const natted: Entry = {
  id: 7,
  family: 'ipv4',
  protocol: 'tcp',
  original: { src: '10.0.0.5', dst: '192.0.2.80', sport: 40000, dport: 80 },
  // DNAT to 10.0.1.9:8080, SNAT to 198.51.100.1:61000.
  reply: { src: '10.0.1.9', dst: '198.51.100.1', sport: 8080, dport: 61000 },
  state: 'TIME_WAIT',
  status: ['SEEN_REPLY', 'ASSURED', 'CONFIRMED', 'SRC_NAT', 'DST_NAT', 'SRC_NAT_DONE', 'DST_NAT_DONE'],
  timeout: 120,
  mark: 3,
  zone: 0,
  counters: { original: { packets: 5, bytes: 300 }, reply: { packets: 4, bytes: 2000 } },
  timestamp: { start: 1_700_000_000_123_456_789n, stop: 1_700_000_002_500_000_000n },
  labels: [1, 5],
};

describe('flow records', () => {
  it('an end record: the translation from the reply tuple, milliseconds and duration, counters, plain JSON', () => {
    const r = flowRecord('end', natted);
    expect(r).toEqual({
      event: 'end', id: 7, family: 'ipv4', protocol: 'tcp', original: natted.original, reply: natted.reply,
      nat: { source: { address: '198.51.100.1', port: 61000 }, destination: { address: '10.0.1.9', port: 8080 } },
      startMs: 1_700_000_000_123, endMs: 1_700_000_002_500, durationMs: 2_377,
      packets: { original: 5, reply: 4 }, bytes: { original: 300, reply: 2000 }, state: 'TIME_WAIT', mark: 3, zone: 0, labels: [1, 5],
    });
    expect(Object.keys(r)).toEqual(['event', 'id', 'family', 'protocol', 'original', 'reply', 'nat', 'startMs', 'endMs', 'durationMs', 'packets', 'bytes', 'state', 'mark', 'zone', 'labels']);
    expect(JSON.parse(JSON.stringify(r))).toEqual(r);
  });

  it('only the NAT that was done: source alone, destination alone, none; no port for a protocol without ports', () => {
    const snat = flowRecord('start', { ...natted, status: ['SRC_NAT'] });
    expect(snat.nat).toEqual({ source: { address: '198.51.100.1', port: 61000 } });
    const dnat = flowRecord('start', { ...natted, status: ['DST_NAT'] });
    expect(dnat.nat).toEqual({ destination: { address: '10.0.1.9', port: 8080 } });
    expect(flowRecord('end', { ...natted, status: ['ASSURED'] })).not.toHaveProperty('nat');
    const icmp = flowRecord('end', { ...natted, protocol: 'icmp', original: { src: '10.0.0.5', dst: '192.0.2.1' }, reply: { src: '192.0.2.1', dst: '198.51.100.1' }, status: ['SRC_NAT'] });
    expect(icmp.nat).toEqual({ source: { address: '198.51.100.1' } });
  });

  it('what the kernel did not send stays absent; an overrun is a lost record', () => {
    const { counters: _c, timestamp: _t, mark: _m, labels: _l, ...bare } = natted;
    const r = flowRecord('start', { ...bare, state: undefined });
    for (const k of ['startMs', 'endMs', 'durationMs', 'packets', 'bytes', 'state', 'mark', 'labels']) expect(r).not.toHaveProperty(k);
    expect(flowRecord('end', { ...natted, timestamp: { start: 2_000_000n } })).toMatchObject({ startMs: 2 });
    expect(flowRecord('end', { ...natted, timestamp: { start: 2_000_000n } })).not.toHaveProperty('durationMs');
    expect(flowRecordOf({ type: 'overrun', lost: 12 })).toEqual({ event: 'lost', count: 12 });
    expect(flowRecordOf({ type: 'new', entry: natted, portid: 0 }).event).toBe('start');
  });
});

describe('entryToJSON', () => {
  it('writes the bigint timestamps as decimal strings and leaves everything else as it is', () => {
    const j = entryToJSON(natted);
    expect(j.timestamp).toEqual({ start: '1700000000123456789', stop: '1700000002500000000' });
    expect(() => JSON.stringify(natted)).toThrow(TypeError);
    const { timestamp: _t, ...rest } = natted;
    expect(JSON.parse(JSON.stringify(j))).toEqual({ ...rest, timestamp: j.timestamp });
    expect(entryToJSON({ ...natted, timestamp: { start: 5n } }).timestamp).toEqual({ start: '5' });
    expect(entryToJSON(rest)).toEqual(rest);
  });
});

/** A batch of event records as the reader hands them out, from generated netlink messages (and overrun records, as the reader places them). */
function batchOf(messages: Buffer[], losses: Map<number, number> = new Map()): Buffer {
  const parts: Buffer[] = [];
  messages.forEach((m, i) => {
    const lost = losses.get(i);
    if (lost !== undefined) parts.push(overrunRecord(lost));
    parts.push(addon.decodeMessages(m, true));
  });
  return Buffer.concat(parts);
}

function overrunRecord(lost: number): Buffer {
  const r = Buffer.alloc(RECORD_SIZE);
  r[F.kind] = RecordKind.overrun;
  r.writeUInt32LE(lost, F.lost);
  return r;
}

/** What JSON.stringify writes of the records for await yields for the same batch: the reference. */
function referenceLines(batch: Buffer, fields: Record<string, unknown> = {}): string {
  const dv = dataViewOf(batch);
  let text = '';
  for (let off = 0; off + RECORD_SIZE <= batch.length; off = recordEnd(dv, off)) {
    const kind = recordKind(batch, off);
    const r: FlowLogRecord = kind === RecordKind.overrun ? { event: 'lost', count: recordLost(dv, off) } : flowRecord(kind === RecordKind.new ? 'start' : 'end', decodeEntry(batch, dv, off));
    text += JSON.stringify({ ...fields, ...r }) + '\n';
  }
  return text;
}

describe('ndjson(): the native writer of flow records', () => {
  const seed = Number(process.env.CONNTRACK_PBT_SEED ?? Date.now());
  const numRuns = Number(process.env.CONNTRACK_PBT_RUNS ?? 300);
  const writer = (): NativeFlowJson => {
    const protocols = Array.from({ length: 256 }, (_, n) => { const p = protocolName(n); return typeof p === 'string' ? p : undefined; });
    const states: Record<number, readonly string[]> = {};
    for (let n = 0; n < 256; n++) { const t = stateTable(n); if (t) states[n] = t; }
    return new addon.FlowJson({ protocols, states });
  };

  it('writes, byte for byte, what JSON.stringify writes of each flow record of generated events, lost records in place', () => {
    const w = writer();
    fc.assert(fc.property(fc.array(flowEventMessage, { maxLength: 12 }), fc.array(fc.tuple(fc.nat(12), fc.integer({ min: 1, max: 2 ** 32 - 1 })), { maxLength: 3 }), (messages, lossAt) => {
      const batch = batchOf(messages, new Map(lossAt));
      const got = w.lines(batch, '');
      expect(got.text).toBe(referenceLines(batch));
      expect(got.records).toBe(messages.length);
      expect(got.lost).toBe([...new Map(lossAt)].filter(([i]) => i < messages.length).reduce((n, [, c]) => n + c, 0));
      for (const line of got.text.split('\n').filter(Boolean)) JSON.parse(line);
    }), { seed, numRuns, verbose: true });
  });

  it('puts the fields first in every line, lost ones too, as the spread { ...fields, ...record } does', () => {
    const w = writer();
    // Any text, non-ASCII and lone surrogates included: the caller's fields are the one part of a line that may be.
    const text = (n: number): fc.Arbitrary<string> => fc.string({ unit: 'binary', maxLength: n });
    const fields = fc.dictionary(text(8).filter((k) => k.length > 0 && !['event', 'id', 'count', 'family', 'protocol', 'original', 'reply', 'zone', '__proto__'].includes(k)), fc.oneof(text(12), fc.integer(), fc.boolean(), fc.constant(null)), { maxKeys: 3 });
    fc.assert(fc.property(fc.array(flowEventMessage, { minLength: 1, maxLength: 4 }), fields, (messages, f) => {
      const batch = batchOf(messages, new Map([[0, 7]]));
      let prefix = '';
      for (const [k, v] of Object.entries(f)) prefix += `${JSON.stringify(k)}:${JSON.stringify(v)},`;
      expect(w.lines(batch, prefix).text).toBe(referenceLines(batch, f));
    }), { seed, numRuns: Math.ceil(numRuns / 3), verbose: true });
  });

  it('counters beyond 2^53 are written as JSON.stringify writes Number() of them', () => {
    const w = writer();
    for (const v of [2n ** 53n, 2n ** 53n + 1n, 2n ** 64n - 1n, 12345678901234567890n, 9007199254740993n * 3n]) {
      const m = fc.sample(flowEventMessage, { numRuns: 1, seed: 5 })[0]!;
      const batch = batchOf([m]);
      const dv = dataViewOf(batch);
      dv.setUint32(F.present, dv.getUint32(F.present, true) | Present.counters, true);
      dv.setBigUint64(F.origBytes, v, true);
      expect(w.lines(batch, '').text).toBe(referenceLines(batch));
      expect(w.lines(batch, '').text).toContain(`"bytes":{"original":${String(Number(v))}`);
    }
  });
});
