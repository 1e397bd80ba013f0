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
 *
 * Four parts: doctor-evidence.ts reads (all the I/O), doctor-rules.ts judges
 * (one pure function per finding), doctor-commands.ts spells the fixes, and
 * this file validates the options and gives the verdict.
 */
import { checkKnownKeys, checkOptions, describe as describeValue, own, toList } from './check.js';
import type { Conntrack, CounterTotals, NamespaceState } from './conntrack.js';
import { gatherEvidence, type Evidence } from './doctor-evidence.js';
import { contextOf, judge, type Context } from './doctor-rules.js';
import { ConntrackError } from './errors.js';
import type { KernelLogFacts } from './kernel-log.js';
import { TableTally, type TableFacts } from './tally.js';

export { bucketsFor, defaultTimeouts, ENTRIES_PER_GIB, kernelVersion } from './doctor-kernel.js';
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
     * name none, because this is the initial namespace. Lines of other
     * namespaces stay here as context and make no finding; `source:
     * 'unavailable'` makes one, `kernel-log-unavailable`, with `error`.
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
  intervalSeconds?: number | undefined;
  /** RAM to size nf_conntrack_max against; default os.totalmem(). */
  memoryBytes?: number | undefined;
  /** Entries to read for the table breakdown; default all. */
  sampleLimit?: number | undefined;
  /** The lowest severity that makes exitCode non-zero: 'warning' (default) or 'critical'. */
  failOn?: 'warning' | 'critical' | undefined;
  /** Finding ids to leave out of the verdict. */
  ignore?: readonly string[] | undefined;
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

export async function diagnose(ct: Conntrack, options: DiagnoseOptions = {}): Promise<Diagnosis> {
  return diagnoseWith(ct, options, walkTable);
}

/**
 * The verdict on the findings left after `ignore`: the worst severity, and
 * the exit code `failOn` makes of it.
 */
export function verdict(findings: readonly Finding[], options: Pick<DiagnoseOptions, 'failOn' | 'ignore'>): Pick<Diagnosis, 'status' | 'exitCode' | 'findings' | 'ignored'> {
  const ignore = new Set(options.ignore ?? []);
  const kept = findings.filter((f) => !ignore.has(f.id));
  const worst = kept.reduce<Severity>((w, f) => (RANK[f.severity] > RANK[w] ? f.severity : w), 'ok');
  const failOn = options.failOn ?? 'warning';
  return {
    status: worst === 'critical' ? 'critical' : worst === 'warning' ? 'warning' : 'healthy',
    exitCode: worst === 'critical' ? 2 : worst === 'warning' && failOn === 'warning' ? 1 : 0,
    findings: kept,
    ignored: findings.filter((f) => ignore.has(f.id)).map((f) => f.id),
  };
}

/** The facts a Diagnosis reports: the evidence, and what the rules derived from it. */
function factsOf(x: Context): Diagnosis['facts'] {
  const { e } = x;
  const { namespace: ns } = e;
  return {
    namespace: { name: ns.name, initial: ns.initial, inode: ns.inode, now: ns.now.state },
    kernel: e.kernel,
    active: x.active,
    count: e.count,
    max: e.max,
    fill: x.fill,
    buckets: e.buckets,
    totals: e.totals,
    rates: e.rates,
    kernelLog: { ...e.log, scope: 'host', attributed: e.log.thisNamespace !== null || ns.initial },
    table: e.table,
    timeouts: e.settings.timeouts,
    tcpLoose: e.settings.tcpLoose,
    tcpBeLiberal: e.settings.tcpBeLiberal,
    memory: e.memory,
    advice: { max: x.advice.max, buckets: x.advice.buckets, costBytes: x.advice.costBytes },
  };
}

/** The diagnosis of gathered evidence: the rules' findings, the verdict and the facts. Pure. */
export function diagnosisOf(e: Evidence, options: Pick<DiagnoseOptions, 'failOn' | 'ignore'> = {}): Diagnosis {
  const x = contextOf(e);
  return { ...verdict(judge(x), options), facts: factsOf(x) };
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
  const evidence = await gatherEvidence(ct, {
    intervalMs: (options.intervalSeconds ?? 1) * 1000,
    sampleLimit: options.sampleLimit ?? Infinity,
    tableFacts,
    signal,
    ...(options.memoryBytes !== undefined ? { memoryBytes: options.memoryBytes } : {}),
  });
  return diagnosisOf(evidence, options);
}
