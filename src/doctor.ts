/**
 * diagnose(): the answer to "nf_conntrack: table full, dropping packet", on
 * evidence. It samples the kernel's counters twice (rates now, not totals
 * since boot), reads the kernel log for the table-full message, walks the
 * table once for what fills it, compares every timeout with the running
 * kernel's defaults, and prices "raise the max" with the entry size the slab
 * allocator reports. Risk factors that hurt nothing yet are `info`; they rise
 * to `warning`/`critical` with how full the table is and whether packets are
 * being dropped now. Each finding carries the commands that fix it, for the
 * namespace it is about, and the sysctl changes `--fix --yes` may apply.
 */
import { readFileSync } from 'node:fs';
import { release, totalmem } from 'node:os';
import { checkKnownKeys, checkOptions, describe as describeValue, own, toList } from './check.js';
import { counterTotals, type Conntrack, type CounterTotals, type NamespaceState } from './conntrack.js';
import { ConntrackError } from './errors.js';
import { readKernelLog, type KernelLogFacts, type NamespaceIdentity } from './kernel-log.js';
import { TableTally, type TableFacts } from './tally.js';

export type { DestinationShare, SourceShare, TableFacts } from './tally.js';

export type Severity = 'ok' | 'info' | 'warning' | 'critical';

/** Where a setting lives: per network namespace, or host-wide (writable only in the initial namespace). */
export type Scope = 'namespace' | 'host';

/** One sysctl a fix changes (net.netfilter.NAME = value). */
export interface SysctlChange {
  name: string;
  value: number;
  scope: Scope;
}

export interface Finding {
  id: string;
  severity: Severity;
  title: string;
  detail: string;
  /** Commands that fix it, to run as root, for the namespace the finding is about. */
  fix: string[];
  /** The sysctl changes among them, for `ctmon doctor --fix --yes`. */
  changes: SysctlChange[];
}

export interface Rates {
  /** Seconds between the two samples. */
  intervalSeconds: number;
  drop: number;
  earlyDrop: number;
  insertFailed: number;
  invalid: number;
  searchRestart: number;
  clashResolve: number;
  chainTooLong: number;
}

export interface Diagnosis {
  status: 'healthy' | 'warning' | 'critical';
  /** 0, 1 (a warning at or above failOn), 2 (critical): the exit code of `ctmon doctor`. */
  exitCode: 0 | 1 | 2;
  findings: Finding[];
  /** Finding ids left out by `ignore`. */
  ignored: string[];
  facts: {
    /**
     * `inode`: the namespace diagnosed (the one the handle holds). `now`: what
     * its name names at the end: `replaced` or `gone` when the namespace was
     * deleted during the diagnosis (finding namespace-changed).
     */
    namespace: { name: string | null; initial: boolean; inode: number; now: NamespaceState['state'] };
    kernel: { release: string; major: number; minor: number };
    /** false when nothing has ever been tracked here: no entry, every counter 0. */
    active: boolean;
    count: number;
    max: number;
    fill: number;
    buckets: number;
    /** Counters since boot (context; `rates` is now). */
    totals: CounterTotals;
    rates: Rates;
    /**
     * The kernel log. `attributed`: its table-full lines are counted against
     * this namespace, because they name it (newer kernels) or, where they
     * name none, because this is the initial namespace.
     */
    kernelLog: KernelLogFacts & { scope: 'host'; attributed: boolean };
    table: TableFacts;
    /** Every nf_conntrack timeout: its value and the running kernel's default, in seconds. */
    timeouts: Record<string, { value: number; default: number }>;
    tcpLoose: number | null;
    tcpBeLiberal: number | null;
    memory: {
      ramBytes: number;
      /** Object size of the nf_conntrack slab cache (/proc/slabinfo), null where unreadable. */
      entryBytes: number | null;
      /** Bytes per hash bucket (one pointer). */
      bucketBytes: number;
    };
    /** The max and bucket count this report advises, one consistent pair. */
    advice: { max: number; buckets: number; costBytes: number | null };
  };
}

export interface DiagnoseOptions {
  /** Seconds between the two counter samples the rates come from (default 1). */
  intervalSeconds?: number;
  /** RAM to size nf_conntrack_max against; default os.totalmem(). */
  memoryBytes?: number;
  /** Entries to read for the table breakdown; default all. */
  sampleLimit?: number;
  /** The lowest severity that makes exitCode non-zero: 'warning' (default) or 'critical'. */
  failOn?: 'warning' | 'critical';
  /** Finding ids to leave out of the verdict. */
  ignore?: readonly string[];
}

/** The usual rule of thumb, and the kernel's own default sizing: about 65,536 entries per GiB of RAM. */
export const ENTRIES_PER_GIB = 65536;
const GIB = 1024 ** 3;
const MIB = 1024 ** 2;
const BUCKET_BYTES = 8;

/** The kernel's default timeouts (seconds). udp_timeout_stream became 120 in Linux 6.0 (180 before). */
export function defaultTimeouts(major: number): Record<string, number> {
  return {
    nf_conntrack_tcp_timeout_syn_sent: 120,
    nf_conntrack_tcp_timeout_syn_recv: 60,
    nf_conntrack_tcp_timeout_established: 432000,
    nf_conntrack_tcp_timeout_fin_wait: 120,
    nf_conntrack_tcp_timeout_close_wait: 60,
    nf_conntrack_tcp_timeout_last_ack: 30,
    nf_conntrack_tcp_timeout_time_wait: 120,
    nf_conntrack_tcp_timeout_close: 10,
    nf_conntrack_tcp_timeout_max_retrans: 300,
    nf_conntrack_tcp_timeout_unacknowledged: 300,
    nf_conntrack_udp_timeout: 30,
    nf_conntrack_udp_timeout_stream: major >= 6 ? 120 : 180,
    nf_conntrack_icmp_timeout: 30,
    nf_conntrack_icmpv6_timeout: 30,
    nf_conntrack_generic_timeout: 600,
  };
}

/**
 * Buckets for a given max, as the running kernel's documentation sizes them.
 * Since Linux 5.15 (d532bcd0b269, "sanitize table size default settings")
 * the default max equals the bucket count, because every entry is hashed
 * twice (original and reply): a full table then has chains of 2. Before it,
 * the default max was 4 x buckets (chains of 8 at full).
 */
export function bucketsFor(max: number, major: number, minor: number): number {
  return bucketsEqualMax(major, minor) ? max : Math.max(1024, Math.round(max / 4));
}

/** Whether the kernel sizes buckets equal to the max (Linux 5.15 and later, d532bcd0b269). */
function bucketsEqualMax(major: number, minor: number): boolean {
  return major > 5 || (major === 5 && minor >= 15);
}

/** The running kernel's version (os.release(), e.g. '6.18.44-...'). */
export function kernelVersion(r: string = release()): { major: number; minor: number } {
  const m = /^(\d+)\.(\d+)/.exec(r);
  return { major: Number(m?.[1] ?? 0), minor: Number(m?.[2] ?? 0) };
}

/** The nf_conntrack slab object size, from /proc/slabinfo (root only). */
function slabEntryBytes(): number | null {
  try {
    const line = readFileSync('/proc/slabinfo', 'utf8').split('\n').find((l) => /^nf_conntrack\s/.test(l));
    const size = line ? Number(line.trim().split(/\s+/)[3]) : NaN;
    return Number.isInteger(size) && size > 0 ? size : null;
  } catch {
    return null;
  }
}

/**
 * Whether the handle's namespace is the initial one: the only namespace
 * where the host-wide nf_conntrack_max is writable (the kernel makes it
 * read-only in every other). Unlike comparing with /proc/1/ns/net, this
 * works in a container that cannot see PID 1.
 */
async function isInitialNamespace(ct: Conntrack): Promise<boolean> {
  return ct.sysctlWritable('nf_conntrack_max').catch(() => false);
}

/**
 * The handle's namespace as newer kernels name it in "table full in netns N":
 * the nsfs inode of the namespace the handle holds (not of what its name
 * names now), and since when it has that number (the initial namespace's is
 * never reused).
 */
function namespaceIdentity(ct: Conntrack, initial: boolean): NamespaceIdentity {
  return { inode: ct.namespaceId.inode, sinceMs: initial ? 0 : ct.namespaceId.sinceMs - 1000 };
}

const RANK: Record<Severity, number> = { ok: 0, info: 1, warning: 2, critical: 3 };
const DIAGNOSE_KEYS = new Set(['intervalSeconds', 'memoryBytes', 'sampleLimit', 'failOn', 'ignore']);

/** Validated copies of the options (own properties only: a polluted prototype changes nothing). */
function readOptions(input: unknown): DiagnoseOptions {
  const o = checkOptions(input, 'diagnose');
  checkKnownKeys(o, DIAGNOSE_KEYS, 'diagnose', 'option');
  const positive = (name: string, max: number): number | undefined => {
    const v = own(o, name);
    if (v !== undefined && !(typeof v === 'number' && Number.isFinite(v) && v > 0 && v <= max)) {
      throw ConntrackError.invalid('diagnose', `${name} must be a number above 0 and at most ${max}, got ${describeValue(v)}`);
    }
    return v as number | undefined;
  };
  const out: DiagnoseOptions = {};
  const intervalSeconds = positive('intervalSeconds', 3600);
  const memoryBytes = positive('memoryBytes', Number.MAX_SAFE_INTEGER);
  const sampleLimit = positive('sampleLimit', Number.MAX_SAFE_INTEGER);
  if (intervalSeconds !== undefined) out.intervalSeconds = intervalSeconds;
  if (memoryBytes !== undefined) out.memoryBytes = memoryBytes;
  if (sampleLimit !== undefined) out.sampleLimit = sampleLimit;
  const failOn = own(o, 'failOn');
  if (failOn !== undefined && failOn !== 'warning' && failOn !== 'critical') {
    throw ConntrackError.invalid('diagnose', `failOn must be 'warning' or 'critical', got ${describeValue(failOn)}`);
  }
  if (failOn !== undefined) out.failOn = failOn;
  const ignore = own(o, 'ignore');
  if (ignore !== undefined) {
    const list = toList(ignore);
    if (!Array.isArray(ignore) || !list.every((i) => typeof i === 'string')) throw ConntrackError.invalid('diagnose', `ignore must be an array of finding ids, got ${describeValue(ignore)}`);
    out.ignore = list as string[];
  }
  return out;
}

/** One walk of the table (at most `limit` entries) into a TableTally. */
async function walkTable(ct: Conntrack, limit: number): Promise<TableFacts> {
  const tally = new TableTally();
  let complete = true;
  for await (const e of ct.dump()) {
    if (tally.entries >= limit) {
      complete = false;
      break;
    }
    tally.add(e);
  }
  return tally.facts(complete);
}

async function readNumber(ct: Conntrack, name: string): Promise<number | null> {
  try {
    const n = Number(await ct.readSysctl(name));
    return Number.isFinite(n) ? n : null;
  } catch {
    return null;
  }
}

export async function diagnose(ct: Conntrack, options: DiagnoseOptions = {}): Promise<Diagnosis> {
  return diagnoseWith(ct, options, walkTable);
}

/**
 * diagnose() with the table's facts from elsewhere: the exporter passes its
 * live tally instead of walking a million entries every time.
 * @internal
 */
export async function diagnoseWith(
  ct: Conntrack,
  input: DiagnoseOptions,
  tableFacts: (ct: Conntrack, limit: number) => Promise<TableFacts>,
  signal?: AbortSignal,
): Promise<Diagnosis> {
  const options = readOptions(input);
  const intervalMs = (options.intervalSeconds ?? 1) * 1000;
  const kernelRelease = release();
  const { major, minor } = kernelVersion(kernelRelease);
  const initial = await isInitialNamespace(ct);
  const memoryBytes = options.memoryBytes ?? totalmem();

  // The walk runs during the sampling interval; the second sample waits for both.
  const first = await ct.stats();
  const t0 = Date.now();
  const walk = tableFacts(ct, options.sampleLimit ?? Infinity);
  const defaults = defaultTimeouts(major);
  const settings = Promise.all([
    ...Object.keys(defaults).map((name) => readNumber(ct, name)),
    readNumber(ct, 'nf_conntrack_tcp_loose'),
    readNumber(ct, 'nf_conntrack_tcp_be_liberal'),
  ]);
  const identity = namespaceIdentity(ct, initial);
  const logRead = readKernelLog(identity);
  await new Promise<void>((resolve, reject) => {
    const stop = (): void => {
      clearTimeout(timer);
      reject(new ConntrackError('ECANCELED', 'diagnose', 'diagnose: cancelled'));
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', stop);
      resolve();
    }, intervalMs);
    if (signal?.aborted) stop();
    else signal?.addEventListener('abort', stop, { once: true });
  });
  const [table, values, log, now] = await Promise.all([walk, settings, logRead, ct.namespaceState()]);
  const stats = await ct.stats();
  const seconds = Math.max(0.001, (Date.now() - t0) / 1000);

  const before = counterTotals(first);
  const totals = counterTotals(stats);
  const rate = (k: keyof CounterTotals): number => Math.max(0, totals[k] - before[k]) / seconds;
  const rates: Rates = {
    intervalSeconds: seconds, drop: rate('drop'), earlyDrop: rate('earlyDrop'), insertFailed: rate('insertFailed'), invalid: rate('invalid'),
    searchRestart: rate('searchRestart'), clashResolve: rate('clashResolve'), chainTooLong: rate('chainTooLong'),
  };
  const timeouts: Diagnosis['facts']['timeouts'] = {};
  Object.keys(defaults).forEach((name, i) => {
    const v = values[i];
    if (v !== null && v !== undefined) timeouts[name] = { value: v, default: defaults[name]! };
  });
  const tcpLoose = values.at(-2) ?? null;
  const tcpBeLiberal = values.at(-1) ?? null;
  const entryBytes = slabEntryBytes();

  const fill = stats.max ? stats.count / stats.max : 0;
  const droppingNow = rates.drop + rates.earlyDrop + rates.insertFailed > 0;
  const droppedEver = totals.drop + totals.earlyDrop + totals.insertFailed > 0;
  const active = stats.count > 0 || table.sampled > 0 || Object.values(totals).some((n) => n > 0);
  /** A risk factor's severity: by how full the table is and whether it drops now. */
  const risk = (): Severity => (droppingNow || fill >= 0.9 ? 'critical' : fill >= 0.5 ? 'warning' : 'info');
  const pct = (x: number): string => `${(x * 100).toFixed(1)}%`;
  const perSecond = (x: number): string => (x >= 10 ? x.toFixed(0) : x.toFixed(1));

  // Commands for the handle's namespace; host-wide ones run in the initial namespace.
  const nsName = ct.netns ?? null;
  const inNs = (cmd: string): string => {
    if (!nsName || initial) return cmd;
    return nsName.includes('/') ? `nsenter --net=${nsName} ${cmd}` : `ip netns exec ${nsName} ${cmd}`;
  };
  const nsSysctl = (name: string, value: number): string => inNs(`sysctl -w net.netfilter.${name}=${value}`);
  const persistNs = (name: string, value: number): string =>
    initial
      ? `echo 'net.netfilter.${name} = ${value}' >> /etc/sysctl.d/90-conntrack.conf`
      : `# persist: add \`${nsSysctl(name, value)}\` to whatever creates namespace ${nsName} (its setup script, CNI plugin or unit); /etc/sysctl.d applies to the initial namespace only`;

  // One consistent pair of max and buckets, priced with the slab's entry size.
  const ramMax = Math.max(65536, Math.round((memoryBytes / GIB) * ENTRIES_PER_GIB));
  const wanted = Math.max(ramMax, stats.max * 2, 2 ** Math.ceil(Math.log2(Math.max(1, stats.count) * 2)));
  const adviseMax = 2 ** Math.ceil(Math.log2(wanted));
  const adviseBuckets = bucketsFor(adviseMax, major, minor);
  const cost = (max: number, buckets: number): number | null => (entryBytes === null ? null : max * entryBytes + buckets * BUCKET_BYTES);
  const costBytes = cost(adviseMax, adviseBuckets);
  const costText = costBytes === null ? '' : ` (at most ${(costBytes / MIB).toFixed(0)} MiB when full: ${entryBytes} bytes per entry in the nf_conntrack slab, ${BUCKET_BYTES} per bucket)`;
  const hostMaxFix = [
    `sysctl -w net.netfilter.nf_conntrack_max=${adviseMax}`,
    `sysctl -w net.netfilter.nf_conntrack_buckets=${adviseBuckets}`,
    `echo 'net.netfilter.nf_conntrack_max = ${adviseMax}' >> /etc/sysctl.d/90-conntrack.conf`,
    `echo 'options nf_conntrack hashsize=${adviseBuckets}' > /etc/modprobe.d/nf_conntrack.conf   # buckets persist as a module option`,
  ];
  const hostNote = initial ? '' : ' nf_conntrack_max and nf_conntrack_buckets are host-wide: run these on the host (initial namespace), where they apply to every namespace.';
  const maxChanges: SysctlChange[] = [
    { name: 'nf_conntrack_max', value: adviseMax, scope: 'host' },
    { name: 'nf_conntrack_buckets', value: adviseBuckets, scope: 'host' },
  ];

  const findings: Finding[] = [];
  const add = (f: Omit<Finding, 'changes'> & { changes?: SysctlChange[] }): void => void findings.push({ changes: [], ...f });

  // 1. Is anything tracked here at all?
  if (!active) {
    add({
      id: 'inactive',
      severity: 'info',
      title: 'conntrack is inactive in this namespace',
      detail: `no entry and every counter at 0: a namespace tracks nothing until a rule uses connection tracking (a ct match, NAT, a helper). Nothing here can fill the table; if stateful filtering is wanted, add such a rule.`,
      fix: [inNs(`nft 'add table inet track; add chain inet track in { type filter hook input priority 0; }; add rule inet track in ct state established,related accept'`)],
    });
  }

  // 2. Fill, and drops now versus drops in the past.
  const dropsNow = `drop ${perSecond(rates.drop)}/s, early_drop ${perSecond(rates.earlyDrop)}/s, insert_failed ${perSecond(rates.insertFailed)}/s over the last ${seconds.toFixed(1)} s`;
  const dropsEver = `since boot: drop=${totals.drop} early_drop=${totals.earlyDrop} insert_failed=${totals.insertFailed}`;
  if (fill >= 0.9 || (fill >= 0.75 && droppingNow)) {
    add({
      id: 'table-full',
      severity: 'critical',
      title: fill >= 0.999 ? 'conntrack table is full' : 'conntrack table is nearly full',
      detail: `${stats.count} of ${stats.max} entries (${pct(fill)}); ${droppingNow ? `dropping now: ${dropsNow}` : `no drops in the last ${seconds.toFixed(1)} s`} (${dropsEver}). New connections fail while old ones keep working ("nf_conntrack: table full, dropping packet"). Raise the max to ${adviseMax} with ${adviseBuckets} buckets${costText}, and remove what fills it (the findings below).${hostNote}`,
      fix: hostMaxFix,
      changes: maxChanges,
    });
  } else if (fill >= 0.75) {
    add({
      id: 'table-filling',
      severity: 'warning',
      title: 'conntrack table is filling up',
      detail: `${stats.count} of ${stats.max} entries (${pct(fill)}). Raise the max to ${adviseMax} with ${adviseBuckets} buckets${costText}.${hostNote}`,
      fix: hostMaxFix,
      changes: maxChanges,
    });
  } else if (active) {
    add({ id: 'fill', severity: 'ok', title: 'table has room', detail: `${stats.count} of ${stats.max} entries (${pct(fill)}).`, fix: [] });
  }
  if (droppingNow && fill < 0.75) {
    add({
      id: 'drops-now',
      severity: 'critical',
      title: 'conntrack is dropping packets now',
      detail: `${dropsNow}, with the table at ${pct(fill)}: inserts fail (clashes, a table that was full a moment ago, or memory pressure). ${dropsEver}.`,
      fix: [inNs('conntrack -S'), inNs('ctmon top')],
    });
  } else if (!droppingNow && droppedEver) {
    add({
      id: 'drops-past',
      severity: 'info',
      title: 'conntrack dropped packets earlier, not now',
      detail: `none in the last ${seconds.toFixed(1)} s; ${dropsEver}. The counters only grow: compare with \`conntrack -S\` later, or watch the rates with ctmon doctor --interval.`,
      fix: [],
    });
  }

  // 3. The kernel log. Newer kernels name the namespace in the line; where
  // they do not, the log is host-wide and counts only for the initial namespace.
  const named = log.thisNamespace !== null;
  const ours = named ? log.thisNamespace! : initial ? log.tableFull : 0;
  const oursLast = named ? log.lastThisNamespace : initial ? log.last : undefined;
  const kernelLog = { ...log, scope: 'host' as const, attributed: named || initial };
  const suppressedText = log.suppressed ? `; up to ${log.suppressed} more lines were suppressed by the network rate limit (shared by all network messages)` : '';
  if (ours > 0) {
    const recent = oursLast !== undefined && Date.now() - Date.parse(oursLast) < 600_000;
    add({
      id: 'kernel-log',
      severity: recent ? (droppingNow || fill >= 0.9 ? 'critical' : 'warning') : 'info',
      title: `the kernel logged "table full, dropping packet" ${ours} time${ours > 1 ? 's' : ''}${named ? ' for this namespace' : ''}`,
      detail: `${ours} lines in the kernel log (${log.source})${oursLast ? `, the last at ${oursLast}` : ''}${suppressedText}. ${recent ? 'Recent: the table overflowed within the last 10 minutes.' : 'None in the last 10 minutes.'} ${named ? 'The kernel names the namespace in each line.' : 'This kernel\'s lines name no namespace; the log is host-wide, so they are counted for the initial namespace only.'}`,
      fix: [named ? `dmesg -T | grep 'table full in netns ${identity?.inode}'` : 'dmesg -T | grep -i conntrack'],
    });
  } else if (log.tableFull > 0) {
    add({
      id: 'kernel-log-host',
      severity: 'info',
      title: 'the kernel log has table-full lines from other namespaces',
      detail: `${log.tableFull} "table full, dropping packet" lines${log.last ? `, the last at ${log.last}` : ''}${suppressedText}. ${named ? 'They name other namespaces, not this one.' : `This kernel's lines name no namespace and the log is host-wide, so they are not counted against ${nsName ? `namespace ${nsName}` : 'this namespace'}: its drop rates above are its own.`}`,
      fix: [named ? "dmesg -T | grep 'table full in netns'" : 'dmesg -T | grep -i conntrack'],
    });
  }

  // 4. Max against memory (a risk factor: info until the table is busy).
  if (stats.max < ramMax) {
    add({
      id: 'max-low',
      severity: fill >= 0.5 ? risk() : 'info',
      title: 'nf_conntrack_max is low for this machine',
      detail: `max ${stats.max}; with ${(memoryBytes / GIB).toFixed(1)} GiB of RAM about ${ramMax} entries fit (~${ENTRIES_PER_GIB} per GiB). Advised: max ${adviseMax} with ${adviseBuckets} buckets${costText}.${hostNote}`,
      fix: hostMaxFix,
      changes: maxChanges,
    });
  }

  // 5. Buckets for this max, as the running kernel sizes them.
  const idealBuckets = bucketsFor(stats.max, major, minor);
  if (stats.buckets && stats.buckets < idealBuckets / 2) {
    const chains = ((2 * stats.max) / stats.buckets).toFixed(0);
    add({
      id: 'buckets',
      severity: fill >= 0.5 ? risk() : 'info',
      title: 'too few hash buckets for the max',
      detail: `${stats.buckets} buckets for max ${stats.max}: a full table has chains of about ${chains} entries (each entry is hashed twice, original and reply), slowing every lookup. Linux ${major}.${minor} sizes buckets ${bucketsEqualMax(major, minor) ? 'equal to the max (since 5.15, commit d532bcd0b269)' : 'at a quarter of the max'}: advised max ${adviseMax} with ${adviseBuckets} buckets. nf_conntrack_buckets is writable only in the initial namespace; persist it as a module option.${hostNote}`,
      fix: hostMaxFix,
      changes: maxChanges,
    });
  }

  // 6. Timeouts against the kernel's defaults.
  const est = timeouts.nf_conntrack_tcp_timeout_established;
  if (est && est.value >= 86400) {
    add({
      id: 'tcp-established-timeout',
      severity: risk(),
      title: `TCP established timeout is ${(est.value / 86400).toFixed(1)} days${est.value === est.default ? ' (the kernel default)' : ''}`,
      detail: `net.netfilter.nf_conntrack_tcp_timeout_established = ${est.value} s: a connection that went silent without FIN or RST (a peer gone, a NAT upstream that forgot it) holds its entry that long. ${fill >= 0.5 ? 'With the table this busy, lowering it frees entries.' : 'Harmless while the table has room; lower it before it fills.'} An hour keeps idle SSH sessions alive with keepalives.`,
      fix: [nsSysctl('nf_conntrack_tcp_timeout_established', 3600), persistNs('nf_conntrack_tcp_timeout_established', 3600)],
      changes: [{ name: 'nf_conntrack_tcp_timeout_established', value: 3600, scope: 'namespace' }],
    });
  }
  const raised = Object.entries(timeouts).filter(([name, t]) => name !== 'nf_conntrack_tcp_timeout_established' && t.value > t.default);
  if (raised.length) {
    add({
      id: 'timeouts-raised',
      severity: fill >= 0.5 ? risk() : 'info',
      title: `${raised.length} timeout${raised.length > 1 ? 's' : ''} above the kernel default`,
      detail: raised.map(([name, t]) => `${name} = ${t.value} s (default ${t.default})`).join('; ') + ': entries in those states stay longer than the kernel would keep them.',
      fix: raised.flatMap(([name, t]) => [nsSysctl(name, t.default), persistNs(name, t.default)]),
      changes: raised.map(([name, t]) => ({ name, value: t.default, scope: 'namespace' as const })),
    });
  }
  if (tcpBeLiberal === 1) {
    add({
      id: 'tcp-be-liberal',
      severity: 'info',
      title: 'nf_conntrack_tcp_be_liberal is on',
      detail: 'out-of-window TCP packets are accepted instead of marked INVALID: entries of broken or spoofed flows live on. It works around broken middleboxes; leave it on only if one needs it.',
      fix: [nsSysctl('nf_conntrack_tcp_be_liberal', 0)],
      changes: [{ name: 'nf_conntrack_tcp_be_liberal', value: 0, scope: 'namespace' }],
    });
  }

  // 7. What fills the table (from the walk).
  const enough = table.sampled >= 1000;
  const share = (n: number): number => (table.sampled ? n / table.sampled : 0);
  const udpShare = share(table.udp);
  if (enough && udpShare >= 0.5) {
    const udpDest = table.topDestinations.filter((d) => d.protocol === 'udp');
    const service = udpDest[0] && udpDest[0].entries / table.udp >= 0.5 ? udpDest[0] : undefined;
    const port = service ? Number(/:(\d+)$/.exec(service.dst)?.[1]) : undefined;
    const ut = timeouts.nf_conntrack_udp_timeout;
    const uts = timeouts.nf_conntrack_udp_timeout_stream;
    const fix = [nsSysctl('nf_conntrack_udp_timeout', 10), nsSysctl('nf_conntrack_udp_timeout_stream', 60), persistNs('nf_conntrack_udp_timeout', 10), persistNs('nf_conntrack_udp_timeout_stream', 60)];
    if (port !== undefined && Number.isInteger(port)) {
      // notrack before conntrack sees the packet: a raw-priority chain (nftables) or the raw table (iptables), both directions.
      fix.push(
        inNs(`nft 'add table inet ctmon_notrack; add chain inet ctmon_notrack pre { type filter hook prerouting priority raw; }; add chain inet ctmon_notrack out { type filter hook output priority raw; }; add rule inet ctmon_notrack pre udp dport ${port} notrack; add rule inet ctmon_notrack pre udp sport ${port} notrack; add rule inet ctmon_notrack out udp dport ${port} notrack; add rule inet ctmon_notrack out udp sport ${port} notrack'`),
        `# or with iptables (and ip6tables):`,
        inNs(`iptables -t raw -A PREROUTING -p udp --dport ${port} -j CT --notrack`),
        inNs(`iptables -t raw -A PREROUTING -p udp --sport ${port} -j CT --notrack`),
        inNs(`iptables -t raw -A OUTPUT -p udp --dport ${port} -j CT --notrack`),
        inNs(`iptables -t raw -A OUTPUT -p udp --sport ${port} -j CT --notrack`),
        `# untracked packets skip stateful rules: accept them explicitly (e.g. udp dport ${port} accept) before any ct state rule drops them`,
      );
    }
    add({
      id: 'udp',
      severity: risk(),
      title: service ? `UDP to ${service.dst} fills the table (${pct(service.entries / table.sampled)})` : `UDP is ${pct(udpShare)} of the table`,
      detail: `${table.udp} of ${table.sampled} entries are UDP${service ? `, ${service.entries} of them to ${service.dst}` : ''}; each lives ${ut?.value ?? '?'} s unreplied-or-single-packet (nf_conntrack_udp_timeout) or ${uts?.value ?? '?'} s once a stream (nf_conntrack_udp_timeout_stream). Shorter UDP timeouts free them sooner${port !== undefined ? `; a busy service such as DNS on port ${port} needs no tracking at all: exempt it with notrack` : ''}.`,
      fix,
      changes: [
        { name: 'nf_conntrack_udp_timeout', value: 10, scope: 'namespace' },
        { name: 'nf_conntrack_udp_timeout_stream', value: 60, scope: 'namespace' },
      ],
    });
  }
  const unassuredShare = share(table.unassured);
  if (enough && unassuredShare >= 0.5) {
    const synShare = share(table.synUnassured);
    const heavy = table.topSources.filter((s) => s.share >= 0.05).slice(0, 5);
    const syn = timeouts.nf_conntrack_tcp_timeout_syn_sent;
    const fix = synShare >= 0.25 ? [nsSysctl('nf_conntrack_tcp_timeout_syn_sent', 30), nsSysctl('nf_conntrack_tcp_timeout_syn_recv', 30), persistNs('nf_conntrack_tcp_timeout_syn_sent', 30)] : [];
    if (tcpLoose === 1 && synShare >= 0.25) fix.push(nsSysctl('nf_conntrack_tcp_loose', 0) + '   # no entries from mid-stream packets (ACK scans); established flows are picked up only from their SYN');
    add({
      id: 'unassured',
      severity: risk(),
      title: synShare >= 0.25 ? `half-open TCP handshakes are ${pct(synShare)} of the table (a SYN flood or a scan?)` : `most entries are unassured (${pct(unassuredShare)})`,
      detail: `${table.unassured} of ${table.sampled} entries never saw traffic both ways${synShare ? `, ${table.synUnassured} of them TCP in SYN_SENT/SYN_RECV, each kept ${syn?.value ?? '?'} s (nf_conntrack_tcp_timeout_syn_sent)` : ''}; ${heavy.length ? `from ${heavy.map((s) => `${s.src} (${pct(s.share)})`).join(', ')}` : 'from many sources'}. The kernel evicts unassured entries first when full (early_drop), but a flood keeps refilling them.`,
      fix: [...fix, ...heavy.map((s) => inNs(`conntrack -D --orig-src ${s.src}`))],
      changes: synShare >= 0.25 ? [
        { name: 'nf_conntrack_tcp_timeout_syn_sent', value: 30, scope: 'namespace' },
        { name: 'nf_conntrack_tcp_timeout_syn_recv', value: 30, scope: 'namespace' },
      ] : [],
    });
  }
  const timeWaitShare = share(table.timeWait);
  if (enough && timeWaitShare >= 0.3) {
    const tw = timeouts.nf_conntrack_tcp_timeout_time_wait;
    add({
      id: 'time-wait',
      severity: risk(),
      title: `TIME_WAIT is ${pct(timeWaitShare)} of the table`,
      detail: `${table.timeWait} entries of closed TCP connections wait ${tw?.value ?? '?'} s (nf_conntrack_tcp_timeout_time_wait): many short connections (health checks, HTTP without keep-alive) each leave one.`,
      fix: [nsSysctl('nf_conntrack_tcp_timeout_time_wait', 30), persistNs('nf_conntrack_tcp_timeout_time_wait', 30)],
      changes: [{ name: 'nf_conntrack_tcp_timeout_time_wait', value: 30, scope: 'namespace' }],
    });
  }
  const top = table.topSources[0];
  const top5Share = table.topSources.slice(0, 5).reduce((a, s) => a + s.share, 0);
  if (enough && top && (top.share >= 0.2 || top5Share >= 0.5)) {
    const heavy = table.topSources.filter((s) => s.share >= 0.05).slice(0, 5);
    add({
      id: 'top-sources',
      severity: risk(),
      title: heavy.length > 1 ? `${heavy.length} sources hold ${pct(heavy.reduce((a, s) => a + s.share, 0))} of the table` : `one source holds ${pct(top.share)} of the table`,
      detail: heavy.map((s) => `${s.src}: ${s.entries} entries (${pct(s.share)})`).join('; '),
      fix: heavy.map((s) => `${inNs(`conntrack -D --orig-src ${s.src}`)}   # or: ctmon delete --src ${s.src}${nsName ? ` --netns ${nsName}` : ''}`),
    });
  }
  const topDst = table.topDestinations[0];
  if (enough && topDst && topDst.share >= 0.5 && !findings.some((f) => f.id === 'udp' && f.title.includes(topDst.dst))) {
    add({
      id: 'top-destinations',
      severity: risk(),
      title: `one destination holds ${pct(topDst.share)} of the table: ${topDst.protocol} ${topDst.dst}`,
      detail: table.topDestinations.filter((d) => d.share >= 0.05).slice(0, 5).map((d) => `${d.protocol} ${d.dst}: ${d.entries} entries (${pct(d.share)})`).join('; ') + '. On a NAT router the clients are the sources; the service they all reach is here.',
      fix: [inNs(`conntrack -L -p ${topDst.protocol} --dst ${topDst.dst.replace(/^\[|\]?:\d+$/g, '')}${/:(\d+)$/.test(topDst.dst) ? ` --dport ${/:(\d+)$/.exec(topDst.dst)![1]}` : ''} | head`)],
    });
  }

  // 8. INVALID packets and hash-table contention, now.
  if (rates.invalid > 0) {
    add({
      id: 'invalid',
      severity: rates.invalid >= 100 ? 'warning' : 'info',
      title: `INVALID packets now: ${perSecond(rates.invalid)}/s`,
      detail: `${perSecond(rates.invalid)} packets/s could not be tracked (${totals.invalid} since boot); drop them before they reach stateful rules.`,
      fix: [inNs('nft add rule inet filter input ct state invalid drop') + '   # or: iptables -I INPUT -m conntrack --ctstate INVALID -j DROP'],
    });
  }
  if (rates.searchRestart >= 100 || rates.chainTooLong > 0) {
    add({
      id: 'hash-contention',
      severity: fill >= 0.5 ? risk() : 'info',
      title: 'hash table lookups are restarting',
      detail: `search_restart ${perSecond(rates.searchRestart)}/s, chaintoolong ${perSecond(rates.chainTooLong)}/s: lookups race with resizing or walk long chains. More buckets shorten the chains.`,
      fix: hostMaxFix,
      changes: maxChanges,
    });
  }

  // 9. The name no longer names the namespace diagnosed: no fix applies to a namespace that is gone.
  if (now.state !== 'same') {
    for (const f of findings) {
      f.fix = [];
      f.changes = [];
    }
    add({
      id: 'namespace-changed',
      severity: 'critical',
      title: `namespace ${nsName} was deleted${now.state === 'replaced' ? ' and created again' : ''} during the diagnosis`,
      detail: `These facts are of the namespace the handle held (inode ${identity.inode}); ${nsName} now names ${now.state === 'replaced' ? `another one (inode ${now.current.inode})` : 'nothing'}. Nothing here fixes the namespace there now: diagnose it again.`,
      fix: [`ctmon doctor --netns ${nsName}`],
    });
  }

  const ignore = new Set(options.ignore ?? []);
  const kept = findings.filter((f) => !ignore.has(f.id));
  const worst = kept.reduce<Severity>((w, f) => (RANK[f.severity] > RANK[w] ? f.severity : w), 'ok');
  const failOn = options.failOn ?? 'warning';
  const exitCode = worst === 'critical' ? 2 : worst === 'warning' && failOn === 'warning' ? 1 : 0;
  return {
    status: worst === 'critical' ? 'critical' : worst === 'warning' ? 'warning' : 'healthy',
    exitCode,
    findings: kept,
    ignored: findings.filter((f) => ignore.has(f.id)).map((f) => f.id),
    facts: {
      namespace: { name: nsName, initial, inode: identity.inode, now: now.state },
      kernel: { release: kernelRelease, major, minor },
      active,
      count: stats.count,
      max: stats.max,
      fill,
      buckets: stats.buckets,
      totals,
      rates,
      kernelLog,
      table,
      timeouts,
      tcpLoose,
      tcpBeLiberal,
      memory: { ramBytes: memoryBytes, entryBytes, bucketBytes: BUCKET_BYTES },
      advice: { max: adviseMax, buckets: adviseBuckets, costBytes },
    },
  };
}
