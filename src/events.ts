/**
 * ConntrackEventStream: `for await` over NEW/UPDATE/DESTROY events.
 *
 * A native reader thread drains the netlink socket into a bounded queue
 * (queueLimit events) independently of how fast JS consumes; this side takes
 * whole batches and decodes them lazily. Losses surface where they happen as
 * `{ type: 'overrun', lost }` (or a ConntrackError ENOBUFS with
 * onOverrun: 'throw'), with exact counts from the socket's drop counter and
 * the queue's overflow counter. Calls to next() may overlap: they wait in
 * one queue and settle in call order, and whatever ends the stream settles
 * them all.
 */
import { checkBoolean, checkKnownKeys, checkOptions, checkSignal, checkUint, describe, own, toList } from './check.js';
import type { Entry } from './entry.js';
import { decodeExpectation, type Expectation } from './expectation.js';
import { ConntrackError, wrapNative } from './errors.js';
import { compileFilter, type Filter } from './filter.js';
import { addon, type NativeEventReader, type NativeHandle } from './native.js';
import type { PortOwner } from './process.js';
import { dataViewOf, decodeEntry, RECORD_SIZE, recordEnd, recordKind, RecordKind, recordLost, recordPid, recordPortid } from './record.js';

export type EventType = 'new' | 'update' | 'destroy';
/** Expectation events (conntrack -E expect): a helper predicted a connection, or the prediction ended (used, expired, deleted). */
export type ExpectationEventType = 'expect-new' | 'expect-destroy';

export interface EntryEvent {
  type: EventType;
  entry: Entry;
  /** Netlink port id of the process whose request caused the event (conntrack -I/-D/-F...); 0 when traffic or timeouts did. */
  portid: number;
  /**
   * With `processes: true`: the process that owned `portid` when the event
   * was read (conntrack -E's `progname=`); absent when none did any more.
   */
  process?: PortOwner;
}

export interface OverrunEvent {
  type: 'overrun';
  /** Events lost at this point: dropped by the kernel (socket buffer full) or by the full user-space queue. */
  lost: number;
}

export interface ExpectationEvent {
  type: ExpectationEventType;
  expectation: Expectation;
  /** As EntryEvent's: the requesting process's netlink port, 0 when the kernel itself. */
  portid: number;
}

export type ConntrackEvent = EntryEvent | OverrunEvent;
/** What ct.expectationEvents() yields. */
export type ExpectationStreamEvent = ExpectationEvent | OverrunEvent;

export interface EventOptions {
  /** Subscribe only to these kinds (only their multicast groups are joined). Default: all three. */
  types?: readonly EventType[] | undefined;
  /** The dump Filter; protocol and addresses also run as a kernel socket filter. */
  filter?: Filter | undefined;
  /** Socket receive buffer in bytes (SO_RCVBUFFORCE when permitted). Default 64 MiB. */
  bufferBytes?: number | undefined;
  /** Events held in user space for a slow consumer before new ones are dropped (and counted). Default 262144. */
  queueLimit?: number | undefined;
  /**
   * Name the process behind each event caused by a request (`ev.process`),
   * looked up by the reader thread the moment the event arrives: a
   * short-lived requester such as `conntrack -I` is gone a moment later.
   * Costs a /proc scan per new requester. Default false.
   */
  processes?: boolean | undefined;
  /** Ends the stream when aborted. */
  signal?: AbortSignal | undefined;
  /** 'report' (default) yields { type: 'overrun', lost }; 'throw' rejects with ConntrackError ENOBUFS. */
  onOverrun?: 'report' | 'throw' | undefined;
}

/** Options of ct.expectationEvents(): EventOptions without the entry filter. */
export interface ExpectationEventOptions extends Omit<EventOptions, 'types' | 'filter' | 'processes'> {
  /** Default: both. */
  types?: readonly ExpectationEventType[];
}

export interface EventStats {
  /** Events read from the kernel socket (after filtering). */
  received: number;
  /** Events handed to the consumer. */
  delivered: number;
  /** Events lost: dropped by the kernel or by the full queue. */
  dropped: number;
  /** Loss incidents (overrun events). */
  overruns: number;
  /** Events waiting to be consumed. */
  queued: number;
}

// Bit g-1 joins NFNLGRP g: CONNTRACK_NEW/UPDATE/DESTROY 1-3, CONNTRACK_EXP_NEW 4, EXP_DESTROY 6.
const GROUP_BITS: Readonly<Record<EventType | ExpectationEventType, number>> = { new: 1, update: 2, destroy: 4, 'expect-new': 8, 'expect-destroy': 32 };
const EXPECT_GROUPS = 8 | 32;
const TYPE_OF_KIND: Record<number, EventType> = {
  [RecordKind.new]: 'new',
  [RecordKind.update]: 'update',
  [RecordKind.destroy]: 'destroy',
};
const EVENT_OPTION_KEYS = new Set(['types', 'filter', 'bufferBytes', 'queueLimit', 'processes', 'signal', 'onOverrun']);
/** Records per take(): enough to amortise the call, small enough to keep latency low. */
const TAKE_BATCH = 4096;

export const DEFAULT_BUFFER_BYTES = 64 << 20;
export const DEFAULT_QUEUE_LIMIT = 262144;

type StreamResult = IteratorResult<ConntrackEvent | ExpectationStreamEvent, undefined>;

/** A next() call not settled yet. */
interface PendingCall {
  resolve(r: StreamResult): void;
  reject(e: unknown): void;
}

const done = (): IteratorResult<never, undefined> => ({ done: true, value: undefined });

/**
 * Streams with calls waiting for an event. The native side holds only a weak
 * reference (see #wakeOf), and a consumer's `for await` suspended in next()
 * is held by nothing but the stream's own pending call: without this set a
 * garbage collection would end such a loop silently. A stream leaves it as
 * soon as no call waits.
 */
const waiting = new Set<object>();

export class ConntrackEventStream<E extends ConntrackEvent | ExpectationStreamEvent = ConntrackEvent> implements AsyncIterableIterator<E>, AsyncDisposable {
  readonly #reader: NativeEventReader;
  readonly #op: 'events' | 'expectationEvents';
  readonly #onOverrun: 'report' | 'throw';
  readonly #onClose: (stream: { close(): void }) => void;
  readonly #signal: AbortSignal | undefined;
  readonly #onAbort = (): void => this.close();
  #batch: Buffer | null = null;
  #batchView: DataView | null = null;
  #offset = 0;
  #delivered = 0;
  #closed = false;
  /** A failure no call has received yet: the next call rejects with it, once. */
  #error: ConntrackError | undefined;
  readonly #processes: boolean;
  /** next() calls waiting for an event, oldest first; non-empty only while the native queue is empty and the stream open. */
  readonly #calls: PendingCall[] = [];
  /** Set by rawRecords(): the stream hands out record batches as they are, and wakes this instead of settling calls. */
  #onRecords: (() => void) | undefined;
  /** A nextRecords() call waiting for records (or the end). */
  #recordsWaiter: (() => void) | undefined;
  /** Resolves once the subscription is in place: events after this are seen. */
  readonly ready: Promise<void>;

  /** @internal Use Conntrack.events(). */
  constructor(native: NativeHandle, options: EventOptions | ExpectationEventOptions, onClose: (stream: { close(): void }) => void, table: 'entries' | 'expectations' = 'entries') {
    const op = table === 'entries' ? 'events' : 'expectationEvents';
    const o = checkOptions(options, op);
    checkKnownKeys(o, EVENT_OPTION_KEYS, op, 'option');
    const typesOpt = own(o, 'types');
    const all = table === 'entries' ? ['new', 'update', 'destroy'] : ['expect-new', 'expect-destroy'];
    const types = typesOpt === undefined ? all : typesOpt;
    if (!Array.isArray(types) || types.length === 0) throw ConntrackError.invalid(op, `types must be a non-empty list of ${all.map((t) => `'${t}'`).join(', ')}`);
    let groups = 0;
    for (const t of toList(types)) {
      // Own keys only: 'toString' or '__proto__' must not pass for an event type.
      if (typeof t !== 'string' || !Object.hasOwn(GROUP_BITS, t)) {
        throw ConntrackError.invalid(op, `unknown event type ${describe(t)} (one of ${all.join(', ')})`);
      }
      groups |= GROUP_BITS[t as EventType];
    }
    if (((groups & EXPECT_GROUPS) !== 0) !== (table === 'expectations')) {
      throw ConntrackError.invalid(op, table === 'expectations'
        ? "types of expectation events are 'expect-new' and 'expect-destroy'"
        : "expectation events come from ct.expectationEvents(), not events()");
    }
    if (table === 'expectations' && own(o, 'filter') !== undefined) throw ConntrackError.invalid(op, 'filter applies to entries, not to expectations');
    const bufferOpt = own(o, 'bufferBytes');
    const bufferBytes = bufferOpt === undefined ? DEFAULT_BUFFER_BYTES : checkUint(bufferOpt, 0x7fffffff, op, 'bufferBytes');
    const queueOpt = own(o, 'queueLimit');
    const queueLimit = queueOpt === undefined ? DEFAULT_QUEUE_LIMIT : checkUint(queueOpt, 0xffffffff, op, 'queueLimit', 1);
    const onOverrun = own(o, 'onOverrun') ?? 'report';
    if (onOverrun !== 'report' && onOverrun !== 'throw') throw ConntrackError.invalid(op, "onOverrun must be 'report' or 'throw'");
    const processes = checkBoolean(own(o, 'processes'), op, 'processes') === true;
    const signal = checkSignal(own(o, 'signal'), op);
    const compiled = compileFilter(own(o, 'filter') as Filter | undefined, op);

    this.#op = op;
    this.#onOverrun = onOverrun;
    this.#onClose = onClose;
    this.#signal = signal;
    this.#processes = processes;
    const nativeOptions = {
      groups, bufferBytes, queueLimit, match: compiled.match, resolveProcesses: processes,
      ...(compiled.socketFilter ? { kernelFilter: compiled.socketFilter } : {}),
    };
    this.#reader = new addon.EventReader(native, nativeOptions, ConntrackEventStream.#wakeOf(new WeakRef(this)));
    if (signal?.aborted) {
      // Aborted before it began: a closed stream, no socket ever opened.
      this.ready = Promise.resolve();
      this.#shutdown();
      return;
    }
    this.ready = this.#reader.open().catch((e: unknown) => {
      const err = wrapNative(e, op);
      if (!this.#closed) {
        this.#error = err;
        this.#shutdown();
        this.#settle();
      }
      throw err;
    });
    // Errors surface through next(); don't let an unobserved `ready` crash the process.
    this.ready.catch(() => undefined);
    signal?.addEventListener('abort', this.#onAbort, { once: true });
  }

  /**
   * The native side keeps its callback alive (a thread-safe function is a GC
   * root), so the callback must not keep the stream alive, or a stream
   * dropped without close() would never be collected. Made here, not in the
   * constructor, whose closures share a context that holds `this`.
   */
  static #wakeOf(ref: WeakRef<ConntrackEventStream<ConntrackEvent | ExpectationStreamEvent>>): () => void {
    return () => {
      const stream = ref.deref();
      if (!stream) return;
      if (stream.#onRecords) stream.#onRecords();
      else stream.#settle();
    };
  }

  /**
   * The next call's result: an event, an overrun, or done once closed;
   * undefined while nothing is queued. Throws the stream's failure (a native
   * error, or a loss with onOverrun: 'throw'); the caller then shuts it down.
   */
  #step(): StreamResult | undefined {
    if (this.#error) {
      const err = this.#error;
      this.#error = undefined;
      throw err;
    }
    if (this.#closed) return done();
    let buf = this.#batch;
    if (buf === null || this.#offset >= buf.length) {
      let taken: Buffer | null;
      try {
        taken = this.#reader.take(TAKE_BATCH);
      } catch (e) {
        throw wrapNative(e, this.#op);
      }
      if (taken === null) {
        // The reader finished (its socket is gone): the stream ends.
        this.#shutdown();
        return done();
      }
      if (taken.length === 0) return undefined;
      this.#batch = buf = taken;
      this.#batchView = dataViewOf(taken);
      this.#offset = 0;
    }
    const view = this.#batchView!;
    const off = this.#offset;
    this.#offset = recordEnd(view, off);
    const kind = recordKind(buf, off);
    if (kind === RecordKind.overrun) {
      const lost = recordLost(view, off);
      if (this.#onOverrun === 'throw') {
        const err = new ConntrackError('ENOBUFS', this.#op, `${this.#op}: ${lost} events were lost: the consumer or the socket buffer could not keep up (raise bufferBytes/queueLimit or consume faster) (ENOBUFS)`);
        (err as ConntrackError & { lost: number }).lost = lost;
        throw err;
      }
      return { done: false, value: { type: 'overrun', lost } };
    }
    this.#delivered++;
    const portid = recordPortid(view, off);
    if (kind === RecordKind.expectNew || kind === RecordKind.expectDestroy) {
      return { done: false, value: { type: kind === RecordKind.expectNew ? 'expect-new' : 'expect-destroy', expectation: decodeExpectation(buf, view, off), portid } };
    }
    const event: EntryEvent = { type: TYPE_OF_KIND[kind] ?? 'update', entry: decodeEntry(buf, view, off), portid };
    if (this.#processes && portid !== 0) {
      const pid = recordPid(view, off);
      const name = pid === 0 ? undefined : this.#reader.processName(pid);
      if (name !== undefined) event.process = { pid, name };
    }
    return { done: false, value: event };
  }

  /**
   * Settles waiting calls, oldest first, while there is something to give
   * them: events, then done once closed. A failure rejects the oldest call
   * alone and ends the stream, so the calls behind it settle done.
   */
  #settle(): void {
    if (this.#recordsWaiter) return this.#recordsWaiter();
    const calls = this.#calls;
    while (calls.length > 0) {
      let r: StreamResult | undefined;
      try {
        r = this.#step();
      } catch (e) {
        calls.shift()!.reject(e);
        this.#shutdown();
        continue;
      }
      if (r === undefined) return; // still waiting: the reader wakes us when its queue fills
      calls.shift()!.resolve(r);
    }
    this.#stopWaiting();
  }

  #startWaiting(): void {
    waiting.add(this);
    // Ref the wake-up callback: a pending read keeps the process alive, as a socket's does.
    this.#reader.setWaiting(true);
  }

  #stopWaiting(): void {
    // A closed reader ignores setWaiting: its callback is released already.
    if (waiting.delete(this)) this.#reader.setWaiting(false);
  }

  /**
   * The next event. Calls may overlap: each settles, in call order, with the
   * next event (or overrun); close(), return(), throw(), an abort or the
   * handle's close() settle every waiting call with { done: true }.
   */
  next(): Promise<IteratorResult<E, undefined>> {
    if (this.#calls.length === 0) {
      // Nothing waits ahead of this call: answer from the queue if it can.
      let r: StreamResult | undefined;
      try {
        r = this.#step();
      } catch (e) {
        this.#shutdown();
        return Promise.reject(e);
      }
      if (r !== undefined) return Promise.resolve(r as IteratorResult<E, undefined>);
    }
    return new Promise<StreamResult>((resolve, reject) => {
      if (this.#calls.push({ resolve, reject }) === 1) this.#startWaiting();
    }) as Promise<IteratorResult<E, undefined>>;
  }

  /** Ends the stream (as break in for await does); every waiting call settles { done: true }. */
  async return(): Promise<IteratorResult<E, undefined>> {
    this.close();
    return done();
  }

  /**
   * The async iterator protocol's throw(): the caller met an error. Ends the
   * stream, settles every waiting call { done: true }, and rejects with `err`
   * (so `yield*` over a stream passes the error on).
   */
  async throw(err?: unknown): Promise<IteratorResult<E, undefined>> {
    this.close();
    throw err;
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  /**
   * @internal For LiveTable, which applies whole batches natively: from now
   * on `onRecords` is called when records arrive (with nothing left to
   * take) and takeRecords() hands them out; next() is not to be used.
   */
  rawRecords(onRecords: () => void): void {
    this.#onRecords = onRecords;
  }

  /**
   * @internal For consumers of whole batches (LiveTable, FlowStream's
   * ndjson()/ipfix()): the reader lets events gather for `ms` before each
   * drain, so a trickle wakes it and JS once per `ms` rather than once per
   * event. Adds up to `ms` of latency; 0 turns it off.
   */
  gather(ms: number): void {
    if (!this.#closed) this.#reader.setGatherMs(ms);
  }

  /** @internal At most `max` records as the reader queued them: empty when none waits, null once the stream ended. */
  takeRecords(max: number): Buffer | null {
    if (this.#error) {
      const err = this.#error;
      this.#error = undefined;
      throw err;
    }
    if (this.#closed) return null;
    let taken: Buffer | null;
    try {
      taken = this.#reader.take(max);
    } catch (e) {
      this.#shutdown();
      throw wrapNative(e, this.#op);
    }
    if (taken === null) this.#shutdown();
    return taken;
  }

  /**
   * @internal Whole batches for a consumer that waits (FlowStream's ndjson()
   * and ipfix()): at most `max` records as the reader queued them, once
   * some wait; null once the stream ended. While it waits the process stays
   * alive, as it does for a waiting next(). With `idleMs`, an empty Buffer
   * after that long without records. One call at a time; next() is not to be used.
   */
  nextRecords(max: number, idleMs?: number): Promise<Buffer | null> {
    let now: Buffer | null;
    try {
      now = this.takeRecords(max);
    } catch (e) {
      return Promise.reject(e);
    }
    if (now === null || now.length > 0) return Promise.resolve(now);
    return new Promise((resolve, reject) => {
      const finish = (): void => {
        clearTimeout(timer);
        this.#recordsWaiter = undefined;
        this.#stopWaiting();
        try {
          resolve(this.takeRecords(max));
        } catch (e) {
          reject(e);
        }
      };
      const timer = idleMs === undefined ? undefined : setTimeout(finish, idleMs);
      this.#recordsWaiter = finish;
      this.#startWaiting();
    });
  }

  stats(): EventStats {
    const s = this.#reader.stats();
    let local = 0;
    if (this.#batch) for (let off = this.#offset; off + RECORD_SIZE <= this.#batch.length; off = recordEnd(this.#batchView!, off)) local++;
    return {
      received: s.received,
      delivered: this.#delivered,
      dropped: s.kernelDropped + s.queueDropped,
      overruns: s.overruns,
      queued: s.queued + local,
    };
  }

  /** Receive buffer the kernel granted (may be below bufferBytes without CAP_NET_ADMIN). */
  get bufferBytes(): number {
    return this.#reader.stats().bufferBytes;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Stops the reader thread and closes the socket; waiting calls settle { done: true }. Idempotent. */
  close(): void {
    this.#shutdown();
    this.#settle();
  }

  /** Marks the stream closed and releases the native reader, leaving waiting calls to #settle(). */
  #shutdown(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#signal?.removeEventListener('abort', this.#onAbort);
    this.#reader.close();
    this.#batch = null;
    this.#batchView = null;
    this.#onClose(this);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.close();
  }
}
