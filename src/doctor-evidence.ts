/**
 * The doctor's evidence: everything it reads from the kernel, read once,
 * with each setting under its name. Gathering does all the I/O; the rules
 * (doctor-rules.ts) only judge what is gathered here, so they run on
 * synthetic evidence in unit tests.
 */
import { readFileSync } from 'node:fs';
import { release, totalmem } from 'node:os';
import { counterTotals, type Conntrack, type CounterTotals, type NamespaceState } from './conntrack.js';
import { BUCKET_BYTES, defaultTimeouts, kernelVersion } from './doctor-kernel.js';
import type { Rates } from './doctor.js';
import { ConntrackError } from './errors.js';
import { isInitialNamespace } from './initial-namespace.js';
import { readKernelLog, type KernelLogFacts, type NamespaceIdentity } from './kernel-log.js';
import type { TableFacts } from './tally.js';

/** The settings the rules read, by name. */
export interface Settings {
  /** Every nf_conntrack timeout this kernel has: its value and the running kernel's default, in seconds. */
  timeouts: Record<string, { value: number; default: number }>;
  tcpLoose: number | null;
  tcpBeLiberal: number | null;
}

export interface Evidence {
  /** The namespace the handle holds; `now` is what its name names at the end. */
  namespace: { name: string | null; initial: boolean; inode: number; now: NamespaceState };
  kernel: { release: string; major: number; minor: number };
  count: number;
  max: number;
  buckets: number;
  /** Counters since boot (at the second sample). */
  totals: CounterTotals;
  rates: Rates;
  log: KernelLogFacts;
  table: TableFacts;
  settings: Settings;
  memory: { ramBytes: number; entryBytes: number | null; bucketBytes: number };
  /** When the second sample was taken (ms since the epoch): what "recent" is measured from. */
  atMs: number;
}

export interface GatherOptions {
  intervalMs: number;
  memoryBytes?: number;
  sampleLimit: number;
  tableFacts: (ct: Conntrack, limit: number) => Promise<TableFacts>;
  signal?: AbortSignal | undefined;
}

/** The nf_conntrack slab object size, from /proc/slabinfo (root only). */
export function slabEntryBytes(): number | null {
  try {
    const line = readFileSync('/proc/slabinfo', 'utf8').split('\n').find((l) => /^nf_conntrack\s/.test(l));
    const size = line ? Number(line.trim().split(/\s+/)[3]) : NaN;
    return Number.isInteger(size) && size > 0 ? size : null;
  } catch {
    return null;
  }
}

async function readNumber(ct: Conntrack, name: string): Promise<number | null> {
  try {
    const n = Number(await ct.readSysctl(name));
    return Number.isFinite(n) ? n : null;
  } catch {
    return null;
  }
}

/** Every timeout against `defaults`, and the two TCP tracking switches, each read under its own name. */
export async function readSettings(ct: Conntrack, defaults: Record<string, number>): Promise<Settings> {
  const read = async (name: string): Promise<[string, { value: number; default: number }] | undefined> => {
    const value = await readNumber(ct, name);
    return value === null ? undefined : [name, { value, default: defaults[name]! }];
  };
  const [timeouts, tcpLoose, tcpBeLiberal] = await Promise.all([
    Promise.all(Object.keys(defaults).map(read)),
    readNumber(ct, 'nf_conntrack_tcp_loose'),
    readNumber(ct, 'nf_conntrack_tcp_be_liberal'),
  ]);
  return { timeouts: Object.fromEntries(timeouts.filter((t) => t !== undefined)), tcpLoose, tcpBeLiberal };
}

/** Per-second rates between two samples of the counters `seconds` apart (a counter never goes back). */
export function ratesBetween(before: CounterTotals, after: CounterTotals, seconds: number): Rates {
  const rate = (k: keyof CounterTotals): number => Math.max(0, after[k] - before[k]) / seconds;
  return {
    intervalSeconds: seconds, drop: rate('drop'), earlyDrop: rate('earlyDrop'), insertFailed: rate('insertFailed'), invalid: rate('invalid'),
    searchRestart: rate('searchRestart'), clashResolve: rate('clashResolve'), chainTooLong: rate('chainTooLong'),
  };
}

/** Waits `ms`, or rejects ECANCELED as soon as `signal` aborts. */
function interval(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const stop = (): void => {
      clearTimeout(timer);
      reject(new ConntrackError('ECANCELED', 'diagnose', 'diagnose: cancelled'));
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', stop);
      resolve();
    }, ms);
    if (signal?.aborted) stop();
    else signal?.addEventListener('abort', stop, { once: true });
  });
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

/**
 * Reads the evidence: two counter samples `intervalMs` apart, and meanwhile
 * the table's facts, the settings and the kernel log.
 */
export async function gatherEvidence(ct: Conntrack, o: GatherOptions): Promise<Evidence> {
  const kernelRelease = release();
  const { major, minor } = kernelVersion(kernelRelease);
  const initial = await isInitialNamespace(ct.namespaceId);
  const first = await ct.stats();
  const t0 = Date.now();
  // The walk runs during the sampling interval; the second sample waits for both.
  const walk = o.tableFacts(ct, o.sampleLimit);
  const settings = readSettings(ct, defaultTimeouts(major));
  const logRead = readKernelLog(namespaceIdentity(ct, initial));
  await interval(o.intervalMs, o.signal);
  const [table, named, log, now] = await Promise.all([walk, settings, logRead, ct.namespaceState()]);
  const stats = await ct.stats();
  const atMs = Date.now();
  const totals = counterTotals(stats);
  return {
    namespace: { name: ct.netns ?? null, initial, inode: ct.namespaceId.inode, now },
    kernel: { release: kernelRelease, major, minor },
    count: stats.count,
    max: stats.max,
    buckets: stats.buckets,
    totals,
    rates: ratesBetween(counterTotals(first), totals, Math.max(0.001, (atMs - t0) / 1000)),
    log,
    table,
    settings: named,
    memory: { ramBytes: o.memoryBytes ?? totalmem(), entryBytes: slabEntryBytes(), bucketBytes: BUCKET_BYTES },
    atMs,
  };
}
