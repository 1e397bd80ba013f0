/** The conntrack -L / -E line formatter and the record decoder (pure). */
import { describe, expect, it } from 'vitest';
import { conntrackLine } from '../../src/cli/format.js';
import type { Entry } from '../../src/entry.js';
import { addon } from '../../src/native.js';
import { decodeEntry, Present, RECORD_SIZE } from '../../src/record.js';

const base: Entry = {
  id: 1, family: 'ipv4', protocol: 'tcp', original: { src: '10.0.0.3', dst: '10.0.0.2', sport: 5, dport: 6 },
  reply: { src: '10.0.0.2', dst: '10.0.0.3', sport: 6, dport: 5 }, state: 'ESTABLISHED', status: ['CONFIRMED'],
  timeout: 99, mark: 0, zone: 0, use: 1,
};

describe('conntrackLine (pure): libnetfilter_conntrack\'s default format', () => {
  it('per-direction zones after each tuple, the entry zone after the mark', () => {
    expect(conntrackLine({ ...base, original: { ...base.original, zone: 4 } })).toBe(
      'tcp      6 99 ESTABLISHED src=10.0.0.3 dst=10.0.0.2 sport=5 dport=6 zone-orig=4 [UNREPLIED] src=10.0.0.2 dst=10.0.0.3 sport=6 dport=5 mark=0 use=1');
    expect(conntrackLine({ ...base, reply: { ...base.reply, zone: 5 }, zone: 0 })).toContain('dport=5 zone-reply=5 mark=0 use=1');
    expect(conntrackLine({ ...base, zone: 7 })).toContain('mark=0 zone=7 use=1');
  });

  it('the security context between the mark and the zone, as conntrack 1.4.7 prints it', () => {
    expect(conntrackLine({ ...base, zone: 7, secctx: 'system_u:object_r:unlabeled_t:s0' })).toContain('mark=0 secctx=system_u:object_r:unlabeled_t:s0 zone=7 use=1');
  });

  it('GRE keys in hex, DCCP and ICMP fields even when the kernel sent none', () => {
    const gre: Entry = { ...base, protocol: 'gre', state: undefined, original: { src: '10.0.0.1', dst: '10.0.0.2', srcKey: 5, dstKey: 0x1f }, reply: { src: '10.0.0.2', dst: '10.0.0.1', srcKey: 0x1f, dstKey: 5 } };
    expect(conntrackLine(gre)).toBe('gre      47 99 src=10.0.0.1 dst=10.0.0.2 srckey=0x5 dstkey=0x1f [UNREPLIED] src=10.0.0.2 dst=10.0.0.1 srckey=0x1f dstkey=0x5 mark=0 use=1');
    const dccp: Entry = { ...base, protocol: 'dccp', state: undefined, original: { src: '10.0.0.1', dst: '10.0.0.2' }, reply: { src: '10.0.0.2', dst: '10.0.0.1' } };
    expect(conntrackLine(dccp)).toBe('dccp     33 99 src=10.0.0.1 dst=10.0.0.2 sport=0 dport=0 [UNREPLIED] src=10.0.0.2 dst=10.0.0.1 sport=0 dport=0 mark=0 use=1');
  });

  it('[OFFLOAD] and [HW_OFFLOAD] take the place of [ASSURED]', () => {
    expect(conntrackLine({ ...base, status: ['SEEN_REPLY', 'ASSURED', 'CONFIRMED'] })).toContain('dport=5 [ASSURED] mark=0');
    expect(conntrackLine({ ...base, status: ['SEEN_REPLY', 'ASSURED', 'CONFIRMED', 'OFFLOAD'] })).toContain('dport=5 [OFFLOAD] mark=0');
    expect(conntrackLine({ ...base, status: ['SEEN_REPLY', 'ASSURED', 'OFFLOAD', 'HW_OFFLOAD'] })).toContain('dport=5 [HW_OFFLOAD] mark=0');
  });
});

describe('decodeEntry (pure): the native record layout', () => {
  it('reads per-direction zones and GRE keys from the layout the addon exports', () => {
    const { fields: F, tuple: T } = addon.RECORD_LAYOUT;
    const buf = Buffer.alloc(RECORD_SIZE);
    buf.writeUInt32LE(42, F.id);
    buf.writeUInt32LE(Present.reply | Present.ports | Present.origZone | Present.replyZone, F.present);
    buf[F.family] = 2;
    buf[F.protocol] = 47;
    buf.set([10, 0, 0, 1], F.orig + T.src);
    buf.set([10, 0, 0, 2], F.orig + T.dst);
    buf.writeUInt16LE(5, F.orig + T.sport);
    buf.writeUInt16LE(6, F.orig + T.dport);
    buf.set([10, 0, 0, 2], F.reply + T.src);
    buf.set([10, 0, 0, 1], F.reply + T.dst);
    buf.writeUInt16LE(6, F.reply + T.sport);
    buf.writeUInt16LE(5, F.reply + T.dport);
    buf.writeUInt16LE(4, F.origZone);
    buf.writeUInt16LE(9, F.replyZone);
    buf.writeUInt32LE(1234, F.pid);
    const e = decodeEntry(buf, new DataView(buf.buffer, buf.byteOffset, buf.length), 0);
    expect(e).toMatchObject({
      id: 42, family: 'ipv4', protocol: 'gre',
      original: { src: '10.0.0.1', dst: '10.0.0.2', srcKey: 5, dstKey: 6, zone: 4 },
      reply: { src: '10.0.0.2', dst: '10.0.0.1', srcKey: 6, dstKey: 5, zone: 9 },
    });
    expect(e.original.sport).toBeUndefined();
    // What the kernel did not send stays absent.
    expect(e.mark).toBeUndefined();
    expect(e.use).toBeUndefined();
  });

  it('the layout is the C struct\'s: every field inside the record, none overlapping', () => {
    const { size, fields } = addon.RECORD_LAYOUT;
    const offsets = Object.entries(fields).sort((a, b) => a[1] - b[1]);
    expect(new Set(offsets.map(([, o]) => o)).size).toBe(offsets.length);
    for (const [name, o] of offsets) expect(o, name).toBeLessThan(size);
    expect(size % 8).toBe(0);
  });
});
