/**
 * LiveTable: a TableTally kept equal to the kernel's table from the event
 * stream, so that reading it costs nothing however large the table is.
 *
 * It subscribes first and dumps second. Events that arrive during the dump
 * are held and replayed onto the dump's tally in order, as upserts keyed by
 * the original tuple and zone (the kernel's unique key; ids are 32-bit
 * hashes and collide in a large table): an event for an entry the dump also
 * saw changes nothing twice, a DESTROY for one it never saw removes nothing,
 * and whatever happened last wins. After any loss (an overrun) and every
 * `resyncSeconds`, the same dump-and-replay builds a fresh tally in the
 * background and replaces the old one.
 *
 * Entries that never send events. The kernel attaches the event extension
 * to an entry when it is created, and under net.netfilter.nf_conntrack_events
 * = 2 (the default) only while someone listens: an entry created before the
 * subscription is destroyed, changes state and expires without a word. Those
 * are the "unwatched" entries: the first dump's, less every one an event
 * later names. While any remain, the table is dumped again every
 * max(30 s, 10 dumps' time); and whenever the events go quiet for a second
 * with the tally differing from the kernel's O(1) count, at once (at most
 * every 5 dumps' time).
 */
import type { Conntrack } from './conntrack.js';
import type { Entry } from './entry.js';
import { ConntrackError } from './errors.js';
import type { ConntrackEvent, ConntrackEventStream, EntryEvent, EventType } from './events.js';
import { TableTally, type TallySlot } from './tally.js';

export interface LiveTableOptions {
  /** Seconds between full resyncs (0: only after losses). Default 300. */
  resyncSeconds?: number;
  /** The event stream's buffers (EventOptions). */
  bufferBytes?: number;
  queueLimit?: number;
}

/** Event counts as the stream delivered them, and what was lost. */
export interface LiveEventCounts {
  new: number;
  update: number;
  destroy: number;
  lost: number;
}

/**
 * The kernel's identity of an entry: zone and original tuple. Built with
 * join(), which gives one flat string: a template literal gives a tree of
 * its pieces, and as a Map key that tree (addresses included) stays alive
 * for the entry's life, three times the memory.
 */
export function entryKey(e: Entry): string {
  const o = e.original;
  const icmp = o.icmp;
  return [
    e.zone, o.zone ?? '', e.reply.zone ?? '', e.protocol, o.src, o.dst, o.sport ?? '', o.dport ?? '',
    icmp ? `${icmp.type}/${icmp.code}/${icmp.id}` : '', o.srcKey ?? '', o.dstKey ?? '',
  ].join(' ');
}

class Snapshot {
  readonly tally = new TableTally();
  readonly slots = new Map<string, TallySlot>();
  /** Keys of entries that may send no events (see the top of this file). */
  readonly unwatched = new Set<string>();

  /** Counts a dumped entry; unwatched if `before` says so (every entry of the first dump). */
  dumped(entry: Entry, before: ReadonlySet<string> | 'all'): void {
    const key = this.apply('new', entry);
    if (before === 'all' || before.has(key)) this.unwatched.add(key);
  }

  apply(type: EventType, entry: Entry): string {
    const key = entryKey(entry);
    this.unwatched.delete(key);
    const old = this.slots.get(key);
    if (old) this.tally.remove(old);
    if (type === 'destroy') {
      if (old) this.slots.delete(key);
      return key;
    }
    // UPDATE events carry the state only when it changed: keep the one we had.
    this.slots.set(key, this.tally.add(entry, old?.group.state));
    return key;
  }
}

export class LiveTable {
  readonly #ct: Conntrack;
  readonly #stream: ConntrackEventStream;
  readonly #resyncMs: number;
  #current: Snapshot | undefined;
  /** Events held while a dump runs; undefined when none does. */
  #held: EntryEvent[] | undefined;
  #syncing: Promise<void> | undefined;
  #resyncAgain = false;
  #timer: NodeJS.Timeout | undefined;
  #closed = false;
  #error: unknown;
  readonly #counts: LiveEventCounts = { new: 0, update: 0, destroy: 0, lost: 0 };
  #resyncs = 0;
  #lastSync = 0;
  #dumpMs = 0;
  #reconciler: NodeJS.Timeout | undefined;
  #seenAtLastCheck = -1;
  #version = 0;
  /** Resolves when the first dump has been merged. */
  readonly ready: Promise<void>;

  constructor(ct: Conntrack, options: LiveTableOptions = {}) {
    this.#ct = ct;
    this.#resyncMs = (options.resyncSeconds ?? 300) * 1000;
    const { bufferBytes, queueLimit } = options;
    this.#stream = ct.events({
      types: ['new', 'update', 'destroy'],
      ...(bufferBytes !== undefined ? { bufferBytes } : {}),
      ...(queueLimit !== undefined ? { queueLimit } : {}),
    });
    this.ready = this.#start();
    this.ready.catch(() => undefined);
  }

  async #start(): Promise<void> {
    await this.#stream.ready;
    if (this.#closed) return;
    void this.#consume();
    await this.#resync();
    if (this.#closed) return;
    if (this.#resyncMs > 0) {
      this.#timer = setInterval(() => void this.#resync().catch(() => undefined), this.#resyncMs);
      this.#timer.unref();
    }
    this.#reconciler = setInterval(() => void this.#reconcile().catch(() => undefined), 1000);
    this.#reconciler.unref();
  }

  /** Once a second, off the scrape path: re-dump when unwatched entries may have changed unseen. */
  async #reconcile(): Promise<void> {
    const snapshot = this.#current;
    if (!snapshot || this.#syncing || this.#closed) return;
    const seen = this.#counts.new + this.#counts.update + this.#counts.destroy;
    const quiet = seen === this.#seenAtLastCheck;
    this.#seenAtLastCheck = seen;
    const since = Date.now() - this.#lastSync;
    if (snapshot.unwatched.size > 0 && since >= Math.max(30_000, 10 * this.#dumpMs)) {
      await this.#resync();
      return;
    }
    if (quiet && since >= 5 * this.#dumpMs) {
      const kernel = await this.#ct.count();
      const stillQuiet = this.#counts.new + this.#counts.update + this.#counts.destroy === seen;
      if (kernel !== snapshot.tally.entries && stillQuiet && this.#current === snapshot) await this.#resync();
    }
  }

  async #consume(): Promise<void> {
    try {
      for await (const ev of this.#stream) this.#onEvent(ev);
    } catch (e) {
      if (!this.#closed) this.#error = e;
    }
  }

  #onEvent(ev: ConntrackEvent): void {
    if (ev.type === 'overrun') {
      this.#counts.lost += ev.lost;
      // What was lost is unknown: only a fresh dump makes the tally exact again.
      void this.#resync().catch(() => undefined);
      return;
    }
    this.#counts[ev.type]++;
    if (this.#held) this.#held.push(ev);
    this.#current?.apply(ev.type, ev.entry);
    this.#version++;
  }

  /** Dumps into a fresh snapshot, replays what arrived meanwhile, and swaps it in. */
  #resync(): Promise<void> {
    if (this.#syncing) {
      this.#resyncAgain = true;
      return this.#syncing;
    }
    const run = async (): Promise<void> => {
      do {
        this.#resyncAgain = false;
        const fresh = new Snapshot();
        const before = this.#current?.unwatched ?? 'all';
        const started = Date.now();
        this.#held = [];
        try {
          for await (const e of this.#ct.dump()) fresh.dumped(e, before);
          for (const ev of this.#held) fresh.apply(ev.type, ev.entry);
        } finally {
          this.#held = undefined;
        }
        this.#current = fresh;
        this.#resyncs++;
        this.#lastSync = Date.now();
        this.#dumpMs = this.#lastSync - started;
        this.#version++;
      } while (this.#resyncAgain && !this.#closed);
    };
    this.#syncing = run().finally(() => {
      this.#syncing = undefined;
    });
    return this.#syncing;
  }

  /** The tally, once the first dump is in; throws what stopped the event stream. */
  get tally(): TableTally | undefined {
    if (this.#error) throw this.#error instanceof ConntrackError ? this.#error : new ConntrackError('EIO', 'events', String(this.#error));
    return this.#current?.tally;
  }

  /** Grows whenever the tally changes: lets readers cache what they derive from it. */
  get version(): number {
    return this.#version;
  }

  get events(): Readonly<LiveEventCounts> {
    return this.#counts;
  }

  /** Entries that may change unseen: created before the subscription and named by no event since. */
  get unwatched(): number {
    return this.#current?.unwatched.size ?? 0;
  }

  /** Full dumps merged so far (the first one included). */
  get resyncs(): number {
    return this.#resyncs;
  }

  /** When the last full dump was merged (ms since the epoch; 0 before the first). */
  get lastSync(): number {
    return this.#lastSync;
  }

  /** A full resync now (also what an overrun triggers). Resolves when it is merged. */
  resync(): Promise<void> {
    return this.#resync();
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#timer) clearInterval(this.#timer);
    if (this.#reconciler) clearInterval(this.#reconciler);
    this.#stream.close();
  }
}
