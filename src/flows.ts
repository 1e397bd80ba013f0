/**
 * Flow records for logging: what `ct.flows()` yields and `ctmon log`
 * writes. A record is plain JSON (no bigints, nothing JSON.stringify cannot
 * write), made from a NEW event ('start', NAT session logging) or a DESTROY
 * event ('end', with counters and timestamps when the namespace keeps them).
 * The record type and its codec from an Entry live here alone; the stream is
 * the event stream's (events.ts), with losses as `{ event: 'lost', count }`.
 */
import { checkBoolean, checkKnownKeys, checkOptions, checkUint, describe, own, toList } from './check.js';
import { protocolName, stateTable, type Entry, type Family, type ProtocolName, type StateName, type Tuple } from './entry.js';
import { ConntrackError } from './errors.js';
import type { ConntrackEvent, ConntrackEventStream, EventOptions, EventStats, EventType } from './events.js';
import type { Filter } from './filter.js';
import { IPFIX_MIN_MTU, IpfixEncoder, type IpfixOptions } from './ipfix.js';
import { addon, type NativeFlowJson } from './native.js';
import { dataViewOf, F, RecordKind, recordEnd, recordLost, RECORD_SIZE } from './record.js';

/** One end of a NAT translation: the address (and port, for protocols with ports) it was rewritten to. */
export interface FlowEndpoint {
  address: string;
  port?: number;
}

/** A flow began ('start') or ended ('end'). */
export interface FlowRecord {
  event: 'start' | 'end';
  /** The kernel's id of the flow (conntrack -o id): a 'start' and its 'end' share it while the flow lives. */
  id: number;
  family: Family;
  protocol: ProtocolName | number;
  original: Tuple;
  reply: Tuple;
  /**
   * The translation: `source` only for a source-NATed flow (the source its
   * packets leave with), `destination` only for a destination-NATed one (where
   * they really go). Absent when the flow was not NATed.
   */
  nat?: { source?: FlowEndpoint; destination?: FlowEndpoint };
  /** Milliseconds since the epoch, from the kernel's timestamps (nf_conntrack_timestamp); 'end' records only. */
  startMs?: number;
  endMs?: number;
  /** endMs − startMs. */
  durationMs?: number;
  /** Per-direction counters (nf_conntrack_acct); 'end' records only. */
  packets?: { original: number; reply: number };
  bytes?: { original: number; reply: number };
  state?: StateName;
  mark?: number;
  zone: number;
  /** Bit numbers of the connection labels set. */
  labels?: number[];
}

/** Records dropped here: the kernel's socket buffer or the user-space queue overflowed. */
export interface FlowLost {
  event: 'lost';
  count: number;
}

export type FlowLogRecord = FlowRecord | FlowLost;

export interface FlowOptions {
  /** Default ['end']; 'start' adds a record when each flow begins (NAT session logging). */
  types?: readonly ('start' | 'end')[] | undefined;
  filter?: Filter | undefined;
  /** Turn net.netfilter.nf_conntrack_acct on in the namespace (packets and bytes). Left as it is when absent. */
  accounting?: boolean | undefined;
  /** Turn net.netfilter.nf_conntrack_timestamp on in the namespace (startMs, endMs). Left as it is when absent. */
  timestamps?: boolean | undefined;
  /**
   * Set net.netfilter.nf_conntrack_events=1 in the namespace: every new flow
   * then sends events, including flows begun while no logger listened (a
   * logger's restart). Under the default 2 such flows end silently.
   */
  keepEvents?: boolean | undefined;
  /**
   * Socket receive buffer. Default 256 MiB (events() takes 64): a flush of
   * 250k flows sends their ends within a second, about 1 KiB of kernel
   * memory each until read, and a logger starved of CPU for that second must
   * still lose none. Memory is taken only while events wait.
   */
  bufferBytes?: number | undefined;
  /** Records held in user space for a slow consumer before new ones are dropped (and counted). Default 262144. */
  queueLimit?: number | undefined;
  signal?: AbortSignal | undefined;
  /** Called with each loss's count as the stream hands it out, however it is read (records, ndjson(), ipfix()). */
  onLost?: ((count: number) => void) | undefined;
}

/** ndjson()'s options. */
export interface FlowNdjsonOptions {
  /** Fields written first in every line, e.g. `{ host: os.hostname() }` (ctmon log: `netns`). */
  fields?: Readonly<Record<string, string | number | boolean | null>> | undefined;
}

/** What the logger knows about its own completeness, once subscribed (`stream.ready`). */
export interface FlowLogStatus {
  /** nf_conntrack_acct is on: 'end' records carry packets and bytes. */
  accounting: boolean;
  /** nf_conntrack_timestamp is on: 'end' records carry startMs, endMs, durationMs. */
  timestamps: boolean;
  /** nf_conntrack_events as read after keepEvents was applied. */
  eventsMode: number;
  /**
   * Matching flows already in the table when the logger subscribed. They may
   * end without an 'end' record (under nf_conntrack_events=2 a flow created
   * while nobody listened never sends one): this many may be missing.
   */
  predating: number;
  /** One line for each of the above that makes the log incomplete; empty when nothing does. */
  notices: string[];
}

/** The handle's side that a flow stream needs (Conntrack has it all). */
export interface FlowSource {
  events(options: EventOptions): ConntrackEventStream;
  count(filter?: Filter): Promise<number>;
  readSysctl(name: string): Promise<string>;
  writeSysctl(name: string, value: number): Promise<void>;
}

const FLOW_OPTION_KEYS = new Set(['types', 'filter', 'accounting', 'timestamps', 'keepEvents', 'bufferBytes', 'queueLimit', 'signal', 'onLost']);
export const FLOW_BUFFER_BYTES = 256 << 20;
const EVENT_OF: Readonly<Record<'start' | 'end', EventType>> = { start: 'new', end: 'destroy' };

/** Whole milliseconds since the epoch from the kernel's nanoseconds (truncated, as conntrack truncates its delta-time to seconds). */
const msOf = (ns: bigint): number => Number(ns / 1_000_000n);

/**
 * The translation of a NATed entry, read from its reply tuple as the kernel
 * rewrote it: source NAT changed the source to the reply's destination,
 * destination NAT the destination to the reply's source (flow.ts reads a
 * create request's NAT the same way).
 */
function natOf(e: Entry): FlowRecord['nat'] {
  const snat = e.status.includes('SRC_NAT');
  const dnat = e.status.includes('DST_NAT');
  if (!snat && !dnat) return undefined;
  const point = (address: string, port: number | undefined): FlowEndpoint => (port === undefined ? { address } : { address, port });
  const nat: NonNullable<FlowRecord['nat']> = {};
  if (snat) nat.source = point(e.reply.dst, e.reply.dport);
  if (dnat) nat.destination = point(e.reply.src, e.reply.sport);
  return nat;
}

/** The flow record of an entry from a NEW ('start') or DESTROY ('end') event. */
export function flowRecord(event: 'start' | 'end', e: Entry): FlowRecord {
  // Fields in the order the type lists them (JSON keeps insertion order); zone is set below.
  const r = { event, id: e.id, family: e.family, protocol: e.protocol, original: e.original, reply: e.reply } as FlowRecord;
  const nat = natOf(e);
  if (nat) r.nat = nat;
  if (e.timestamp) {
    r.startMs = msOf(e.timestamp.start);
    if (e.timestamp.stop !== undefined) {
      r.endMs = msOf(e.timestamp.stop);
      r.durationMs = r.endMs - r.startMs;
    }
  }
  if (e.counters) {
    r.packets = { original: e.counters.original.packets, reply: e.counters.reply.packets };
    r.bytes = { original: e.counters.original.bytes, reply: e.counters.reply.bytes };
  }
  if (e.state !== undefined) r.state = e.state;
  if (e.mark !== undefined) r.mark = e.mark;
  r.zone = e.zone;
  if (e.labels) r.labels = e.labels;
  return r;
}

/** A NEW or DESTROY event as its flow record, an overrun as a lost record. */
export function flowRecordOf(ev: ConntrackEvent): FlowLogRecord {
  if (ev.type === 'overrun') return { event: 'lost', count: ev.lost };
  return flowRecord(ev.type === 'new' ? 'start' : 'end', ev.entry);
}

/** flows()'s options checked, split into the event stream's and the namespace settings to apply. */
export function flowOptions(options: unknown): { events: EventOptions; settings: FlowSettings; onLost: ((count: number) => void) | undefined } {
  const op = 'flows';
  const o = checkOptions(options, op);
  checkKnownKeys(o, FLOW_OPTION_KEYS, op, 'option');
  const typesOpt = own(o, 'types') ?? ['end'];
  if (!Array.isArray(typesOpt) || typesOpt.length === 0) throw ConntrackError.invalid(op, "types must be a non-empty list of 'start', 'end'", 'types');
  const types = toList(typesOpt).map((t) => {
    if (t !== 'start' && t !== 'end') throw ConntrackError.invalid(op, `unknown flow event type ${describe(t)} (one of start, end)`, 'types');
    return EVENT_OF[t];
  });
  const events: EventOptions = { types: [...new Set(types)], bufferBytes: FLOW_BUFFER_BYTES };
  for (const key of ['filter', 'bufferBytes', 'queueLimit', 'signal'] as const) {
    const v = own(o, key);
    if (v !== undefined) (events as Record<string, unknown>)[key] = v;
  }
  const settings: FlowSettings = {};
  for (const key of ['accounting', 'timestamps', 'keepEvents'] as const) {
    const v = checkBoolean(own(o, key), op, key);
    if (v !== undefined) settings[key] = v;
  }
  const onLost = own(o, 'onLost');
  if (onLost !== undefined && typeof onLost !== 'function') throw ConntrackError.invalid(op, `onLost must be a function, got ${describe(onLost)}`, 'onLost');
  return { events, settings, onLost: onLost as ((count: number) => void) | undefined };
}

const SYSCTL_OF = { accounting: 'nf_conntrack_acct', timestamps: 'nf_conntrack_timestamp', keepEvents: 'nf_conntrack_events' } as const;

export type FlowSettings = Partial<Record<keyof typeof SYSCTL_OF, boolean>>;

/**
 * Applies the settings asked for, then counts the matching flows that
 * predate the subscription: the figure a log's reader needs to know the
 * log is not complete for them. Called once subscribed (ctmon log's
 * conntrack format, which needs whole events, calls it too).
 */
export async function prepareFlowLog(source: FlowSource, settings: FlowSettings, filter: Filter | undefined): Promise<FlowLogStatus> {
  if (settings.accounting) await source.writeSysctl(SYSCTL_OF.accounting, 1);
  if (settings.timestamps) await source.writeSysctl(SYSCTL_OF.timestamps, 1);
  if (settings.keepEvents) await source.writeSysctl(SYSCTL_OF.keepEvents, 1);
  const read = async (name: string): Promise<number> => Number(await source.readSysctl(name));
  const [acct, stamp, eventsMode, predating] = await Promise.all([
    read(SYSCTL_OF.accounting), read(SYSCTL_OF.timestamps), read(SYSCTL_OF.keepEvents), source.count(filter),
  ]);
  const status = { accounting: acct === 1, timestamps: stamp === 1, eventsMode, predating };
  return { ...status, notices: flowLogNotices(status, (setting) => `${setting}: true`) };
}

/**
 * One line for each gap of a log: what the namespace does not record, and
 * how many flows predate the logger. `spell` names the setting that closes
 * a gap as the reader sets it (an option here, a flag in ctmon log).
 */
export function flowLogNotices(status: Omit<FlowLogStatus, 'notices'>, spell: (setting: keyof FlowSettings) => string): string[] {
  const notices: string[] = [];
  if (!status.accounting) notices.push(`nf_conntrack_acct is off: records carry no packets or bytes (${spell('accounting')}, or sysctl -w net.netfilter.nf_conntrack_acct=1)`);
  if (!status.timestamps) notices.push(`nf_conntrack_timestamp is off: records carry no startMs/endMs (${spell('timestamps')}, or sysctl -w net.netfilter.nf_conntrack_timestamp=1)`);
  if (status.predating > 0) {
    notices.push(`${status.predating} ${status.predating === 1 ? 'flow predates' : 'flows predate'} the logger and may end without a record${status.eventsMode === 2 ? ` (nf_conntrack_events=2: a flow created while nobody listened sends no events; ${spell('keepEvents')} sets 1 for the flows to come)` : ''}`);
  }
  return notices;
}

/**
 * Records per batch taken for ndjson() and ipfix(): about 50 KiB of records
 * and 64 KiB of text, below both malloc's mmap threshold and V8's large
 * object size, so a burst's batches reuse memory instead of faulting in
 * fresh pages for each (that cost more than writing the text).
 */
const BATCH_RECORDS = 256;
/** ndjson(), ipfix(): events gather this long before each batch is taken (a record is logged at most this much later). */
const GATHER_MS = 5;
/** ipfix(): a message that waits is sent within this long, and idle templates are checked as often. */
const IPFIX_FLUSH_MS = 100;

let flowJson: NativeFlowJson | undefined;
/** The native NDJSON writer, given the names entry.ts holds (one place for them). */
function flowJsonWriter(): NativeFlowJson {
  if (flowJson) return flowJson;
  const protocols: (string | undefined)[] = [];
  const states: Record<number, readonly string[]> = {};
  for (let n = 0; n < 256; n++) {
    const name = protocolName(n);
    protocols.push(typeof name === 'string' ? name : undefined);
    const table = stateTable(n);
    if (table) states[n] = table;
  }
  return (flowJson = new addon.FlowJson({ protocols, states }));
}

const IPFIX_OPTION_KEYS = new Set(['domain', 'mtu', 'templateRefreshMs']);

/** ipfix()'s options checked: an Observation Domain ID, a datagram size, a refresh interval. */
function ipfixOptions(options: unknown): IpfixOptions {
  const o = checkOptions(options, 'flows');
  checkKnownKeys(o, IPFIX_OPTION_KEYS, 'flows', 'option');
  const checked: IpfixOptions = {};
  const domain = own(o, 'domain');
  if (domain !== undefined) checked.domain = checkUint(domain, 0xffffffff, 'flows', 'domain');
  const mtu = own(o, 'mtu');
  if (mtu !== undefined) checked.mtu = checkUint(mtu, 65507, 'flows', 'mtu', IPFIX_MIN_MTU);
  const refresh = own(o, 'templateRefreshMs');
  if (refresh !== undefined) checked.templateRefreshMs = checkUint(refresh, 2 ** 31 - 1, 'flows', 'templateRefreshMs', 1);
  return checked;
}

/** The event stream flows() opens, its refusals (a queueLimit, a filter, a closed handle) told as flows()'s own. */
function asFlows<T>(open: () => T): T {
  try {
    return open();
  } catch (e) {
    if (!(e instanceof ConntrackError) || e.op !== 'events') throw e;
    throw new ConntrackError(e.code, 'flows', e.message.replace(/^events:/, 'flows:'), { cause: e, ...(e.argument === undefined ? {} : { argument: e.argument }) });
  }
}

/** Keys of a flow record (and of a lost one): fields may not take them, or a line would hold a key twice. */
const RECORD_KEYS = new Set(['event', 'id', 'family', 'protocol', 'original', 'reply', 'nat', 'startMs', 'endMs', 'durationMs', 'packets', 'bytes', 'state', 'mark', 'zone', 'labels', 'count']);

/** ndjson()'s `fields` as the text each line begins with after its '{'. */
function fieldsPrefix(fields: unknown): string {
  if (fields === undefined) return '';
  if (typeof fields !== 'object' || fields === null || Array.isArray(fields)) throw ConntrackError.invalid('flows', `fields must be an object, got ${describe(fields)}`, 'fields');
  let prefix = '';
  for (const [key, value] of Object.entries(fields)) {
    if (RECORD_KEYS.has(key)) throw ConntrackError.invalid('flows', `fields.${key} is a key of the records themselves: name it otherwise`, 'fields');
    if (value !== null && !['string', 'number', 'boolean'].includes(typeof value)) {
      throw ConntrackError.invalid('flows', `fields.${key} must be a string, number, boolean or null, got ${describe(value)}`, 'fields');
    }
    prefix += `${JSON.stringify(key)}:${JSON.stringify(value)},`;
  }
  return prefix;
}

/**
 * `for await` over flow records. Built on an event stream subscribed to NEW
 * and/or DESTROY only; every record keeps the event's order, and calls to
 * next() may overlap as the event stream's do. ndjson() and ipfix() read
 * the same stream in whole batches, as text or as IPFIX messages, without
 * an object per record: a stream is read one of the three ways.
 */
export class FlowStream implements AsyncIterableIterator<FlowLogRecord>, AsyncDisposable {
  readonly #events: ConntrackEventStream;
  readonly #onLost: ((count: number) => void) | undefined;
  #readAs: 'records' | 'ndjson' | 'ipfix' | undefined;
  /** Records handed out by ndjson() or ipfix() (next()'s are the event stream's). */
  #delivered = 0;
  /** Resolves once subscribed and the namespace settings are applied, with what the log may miss. */
  readonly ready: Promise<FlowLogStatus>;

  /** @internal Use Conntrack.flows(). */
  constructor(source: FlowSource, options: FlowOptions = {}) {
    const { events, settings, onLost } = flowOptions(options);
    this.#events = asFlows(() => source.events(events));
    this.#onLost = onLost;
    this.ready = this.#events.ready.then(() => prepareFlowLog(source, settings, events.filter));
    this.ready.catch(() => undefined);
  }

  #readBy(way: 'records' | 'ndjson' | 'ipfix'): void {
    if (this.#readAs !== undefined && this.#readAs !== way) {
      throw ConntrackError.invalid('flows', `this stream is read ${this.#readAs === 'records' ? 'record by record' : `by ${this.#readAs}()`} already: read a stream one way (open another for a second format)`);
    }
    this.#readAs = way;
  }

  next(): Promise<IteratorResult<FlowLogRecord, undefined>> {
    try {
      this.#readBy('records');
    } catch (e) {
      return Promise.reject(e);
    }
    return this.#events.next().then((r) => {
      if (r.done) return r;
      const value = flowRecordOf(r.value);
      if (value.event === 'lost') this.#onLost?.(value.count);
      return { done: false, value };
    });
  }

  /** The batches of event records as the reader queued them; an empty one after `idleMs` without any. */
  async *#batches(idleMs?: number): AsyncGenerator<Buffer, void, undefined> {
    this.#events.gather(GATHER_MS);
    try {
      for (;;) {
        const batch = await this.#events.nextRecords(BATCH_RECORDS, idleMs);
        if (batch === null) return;
        yield batch;
      }
    } finally {
      this.close();
    }
  }

  /**
   * The records as NDJSON text: each chunk is one or more whole lines, each
   * line the JSON of a FlowLogRecord (exactly what JSON.stringify writes of
   * the record for await yields), `fields` first. For a log shipper or a
   * file: `for await (const text of flows.ndjson()) out.write(text)`.
   */
  ndjson(options: FlowNdjsonOptions = {}): AsyncIterableIterator<string> {
    const prefix = fieldsPrefix(own(checkOptions(options, 'flows'), 'fields'));
    this.#readBy('ndjson');
    const writer = flowJsonWriter();
    const batches = this.#batches();
    const self = this;
    return (async function* lines() {
      for await (const batch of batches) {
        const { text, records, lost } = writer.lines(batch, prefix);
        self.#delivered += records;
        if (lost > 0) self.#reportLost(batch);
        if (text.length > 0) yield text;
      }
    })();
  }

  /**
   * The records as IPFIX messages (RFC 7011), each at most `mtu` bytes, to
   * send as one UDP datagram each: templates first and again every
   * `templateRefreshMs` (also while no flow ends), a message that waits sent
   * within 100 ms. Losses are not IPFIX records: `onLost` and stats() count them.
   */
  ipfix(options: IpfixOptions = {}): AsyncIterableIterator<Buffer> {
    const encoder = new IpfixEncoder(ipfixOptions(options));
    this.#readBy('ipfix');
    const batches = this.#batches(IPFIX_FLUSH_MS);
    const self = this;
    return (async function* messages() {
      let flushedAt = Date.now();
      for await (const batch of batches) {
        const now = Date.now();
        const before = encoder.sequence;
        yield* encoder.addRecords(batch, now, self.#onLost);
        self.#delivered += encoder.sequence - before;
        if (batch.length === 0 || now - flushedAt >= IPFIX_FLUSH_MS) {
          flushedAt = now;
          const msg = encoder.flush(now);
          if (msg) yield msg;
        }
      }
      const last = encoder.flush();
      if (last) yield last;
    })();
  }

  /** onLost for each overrun record of a batch the native writer reported losses in. */
  #reportLost(batch: Buffer): void {
    if (!this.#onLost) return;
    const dv = dataViewOf(batch);
    for (let off = 0; off + RECORD_SIZE <= batch.length; off = recordEnd(dv, off)) {
      if (batch[off + F.kind] === RecordKind.overrun) this.#onLost(recordLost(dv, off));
    }
  }

  async return(): Promise<IteratorResult<FlowLogRecord, undefined>> {
    this.close();
    return { done: true, value: undefined };
  }

  async throw(err?: unknown): Promise<IteratorResult<FlowLogRecord, undefined>> {
    this.close();
    throw err;
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  /** The event stream's counters: received, delivered, dropped (lost), overruns, queued. */
  stats(): EventStats {
    const s = this.#events.stats();
    return this.#readAs === 'ndjson' || this.#readAs === 'ipfix' ? { ...s, delivered: this.#delivered } : s;
  }

  /** Receive buffer the kernel granted (may be below bufferBytes without CAP_NET_ADMIN). */
  get bufferBytes(): number {
    return this.#events.bufferBytes;
  }

  get closed(): boolean {
    return this.#events.closed;
  }

  /** Ends the stream; waiting calls settle { done: true }. Idempotent. */
  close(): void {
    this.#events.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.close();
  }
}
