/**
 * The Conntrack handle: dump, list, count, stats, get, create, update,
 * delete, flush, bulk deletes and event streams, in any network namespace.
 */
import { parseHost } from './address.js';
import {
  stateIndex, stateTable, statusBits, type Entry, type Family, type IcmpInfo, type ProtocolName,
  type StatusFlag,
} from './entry.js';
import { ConntrackError, wrapNative } from './errors.js';
import { ConntrackEventStream, type EventOptions } from './events.js';
import { checkFamily, checkProtocol, checkUint, compileFilter, type Direction, type Filter } from './filter.js';
import { addon, type NativeCpuStats, type NativeDumpCursor, type NativeEntrySpec, type NativeHandle, type NativeTuple } from './native.js';
import { findSocketOwner, parseNetlinkTable, type PortOwner } from './process.js';
import { dataViewOf, decodeEntries, decodeEntry, RECORD_SIZE } from './record.js';

export interface OpenOptions {
  /** A name under /run/netns (as `ip netns add NAME` creates) or a path such as /proc/PID/ns/net. */
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

/** A tuple plus what identifies the entry: used by get() and delete(). */
export interface TupleQuery {
  protocol: ProtocolName | number;
  src: string;
  dst: string;
  sport?: number;
  dport?: number;
  icmp?: IcmpInfo;
  zone?: number;
  /** With delete(): only delete if the entry still has this id. */
  id?: number;
}

export interface TupleSpec {
  src: string;
  dst: string;
  sport?: number;
  dport?: number;
  icmp?: IcmpInfo;
}

export interface CreateSpec {
  protocol: ProtocolName | number;
  original: TupleSpec;
  /** Derived from `original` (addresses and ports swapped, ICMP echo -> echo reply) when omitted. */
  reply?: TupleSpec;
  /** Seconds. */
  timeout: number;
  state?: string;
  status?: readonly StatusFlag[];
  mark?: number;
  zone?: number;
}

export interface UpdateSpec {
  protocol: ProtocolName | number;
  original: TupleSpec;
  zone?: number;
  timeout?: number;
  state?: string;
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

const ICMP_REPLY_TYPES: Record<number, number> = { 8: 0, 13: 14, 15: 16, 17: 18 };
const ICMPV6_REPLY_TYPES: Record<number, number> = { 128: 129, 139: 140 };

function netnsPath(netns: string): string {
  return netns.includes('/') ? netns : `/run/netns/${netns}`;
}

function checkNetns(netns: unknown): string {
  if (typeof netns !== 'string' || netns.length === 0 || netns.includes('\0') || netns === '.' || netns === '..') {
    throw ConntrackError.invalid('open', `netns must be a namespace name or a path, got ${JSON.stringify(netns)}`);
  }
  return netns;
}

function isEntry(v: unknown): v is Entry {
  return typeof v === 'object' && v !== null && 'original' in v && 'reply' in v && 'family' in v;
}

const IPS_CONFIRMED = 1 << 3;
const PORT_PROTOCOLS = new Set([6, 17, 33, 132, 136]);

/** Converts a tuple of a known protocol, checking each field; the family comes from the addresses. */
function nativeTuple(t: unknown, protocol: number, op: string, what: string): { tuple: NativeTuple; family: 2 | 10 } {
  if (typeof t !== 'object' || t === null) throw ConntrackError.invalid(op, `${what} must be an object with src and dst`);
  const tt = t as Partial<TupleSpec>;
  const src = parseHost(tt.src, op, `${what}.src`);
  const dst = parseHost(tt.dst, op, `${what}.dst`);
  if (src.family !== dst.family) throw ConntrackError.invalid(op, `${what}: src and dst must both be IPv4 or both IPv6`);
  const family = src.family === 4 ? 2 : 10;
  const tuple: NativeTuple = { src: Buffer.from(src.bytes), dst: Buffer.from(dst.bytes), protocol };
  if (PORT_PROTOCOLS.has(protocol)) {
    if (tt.sport === undefined || tt.dport === undefined) throw ConntrackError.invalid(op, `${what}: sport and dport are required for this protocol`);
    tuple.sport = checkUint(tt.sport, 65535, op, `${what}.sport`);
    tuple.dport = checkUint(tt.dport, 65535, op, `${what}.dport`);
  } else if (protocol === 1 || protocol === 58) {
    if ((protocol === 1) !== (family === 2)) throw ConntrackError.invalid(op, `${what}: ${protocol === 1 ? 'icmp needs IPv4' : 'icmpv6 needs IPv6'} addresses`);
    const icmp = tt.icmp;
    if (typeof icmp !== 'object' || icmp === null) throw ConntrackError.invalid(op, `${what}.icmp { type, code, id } is required for ICMP`);
    tuple.icmpType = checkUint(icmp.type, 255, op, `${what}.icmp.type`);
    tuple.icmpCode = checkUint(icmp.code, 255, op, `${what}.icmp.code`);
    tuple.icmpId = checkUint(icmp.id, 65535, op, `${what}.icmp.id`);
  } else if (tt.sport !== undefined || tt.dport !== undefined) {
    throw ConntrackError.invalid(op, `${what}: protocol ${protocol} has no ports`);
  }
  return { tuple, family };
}

/** The reply tuple the kernel would expect for `orig`: what conntrack -I derives when no reply is given. */
function invertTuple(orig: NativeTuple, protocol: number): NativeTuple {
  const reply: NativeTuple = { protocol };
  if (orig.src) reply.dst = orig.src;
  if (orig.dst) reply.src = orig.dst;
  if (orig.sport !== undefined) reply.dport = orig.sport;
  if (orig.dport !== undefined) reply.sport = orig.dport;
  if (orig.icmpType !== undefined) {
    const table = protocol === 1 ? ICMP_REPLY_TYPES : ICMPV6_REPLY_TYPES;
    reply.icmpType = table[orig.icmpType] ?? orig.icmpType;
    reply.icmpCode = orig.icmpCode ?? 0;
    reply.icmpId = orig.icmpId ?? 0;
  }
  return reply;
}

function stateNumber(state: unknown, protocol: number, op: string): number {
  const table = stateTable(protocol);
  if (!table) throw ConntrackError.invalid(op, `protocol ${protocol} has no state`);
  const n = typeof state === 'string' ? stateIndex(protocol, state) : -1;
  if (n < 0) throw ConntrackError.invalid(op, `unknown state ${JSON.stringify(state)} (one of ${table.join(', ')})`);
  return n;
}

function checkStatus(status: unknown, op: string): number {
  if (!Array.isArray(status)) throw ConntrackError.invalid(op, 'status must be a list of flag names');
  return statusBits(status as string[], op, (m) => ConntrackError.invalid(op, m));
}

function checkOptionsObject(o: unknown, op: string): void {
  if (o !== undefined && (typeof o !== 'object' || o === null || Array.isArray(o))) throw ConntrackError.invalid(op, 'options must be an object');
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
    checkOptionsObject(options, 'open');
    const netns = options.netns === undefined ? undefined : checkNetns(options.netns);
    const path = netns === undefined ? undefined : netnsPath(netns);
    let native: NativeHandle;
    try {
      native = path === undefined ? new addon.Handle() : new addon.Handle(path);
    } catch (e) {
      throw wrapNative(e, 'open', {
        ENOENT: `network namespace '${netns}' not found (${path}): create it with \`ip netns add ${netns}\``,
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

  #querySpec(q: unknown, op: string, withId: boolean): NativeEntrySpec {
    if (typeof q !== 'object' || q === null) throw ConntrackError.invalid(op, 'expected a tuple { protocol, src, dst, ... } or an Entry');
    if (isEntry(q)) {
      const protocol = checkProtocol(q.protocol, op);
      const { tuple, family } = nativeTuple(q.original, protocol, op, 'original');
      const spec: NativeEntrySpec = { family, original: tuple, zone: checkUint(q.zone, 65535, op, 'zone') };
      if (withId) spec.id = checkUint(q.id, 0xffffffff, op, 'id');
      return spec;
    }
    const t = q as TupleQuery;
    const protocol = checkProtocol(t.protocol, op);
    const { tuple, family } = nativeTuple(t, protocol, op, 'tuple');
    const spec: NativeEntrySpec = { family, original: tuple };
    if (t.zone !== undefined) spec.zone = checkUint(t.zone, 65535, op, 'zone');
    if (t.id !== undefined) {
      const id = checkUint(t.id, 0xffffffff, op, 'id');
      if (withId) spec.id = id;
    }
    return spec;
  }

  /** The entry with this original tuple (and zone), or null when there is none. */
  async get(tuple: TupleQuery | Entry): Promise<Entry | null> {
    const spec = this.#querySpec(tuple, 'get', false);
    try {
      const buf = await this.#check('get').request('get', spec);
      return buf ? decodeEntry(buf, dataViewOf(buf), 0) : null;
    } catch (e) {
      if (e instanceof Error && (e as { errno?: number }).errno === 2) return null;
      throw wrapNative(e, 'get');
    }
  }

  #entrySpec(spec: CreateSpec | UpdateSpec, op: 'create' | 'update'): NativeEntrySpec {
    if (typeof spec !== 'object' || spec === null) throw ConntrackError.invalid(op, 'expected an object { protocol, original, timeout, ... }');
    if (spec.protocol === undefined) throw ConntrackError.invalid(op, 'protocol is required');
    const protocol = checkProtocol(spec.protocol, op);
    const { tuple, family } = nativeTuple(spec.original, protocol, op, 'original');
    const out: NativeEntrySpec = { family, original: tuple };
    if (op === 'create') {
      const create = spec as CreateSpec;
      if (create.timeout === undefined) throw ConntrackError.invalid(op, 'timeout (seconds) is required');
      if (create.reply !== undefined) {
        const reply = nativeTuple(create.reply, protocol, op, 'reply');
        if (reply.family !== family) throw ConntrackError.invalid(op, 'original and reply must be of the same family');
        out.reply = reply.tuple;
      } else {
        out.reply = invertTuple(tuple, protocol);
      }
    }
    if (spec.timeout !== undefined) out.timeout = checkUint(spec.timeout, 0xffffffff, op, 'timeout');
    if (spec.state !== undefined) out.state = stateNumber(spec.state, protocol, op);
    // The kernel refuses (EBUSY) a status that would clear CONFIRMED; libnetfilter_conntrack sets it too.
    if (spec.status !== undefined) out.status = (checkStatus(spec.status, op) | IPS_CONFIRMED) >>> 0;
    if (spec.mark !== undefined) out.mark = checkUint(spec.mark, 0xffffffff, op, 'mark');
    if (spec.zone !== undefined) out.zone = checkUint(spec.zone, 65535, op, 'zone');
    return out;
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
   * Deletes one entry (conntrack -D with a full tuple). Given an Entry, its id
   * is sent too, so a newer flow that reuses the tuple is left alone.
   * Resolves false when the entry was already gone.
   */
  async delete(tupleOrEntry: TupleQuery | Entry): Promise<boolean> {
    const spec = this.#querySpec(tupleOrEntry, 'delete', true);
    try {
      return await this.#check('delete').request('delete', spec);
    } catch (e) {
      throw wrapNative(e, 'delete');
    }
  }

  /** Removes every entry (conntrack -F), or those of one family. */
  async flush(options: FlushOptions = {}): Promise<void> {
    checkOptionsObject(options, 'flush');
    const family = options.family === undefined ? 0 : checkFamily(options.family, 'flush');
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
    checkOptionsObject(options, 'deleteBySource');
    const direction = options.direction ?? 'original';
    if (direction !== 'original' && direction !== 'reply' && direction !== 'either') {
      throw ConntrackError.invalid('deleteBySource', `direction must be 'original', 'reply' or 'either', got ${JSON.stringify(direction)}`);
    }
    if (source === undefined || (typeof source !== 'string' && !Array.isArray(source))) {
      throw ConntrackError.invalid('deleteBySource', 'source must be an address, a CIDR or a list of them');
    }
    const filter: Filter = { src: source };
    if (options.family !== undefined) filter.family = options.family;
    if (options.zone !== undefined) filter.zone = options.zone;
    if (options.protocol !== undefined) filter.protocol = options.protocol;
    return this.#deleteMatching(filter, options, 'deleteBySource', direction);
  }

  /** Deletes every entry matching `filter` (any dump Filter). */
  async deleteWhere(filter: Filter, options: Omit<DeleteOptions, 'direction'> = {}): Promise<DeleteResult> {
    checkOptionsObject(options, 'deleteWhere');
    if (filter === undefined || filter === null || typeof filter !== 'object' || Array.isArray(filter)) {
      throw ConntrackError.invalid('deleteWhere', 'a filter object is required (use flush() to delete everything)');
    }
    const merged: Filter = { ...filter };
    if (options.family !== undefined) merged.family = options.family;
    if (options.zone !== undefined) merged.zone = options.zone;
    if (options.protocol !== undefined) merged.protocol = options.protocol;
    return this.#deleteMatching(merged, options, 'deleteWhere', 'original');
  }

  async #deleteMatching(filter: Filter, options: DeleteOptions, op: string, direction: Direction): Promise<DeleteResult> {
    const compiled = compileFilter(filter, op, direction);
    // A filter that matches everything is a flush: make the caller say so.
    if (compiled.empty) throw ConntrackError.invalid(op, 'the filter matches every entry: use flush() to delete everything');
    const signal = options.signal;
    if (signal !== undefined && !(signal instanceof AbortSignal)) throw ConntrackError.invalid(op, 'signal must be an AbortSignal');
    const native = this.#check(op);
    if (signal?.aborted) throw new ConntrackError('ECANCELED', op, `${op}: aborted before it started`, { cause: signal.reason });
    const cursor = native.dump(compiled.kernel, compiled.match);
    const onAbort = (): void => cursor.cancel();
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      if (options.dryRun === true) return { matched: await cursor.count(), deleted: 0, alreadyGone: 0, failed: [] };
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
    let table: string;
    try {
      table = await this.#check('processOf').readFile('/proc/thread-self/net/netlink');
    } catch (e) {
      throw wrapNative(e, 'processOf');
    }
    const inode = parseNetlinkTable(table).get(portid);
    return inode === undefined ? undefined : findSocketOwner(inode);
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
  if (typeof name !== 'string' || !/^[a-z0-9_]+$/.test(name)) throw ConntrackError.invalid(op, `invalid sysctl name ${JSON.stringify(name)}`);
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
