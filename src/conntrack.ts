/**
 * The Conntrack handle: dump, list, count, stats, get, create, update,
 * delete, flush, bulk deletes and event streams, in any network namespace.
 */
import { checkBoolean, checkFamily, checkKnownKeys, checkOptions, checkProtocol, checkSignal, checkUint, describe, own, toList } from './check.js';
import { stateIndex, stateTable, statusBits, type Entry, type Family, type ProtocolName, type StateName, type StatusFlag, type Tuple } from './entry.js';
import { ConntrackError, wrapNative } from './errors.js';
import { ConntrackEventStream, type EventOptions } from './events.js';
import { compileFilter, type Direction, type Filter } from './filter.js';
import { addon, type NativeCpuStats, type NativeDumpCursor, type NativeEntrySpec, type NativeHandle } from './native.js';
import type { PortOwner } from './process.js';
import { dataViewOf, decodeEntries, decodeEntry, RECORD_SIZE } from './record.js';
import { encodeTuple, invertTuple } from './tuple.js';

export interface OpenOptions {
  /** A name under /run/netns (as `ip netns add NAME` creates) or an absolute path such as /proc/PID/ns/net. */
  netns?: string;
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

/**
 * What identifies one entry: get(), update() and delete() take it, and an
 * Entry (from list(), dump(), get() or an event) is one. `original.zone` /
 * `reply.zone` are zones of one direction (conntrack --orig-zone/--reply-zone).
 */
export interface FlowKey {
  protocol: ProtocolName | number;
  original: Tuple;
  /** The zone of both directions (conntrack -w). */
  zone?: number;
  /** With delete(): only delete if the entry still has this id (an Entry's id is sent). */
  id?: number;
}

export interface CreateSpec {
  protocol: ProtocolName | number;
  original: Tuple;
  /** Derived from `original` (addresses and ports swapped, ICMP echo -> echo reply) when omitted. */
  reply?: Tuple;
  /**
   * Seconds, at least 1. The kernel caps it at INT_MAX jiffies (about 24.8
   * days at HZ=1000, 99 days at HZ=250) without saying so.
   */
  timeout: number;
  state?: StateName;
  status?: readonly StatusFlag[];
  mark?: number;
  /** The zone of both directions; a zone of one direction goes in original.zone or reply.zone. */
  zone?: number;
}

export interface UpdateSpec {
  protocol: ProtocolName | number;
  original: Tuple;
  zone?: number;
  /** Seconds, at least 1 (capped by the kernel as for create()). */
  timeout?: number;
  state?: StateName;
  status?: readonly StatusFlag[];
  mark?: number;
}

export interface FlushOptions {
  family?: Family;
}

export interface DeleteOptions {
  /** Which tuple's source to match (deleteBySource only); default 'original' like `conntrack -D -s`. */
  direction?: Direction;
  family?: Family;
  zone?: number;
  protocol?: ProtocolName | number;
  /** Count what would be deleted, delete nothing. */
  dryRun?: boolean;
  /**
   * Required when the filter selects every entry whatever its syntax
   * (0.0.0.0/0 and ::/0, a mark mask of 0...): a bulk delete that empties the
   * table must be meant. flush() is the direct way.
   */
  all?: boolean;
  signal?: AbortSignal;
}

export interface DeleteFailure {
  entry: Entry;
  error: ConntrackError;
}

export interface DeleteResult {
  /** Entries that matched when the table was read. */
  matched: number;
  /** Entries this call deleted. */
  deleted: number;
  /** Matched entries that were gone (expired or deleted elsewhere) by the time of their delete. */
  alreadyGone: number;
  /** Deletes the kernel refused for another reason than ENOENT. */
  failed: DeleteFailure[];
}

/** Records per native batch: ~400 KiB, small enough to keep a dump's memory flat. */
const DUMP_BATCH = 2048;

const OPEN_KEYS = new Set(['netns']);
const CREATE_KEYS = new Set(['protocol', 'original', 'reply', 'timeout', 'state', 'status', 'mark', 'zone']);
const UPDATE_KEYS = new Set(['protocol', 'original', 'zone', 'timeout', 'state', 'status', 'mark']);
const DELETE_OPTION_KEYS = new Set(['direction', 'family', 'zone', 'protocol', 'dryRun', 'all', 'signal']);
const DELETE_WHERE_OPTION_KEYS = new Set(['family', 'zone', 'protocol', 'dryRun', 'all', 'signal']);
const FLUSH_KEYS = new Set(['family']);

/** A namespace name under /run/netns, or an absolute path; never relative to the working directory. */
function netnsPath(netns: unknown): string {
  if (typeof netns !== 'string' || netns.length === 0 || netns.length > 4096 || netns.includes('\0')) {
    throw ConntrackError.invalid('open', `netns must be a namespace name or an absolute path, got ${describe(netns)}`);
  }
  if (netns.startsWith('/')) return netns;
  if (netns.includes('/') || netns === '.' || netns === '..') {
    throw ConntrackError.invalid('open', `netns ${describe(netns)} is neither a name (as \`ip netns list\` shows) nor an absolute path`);
  }
  return `/run/netns/${netns}`;
}

const IPS_CONFIRMED = 1 << 3;

function stateNumber(state: unknown, protocol: number, op: string): number {
  const table = stateTable(protocol);
  if (!table) throw ConntrackError.invalid(op, `protocol ${protocol} has no state`);
  const n = typeof state === 'string' ? stateIndex(protocol, state) : -1;
  if (n < 0) throw ConntrackError.invalid(op, `unknown state ${describe(state)} (one of ${table.join(', ')})`);
  return n;
}

function checkStatus(status: unknown, op: string): number {
  if (!Array.isArray(status)) throw ConntrackError.invalid(op, 'status must be a list of flag names');
  return statusBits(toList(status), (m) => ConntrackError.invalid(op, m));
}

function checkTimeout(v: unknown, op: string): number {
  const t = checkUint(v, 0xffffffff, op, 'timeout');
  // The kernel accepts 0 and the entry expires at once: never what was meant.
  if (t === 0) throw ConntrackError.invalid(op, 'timeout must be at least 1 second (delete() removes an entry)');
  return t;
}

/** Protocol, original tuple and the zones of a key or spec, checked together. */
function keySpec(o: object, op: string): { protocol: number; spec: NativeEntrySpec } {
  const protocolOpt = own(o, 'protocol');
  if (protocolOpt === undefined) throw ConntrackError.invalid(op, 'protocol is required');
  const protocol = checkProtocol(protocolOpt, op);
  const { tuple, family } = encodeTuple(own(o, 'original'), protocol, op, 'original');
  const spec: NativeEntrySpec = { family, original: tuple };
  const zone = own(o, 'zone');
  if (zone !== undefined) spec.zone = checkUint(zone, 65535, op, 'zone');
  return { protocol, spec };
}

/**
 * A FlowKey for get() and delete(): protocol, original tuple and zones, plus
 * the id when one is given (checked for both; only delete() sends it).
 * Extra fields are fine: an Entry is a key.
 */
function flowKey(key: unknown, op: string): { spec: NativeEntrySpec; id: number | undefined } {
  const k = checkOptions(key, op, 'key');
  const { spec } = keySpec(k, op);
  checkOneZone(spec, op);
  const id = own(k, 'id');
  return { spec, id: id === undefined ? undefined : checkUint(id, 0xffffffff, op, 'id') };
}

/** The kernel holds one zone per entry: for both directions, or for one of them. */
function checkOneZone(spec: NativeEntrySpec, op: string): void {
  const both = spec.zone ?? 0;
  const orig = spec.original?.zone;
  const reply = spec.reply?.zone;
  const set = [both !== 0, orig !== undefined, reply !== undefined].filter(Boolean).length;
  if (set > 1) throw ConntrackError.invalid(op, 'an entry has one zone: give zone (both directions), original.zone or reply.zone, not several');
}

export class Conntrack implements AsyncDisposable {
  readonly #native: NativeHandle;
  readonly #streams = new Set<ConntrackEventStream>();
  #closed = false;
  /** The namespace given to open(), if any. */
  readonly netns: string | undefined;

  private constructor(native: NativeHandle, netns: string | undefined) {
    this.#native = native;
    this.netns = netns;
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
        EACCES: `cannot open ${path}: run as root`,
      });
    }
    const ct = new Conntrack(native, netns);
    try {
      // Creating the first socket enters the namespace and talks to the kernel once:
      // permission problems surface here rather than on the first real call.
      await native.stats();
    } catch (e) {
      native.close();
      throw wrapNative(e, 'open', { EPERM: netns ? `needs CAP_NET_ADMIN and CAP_SYS_ADMIN (to enter namespace '${netns}'): run as root` : undefined });
    }
    return ct;
  }

  get closed(): boolean {
    return this.#closed;
  }

  #check(op: string): NativeHandle {
    if (this.#closed) throw new ConntrackError('EBADF', op, `${op}: the handle is closed`);
    return this.#native;
  }

  /** Streams the entries matching `filter`; memory stays flat however large the table. */
  dump(filter?: Filter): AsyncIterableIterator<Entry> {
    const compiled = compileFilter(filter, 'dump');
    const native = this.#check('dump');
    return iterateDump(native.dump(compiled.kernel, compiled.match));
  }

  /** All entries matching `filter`, as an array. */
  async list(filter?: Filter): Promise<Entry[]> {
    const compiled = compileFilter(filter, 'list');
    const cursor = this.#check('list').dump(compiled.kernel, compiled.match);
    const out: Entry[] = [];
    for await (const buf of dumpBatches(cursor, 'list')) decodeEntries(buf, out);
    return out;
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
        native.readFile('/proc/sys/net/netfilter/nf_conntrack_buckets').then(Number, () => 0),
      ]);
      return { count: s.count, max: s.max, buckets, perCpu: s.perCpu };
    } catch (e) {
      throw wrapNative(e, 'stats');
    }
  }

  /** The entry with this key (an Entry, or { protocol, original, zone? }), or null when there is none. */
  async get(key: FlowKey): Promise<Entry | null> {
    // The kernel looks entries up by tuple alone: the id is checked, not sent.
    const { spec } = flowKey(key, 'get');
    try {
      const buf = await this.#check('get').request('get', spec);
      return buf ? decodeEntry(buf, dataViewOf(buf), 0) : null;
    } catch (e) {
      const err = wrapNative(e, 'get');
      if (err.code === 'ENOENT') return null;
      throw err;
    }
  }

  #entrySpec(input: unknown, op: 'create' | 'update'): NativeEntrySpec {
    const o = checkOptions(input, op, 'spec');
    checkKnownKeys(o, op === 'create' ? CREATE_KEYS : UPDATE_KEYS, op, 'spec');
    const { protocol, spec } = keySpec(o, op);
    if (op === 'create') {
      const timeout = own(o, 'timeout');
      if (timeout === undefined) throw ConntrackError.invalid(op, 'timeout (seconds) is required');
      const replyOpt = own(o, 'reply');
      if (replyOpt !== undefined) {
        const reply = encodeTuple(replyOpt, protocol, op, 'reply');
        if (reply.family !== spec.family) throw ConntrackError.invalid(op, 'original and reply must be of the same family');
        spec.reply = reply.tuple;
      } else {
        spec.reply = invertTuple(spec.original!, protocol);
      }
    }
    const timeout = own(o, 'timeout');
    if (timeout !== undefined) spec.timeout = checkTimeout(timeout, op);
    const state = own(o, 'state');
    // The kernel takes an SCTP state only together with both verification
    // tags, and this API does not carry them yet: an update would overwrite a
    // live association's tags with 0. (create() sends 0 tags: a new entry has
    // no association to break.)
    if (state !== undefined && op === 'update' && protocol === 132) {
      throw ConntrackError.invalid(op, "an SCTP entry's state cannot be updated without its verification tags (the kernel would reset them to 0)");
    }
    if (state !== undefined) spec.state = stateNumber(state, protocol, op);
    // The kernel refuses (EBUSY) a status that would clear CONFIRMED; libnetfilter_conntrack sets it too.
    const status = own(o, 'status');
    if (status !== undefined) spec.status = (checkStatus(status, op) | IPS_CONFIRMED) >>> 0;
    const mark = own(o, 'mark');
    if (mark !== undefined) spec.mark = checkUint(mark, 0xffffffff, op, 'mark');
    checkOneZone(spec, op);
    return spec;
  }

  /** Inserts an entry (conntrack -I). Rejects with EEXIST when the tuple is taken. */
  async create(spec: CreateSpec): Promise<void> {
    const native = this.#entrySpec(spec, 'create');
    try {
      await this.#check('create').request('create', native);
    } catch (e) {
      throw wrapNative(e, 'create');
    }
  }

  /** Changes timeout, mark, status or state of an entry (conntrack -U). Rejects with ENOENT when missing. */
  async update(spec: UpdateSpec): Promise<void> {
    const native = this.#entrySpec(spec, 'update');
    try {
      await this.#check('update').request('update', native);
    } catch (e) {
      throw wrapNative(e, 'update', { ENOENT: 'no such conntrack entry to update' });
    }
  }

  /**
   * Deletes one entry (conntrack -D with a full tuple). Given an Entry (or a
   * key with an id), the id is sent too, so a newer flow that reuses the
   * tuple is left alone. Resolves false when the entry was already gone.
   */
  async delete(key: FlowKey): Promise<boolean> {
    const { spec, id } = flowKey(key, 'delete');
    if (id !== undefined) spec.id = id;
    try {
      return await this.#check('delete').request('delete', spec);
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
      await this.#check('flush').request('flush', { family });
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
    return this.#deleteMatching(filter, o, op, direction);
  }

  /** Deletes every entry matching `filter` (any dump Filter). */
  async deleteWhere(filter: Filter, options: Omit<DeleteOptions, 'direction'> = {}): Promise<DeleteResult> {
    const op = 'deleteWhere';
    const o = checkOptions(options, op);
    checkKnownKeys(o, DELETE_WHERE_OPTION_KEYS, op, 'option');
    if (filter === undefined || filter === null || typeof filter !== 'object' || Array.isArray(filter)) {
      throw ConntrackError.invalid(op, 'a filter object is required (use flush() to delete everything)');
    }
    return this.#deleteMatching(filter, o, op, 'original');
  }

  async #deleteMatching(base: Filter, o: object, op: string, direction: Direction): Promise<DeleteResult> {
    // Every option is read (getters run) before any work starts: what they throw is the caller's own error.
    const filter: Filter = {};
    for (const k of Reflect.ownKeys(base)) (filter as Record<PropertyKey, unknown>)[k] = (base as Record<PropertyKey, unknown>)[k];
    for (const k of ['family', 'zone', 'protocol'] as const) {
      const v = own(o, k);
      if (v !== undefined) (filter as Record<string, unknown>)[k] = v;
    }
    const dryRun = checkBoolean(own(o, 'dryRun'), op, 'dryRun') === true;
    const all = checkBoolean(own(o, 'all'), op, 'all') === true;
    const signal = checkSignal(own(o, 'signal'), op);
    const compiled = compileFilter(filter, op, direction);
    // A filter that selects everything is a flush: make the caller say so.
    if (compiled.matchesAll && !all) {
      throw ConntrackError.invalid(op, 'the filter matches every entry: pass { all: true } to delete them all, or use flush()');
    }
    const native = this.#check(op);
    if (signal?.aborted) throw new ConntrackError('ECANCELED', op, `${op}: aborted before it started`, { cause: signal.reason });
    const cursor = native.dump(compiled.kernel, compiled.match);
    const onAbort = (): void => cursor.cancel();
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      if (dryRun) return { matched: await cursor.count(), deleted: 0, alreadyGone: 0, failed: [] };
      const r = await cursor.deleteStreaming();
      return {
        matched: r.matched,
        deleted: r.deleted,
        alreadyGone: r.alreadyGone,
        failed: r.failed.map((f) => ({
          entry: decodeEntry(f.record, dataViewOf(f.record), 0),
          error: ConntrackError.fromErrno(f.errno, op),
        })),
      };
    } catch (e) {
      if (signal?.aborted) throw new ConntrackError('ECANCELED', op, `${op}: aborted`, { cause: signal.reason });
      throw wrapNative(e, op);
    } finally {
      signal?.removeEventListener('abort', onAbort);
      cursor.close();
    }
  }

  /** Live NEW/UPDATE/DESTROY events; see EventOptions. */
  events(options: EventOptions = {}): ConntrackEventStream {
    const stream = new ConntrackEventStream(this.#check('events'), options, () => this.#streams.delete(stream));
    this.#streams.add(stream);
    return stream;
  }

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
    const path = sysctlPath(name, 'writeSysctl');
    if (typeof value !== 'number' && typeof value !== 'string') throw ConntrackError.invalid('writeSysctl', 'value must be a string or number');
    try {
      await this.#check('writeSysctl').writeFile(path, String(value));
    } catch (e) {
      throw wrapNative(e, 'writeSysctl', {
        ENOENT: `no sysctl ${name} in this kernel`,
        EACCES: `${name} is read-only here (global settings can only be changed from the initial namespace)`,
      });
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
      return ((await this.#check('sysctlWritable').statMode(path)) & 0o222) !== 0;
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

  /** Closes the handle and every event stream opened from it. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const s of this.#streams) s.close();
    this.#native.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.close();
  }
}

function sysctlPath(name: unknown, op: string): string {
  if (typeof name !== 'string' || !/^[a-z0-9_]+$/.test(name)) throw ConntrackError.invalid(op, `invalid sysctl name ${describe(name)}`);
  return `/proc/sys/net/netfilter/${name}`;
}

/**
 * The record batches of a native dump cursor, the next one already requested
 * while the caller works on the current one. Closes the cursor however the
 * caller stops.
 */
async function* dumpBatches(cursor: NativeDumpCursor, op: string): AsyncGenerator<Buffer, void, undefined> {
  let pending: Promise<Buffer | null> | undefined = cursor.next(DUMP_BATCH);
  try {
    for (;;) {
      let buf: Buffer | null;
      try {
        buf = await pending!;
      } catch (e) {
        pending = undefined;
        throw wrapNative(e, op);
      }
      if (buf === null) {
        pending = undefined;
        return;
      }
      pending = cursor.next(DUMP_BATCH);
      yield buf;
    }
  } finally {
    // A consumer that stops early leaves one batch in flight: it ends with ECANCELED, ignore it.
    pending?.catch(() => undefined);
    cursor.close();
  }
}

/** Async iteration over a dump, one batch decoded at a time. */
async function* iterateDump(cursor: NativeDumpCursor): AsyncGenerator<Entry, void, undefined> {
  for await (const buf of dumpBatches(cursor, 'dump')) {
    const dv = dataViewOf(buf);
    for (let off = 0; off + RECORD_SIZE <= buf.length; off += RECORD_SIZE) yield decodeEntry(buf, dv, off);
  }
}
