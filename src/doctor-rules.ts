/**
 * The doctor's rules: each one reads the evidence (doctor-evidence.ts) and
 * returns a finding, or nothing. Pure: no I/O, no clock (time is the
 * evidence's `atMs`), so each runs on synthetic evidence in
 * test/unit/doctor-rules.test.ts. RULES is the order findings are reported in.
 *
 * Risk factors that hurt nothing yet are `info`; they rise to `warning` at
 * half full and `critical` when the table is nearly full or dropping now.
 */
import { hostMaxChanges, NamespaceCommands } from './doctor-commands.js';
import { adviseSize, bucketsEqualMax, bucketsFor, ENTRIES_PER_GIB, GIB, MIB, type Advice } from './doctor-kernel.js';
import type { Evidence } from './doctor-evidence.js';
import type { Finding, Severity, SysctlChange } from './doctor.js';
import type { DestinationShare } from './tally.js';

/** The evidence with what every rule derives from it, computed once. */
export interface Context {
  e: Evidence;
  /** count / max (0 without a max). */
  fill: number;
  droppingNow: boolean;
  droppedEver: boolean;
  /** false when nothing has ever been tracked here: no entry, every counter 0. */
  active: boolean;
  advice: Advice;
  cmd: NamespaceCommands;
}

/** A finding as a rule returns it: `changes` only where it has some. */
export type Draft = Omit<Finding, 'changes'> & { changes?: SysctlChange[] };
export type Rule = (x: Context) => Draft | undefined;

export function contextOf(e: Evidence): Context {
  const { rates: r, totals: t } = e;
  return {
    e,
    fill: e.max ? e.count / e.max : 0,
    droppingNow: r.drop + r.earlyDrop + r.insertFailed > 0,
    droppedEver: t.drop + t.earlyDrop + t.insertFailed > 0,
    active: e.count > 0 || e.table.sampled > 0 || Object.values(t).some((n) => n > 0),
    advice: adviseSize(e, e.memory, e.kernel),
    cmd: new NamespaceCommands(e.namespace.name, e.namespace.initial),
  };
}

const pct = (x: number): string => `${(x * 100).toFixed(1)}%`;
const perSecond = (x: number): string => (x >= 10 ? x.toFixed(0) : x.toFixed(1));
/** A risk factor's severity: by how full the table is and whether it drops now. */
const risk = (x: Context): Severity => (x.droppingNow || x.fill >= 0.9 ? 'critical' : x.fill >= 0.5 ? 'warning' : 'info');
/** A risk factor that is `info` until the table is half full. */
const busyRisk = (x: Context): Severity => (x.fill >= 0.5 ? risk(x) : 'info');
/** The walk saw enough entries for shares to mean something. */
const enough = (x: Context): boolean => x.e.table.sampled >= 1000;
const share = (x: Context, n: number): number => (x.e.table.sampled ? n / x.e.table.sampled : 0);
/** Sources holding at least 5% of the table, at most five. */
const heavySources = (x: Context): Evidence['table']['topSources'] => x.e.table.topSources.filter((s) => s.share >= 0.05).slice(0, 5);
const seconds = (x: Context): string => x.e.rates.intervalSeconds.toFixed(1);

/** The advised pair, and what it costs when full. */
function adviceText(x: Context): string {
  const { max, buckets, costBytes } = x.advice;
  const cost = costBytes === null ? '' : ` (at most ${(costBytes / MIB).toFixed(0)} MiB when full: ${x.e.memory.entryBytes} bytes per entry in the nf_conntrack slab, ${x.e.memory.bucketBytes} per bucket)`;
  return `${max} with ${buckets} buckets${cost}`;
}
const hostNote = (x: Context): string =>
  x.e.namespace.initial ? '' : ' nf_conntrack_max and nf_conntrack_buckets are host-wide: run these on the host (initial namespace), where they apply to every namespace.';
/** The fix and changes of every finding that raises the max. */
const raiseMax = (x: Context): Pick<Draft, 'fix' | 'changes'> => ({
  fix: x.cmd.hostMax(x.advice.max, x.advice.buckets),
  changes: hostMaxChanges(x.advice.max, x.advice.buckets),
});
const dropsNow = (x: Context): string => {
  const r = x.e.rates;
  return `drop ${perSecond(r.drop)}/s, early_drop ${perSecond(r.earlyDrop)}/s, insert_failed ${perSecond(r.insertFailed)}/s over the last ${seconds(x)} s`;
};
const dropsEver = (x: Context): string => `since boot: drop=${x.e.totals.drop} early_drop=${x.e.totals.earlyDrop} insert_failed=${x.e.totals.insertFailed}`;

/** Is anything tracked here at all? */
export const inactive: Rule = (x) => {
  if (x.active) return undefined;
  return {
    id: 'inactive',
    severity: 'info',
    title: 'conntrack is inactive in this namespace',
    detail: 'no entry and every counter at 0: a namespace tracks nothing until a rule uses connection tracking (a ct match, NAT, a helper). Nothing here can fill the table; if stateful filtering is wanted, add such a rule.',
    fix: [x.cmd.inNs(`nft 'add table inet track; add chain inet track in { type filter hook input priority 0; }; add rule inet track in ct state established,related accept'`)],
  };
};

/** How full the table is: table-full, table-filling, or (where active) fill. */
export const fill: Rule = (x) => {
  const { count, max } = x.e;
  if (x.fill >= 0.9 || (x.fill >= 0.75 && x.droppingNow)) {
    return {
      id: 'table-full',
      severity: 'critical',
      title: x.fill >= 0.999 ? 'conntrack table is full' : 'conntrack table is nearly full',
      detail: `${count} of ${max} entries (${pct(x.fill)}); ${x.droppingNow ? `dropping now: ${dropsNow(x)}` : `no drops in the last ${seconds(x)} s`} (${dropsEver(x)}). New connections fail while old ones keep working ("nf_conntrack: table full, dropping packet"). Raise the max to ${adviceText(x)}, and remove what fills it (the findings below).${hostNote(x)}`,
      ...raiseMax(x),
    };
  }
  if (x.fill >= 0.75) {
    return {
      id: 'table-filling',
      severity: 'warning',
      title: 'conntrack table is filling up',
      detail: `${count} of ${max} entries (${pct(x.fill)}). Raise the max to ${adviceText(x)}.${hostNote(x)}`,
      ...raiseMax(x),
    };
  }
  if (!x.active) return undefined;
  return { id: 'fill', severity: 'ok', title: 'table has room', detail: `${count} of ${max} entries (${pct(x.fill)}).`, fix: [] };
};

/** Drops now with room in the table (drops-now), or only in the past (drops-past). */
export const drops: Rule = (x) => {
  if (x.droppingNow && x.fill < 0.75) {
    return {
      id: 'drops-now',
      severity: 'critical',
      title: 'conntrack is dropping packets now',
      detail: `${dropsNow(x)}, with the table at ${pct(x.fill)}: inserts fail (clashes, a table that was full a moment ago, or memory pressure). ${dropsEver(x)}.`,
      fix: [x.cmd.inNs('conntrack -S'), x.cmd.inNs('ctmon top')],
    };
  }
  if (x.droppingNow || !x.droppedEver) return undefined;
  return {
    id: 'drops-past',
    severity: 'info',
    title: 'conntrack dropped packets earlier, not now',
    detail: `none in the last ${seconds(x)} s; ${dropsEver(x)}. The counters only grow: compare with \`conntrack -S\` later, or watch the rates with ctmon doctor --interval.`,
    fix: [],
  };
};

/**
 * This namespace's table-full lines in the kernel log. Newer kernels name the
 * namespace in the line; where they do not, the log is host-wide and its
 * lines count for the initial namespace only. Other namespaces' lines are
 * context (facts.kernelLog), never a finding.
 */
export const kernelLog: Rule = (x) => {
  const { log, namespace } = x.e;
  const named = log.thisNamespace !== null;
  const ours = named ? log.thisNamespace! : namespace.initial ? log.tableFull : 0;
  if (ours === 0) return undefined;
  const last = named ? log.lastThisNamespace : log.last;
  const recent = last !== undefined && x.e.atMs - Date.parse(last) < 600_000;
  const suppressed = log.suppressed ? `; up to ${log.suppressed} more lines were suppressed by the network rate limit (shared by all network messages)` : '';
  return {
    id: 'kernel-log',
    severity: recent ? (x.droppingNow || x.fill >= 0.9 ? 'critical' : 'warning') : 'info',
    title: `the kernel logged "table full, dropping packet" ${ours} time${ours > 1 ? 's' : ''}${named ? ' for this namespace' : ''}`,
    detail: `${ours} lines in the kernel log (${log.source})${last ? `, the last at ${last}` : ''}${suppressed}. ${recent ? 'Recent: the table overflowed within the last 10 minutes.' : 'None in the last 10 minutes.'} ${named ? 'The kernel names the namespace in each line.' : 'This kernel\'s lines name no namespace; the log is host-wide, so they are counted for the initial namespace only.'}`,
    fix: [x.cmd.kernelLog(named ? namespace.inode : null)],
  };
};

/** Where the kernel log's evidence went missing, when neither /dev/kmsg nor dmesg could be read. */
export const kernelLogUnavailable: Rule = (x) => {
  const { log } = x.e;
  if (log.source !== 'unavailable') return undefined;
  return {
    id: 'kernel-log-unavailable',
    severity: 'info',
    title: 'the kernel log cannot be read here: "table full" lines are neither counted nor ruled out',
    detail: `${log.error ?? 'neither /dev/kmsg nor dmesg could be read'}. The kernel logs "nf_conntrack: table full, dropping packet" to the host's log; a container sees it only with /dev/kmsg and CAP_SYSLOG. The rates above are measured all the same.`,
    fix: [`${x.cmd.kernelLog(null)}   # on the host`, '# or give the container the log: --device /dev/kmsg --cap-add SYSLOG (or --privileged)'],
  };
};

/** The max against the machine's memory (a risk factor: info until the table is busy). */
export const maxLow: Rule = (x) => {
  if (x.e.max >= x.advice.ramMax) return undefined;
  return {
    id: 'max-low',
    severity: busyRisk(x),
    title: 'nf_conntrack_max is low for this machine',
    detail: `max ${x.e.max}; with ${(x.e.memory.ramBytes / GIB).toFixed(1)} GiB of RAM about ${x.advice.ramMax} entries fit (~${ENTRIES_PER_GIB} per GiB). Advised: max ${adviceText(x)}.${hostNote(x)}`,
    ...raiseMax(x),
  };
};

/** Buckets for this max, as the running kernel sizes them. */
export const buckets: Rule = (x) => {
  const { max, buckets: n, kernel: { major, minor } } = x.e;
  if (!n || n >= bucketsFor(max, major, minor) / 2) return undefined;
  return {
    id: 'buckets',
    severity: busyRisk(x),
    title: 'too few hash buckets for the max',
    detail: `${n} buckets for max ${max}: a full table has chains of about ${((2 * max) / n).toFixed(0)} entries (each entry is hashed twice, original and reply), slowing every lookup. Linux ${major}.${minor} sizes buckets ${bucketsEqualMax(major, minor) ? 'equal to the max (since 5.15, commit d532bcd0b269)' : 'at a quarter of the max'}: advised max ${x.advice.max} with ${x.advice.buckets} buckets. nf_conntrack_buckets is writable only in the initial namespace; persist it as a module option.${hostNote(x)}`,
    ...raiseMax(x),
  };
};

/** An established timeout of a day or more (the kernel's own is 5 days). */
export const tcpEstablishedTimeout: Rule = (x) => {
  const est = x.e.settings.timeouts.nf_conntrack_tcp_timeout_established;
  if (!est || est.value < 86400) return undefined;
  return {
    id: 'tcp-established-timeout',
    severity: risk(x),
    title: `TCP established timeout is ${(est.value / 86400).toFixed(1)} days${est.value === est.default ? ' (the kernel default)' : ''}`,
    detail: `net.netfilter.nf_conntrack_tcp_timeout_established = ${est.value} s: a connection that went silent without FIN or RST (a peer gone, a NAT upstream that forgot it) holds its entry that long. ${x.fill >= 0.5 ? 'With the table this busy, lowering it frees entries.' : 'Harmless while the table has room; lower it before it fills.'} An hour keeps idle SSH sessions alive with keepalives.`,
    fix: x.cmd.setting('nf_conntrack_tcp_timeout_established', 3600),
    changes: [{ name: 'nf_conntrack_tcp_timeout_established', value: 3600, scope: 'namespace' }],
  };
};

/** Other timeouts above the kernel's defaults. */
export const timeoutsRaised: Rule = (x) => {
  const raised = Object.entries(x.e.settings.timeouts).filter(([name, t]) => name !== 'nf_conntrack_tcp_timeout_established' && t.value > t.default);
  if (!raised.length) return undefined;
  return {
    id: 'timeouts-raised',
    severity: busyRisk(x),
    title: `${raised.length} timeout${raised.length > 1 ? 's' : ''} above the kernel default`,
    detail: raised.map(([name, t]) => `${name} = ${t.value} s (default ${t.default})`).join('; ') + ': entries in those states stay longer than the kernel would keep them.',
    fix: raised.flatMap(([name, t]) => x.cmd.setting(name, t.default)),
    changes: raised.map(([name, t]) => ({ name, value: t.default, scope: 'namespace' as const })),
  };
};

export const tcpBeLiberal: Rule = (x) => {
  if (x.e.settings.tcpBeLiberal !== 1) return undefined;
  return {
    id: 'tcp-be-liberal',
    severity: 'info',
    title: 'nf_conntrack_tcp_be_liberal is on',
    detail: 'out-of-window TCP packets are accepted instead of marked INVALID: entries of broken or spoofed flows live on. It works around broken middleboxes; leave it on only if one needs it.',
    fix: [x.cmd.sysctl('nf_conntrack_tcp_be_liberal', 0)],
    changes: [{ name: 'nf_conntrack_tcp_be_liberal', value: 0, scope: 'namespace' }],
  };
};

/** The UDP destination that holds half the UDP entries or more, if one does. */
function udpService(x: Context): DestinationShare | undefined {
  const top = x.e.table.topDestinations.find((d) => d.protocol === 'udp');
  return top && top.entries / x.e.table.udp >= 0.5 ? top : undefined;
}
const udpFills = (x: Context): boolean => enough(x) && share(x, x.e.table.udp) >= 0.5;

/** UDP fills the table: shorter UDP timeouts, and notrack for the one service that fills it. */
export const udp: Rule = (x) => {
  if (!udpFills(x)) return undefined;
  const { table, settings } = x.e;
  const service = udpService(x);
  const port = service?.port;
  const fix = [
    x.cmd.sysctl('nf_conntrack_udp_timeout', 10), x.cmd.sysctl('nf_conntrack_udp_timeout_stream', 60),
    x.cmd.persist('nf_conntrack_udp_timeout', 10), x.cmd.persist('nf_conntrack_udp_timeout_stream', 60),
  ];
  if (port !== undefined) fix.push(...x.cmd.notrackUdp(port));
  return {
    id: 'udp',
    severity: risk(x),
    title: service ? `UDP to ${service.dst} fills the table (${pct(service.entries / table.sampled)})` : `UDP is ${pct(share(x, table.udp))} of the table`,
    detail: `${table.udp} of ${table.sampled} entries are UDP${service ? `, ${service.entries} of them to ${service.dst}` : ''}; each lives ${settings.timeouts.nf_conntrack_udp_timeout?.value ?? '?'} s unreplied-or-single-packet (nf_conntrack_udp_timeout) or ${settings.timeouts.nf_conntrack_udp_timeout_stream?.value ?? '?'} s once a stream (nf_conntrack_udp_timeout_stream). Shorter UDP timeouts free them sooner${port !== undefined ? `; a busy service such as DNS on port ${port} needs no tracking at all: exempt it with notrack` : ''}.`,
    fix,
    changes: [
      { name: 'nf_conntrack_udp_timeout', value: 10, scope: 'namespace' },
      { name: 'nf_conntrack_udp_timeout_stream', value: 60, scope: 'namespace' },
    ],
  };
};

/** Entries that never saw a reply: a SYN flood, a scan, or traffic to the dead. */
export const unassured: Rule = (x) => {
  const { table, settings } = x.e;
  const unassuredShare = share(x, table.unassured);
  if (!enough(x) || unassuredShare < 0.5) return undefined;
  const synShare = share(x, table.synUnassured);
  const half = synShare >= 0.25;
  const heavy = heavySources(x);
  const fix = half ? [x.cmd.sysctl('nf_conntrack_tcp_timeout_syn_sent', 30), x.cmd.sysctl('nf_conntrack_tcp_timeout_syn_recv', 30), x.cmd.persist('nf_conntrack_tcp_timeout_syn_sent', 30)] : [];
  if (half && settings.tcpLoose === 1) fix.push(x.cmd.sysctl('nf_conntrack_tcp_loose', 0) + '   # no entries from mid-stream packets (ACK scans); established flows are picked up only from their SYN');
  return {
    id: 'unassured',
    severity: risk(x),
    title: half ? `half-open TCP handshakes are ${pct(synShare)} of the table (a SYN flood or a scan?)` : `most entries are unassured (${pct(unassuredShare)})`,
    detail: `${table.unassured} of ${table.sampled} entries never saw traffic both ways${synShare ? `, ${table.synUnassured} of them TCP in SYN_SENT/SYN_RECV, each kept ${settings.timeouts.nf_conntrack_tcp_timeout_syn_sent?.value ?? '?'} s (nf_conntrack_tcp_timeout_syn_sent)` : ''}; ${heavy.length ? `from ${heavy.map((s) => `${s.src} (${pct(s.share)})`).join(', ')}` : 'from many sources'}. The kernel evicts unassured entries first when full (early_drop), but a flood keeps refilling them.`,
    fix: [...fix, ...heavy.map((s) => x.cmd.deleteSource(s.src))],
    changes: half ? [
      { name: 'nf_conntrack_tcp_timeout_syn_sent', value: 30, scope: 'namespace' },
      { name: 'nf_conntrack_tcp_timeout_syn_recv', value: 30, scope: 'namespace' },
    ] : [],
  };
};

export const timeWait: Rule = (x) => {
  const timeWaitShare = share(x, x.e.table.timeWait);
  if (!enough(x) || timeWaitShare < 0.3) return undefined;
  return {
    id: 'time-wait',
    severity: risk(x),
    title: `TIME_WAIT is ${pct(timeWaitShare)} of the table`,
    detail: `${x.e.table.timeWait} entries of closed TCP connections wait ${x.e.settings.timeouts.nf_conntrack_tcp_timeout_time_wait?.value ?? '?'} s (nf_conntrack_tcp_timeout_time_wait): many short connections (health checks, HTTP without keep-alive) each leave one.`,
    fix: x.cmd.setting('nf_conntrack_tcp_timeout_time_wait', 30),
    changes: [{ name: 'nf_conntrack_tcp_timeout_time_wait', value: 30, scope: 'namespace' }],
  };
};

/** One source with a fifth of the table, or five with half of it. */
export const topSources: Rule = (x) => {
  const top = x.e.table.topSources[0];
  const top5Share = x.e.table.topSources.slice(0, 5).reduce((a, s) => a + s.share, 0);
  if (!enough(x) || !top || (top.share < 0.2 && top5Share < 0.5)) return undefined;
  const heavy = heavySources(x);
  return {
    id: 'top-sources',
    severity: risk(x),
    title: heavy.length > 1 ? `${heavy.length} sources hold ${pct(heavy.reduce((a, s) => a + s.share, 0))} of the table` : `one source holds ${pct(top.share)} of the table`,
    detail: heavy.map((s) => `${s.src}: ${s.entries} entries (${pct(s.share)})`).join('; '),
    fix: heavy.map((s) => x.cmd.deleteSourceOrCtmon(s.src)),
  };
};

/** One destination with half the table (a NAT router's clients are the sources), unless the udp finding already names it. */
export const topDestinations: Rule = (x) => {
  const top = x.e.table.topDestinations[0];
  if (!enough(x) || !top || top.share < 0.5) return undefined;
  if (udpFills(x) && udpService(x) === top) return undefined;
  return {
    id: 'top-destinations',
    severity: risk(x),
    title: `one destination holds ${pct(top.share)} of the table: ${top.protocol} ${top.dst}`,
    detail: x.e.table.topDestinations.filter((d) => d.share >= 0.05).slice(0, 5).map((d) => `${d.protocol} ${d.dst}: ${d.entries} entries (${pct(d.share)})`).join('; ') + '. On a NAT router the clients are the sources; the service they all reach is here.',
    fix: [x.cmd.listDestination(top.protocol, top.address, top.port)],
  };
};

/** INVALID packets now. */
export const invalid: Rule = (x) => {
  const r = x.e.rates.invalid;
  if (r <= 0) return undefined;
  return {
    id: 'invalid',
    severity: r >= 100 ? 'warning' : 'info',
    title: `INVALID packets now: ${perSecond(r)}/s`,
    detail: `${perSecond(r)} packets/s could not be tracked (${x.e.totals.invalid} since boot); drop them before they reach stateful rules.`,
    fix: [x.cmd.inNs('nft add rule inet filter input ct state invalid drop') + '   # or: iptables -I INPUT -m conntrack --ctstate INVALID -j DROP'],
  };
};

/** Hash-table contention now. */
export const hashContention: Rule = (x) => {
  const r = x.e.rates;
  if (r.searchRestart < 100 && r.chainTooLong <= 0) return undefined;
  return {
    id: 'hash-contention',
    severity: busyRisk(x),
    title: 'hash table lookups are restarting',
    detail: `search_restart ${perSecond(r.searchRestart)}/s, chaintoolong ${perSecond(r.chainTooLong)}/s: lookups race with resizing or walk long chains. More buckets shorten the chains.`,
    ...raiseMax(x),
  };
};

/** The name no longer names the namespace diagnosed (judge() then strips every other finding's fixes). */
export const namespaceChanged: Rule = (x) => {
  const { name, inode, now } = x.e.namespace;
  if (now.state === 'same') return undefined;
  return {
    id: 'namespace-changed',
    severity: 'critical',
    title: `namespace ${name} was deleted${now.state === 'replaced' ? ' and created again' : ''} during the diagnosis`,
    detail: `These facts are of the namespace the handle held (inode ${inode}); ${name} now names ${now.state === 'replaced' ? `another one (inode ${now.current.inode})` : 'nothing'}. Nothing here fixes the namespace there now: diagnose it again.`,
    fix: [`ctmon doctor --netns ${name}`],
  };
};

/** Every rule, in the order its findings are reported. */
export const RULES: readonly Rule[] = [
  inactive, fill, drops, kernelLog, kernelLogUnavailable, maxLow, buckets, tcpEstablishedTimeout, timeoutsRaised, tcpBeLiberal,
  udp, unassured, timeWait, topSources, topDestinations, invalid, hashContention,
];

/**
 * Every finding the evidence supports. Where the namespace diagnosed is gone
 * from its name, no fix applies to the namespace there now: the findings
 * keep their facts and lose their fixes.
 */
export function judge(x: Context): Finding[] {
  const findings = RULES.map((rule) => rule(x)).filter((d) => d !== undefined).map((d): Finding => ({ changes: [], ...d }));
  const changed = namespaceChanged(x);
  if (!changed) return findings;
  return [...findings.map((f) => ({ ...f, fix: [], changes: [] })), { changes: [], ...changed }];
}
