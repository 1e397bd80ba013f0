/**
 * What the `conntrack` CLI can do beyond plain filters, next to the CLI in
 * the same namespace: NAT, reply-direction and ICMP filters and labels
 * (generated tables and filters, plus real NAT through nftables), zeroing
 * counters while reading, creating from the reply tuple alone, label
 * changes, SCTP verification tags, and ctmon's spellings of each.
 */
import fc from 'fast-check';
import { beforeAll, expect, it } from 'vitest';
import { conntrackLine } from '../src/cli/format.js';
import type { Entry, Filter } from '../src/index.js';
import { labelMap } from '../src/labels.js';
import { ctmon } from './helpers/cli.js';
import { describePrivileged, itNeeds, useNamespace, waitFor, type Netns } from './helpers/netns.js';
import { enableLabels, LABELS, NAT_TO, useLabelConf } from './helpers/tables.js';

const RUNS = Math.max(20, Math.round(Number(process.env.CONNTRACK_PBT_RUNS ?? 300) / 3));
const SEED = Number(process.env.CONNTRACK_PBT_SEED ?? 1);

/** The original tuple, as the CLI line and our Entry both give it. */
function origKey(e: Entry): string {
  const o = e.original;
  const l4 = o.icmp ? `type=${o.icmp.type} code=${o.icmp.code} id=${o.icmp.id}` : `sport=${o.sport} dport=${o.dport}`;
  return `${String(e.protocol)} src=${o.src} dst=${o.dst} ${l4}`;
}
function cliKeys(ns: Netns, args: string[]): string[] {
  const r = ns.conntrackStatus('-L', ...args);
  if (r.status !== 0) throw new Error(`conntrack -L ${args.join(' ')}: ${r.stderr}`);
  return r.stdout.split('\n').filter(Boolean).map(cliKeyOf).sort();
}

const ADDRS = ['10.0.0.1', '10.0.0.2', '10.0.1.1', '192.0.2.1'];
interface GenEntry {
  protocol: 'tcp' | 'udp' | 'icmp';
  src: number;
  dst: number;
  port: number;
  nat: ['none' | 'src' | 'dst', number];
  labels: string[];
}
const entryArb: fc.Arbitrary<GenEntry> = fc.record({
  protocol: fc.constantFrom('tcp', 'udp', 'icmp'),
  src: fc.integer({ min: 0, max: 3 }),
  dst: fc.integer({ min: 0, max: 3 }),
  port: fc.integer({ min: 1, max: 4 }),
  nat: fc.tuple(fc.constantFrom('none', 'src', 'dst'), fc.integer({ min: 0, max: 1 })),
  labels: fc.subarray(LABELS),
});
function insertArgs(e: GenEntry): string[] {
  const args = ['-I', '-p', e.protocol, '-s', ADDRS[e.src]!, '-d', ADDRS[e.dst]!, '-t', '300'];
  if (e.protocol === 'icmp') args.push('--icmp-type', '8', '--icmp-code', '0', '--icmp-id', String(e.port));
  else args.push('--sport', String(1000 + e.port), '--dport', String(e.protocol === 'tcp' ? 80 : 53));
  if (e.protocol === 'tcp') args.push('--state', 'ESTABLISHED');
  if (e.nat[0] !== 'none') args.push(`--${e.nat[0]}-nat`, NAT_TO[e.nat[1]]!);
  if (e.labels.length) args.push('--label-add', e.labels.join(','));
  return args;
}

interface GenFilter {
  nat?: ['src' | 'dst' | 'any', number | undefined];
  replySrc?: string;
  replyDst?: string;
  protocol?: 'tcp' | 'udp' | 'icmp';
  replyPort?: ['src' | 'dst', number];
  icmp?: { type?: number; code?: number; id?: number };
  labels?: string[];
}
/** Present one time in three: filters of one or two conditions match something, six at once rarely do. */
const sometimes = <T>(arb: fc.Arbitrary<T>): fc.Arbitrary<T | undefined> =>
  fc.oneof({ weight: 2, arbitrary: fc.constant(undefined) }, { weight: 1, arbitrary: arb });
const filterArb: fc.Arbitrary<GenFilter> = fc.record({
  nat: sometimes(fc.tuple(fc.constantFrom('src', 'dst', 'any'), fc.option(fc.integer({ min: 0, max: 1 }), { nil: undefined }))),
  replySrc: sometimes(fc.constantFrom(...ADDRS, ...NAT_TO)),
  replyDst: sometimes(fc.constantFrom(...ADDRS, ...NAT_TO)),
  protocol: sometimes(fc.constantFrom('tcp', 'udp', 'icmp')),
  replyPort: sometimes(fc.tuple(fc.constantFrom('src', 'dst'), fc.constantFrom(53, 80, 1001, 1002))),
  icmp: sometimes(fc.record({ type: fc.constantFrom(0, 8), code: fc.constant(0), id: fc.integer({ min: 1, max: 4 }) }, { requiredKeys: [] })),
  labels: sometimes(fc.subarray(LABELS, { minLength: 1, maxLength: 2 })),
}, { requiredKeys: [] }) as fc.Arbitrary<GenFilter>;

/** The filter as the API takes it and as conntrack -L spells it. Protocol-specific options follow -p, as the CLI requires. */
function both(g: GenFilter): { filter: Filter; cli: string[] } {
  const filter: Filter = {};
  const cli: string[] = [];
  if (g.icmp && Object.keys(g.icmp).length) g = { ...g, protocol: 'icmp', replyPort: undefined };
  if (g.replyPort && g.protocol !== 'tcp' && g.protocol !== 'udp') g = { ...g, protocol: 'tcp' };
  if (g.protocol) (filter.protocol = g.protocol), cli.push('-p', g.protocol);
  if (g.nat) {
    const address = g.nat[1] === undefined ? undefined : NAT_TO[g.nat[1]]!;
    filter.nat = address === undefined ? g.nat[0] : { type: g.nat[0], address };
    cli.push(`--${g.nat[0]}-nat`, ...(address ? [address] : []));
  }
  const reply: NonNullable<Filter['reply']> = {};
  if (g.replySrc) (reply.src = g.replySrc), cli.push('-r', g.replySrc);
  if (g.replyDst) (reply.dst = g.replyDst), cli.push('-q', g.replyDst);
  if (g.replyPort) {
    reply[g.replyPort[0] === 'src' ? 'sport' : 'dport'] = g.replyPort[1];
    cli.push(`--reply-port-${g.replyPort[0]}`, String(g.replyPort[1]));
  }
  if (Object.keys(reply).length) filter.reply = reply;
  if (g.icmp && Object.keys(g.icmp).length) {
    filter.icmp = g.icmp;
    if (g.icmp.type !== undefined) cli.push('--icmp-type', String(g.icmp.type));
    if (g.icmp.code !== undefined) cli.push('--icmp-code', String(g.icmp.code));
    if (g.icmp.id !== undefined) cli.push('--icmp-id', String(g.icmp.id));
  }
  if (g.labels) (filter.labels = g.labels), cli.push('-l', g.labels.join(','));
  return { filter, cli };
}

describePrivileged('conntrack CLI parity: NAT, reply, ICMP and label filters on generated tables', () => {
  const fx = useNamespace('all', 'ctpar');
  useLabelConf();
  beforeAll(() => enableLabels(fx.ns));

  it(`${RUNS} generated tables and filters list what conntrack -L lists`, async () => {
    let nonEmpty = 0;
    await fc.assert(fc.asyncProperty(fc.uniqueArray(entryArb, { minLength: 4, maxLength: 16, selector: (e) => `${e.protocol}${e.src}${e.dst}${e.port}` }), filterArb, async (entries, g) => {
      fx.ns.conntrack('-F');
      for (const e of entries) {
        const r = fx.ns.conntrackStatus(...insertArgs(e));
        // NAT can clash with an entry already there (its reply tuple taken): the table is what it is.
        if (r.status !== 0 && !/File exists|Invalid argument/.test(r.stderr)) throw new Error(r.stderr);
      }
      const { filter, cli } = both(g);
      // conntrack 1.4.7 lists nothing for --any-nat ADDR next to -p or -q (alone it works): there, the
      // expectation is the intersection of the CLI's answers to --any-nat ADDR and to the rest.
      const anyAt = cli.indexOf('--any-nat');
      const split = anyAt >= 0 && cli.length > 2 && cli[anyAt + 1] !== undefined && !cli[anyAt + 1]!.startsWith('-');
      let expected = split
        ? ((rest, nat) => rest.filter((k) => nat.includes(k)))(cliKeys(fx.ns, [...cli.slice(0, anyAt), ...cli.slice(anyAt + 2)]), cliKeys(fx.ns, cli.slice(anyAt, anyAt + 2)))
        : cliKeys(fx.ns, cli);
      // For ICMP, conntrack's NAT test without an address compares the reply's type/code with the id
      // (libnetfilter_conntrack's IS_SPAT/IS_DPAT), so it calls every NATed ICMP entry both source and
      // destination NATed. Those are checked against the direction the table was built with instead.
      if (g.nat && g.nat[1] === undefined) {
        const nat = g.nat[0];
        const wanted = new Set(cliKeys(fx.ns, cli.filter((w, i) => !w.endsWith('-nat') || (cli[i + 1] ?? '-').startsWith('-')).filter((w) => !w.endsWith('-nat')))
          .filter((k) => k.startsWith('icmp ')));
        const natted = new Set((await fx.ct.list({ protocol: 'icmp' })).filter((e) => {
          const src = e.reply.dst !== e.original.src;
          const dst = e.reply.src !== e.original.dst;
          return nat === 'src' ? src : nat === 'dst' ? dst : src || dst;
        }).map(origKey));
        expected = [...expected.filter((k) => !k.startsWith('icmp ')), ...[...wanted].filter((k) => natted.has(k))].sort();
      }
      if (expected.length) nonEmpty++;
      expect((await fx.ct.list(filter)).map(origKey).sort(), `conntrack -L ${cli.join(' ')}`).toEqual(expected);
      // ctmon spells them as conntrack does.
      const r = ctmon(['list', '--netns', fx.ns.name, '-o', 'conntrack', ...cli]);
      expect(r.stderr).toMatch(/^ctmon: \d+ entries\n$/);
      expect(r.status, r.stderr).toBe(0);
      expect(r.stdout.split('\n').filter(Boolean).map((l) => cliKeyOf(l)).sort()).toEqual(expected);
    }), { seed: SEED, numRuns: RUNS, endOnFailure: true });
    // A generator whose filters never matched anything would prove nothing.
    expect(nonEmpty).toBeGreaterThan(RUNS / 5);
  }, 600_000);
});

function cliKeyOf(line: string): string {
  const proto = line.split(/\s+/)[0];
  const m = /src=(\S+) dst=(\S+) (sport=\d+ dport=\d+|type=\d+ code=\d+ id=\d+)/.exec(line)!;
  return `${proto} src=${m[1]} dst=${m[2]} ${m[3]}`;
}

describePrivileged('conntrack CLI parity: real NAT through nftables', () => {
  const fx = useNamespace('each', 'ctpar');

  it('source and destination NAT set by the kernel itself filter as conntrack --src-nat/--dst-nat/--any-nat', async () => {
    fx.ns.tcpConnection('127.0.0.1', 8080); // plain
    fx.ns.natTraffic('127.0.0.9');
    const all = await fx.ct.list();
    expect(all.some((e) => e.status.includes('DST_NAT'))).toBe(true);
    expect(all.some((e) => e.status.includes('SRC_NAT'))).toBe(true);
    for (const [filter, cli] of [
      ['src', ['--src-nat']], ['dst', ['--dst-nat']], ['any', ['--any-nat']],
      [{ type: 'dst', address: '127.0.0.1' }, ['--dst-nat', '127.0.0.1']],
      [{ type: 'src', address: '127.0.0.9' }, ['--src-nat', '127.0.0.9']],
      [{ type: 'any', address: '127.0.0.9' }, ['--any-nat', '127.0.0.9']],
      [{ type: 'src', address: '127.0.0.1' }, ['--src-nat', '127.0.0.1']],
    ] as const) {
      const expected = cliKeys(fx.ns, [...cli]);
      expect((await fx.ct.list({ nat: filter as Filter['nat'] })).map(origKey).sort(), cli.join(' ')).toEqual(expected);
    }
    // The DNAT flow's reply comes from the real server: -r finds it.
    expect((await fx.ct.list({ reply: { src: '127.0.0.1', sport: 8080 }, nat: 'dst' })).map(origKey)).toEqual(cliKeys(fx.ns, ['-p', 'tcp', '-r', '127.0.0.1', '--reply-port-src', '8080', '--dst-nat']));
  });
});

describePrivileged('conntrack CLI parity: labels, zeroing, create from the reply, SCTP tags', () => {
  const fx = useNamespace('each', 'ctpar');
  useLabelConf();

  it('labels on create and update (add, delete, replace) print as conntrack -o labels prints them', async () => {
    enableLabels(fx.ns);
    const key = { protocol: 'tcp' as const, original: { src: '10.1.0.1', dst: '10.1.0.2', sport: 1000, dport: 80 } };
    await fx.ct.create({ ...key, timeout: 300, state: 'ESTABLISHED', labels: ['blue', 9, 'quarantine'] });
    // The same through the CLI in the same namespace.
    fx.ns.conntrack('-I', '-p', 'tcp', '-s', '10.1.0.3', '-d', '10.1.0.2', '--sport', '1000', '--dport', '80', '--state', 'ESTABLISHED', '-t', '300', '--label-add', 'blue,green,quarantine');
    const lines = async (): Promise<string[]> => (await fx.ct.list()).map((e) => conntrackLine(e, { labels: labelMap() }).replace(/^(\S+\s+\d+\s+)\d+/, '$1T')).sort();
    const cli = (): string[] => fx.ns.list('-o', 'labels').map((l) => l.replace(/^(\S+\s+\d+\s+)\d+/, '$1T'));
    expect(await lines()).toEqual(cli());
    expect((await fx.ct.get(key))!.labels).toEqual([3, 9, 127]);

    await fx.ct.update({ ...key, labelsAdd: ['web'], labelsDelete: ['blue'] });
    fx.ns.conntrack('-U', '-s', '10.1.0.3', '--label-add', 'web');
    fx.ns.conntrack('-U', '-s', '10.1.0.3', '--label-del', 'blue');
    expect((await fx.ct.get(key))!.labels).toEqual([0, 9, 127]);
    expect(await lines()).toEqual(cli());
    expect((await fx.ct.list({ labels: ['web', 'quarantine'] })).length).toBe(2);
    expect(cliKeys(fx.ns, ['-l', 'web,quarantine'])).toHaveLength(2);

    await fx.ct.update({ ...key, labels: [] }); // conntrack -U --label-del: all of them
    fx.ns.conntrack('-U', '-s', '10.1.0.3', '--label-del');
    expect((await fx.ct.get(key))!.labels).toBeUndefined();
    expect(await lines()).toEqual(cli());
    const r = ctmon(['list', '--netns', fx.ns.name, '-o', 'labels,id', '-l', 'green']);
    expect(r.stdout).toBe('');
    await expect(fx.ct.list({ labels: ['no-such-label'] })).rejects.toMatchObject({ code: 'ERR_INVALID_ARG', message: expect.stringContaining('unknown label "no-such-label"') });
  });

  it('labels where the namespace keeps none: create takes the entry back and says why; update says why', async () => {
    const spec = { protocol: 'udp' as const, original: { src: '10.2.0.1', dst: '10.2.0.2', sport: 1, dport: 53 }, timeout: 60 };
    await expect(fx.ct.create({ ...spec, labels: ['web'] })).rejects.toMatchObject({ code: 'ENOSPC', message: expect.stringContaining('ct label set') });
    expect(await fx.ct.count()).toBe(0);
    await fx.ct.create(spec);
    await expect(fx.ct.update({ ...spec, labelsAdd: [1] })).rejects.toMatchObject({ code: 'ENOSPC' });
  });

  itNeeds(['procSys'], 'zeroCounters reads and resets atomically, only the entries asked for (conntrack -L -z)', async () => {
    fx.ns.sysctl('nf_conntrack_acct');
    fx.ns.exec('sysctl', ['-qw', 'net.netfilter.nf_conntrack_acct=1']);
    fx.ns.ping('127.0.0.1');
    fx.ns.tcpConnection('127.0.0.1', 8080);
    const packets = (e: Entry): number => e.counters!.original.packets + e.counters!.reply.packets;
    const tcpBefore = await fx.ct.list({ protocol: 'tcp' });
    expect(tcpBefore.length).toBeGreaterThan(0);
    const zeroedTcp = await fx.ct.list({ protocol: 'tcp' }, { zeroCounters: true });
    expect(zeroedTcp.map(packets)).toEqual(tcpBefore.map(packets));
    // Reset: the CLI reads 0 for TCP, and the ICMP entries kept theirs.
    for (const line of fx.ns.list('-p', 'tcp')) expect(line).toMatch(/packets=0 bytes=0 .*packets=0 bytes=0/);
    expect((await fx.ct.list({ protocol: 'icmp' })).every((e) => packets(e) > 0)).toBe(true);
    // Without a filter, one zeroing dump: what conntrack -L -z does.
    const all = await fx.ct.list(undefined, { zeroCounters: true });
    expect(all.some((e) => packets(e) > 0)).toBe(true);
    expect((await fx.ct.list()).every((e) => packets(e) === 0)).toBe(true);
    fx.ns.ping('127.0.0.1');
    const r = ctmon(['list', '--netns', fx.ns.name, '-o', 'conntrack', '-z', '-p', 'icmp']);
    expect(r.stdout).toMatch(/packets=[1-9]/);
    expect(fx.ns.list('-p', 'icmp').every((l) => /packets=0 bytes=0 .*packets=0 bytes=0/.test(l))).toBe(true);
  });

  it('create from the reply tuple alone makes the entry conntrack -I -r -q --reply-port-* makes', async () => {
    await fx.ct.create({ protocol: 'tcp', reply: { src: '10.3.0.1', dst: '10.3.0.2', sport: 80, dport: 4000 }, timeout: 300, state: 'ESTABLISHED' });
    const ours = fx.ns.list().map((l) => l.replace(/\s\d+\s(?=ESTABLISHED|src)/, ' T ').replace(/ id=\d+/, ''));
    fx.ns.conntrack('-F');
    fx.ns.conntrack('-I', '-p', 'tcp', '-r', '10.3.0.1', '-q', '10.3.0.2', '--reply-port-src', '80', '--reply-port-dst', '4000', '--state', 'ESTABLISHED', '-t', '300');
    const cli = fx.ns.list().map((l) => l.replace(/\s\d+\s(?=ESTABLISHED|src)/, ' T ').replace(/ id=\d+/, ''));
    expect(ours).toEqual(cli);
    expect(ours.join('\n')).toContain('src=10.3.0.2 dst=10.3.0.1 sport=4000 dport=80');
    // ICMP (the CLI refuses -I from an ICMP reply alone): the original is the echo request the reply answers.
    await fx.ct.create({ protocol: 'icmp', reply: { src: '10.3.0.1', dst: '10.3.0.2', icmp: { type: 0, code: 0, id: 9 } }, timeout: 300 });
    expect((await fx.ct.list({ protocol: 'icmp' }))[0]!.original).toEqual({ src: '10.3.0.2', dst: '10.3.0.1', icmp: { type: 8, code: 0, id: 9 } });
  });

  it('SCTP verification tags: set on create and update, read back; conntrack 1.4.7 byte-swaps its --orig-vtag', async () => {
    const key = { protocol: 'sctp' as const, original: { src: '10.4.0.1', dst: '10.4.0.2', sport: 5000, dport: 9 } };
    await fx.ct.create({ ...key, timeout: 300, state: 'ESTABLISHED', vtag: { original: 0x1234, reply: 0xdeadbeef } });
    expect((await fx.ct.get(key))!.vtag).toEqual({ original: 0x1234, reply: 0xdeadbeef });
    await fx.ct.update({ ...key, state: 'SHUTDOWN_SENT', vtag: { original: 7, reply: 8 } });
    expect(await fx.ct.get(key)).toMatchObject({ state: 'SHUTDOWN_SENT', vtag: { original: 7, reply: 8 } });
    fx.ns.conntrack('-I', '-p', 'sctp', '-s', '10.4.0.3', '-d', '10.4.0.2', '--sport', '5000', '--dport', '9', '--state', 'ESTABLISHED', '--orig-vtag', '17', '--reply-vtag', '18', '-t', '300');
    const cli = (await fx.ct.list({ src: '10.4.0.3' }))[0]!;
    // libnetfilter_conntrack applies htonl() to a value conntrack already converted: the kernel holds 17 byte-swapped.
    expect(cli.vtag).toEqual({ original: 17 * 0x1000000, reply: 18 * 0x1000000 });
    // A state without tags keeps the entry's own: the kernel would otherwise reset them to 0.
    await fx.ct.update({ ...key, state: 'ESTABLISHED' });
    expect(await fx.ct.get(key)).toMatchObject({ state: 'ESTABLISHED', vtag: { original: 7, reply: 8 } });
  });

  it('create with NAT and update a mark under a mask do what conntrack -I --src-nat/--dst-nat and -U -m MARK/MASK do', async () => {
    const line = (src: string): string => fx.ns.list('-s', src)[0]!.replace(/^(\S+\s+\d+\s+)\d+/, '$1T').replaceAll(src, 'SRC');
    const tcp = (src: string) => ({ protocol: 'tcp' as const, original: { src, dst: '10.6.0.2', sport: 1000, dport: 80 } });
    await fx.ct.create({ ...tcp('10.6.0.1'), timeout: 300, state: 'ESTABLISHED', nat: { src: '198.51.100.5' } });
    fx.ns.conntrack('-I', '-p', 'tcp', '-s', '10.6.0.3', '-d', '10.6.0.2', '--sport', '1000', '--dport', '80', '--state', 'ESTABLISHED', '-t', '300', '--src-nat', '198.51.100.5');
    // Without a port, conntrack 1.4.7 sends a port range of 0 and the kernel picks one; create() sends
    // none, and the kernel keeps the original port when it is free, as a NAT rule without a port does.
    const anyPort = (l: string): string => l.replace(/(dst=198\.51\.100\.5 sport=80 dport=)\d+/, '$1P');
    expect(anyPort(line('10.6.0.1'))).toEqual(anyPort(line('10.6.0.3')));
    expect((await fx.ct.get(tcp('10.6.0.1')))!.reply).toMatchObject({ dst: '198.51.100.5', dport: 1000 });
    expect((await fx.ct.get(tcp('10.6.0.1')))!.status).toEqual(expect.arrayContaining(['SRC_NAT', 'SRC_NAT_DONE']));
    await fx.ct.create({ ...tcp('10.6.0.4'), timeout: 300, state: 'ESTABLISHED', nat: { dst: { address: '198.51.100.6', port: 8080 } } });
    fx.ns.conntrack('-I', '-p', 'tcp', '-s', '10.6.0.5', '-d', '10.6.0.2', '--sport', '1000', '--dport', '80', '--state', 'ESTABLISHED', '-t', '300', '--dst-nat', '198.51.100.6:8080');
    expect(line('10.6.0.4')).toEqual(line('10.6.0.5'));
    expect((await fx.ct.get(tcp('10.6.0.4')))!.reply).toMatchObject({ src: '198.51.100.6', sport: 8080 });

    for (const src of ['10.6.0.1', '10.6.0.3']) fx.ns.conntrack('-U', '-s', src, '-m', String(0x1234));
    await fx.ct.update({ ...tcp('10.6.0.1'), mark: { value: 0x0f, mask: 0xff } });
    fx.ns.conntrack('-U', '-s', '10.6.0.3', '-m', `${0x0f}/${0xff}`);
    expect((await fx.ct.get(tcp('10.6.0.1')))!.mark).toBe((await fx.ct.get(tcp('10.6.0.3')))!.mark);
    expect((await fx.ct.get(tcp('10.6.0.1')))!.mark).toBe(0x120f);
    // DCCP with a role is accepted as conntrack accepts it (this kernel has no DCCP tracking to keep the role).
    fx.ns.conntrack('-I', '-p', 'dccp', '-s', '10.6.0.7', '-d', '10.6.0.2', '--sport', '1', '--dport', '2', '--state', 'OPEN', '--role', 'client', '-t', '300');
    await fx.ct.create({ protocol: 'dccp', original: { src: '10.6.0.8', dst: '10.6.0.2', sport: 1, dport: 2 }, timeout: 300, state: 'OPEN', role: 'client' });
    expect(fx.ns.list('-p', 'dccp')).toHaveLength(2);
    await expect(fx.ct.create({ ...tcp('10.6.0.9'), timeout: 300, nat: { src: '2001:db8::1' } })).rejects.toMatchObject({ code: 'ERR_INVALID_ARG' });
  });

  it('ctmon prints -o extended,id,labels lines exactly as conntrack does', async () => {
    enableLabels(fx.ns);
    fx.ns.conntrack('-I', '-p', 'udp', '-s', '10.5.0.1', '-d', '10.5.0.2', '--sport', '1', '--dport', '53', '-t', '300', '--label-add', 'green');
    fx.ns.ping('127.0.0.1');
    for (const o of ['extended', 'id', 'labels', 'extended,id', 'id,labels', 'extended,id,labels', 'conntrack,id']) {
      const ours = ctmon(['list', '--netns', fx.ns.name, '-o', o]);
      expect(ours.status, ours.stderr).toBe(0);
      const cliO = o.replace('conntrack,', '');
      const strip = (l: string): string => l.replace(/^((?:ipv\d\s+\d+\s+)?\S+\s+\d+\s+)\d+/, '$1T');
      expect(ours.stdout.split('\n').filter(Boolean).map(strip).sort(), `-o ${o}`).toEqual(fx.ns.list('-o', cliO).map(strip).sort());
    }
    await waitFor(() => true);
  });
});
