/**
 * ct.liveTable() on a real kernel: after generated inserts, state changes,
 * deletes, bursts that overrun a tiny queue, and resyncs started at any
 * point, every figure and every entry at quiescence equals a fresh dump and
 * `conntrack -L`; NAT made by nftables found from its reply tuple; the
 * options checked. Lifecycle (close mid-dump and mid-resync, GC, Workers) is
 * in lifecycle.test.ts.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { Conntrack } from '../src/conntrack.js';
import type { Entry } from '../src/entry.js';
import type { LiveTable } from '../src/live-table.js';
import { expectSameEntry } from './helpers/compare.js';
import { describePrivileged, parseCliLine, useNamespace, waitFor, type Netns } from './helpers/netns.js';
import { apply, opArb, type Op } from './helpers/table-ops.js';

const SEED = Number(process.env.CONNTRACK_PBT_SEED ?? 1);
const RUNS = Math.max(8, Math.round(Number(process.env.CONNTRACK_PBT_RUNS ?? 300) / 20));

/** A reply tuple as find() takes it: the entry's protocol and zone with the reply direction's fields. */
function replyKey(e: Entry): Parameters<LiveTable['find']>[0] {
  const { zone: _directional, ...reply } = e.reply;
  return { ...reply, protocol: e.protocol, zone: e.zone };
}

/** Every figure of the table, as a fresh dump gives it. */
function figuresOf(entries: Entry[]): unknown {
  const counts = new Map<string, number>();
  const sources = new Map<string, number>();
  for (const e of entries) {
    const k = `${String(e.protocol)} ${e.state ?? ''}`;
    counts.set(k, (counts.get(k) ?? 0) + 1);
    sources.set(e.original.src, (sources.get(e.original.src) ?? 0) + 1);
  }
  return {
    size: entries.length,
    assured: entries.filter((e) => e.status.includes('ASSURED')).length,
    counts: [...counts].sort(),
    sources: [...sources].sort(),
  };
}

function tableFigures(t: LiveTable): unknown {
  return {
    size: t.size,
    assured: t.assured,
    counts: t.counts().map((c) => [`${String(c.protocol)} ${c.state}`, c.entries]).sort(),
    sources: t.topSources(1000).map((s) => [s.src, s.entries]).sort(),
  };
}

/** Waits until the table's figures equal a fresh dump's (the kernel settles), then compares every entry with it and with conntrack -L. */
async function expectEqualToKernel(ct: Conntrack, ns: Netns, table: LiveTable): Promise<void> {
  let last = '';
  try {
    await waitFor(async () => {
      const got = JSON.stringify(tableFigures(table));
      last = `${got} != ${JSON.stringify(figuresOf(await ct.list()))}`;
      return got === JSON.stringify(figuresOf(await ct.list())) ? true : undefined;
    }, 15_000, 'the live table to equal a dump');
  } catch (e) {
    throw new Error(`${(e as Error).message}: ${last}`);
  }
  const dump = await ct.list();
  const cli = ns.list('-o', 'id').map(parseCliLine);
  expect(table.size).toBe(cli.length);
  const byId = new Map(dump.map((e) => [String(e.id), e]));
  // The top sources come largest first.
  const top = table.topSources(1000).map((s) => s.entries);
  expect(top).toEqual([...top].sort((a, b) => b - a));
  for (const c of cli) {
    const e = byId.get(c.fields.id!)!;
    const live = table.get(e);
    expect(live, `entry ${JSON.stringify(e.original)}`).toBeDefined();
    // The timeout is as of the last event or dump; use is the kernel's refcount, which events do not carry.
    expectSameEntry({ ...live!, timeout: c.timeout }, c, { compareUse: false });
    expect(table.find(replyKey(e))?.id).toBe(e.id);
    expect(table.find({ ...e.original, protocol: e.protocol, zone: e.zone })?.id).toBe(e.id);
  }
  expect([...table.entries()].map((e) => e.id).sort()).toEqual(dump.map((e) => e.id).sort());
}

/** A burst of `n` UDP entries loaded at once while this thread is blocked: a tiny queue overflows. */
function burst(ns: Netns, base: number, n: number): void {
  ns.restore(Array.from({ length: n }, (_, i) => `-I -p udp -s 10.7.${base}.${i & 255} -d 10.9.0.1 --sport ${5000 + (i >> 8)} --dport 53 -t 300`), { allowFailures: true });
}

type Step = Op | { op: 'burst'; base: number; n: number } | { op: 'resync' } | { op: 'pause'; ms: number };
const stepArb: fc.Arbitrary<Step> = fc.oneof(
  { weight: 8, arbitrary: opArb },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('burst' as const), base: fc.integer({ min: 0, max: 3 }), n: fc.integer({ min: 50, max: 400 }) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('resync' as const) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('pause' as const), ms: fc.integer({ min: 0, max: 30 }) }) },
);

describePrivileged('ct.liveTable(): equal to the kernel at quiescence', () => {
  const fx = useNamespace('all', 'ctlive');

  it('after any generated sequence of inserts, state changes, deletes, overruns and resyncs, every figure, get() and find() equal a fresh dump and conntrack -L', async () => {
    await fc.assert(fc.asyncProperty(fc.array(stepArb, { minLength: 1, maxLength: 25 }), fc.constantFrom(8, 262144), async (steps, queueLimit) => {
      fx.ns.conntrack('-F');
      const table = fx.ct.liveTable({ entries: true, queueLimit, resyncSeconds: 0 });
      try {
        await table.ready;
        for (const s of steps) {
          if (s.op === 'burst') burst(fx.ns, s.base, s.n);
          // Not awaited: the next steps run while it dumps.
          else if (s.op === 'resync') void table.resync();
          else if (s.op === 'pause') await new Promise((r) => setTimeout(r, s.ms));
          else apply(fx.ns, s);
        }
        await expectEqualToKernel(fx.ct, fx.ns, table);
        if (queueLimit > 1000) expect(table.stats.lost).toBe(0);
        expect(table.stats.unwatched).toBe(0);
      } finally {
        table.close();
      }
    }), { seed: SEED, numRuns: RUNS, endOnFailure: true });
  }, 600_000);

  it('entries that predate it send no events: unwatched, and still followed (a quiet table whose size differs from the kernel\'s count is dumped again)', async () => {
    fx.ns.conntrack('-F');
    // Entries created under nf_conntrack_events=0 get no event extension: as under the default 2 while nobody listens.
    fx.ns.exec('sysctl', ['-qw', 'net.netfilter.nf_conntrack_events=0']);
    try {
      fx.ns.mixedTraffic();
    } finally {
      fx.ns.exec('sysctl', ['-qw', 'net.netfilter.nf_conntrack_events=2']);
    }
    const table = fx.ct.liveTable();
    try {
      await table.ready;
      const dump = await fx.ct.list();
      expect(tableFigures(table)).toEqual(figuresOf(dump));
      expect(table.stats.unwatched).toBe(dump.length);
      expect(table.stats.resyncs).toBe(1);
      expect(() => table.get(dump[0]!)).toThrow(/entries: true/);
      fx.ns.conntrack('-D', '-p', 'udp');
      const left = dump.length - dump.filter((e) => e.protocol === 'udp').length;
      await waitFor(() => (table.size === left ? true : undefined), 8000, 'the table to drop the deleted entries');
      expect(table.stats.events.destroy).toBe(0);
      expect(table.stats.resyncs).toBeGreaterThan(1);
      expect(table.stats.unwatched).toBe(left);
      expect(tableFigures(table)).toEqual(figuresOf(await fx.ct.list()));
    } finally {
      table.close();
    }
    expect(() => table.size).toThrow(/closed/);
  });

  it('topDestinations() counts by protocol, address and port, largest first', async () => {
    fx.ns.conntrack('-F');
    const table = fx.ct.liveTable({ top: 2 });
    try {
      await table.ready;
      fx.ns.restore([
        ...Array.from({ length: 3 }, (_, i) => `-I -p udp -s 10.1.0.${i} -d 10.9.0.1 --sport 1 --dport 53 -t 300`),
        ...Array.from({ length: 2 }, (_, i) => `-I -p tcp -s 10.1.0.${i} -d 10.9.0.2 --sport 1 --dport 443 --state ESTABLISHED -t 300`),
        '-I -p icmp -s 10.1.0.1 -d 10.9.0.3 --icmp-type 8 --icmp-code 0 --icmp-id 7 -t 30',
      ]);
      await waitFor(() => (table.size === 6 ? true : undefined), 5000, 'six entries');
      expect(table.topDestinations()).toEqual([
        { protocol: 'udp', dst: '10.9.0.1', dport: 53, entries: 3 },
        { protocol: 'tcp', dst: '10.9.0.2', dport: 443, entries: 2 },
      ]);
      expect(table.topDestinations(3)[2]).toEqual({ protocol: 'icmp', dst: '10.9.0.3', entries: 1 });
      expect(table.topSources()).toEqual([{ src: '10.1.0.1', entries: 3 }, { src: '10.1.0.0', entries: 2 }]);
    } finally {
      await table[Symbol.asyncDispose]();
    }
  });

  it("README's live-table example runs as written (in this namespace), and ct.close() closes its tables", async () => {
    const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
    const section = readme.slice(readme.indexOf('### Live table'));
    const example = /```js\n([\s\S]*?)```/.exec(section)![1]!
      .replace("from 'conntrack'", `from ${JSON.stringify(fileURLToPath(new URL('../dist/index.js', import.meta.url)))}`)
      .replace("netns: 'blue'", `netns: ${JSON.stringify(fx.ns.name)}`);
    fx.ns.mixedTraffic();
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', example], { encoding: 'utf8', timeout: 30_000 });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^\d+ entries, \d+ assured$/m);
    const ct = await Conntrack.open({ netns: fx.ns.name });
    const table = ct.liveTable();
    await table.ready;
    ct.close();
    expect(table.closed).toBe(true);
    expect(() => table.counts()).toThrow(expect.objectContaining({ code: 'EBADF' }));
  });

  it('refuses bad options and lookups with ERR_INVALID_ARG, before any socket is opened', () => {
    expect(() => fx.ct.liveTable({ entries: 'yes' as unknown as boolean })).toThrow(/entries/);
    expect(() => fx.ct.liveTable({ resyncSeconds: -1 })).toThrow(/resyncSeconds/);
    expect(() => fx.ct.liveTable({ queueLimit: 0 })).toThrow(/queueLimit/);
    expect(() => fx.ct.liveTable({ colour: 1 } as never)).toThrow(/colour/);
  });
});

describePrivileged('ct.liveTable(): NAT', () => {
  const fx = useNamespace('each', 'ctlive');

  for (const when of ['before', 'after'] as const) {
    it(`find() of a DNAT and an SNAT flow's reply tuple gives the original flow (table created ${when} the traffic)`, async () => {
      let table = when === 'before' ? fx.ct.liveTable({ entries: true }) : undefined;
      try {
        await table?.ready;
        fx.ns.natTraffic('127.0.0.9');
        table ??= fx.ct.liveTable({ entries: true });
        await table.ready;
        const nat = (await fx.ct.list()).filter((e) => e.status.includes('DST_NAT') || e.status.includes('SRC_NAT'));
        expect(nat.map((e) => e.status.includes('DST_NAT') ? 'dnat' : 'snat').sort()).toEqual(['dnat', 'snat']);
        const live = table;
        for (const e of nat) {
          // The reply as seen on the wire: from the real server (DNAT), or to the translated source (SNAT).
          const found = await waitFor(() => live.find(replyKey(e)), 5000, 'the NAT entry');
          expect(found?.original).toEqual(e.original);
          expect(found?.reply).toEqual(e.reply);
          expect(e.reply.src === e.original.dst && e.reply.dst === e.original.src).toBe(false);
        }
        const dnat = nat.find((e) => e.status.includes('DST_NAT'))!;
        expect(live.find({ protocol: 'tcp', src: '127.0.0.1', dst: '127.0.0.1', sport: 8080, dport: dnat.original.sport! })?.original.dst).toBe('127.0.0.2');
      } finally {
        table?.close();
      }
    });
  }
});

describe('ct.liveTable() without a handle', () => {
  it('is a method of Conntrack and LiveTable is exported', async () => {
    const mod = await import('../src/index.js');
    expect(typeof mod.LiveTable).toBe('function');
    expect(typeof Conntrack.prototype.liveTable).toBe('function');
  });
});
