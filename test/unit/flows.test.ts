/** The flow record codec and entryToJSON, on hand-made entries: no root needed. */
import { describe, expect, it } from 'vitest';
import { entryToJSON, type Entry } from '../../src/entry.js';
import { flowRecord, flowRecordOf } from '../../src/flows.js';

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
