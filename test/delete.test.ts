import { spawn } from 'node:child_process';
import { beforeEach, expect, it } from 'vitest';
import { Conntrack, ConntrackError } from '../src/index.js';
import { compileFilter } from '../src/filter.js';
import { addon } from '../src/native.js';
import { describePrivileged, Netns, parseCliLine, type CliEntry, useNamespace } from './helpers/netns.js';

/** 1000 sources: 800 IPv4 (64 per /24) and 200 IPv6 (32 per /64), 20 entries each over tcp/udp/icmp, 3 zones. */
function source(s: number): string {
  if (s < 800) return `10.20.${s >> 6}.${(s & 63) + 1}`;
  // Written the way inet_ntop prints them, so they compare equal to conntrack -L output.
  const net = (s - 800) >> 5;
  return `2001:db8:${net ? `${net}:` : ''}:${((s - 800) & 31) + 1}`;
}

function tableLines(): string[] {
  const lines: string[] = [];
  for (let s = 0; s < 1000; s++) {
    const v6 = s >= 800;
    const src = source(s);
    for (let j = 0; j < 20; j++) {
      const dst = v6 ? `2001:db8:ff::${j + 1}` : `192.0.2.${j + 1}`;
      const common = `-s ${src} -d ${dst} -t ${1000 + j * 10} -m ${s * 100 + j} -w ${j % 3}`;
      if (j % 4 === 0) lines.push(`-I -p tcp ${common} --sport ${10000 + s} --dport 80 --state ESTABLISHED`);
      else if (j % 4 === 1) lines.push(`-I -p udp ${common} --sport ${10000 + s} --dport 53`);
      else if (j % 4 === 2) lines.push(v6 ? `-I -p icmpv6 ${common} --icmpv6-type 128 --icmpv6-code 0 --icmpv6-id ${s}` : `-I -p icmp ${common} --icmp-type 8 --icmp-code 0 --icmp-id ${s}`);
      else lines.push(`-I -p tcp ${common} --sport ${20000 + s} --dport 443 --state TIME_WAIT`);
    }
  }
  return lines;
}

/**
 * conntrack -L keyed by entry. The kernel's ids are 32-bit hashes, so among
 * 20k entries two may share one: the key adds protocol, zone and the tuple.
 */
function snapshot(ns: Netns): Map<string, CliEntry> {
  const map = new Map(ns.list('-o', 'id').map((l) => {
    const e = parseCliLine(l);
    return [`${e.fields.id}|${e.protocol}|${e.fields.zone ?? 0}|${JSON.stringify(e.original)}`, e];
  }));
  return map;
}

describePrivileged('deleteBySource() / deleteWhere() on a 20k-entry namespace', () => {
  const lines = tableLines();

  const fx = useNamespace('all');
  beforeEach(async () => {
    await fx.ct.flush();
    fx.ns.restore(lines);
    expect(await fx.ct.count()).toBe(20000);
  });

  /** Deletes, then checks conntrack -L shows exactly the entries `keep` accepts, untouched. */
  async function expectDeletes(run: () => ReturnType<Conntrack['deleteBySource']>, matches: (e: CliEntry) => boolean): Promise<void> {
    const before = snapshot(fx.ns);
    const expectedGone = [...before.values()].filter(matches).length;
    expect(expectedGone).toBeGreaterThan(0);
    const r = await run();
    expect(r).toEqual({ matched: expectedGone, deleted: expectedGone, alreadyGone: 0, failed: [] });
    const after = snapshot(fx.ns);
    expect(after.size).toBe(before.size - expectedGone);
    for (const [id, e] of before) {
      if (matches(e)) {
        expect(after.has(id), `entry ${id} from ${e.original.src} should be gone`).toBe(false);
        continue;
      }
      const kept = after.get(id);
      expect(kept, `entry ${id} from ${e.original.src} should remain`).toBeDefined();
      expect(kept!.fields.mark).toBe(e.fields.mark);
      expect(kept!.fields.zone).toBe(e.fields.zone);
      expect(kept!.timeout).toBeLessThanOrEqual(e.timeout);
      expect(kept!.timeout).toBeGreaterThanOrEqual(e.timeout - 5);
    }
  }

  it('one address', async () => {
    await expectDeletes(() => fx.ct.deleteBySource('10.20.3.5'), (e) => e.original.src === '10.20.3.5');
  });

  it('one /24', async () => {
    await expectDeletes(() => fx.ct.deleteBySource('10.20.2.0/24'), (e) => e.original.src!.startsWith('10.20.2.'));
  });

  it('a list of 50 addresses, IPv4 and IPv6 mixed', async () => {
    const list = Array.from({ length: 50 }, (_, i) => source(i * 20 + 3));
    const set = new Set(list);
    expect(list.some((a) => a.includes(':'))).toBe(true);
    await expectDeletes(() => fx.ct.deleteBySource(list), (e) => set.has(e.original.src!));
  });

  it('an IPv6 /64', async () => {
    await expectDeletes(() => fx.ct.deleteBySource('2001:db8:3::/64'), (e) => e.original.src!.startsWith('2001:db8:3::'));
  });

  it('reply direction and either direction', async () => {
    await expectDeletes(() => fx.ct.deleteBySource('192.0.2.7', { direction: 'reply' }), (e) => e.reply.src === '192.0.2.7');
    await fx.ct.flush();
    fx.ns.restore(lines);
    await expectDeletes(
      () => fx.ct.deleteBySource(['10.20.0.1', '192.0.2.9'], { direction: 'either' }),
      (e) => e.original.src === '10.20.0.1' || e.reply.src === '192.0.2.9',
    );
  });

  it('with zone, protocol and family options, and deleteWhere with any filter', async () => {
    await expectDeletes(
      () => fx.ct.deleteBySource('10.20.0.0/16', { zone: 1, protocol: 'udp' }),
      (e) => e.original.src!.startsWith('10.20.') && e.fields.zone === '1' && e.protocol === 'udp',
    );
    await fx.ct.flush();
    fx.ns.restore(lines);
    await expectDeletes(
      () => fx.ct.deleteWhere({ protocol: 'tcp', state: 'TIME_WAIT', dport: 443, family: 'ipv6' }),
      (e) => e.protocol === 'tcp' && e.state === 'TIME_WAIT' && e.original.src!.includes(':'),
    );
  });

  it('dryRun deletes nothing and reports the same matched', async () => {
    const dry = await fx.ct.deleteBySource('10.20.1.0/24', { dryRun: true });
    expect(dry).toEqual({ matched: 64 * 20, deleted: 0, alreadyGone: 0, failed: [] });
    expect(await fx.ct.count()).toBe(20000);
    const real = await fx.ct.deleteBySource('10.20.1.0/24');
    expect(real.matched).toBe(dry.matched);
    expect(real.deleted).toBe(dry.matched);
  });

  it('entries that vanish between the dump and the delete end as alreadyGone', async () => {
    // Drive the two native steps by hand and flush from another process in between.
    const handle = new addon.Handle(`/run/netns/${fx.ns.name}`);
    await handle.open();
    const f = compileFilter({ src: '10.20.0.0/16' }, 'test');
    const cursor = handle.dump(f.kernel, f.match);
    const matched = await cursor.collect();
    expect(matched).toBe(16000);
    fx.ns.conntrack('-D', '-s', '10.20.0.1');
    fx.ns.conntrack('-F');
    const r = await cursor.deleteCollected();
    expect(r).toMatchObject({ matched: 16000, applied: 0, alreadyGone: 16000 });
    expect(r.failed).toEqual([]);
    handle.close();
  });

  it('a concurrent flush from another process: totals still add up', async () => {
    const flusher = spawn('ip', ['netns', 'exec', fx.ns.name, 'conntrack', '-F'], { stdio: 'ignore' });
    const flushed = new Promise((res) => flusher.on('exit', res));
    const r = await fx.ct.deleteWhere({ family: 'ipv4' }, { all: true });
    await flushed;
    expect(r.deleted + r.alreadyGone + r.failed.length).toBe(r.matched);
    expect(r.failed).toEqual([]);
    expect(await fx.ct.count()).toBe(0);
  });

  it('bad input is a ConntrackError before any message is sent', async () => {
    for (const [source, options] of [
      ['10.0.0.300', {}],
      ['10.0.0.0/33', {}],
      [[], {}],
      ['not-an-address', {}],
      ['10.0.0.1', { zone: -1 }],
      ['10.0.0.1', { direction: 'sideways' }],
      ['10.0.0.1', { protocol: 'bogus' }],
      [['10.0.0.1', 'fe80::1/129'], {}],
    ] as const) {
      const err = await fx.ct.deleteBySource(source as never, options as never).then(() => undefined, (e: unknown) => e);
      expect(err, JSON.stringify(source)).toBeInstanceOf(ConntrackError);
      expect((err as ConntrackError).code).toBe('ERR_INVALID_ARG');
    }
    await expect(fx.ct.deleteWhere(undefined as never)).rejects.toBeInstanceOf(ConntrackError);
    expect(await fx.ct.count()).toBe(20000);
  });

  it('an aborted delete rejects with ECANCELED', async () => {
    const ac = new AbortController();
    ac.abort();
    await expect(fx.ct.deleteBySource('10.20.0.0/16', { signal: ac.signal })).rejects.toMatchObject({ code: 'ECANCELED' });
    expect(await fx.ct.count()).toBe(20000);
  });
});
