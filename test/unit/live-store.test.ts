/**
 * The live table's native store (native/table.h) against a plain Map model,
 * fed records built from the exported layout: any sequence of upserts,
 * state changes, deletes, bulk loads and removals (enough to grow and shrink
 * its index and arrays) and syncs leaves the same entries and counts. No root.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { formatIPv4, formatIPv6 } from '../../src/address.js';
import { addon } from '../../src/native.js';
import { dataViewOf, decodeEntry, Present, RECORD_SIZE, RecordKind } from '../../src/record.js';

const SEED = Number(process.env.CONNTRACK_PBT_SEED ?? 1);
const { fields: F, tuple: T } = addon.RECORD_LAYOUT;

/** The flow numbered k: tcp, udp or icmp, IPv4 or IPv6, 16 flows per source. */
function flow(k: number): { family: number; protocol: number; src: Buffer; dst: Buffer; sport: number; dport: number } {
  const v6 = k % 5 === 4;
  const protocol = [6, 17, 1][k % 3]!;
  const src = Buffer.alloc(16);
  const dst = Buffer.alloc(16);
  if (v6) {
    src.writeUInt16BE(0x2001, 0);
    src.writeUInt32BE(k >> 4, 12);
    dst.writeUInt16BE(0x2001, 0);
    dst[15] = k % 7;
  } else {
    src.writeUInt32BE((10 << 24) | (k >> 4), 0);
    dst.writeUInt32BE((10 << 24) | (9 << 16) | (k % 7), 0);
  }
  return { family: v6 ? 10 : 2, protocol: v6 && protocol === 1 ? 58 : protocol, src, dst, sport: 1000 + (k & 15), dport: 80 };
}

/** One record: `kind` of flow k in TCP state `state` (kept for other protocols as the kernel would: none). */
function record(kind: number, k: number, state: number, assured: boolean, into = Buffer.alloc(RECORD_SIZE), off = 0): Buffer {
  const f = flow(k);
  const ports = f.protocol === 6 || f.protocol === 17;
  into[off + F.kind] = kind;
  into[off + F.family] = f.family;
  into[off + F.protocol] = f.protocol;
  into.writeUInt32LE(k, off + F.id);
  into.writeUInt32LE(assured ? 4 | 8 : 8, off + F.status);
  let present = Present.status | Present.reply | Present.id | (ports ? Present.ports : Present.icmp);
  if (f.protocol === 6) {
    present |= Present.state;
    into[off + F.state] = state;
  }
  into.writeUInt32LE(present, off + F.present);
  f.src.copy(into, off + F.orig + T.src);
  f.dst.copy(into, off + F.orig + T.dst);
  f.dst.copy(into, off + F.reply + T.src);
  f.src.copy(into, off + F.reply + T.dst);
  if (ports) {
    into.writeUInt16LE(f.sport, off + F.orig + T.sport);
    into.writeUInt16LE(f.dport, off + F.orig + T.dport);
    into.writeUInt16LE(f.dport, off + F.reply + T.sport);
    into.writeUInt16LE(f.sport, off + F.reply + T.dport);
  } else {
    into[off + F.orig + T.icmpType] = 8;
    into.writeUInt16LE(k, off + F.orig + T.icmpId);
    into.writeUInt16LE(k, off + F.reply + T.icmpId);
  }
  return into;
}

function batch(kind: number, keys: number[], state: number, assured: boolean): Buffer {
  const buf = Buffer.alloc(keys.length * RECORD_SIZE);
  keys.forEach((k, i) => record(kind, k, state, assured, buf, i * RECORD_SIZE));
  return buf;
}

interface Model {
  state: number;
  assured: boolean;
}

const range = (from: number, n: number): number[] => Array.from({ length: n }, (_, i) => from + i);
const opArb = fc.oneof(
  fc.record({ op: fc.constantFrom('new', 'update', 'destroy'), k: fc.integer({ min: 0, max: 40 }), state: fc.integer({ min: 1, max: 8 }), assured: fc.boolean() }),
  fc.record({ op: fc.constantFrom('bulkNew', 'bulkDestroy'), from: fc.integer({ min: 0, max: 3000 }), n: fc.integer({ min: 1, max: 5000 }) }),
  fc.record({ op: fc.constant('sync'), every: fc.integer({ min: 1, max: 4 }) }),
);

describe('LiveStore (native, against a Map)', () => {
  it('any sequence of events, bulk loads and removals and syncs leaves the model\'s entries and counts', () => {
    fc.assert(fc.property(fc.array(opArb, { maxLength: 40 }), (ops) => {
      const store = new addon.LiveStore(true);
      const model = new Map<number, Model>();
      const kinds: Record<string, number> = { new: RecordKind.new, update: RecordKind.update, destroy: RecordKind.destroy };
      for (const o of ops) {
        if (o.op === 'sync') {
          // A dump that sees every `every`-th entry: the others are gone once it ends.
          const seen = [...model.keys()].filter((k) => k % o.every === 0);
          store.beginSync();
          for (const k of seen) store.applyDump(record(RecordKind.entry, k, model.get(k)!.state, model.get(k)!.assured));
          store.endSync();
          for (const k of [...model.keys()]) if (k % o.every !== 0) model.delete(k);
        } else if (o.op === 'bulkNew' || o.op === 'bulkDestroy') {
          const keys = range(o.from, o.n);
          store.applyEvents(batch(o.op === 'bulkNew' ? RecordKind.new : RecordKind.destroy, keys, 3, true), false);
          for (const k of keys) o.op === 'bulkNew' ? model.set(k, { state: 3, assured: true }) : model.delete(k);
        } else {
          store.applyEvents(record(kinds[o.op]!, o.k, o.state, o.assured), false);
          if (o.op === 'destroy') model.delete(o.k);
          else model.set(o.k, { state: o.state, assured: o.assured });
        }
      }
      check(store, model);
      store.release();
      expect(store.counters().size).toBe(0);
    }), { seed: SEED, numRuns: 60 });
  });

  it('entries sharing one reply tuple (stale ones, not yet swept) are filed once: find() gives one of them, removal leaves none', () => {
    const store = new addon.LiveStore(true);
    const keys = range(0, 30000).map((k) => k * 3); // tcp flows
    const buf = batch(RecordKind.new, keys, 3, false);
    for (let off = 0; off < buf.length; off += RECORD_SIZE) buf.fill(0, off + F.reply, off + F.reply + 40);
    const t0 = performance.now();
    store.applyEvents(buf, false);
    const reply = { family: 2, protocol: 6, src: Buffer.alloc(4), dst: Buffer.alloc(4), sport: 0, dport: 0 };
    expect(store.find(reply)).not.toBeNull();
    store.applyEvents(batch(RecordKind.destroy, keys, 3, false), false);
    // Linear probing over 30,000 equal keys would take minutes.
    expect(performance.now() - t0).toBeLessThan(5000);
    expect(store.counters().size).toBe(0);
    expect(store.find(reply)).toBeNull();
  });

  it('an UPDATE without a state keeps the state it had', () => {
    const store = new addon.LiveStore(false);
    store.applyEvents(record(RecordKind.new, 0, 2, false), false);
    const update = record(RecordKind.update, 0, 0, true);
    update.writeUInt32LE(update.readUInt32LE(F.present) & ~Present.state, F.present);
    store.applyEvents(update, false);
    expect(store.groups()).toEqual([{ protocol: 6, state: 2, entries: 1, assured: 1 }]);
  });
});

function check(store: InstanceType<typeof addon.LiveStore>, model: Map<number, Model>): void {
  const c = store.counters();
  expect(c.size).toBe(model.size);
  expect(c.assured).toBe([...model.values()].filter((m) => m.assured).length);
  const groups = new Map<string, number>();
  const sources = new Map<string, number>();
  for (const [k, m] of model) {
    const f = flow(k);
    const g = `${f.protocol}/${f.protocol === 6 ? m.state : -1}`;
    groups.set(g, (groups.get(g) ?? 0) + 1);
    const s = f.family === 2 ? formatIPv4(f.src, 0) : formatIPv6(f.src, 0);
    sources.set(s, (sources.get(s) ?? 0) + 1);
  }
  expect(new Map(store.groups().map((g) => [`${g.protocol}/${g.state}`, g.entries]))).toEqual(groups);
  const top = store.topSources(1e6);
  expect(new Map(top.map((s) => [s.family === 2 ? formatIPv4(s.addr, 0) : formatIPv6(s.addr, 0), s.entries]))).toEqual(sources);
  for (let i = 1; i < top.length; i++) expect(top[i - 1]!.entries).toBeGreaterThanOrEqual(top[i]!.entries);
  // Every entry found by its original tuple and by its reply tuple, and iterated once.
  for (const [k, m] of model) {
    const f = flow(k);
    const ports = f.protocol === 6 || f.protocol === 17;
    const key = { family: f.family, protocol: f.protocol, src: f.src, dst: f.dst, ...(ports ? { sport: f.sport, dport: f.dport } : { icmpType: 8, icmpCode: 0, icmpId: k }) };
    const got = store.get(key);
    expect(got, `flow ${k}`).not.toBeNull();
    const e = decodeEntry(got!, dataViewOf(got!), 0);
    expect(e.id).toBe(k);
    expect(e.status.includes('ASSURED')).toBe(m.assured);
    const reply = { family: f.family, protocol: f.protocol, src: f.dst, dst: f.src, ...(ports ? { sport: f.dport, dport: f.sport } : { icmpType: 0, icmpCode: 0, icmpId: k }) };
    const viaReply = store.find(reply);
    expect(viaReply && decodeEntry(viaReply, dataViewOf(viaReply), 0).id).toBe(k);
  }
  const ids: number[] = [];
  for (let start = 0; ; start += 1000) {
    const buf = store.records(start, 1000);
    if (buf === null) break;
    const dv = dataViewOf(buf);
    for (let off = 0; off < buf.length; off += RECORD_SIZE) ids.push(decodeEntry(buf, dv, off).id);
  }
  expect(ids.sort((a, b) => a - b)).toEqual([...model.keys()].sort((a, b) => a - b));
}
