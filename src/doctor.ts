/**
 * diagnose(): the seeds' table-full checklist as a library function, shared
 * by `ctmon doctor` and applications. Each finding carries a severity and
 * the exact commands that fix it, for the handle's namespace.
 */
import { totalmem } from 'node:os';
import type { Conntrack, Stats } from './conntrack.js';

export type Severity = 'ok' | 'info' | 'warning' | 'critical';

export interface Finding {
  id: string;
  severity: Severity;
  title: string;
  detail: string;
  /** Commands that fix it, to run as root. */
  fix: string[];
}

export interface SourceShare {
  src: string;
  entries: number;
  share: number;
}

export interface Diagnosis {
  status: 'healthy' | 'warning' | 'critical';
  /** 0 healthy, 1 warnings, 2 critical: the exit code of `ctmon doctor`. */
  exitCode: 0 | 1 | 2;
  findings: Finding[];
  facts: {
    count: number;
    max: number;
    fill: number;
    buckets: number;
    drops: { drop: number; earlyDrop: number; insertFailed: number };
    invalid: number;
    tcpEstablishedTimeout: number | undefined;
    sampled: number;
    unassured: number;
    topSources: SourceShare[];
    memoryBytes: number;
  };
}

export interface DiagnoseOptions {
  /** RAM to size nf_conntrack_max against; default os.totalmem(). */
  memoryBytes?: number;
  /** Entries to read for the unassured and top-source checks; default all. */
  sampleLimit?: number;
}

/** The seeds' rule of thumb: about 65,536 entries per GiB of RAM. */
export const ENTRIES_PER_GIB = 65536;
const GIB = 1024 ** 3;

function sum(stats: Stats, key: 'drop' | 'earlyDrop' | 'insertFailed' | 'invalid'): number {
  return stats.perCpu.reduce((acc, c) => acc + c[key], 0);
}

const RANK: Record<Severity, number> = { ok: 0, info: 1, warning: 2, critical: 3 };

export async function diagnose(ct: Conntrack, options: DiagnoseOptions = {}): Promise<Diagnosis> {
  const stats = await ct.stats();
  const memoryBytes = options.memoryBytes ?? totalmem();
  const prefix = ct.netns ? `ip netns exec ${ct.netns} ` : '';
  const tcpEstablishedTimeout = await ct.readSysctl('nf_conntrack_tcp_timeout_established').then(Number, () => undefined);

  // One pass over the table: assured share and sources.
  const bySource = new Map<string, number>();
  let sampled = 0;
  let unassured = 0;
  const limit = options.sampleLimit ?? Infinity;
  for await (const e of ct.dump()) {
    sampled++;
    if (!e.status.includes('ASSURED')) unassured++;
    bySource.set(e.original.src, (bySource.get(e.original.src) ?? 0) + 1);
    if (sampled >= limit) break;
  }
  const topSources = [...bySource.entries()]
    .sort((a, b) => b[1] - a[1])
    .slice(0, 10)
    .map(([src, entries]) => ({ src, entries, share: sampled ? entries / sampled : 0 }));

  const findings: Finding[] = [];
  const fill = stats.max ? stats.count / stats.max : 0;
  const drops = { drop: sum(stats, 'drop'), earlyDrop: sum(stats, 'earlyDrop'), insertFailed: sum(stats, 'insertFailed') };
  const dropped = drops.drop + drops.earlyDrop + drops.insertFailed;
  const recommendedMax = Math.max(65536, Math.round((memoryBytes / GIB) * ENTRIES_PER_GIB));
  const raiseTo = Math.max(recommendedMax, 2 ** Math.ceil(Math.log2(Math.max(stats.max, 1) * 2)));
  const pct = (x: number): string => `${(x * 100).toFixed(1)}%`;

  // 1. Fill and drops.
  if (fill >= 0.9 || (fill >= 0.75 && dropped > 0)) {
    findings.push({
      id: 'table-full',
      severity: 'critical',
      title: fill >= 0.999 ? 'conntrack table is full' : 'conntrack table is nearly full',
      detail: `${stats.count} of ${stats.max} entries (${pct(fill)}); ${dropped ? `packets were dropped: drop=${drops.drop} early_drop=${drops.earlyDrop} insert_failed=${drops.insertFailed}` : 'no drops counted yet'}. New connections fail while old ones keep working ("nf_conntrack: table full, dropping packet").`,
      fix: [`sysctl -w net.netfilter.nf_conntrack_max=${raiseTo}`, `echo 'net.netfilter.nf_conntrack_max = ${raiseTo}' >> /etc/sysctl.d/90-conntrack.conf`],
    });
  } else if (fill >= 0.75) {
    findings.push({ id: 'table-filling', severity: 'warning', title: 'conntrack table is filling up', detail: `${stats.count} of ${stats.max} entries (${pct(fill)}).`, fix: [`sysctl -w net.netfilter.nf_conntrack_max=${raiseTo}`] });
  } else if (dropped > 0) {
    findings.push({ id: 'drops', severity: 'warning', title: 'conntrack dropped packets earlier', detail: `drop=${drops.drop} early_drop=${drops.earlyDrop} insert_failed=${drops.insertFailed} since boot, although the table is at ${pct(fill)} now.`, fix: [`${prefix}conntrack -S`] });
  } else {
    findings.push({ id: 'fill', severity: 'ok', title: 'table has room', detail: `${stats.count} of ${stats.max} entries (${pct(fill)}), no drops counted.`, fix: [] });
  }

  // 2. Max against memory.
  if (stats.max < recommendedMax) {
    findings.push({
      id: 'max-low',
      severity: fill >= 0.5 ? 'warning' : 'info',
      title: 'nf_conntrack_max is low for this machine',
      detail: `max ${stats.max}; with ${(memoryBytes / GIB).toFixed(1)} GiB of RAM about ${recommendedMax} entries fit (~${ENTRIES_PER_GIB} per GiB).`,
      fix: [`sysctl -w net.netfilter.nf_conntrack_max=${recommendedMax}`, `sysctl -w net.netfilter.nf_conntrack_buckets=${Math.round(recommendedMax / 4)}`],
    });
  }

  // 3. Buckets about max/4.
  const idealBuckets = Math.round(stats.max / 4);
  if (stats.buckets && (stats.buckets < idealBuckets / 2 || stats.buckets > idealBuckets * 2)) {
    findings.push({
      id: 'buckets',
      severity: stats.buckets < idealBuckets / 2 ? 'warning' : 'info',
      title: 'hash buckets far from max/4',
      detail: `${stats.buckets} buckets for max ${stats.max} (about ${idealBuckets} recommended): ${stats.buckets < idealBuckets / 2 ? 'long chains slow every lookup' : 'memory spent on empty buckets'}.`,
      fix: [`sysctl -w net.netfilter.nf_conntrack_buckets=${idealBuckets}`],
    });
  }

  // 4. TCP established timeout.
  if (tcpEstablishedTimeout !== undefined && tcpEstablishedTimeout >= 86400) {
    findings.push({
      id: 'tcp-established-timeout',
      severity: fill >= 0.5 ? 'critical' : 'warning',
      title: 'TCP established timeout is days long',
      detail: `net.netfilter.nf_conntrack_tcp_timeout_established = ${tcpEstablishedTimeout} s (${(tcpEstablishedTimeout / 86400).toFixed(1)} days): idle or half-dead connections hold entries that long; an hour is usually enough.`,
      fix: [`${prefix}sysctl -w net.netfilter.nf_conntrack_tcp_timeout_established=3600`, `echo 'net.netfilter.nf_conntrack_tcp_timeout_established = 3600' >> /etc/sysctl.d/90-conntrack.conf`],
    });
  }

  // 5. Unassured share (flood or scan).
  const unassuredShare = sampled ? unassured / sampled : 0;
  if (sampled >= 1000 && unassuredShare >= 0.5) {
    findings.push({
      id: 'unassured',
      severity: fill >= 0.75 ? 'critical' : 'warning',
      title: 'most entries are unassured (a flood or a scan?)',
      detail: `${unassured} of ${sampled} entries (${pct(unassuredShare)}) never saw traffic both ways; the kernel evicts these first when full (early_drop), but a flood keeps refilling them.`,
      fix: [`${prefix}conntrack -L | grep -v ASSURED | head`, `${prefix}sysctl -w net.netfilter.nf_conntrack_tcp_timeout_syn_sent=30`],
    });
  }

  // 6. Sources holding the table.
  const top = topSources[0];
  const top5Share = topSources.slice(0, 5).reduce((a, s) => a + s.share, 0);
  if (sampled >= 1000 && top && (top.share >= 0.2 || top5Share >= 0.5)) {
    const heavy = topSources.filter((s) => s.share >= 0.05).slice(0, 5);
    findings.push({
      id: 'top-sources',
      severity: fill >= 0.75 ? 'critical' : 'warning',
      title: heavy.length > 1 ? `${heavy.length} sources hold ${pct(heavy.reduce((a, s) => a + s.share, 0))} of the table` : `one source holds ${pct(top.share)} of the table`,
      detail: heavy.map((s) => `${s.src}: ${s.entries} entries (${pct(s.share)})`).join('; '),
      fix: heavy.map((s) => `${prefix}conntrack -D --orig-src ${s.src}   # or: ctmon delete --src ${s.src}${ct.netns ? ` --netns ${ct.netns}` : ''}`),
    });
  }

  // 7. INVALID traffic.
  const invalid = sum(stats, 'invalid');
  if (invalid > 0) {
    findings.push({
      id: 'invalid',
      severity: invalid > 1000 ? 'warning' : 'info',
      title: 'INVALID packets counted',
      detail: `${invalid} packets could not be tracked (invalid); drop them before they reach stateful rules.`,
      fix: [`${prefix}nft add rule inet filter input ct state invalid drop   # or: iptables -I INPUT -m conntrack --ctstate INVALID -j DROP`],
    });
  }

  const worst = findings.reduce<Severity>((w, f) => (RANK[f.severity] > RANK[w] ? f.severity : w), 'ok');
  const exitCode = worst === 'critical' ? 2 : worst === 'warning' ? 1 : 0;
  return {
    status: exitCode === 2 ? 'critical' : exitCode === 1 ? 'warning' : 'healthy',
    exitCode,
    findings,
    facts: {
      count: stats.count, max: stats.max, fill, buckets: stats.buckets, drops, invalid, tcpEstablishedTimeout,
      sampled, unassured, topSources, memoryBytes,
    },
  };
}
