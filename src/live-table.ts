/**
 * LiveTable (ct.liveTable()): the conntrack table held in memory and kept
 * equal to the kernel's from the event stream, so that reading it costs
 * nothing however large the table is.
 *
 * It subscribes first and dumps second. The dump's entries and every event
 * are upserts keyed by the original tuple and zone (the kernel's unique key;
 * ids are 32-bit hashes and collide in a large table), applied by the native
 * store (native/table.h) straight from the record batches the dump cursor and
 * the event reader produce: no event becomes a JS object. Events that arrive
 * during a dump are applied at once and replayed in order after it, since the
 * dump may have read an entry before an event changed it: whatever happened
 * last wins and nothing counts twice. A dump updates the table in place; at
 * its end, entries it neither saw nor heard of are removed. After any loss
 * (an overrun) and every `resyncSeconds`, the same dump-and-replay runs again.
 *
 * Entries that never send events. The kernel attaches the event extension
 * to an entry when it is created, and under net.netfilter.nf_conntrack_events
 * = 2 (the default) only while someone listens: an entry created before the
 * subscription is destroyed, changes state and expires without a word. Those
 * are the "unwatched" entries: the first dump's, less every one an event
 * later names. While any remain, the table is dumped again every
 * max(30 s, 10 dumps' time); and whenever the events go quiet for a second
 * with the table's size differing from the kernel's O(1) count, at once (at
 * most every 5 dumps' time).
 */
import { formatIPv4, formatIPv6 } from './address.js';
import { checkBoolean, checkKnownKeys, checkOptions, checkProtocol, checkUint, own } from './check.js';
import type { Conntrack } from './conntrack.js';
import { dumpBatches } from './dump.js';
import { protocolName, stateTable, type Entry, type ProtocolName, type Tuple } from './entry.js';
import { ConntrackError } from './errors.js';
import type { ConntrackEventStream } from './events.js';
import { encodeFlowKey, type FlowKey } from './flow.js';
import { addon, type NativeDumpCursor, type NativeHandle, type NativeLiveStore, type NativeStoreKey } from './native.js';
import { dataViewOf, decodeEntry, decodeOne as decodeRecord, RECORD_SIZE, recordEnd } from './record.js';
import { endpoint, factsOf, type TableFacts } from './tally.js';
import { encodeTuple } from './tuple.js';

export interface LiveTableOptions {
  /** Keep every entry's fields, for get(), find() and entries(). Default false: counts only. */
  entries?: boolean | undefined;
  /** Seconds between full resyncs (0: only after losses). Default 300. */
  resyncSeconds?: number | undefined;
  /** How many topSources() and topDestinations() give when called without `n`. Default 10. */
  top?: number | undefined;
  /** The event stream's socket buffer (EventOptions.bufferBytes). */
  bufferBytes?: number | undefined;
  /** The event stream's queue (EventOptions.queueLimit). */
  queueLimit?: number | undefined;
}

/** Entries of one protocol in one state (`state` '' for protocols without states). */
export interface StateCount {
  protocol: ProtocolName | number;
  state: string;
  entries: number;
}

export interface SourceCount {
  src: string;
  entries: number;
}

/** Entries by destination: address and, for protocols with ports, port. */
export interface DestinationCount {
  protocol: ProtocolName | number;
  dst: string;
  dport?: number;
  entries: number;
}

export interface LiveTableStats {
  /** Events applied, by type. */
  events: { new: number; update: number; destroy: number };
  /** Events lost (overruns); each loss starts a resync. */
  lost: number;
  /** Full dumps merged so far (the first one included). */
  resyncs: number;
  /** Entries that may change unseen: dumped, predating the subscription, and named by no event since. */
  unwatched: number;
}

/** A tuple as seen on the wire, in either direction, with its protocol and the entry's zone (default 0). */
export type TupleKey = Omit<Tuple, 'zone'> & { protocol: ProtocolName | number; zone?: number };

const OPTION_KEYS = new Set(['entries', 'resyncSeconds', 'top', 'bufferBytes', 'queueLimit']);
const FIND_KEYS = new Set(['protocol', 'zone', 'src', 'dst', 'sport', 'dport', 'icmp', 'srcKey', 'dstKey']);
/**
 * Events gather this long in the socket before the reader drains them: a
 * trickle then costs the reader and this thread one wake-up each per 5 ms
 * instead of one per event (most of a followed event's CPU when they come
 * one at a time), for figures at most 5 ms older.
 */
const GATHER_MS = 5;

/**
 * Event records per take(): under malloc's mmap threshold (128 KiB), so each
 * batch's buffer reuses heap memory instead of faulting in fresh pages.
 */
const TAKE_RECORDS = 512;
/** Event batches applied per turn of the event loop: a long burst does not starve timers and I/O. */
const BATCHES_PER_TURN = 128;
/** How long records may wait for the table (ms): the price of fewer wake-ups during a burst. */
const DRAIN_DELAY_MS = 5;
/** Records per native batch when iterating. */
const BATCH = 2048;
/**
 * Records per batch of a dump (3.4 MiB): applying one takes the JS thread a
 * moment, so it mostly waits for the next; fewer, larger batches mean fewer
 * of those hand-offs, each a thread wake-up that a busy machine delays.
 */
const DUMP_RECORDS = 16384;

const formatAddress = (family: number, addr: Buffer): string => (family === 2 ? formatIPv4(addr, 0) : formatIPv6(addr, 0));
const stateName = (protocol: number, state: number): string => (state < 0 ? '' : stateTable(protocol)?.[state] ?? String(state));
const noop = (): void => undefined;

/** Options checked, with their defaults. */
function liveOptions(options: unknown): { entries: boolean; resyncMs: number; top: number; events: { bufferBytes?: number; queueLimit?: number } } {
  const o = checkOptions(options, 'liveTable');
  checkKnownKeys(o, OPTION_KEYS, 'liveTable', 'option');
  const resync = own(o, 'resyncSeconds');
  const top = own(o, 'top');
  const bufferBytes = own(o, 'bufferBytes');
  const queueLimit = own(o, 'queueLimit');
  return {
    entries: checkBoolean(own(o, 'entries'), 'liveTable', 'entries') === true,
    resyncMs: (resync === undefined ? 300 : checkUint(resync, 0x7fffffff / 1000, 'liveTable', 'resyncSeconds')) * 1000,
    top: top === undefined ? 10 : checkUint(top, 0xffffffff, 'liveTable', 'top'),
    // The stream checks these itself.
    events: { ...(bufferBytes !== undefined ? { bufferBytes: bufferBytes as number } : {}), ...(queueLimit !== undefined ? { queueLimit: queueLimit as number } : {}) },
  };
}

/** Calls `fn` on the table while it lives: a timer must not keep a dropped table alive. */
function weakly(table: LiveTable, fn: (t: LiveTable) => void): () => void {
  const ref = new WeakRef(table);
  return () => {
    const t = ref.deref();
    if (t) fn(t);
  };
}

export class LiveTable implements AsyncDisposable {
  readonly #ct: Conntrack;
  readonly #native: NativeHandle;
  readonly #store: NativeLiveStore;
  readonly #stream: ConntrackEventStream;
  readonly #entries: boolean;
  readonly #top: number;
  readonly #resyncMs: number;
  readonly #onClose: (table: { close(): void }) => void;
  /** Event batches taken while a dump runs, replayed after it; undefined when none runs. */
  #held: Buffer[] | undefined;
  #cursor: NativeDumpCursor | undefined;
  #syncing: Promise<void> | undefined;
  #resyncAgain = false;
  #draining = false;
  #timer: NodeJS.Timeout | undefined;
  #reconciler: NodeJS.Timeout | undefined;
  #closed = false;
  #error: ConntrackError | undefined;
  #resyncs = 0;
  #lastSync = 0;
  #dumpMs = 0;
  #seenAtLastCheck = -1;
  /** Records applied (events, or a dump's entries) since the heap was last trimmed: a second without events trims it. */
  #sinceTrim = 0;
  #version = 0;
  /** Resolves once the first dump is merged: from then on every figure follows the kernel. */
  readonly ready: Promise<void>;

  /** @internal Use ct.liveTable(). */
  constructor(ct: Conntrack, native: NativeHandle, options: LiveTableOptions, onClose: (table: { close(): void }) => void) {
    const o = liveOptions(options);
    this.#onClose = onClose;
    this.#ct = ct;
    this.#native = native;
    this.#entries = o.entries;
    this.#top = o.top;
    this.#resyncMs = o.resyncMs;
    this.#stream = ct.events({ types: ['new', 'update', 'destroy'], ...o.events });
    this.#stream.rawRecords(weakly(this, (t) => t.#wake()));
    this.#stream.gather(GATHER_MS);
    this.#store = new addon.LiveStore(o.entries);
    this.ready = this.#start();
    this.ready.catch(noop);
  }

  async #start(): Promise<void> {
    await this.#stream.ready;
    this.#drain();
    await this.#resync();
    if (this.#closed) return;
    if (this.#resyncMs > 0) {
      this.#timer = setInterval(weakly(this, (t) => void t.#resync().catch(noop)), this.#resyncMs);
      this.#timer.unref();
    }
    this.#reconciler = setInterval(weakly(this, (t) => void t.#reconcile().catch(noop)), 1000);
    this.#reconciler.unref();
  }

  /**
   * The reader queued records into an empty queue. Taken a little later, not
   * now: while they wait, the reader queues more without waking this thread
   * again, so a burst costs a few wake-ups instead of one per handful of events.
   */
  #wake(): void {
    if (this.#draining || this.#closed) return;
    this.#draining = true;
    setTimeout(weakly(this, (t) => t.#drainLater()), DRAIN_DELAY_MS).unref();
  }

  #drainLater(): void {
    this.#draining = false;
    this.#drain();
  }

  /** Applies what the reader queued; a long burst continues on the next turn of the event loop. */
  #drain(): void {
    if (this.#draining || this.#closed) return;
    for (let n = 0; n < BATCHES_PER_TURN; n++) {
      let batch: Buffer | null;
      try {
        batch = this.#stream.takeRecords(TAKE_RECORDS);
      } catch (e) {
        this.#error = e as ConntrackError;
        return;
      }
      if (batch === null) {
        // The stream ended under us: its handle was closed.
        if (!this.#closed) this.#error ??= new ConntrackError('EBADF', 'liveTable', 'liveTable: the handle was closed');
        return;
      }
      if (batch.length === 0) return;
      this.#sinceTrim += batch.length / RECORD_SIZE;
      const lost = this.#store.applyEvents(batch, false);
      this.#held?.push(batch);
      this.#version++;
      // What was lost is unknown: only a fresh dump makes the table exact again.
      if (lost > 0) void this.#resync().catch(noop);
    }
    this.#draining = true;
    setImmediate(weakly(this, (t) => t.#drainLater()));
  }

  /**
   * At rest after a burst or a dump: the reader's queued records (up to
   * queueLimit of them, malloc'd on its thread) and the batches' buffers
   * stay resident once freed unless the heap is trimmed (a 250k burst: 17
   * MiB). Not during a burst, which would fault the same pages in again.
   */
  #trimAtRest(): void {
    if (this.#sinceTrim === 0) return;
    this.#sinceTrim = 0;
    this.#store.trimHeap();
  }

  /** Once a second, off any reader's path: re-dump when unwatched entries may have changed unseen. */
  async #reconcile(): Promise<void> {
    if (this.#syncing || this.#closed) return;
    const c = this.#store.counters();
    // Events the reader received, applied or not: a busy thread applying a burst late is not a quiet table.
    const seen = this.#stream.stats().received;
    const quiet = seen === this.#seenAtLastCheck;
    if (quiet) this.#trimAtRest();
    this.#seenAtLastCheck = seen;
    const since = Date.now() - this.#lastSync;
    if (c.unwatched > 0 && since >= Math.max(30_000, 10 * this.#dumpMs)) {
      await this.#resync();
      return;
    }
    if (quiet && since >= 5 * this.#dumpMs) {
      const kernel = await this.#ct.count();
      if (this.#closed) return;
      const stillQuiet = this.#stream.stats().received === seen && this.#stream.stats().queued === 0;
      if (kernel !== this.#store.counters().size && stillQuiet) await this.#resync();
    }
  }

  /** A dump-and-replay; one at a time, and one more if asked for while one runs. */
  #resync(): Promise<void> {
    if (this.#closed) return Promise.resolve();
    if (this.#syncing) {
      this.#resyncAgain = true;
      return this.#syncing;
    }
    const run = async (): Promise<void> => {
      do {
        this.#resyncAgain = false;
        await this.#sync();
      } while (this.#resyncAgain && !this.#closed);
    };
    this.#syncing = run().finally(() => {
      this.#syncing = undefined;
    });
    return this.#syncing;
  }

  async #sync(): Promise<void> {
    const started = Date.now();
    // The kernel's count, so the store is sized once for the dump (a hint: 0 when it cannot be read).
    const expected = await this.#ct.count().catch(() => 0);
    if (this.#closed) return;
    const cursor = this.#native.dump({}, {});
    this.#cursor = cursor;
    this.#store.beginSync(expected);
    this.#held = [];
    try {
      for await (const batch of dumpBatches(cursor, 'liveTable', DUMP_RECORDS)) {
        if (this.#closed) return;
        this.#store.applyDump(batch);
        this.#sinceTrim += batch.length / RECORD_SIZE;
      }
      if (this.#closed) return;
      for (const batch of this.#held) this.#store.applyEvents(batch, true);
    } catch (e) {
      if (this.#closed) return;
      throw e;
    } finally {
      this.#held = undefined;
      this.#cursor = undefined;
    }
    this.#store.endSync();
    this.#resyncs++;
    this.#lastSync = Date.now();
    this.#dumpMs = this.#lastSync - started;
    this.#version++;
  }

  /** Throws what stopped the table: its event stream's failure, or use after close(). */
  #check(op: string): NativeLiveStore {
    if (this.#error) throw this.#error;
    if (this.#closed) throw new ConntrackError('EBADF', op, `${op}: the live table is closed`);
    return this.#store;
  }

  /** Entries in the table. */
  get size(): number {
    return this.#check('size').counters().size;
  }

  /** Entries with ASSURED set. */
  get assured(): number {
    return this.#check('assured').counters().assured;
  }

  /** Entries by protocol and state, sorted by protocol number then state. */
  counts(): StateCount[] {
    const groups = this.#check('counts').groups();
    groups.sort((a, b) => a.protocol - b.protocol || a.state - b.state);
    return groups.map((g) => ({ protocol: protocolName(g.protocol), state: stateName(g.protocol, g.state), entries: g.entries }));
  }

  /** The `n` sources (original src) with the most entries, largest first; ties by address. */
  topSources(n = this.#top): SourceCount[] {
    const count = checkUint(n, 0xffffffff, 'topSources', 'n');
    return this.#check('topSources').topSources(count).map((s) => ({ src: formatAddress(s.family, s.addr), entries: s.entries }));
  }

  /** The `n` destinations (original dst and dport) with the most entries, largest first; ties by protocol, address, port. */
  topDestinations(n = this.#top): DestinationCount[] {
    const count = checkUint(n, 0xffffffff, 'topDestinations', 'n');
    return this.#check('topDestinations').topDestinations(count).map((d) => ({
      protocol: protocolName(d.protocol), dst: formatAddress(d.family, d.addr), ...(d.dport !== undefined ? { dport: d.dport } : {}), entries: d.entries,
    }));
  }

  get stats(): LiveTableStats {
    const c = this.#check('stats').counters();
    return { events: { new: c.new, update: c.update, destroy: c.destroy }, lost: c.lost, resyncs: this.#resyncs, unwatched: c.unwatched };
  }

  /** The current entry with this key's original tuple and zone (an Entry is a key), or undefined. Needs `entries: true`. */
  get(key: FlowKey | Entry): Entry | undefined {
    const store = this.#withEntries('get');
    const { spec } = encodeFlowKey(key, 'get');
    const replyZone = (key as { reply?: { zone?: unknown } }).reply?.zone;
    const lookup: NativeStoreKey = {
      ...spec.original, family: spec.family, protocol: spec.original!.protocol!, zone: spec.zone ?? 0,
      ...(spec.original?.zone !== undefined ? { origZone: spec.original.zone } : {}),
      ...(typeof replyZone === 'number' ? { replyZone } : {}),
    };
    return decodeOne(store.get(lookup));
  }

  /**
   * The current entry whose original or else reply tuple is `tuple`: a
   * reply-direction tuple seen on the wire gives the NATed flow it belongs
   * to. Needs `entries: true`.
   */
  find(tuple: TupleKey): Entry | undefined {
    const store = this.#withEntries('find');
    const o = checkOptions(tuple, 'find', 'tuple');
    checkKnownKeys(o, FIND_KEYS, 'find', 'tuple');
    const protocol = checkProtocol(own(o, 'protocol'), 'find');
    const zone = own(o, 'zone');
    const rest = Object.fromEntries(Object.entries(o).filter(([k]) => k !== 'protocol' && k !== 'zone'));
    const { tuple: t, family } = encodeTuple(rest, protocol, 'find', 'tuple');
    return decodeOne(store.find({ ...t, family, protocol, zone: zone === undefined ? 0 : checkUint(zone, 65535, 'find', 'zone') }));
  }

  /** Iterates the current entries (an entry changed while the caller awaits between steps may be seen twice or not at all). Needs `entries: true`. */
  *entries(): IterableIterator<Entry> {
    const store = this.#withEntries('entries');
    for (let start = 0; ; start += BATCH) {
      if (this.#closed) return;
      const buf = store.records(start, BATCH);
      if (buf === null) return;
      const dv = dataViewOf(buf);
      for (let off = 0; off + RECORD_SIZE <= buf.length; off = recordEnd(dv, off)) yield decodeEntry(buf, dv, off);
    }
  }

  #withEntries(op: string): NativeLiveStore {
    const store = this.#check(op);
    if (!this.#entries) throw ConntrackError.invalid(op, `${op}() needs the entries: create the table with ct.liveTable({ entries: true })`);
    return store;
  }

  /** @internal For the exporter: grows whenever the table changes, so readers can cache what they derive. */
  get version(): number {
    return this.#version;
  }

  /** @internal For the exporter: every figure counted, with assured per group (the doctor's facts). */
  facts(top = this.#top): TableFacts {
    const store = this.#check('facts');
    const c = store.counters();
    return factsOf({
      entries: c.size,
      assured: c.assured,
      groups: store.groups().map((g) => ({ protocol: String(protocolName(g.protocol)), state: stateName(g.protocol, g.state), entries: g.entries, assured: g.assured })),
      topSources: this.topSources(top),
      topDestinations: this.topDestinations(top).map((d) => ({
        dst: endpoint(d.dst, d.dport), address: d.dst, ...(d.dport !== undefined ? { port: d.dport } : {}), protocol: String(d.protocol), entries: d.entries,
      })),
    });
  }

  /** @internal A full resync now (also what an overrun starts). Resolves when it is merged. */
  resync(): Promise<void> {
    return this.#resync();
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Stops following the kernel and frees the table. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#timer) clearInterval(this.#timer);
    if (this.#reconciler) clearInterval(this.#reconciler);
    this.#cursor?.cancel();
    this.#stream.close();
    this.#store.release();
    this.#onClose(this);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.close();
  }
}

function decodeOne(buf: Buffer | null): Entry | undefined {
  return buf === null ? undefined : decodeRecord(buf);
}
