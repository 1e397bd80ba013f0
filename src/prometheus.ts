/**
 * conntrack/prometheus: the table, its counters, its events and the doctor's
 * verdict as prom-client metrics, for one or many network namespaces.
 *
 * A scrape reads the kernel's counters (stats(): O(1)) and serialises what
 * is already counted. Everything that would otherwise need a dump (entries
 * by state, assured, top sources) comes from a ct.liveTable(), which follows the
 * event stream and resyncs with a full dump only after losses and every
 * `resyncSeconds`. The doctor runs in the background every `doctorSeconds`
 * on the same live tally, never at scrape time.
 *
 * Metric names are a contract (README "Monitoring"); each series carries a
 * `netns` label: the namespace name given to Conntrack.open(), or `host` /
 * `self` for a handle on the process's own namespace (the initial one, or not).
 */
import { Counter, Gauge, Registry } from 'prom-client';
import { checkBoolean, checkKnownKeys, checkOptions, checkUint, describe, own, toList } from './check.js';
import { Conntrack, counterTotals, type CounterTotals, type NamespaceId, type NamespaceState, type Stats } from './conntrack.js';
import { diagnoseWith, type Diagnosis } from './doctor.js';
import { ConntrackError } from './errors.js';
import { isInitialNamespace } from './initial-namespace.js';
import type { LiveTable } from './live-table.js';
import { STATS_COUNTERS } from './stats-counters.js';

export interface MetricsOptions {
  /** The handle(s) to export; each gives its series a `netns` label. */
  conntrack: Conntrack | readonly Conntrack[];
  /** Sources in conntrack_top_source_entries (default 10; 0 leaves the metric empty). */
  top?: number | undefined;
  /** Seconds between full resyncs of the live tally (default 300; 0: only after lost events). */
  resyncSeconds?: number | undefined;
  /** Seconds between doctor runs (default 60; 0: never). */
  doctorSeconds?: number | undefined;
  /** Label the conntrack_stat_* counters per CPU (`cpu` label) instead of summing them. */
  perCpu?: boolean | undefined;
  /**
   * Called when a namespace's name (or path) stops naming the namespace its
   * handle holds: deleted (`current` null), or deleted and created again.
   * Its series are dropped from then on. Return a handle on the namespace the
   * name names now (`Conntrack.open({ netns })`) to follow it under the same
   * label; return nothing to leave the series dropped, and you are called
   * again when the name names another namespace. Closing the old handle (it
   * keeps the deleted namespace alive) is the owner's: these metrics never
   * close a handle. Checked every second and before each scrape's reading.
   */
  onNamespaceChange?: ((change: NamespaceChange) => Conntrack | undefined | void | Promise<Conntrack | undefined | void>) | undefined;
}

interface SourceOptions {
  resyncSeconds: number;
  doctorSeconds: number;
  top: number;
  onNamespaceChange: MetricsOptions['onNamespaceChange'];
}

/** How often each named namespace is checked against what its name names (a stat of /run/netns/NAME). */
const NAMESPACE_CHECK_MS = 1000;

/** What registerMetrics() tells the owner when a namespace's name stops naming the namespace exported. */
export interface NamespaceChange {
  /** The series' netns label (the name given to Conntrack.open()). */
  netns: string;
  /** The handle the series came from. The metrics no longer use it; it still holds (and keeps alive) its namespace until closed. */
  conntrack: Conntrack;
  /** The namespace that handle holds. */
  previous: NamespaceId;
  /** What the name names now; null when it names nothing (the namespace was deleted). */
  current: NamespaceId | null;
}

export interface MetricsHandle {
  /** Resolves when every namespace's first dump is counted (entries-by-state series exist from then on). */
  readonly ready: Promise<void>;
  /** Stops the event streams and timers and unregisters the metrics. Does not close the Conntrack handles. */
  close(): void;
}

/** The conntrack_stat_* counters, in `conntrack -S` order, by CounterTotals key. */
export const STAT_METRICS: Readonly<Record<keyof CounterTotals, string>> = Object.fromEntries(STATS_COUNTERS.map((c) => [c.key, c.metric])) as Record<keyof CounterTotals, string>;

const DOCTOR_STATUS: Readonly<Record<Diagnosis['status'], number>> = { healthy: 0, warning: 1, critical: 2 };
const OPTION_KEYS = new Set(['conntrack', 'top', 'resyncSeconds', 'doctorSeconds', 'perCpu', 'onNamespaceChange']);

/** Every metric registerMetrics() defines: read off the definitions themselves, registered once into a scratch registry. */
export const METRIC_NAMES: readonly string[] = (() => {
  const scratch = new Registry();
  defineMetrics(scratch, new Set(), 1, false);
  return scratch.getMetricsAsArray().map((m) => m.name);
})();

/** One exported namespace: a label, the handle its series come from now (none while its name names no namespace we follow), and what it counted. */
class Source {
  /** The handle the series come from; after a loss, the last one (kept to compare its namespace with what the name names). */
  ct: Conntrack;
  /** Whether the series come from `ct` (false once its name stopped naming its namespace, until a handle follows). */
  attached = true;
  live: LiveTable;
  label: string | undefined;
  doctor: Diagnosis | undefined;
  /** Times the name stopped naming the namespace exported (conntrack_exporter_namespace_changes_total). */
  changes = 0;
  readonly #options: SourceOptions;
  #doctorTimer: NodeJS.Timeout | undefined;
  #doctorRun: Promise<void> | undefined;
  #stop = new AbortController();
  #stats: Promise<Stats> | undefined;
  #top: { version: number; list: { src: string; entries: number }[] } = { version: -1, list: [] };
  #topTimer: NodeJS.Timeout | undefined;
  #checkTimer: NodeJS.Timeout | undefined;
  /** Namespace checks started, and the latest one acted on. */
  #checks = 0;
  #applied = 0;
  #offering: Promise<void> | undefined;
  /** While detached: the namespace the name named when last looked at (null: nothing), so the owner is asked once per new namespace. */
  #lastSeen: string | null = null;
  #closed = false;
  readonly ready: Promise<void>;

  constructor(ct: Conntrack, options: SourceOptions) {
    this.ct = ct;
    this.#options = options;
    this.live = ct.liveTable({ resyncSeconds: options.resyncSeconds });
    this.ready = this.#start();
    this.ready.catch(() => undefined);
  }

  async #start(): Promise<void> {
    this.label = this.ct.netns ?? ((await isInitialNamespace(this.ct.namespaceId)) ? 'host' : 'self');
    if (this.ct.netns !== undefined && !this.#closed) {
      this.#checkTimer = setInterval(() => void this.checkNamespace(), NAMESPACE_CHECK_MS);
      this.#checkTimer.unref();
    }
    await this.live.ready;
    this.#timers();
  }

  /** The top-sources and doctor timers, on the live table of the handle attached now. */
  #timers(): void {
    if (this.#closed || !this.attached) return;
    const { top, doctorSeconds } = this.#options;
    this.#refreshTop(top);
    this.#topTimer = setInterval(() => this.#refreshTop(top), 1000);
    this.#topTimer.unref();
    if (doctorSeconds > 0) {
      const signal = this.#stop.signal;
      const run = (): void => {
        this.#doctorRun ??= this.#runDoctor(signal).finally(() => (this.#doctorRun = undefined));
      };
      run();
      this.#doctorTimer = setInterval(run, doctorSeconds * 1000);
      this.#doctorTimer.unref();
    }
  }

  async #runDoctor(signal: AbortSignal): Promise<void> {
    const live = this.live;
    try {
      // Read now and thrown, not rejected: diagnoseWith holds the promise unawaited through its sampling interval.
      const d = await diagnoseWith(this.ct, {}, () => {
        if (live.closed || live.stats.resyncs === 0) throw new ConntrackError('EAGAIN', 'doctor', 'the live table is not synced yet');
        return Promise.resolve(live.facts());
      }, signal);
      if (!signal.aborted) this.doctor = d;
    } catch {
      // A closed handle or a namespace that went away: keep the last verdict, the scrape reports the rest.
    }
  }

  /**
   * One reading per scrape, shared by every metric (a scrape starts them all
   * at once) and by scrapes that start while it is pending; a scrape that
   * starts after it settled reads afresh.
   */
  stats(): Promise<Stats> {
    this.#stats ??= this.#read().finally(() => (this.#stats = undefined));
    return this.#stats;
  }

  /** The counters, read only while the name still names the handle's namespace: a scrape never reports a namespace that is gone. */
  async #read(): Promise<Stats> {
    const ct = this.ct;
    const [stats] = await Promise.all([ct.stats(), this.checkNamespace()]);
    if (!this.attached || this.ct !== ct) throw new ConntrackError('ESTALE', 'stats', `namespace ${this.label}: its name no longer names the namespace read`);
    return stats;
  }

  /**
   * Compares the namespace the series come from with what its name names
   * now, and acts on it. Checks overlap (the timer's, each scrape's own): an
   * answer older than one already acted on is dropped, and while the owner
   * is being asked, its answer decides.
   */
  async checkNamespace(): Promise<void> {
    const ct = this.ct;
    const seq = ++this.#checks;
    let now: NamespaceState;
    try {
      now = await ct.namespaceState();
    } catch {
      return; // /run/netns unreadable for a moment: the next check decides
    }
    if (seq < this.#applied || this.#closed || this.#offering || this.ct !== ct) return;
    this.#applied = seq;
    // Inode numbers are reused: the change time tells two namespaces with one number apart.
    const seen = now.state === 'replaced' ? `${now.current.inode}@${now.current.sinceMs}` : null;
    if (this.attached) {
      if (now.state === 'same') return;
      this.changes++;
      this.#detach();
      this.#lastSeen = seen;
      this.#ask(ct, now);
    } else if (now.state === 'same') {
      // The name names the namespace we had again (ip netns attach): take it back if its handle is still open.
      if (!ct.closed) this.#attach(ct);
    } else if (seen !== this.#lastSeen) {
      this.#lastSeen = seen;
      if (seen !== null) this.#ask(ct, now);
    }
  }

  #ask(ct: Conntrack, now: Exclude<NamespaceState, { state: 'same' }>): void {
    this.#offering = this.#offer(ct, now).finally(() => (this.#offering = undefined));
  }

  /** Tells the owner; a handle it returns is followed under the same label. */
  async #offer(ct: Conntrack, now: Exclude<NamespaceState, { state: 'same' }>): Promise<void> {
    const callback = this.#options.onNamespaceChange;
    if (!callback) return;
    const change: NamespaceChange = { netns: this.label!, conntrack: ct, previous: ct.namespaceId, current: now.state === 'replaced' ? now.current : null };
    let next: unknown;
    try {
      next = await callback(change);
    } catch (e) {
      process.emitWarning(e instanceof Error ? e : String(e), { code: 'CONNTRACK_NAMESPACE_CHANGE' });
      return;
    }
    if (next === undefined || this.#closed) return;
    if (!(next instanceof Conntrack) || next.closed) {
      process.emitWarning(`onNamespaceChange for ${this.label} returned ${describe(next)}, not an open Conntrack handle: its series stay dropped`, { code: 'CONNTRACK_NAMESPACE_CHANGE' });
      return;
    }
    this.#attach(next);
  }

  #attach(ct: Conntrack): void {
    this.ct = ct;
    this.attached = true;
    this.#stop = new AbortController();
    this.live = ct.liveTable({ resyncSeconds: this.#options.resyncSeconds });
    this.#top = { version: -1, list: [] };
    const live = this.live;
    void live.ready.then(() => {
      if (this.live === live) this.#timers();
    }, () => undefined);
  }

  /** Stops everything that reads the handle's namespace and drops its series (the handle stays open: it is the owner's). */
  #detach(): void {
    this.attached = false;
    this.doctor = undefined;
    this.#stopTimers();
    this.live.close();
  }

  #stopTimers(): void {
    this.#stop.abort();
    if (this.#doctorTimer) clearInterval(this.#doctorTimer);
    if (this.#topTimer) clearInterval(this.#topTimer);
    this.#doctorTimer = this.#topTimer = undefined;
  }

  /**
   * The top sources, recomputed (one pass over the distinct sources) by a
   * timer, once a second and only when the table changed: a scrape reads the
   * last list instead of walking every source.
   */
  #refreshTop(n: number): void {
    const live = this.live;
    if (this.synced && this.#top.version !== live.version) this.#top = { version: live.version, list: live.topSources(n) };
  }

  /** Whether the live table has merged its first dump (before that its figures are partial and not exported). */
  get synced(): boolean {
    return !this.live.closed && this.live.stats.resyncs > 0;
  }

  get topSources(): readonly { src: string; entries: number }[] {
    return this.#top.list;
  }

  close(): void {
    this.#closed = true;
    this.#stopTimers();
    if (this.#checkTimer) clearInterval(this.#checkTimer);
    this.live.close();
  }
}

interface Shared {
  sources: Set<Source>;
}

/** Metrics already on a registry: a second registerMetrics() call adds namespaces to them. */
const onRegistry = new WeakMap<Registry, Shared>();

function readOptions(input: unknown): SourceOptions & { handles: Conntrack[]; perCpu: boolean } {
  const op = 'registerMetrics';
  const o = checkOptions(input, op);
  checkKnownKeys(o, OPTION_KEYS, op, 'option');
  const c = own(o, 'conntrack');
  const handles = toList(c);
  if (handles.length === 0 || !handles.every((h) => h instanceof Conntrack)) {
    throw ConntrackError.invalid(op, `conntrack must be a Conntrack handle or a non-empty list of them, got ${describe(c)}`);
  }
  if ((handles as Conntrack[]).some((h) => h.closed)) throw ConntrackError.invalid(op, 'a Conntrack handle is already closed');
  const seconds = (name: string, fallback: number): number => {
    const v = own(o, name);
    if (v === undefined) return fallback;
    if (typeof v !== 'number' || !Number.isFinite(v) || v < 0 || v > 86400 * 7) {
      throw ConntrackError.invalid(op, `${name} must be a number of seconds from 0 to 604800, got ${describe(v)}`);
    }
    return v;
  };
  const topOpt = own(o, 'top');
  const onNamespaceChange = own(o, 'onNamespaceChange');
  if (onNamespaceChange !== undefined && typeof onNamespaceChange !== 'function') {
    throw ConntrackError.invalid(op, `onNamespaceChange must be a function, got ${describe(onNamespaceChange)}`);
  }
  return {
    onNamespaceChange: onNamespaceChange as MetricsOptions['onNamespaceChange'],
    handles: handles as Conntrack[],
    top: topOpt === undefined ? 10 : checkUint(topOpt, 1000, op, 'top'),
    resyncSeconds: seconds('resyncSeconds', 300),
    doctorSeconds: seconds('doctorSeconds', 60),
    perCpu: checkBoolean(own(o, 'perCpu'), op, 'perCpu') === true,
  };
}

/**
 * Registers the conntrack metrics on a prom-client registry and starts
 * following each namespace's table. Call close() to stop.
 */
export function registerMetrics(registry: Registry, options: MetricsOptions): MetricsHandle {
  const { handles, perCpu, ...sourceOptions } = readOptions(options);
  let shared = onRegistry.get(registry);
  const added = handles.map((ct) => new Source(ct, sourceOptions));
  if (!shared) {
    const sources = new Set<Source>();
    defineMetrics(registry, sources, sourceOptions.top, perCpu);
    shared = { sources };
    onRegistry.set(registry, shared);
  }
  for (const s of added) shared.sources.add(s);
  const mine = shared;
  let closed = false;
  const ready = Promise.all(added.map((s) => s.ready)).then(() => undefined);
  // A caller that never awaits `ready` (ctmon exporter) must not crash on a namespace that failed or a close() during startup.
  ready.catch(() => undefined);
  return {
    ready,
    close(): void {
      if (closed) return;
      closed = true;
      for (const s of added) {
        s.close();
        mine.sources.delete(s);
      }
      if (mine.sources.size === 0) {
        for (const name of METRIC_NAMES) registry.removeSingleMetric(name);
        onRegistry.delete(registry);
      }
    },
  };
}

/** Sources whose label is known and whose series come from an open handle; a scrape before that simply has no series for them yet. */
function labelled(sources: Set<Source>): Labelled[] {
  return named(sources).filter((s) => s.attached && !s.ct.closed);
}

/** Every source whose label is known, attached or not (the namespace_* series). */
function named(sources: Set<Source>): Labelled[] {
  return [...sources].filter((s): s is Labelled => s.label !== undefined);
}

type Labelled = Source & { label: string };

function defineMetrics(registry: Registry, sources: Set<Source>, top: number, perCpu: boolean): void {
  const registers = [registry];
  /**
   * A metric whose series are set afresh on every scrape, namespace by
   * namespace, each from what `read` gives it: a namespace whose read fails
   * has no series in this scrape; the others are served.
   */
  const series = <K extends string, R>(
    Kind: typeof Gauge | typeof Counter,
    name: string,
    help: string,
    labelNames: readonly K[],
    pick: (sources: Set<Source>) => Labelled[],
    read: (s: Labelled) => R | Promise<R>,
    fill: (put: (labels: Record<K | 'netns', string>, value: number) => void, s: Labelled, reading: R) => void,
  ): void => {
    new Kind<K | 'netns'>({
      name, help, labelNames: ['netns', ...labelNames], registers,
      async collect(this: Gauge<K | 'netns'> | Counter<K | 'netns'>) {
        const list = pick(sources);
        const readings = await Promise.allSettled(list.map(async (s) => read(s)));
        // Read first, then reset and set in one synchronous step: scrapes in parallel each
        // see the values of one reading (a reset before the await let two of them add theirs up).
        this.reset();
        const put = this instanceof Gauge ? this.set.bind(this) : this.inc.bind(this);
        list.forEach((s, i) => {
          const r = readings[i]!;
          if (r.status === 'fulfilled') fill(put, s, r.value);
        });
      },
    });
  };
  /**
   * The table's metrics. A namespace's come from one reading per scrape
   * (stats() and the namespace check, shared by every metric): none in a
   * scrape whose reading failed or that found its name naming another namespace.
   */
  const define = <K extends string>(Kind: typeof Gauge | typeof Counter, name: string, help: string, labelNames: readonly K[],
    fill: (put: (labels: Record<K | 'netns', string>, value: number) => void, s: Labelled, stats: Stats) => void): void =>
    series(Kind, name, help, labelNames, labelled, (s) => s.stats(), (put, s, st) => {
      // Lost between its reading and now (the once-a-second check): nothing from the table that went.
      if (s.attached) fill(put, s, st);
    });
  /** The namespace's own state: every labelled namespace, followed or not, without a reading. */
  const defineNamed = (Kind: typeof Gauge | typeof Counter, name: string, help: string, value: (s: Labelled) => number): void =>
    series(Kind, name, help, [], named, () => undefined, (put, s) => put({ netns: s.label }, value(s)));
  const fromStats = (name: string, help: string, value: (st: Stats) => number): void =>
    define(Gauge, name, help, [], (put, s, st) => put({ netns: s.label }, value(st)));

  fromStats('conntrack_entries', 'Entries in the conntrack table (conntrack -C)', (st) => st.count);
  fromStats('conntrack_entries_limit', 'The table limit, net.netfilter.nf_conntrack_max', (st) => st.max);
  fromStats('conntrack_buckets', 'Hash buckets, net.netfilter.nf_conntrack_buckets', (st) => st.buckets);
  for (const { key, metric, help, cli } of STATS_COUNTERS) {
    define(Counter, metric, `${help} (conntrack -S ${cli})`, perCpu ? ['cpu'] : [], (put, s, st) => {
      if (perCpu) for (const c of st.perCpu) put({ netns: s.label, cpu: String(c.cpu) }, c[key]);
      else put({ netns: s.label } as Record<'netns' | 'cpu', string>, counterTotals(st)[key]);
    });
  }
  define(Gauge, 'conntrack_entries_by_state', 'Entries by protocol and state (state empty for protocols without states), from the live table',
    ['protocol', 'state'], (put, s) => {
      if (s.synced) for (const g of s.live.counts()) put({ netns: s.label, protocol: String(g.protocol), state: g.state }, g.entries);
    });
  define(Gauge, 'conntrack_entries_assured', 'Entries with ASSURED set (seen traffic both ways; never early-dropped), from the live table',
    [], (put, s) => {
      if (s.synced) put({ netns: s.label }, s.live.assured);
    });
  define(Gauge, 'conntrack_top_source_entries', `Entries of the ${top} sources (original direction) with the most entries`,
    ['src'], (put, s) => {
      for (const t of s.topSources) put({ netns: s.label, src: t.src }, t.entries);
    });
  define(Counter, 'conntrack_events_total', 'Conntrack events received, by type', ['type'], (put, s) => {
    for (const type of ['new', 'update', 'destroy'] as const) put({ netns: s.label, type }, s.live.stats.events[type]);
  });
  define(Counter, 'conntrack_events_lost_total', 'Conntrack events lost (socket buffer or queue overrun); each loss triggers a resync',
    [], (put, s) => put({ netns: s.label }, s.live.stats.lost));
  define(Counter, 'conntrack_exporter_resyncs_total', 'Full dumps merged into the live table (startup, after losses, unwatched entries, every resync interval)',
    [], (put, s) => put({ netns: s.label }, s.live.stats.resyncs));
  define(Gauge, 'conntrack_exporter_unwatched_entries',
    'Entries created before the exporter subscribed that have sent no event since (nf_conntrack_events=2 gives events only to entries created while someone listens); the exporter re-dumps while any remain',
    [], (put, s) => {
      if (s.synced) put({ netns: s.label }, s.live.stats.unwatched);
    });
  defineNamed(Gauge, 'conntrack_exporter_namespace_up',
    'Whether the series come from the namespace the netns name names now (1), or are dropped because it names none, or one not followed (0)',
    (s) => (s.attached && !s.ct.closed ? 1 : 0));
  defineNamed(Counter, 'conntrack_exporter_namespace_changes_total',
    'Times the netns name stopped naming the namespace exported (deleted, or deleted and created again)', (s) => s.changes);
  define(Gauge, 'conntrack_doctor_status', 'The doctor\'s verdict: 0 healthy, 1 warning, 2 critical', [], (put, s) => {
    if (s.doctor) put({ netns: s.label }, DOCTOR_STATUS[s.doctor.status]);
  });
  define(Gauge, 'conntrack_doctor_finding', 'The doctor\'s findings (ctmon doctor): 1 per finding id and severity', ['id', 'severity'], (put, s) => {
    for (const f of s.doctor?.findings ?? []) put({ netns: s.label, id: f.id, severity: f.severity }, 1);
  });
}
