import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readlinkSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';
import { Conntrack, ConntrackError, type Entry } from '../src/index.js';
import { expectSameEntry, expectSameTable } from './helpers/compare.js';
import { describePrivileged, itNeeds, Netns, parseCliLine, useNamespace } from './helpers/netns.js';

const dummy = {
  protocol: 'tcp' as const,
  original: { src: '1.1.1.1', dst: '2.2.2.2', sport: 10, dport: 20 },
  state: 'LISTEN',
  status: ['SEEN_REPLY' as const],
  timeout: 50,
};

async function expectCode(p: Promise<unknown>, code: string): Promise<ConntrackError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, `expected a ConntrackError ${code}`).toBeInstanceOf(ConntrackError);
  expect((err as ConntrackError).code).toBe(code);
  return err as ConntrackError;
}

describePrivileged('Conntrack handle (real kernel, one namespace per test)', () => {
  const fx = useNamespace();

  // conntrack-tools tests/conntrack/testsuite/00create
  it('00create: rejects incomplete specs, creates, refuses duplicates, deletes', async () => {
    const { original } = dummy;
    await expectCode(fx.ct.create({ ...dummy, original: { src: '1.1.1.1', sport: 10, dport: 20 } as never }), 'ERR_INVALID_ARG');
    await expectCode(fx.ct.create({ ...dummy, original: { dst: '2.2.2.2', sport: 10, dport: 20 } as never }), 'ERR_INVALID_ARG');
    await expectCode(fx.ct.create({ ...dummy, protocol: undefined as never }), 'ERR_INVALID_ARG');
    await expectCode(fx.ct.create({ ...dummy, original: { ...original, sport: undefined } }), 'ERR_INVALID_ARG');
    await expectCode(fx.ct.create({ ...dummy, timeout: undefined as never }), 'ERR_INVALID_ARG');
    expect(fx.ns.list()).toEqual([]);

    await fx.ct.create(dummy);
    const lines = fx.ns.list('-o', 'id');
    expect(lines).toHaveLength(1);
    const cli = parseCliLine(lines[0]!);
    expect(cli.state).toBe('SYN_SENT2'); // LISTEN is the old name of TCP state 9
    expect(cli.original).toEqual({ src: '1.1.1.1', dst: '2.2.2.2', sport: '10', dport: '20' });
    expect(cli.reply).toEqual({ src: '2.2.2.2', dst: '1.1.1.1', sport: '20', dport: '10' });
    const [entry] = await fx.ct.list();
    expectSameEntry(entry!, cli);

    await expectCode(fx.ct.create(dummy), 'EEXIST');
    expect(await fx.ct.delete({ protocol: 'tcp', original })).toBe(true);
    expect(fx.ns.list()).toEqual([]);

    // "create from reply": an explicit reply tuple is sent as given.
    await fx.ct.create({
      ...dummy,
      original: { src: '1.1.1.1', dst: '2.2.2.2', sport: 21, dport: 11 },
      reply: { src: '2.2.2.2', dst: '1.1.1.1', sport: 11, dport: 21 },
    });
    expect(parseCliLine(fx.ns.list()[0]!).reply).toEqual({ src: '2.2.2.2', dst: '1.1.1.1', sport: '11', dport: '21' });
    const [created] = await fx.ct.list();
    expect(await fx.ct.delete(created!)).toBe(true);
    expect(fx.ns.list()).toEqual([]);
  });

  // tests/conntrack/testsuite/01delete
  it('01delete: a non-matching tuple deletes nothing, delete by source removes the entry', async () => {
    await fx.ct.create(dummy);
    expect(await fx.ct.delete({ protocol: 'tcp', original: { src: '2.2.2.2', dst: '1.1.1.1', sport: 10, dport: 20 } })).toBe(false);
    expect(fx.ns.list()).toHaveLength(1);
    const r = await fx.ct.deleteBySource('1.1.1.1');
    expect(r).toEqual({ matched: 1, deleted: 1, alreadyGone: 0, failed: [] });
    expect(fx.ns.list()).toEqual([]);
  });

  // tests/conntrack/testsuite/02filter
  it('02filter: every filter returns what conntrack -L returns with the same filter', async () => {
    await fx.ct.create(dummy);
    await fx.ct.create({ protocol: 'udp', original: { src: '3.3.3.3', dst: '4.4.4.4', sport: 53, dport: 53 }, timeout: 50 });
    await fx.ct.create({ protocol: 'tcp', original: { src: '2001:db8::1', dst: '2001:db8::2', sport: 1, dport: 2 }, timeout: 50, state: 'ESTABLISHED' });
    const cases: [Parameters<Conntrack['list']>[0], string[]][] = [
      [{ src: '1.1.1.1' }, ['-s', '1.1.1.1']],
      [{ dst: '2.2.2.2' }, ['-d', '2.2.2.2']],
      [{ protocol: 'tcp' }, ['-p', 'tcp']],
      [{ status: 'SEEN_REPLY' }, ['-u', 'SEEN_REPLY']],
      [{ protocol: 'tcp', state: 'LISTEN' }, ['-p', 'tcp', '--state', 'LISTEN']],
      [{ family: 'ipv4' }, ['-f', 'ipv4']],
      [{ family: 'ipv6' }, ['-f', 'ipv6']],
      [{ mark: 0 }, ['--mark', '0']],
      [{ mark: { value: 0, mask: 0xffffffff } }, ['--mark', '0/0xffffffff']],
      [{ protocol: 'udp', dport: 53 }, ['-p', 'udp', '--dport', '53']],
    ];
    for (const [filter, args] of cases) {
      const ours = await fx.ct.list(filter);
      expect(ours.length, JSON.stringify(filter)).toBeGreaterThan(0);
      expectSameTable(ours, fx.ns.list('-o', 'id', ...args));
      expect(await fx.ct.count(filter)).toBe(ours.length);
    }
    await fx.ct.update({ protocol: 'tcp', original: dummy.original, mark: 1 });
    const marked = await fx.ct.list({ mark: 1 });
    expect(marked.map((e) => e.original.src)).toEqual(['1.1.1.1']);
    expectSameTable(marked, fx.ns.list('-o', 'id', '-m', '1'));
    expectSameTable(await fx.ct.list({ mark: 0 }), fx.ns.list('-o', 'id', '--mark', '0'));
    const r = await fx.ct.deleteWhere({ dst: '2.2.2.2' });
    expect(r.deleted).toBe(1);
    expect(fx.ns.list('-d', '2.2.2.2')).toEqual([]);
  });

  // tests/conntrack/testsuite/04zone
  it('04zone: entries live in their zone', async () => {
    await fx.ct.create({ ...dummy, zone: 1 });
    expectSameTable(await fx.ct.list({ zone: 1 }), fx.ns.list('-o', 'id', '--zone', '1'));
    expect(await fx.ct.list({ zone: 0 })).toEqual([]);
    expect(fx.ns.list('--zone', '0')).toEqual([]);
    expect(await fx.ct.get({ protocol: 'tcp', original: dummy.original })).toBeNull();
    const inZone = await fx.ct.get({ protocol: 'tcp', original: dummy.original, zone: 1 });
    expect(inZone?.zone).toBe(1);
    const r = await fx.ct.deleteWhere({ zone: 1 });
    expect(r).toMatchObject({ matched: 1, deleted: 1 });
    expect(fx.ns.list()).toEqual([]);
  });

  itNeeds(['netRaw'], 'lists real TCP, UDP and ICMP traffic over IPv4 and IPv6 exactly as conntrack -L does', async () => {
    fx.ns.mixedTraffic();
    const entries = await fx.ct.list();
    const protos = new Set(entries.map((e) => `${e.family}/${String(e.protocol)}`));
    expect([...protos].sort()).toEqual(['ipv4/icmp', 'ipv4/tcp', 'ipv4/udp', 'ipv6/icmpv6', 'ipv6/tcp', 'ipv6/udp']);
    expectSameTable(entries, fx.ns.list('-o', 'id'));
    const dumped: Entry[] = [];
    for await (const e of fx.ct.dump()) dumped.push(e);
    expect(dumped.map((e) => e.id).sort()).toEqual(entries.map((e) => e.id).sort());
    const tcp = entries.find((e) => e.protocol === 'tcp' && e.family === 'ipv4')!;
    expect(tcp.state).toBe('TIME_WAIT');
    expect(tcp.status).toContain('ASSURED');
  });

  itNeeds(['procSys'], 'reports counters and timestamps once accounting is switched on in the namespace', async () => {
    await fx.ct.setAccounting(true);
    await fx.ct.setTimestamps(true);
    expect(await fx.ct.readSysctl('nf_conntrack_acct')).toBe('1');
    fx.ns.udpExchange('127.0.0.1', 5300);
    const [e] = await fx.ct.list({ protocol: 'udp' });
    expect(e?.counters).toEqual({ original: { packets: 1, bytes: 32 }, reply: { packets: 1, bytes: 32 } });
    expect(e?.timestamp?.start).toBeGreaterThan(BigInt(Date.now() - 60_000) * 1_000_000n);
    expectSameTable([e!], fx.ns.list('-o', 'id', '-p', 'udp'));
  });

  it('creates IPv6 and ICMP entries that conntrack -L sees field for field', async () => {
    await fx.ct.create({ protocol: 'udp', original: { src: '2001:db8::1', dst: 'fe80::2', sport: 5000, dport: 53 }, timeout: 100, mark: 42, zone: 7 });
    await fx.ct.create({ protocol: 'icmp', original: { src: '10.0.0.1', dst: '10.0.0.2', icmp: { type: 8, code: 0, id: 77 } }, timeout: 30 });
    await fx.ct.create({ protocol: 'icmpv6', original: { src: '::ffff:10.0.0.1', dst: '::1', icmp: { type: 128, code: 0, id: 5 } }, timeout: 30 });
    await fx.ct.create({ protocol: 'sctp', original: { src: '10.9.0.1', dst: '10.9.0.2', sport: 7, dport: 9 }, timeout: 30, state: 'ESTABLISHED', status: ['ASSURED', 'SEEN_REPLY'] });
    const entries = await fx.ct.list();
    expect(entries).toHaveLength(4);
    expectSameTable(entries, fx.ns.list('-o', 'id'));
    const icmp = entries.find((e) => e.protocol === 'icmp')!;
    expect(icmp.reply.icmp).toEqual({ type: 0, code: 0, id: 77 });
    const v6 = entries.find((e) => e.protocol === 'udp')!;
    expect(v6).toMatchObject({ family: 'ipv6', mark: 42, zone: 7, original: { src: '2001:db8::1', dst: 'fe80::2' } });
    expect(entries.find((e) => e.protocol === 'icmpv6')!.original.src).toBe('::ffff:10.0.0.1');
  });

  it('get, update and delete by entry (with its id)', async () => {
    await fx.ct.create({ ...dummy, state: 'ESTABLISHED', mark: 3 });
    const got = await fx.ct.get({ protocol: 'tcp', original: dummy.original });
    expect(got).not.toBeNull();
    expectSameEntry(got!, parseCliLine(fx.ns.list('-o', 'id')[0]!), { compareUse: false });
    await fx.ct.update({ protocol: 'tcp', original: dummy.original, timeout: 1000, mark: 9 });
    const cli = parseCliLine(fx.ns.list()[0]!);
    expect(cli.timeout).toBeGreaterThan(990);
    expect(cli.fields.mark).toBe('9');
    // An Entry whose id no longer matches (a newer flow on the same tuple) is left alone.
    expect(await fx.ct.delete({ ...got!, id: (got!.id ^ 1) >>> 0 })).toBe(false);
    expect(fx.ns.list()).toHaveLength(1);
    expect(await fx.ct.delete(got!)).toBe(true);
    expect(fx.ns.list()).toHaveLength(0);
    await expectCode(fx.ct.update({ protocol: 'tcp', original: { ...dummy.original, sport: 11 }, timeout: 5 }), 'ENOENT');
  });

  it('count() and stats() agree with conntrack -C and -S', async () => {
    const lines: string[] = [];
    for (let i = 0; i < 500; i++) lines.push(`-I -p udp -s 10.0.${i >> 8}.${i & 255} -d 10.1.0.1 --sport 1000 --dport 53 -t 300`);
    fx.ns.restore(lines);
    expect(await fx.ct.count()).toBe(Number(fx.ns.conntrack('-C').trim()));
    expect(await fx.ct.count()).toBe(500);
    expect(await fx.ct.count({ src: '10.0.1.0/24' })).toBe(244);
    const stats = await fx.ct.stats();
    expect(stats.count).toBe(500);
    expect(stats.max).toBe(Number(fx.ns.exec('cat', ['/proc/sys/net/netfilter/nf_conntrack_max']).trim()));
    expect(stats.buckets).toBe(Number(fx.ns.exec('cat', ['/proc/sys/net/netfilter/nf_conntrack_buckets']).trim()));
    const cli = fx.ns.conntrack('-S').trim().split('\n');
    expect(stats.perCpu).toHaveLength(cli.length);
    for (const line of cli) {
      const f = Object.fromEntries(line.split(/\s+/).map((kv) => kv.split('=')));
      const ours = stats.perCpu.find((c) => c.cpu === Number(f.cpu))!;
      expect(ours.insertFailed).toBe(Number(f.insert_failed));
      expect(ours.drop).toBe(Number(f.drop));
      expect(ours.earlyDrop).toBe(Number(f.early_drop));
      expect(ours.invalid).toBe(Number(f.invalid));
      expect(ours.found).toBe(Number(f.found));
      expect(ours.searchRestart).toBe(Number(f.search_restart));
    }
  });

  it('streams a dump batch by batch and stops cleanly when the consumer breaks', async () => {
    const lines: string[] = [];
    for (let i = 0; i < 10000; i++) lines.push(`-I -p tcp -s 10.2.${i >> 8}.${i & 255} -d 10.3.0.1 --sport 4000 --dport 80 --state ESTABLISHED -t 300`);
    fx.ns.restore(lines);
    let n = 0;
    for await (const e of fx.ct.dump({ protocol: 'tcp' })) {
      expect(e.state).toBe('ESTABLISHED');
      if (++n === 3000) break;
    }
    expect(n).toBe(3000);
    // The handle stays usable after an abandoned dump.
    let total = 0;
    for await (const _ of fx.ct.dump()) total++;
    expect(total).toBe(10000);
  });

  it('flush() by family and in full', async () => {
    await fx.ct.create(dummy);
    await fx.ct.create({ protocol: 'udp', original: { src: '2001:db8::1', dst: '2001:db8::2', sport: 1, dport: 2 }, timeout: 50 });
    await fx.ct.flush({ family: 'ipv6' });
    expect(fx.ns.list('-f', 'ipv6')).toEqual([]);
    expect(fx.ns.list('-f', 'ipv4')).toHaveLength(1);
    await fx.ct.flush();
    expect(fx.ns.list()).toEqual([]);
  });

  it('rejects bad input with ConntrackError before it reaches the kernel, and stays usable', async () => {
    await expectCode(fx.ct.create({ ...dummy, original: { ...dummy.original, src: '1.1.1.300' } }), 'ERR_INVALID_ARG');
    await expectCode(fx.ct.create({ ...dummy, original: { ...dummy.original, dport: 70000 } }), 'ERR_INVALID_ARG');
    await expectCode(fx.ct.create({ ...dummy, state: 'BOGUS' }), 'ERR_INVALID_ARG');
    await expectCode(fx.ct.create({ ...dummy, status: ['NOPE' as never] }), 'ERR_INVALID_ARG');
    await expectCode(fx.ct.create({ ...dummy, original: { ...dummy.original, dst: '2001:db8::1' } }), 'ERR_INVALID_ARG');
    await expectCode(fx.ct.list({ src: '10.0.0.0/33' }), 'ERR_INVALID_ARG');
    await expectCode(fx.ct.list({ sport: -1 }), 'ERR_INVALID_ARG');
    await expectCode(fx.ct.list({ state: 'NOPE' as never }), 'ERR_INVALID_ARG');
    await expectCode(fx.ct.list({ bogus: 1 } as never), 'ERR_INVALID_ARG');
    await expectCode(fx.ct.get({ protocol: 'tcp', original: { src: 'x', dst: '1.1.1.1', sport: 1, dport: 1 } }), 'ERR_INVALID_ARG');
    await expectCode(Conntrack.open({ netns: `${fx.ns.name}-missing` }), 'ENOENT');
    await expectCode(Conntrack.open({ netns: '/proc/self/status' }), 'EINVAL');
    await fx.ct.create(dummy);
    expect(await fx.ct.count()).toBe(1);
  });

  it('opens a namespace by /proc/PID/ns/net and never moves the JS thread', async () => {
    const before = readlinkSync('/proc/thread-self/ns/net');
    const sleeper = spawn('ip', ['netns', 'exec', fx.ns.name, 'sleep', '30'], { stdio: 'ignore' });
    try {
      const path = `/proc/${sleeper.pid}/ns/net`;
      // `ip netns exec` execs sleep in place: wait until the pid has entered the namespace.
      const target = fx.ns.exec('readlink', ['/proc/self/ns/net']).trim();
      for (let i = 0; i < 200 && readlinkSync(path) !== target; i++) await new Promise((r) => setTimeout(r, 10));
      expect(readlinkSync(path)).toBe(target);
      const byPid = await Conntrack.open({ netns: path });
      await byPid.create(dummy);
      expect(fx.ns.list()).toHaveLength(1);
      expect((await fx.ct.list()).map((e) => e.original.src)).toEqual(['1.1.1.1']);
      byPid.close();
    } finally {
      sleeper.kill();
    }
    expect(readlinkSync('/proc/thread-self/ns/net')).toBe(before);
    expect(readlinkSync('/proc/self/ns/net')).toBe(before);
  });

  it('a closed handle rejects every call with EBADF', async () => {
    fx.ct.close();
    await expectCode(fx.ct.list(), 'EBADF');
    await expectCode(fx.ct.stats(), 'EBADF');
    expect(() => fx.ct.dump()).toThrow(ConntrackError);
  });

  it('every call pending at close(), and every call after it, rejects EBADF saying the handle was closed', async () => {
    const lines = Array.from({ length: 3000 }, (_, i) => `-I -p udp -s 10.1.${i >> 8}.${i & 255} -d 10.2.0.1 --sport 1 --dport 53 -t 300`);
    fx.ns.restore(lines);
    const key = { protocol: 'udp' as const, original: { src: '10.1.0.1', dst: '10.2.0.1', sport: 1, dport: 53 } };
    const calls = (ct: Conntrack): Record<string, Promise<unknown>> => ({
      dump: (async () => {
        for await (const _ of ct.dump()) void _;
      })(),
      list: ct.list(),
      get: ct.get(key),
      count: ct.count(),
      countFiltered: ct.count({ protocol: 'udp' }),
      stats: ct.stats(),
      create: ct.create({ ...dummy, original: { ...dummy.original, sport: 11 } }),
      update: ct.update({ ...key, mark: 1 }),
      delete: ct.delete({ ...key, original: { ...key.original, src: '10.1.0.2' } }),
      deleteWhere: ct.deleteWhere({ protocol: 'udp' }, { dryRun: true }),
      readSysctl: ct.readSysctl('nf_conntrack_max'),
      expectations: ct.expectations.list(),
    });
    /** How each call ended: 'pending' while it runs, then a result or its code and message with its op taken out. */
    const outcomes = (ps: Record<string, Promise<unknown>>): Map<string, string> => {
      const out = new Map<string, string>(Object.keys(ps).map((k) => [k, 'pending']));
      for (const [name, p] of Object.entries(ps)) {
        p.then(
          () => out.set(name, 'resolved'),
          (e: ConntrackError) => out.set(name, `${e.code}: ${e.message.replace(`${e.op}: `, '')}`),
        );
      }
      return out;
    };
    const closedMessage = 'EBADF: the handle was closed (EBADF)';
    // Closed in the same tick: every call is pending then.
    const ct = await Conntrack.open({ netns: fx.ns.name });
    const pending = calls(ct);
    const seen = outcomes(pending);
    ct.close();
    await Promise.allSettled(Object.values(pending));
    expect(Object.fromEntries(seen)).toEqual(Object.fromEntries([...seen.keys()].map((k) => [k, closedMessage])));
    // Every call after close(): the same.
    const after = calls(ct);
    const afterSeen = outcomes(after);
    await Promise.allSettled(Object.values(after));
    expect(Object.fromEntries(afterSeen)).toEqual(Object.fromEntries([...afterSeen.keys()].map((k) => [k, closedMessage])));
    // Closed at varied points: whatever was still pending then rejects the same way.
    for (let round = 0; round < 12; round++) {
      const c = await Conntrack.open({ netns: fx.ns.name });
      const ps = calls(c);
      const outcome = outcomes(ps);
      await new Promise((r) => setTimeout(r, round % 6));
      const atClose = new Map(outcome);
      c.close();
      await Promise.allSettled(Object.values(ps));
      for (const [name, was] of atClose) if (was === 'pending') expect(`${name} ${outcome.get(name)}`).toBe(`${name} ${closedMessage}`);
    }
  });

  it('open() without root fails with EPERM and says what to do', () => {
    const entry = fileURLToPath(new URL('../dist/index.js', import.meta.url));
    const code = `import(${JSON.stringify(entry)}).then(async ({ Conntrack }) => {
      try { await Conntrack.open(); console.log('opened'); } catch (e) { console.log(JSON.stringify({ code: e.code, message: e.message, name: e.name })); }
    })`;
    const r = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, '-e', code], { encoding: 'utf8' });
    expect(r.stderr).toBe('');
    const out = JSON.parse(r.stdout);
    expect(out).toMatchObject({ code: 'EPERM', name: 'ConntrackError' });
    expect(out.message).toContain('needs CAP_NET_ADMIN');
  });
});

describePrivileged('namespace fixtures', () => {
  it('leave nothing behind', () => {
    expect(Netns.made.size).toBeGreaterThan(0);
    const left = [...Netns.made].filter((name) => existsSync(`/run/netns/${name}`));
    expect(left).toEqual([]);
  });
});
