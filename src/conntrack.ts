/**
 * The Conntrack handle: dump, list, count, stats, get, create, update,
 * delete, flush, bulk deletes, sysctls and event streams, in any network
 * namespace. The concepts it works with live beside it: flow.ts (keys and
 * specs), filter.ts, dump.ts, bulk-delete.ts, events.ts.
 */
import { stat, statfs } from 'node:fs/promises';
import { constants } from 'node:os';
import { DELETE_OPTION_KEYS, DELETE_WHERE_OPTION_KEYS, deleteMatching, type DeleteOptions, type DeleteResult } from './bulk-delete.js';
import { updateMatching, type UpdateOptions, type UpdateResult } from './bulk-update.js';
import { capabilityAdvice, procSysWritable, readOnlyProcSysAdvice } from './capabilities.js';
import { checkBoolean, checkFamily, checkKnownKeys, checkOptions, checkUint, describe, own } from './check.js';
import { dumpBatches, iterateDump } from './dump.js';
import type { Entry, Family } from './entry.js';
import { ConntrackError, wrapNative } from './errors.js';
import { LiveTable, type LiveTableOptions } from './live-table.js';
import { ConntrackEventStream, type EventOptions, type ExpectationEventOptions, type ExpectationStreamEvent } from './events.js';
import { Expectations } from './expectation.js';
import { FlowStream, type FlowOptions } from './flows.js';
import { compileFilter, type Filter } from './filter.js';
import { encodeCreate, encodeFlowKey, encodeUpdate, type CreateSpec, type FlowKey, type UpdateChanges, type UpdateSpec } from './flow.js';
import { labelBitmap } from './labels.js';
import { addon, type NativeCpuStats, type NativeEntrySpec, type NativeHandle } from './native.js';
import type { PortOwner } from './process.js';
import { counterTotals, type CounterTotals } from './stats-counters.js';
import { decodeEntries, decodeOne } from './record.js';

export interface OpenOptions {
  /** A name under /run/netns (as `ip netns add NAME` creates) or an absolute path such as /proc/PID/ns/net. */
  netns?: string | undefined;
}

/**
 * A network namespace's identity: its nsfs device and inode, as `stat -L
 * /run/netns/NAME` shows them (the inode is the number newer kernels print in
 * "table full in netns N"). The kernel reuses the number of a namespace that
 * is gone, so it names this one only from `sinceMs` on: the nsfs inode's
 * change time (for a name under /run/netns, when `ip netns add` made it),
 * which namespaceState() compares too.
 */
export interface NamespaceId {
  dev: number;
  inode: number;
  sinceMs: number;
}

/**
 * What the handle's namespace name (or path) resolves to now: the namespace
 * the handle holds (`same`), another one (`replaced`: the namespace was
 * deleted and one of the same name created), or none (`gone`). A handle keeps
 * its namespace alive, and keeps working on it, whatever the name does.
 */
export type NamespaceState = { state: 'same' } | { state: 'replaced'; current: NamespaceId } | { state: 'gone' };

/** statfs(2)'s f_type of nsfs (linux/magic.h NSFS_MAGIC). */
const NSFS_MAGIC = 0x6e736673;

/** A namespace's nsfs inode as the comparison needs it: the change time to the nanosecond. */
interface NsfsInode {
  dev: number;
  inode: number;
  ctimeNs: bigint;
}

function namespaceIdOf(n: NsfsInode): NamespaceId {
  return { dev: n.dev, inode: n.inode, sinceMs: Number(n.ctimeNs / 1_000_000n) };
}

/** Per-CPU counters of `conntrack -S`. */
export type CpuStats = NativeCpuStats;

/** What `conntrack -S` and `-C` and /proc/sys/net/netfilter show, for the handle's namespace. */
export interface Stats {
  count: number;
  max: number;
  buckets: number;
  perCpu: CpuStats[];
}

export { counterTotals, type CounterTotals };

export interface FlushOptions {
  family?: Family | undefined;
}

/** Options of dump() and list(). */
export interface ReadOptions {
  /**
   * Read each entry's counters and reset them to 0 in the same step
   * (conntrack -L -z, IPCTNL_MSG_CT_GET_CTRZERO). Only entries that match
   * the filter are reset: without a filter in one dump, with one entry by entry.
   */
  zeroCounters?: boolean | undefined;
}

const READ_KEYS = new Set(['zeroCounters']);

function readOptions(options: unknown, op: string): { zeroCounters: boolean } {
  const o = checkOptions(options, op);
  checkKnownKeys(o, READ_KEYS, op, 'option');
  return { zeroCounters: checkBoolean(own(o, 'zeroCounters'), op, 'zeroCounters') === true };
}

const OPEN_KEYS = new Set(['netns']);
const LABELS_DISABLED = "connection labels are not enabled in this namespace: the kernel keeps labels only once a rule there sets one (nft 'add rule inet filter output ct label set NAME', or iptables -m connlabel --set)";
/** What the kernel's refusals of an update mean. */
const UPDATE_DETAILS = {
  ENOENT: 'no such conntrack entry to update',
  ENOSPC: LABELS_DISABLED,
  EPERM: "the entry's timeout is fixed (status FIXED_TIMEOUT): the kernel refuses to change it",
  EBUSY: 'the entry changed status while it was updated (the kernel refuses to clear a flag): try again',
};
const FLUSH_KEYS = new Set(['family']);

/** What close() rejects pending calls with: the native layer's EBADF, so each call names it as its own op (wrapNative). */
function closedError(): Error {
  return Object.assign(new Error('the handle was closed'), { errno: constants.errno.EBADF });
}

/** `work`, or the rejection close() hands to `pending` if it comes first (the work itself is then ignored). */
function unlessClosed<T>(work: Promise<T>, pending: Set<(e: Error) => void>): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    pending.add(reject);
    work.then(
      (v) => {
        pending.delete(reject);
        resolve(v);
      },
      (e: unknown) => {
        pending.delete(reject);
        reject(e);
      },
    );
  });
}

/**
 * `target` (the native handle, or a cursor its dump() made) with every
 * promise its methods return ended by close() when still pending: a request
 * already on the thread pool finishes there (it holds its own socket), but
 * its caller hears EBADF, as a call made after close() does.
 */
function settledByClose<T extends object>(target: T, pending: Set<(e: Error) => void>): T {
  return new Proxy(target, {
    get(t, key) {
      const v: unknown = Reflect.get(t, key);
      if (typeof v !== 'function') return v;
      return (...args: unknown[]): unknown => {
        const r: unknown = v.apply(t, args);
        if (r instanceof Promise) return unlessClosed(r, pending);
        return key === 'dump' ? settledByClose(r as object, pending) : r;
      };
    },
  });
}

/** A namespace name under /run/netns, or an absolute path; never relative to the working directory. */
export function netnsPath(netns: unknown): string {
  if (typeof netns !== 'string' || netns.length === 0 || netns.length > 4096 || netns.includes('\0')) {
    throw ConntrackError.invalid('open', `netns must be a namespace name or an absolute path, got ${describe(netns)}`, 'netns');
  }
  if (netns.startsWith('/')) return netns;
  if (netns.includes('/') || netns === '.' || netns === '..') {
    throw ConntrackError.invalid('open', `netns ${describe(netns)} is neither a name (as \`ip netns list\` shows) nor an absolute path`, 'netns');
  }
  return `/run/netns/${netns}`;
}

/**
 * Creates `specs` in batches, without an ACK each (the bulk delete's path):
 * conntrack/testing's fill(). Not a method: a batch create has no place in
 * the handle's API (labels are not checked, as create() checks them).
 * Resolves the refusals, index and errno, empty when all were made. `op`
 * names the caller's operation in errors.
 */
export let createMany: (ct: Conntrack, specs: readonly CreateSpec[], op: string) => Promise<{ index: number; errno: number }[]>;

export class Conntrack implements AsyncDisposable {
  static {
    createMany = async (ct, specs, op) => {
      const native = specs.map((s) => encodeCreate(s));
      let flat: number[];
      try {
        flat = await ct.#check(op).createMany(native);
      } catch (e) {
        throw wrapNative(e, op);
      }
      const out: { index: number; errno: number }[] = [];
      for (let i = 0; i < flat.length; i += 2) out.push({ index: flat[i]!, errno: flat[i + 1]! });
      return out;
    };
  }

  readonly #native: NativeHandle;
  /** #native as calls use it: what they await ends with EBADF at close(). */
  readonly #guarded: NativeHandle;
  /** The rejections of the calls pending on #guarded. */
  readonly #pending = new Set<(e: Error) => void>();
  readonly #streams = new Set<{ close(): void }>();
  #closed = false;
  /** The held namespace's nsfs inode, its change time exact (what tells it from a later namespace given its number). */
  readonly #held: NsfsInode;
  /** The namespace given to open(), if any. */
  readonly netns: string | undefined;
  /** The namespace this handle holds, read from its own descriptor at open(); see namespaceState(). */
  readonly namespaceId: NamespaceId;
  /** The expectation table (conntrack -L/-G/-I/-D/-F expect); its events come from expectationEvents(). */
  readonly expectations: Expectations;

  private constructor(native: NativeHandle, netns: string | undefined, held: NsfsInode) {
    this.#native = native;
    this.#guarded = settledByClose(native, this.#pending);
    this.netns = netns;
    this.#held = held;
    this.namespaceId = namespaceIdOf(held);
    this.expectations = new Expectations(() => this.#check('expectations'));
  }

  /** Opens a handle on the conntrack table of `netns` (default: this process's namespace). */
  static async open(options: OpenOptions = {}): Promise<Conntrack> {
    const o = checkOptions(options, 'open');
    checkKnownKeys(o, OPEN_KEYS, 'open', 'option');
    const netnsOpt = own(o, 'netns');
    const path = netnsOpt === undefined ? undefined : netnsPath(netnsOpt);
    const netns = netnsOpt as string | undefined;
    const native = path === undefined ? new addon.Handle() : new addon.Handle(path);
    try {
      await native.open();
    } catch (e) {
      native.close();
      const named = path === `/run/netns/${netns}`;
      throw wrapNative(e, 'open', {
        ENOENT: named
          ? `network namespace '${netns}' not found (${path}): \`ip netns list\` shows the names, \`ip netns add ${netns}\` creates it`
          : `${path} does not exist`,
        EINVAL: `${path} is not a network namespace`,
        EACCES: capabilityAdvice(['CAP_SYS_ADMIN'], `opening ${path}`),
      });
    }
    let id: { dev: number; inode: number; ctimeSec: number; ctimeNsec: number };
    try {
      // Creating the first socket enters the namespace and talks to the kernel once:
      // permission problems surface here rather than on the first real call.
      await native.stats();
      id = await native.namespaceId();
    } catch (e) {
      native.close();
      throw wrapNative(e, 'open', { EPERM: netns ? capabilityAdvice(['CAP_NET_ADMIN', 'CAP_SYS_ADMIN'], `entering namespace '${netns}'`) : undefined });
    }
    return new Conntrack(native, netns, { dev: id.dev, inode: id.inode, ctimeNs: BigInt(id.ctimeSec) * 1_000_000_000n + BigInt(id.ctimeNsec) });
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** The handle for a call, whose pending requests close() ends; EBADF once closed, as those get. */
  #check(op: string): NativeHandle {
    this.#open(op);
    return this.#guarded;
  }

  /** The native handle itself, for the streams (they close with the handle: see close()). */
  #open(op: string): NativeHandle {
    if (this.#closed) throw ConntrackError.fromErrno(constants.errno.EBADF, op);
    return this.#native;
  }

  /** Streams the entries matching `filter`; memory stays flat however large the table. */
  dump(filter?: Filter, options: ReadOptions = {}): AsyncIterableIterator<Entry> {
    const compiled = compileFilter(filter, 'dump');
    const { zeroCounters } = readOptions(options, 'dump');
    const native = this.#check('dump');
    if (zeroCounters && compiled.empty) return iterateDump(native.dump({ ...compiled.kernel, zeroCounters }, compiled.match));
    const entries = iterateDump(native.dump(compiled.kernel, compiled.match));
    return zeroCounters ? this.#zeroEach(entries, 'dump') : entries;
  }

  /** All entries matching `filter`, as an array. */
  async list(filter?: Filter, options: ReadOptions = {}): Promise<Entry[]> {
    const compiled = compileFilter(filter, 'list');
    const { zeroCounters } = readOptions(options, 'list');
    const native = this.#check('list');
    const out: Entry[] = [];
    if (zeroCounters && !compiled.empty) {
      for await (const e of this.#zeroEach(iterateDump(native.dump(compiled.kernel, compiled.match)), 'list')) out.push(e);
      return out;
    }
    const cursor = native.dump({ ...compiled.kernel, zeroCounters }, compiled.match);
    for await (const buf of dumpBatches(cursor, 'list')) decodeEntries(buf, out);
    return out;
  }

  /**
   * Each matching entry read again with its counters reset in the same step:
   * a zeroing dump would reset every entry the kernel walks, matching or not.
   * Entries gone in between are skipped.
   */
  async *#zeroEach(entries: AsyncIterableIterator<Entry>, op: string): AsyncIterableIterator<Entry> {
    const native = this.#check(op);
    for await (const e of entries) {
      const { spec } = encodeFlowKey(e, op);
      spec.zeroCounters = true;
      let buf: Buffer | null;
      try {
        buf = await native.get(spec);
      } catch (err) {
        throw wrapNative(err, op);
      }
      if (buf) yield decodeOne(buf);
    }
  }

  /** Number of entries matching `filter`. Without a filter this is the kernel's counter: O(1). */
  async count(filter?: Filter): Promise<number> {
    const compiled = compileFilter(filter, 'count');
    const native = this.#check('count');
    try {
      if (compiled.empty) return (await native.stats()).count;
      const cursor = native.dump(compiled.kernel, compiled.match);
      try {
        return await cursor.count();
      } finally {
        cursor.close();
      }
    } catch (e) {
      throw wrapNative(e, 'count');
    }
  }

  /** Table size, limit, hash buckets and per-CPU counters (conntrack -S, -C). */
  async stats(): Promise<Stats> {
    const native = this.#check('stats');
    try {
      const [s, buckets] = await Promise.all([
        native.stats(),
        // Unreadable buckets are 0; a close() meanwhile ends the call as it ends any other.
        native.readFile('/proc/sys/net/netfilter/nf_conntrack_buckets').then(Number, (e: unknown) => (this.#closed ? Promise.reject(e) : 0)),
      ]);
      return { count: s.count, max: s.max, buckets, perCpu: s.perCpu };
    } catch (e) {
      throw wrapNative(e, 'stats');
    }
  }

  /** The entry with this key (an Entry, or { protocol, original, zone? }), or null when there is none. */
  async get(key: FlowKey): Promise<Entry | null> {
    // The kernel looks entries up by tuple alone: the id is checked, not sent.
    const { spec } = encodeFlowKey(key, 'get');
    try {
      const buf = await this.#check('get').get(spec);
      return buf ? decodeOne(buf) : null;
    } catch (e) {
      throw wrapNative(e, 'get');
    }
  }

  /**
   * Inserts an entry (conntrack -I). Rejects with EEXIST when the tuple is
   * taken. An Entry recreates what it was read as: tuples (a NATed one's
   * translation), state, status, mark, zones, labels, SCTP tags, timeout.
   */
  async create(spec: CreateSpec): Promise<void> {
    const native = encodeCreate(spec);
    const handle = this.#check('create');
    try {
      await handle.create(native);
    } catch (e) {
      throw wrapNative(e, 'create');
    }
    if (native.labels?.some((b) => b !== 0)) await this.#checkLabelsStuck(handle, native);
  }

  /**
   * The kernel creates an entry without its labels, and says nothing, where
   * labels are not enabled in the namespace (no rule sets one). Such an
   * entry is taken back and the create fails, rather than succeed without
   * what was asked.
   */
  async #checkLabelsStuck(handle: NativeHandle, spec: NativeEntrySpec): Promise<void> {
    const key: NativeEntrySpec = { family: spec.family, original: spec.original! };
    if (spec.zone !== undefined) key.zone = spec.zone;
    try {
      const buf = await handle.get(key);
      const entry = buf ? decodeOne(buf) : null;
      const got = labelBitmap(entry?.labels ?? [], 'create', 'labels');
      if (!entry || spec.labels!.every((b, i) => (got[i]! & b) === b)) return;
      await handle.delete({ ...key, id: entry.id });
    } catch (e) {
      throw wrapNative(e, 'create');
    }
    throw new ConntrackError('ENOSPC', 'create', `create: ${LABELS_DISABLED}; the entry was not kept (ENOSPC)`);
  }

  /**
   * Changes an entry (conntrack -U): timeout, state, status, mark, labels.
   * The entry is read first and only what differs is written (nothing when
   * nothing does); with an id (an Entry's), it must still be that flow.
   * Rejects with ENOENT when missing, or when a newer flow holds the tuple.
   */
  async update(spec: UpdateSpec): Promise<void> {
    const { key, id, change } = encodeUpdate(spec);
    let r;
    try {
      r = await this.#check('update').update(key, change, id);
    } catch (e) {
      throw wrapNative(e, 'update', UPDATE_DETAILS);
    }
    switch (r.result) {
      case 'missing':
        throw new ConntrackError('ENOENT', 'update', 'update: no such conntrack entry to update (ENOENT)');
      case 'replaced': {
        const now = decodeOne(r.record!);
        throw new ConntrackError('ENOENT', 'update', `update: the flow with id ${id} is gone: a newer flow (id ${now.id}) holds its tuple, and was left alone (ENOENT)`);
      }
      case 'fixedTimeout':
        throw ConntrackError.fromErrno(constants.errno.EPERM, 'update', `${UPDATE_DETAILS.EPERM}; leave timeout out (an Entry carries the one it was read with)`);
      default:
    }
  }

  /**
   * Updates every entry matching `filter` (conntrack -U with filters): the
   * change is computed on each entry as it is read, and entries it would not
   * change are left alone. Streams as the bulk deletes do.
   */
  async updateWhere(filter: Filter, changes: UpdateChanges, options: UpdateOptions = {}): Promise<UpdateResult> {
    const op = 'updateWhere';
    if (filter === undefined || filter === null || typeof filter !== 'object' || Array.isArray(filter)) {
      throw ConntrackError.invalid(op, 'a filter object is required ({} with { all: true } for every entry)');
    }
    return updateMatching(this.#check(op), filter, changes, options, op, UPDATE_DETAILS);
  }

  /**
   * Deletes one entry (conntrack -D with a full tuple). Given an Entry (or a
   * key with an id), the id is sent too, so a newer flow that reuses the
   * tuple is left alone. Resolves false when the entry was already gone.
   */
  async delete(key: FlowKey): Promise<boolean> {
    const { spec, id } = encodeFlowKey(key, 'delete');
    if (id !== undefined) spec.id = id;
    try {
      return await this.#check('delete').delete(spec);
    } catch (e) {
      throw wrapNative(e, 'delete');
    }
  }

  /** Removes every entry (conntrack -F), or those of one family. */
  async flush(options: FlushOptions = {}): Promise<void> {
    const o = checkOptions(options, 'flush');
    checkKnownKeys(o, FLUSH_KEYS, 'flush', 'option');
    const familyOpt = own(o, 'family');
    const family = familyOpt === undefined ? 0 : checkFamily(familyOpt, 'flush');
    try {
      await this.#check('flush').flush({ family });
    } catch (e) {
      throw wrapNative(e, 'flush');
    }
  }

  /**
   * Deletes every entry whose source is `source` (an address, a CIDR, or a
   * list of them), like `conntrack -D -s ADDR` for many addresses at once.
   */
  async deleteBySource(source: string | readonly string[], options: DeleteOptions = {}): Promise<DeleteResult> {
    const op = 'deleteBySource';
    const o = checkOptions(options, op);
    checkKnownKeys(o, DELETE_OPTION_KEYS, op, 'option');
    const direction = own(o, 'direction') ?? 'original';
    if (direction !== 'original' && direction !== 'reply' && direction !== 'either') {
      throw ConntrackError.invalid(op, `direction must be 'original', 'reply' or 'either', got ${describe(direction)}`);
    }
    if (typeof source !== 'string' && !Array.isArray(source)) {
      throw ConntrackError.invalid(op, 'source must be an address, a CIDR or a list of them');
    }
    const filter: Filter = { src: source };
    return deleteMatching(this.#check(op), filter, o, op, direction);
  }

  /** Deletes every entry matching `filter` (any dump Filter). */
  async deleteWhere(filter: Filter, options: Omit<DeleteOptions, 'direction'> = {}): Promise<DeleteResult> {
    const op = 'deleteWhere';
    const o = checkOptions(options, op);
    checkKnownKeys(o, DELETE_WHERE_OPTION_KEYS, op, 'option');
    if (filter === undefined || filter === null || typeof filter !== 'object' || Array.isArray(filter)) {
      throw ConntrackError.invalid(op, 'a filter object is required (use flush() to delete everything)');
    }
    return deleteMatching(this.#check(op), filter, o, op, 'original');
  }

  /** Live NEW/UPDATE/DESTROY events; see EventOptions. */
  events(options: EventOptions = {}): ConntrackEventStream {
    return this.#track(new ConntrackEventStream(this.#open('events'), options, this.#untrack));
  }

  /** Flow records for logging ('start', 'end', 'lost'), plain JSON; see FlowOptions and flows.ts. */
  flows(options: FlowOptions = {}): FlowStream {
    return new FlowStream(this, options);
  }

  /** Live expectation events (conntrack -E expect): 'expect-new', 'expect-destroy', and overruns as events() reports them. */
  expectationEvents(options: ExpectationEventOptions = {}): ConntrackEventStream<ExpectationStreamEvent> {
    return this.#track(new ConntrackEventStream<ExpectationStreamEvent>(this.#open('expectationEvents'), options, this.#untrack, 'expectations'));
  }

  /**
   * The table kept in memory from events (subscribe, dump, replay; resynced
   * after losses): counts by state, source and destination at no cost per
   * read, and with `entries: true` each entry by either tuple. See LiveTable.
   */
  liveTable(options: LiveTableOptions = {}): LiveTable {
    return this.#track(new LiveTable(this, this.#open('liveTable'), options, this.#untrack));
  }

  /** Keeps a stream for close(); one closed already (an aborted signal) is not kept. */
  #track<S extends { readonly closed: boolean; close(): void }>(stream: S): S {
    if (!stream.closed) this.#streams.add(stream);
    return stream;
  }

  readonly #untrack = (stream: { close(): void }): void => {
    this.#streams.delete(stream);
  };

  /** Reads net.netfilter.NAME in the handle's namespace, e.g. 'nf_conntrack_max'. */
  async readSysctl(name: string): Promise<string> {
    const path = sysctlPath(name, 'readSysctl');
    try {
      return (await this.#check('readSysctl').readFile(path)).trim();
    } catch (e) {
      throw wrapNative(e, 'readSysctl', { ENOENT: `no sysctl ${name} in this kernel` });
    }
  }

  /** Writes net.netfilter.NAME in the handle's namespace (some are global: only writable from the initial namespace). */
  async writeSysctl(name: string, value: string | number): Promise<void> {
    const op = 'writeSysctl';
    const path = sysctlPath(name, op);
    if (typeof value !== 'number' && typeof value !== 'string') throw ConntrackError.invalid(op, 'value must be a string or number', 'value');
    try {
      await this.#check(op).writeFile(path, String(value));
    } catch (e) {
      const err = wrapNative(e, op, {
        ENOENT: `no sysctl ${name} in this kernel`,
        EACCES: `${name} is read-only here (global settings can only be changed from the initial namespace)`,
        EROFS: readOnlyProcSysAdvice(path),
      });
      if (err.code !== 'EINVAL') throw err;
      const now = await this.readSysctl(name).catch(() => undefined);
      const held = now === undefined ? '' : ` (it holds ${now} now)`;
      throw new ConntrackError('EINVAL', op, `${op}: the kernel refused ${describe(String(value))} for ${name}: it takes ${sysctlValues(name)}${held} (EINVAL)`, { cause: e });
    }
  }

  /**
   * Whether net.netfilter.NAME can be written in the handle's namespace.
   * Host-wide settings (nf_conntrack_max, nf_conntrack_buckets,
   * nf_conntrack_expect_max) are read-only outside the initial namespace.
   */
  async sysctlWritable(name: string): Promise<boolean> {
    const path = sysctlPath(name, 'sysctlWritable');
    try {
      // The mode says what the kernel allows; a read-only mount (a container's /proc/sys) refuses it anyway.
      return ((await this.#check('sysctlWritable').statMode(path)) & 0o222) !== 0 && procSysWritable(path);
    } catch (e) {
      throw wrapNative(e, 'sysctlWritable', { ENOENT: `no sysctl ${name} in this kernel` });
    }
  }

  /** Per-direction packet/byte counters on entries and DESTROY events (net.netfilter.nf_conntrack_acct). */
  async setAccounting(enabled: boolean): Promise<void> {
    await this.writeSysctl('nf_conntrack_acct', enabled ? 1 : 0);
  }

  /** Start/stop timestamps on entries and DESTROY events (net.netfilter.nf_conntrack_timestamp). */
  async setTimestamps(enabled: boolean): Promise<void> {
    await this.writeSysctl('nf_conntrack_timestamp', enabled ? 1 : 0);
  }

  /**
   * The process that owns netlink port `portid` in the handle's namespace
   * (an event's `portid`), or undefined when no process holds it any more.
   */
  async processOf(portid: number): Promise<PortOwner | undefined> {
    checkUint(portid, 0xffffffff, 'processOf', 'portid');
    try {
      return await this.#check('processOf').processOf(portid);
    } catch (e) {
      throw wrapNative(e, 'processOf');
    }
  }

  /**
   * Whether the handle's `netns` still names the namespace the handle holds
   * (compares `namespaceId` with what the name resolves to now). A handle on
   * the process's own namespace is always `same`. Works on a closed handle.
   */
  async namespaceState(): Promise<NamespaceState> {
    if (this.netns === undefined) return { state: 'same' };
    const path = netnsPath(this.netns);
    try {
      const [st, fs] = await Promise.all([stat(path, { bigint: true }), statfs(path)]);
      // A name whose bind mount is gone (ip netns delete, or add half done) is a plain file, or nothing.
      if (fs.type !== NSFS_MAGIC) return { state: 'gone' };
      const now: NsfsInode = { dev: Number(st.dev), inode: Number(st.ino), ctimeNs: st.ctimeNs };
      const held = this.#held;
      if (now.dev === held.dev && now.inode === held.inode && now.ctimeNs === held.ctimeNs) return { state: 'same' };
      return { state: 'replaced', current: namespaceIdOf(now) };
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') return { state: 'gone' };
      throw new ConntrackError(code ?? 'EIO', 'namespaceState', `namespaceState: cannot stat ${path}: ${(e as Error).message}`);
    }
  }

  /**
   * Closes the handle and every event stream opened from it. Every call
   * still pending rejects with EBADF, as every call made after does (a
   * request already sent may have taken effect in the kernel). Idempotent.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const s of this.#streams) s.close();
    this.#native.close();
    const closed = closedError();
    for (const reject of this.#pending) reject(closed);
    this.#pending.clear();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.close();
  }
}

/** net.netfilter settings that are on/off switches (proc_dou8vec_minmax 0..1), and the event mode (0..2). */
const SYSCTL_SWITCHES = new Set(['nf_conntrack_acct', 'nf_conntrack_timestamp', 'nf_conntrack_checksum', 'nf_conntrack_helper', 'nf_conntrack_tcp_loose', 'nf_conntrack_tcp_be_liberal', 'nf_conntrack_tcp_ignore_invalid_rst', 'nf_hooks_lwtunnel']);

/** What the kernel accepts for net.netfilter.NAME: every one is a decimal integer, most within a range. */
function sysctlValues(name: string): string {
  if (SYSCTL_SWITCHES.has(name)) return '0 or 1';
  if (name === 'nf_conntrack_events') return '0, 1 or 2';
  if (name.includes('_timeout')) return 'a whole number of seconds';
  return 'a decimal integer within its range';
}

function sysctlPath(name: unknown, op: string): string {
  if (typeof name !== 'string' || !/^[a-z0-9_]+$/.test(name)) throw ConntrackError.invalid(op, `invalid sysctl name ${describe(name)}`);
  return `/proc/sys/net/netfilter/${name}`;
}

