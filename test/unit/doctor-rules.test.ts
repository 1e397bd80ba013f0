/**
 * Each doctor rule on synthetic evidence: its thresholds from both sides, the
 * kernel-version branches, the commands it prints for a named namespace, a
 * path and the initial namespace. No root, no kernel.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { CounterTotals } from '../../src/conntrack.js';
import { NamespaceCommands } from '../../src/doctor-commands.js';
import type { Evidence } from '../../src/doctor-evidence.js';
import { adviseSize, bucketsEqualMax, bucketsFor, defaultTimeouts } from '../../src/doctor-kernel.js';
import * as rules from '../../src/doctor-rules.js';
import { contextOf, judge, type Rule } from '../../src/doctor-rules.js';
import { diagnosisOf, type Rates } from '../../src/doctor.js';
import type { KernelLogFacts } from '../../src/kernel-log.js';
import type { TableFacts } from '../../src/tally.js';

const SEED = Number(process.env.CONNTRACK_PBT_SEED ?? 1);
const GIB = 1024 ** 3;
const AT = Date.parse('2026-12-06T12:00:00Z');
const ZERO: CounterTotals = { found: 0, invalid: 0, insert: 0, insertFailed: 0, drop: 0, earlyDrop: 0, error: 0, searchRestart: 0, clashResolve: 0, chainTooLong: 0 };

interface Over {
  namespace?: Partial<Evidence['namespace']>;
  kernel?: { major: number; minor: number };
  count?: number;
  max?: number;
  buckets?: number;
  totals?: Partial<CounterTotals>;
  rates?: Partial<Rates>;
  log?: Partial<KernelLogFacts>;
  table?: Partial<TableFacts>;
  timeouts?: Record<string, number>;
  tcpLoose?: number | null;
  tcpBeLiberal?: number | null;
  entryBytes?: number | null;
}

/**
 * Evidence of namespace `blue` on Linux 6.18 with 4 GiB of RAM (so a max of
 * 262,144 is what the RAM allows), 1,000 entries of 262,144, the kernel's
 * default timeouts, nothing dropped and an empty kernel log; `o` changes parts.
 */
function evidence(o: Over = {}): Evidence {
  const kernel = { release: `${o.kernel?.major ?? 6}.${o.kernel?.minor ?? 18}.0`, major: o.kernel?.major ?? 6, minor: o.kernel?.minor ?? 18 };
  const defaults = defaultTimeouts(kernel.major);
  const timeouts = Object.fromEntries(Object.entries(defaults).map(([name, d]) => [name, { value: o.timeouts?.[name] ?? d, default: d }]));
  const max = o.max ?? 262144;
  return {
    namespace: { name: 'blue', initial: false, inode: 4026532246, now: { state: 'same' }, ...o.namespace },
    kernel,
    count: o.count ?? 1000,
    max,
    buckets: o.buckets ?? max,
    totals: { ...ZERO, ...o.totals },
    rates: { intervalSeconds: 1, drop: 0, earlyDrop: 0, insertFailed: 0, invalid: 0, searchRestart: 0, clashResolve: 0, chainTooLong: 0, ...o.rates },
    log: { source: 'kmsg', tableFull: 0, thisNamespace: 0, suppressed: 0, ...o.log },
    table: { sampled: 0, complete: true, byProtocol: {}, byState: {}, unassured: 0, synUnassured: 0, timeWait: 0, udp: 0, topSources: [], topDestinations: [], ...o.table },
    settings: { timeouts, tcpLoose: o.tcpLoose ?? 0, tcpBeLiberal: o.tcpBeLiberal ?? 0 },
    memory: { ramBytes: 4 * GIB, entryBytes: o.entryBytes === undefined ? 320 : o.entryBytes, bucketBytes: 8 },
    atMs: AT,
  };
}

const run = (rule: Rule, o: Over = {}): ReturnType<Rule> => rule(contextOf(evidence(o)));
/** A table of `sampled` entries where the rule's share is `n`. */
const walked = (sampled: number, part: Partial<TableFacts>): Partial<TableFacts> => ({ sampled, ...part });
/** Fill `f` of the default max. */
const filled = (f: number): Over => ({ count: Math.round(262144 * f) });

describe('commands for the namespace a finding is about', () => {
  it('run inside a named namespace, a path, or as they are in the initial one; persistence never writes the host\'s sysctl.d for another namespace', () => {
    expect(new NamespaceCommands('blue', false).sysctl('nf_conntrack_udp_timeout', 10)).toBe('ip netns exec blue sysctl -w net.netfilter.nf_conntrack_udp_timeout=10');
    expect(new NamespaceCommands('/proc/42/ns/net', false).inNs('conntrack -S')).toBe('nsenter --net=/proc/42/ns/net conntrack -S');
    expect(new NamespaceCommands(null, false).inNs('conntrack -S')).toBe('conntrack -S');
    expect(new NamespaceCommands('host', true).inNs('conntrack -S')).toBe('conntrack -S');
    expect(new NamespaceCommands(null, true).persist('nf_conntrack_udp_timeout', 10)).toBe("echo 'net.netfilter.nf_conntrack_udp_timeout = 10' >> /etc/sysctl.d/90-conntrack.conf");
    expect(new NamespaceCommands('blue', false).persist('nf_conntrack_udp_timeout', 10)).toMatch(/^# persist: add `ip netns exec blue sysctl -w .*\/etc\/sysctl\.d applies to the initial namespace only$/);
    expect(new NamespaceCommands('blue', false).deleteSourceOrCtmon('10.0.0.1')).toBe('ip netns exec blue conntrack -D --orig-src 10.0.0.1   # or: ctmon delete --src 10.0.0.1 --netns blue');
  });
});

describe('kernel knowledge', () => {
  it('udp_timeout_stream is 120 s from Linux 6.0, 180 s before', () => {
    expect(defaultTimeouts(6).nf_conntrack_udp_timeout_stream).toBe(120);
    expect(defaultTimeouts(5).nf_conntrack_udp_timeout_stream).toBe(180);
  });
  it('buckets equal the max from Linux 5.15 (d532bcd0b269), a quarter (at least 1024) before', () => {
    expect([bucketsEqualMax(5, 14), bucketsEqualMax(5, 15), bucketsEqualMax(6, 0), bucketsEqualMax(4, 19)]).toEqual([false, true, true, false]);
    expect(bucketsFor(262144, 5, 15)).toBe(262144);
    expect(bucketsFor(262144, 5, 14)).toBe(65536);
    expect(bucketsFor(2048, 4, 19)).toBe(1024);
  });
  it('advises a power of two: at least the RAM\'s share, twice the max, twice the count; priced with the slab entry size', () => {
    expect(adviseSize({ count: 10, max: 65536 }, { ramBytes: 4 * GIB, entryBytes: 320 }, { major: 6, minor: 1 })).toEqual({ ramMax: 262144, max: 262144, buckets: 262144, costBytes: 262144 * 320 + 262144 * 8 });
    expect(adviseSize({ count: 10, max: 262144 }, { ramBytes: 4 * GIB, entryBytes: null }, { major: 5, minor: 10 })).toEqual({ ramMax: 262144, max: 524288, buckets: 131072, costBytes: null });
    expect(adviseSize({ count: 700000, max: 262144 }, { ramBytes: GIB / 4, entryBytes: null }, { major: 6, minor: 1 }).max).toBe(2097152);
  });
});

describe('inactive', () => {
  it('nothing tracked, ever: info with the rule that turns tracking on', () => {
    const f = run(rules.inactive, { count: 0 })!;
    expect(f).toMatchObject({ id: 'inactive', severity: 'info' });
    expect(f.fix[0]).toMatch(/^ip netns exec blue nft 'add table inet track/);
  });
  it('one entry, one sampled entry or one counter makes it active', () => {
    expect(run(rules.inactive, { count: 1 })).toBeUndefined();
    expect(run(rules.inactive, { count: 0, table: { sampled: 1 } })).toBeUndefined();
    expect(run(rules.inactive, { count: 0, totals: { invalid: 1 } })).toBeUndefined();
  });
});

describe('fill', () => {
  it('90% full is critical (table-full), with the advised pair, its price and the host-wide note', () => {
    const f = run(rules.fill, filled(0.9))!;
    expect(f).toMatchObject({ id: 'table-full', severity: 'critical', title: 'conntrack table is nearly full' });
    expect(f.detail).toContain('no drops in the last 1.0 s');
    expect(f.detail).toContain('Raise the max to 524288 with 524288 buckets (at most 164 MiB when full: 320 bytes per entry');
    expect(f.detail).toContain('host-wide: run these on the host');
    expect(f.fix[0]).toBe('sysctl -w net.netfilter.nf_conntrack_max=524288');
    expect(f.changes).toEqual([{ name: 'nf_conntrack_max', value: 524288, scope: 'host' }, { name: 'nf_conntrack_buckets', value: 524288, scope: 'host' }]);
    expect(run(rules.fill, { count: 262144 })!.title).toBe('conntrack table is full');
  });
  it('75% is table-full while dropping, table-filling (warning) otherwise; just under 75% has room', () => {
    expect(run(rules.fill, { ...filled(0.75), rates: { earlyDrop: 1 } })).toMatchObject({ id: 'table-full', severity: 'critical' });
    expect(run(rules.fill, { ...filled(0.75), rates: { earlyDrop: 1 } })!.detail).toContain('dropping now: drop 0.0/s, early_drop 1.0/s');
    expect(run(rules.fill, filled(0.75))).toMatchObject({ id: 'table-filling', severity: 'warning' });
    expect(run(rules.fill, filled(0.8999))).toMatchObject({ id: 'table-filling' });
    expect(run(rules.fill, { count: 196607 })).toMatchObject({ id: 'fill', severity: 'ok', fix: [] });
  });
  it('in the initial namespace no host-wide note; where nothing is tracked, no "table has room"', () => {
    expect(run(rules.fill, { ...filled(0.9), namespace: { initial: true } })!.detail).not.toContain('host-wide');
    expect(run(rules.fill, { count: 0 })).toBeUndefined();
  });
});

describe('drops', () => {
  it('dropping now with room: critical drops-now', () => {
    expect(run(rules.drops, { rates: { insertFailed: 0.5 } })).toMatchObject({ id: 'drops-now', severity: 'critical', fix: ['ip netns exec blue conntrack -S', 'ip netns exec blue ctmon top'] });
  });
  it('dropping now at 75% full belongs to table-full; only in the past: info drops-past; never: nothing', () => {
    expect(run(rules.drops, { ...filled(0.75), rates: { drop: 1 } })).toBeUndefined();
    expect(run(rules.drops, { totals: { earlyDrop: 3 } })).toMatchObject({ id: 'drops-past', severity: 'info' });
    expect(run(rules.drops, { totals: { earlyDrop: 3 } })!.detail).toContain('since boot: drop=0 early_drop=3 insert_failed=0');
    expect(run(rules.drops)).toBeUndefined();
  });
});

describe('kernel-log', () => {
  const recent = new Date(AT - 599_999).toISOString();
  const old = new Date(AT - 600_000).toISOString();
  it('lines naming this namespace within 10 minutes: warning, critical while dropping or 90% full; older: info', () => {
    const log = { tableFull: 5, thisNamespace: 2, lastThisNamespace: recent, last: recent };
    const f = run(rules.kernelLog, { log })!;
    expect(f).toMatchObject({ id: 'kernel-log', severity: 'warning', title: 'the kernel logged "table full, dropping packet" 2 times for this namespace' });
    expect(f.fix).toEqual(["dmesg -T | grep 'table full in netns 4026532246'"]);
    expect(run(rules.kernelLog, { log, rates: { drop: 1 } })!.severity).toBe('critical');
    expect(run(rules.kernelLog, { log, ...filled(0.9) })!.severity).toBe('critical');
    expect(run(rules.kernelLog, { log: { ...log, lastThisNamespace: old } })!.severity).toBe('info');
  });
  it('other namespaces\' lines are context: no finding', () => {
    expect(run(rules.kernelLog, { log: { tableFull: 5, thisNamespace: 0, last: recent } })).toBeUndefined();
  });
  it('lines that name no namespace (older kernels) count for the initial namespace only', () => {
    const log = { tableFull: 1, thisNamespace: null, last: recent, suppressed: 7 };
    expect(run(rules.kernelLog, { log })).toBeUndefined();
    const f = run(rules.kernelLog, { log, namespace: { initial: true, name: null } })!;
    expect(f).toMatchObject({ severity: 'warning', title: 'the kernel logged "table full, dropping packet" 1 time', fix: ['dmesg -T | grep -i conntrack'] });
    expect(f.detail).toContain('up to 7 more lines were suppressed');
  });
});

describe('kernel-log-unavailable', () => {
  it('an unreadable log is one info finding saying where the evidence went missing', () => {
    const error = '/dev/kmsg does not exist here; no dmesg program is installed';
    const f = run(rules.kernelLogUnavailable, { log: { source: 'unavailable', thisNamespace: null, error } })!;
    expect(f).toMatchObject({ id: 'kernel-log-unavailable', severity: 'info' });
    expect(f.detail.startsWith(`${error}. `)).toBe(true);
    expect(f.fix[0]).toBe('dmesg -T | grep -i conntrack   # on the host');
  });
  it('a readable log, even an empty one, is no finding', () => {
    expect(run(rules.kernelLogUnavailable)).toBeUndefined();
    expect(run(rules.kernelLogUnavailable, { log: { source: 'dmesg' } })).toBeUndefined();
  });
});

describe('max-low', () => {
  it('a max below what the RAM allows: info on a quiet table, warning from half full, critical at 90%', () => {
    expect(run(rules.maxLow, { max: 262143, count: 10 })).toMatchObject({ id: 'max-low', severity: 'info' });
    expect(run(rules.maxLow, { max: 262143, count: 131072 })!.severity).toBe('warning');
    expect(run(rules.maxLow, { max: 262143, count: 235929 })!.severity).toBe('critical');
    expect(run(rules.maxLow, { max: 65536 })!.detail).toContain('with 4.0 GiB of RAM about 262144 entries fit');
  });
  it('a max at what the RAM allows: nothing', () => {
    expect(run(rules.maxLow, { max: 262144 })).toBeUndefined();
  });
});

describe('buckets', () => {
  it('Linux 5.15 and later: fewer than half the max is too few', () => {
    const f = run(rules.buckets, { buckets: 131071 })!;
    expect(f).toMatchObject({ id: 'buckets', severity: 'info' });
    expect(f.detail).toContain('sizes buckets equal to the max (since 5.15, commit d532bcd0b269)');
    expect(f.detail).toContain('chains of about 4 entries');
    expect(run(rules.buckets, { buckets: 131072 })).toBeUndefined();
  });
  it('before 5.15: fewer than an eighth of the max (half of a quarter) is too few', () => {
    const kernel = { major: 5, minor: 14 };
    expect(run(rules.buckets, { kernel, buckets: 32767 })!.detail).toContain('Linux 5.14 sizes buckets at a quarter of the max');
    expect(run(rules.buckets, { kernel, buckets: 32768 })).toBeUndefined();
    expect(run(rules.buckets, { kernel: { major: 5, minor: 15 }, buckets: 32768 })).toBeDefined();
  });
  it('no bucket count read: nothing', () => {
    expect(run(rules.buckets, { buckets: 0 })).toBeUndefined();
  });
});

describe('tcp-established-timeout', () => {
  it('a day or more: the kernel default is info on a quiet table, a risk factor that rises with fill', () => {
    const f = run(rules.tcpEstablishedTimeout)!;
    expect(f).toMatchObject({ id: 'tcp-established-timeout', severity: 'info', title: 'TCP established timeout is 5.0 days (the kernel default)' });
    expect(f.fix[0]).toBe('ip netns exec blue sysctl -w net.netfilter.nf_conntrack_tcp_timeout_established=3600');
    expect(f.changes).toEqual([{ name: 'nf_conntrack_tcp_timeout_established', value: 3600, scope: 'namespace' }]);
    expect(run(rules.tcpEstablishedTimeout, { timeouts: { nf_conntrack_tcp_timeout_established: 86400 } })!.title).toBe('TCP established timeout is 1.0 days');
    expect(run(rules.tcpEstablishedTimeout, filled(0.5))!.severity).toBe('warning');
    expect(run(rules.tcpEstablishedTimeout, { rates: { drop: 1 } })!.severity).toBe('critical');
  });
  it('under a day, or unreadable: nothing', () => {
    expect(run(rules.tcpEstablishedTimeout, { timeouts: { nf_conntrack_tcp_timeout_established: 86399 } })).toBeUndefined();
    const e = evidence();
    delete e.settings.timeouts.nf_conntrack_tcp_timeout_established;
    expect(rules.tcpEstablishedTimeout(contextOf(e))).toBeUndefined();
  });
});

describe('timeouts-raised', () => {
  it('timeouts above this kernel\'s defaults, back to them', () => {
    const f = run(rules.timeoutsRaised, { timeouts: { nf_conntrack_udp_timeout: 31, nf_conntrack_tcp_timeout_time_wait: 240 } })!;
    expect(f).toMatchObject({ id: 'timeouts-raised', severity: 'info', title: '2 timeouts above the kernel default' });
    expect(f.changes).toEqual([{ name: 'nf_conntrack_tcp_timeout_time_wait', value: 120, scope: 'namespace' }, { name: 'nf_conntrack_udp_timeout', value: 30, scope: 'namespace' }]);
  });
  it('at the defaults, or only the established timeout raised: nothing', () => {
    expect(run(rules.timeoutsRaised)).toBeUndefined();
    expect(run(rules.timeoutsRaised, { timeouts: { nf_conntrack_tcp_timeout_established: 999999 } })).toBeUndefined();
  });
  it('the kernel version decides the default: udp_timeout_stream 150 is raised on 6.x, not on 5.x', () => {
    expect(run(rules.timeoutsRaised, { timeouts: { nf_conntrack_udp_timeout_stream: 150 } })!.detail).toContain('nf_conntrack_udp_timeout_stream = 150 s (default 120)');
    expect(run(rules.timeoutsRaised, { kernel: { major: 5, minor: 10 }, timeouts: { nf_conntrack_udp_timeout_stream: 150 } })).toBeUndefined();
  });
});

describe('tcp-be-liberal', () => {
  it('on: info, turned off in the namespace; off or unreadable: nothing', () => {
    expect(run(rules.tcpBeLiberal, { tcpBeLiberal: 1 })).toMatchObject({ id: 'tcp-be-liberal', severity: 'info', fix: ['ip netns exec blue sysctl -w net.netfilter.nf_conntrack_tcp_be_liberal=0'] });
    expect(run(rules.tcpBeLiberal, { tcpBeLiberal: 0 })).toBeUndefined();
    expect(run(rules.tcpBeLiberal, { tcpBeLiberal: null })).toBeUndefined();
  });
});

const dns = { dst: '192.0.2.53:53', address: '192.0.2.53', port: 53, protocol: 'udp', entries: 600, share: 0.6 };

describe('udp', () => {
  it('half the table UDP, one service with most of it: shorter UDP timeouts and notrack for its port', () => {
    const f = run(rules.udp, { table: walked(1000, { udp: 700, topDestinations: [dns] }) })!;
    expect(f).toMatchObject({ id: 'udp', severity: 'info', title: 'UDP to 192.0.2.53:53 fills the table (60.0%)' });
    expect(f.fix.slice(0, 2)).toEqual(['ip netns exec blue sysctl -w net.netfilter.nf_conntrack_udp_timeout=10', 'ip netns exec blue sysctl -w net.netfilter.nf_conntrack_udp_timeout_stream=60']);
    expect(f.fix).toContain('ip netns exec blue iptables -t raw -A OUTPUT -p udp --sport 53 -j CT --notrack');
    expect(f.detail).toContain('each lives 30 s unreplied-or-single-packet (nf_conntrack_udp_timeout) or 120 s once a stream');
  });
  it('the top UDP destination with under half the UDP entries: no service, no notrack', () => {
    const f = run(rules.udp, { table: walked(1000, { udp: 1000, topDestinations: [{ ...dns, entries: 499 }] }) })!;
    expect(f.title).toBe('UDP is 100.0% of the table');
    expect(f.fix.some((c) => c.includes('notrack'))).toBe(false);
  });
  it('under half UDP, or under 1000 entries walked: nothing', () => {
    expect(run(rules.udp, { table: walked(1000, { udp: 499 }) })).toBeUndefined();
    expect(run(rules.udp, { table: walked(999, { udp: 999 }) })).toBeUndefined();
  });
});

describe('unassured', () => {
  const sources = [{ src: '198.51.100.1', entries: 400, share: 0.4 }, { src: '198.51.100.2', entries: 40, share: 0.04 }];
  it('half the table half-open TCP: SYN timeouts, tcp_loose off, the heavy sources deleted', () => {
    const f = run(rules.unassured, { tcpLoose: 1, table: walked(1000, { unassured: 500, synUnassured: 250, topSources: sources }) })!;
    expect(f).toMatchObject({ id: 'unassured', title: 'half-open TCP handshakes are 25.0% of the table (a SYN flood or a scan?)' });
    expect(f.fix).toContain('ip netns exec blue sysctl -w net.netfilter.nf_conntrack_tcp_timeout_syn_recv=30');
    expect(f.fix.some((c) => c.startsWith('ip netns exec blue sysctl -w net.netfilter.nf_conntrack_tcp_loose=0'))).toBe(true);
    expect(f.fix.at(-1)).toBe('ip netns exec blue conntrack -D --orig-src 198.51.100.1');
    expect(f.detail).toContain('from 198.51.100.1 (40.0%)');
    expect(f.changes?.map((c) => c.name)).toEqual(['nf_conntrack_tcp_timeout_syn_sent', 'nf_conntrack_tcp_timeout_syn_recv']);
  });
  it('unassured but few half-open: no timeout changes', () => {
    const f = run(rules.unassured, { tcpLoose: 1, table: walked(1000, { unassured: 500, synUnassured: 249 }) })!;
    expect(f.title).toBe('most entries are unassured (50.0%)');
    expect(f.changes).toEqual([]);
    expect(f.detail).toContain('from many sources');
  });
  it('under half unassured: nothing', () => {
    expect(run(rules.unassured, { table: walked(1000, { unassured: 499, synUnassured: 499 }) })).toBeUndefined();
  });
});

describe('time-wait', () => {
  it('30% TIME_WAIT: shorten it; 29.9%: nothing', () => {
    expect(run(rules.timeWait, { table: walked(1000, { timeWait: 300 }) })).toMatchObject({ id: 'time-wait', title: 'TIME_WAIT is 30.0% of the table' });
    expect(run(rules.timeWait, { table: walked(1000, { timeWait: 299 }) })).toBeUndefined();
  });
});

describe('top-sources', () => {
  const src = (i: number, share: number): { src: string; entries: number; share: number } => ({ src: `10.0.0.${i}`, entries: share * 1000, share });
  it('one source with a fifth of the table', () => {
    const f = run(rules.topSources, { table: walked(1000, { topSources: [src(1, 0.2), src(2, 0.01)] }) })!;
    expect(f).toMatchObject({ id: 'top-sources', title: 'one source holds 20.0% of the table' });
    expect(f.fix).toEqual(['ip netns exec blue conntrack -D --orig-src 10.0.0.1   # or: ctmon delete --src 10.0.0.1 --netns blue']);
  });
  it('five sources with half of it', () => {
    const five = [1, 2, 3, 4, 5].map((i) => src(i, 0.1));
    expect(run(rules.topSources, { table: walked(1000, { topSources: five }) })!.title).toBe('5 sources hold 50.0% of the table');
    expect(run(rules.topSources, { table: walked(1000, { topSources: [...five.slice(0, 4), src(5, 0.09)] }) })).toBeUndefined();
  });
  it('the top source under a fifth: nothing', () => {
    expect(run(rules.topSources, { table: walked(1000, { topSources: [src(1, 0.19)] }) })).toBeUndefined();
  });
});

describe('top-destinations', () => {
  const web = { dst: '[2001:db8::1]:443', address: '2001:db8::1', port: 443, protocol: 'tcp', entries: 500, share: 0.5 };
  it('one destination with half the table: listed by its address and port, IPv6 included', () => {
    const f = run(rules.topDestinations, { table: walked(1000, { topDestinations: [web] }) })!;
    expect(f).toMatchObject({ id: 'top-destinations', title: 'one destination holds 50.0% of the table: tcp [2001:db8::1]:443' });
    expect(f.fix).toEqual(['ip netns exec blue conntrack -L -p tcp --dst 2001:db8::1 --dport 443 | head']);
  });
  it('a destination without ports (ICMP) has no --dport', () => {
    const ping = { dst: '2001:db8::1', address: '2001:db8::1', protocol: 'icmpv6', entries: 900, share: 0.9 };
    expect(run(rules.topDestinations, { table: walked(1000, { topDestinations: [ping] }) })!.fix).toEqual(['ip netns exec blue conntrack -L -p icmpv6 --dst 2001:db8::1 | head']);
  });
  it('under half: nothing; the UDP service the udp finding names: not twice', () => {
    expect(run(rules.topDestinations, { table: walked(1000, { topDestinations: [{ ...web, share: 0.499 }] }) })).toBeUndefined();
    const table = walked(1000, { udp: 700, topDestinations: [dns] });
    expect(run(rules.udp, { table })).toBeDefined();
    expect(run(rules.topDestinations, { table })).toBeUndefined();
    expect(run(rules.topDestinations, { table: walked(1000, { udp: 400, topDestinations: [dns] }) })).toBeDefined();
  });
  it('an ICMP destination at the UDP service\'s address is another destination: reported, not hidden by the udp finding', () => {
    const ping = { dst: '192.0.2.53', address: '192.0.2.53', protocol: 'icmp', entries: 500, share: 0.5 };
    const table = walked(1000, { udp: 500, topDestinations: [ping, { ...dns, entries: 400, share: 0.4 }] });
    expect(run(rules.udp, { table })!.title).toContain('UDP to 192.0.2.53:53');
    expect(run(rules.topDestinations, { table })!.title).toBe('one destination holds 50.0% of the table: icmp 192.0.2.53');
  });
});

describe('invalid', () => {
  it('INVALID packets now: info, warning from 100/s; none: nothing', () => {
    expect(run(rules.invalid, { rates: { invalid: 0.5 } })).toMatchObject({ id: 'invalid', severity: 'info', title: 'INVALID packets now: 0.5/s' });
    expect(run(rules.invalid, { rates: { invalid: 99.9 } })!.severity).toBe('info');
    expect(run(rules.invalid, { rates: { invalid: 100 } })).toMatchObject({ severity: 'warning', title: 'INVALID packets now: 100/s' });
    expect(run(rules.invalid)).toBeUndefined();
  });
});

describe('hash-contention', () => {
  it('search_restart from 100/s, or any chaintoolong: more buckets', () => {
    expect(run(rules.hashContention, { rates: { searchRestart: 100 } })).toMatchObject({ id: 'hash-contention', severity: 'info' });
    expect(run(rules.hashContention, { rates: { chainTooLong: 0.1 } })!.changes?.map((c) => c.scope)).toEqual(['host', 'host']);
    expect(run(rules.hashContention, { rates: { searchRestart: 100 }, ...filled(0.5) })!.severity).toBe('warning');
  });
  it('under 100/s and no long chains: nothing', () => {
    expect(run(rules.hashContention, { rates: { searchRestart: 99 } })).toBeUndefined();
  });
});

describe('namespace-changed', () => {
  it('the name names another namespace: critical, and every other finding loses its fixes', () => {
    const x = contextOf(evidence({ namespace: { now: { state: 'replaced', current: { dev: 4, inode: 4026532999, sinceMs: 0 } } } }));
    expect(rules.namespaceChanged(x)).toMatchObject({ id: 'namespace-changed', severity: 'critical', title: 'namespace blue was deleted and created again during the diagnosis', fix: ['ctmon doctor --netns blue'] });
    const findings = judge(x);
    expect(findings.at(-1)!.id).toBe('namespace-changed');
    expect(findings.slice(0, -1).length).toBeGreaterThan(0);
    for (const f of findings.slice(0, -1)) expect([f.fix, f.changes]).toEqual([[], []]);
  });
  it('gone: says so; the same namespace: nothing', () => {
    expect(run(rules.namespaceChanged, { namespace: { now: { state: 'gone' } } })!.detail).toContain('blue now names nothing');
    expect(run(rules.namespaceChanged)).toBeUndefined();
  });
});

describe('judge and the verdict', () => {
  it('findings in rule order; the worst severity gives status and exit code; ignore and failOn change the verdict only', () => {
    const e = evidence({ ...filled(0.6), tcpBeLiberal: 1 });
    const d = diagnosisOf(e);
    expect(d.findings.map((f) => f.id)).toEqual(['fill', 'tcp-established-timeout', 'tcp-be-liberal']);
    expect([d.status, d.exitCode]).toEqual(['warning', 1]);
    expect(diagnosisOf(e, { failOn: 'critical' }).exitCode).toBe(0);
    const ignored = diagnosisOf(e, { ignore: ['tcp-established-timeout'] });
    expect([ignored.status, ignored.exitCode, ignored.ignored]).toEqual(['healthy', 0, ['tcp-established-timeout']]);
    expect(diagnosisOf(evidence(filled(0.95))).exitCode).toBe(2);
  });
  it('facts: the evidence by name, attributed when the kernel names namespaces or this is the initial one', () => {
    const d = diagnosisOf(evidence({ log: { thisNamespace: null } }));
    expect(d.facts).toMatchObject({ namespace: { name: 'blue', initial: false, inode: 4026532246, now: 'same' }, count: 1000, max: 262144, active: true, tcpLoose: 0 });
    expect(d.facts.kernelLog).toMatchObject({ scope: 'host', attributed: false });
    expect(diagnosisOf(evidence({ log: { thisNamespace: null }, namespace: { initial: true } })).facts.kernelLog.attributed).toBe(true);
    expect(diagnosisOf(evidence()).facts.kernelLog.attributed).toBe(true);
  });
  it('every rule is in RULES once, and every rule in this file\'s exports is tested above', () => {
    const exported = Object.entries(rules).filter(([name, v]) => typeof v === 'function' && !['contextOf', 'judge'].includes(name)).map(([, v]) => v);
    expect(new Set(rules.RULES).size).toBe(rules.RULES.length);
    expect(exported.filter((r) => !rules.RULES.includes(r as Rule))).toEqual([rules.namespaceChanged]);
  });
});

describe('every rule together, on generated evidence', () => {
  const over: fc.Arbitrary<Over> = fc.record({
    namespace: fc.record({ initial: fc.boolean(), name: fc.constantFrom(null, 'blue', '/proc/42/ns/net'), now: fc.constantFrom({ state: 'same' as const }, { state: 'gone' as const }) }),
    kernel: fc.record({ major: fc.integer({ min: 4, max: 7 }), minor: fc.integer({ min: 0, max: 20 }) }),
    count: fc.integer({ min: 0, max: 262144 }),
    buckets: fc.integer({ min: 0, max: 262144 }),
    totals: fc.record({ drop: fc.nat(10), earlyDrop: fc.nat(10), invalid: fc.nat(10) }),
    rates: fc.record({ drop: fc.constantFrom(0, 1), earlyDrop: fc.constantFrom(0, 1), invalid: fc.constantFrom(0, 1, 100), searchRestart: fc.constantFrom(0, 100) }),
    // An unreadable log has no lines (readKernelLog's shape); a readable one any.
    log: fc.oneof(
      fc.constant({ source: 'unavailable' as const, tableFull: 0, thisNamespace: null, error: '/dev/kmsg does not exist here; no dmesg program is installed' }),
      fc.record({ source: fc.constant('kmsg' as const), tableFull: fc.nat(5), thisNamespace: fc.constantFrom(null, 0, 2) }),
    ),
    table: fc.record({ sampled: fc.constantFrom(0, 1000), udp: fc.nat(1000), unassured: fc.nat(1000), synUnassured: fc.nat(500), timeWait: fc.nat(1000) }),
    tcpBeLiberal: fc.constantFrom(0, 1),
  });
  it('ids are unique, one fill finding at most, the exit code follows the worst severity, and a changed namespace leaves no fix', () => {
    fc.assert(fc.property(over, (o) => {
      const d = diagnosisOf(evidence(o));
      const ids = d.findings.map((f) => f.id);
      expect(new Set(ids).size).toBe(ids.length);
      expect(ids.filter((id) => ['fill', 'table-full', 'table-filling'].includes(id)).length).toBeLessThanOrEqual(1);
      expect(ids.filter((id) => ['drops-now', 'drops-past'].includes(id)).length).toBeLessThanOrEqual(1);
      expect(ids.includes('kernel-log') && ids.includes('kernel-log-unavailable')).toBe(false);
      const worst = d.findings.some((f) => f.severity === 'critical') ? 2 : d.findings.some((f) => f.severity === 'warning') ? 1 : 0;
      expect(d.exitCode).toBe(worst);
      if (o.namespace?.now?.state !== 'same') expect(d.findings.filter((f) => f.id !== 'namespace-changed').flatMap((f) => [...f.fix, ...f.changes])).toEqual([]);
      // Every per-namespace change is printed as a command for this namespace.
      for (const f of d.findings) for (const c of f.changes) if (c.scope === 'namespace') expect(f.fix.some((cmd) => cmd.includes(`net.netfilter.${c.name}=${c.value}`))).toBe(true);
    }), { seed: SEED, numRuns: 500 });
  });
});
