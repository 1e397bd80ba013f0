/**
 * The native decoder on bytes, without root: addon.decodeMessages() runs the
 * decoder dumps, gets and events use (native DecodeRecord) on netlink
 * messages built here, attribute by attribute (present, absent, truncated,
 * nested wrong), and on the fuzz corpus (native/fuzz/corpus), whose
 * entries are checked field by field against a reference reading of the
 * same bytes in JS. As ti-mo/conntrack's flow_test.go tables do.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import type { Entry } from '../../src/entry.js';
import { decodeExpectations } from '../../src/expectation.js';
import { addon } from '../../src/native.js';
import { dataViewOf, decodeEntries, RECORD_SIZE, recordEnd, recordKind, RecordKind } from '../../src/record.js';

import { attr, be16, be32, be64, CTA, EXP, IP, message, MSG, nest, NLA_F_NESTED, NLM_F_CREATE, NLM_F_EXCL, PROTO, strz, tcp, tuple, TUPLE, u8 } from '../helpers/netlink.js';

/** A TCP entry as a dump sends it, with `extra` attributes after the tuples. */
function entryMessage(extra: Buffer[] = [], options: { flags?: number; type?: number } = {}): Buffer {
  return message(options.type ?? MSG.CT_NEW, [
    nest(CTA.TUPLE_ORIG, tuple([10, 0, 0, 1], [10, 0, 0, 2], tcp(40000, 80))),
    nest(CTA.TUPLE_REPLY, tuple([10, 0, 0, 2], [10, 0, 0, 1], tcp(80, 40000))),
    attr(CTA.STATUS, be32(0x8 | 0x2)), // CONFIRMED | SEEN_REPLY
    attr(CTA.TIMEOUT, be32(120)),
    ...extra,
  ], { flags: options.flags ?? 0 });
}

function decodeDump(bytes: Buffer): Entry[] {
  return decodeEntries(addon.decodeMessages(bytes));
}
function decodeOneEntry(extra: Buffer[]): Entry {
  const entries = decodeDump(entryMessage(extra));
  expect(entries).toHaveLength(1);
  return entries[0]!;
}
function expectMalformed(bytes: Buffer): void {
  expect(() => addon.decodeMessages(bytes)).toThrow(expect.objectContaining({ errno: 74 /* EBADMSG */ }));
  // The event reader skips what a dump refuses.
  expect(addon.decodeMessages(bytes, true).length).toBe(0);
}

// ---- the tables ------------------------------------------------------------

describe('decodeMessages (pure): one attribute at a time', () => {
  it('a message with only what every entry has: the rest stays absent', () => {
    const e = decodeOneEntry([]);
    expect(e).toEqual({
      id: 0, family: 'ipv4', protocol: 'tcp', state: undefined, status: ['SEEN_REPLY', 'CONFIRMED'], timeout: 120, zone: 0,
      original: { src: '10.0.0.1', dst: '10.0.0.2', sport: 40000, dport: 80 },
      reply: { src: '10.0.0.2', dst: '10.0.0.1', sport: 80, dport: 40000 },
    });
    for (const k of ['mark', 'use', 'counters', 'timestamp', 'labels', 'vtag', 'helper', 'secctx'] as const) expect(e[k], k).toBeUndefined();
  });

  const present: { name: string; attrs: Buffer[]; want: Partial<Entry> }[] = [
    { name: 'CTA_ID', attrs: [attr(CTA.ID, be32(0xdeadbeef))], want: { id: 0xdeadbeef } },
    { name: 'CTA_MARK', attrs: [attr(CTA.MARK, be32(0x10))], want: { mark: 0x10 } },
    { name: 'CTA_MARK of 0 (sent, so present)', attrs: [attr(CTA.MARK, be32(0))], want: { mark: 0 } },
    { name: 'CTA_USE', attrs: [attr(CTA.USE, be32(3))], want: { use: 3 } },
    { name: 'CTA_ZONE', attrs: [attr(CTA.ZONE, be16(7))], want: { zone: 7 } },
    {
      name: 'CTA_PROTOINFO (TCP state)',
      attrs: [nest(CTA.PROTOINFO, nest(1, attr(1, u8(3))))],
      want: { state: 'ESTABLISHED' },
    },
    {
      name: 'CTA_COUNTERS_ORIG/REPLY (64-bit)',
      attrs: [nest(CTA.COUNTERS_ORIG, attr(1, be64(5n)), attr(2, be64(300n))), nest(CTA.COUNTERS_REPLY, attr(1, be64(4n)), attr(2, be64(200n)))],
      want: { counters: { original: { packets: 5, bytes: 300 }, reply: { packets: 4, bytes: 200 } } },
    },
    {
      name: 'CTA_COUNTERS_ORIG (32-bit, old kernels)',
      attrs: [nest(CTA.COUNTERS_ORIG, attr(3, be32(2)), attr(4, be32(100)))],
      want: { counters: { original: { packets: 2, bytes: 100 }, reply: { packets: 0, bytes: 0 } } },
    },
    {
      name: 'CTA_TIMESTAMP start and stop',
      attrs: [nest(CTA.TIMESTAMP, attr(1, be64(1_700_000_000_000_000_000n)), attr(2, be64(1_700_000_001_000_000_000n)))],
      want: { timestamp: { start: 1_700_000_000_000_000_000n, stop: 1_700_000_001_000_000_000n } },
    },
    { name: 'CTA_LABELS (bits 0 and 9)', attrs: [attr(CTA.LABELS, Buffer.from([1, 2, ...Array(14).fill(0)]))], want: { labels: [0, 9] } },
    { name: 'CTA_HELP (NUL-padded name)', attrs: [nest(CTA.HELP, attr(1, strz('ftp', 16)))], want: { helper: 'ftp' } },
    { name: 'CTA_HELP (name without a NUL)', attrs: [nest(CTA.HELP, attr(1, Buffer.from('sip')))], want: { helper: 'sip' } },
    { name: 'CTA_HELP (a name longer than the old 16-byte slot)', attrs: [nest(CTA.HELP, attr(1, strz('a-helper-with-a-long-name')))], want: { helper: 'a-helper-with-a-long-name' } },
    { name: 'CTA_SECCTX (CTA_SECCTX_NAME)', attrs: [nest(CTA.SECCTX, attr(1, strz('system_u:object_r:unlabeled_t:s0')))], want: { secctx: 'system_u:object_r:unlabeled_t:s0' } },
    {
      name: 'CTA_SECCTX and CTA_HELP together',
      attrs: [nest(CTA.HELP, attr(1, strz('ftp'))), nest(CTA.SECCTX, attr(1, strz('u:r:t:s0')))],
      want: { helper: 'ftp', secctx: 'u:r:t:s0' },
    },
  ];
  for (const c of present) {
    it(`present: ${c.name}`, () => {
      expect(decodeOneEntry(c.attrs)).toMatchObject(c.want as Record<string, unknown>);
    });
  }

  it('present: per-direction zones, ICMP fields, IPv6 addresses', () => {
    const icmp = [attr(PROTO.NUM, u8(1)), attr(PROTO.ICMP_ID, be16(77)), attr(PROTO.ICMP_TYPE, u8(8)), attr(PROTO.ICMP_CODE, u8(0))];
    const orig = Buffer.concat([tuple([10, 0, 0, 1], [10, 0, 0, 2], icmp), attr(TUPLE.ZONE, be16(4))]);
    const [e] = decodeDump(message(MSG.CT_NEW, [nest(CTA.TUPLE_ORIG, orig)]));
    expect(e!.original).toEqual({ src: '10.0.0.1', dst: '10.0.0.2', icmp: { type: 8, code: 0, id: 77 }, zone: 4 });
    expect(e!.protocol).toBe('icmp');
    const v6a = [0x20, 0x01, 0x0d, 0xb8, ...Array(11).fill(0), 1];
    const v6b = [0x20, 0x01, 0x0d, 0xb8, ...Array(11).fill(0), 2];
    const [six] = decodeDump(message(MSG.CT_NEW, [nest(CTA.TUPLE_ORIG, tuple(v6a, v6b, tcp(1, 2)))], { family: 10 }));
    expect(six).toMatchObject({ family: 'ipv6', original: { src: '2001:db8::1', dst: '2001:db8::2', sport: 1, dport: 2 } });
  });

  it('present: strings of several records in one batch stay with their record', () => {
    const batch = Buffer.concat([
      entryMessage([nest(CTA.HELP, attr(1, strz('ftp')))]),
      entryMessage([attr(CTA.MARK, be32(1))]),
      entryMessage([nest(CTA.HELP, attr(1, strz('tftp')))]),
    ]);
    const records = addon.decodeMessages(batch);
    const entries = decodeEntries(records);
    expect(entries.map((e) => [e.helper, e.mark])).toEqual([['ftp', undefined], [undefined, 1], ['tftp', undefined]]);
    // The fixed part does not grow with a string: only its own tail does.
    const dv = dataViewOf(records);
    expect(recordEnd(dv, 0)).toBe(RECORD_SIZE + 8);
    expect(recordEnd(dv, RECORD_SIZE + 8)).toBe(2 * RECORD_SIZE + 8);
    expect(RECORD_SIZE).toBeLessThanOrEqual(216);
  });

  const truncated: { name: string; attrs: Buffer[] }[] = [
    { name: 'CTA_ID of 2 bytes', attrs: [attr(CTA.ID, be16(1))] },
    { name: 'CTA_MARK of 2 bytes', attrs: [attr(CTA.MARK, be16(1))] },
    { name: 'CTA_USE of 1 byte', attrs: [attr(CTA.USE, u8(1))] },
    { name: 'CTA_ZONE of 1 byte', attrs: [attr(CTA.ZONE, u8(1))] },
    { name: 'CTA_COUNTERS_ORIG packets of 4 bytes in the 64-bit attribute', attrs: [nest(CTA.COUNTERS_ORIG, attr(1, be32(1)), attr(2, be64(1n)))] },
    { name: 'CTA_TIMESTAMP start of 4 bytes', attrs: [nest(CTA.TIMESTAMP, attr(1, be32(1)))] },
  ];
  for (const c of truncated) {
    it(`truncated: ${c.name} fails a dump (EBADMSG), an event is skipped`, () => {
      expectMalformed(entryMessage(c.attrs));
    });
  }

  it('truncated: an attribute running past its message carries nothing; a message past its buffer fails the dump', () => {
    const m = entryMessage([attr(CTA.MARK, be32(5))]);
    m.writeUInt16LE(200, m.length - 8); // the mark's nla_len now reaches beyond the message
    expect(decodeDump(m)[0]!.mark).toBeUndefined();
    expectMalformed(entryMessage().subarray(0, 40));
    const short = entryMessage();
    short.writeUInt32LE(8, 0); // shorter than a netlink header
    expectMalformed(short);
  });

  const nestedWrong: { name: string; attrs: Buffer[] }[] = [
    { name: 'CTA_PROTOINFO with a 2-byte TCP state', attrs: [nest(CTA.PROTOINFO, nest(1, attr(1, be16(3))))] },
    { name: 'CTA_TUPLE_REPLY with a 3-byte IPv4 source', attrs: [] },
    { name: 'CTA_TUPLE_REPLY without a protocol number', attrs: [] },
  ];
  it(`nested wrong: ${nestedWrong[0]!.name}`, () => expectMalformed(entryMessage(nestedWrong[0]!.attrs)));
  it(`nested wrong: ${nestedWrong[1]!.name}`, () => {
    const bad = nest(TUPLE.IP, attr(IP.V4_SRC, Buffer.from([10, 0, 0])), attr(IP.V4_DST, Buffer.from([10, 0, 0, 1])));
    expectMalformed(message(MSG.CT_NEW, [nest(CTA.TUPLE_ORIG, tuple([10, 0, 0, 1], [10, 0, 0, 2], tcp(1, 2))), nest(CTA.TUPLE_REPLY, bad, nest(TUPLE.PROTO, ...tcp(2, 1)))]));
  });
  it(`nested wrong: ${nestedWrong[2]!.name}`, () => {
    const noNum = nest(TUPLE.PROTO, attr(PROTO.SRC_PORT, be16(1)));
    expectMalformed(message(MSG.CT_NEW, [nest(CTA.TUPLE_ORIG, nest(TUPLE.IP, attr(IP.V4_SRC, Buffer.from([1, 2, 3, 4])), attr(IP.V4_DST, Buffer.from([1, 2, 3, 5]))), noNum)]));
  });
  it('nested wrong: no original tuple at all', () => expectMalformed(message(MSG.CT_NEW, [attr(CTA.MARK, be32(1))])));
  it('nested wrong: a nest of bytes that are no attributes carries nothing', () => {
    expect(decodeOneEntry([attr(CTA.HELP | NLA_F_NESTED, Buffer.from([1, 0]))]).helper).toBeUndefined();
  });
  it('nested wrong: a CTA_SECCTX without its name carries nothing', () => {
    expect(decodeOneEntry([nest(CTA.SECCTX, attr(2, strz('x')))]).secctx).toBeUndefined();
  });
  it('nested wrong: an unknown attribute is ignored', () => {
    expect(decodeOneEntry([attr(60, be32(1)), attr(CTA.MARK, be32(2))]).mark).toBe(2);
  });
});

describe('decodeMessages (pure): events and expectations', () => {
  it('an event\'s kind comes from its type and flags; the sender\'s port travels with it', () => {
    const batch = Buffer.concat([
      entryMessage([], { flags: NLM_F_CREATE | NLM_F_EXCL }),
      entryMessage([]),
      entryMessage([], { type: MSG.CT_DELETE }),
    ]);
    const records = addon.decodeMessages(batch, true);
    const dv = dataViewOf(records);
    const kinds: number[] = [];
    for (let off = 0; off < records.length; off = recordEnd(dv, off)) kinds.push(recordKind(records, off));
    expect(kinds).toEqual([RecordKind.new, RecordKind.update, RecordKind.destroy]);
    // In a dump every message is an entry.
    const dumped = addon.decodeMessages(batch);
    expect(recordKind(dumped, 0)).toBe(RecordKind.entry);
  });

  it('an expectation, its helper in the tail as an entry\'s', () => {
    const master = tuple([10, 0, 0, 1], [10, 0, 0, 2], tcp(40000, 21));
    const expected = tuple([10, 0, 0, 1], [10, 0, 0, 2], tcp(0, 51210));
    const m = message(MSG.EXP_NEW, [
      nest(EXP.MASTER, master), nest(EXP.TUPLE, expected), nest(EXP.MASK, expected),
      attr(EXP.TIMEOUT, be32(299)), attr(EXP.ID, be32(9)), attr(EXP.HELP_NAME, strz('ftp')), attr(EXP.CLASS, be32(0)),
    ]);
    const [x] = decodeExpectations(addon.decodeMessages(m));
    expect(x).toMatchObject({ id: 9, timeout: 299, helper: 'ftp', class: 0, protocol: 'tcp', tuple: { dport: 51210 }, master: { sport: 40000, dport: 21 } });
    expect(recordKind(addon.decodeMessages(m), 0)).toBe(RecordKind.expectation);
  });

  it('not a buffer: a TypeError', () => {
    expect(() => (addon.decodeMessages as (b: unknown) => Buffer)('x')).toThrow(TypeError);
  });
});

// ---- the corpus, against a reference reading in JS ---------------------------

/** The attributes of one level, last one of a type winning, as the native collector keeps them. */
function attrsOf(buf: Buffer, start = 0, end = buf.length): Map<number, Buffer> {
  const m = new Map<number, Buffer>();
  for (let p = start; p + 4 <= end; ) {
    const len = buf.readUInt16LE(p);
    if (len < 4 || p + len > end) break;
    m.set(buf.readUInt16LE(p + 2) & 0x3fff, buf.subarray(p + 4, p + len));
    p += (len + 3) & ~3;
  }
  return m;
}
const canonical = (a: string): string => (a.includes(':') ? new URL(`http://[${a}]`).hostname : a);
function address(b: Buffer): string {
  if (b.length === 4) return [...b].join('.');
  const words: string[] = [];
  for (let i = 0; i < 16; i += 2) words.push(b.readUInt16BE(i).toString(16));
  return canonical(words.join(':'));
}

/** What the reference reading finds in one conntrack message, for the fields it can check on its own. */
function reference(m: Buffer): Record<string, unknown> {
  const top = attrsOf(m, 20, m.readUInt32LE(0));
  const out: Record<string, unknown> = {};
  const u32 = (t: number): void => {
    const v = top.get(t);
    if (v) out[Object.keys(CTA).find((k) => CTA[k as keyof typeof CTA] === t)!] = v.readUInt32BE(0);
  };
  [CTA.ID, CTA.MARK, CTA.USE, CTA.TIMEOUT].forEach(u32);
  const orig = attrsOf(top.get(CTA.TUPLE_ORIG)!);
  const ip = orig.get(TUPLE.IP) && attrsOf(orig.get(TUPLE.IP)!);
  const src = ip?.get(IP.V4_SRC) ?? ip?.get(IP.V6_SRC);
  const dst = ip?.get(IP.V4_DST) ?? ip?.get(IP.V6_DST);
  if (src && dst) Object.assign(out, { src: address(src), dst: address(dst) });
  const proto = orig.get(TUPLE.PROTO) && attrsOf(orig.get(TUPLE.PROTO)!);
  if (proto?.get(PROTO.NUM)) out.protonum = proto.get(PROTO.NUM)![0];
  if (proto?.get(PROTO.SRC_PORT)) out.sport = proto.get(PROTO.SRC_PORT)!.readUInt16BE(0);
  if (proto?.get(PROTO.DST_PORT)) out.dport = proto.get(PROTO.DST_PORT)!.readUInt16BE(0);
  const help = top.get(CTA.HELP) && attrsOf(top.get(CTA.HELP)!).get(1);
  if (help) out.helper = help.toString('latin1').split('\0')[0];
  return out;
}
function observed(e: Entry, ref: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  const pick = (k: string, v: unknown): void => {
    if (k in ref) out[k] = v;
  };
  pick('ID', e.id);
  pick('MARK', e.mark);
  pick('USE', e.use);
  pick('TIMEOUT', e.timeout);
  pick('src', canonical(e.original.src));
  pick('dst', canonical(e.original.dst));
  pick('protonum', typeof e.protocol === 'number' ? e.protocol : undefined);
  pick('sport', e.original.sport ?? e.original.srcKey);
  pick('dport', e.original.dport ?? e.original.dstKey);
  pick('helper', e.helper);
  return out;
}

describe('decodeMessages (pure): the fuzz corpus', () => {
  const dir = new URL('../../native/fuzz/corpus/', import.meta.url);

  it('every file decodes or is refused as a dump would refuse it; every entry agrees with a reference reading', () => {
    let checked = 0;
    for (const name of readdirSync(dir)) {
      const bytes = readFileSync(new URL(name, dir));
      // Events never throw: whatever is malformed is skipped.
      addon.decodeMessages(bytes, true);
      for (let p = 0; p + 16 <= bytes.length; ) {
        const len = bytes.readUInt32LE(p);
        if (len < 16 || p + len > bytes.length) break;
        const m = Buffer.from(bytes.subarray(p, p + len));
        p += (len + 3) & ~3;
        if ((m.readUInt16LE(4) >> 8) !== 1 || len < 20) continue; // conntrack messages only
        let records: Buffer;
        try {
          records = addon.decodeMessages(m);
        } catch (e) {
          expect((e as { errno?: number }).errno, name).toBe(74);
          continue;
        }
        const [entry] = decodeEntries(records);
        const ref = reference(m);
        const want = { ...ref };
        // protocol numbers the decoder names come back as names: compare the number only when unnamed.
        if (typeof entry!.protocol !== 'number') delete want.protonum;
        expect(observed(entry!, want), `${name} at ${p - len}`).toEqual(want);
        checked++;
      }
    }
    expect(checked).toBeGreaterThan(100);
  });
});
