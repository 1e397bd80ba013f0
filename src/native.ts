/**
 * Loads the addon (a prebuilt binary from prebuilds/ or the local
 * build/Release) and types its surface. Nothing here has policy: see
 * conntrack.ts and events.ts for what the calls mean.
 */
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { CounterTotals } from './stats-counters.js';

export interface NativeTuple {
  src?: Buffer;
  dst?: Buffer;
  protocol?: number;
  sport?: number;
  dport?: number;
  icmpType?: number;
  icmpCode?: number;
  icmpId?: number;
  /** CTA_TUPLE_ZONE: a zone of this direction only. */
  zone?: number;
}

export interface NativeEntrySpec {
  family: number;
  original?: NativeTuple;
  reply?: NativeTuple;
  timeout?: number;
  status?: number;
  mark?: number;
  zone?: number;
  id?: number;
  state?: number;
  /** CTA_LABELS bitmap (16 bytes) and, for a change of some bits only, CTA_LABELS_MASK. */
  labels?: Buffer;
  labelsMask?: Buffer;
  vtagOriginal?: number;
  vtagReply?: number;
  dccpRole?: number;
  /** get(): read and reset the counters (IPCTNL_MSG_CT_GET_CTRZERO). */
  zeroCounters?: boolean;
  /** update(): CTA_MARK_MASK, the bits zeroed before `mark` is XORed in. */
  markMask?: number;
  /** create(): CTA_NAT_SRC / CTA_NAT_DST. */
  snat?: { address: Buffer; port?: number };
  dnat?: { address: Buffer; port?: number };
}

/** An update's change (native/change.h ChangeSpec), applied to the entry as it is. */
export interface NativeChange {
  timeout?: number;
  state?: number;
  vtagOriginal?: number;
  vtagReply?: number;
  dccpRole?: number;
  /** Flags to add to the entry's. */
  status?: number;
  /** new = (old & ~markMask) ^ mark; markMask defaults to all ones. */
  mark?: number;
  markMask?: number;
  /** new = (old & ~labelsMask) ^ labels, 16-byte bitmaps. */
  labels?: Buffer;
  labelsMask?: Buffer;
}

/** What update() found and did (native/handle.cc). */
export interface NativeUpdateOutcome {
  result: 'updated' | 'unchanged' | 'missing' | 'replaced' | 'fixedTimeout';
  /** The entry as the update left it, as it is, or (replaced) the flow holding the tuple now. */
  record?: Buffer;
}

/** What the kernel filters during a dump (ctnetlink_alloc_filter). */
export interface NativeKernelFilter {
  family?: number;
  mark?: number;
  markMask?: number;
  status?: number;
  statusMask?: number;
  origFlags?: number;
  tuple?: NativeTuple;
  /** Dump with IPCTNL_MSG_CT_GET_CTRZERO: every dumped entry's counters are reset as read. */
  zeroCounters?: boolean;
}

/** What native code matches on each decoded entry (native/match.h). */
export interface NativeMatch {
  family?: number;
  protocol?: number;
  zone?: number;
  origZone?: number;
  replyZone?: number;
  /** Packed rows: family u8, prefix length u8, 16 address bytes. */
  src?: Buffer;
  dst?: Buffer;
  srcDirection?: number;
  sports?: number[];
  dports?: number[];
  tcpStates?: number;
  sctpStates?: number;
  dccpStates?: number;
  statusValue?: number;
  statusMask?: number;
  markValue?: number;
  markMask?: number;
  replySrc?: Buffer;
  replyDst?: Buffer;
  replySports?: number[];
  replyDports?: number[];
  icmpType?: number;
  icmpCode?: number;
  icmpId?: number;
  /** 1 source NAT, 2 destination NAT, 3 either. */
  nat?: number;
  natAddress?: Buffer;
  /** 16-byte bitmap: every set bit must be set on the entry. */
  labels?: Buffer;
}

/** One CPU's counters: the CPU and one number per key of native/stats.h (src/stats-counters.ts names them). */
export interface NativeCpuStats extends CounterTotals {
  cpu: number;
}

export interface NativeStats {
  count: number;
  max: number;
  perCpu: NativeCpuStats[];
}

/** A bulk delete's or update's counts (native/cursor.h BulkOutcome). */
export interface NativeBulkOutcome {
  matched: number;
  /** Entries deleted, or updated. */
  applied: number;
  alreadyGone: number;
  failed: { record: Buffer; errno: number }[];
  /** updateStreaming with keepUpdated: the updated entries as the update left them. */
  records?: Buffer;
}

export interface NativeDumpCursor {
  next(maxRecords: number): Promise<Buffer | null>;
  count(): Promise<number>;
  /** Reads the matching entries into native memory; resolves with how many. */
  collect(): Promise<number>;
  /** Deletes what collect() kept, in batches. */
  deleteCollected(): Promise<NativeBulkOutcome>;
  /**
   * Deletes batches of matches while the dump is still being received. With
   * dryRun: the same read and de-duplication, counting instead of deleting.
   */
  deleteStreaming(dryRun?: boolean): Promise<NativeBulkOutcome>;
  /** The same bulk path applying `change` to each match as dumped (those it would not change are skipped). */
  updateStreaming(change: NativeChange, dryRun: boolean, keepUpdated: boolean): Promise<NativeBulkOutcome>;
  cancel(): void;
  close(): void;
}

export interface NativeHandle {
  /** Opens the namespace given to the constructor (on the thread pool). */
  open(): Promise<void>;
  /** The entry's record, or null when the kernel has none (ENOENT). */
  get(spec: NativeEntrySpec): Promise<Buffer | null>;
  create(spec: NativeEntrySpec): Promise<void>;
  /** Creates in batches without an ACK each (native/handle.cc); resolves the refusals as [index, errno, index, errno, ...]. */
  createMany(specs: NativeEntrySpec[]): Promise<number[]>;
  /** Reads the entry by `key`, checks `id`, sends what `change` alters (native/handle.cc). */
  update(key: NativeEntrySpec, change: NativeChange, id?: number): Promise<NativeUpdateOutcome>;
  /** false when the kernel had no such entry (ENOENT). */
  delete(spec: NativeEntrySpec): Promise<boolean>;
  flush(spec: { family: number }): Promise<void>;
  /** The expectation table: ExpectRecords, one Buffer. */
  expectDump(spec: { family: number }): Promise<Buffer>;
  expectGet(spec: NativeExpectSpec): Promise<Buffer | null>;
  expectCreate(spec: NativeExpectSpec): Promise<void>;
  /** false when the kernel had no such expectation (ENOENT). */
  expectDelete(spec: NativeExpectSpec): Promise<boolean>;
  expectFlush(spec: { family: number }): Promise<void>;
  stats(): Promise<NativeStats>;
  dump(kernel: NativeKernelFilter, match: NativeMatch): NativeDumpCursor;
  /** The process owning netlink port `portid` in the handle's namespace (native/process.cc). */
  processOf(portid: number): Promise<{ pid: number; name: string } | undefined>;
  readFile(path: string): Promise<string>;
  writeFile(path: string, data: string): Promise<void>;
  /** stat(2)'s st_mode, inside the handle's namespace. */
  statMode(path: string): Promise<number>;
  /** The nsfs device, inode and ctime of the namespace fd the handle holds (native/netns.h IdentifyNetns). */
  namespaceId(): Promise<{ dev: number; inode: number; ctimeSec: number; ctimeNsec: number }>;
  close(): void;
}

export interface NativeEventOptions {
  groups: number;
  bufferBytes: number;
  queueLimit: number;
  match: NativeMatch;
  /** Rows of 20 bytes for the kernel socket filter, see native/events.cc. */
  kernelFilter?: Buffer;
  /** Look up the requesting process of each event as it is read. */
  resolveProcesses?: boolean;
}

export interface NativeEventStats {
  received: number;
  kernelDropped: number;
  queueDropped: number;
  overruns: number;
  queued: number;
  taken: number;
  bufferBytes: number;
}

export interface NativeEventReader {
  open(): Promise<void>;
  take(max: number): Buffer | null;
  setWaiting(waiting: boolean): void;
  setGatherMs(ms: number): void;
  stats(): NativeEventStats;
  /** Name of a pid found by process resolution. */
  processName(pid: number): string | undefined;
  close(): void;
}

/** flows.ts's NDJSON writer (native/flow_json.h): the lines of a batch of event records, with what they held. */
export interface NativeFlowJson {
  lines(records: Buffer, prefix: string): { text: string; records: number; lost: number };
}

/** A lookup key for LiveStore.get()/find(): one tuple with its protocol and zones. */
export interface NativeStoreKey extends NativeTuple {
  family: number;
  protocol: number;
  origZone?: number;
  replyZone?: number;
}

/** native/table.h: the live table's entries and counts, fed record batches. */
export interface NativeLiveStore {
  beginSync(expected?: number): void;
  /** Removes what the sync neither dumped nor heard of; returns how many. */
  endSync(): number;
  applyDump(batch: Buffer): void;
  /** Applies event records in order (counted unless `replay`); returns the events lost at its overrun records. */
  applyEvents(batch: Buffer, replay: boolean): number;
  counters(): { size: number; assured: number; unwatched: number; new: number; update: number; destroy: number; lost: number; failed: boolean };
  /** state -1: the protocol has no states. */
  groups(): { protocol: number; state: number; entries: number; assured: number }[];
  topSources(n: number): { family: number; addr: Buffer; entries: number }[];
  topDestinations(n: number): { family: number; protocol: number; addr: Buffer; dport?: number; entries: number }[];
  get(key: NativeStoreKey): Buffer | null;
  find(key: NativeStoreKey): Buffer | null;
  /** Up to `max` entries' records from position `start`; null past the end. */
  records(start: number, max: number): Buffer | null;
  release(): void;
  /** malloc_trim(0): free heap pages back to the system (process-wide). */
  trimHeap(): void;
}

export interface NativeAddon {
  Handle: new (netnsPath?: string) => NativeHandle;
  LiveStore: new (entries: boolean) => NativeLiveStore;
  FlowJson: new (names: { protocols: (string | undefined)[]; states: Record<number, readonly string[]> }) => NativeFlowJson;
  EventReader: new (handle: NativeHandle, options: NativeEventOptions, onReadable: () => void) => NativeEventReader;
  RECORD_LAYOUT: RecordLayout;
  /**
   * Netlink messages → the record batch a dump (or, with `events`, the event
   * reader, unfiltered) would produce, by the same native decoder: no socket,
   * no privilege. Throws EBADMSG where a dump would fail; events skip what is malformed.
   */
  decodeMessages(messages: Buffer, events?: boolean): Buffer;
  /** The packed rows src/filter.ts sends (native/convert.h PrefixRow, SocketFilterRow): sizes, offsets, kinds. */
  ROW_LAYOUTS: {
    prefix: { size: number; fields: Readonly<Record<string, number>> };
    socketFilter: { size: number; fields: Readonly<Record<string, number>>; kinds: Readonly<Record<string, number>> };
  };
  /** The per-CPU counters' keys in native/stats.h, in `conntrack -S` order. */
  STATS_COUNTERS: readonly string[];
}

/** native/record.h's Record as the addon describes it at load (addon.cc); src/record.ts names what it reads. */
export interface RecordLayout {
  /** The fixed part; each record is followed by its `tailBytes` of strings. */
  size: number;
  labelBytes: number;
  fields: Readonly<Record<string, number>>;
  tuple: Readonly<Record<string, number>>;
  present: Readonly<Record<string, number>>;
  /** The string attributes a tail may hold: field name → tag (native/record.h CT_RECORD_STRINGS). */
  strings: Readonly<Record<string, number>>;
  kinds: Readonly<Record<string, number>>;
  /** native/expect.h's ExpectRecord: same size, its own fields and presence bits. */
  expect?: {
    fields: Readonly<Record<string, number>>;
    present: Readonly<Record<string, number>>;
  };
}

/** An expectation request (native/expect.h ExpectSpec). */
export interface NativeExpectSpec {
  family: number;
  master?: NativeTuple;
  tuple?: NativeTuple;
  mask?: NativeTuple;
  timeout?: number;
  id?: number;
  zone?: number;
  flags?: number;
  class?: number;
  helper?: string;
}

const packageRoot = join(dirname(fileURLToPath(import.meta.url)), '..');

/** The addon file that load() takes, for a Worker that loads it too (conntrack/testing). */
export let addonPath = '';

function load(): NativeAddon {
  const require = createRequire(import.meta.url);
  // CONNTRACK_ADDON points at another build of the same sources (the
  // sanitizer build of `npm run test:asan`); otherwise prebuilds/ or build/.
  const override = process.env.CONNTRACK_ADDON;
  if (override) {
    addonPath = require.resolve(override);
    return require(addonPath) as NativeAddon;
  }
  const nodeGypBuild = require('node-gyp-build') as { path(dir: string): string };
  try {
    addonPath = nodeGypBuild.path(packageRoot);
    return require(addonPath) as NativeAddon;
  } catch (e) {
    const msg = e instanceof Error ? e.message : String(e);
    const lib = /lib(netfilter_conntrack|mnl|nfnetlink)[^:]*/.exec(msg)?.[0];
    if (lib) {
      throw new Error(
        `conntrack: the shared library ${lib} is missing. Install it: ` +
          'Debian/Ubuntu `apt-get install libnetfilter-conntrack3 libmnl0`, ' +
          'Fedora/RHEL `dnf install libnetfilter_conntrack libmnl`, Alpine `apk add libnetfilter_conntrack libmnl`.',
        { cause: e },
      );
    }
    throw new Error(
      `conntrack: no native binary for ${process.platform}-${process.arch} (node ${process.version}) and no local build. ` +
        'Build it with `npm rebuild conntrack` (needs a C++ compiler and libnetfilter-conntrack-dev, libmnl-dev).',
      { cause: e },
    );
  }
}

export const addon: NativeAddon = load();
