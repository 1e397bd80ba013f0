/**
 * ctmon log: a flow logger on ct.flows(), for one or several namespaces.
 * NDJSON on stdout (journald, Vector, Fluent Bit), the exact lines of
 * `conntrack -E -o timestamp,extended`, or IPFIX over UDP to a collector.
 * Losses go to stderr where they happen (and, in NDJSON, as lost records);
 * SIGTERM or SIGINT stop it after what the kernel already handed over is
 * written, and the totals are printed last.
 */
import { createSocket, type Socket } from 'node:dgram';
import { isIP } from 'node:net';
import { Conntrack } from '../conntrack.js';
import { sameNamespace } from '../initial-namespace.js';
import type { EventOptions, EventStats, EventType } from '../events.js';
import type { Filter } from '../filter.js';
import { FLOW_BUFFER_BYTES, flowLogNotices, prepareFlowLog, type FlowLogStatus, type FlowOptions, type FlowSettings, type FlowStream } from '../flows.js';
import { COMMON_OPTIONS, FILTER_OPTIONS, filterFromArgs, listArg, namedByFlag, numberArg, stringArg, UsageError, type OptionSpec, type ParsedArgs } from './args.js';
import { untilInterrupted } from './common.js';
import { conntrackLine } from './format.js';
import { LineWriter, stdoutClosed, write } from './output.js';

const FORMATS = ['ndjson', 'conntrack', 'ipfix'] as const;
type LogFormat = (typeof FORMATS)[number];

export const options: OptionSpec[] = [
  { name: 'netns', type: 'list', placeholder: 'NAME', help: 'log this namespace (a name under /run/netns or a path); repeatable (ndjson, ipfix): NDJSON records then carry a netns field, IPFIX has an observation domain per namespace (0, 1, ... in this order). Default: this process\'s namespace' },
  { name: 'start', type: 'boolean', help: 'log each flow as it starts too (NAT session logging); default: as it ends' },
  { name: 'format', type: 'string', placeholder: 'FORMAT', choices: FORMATS, help: 'ndjson (default: one JSON record per line); conntrack (the lines of conntrack -E -o timestamp,extended); ipfix (needs --ipfix)' },
  { name: 'ipfix', type: 'string', placeholder: 'HOST:PORT', help: 'send IPFIX (RFC 7011) over UDP to this collector, e.g. nfcapd; implies --format ipfix' },
  { name: 'template-refresh', type: 'number', placeholder: 'SECONDS', help: 'IPFIX: send the templates again this often, for collectors that start later (default 10)' },
  { name: 'accounting', type: 'boolean', help: 'turn on nf_conntrack_acct in each namespace: records carry packets and bytes' },
  { name: 'timestamps', type: 'boolean', help: 'turn on nf_conntrack_timestamp in each namespace: records carry start and end times' },
  { name: 'keep-events', type: 'boolean', help: 'set nf_conntrack_events=1 in each namespace: flows begun while no logger runs still log their end' },
  { name: 'buffer', type: 'number', placeholder: 'BYTES', help: `socket receive buffer in bytes (default ${FLOW_BUFFER_BYTES})` },
  ...FILTER_OPTIONS,
  ...COMMON_OPTIONS.filter((o) => o.name !== 'netns'),
];
export const summary = 'Logs flows as they end (and start, with --start) as NDJSON, conntrack -E lines or IPFIX; every loss is counted.';
export const notes = [
  'NDJSON record: { event: start|end, id, family, protocol, original, reply, nat?: { source?, destination? }, startMs?, endMs?, durationMs?, packets?, bytes?, state?, mark?, zone, labels? }; a loss: { event: lost, count }.',
  'Flows already in the table when the logger starts may end unlogged: their number is printed on stderr at start.',
  'Example: ctmon log --accounting --timestamps --keep-events --netns blue --format ipfix --ipfix 127.0.0.1:2055',
];

/** HOST:PORT or [IPV6]:PORT of the IPFIX collector. */
export function parseCollector(value: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(value);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port < 1 || port > 65535) throw new UsageError(`--ipfix must be HOST:PORT or [IPV6]:PORT, got '${value}'`);
  return { host: (m[1] ?? m[2])!, port };
}

/** Where a namespace's flows go: NDJSON text on stdout, or IPFIX messages to the collector. */
interface Sink {
  /** Pumps `flows` until it ends; `index` tells the namespaces apart. */
  pump(flows: FlowStream, netns: string | undefined, index: number): Promise<void>;
  close(): void;
}

function ndjsonSink(several: boolean): Sink {
  return {
    async pump(flows, netns) {
      for await (const text of flows.ndjson(several ? { fields: { netns: netns ?? null } } : {})) {
        if (stdoutClosed()) break;
        await write(text);
      }
    },
    close: () => undefined,
  };
}

function ipfixSink(target: { host: string; port: number }, refreshSeconds: number): Sink {
  const socket: Socket = createSocket(isIP(target.host) === 6 ? 'udp6' : 'udp4');
  // A collector not listening yet is normal for UDP: say so once, keep sending.
  let warned = false;
  socket.on('error', (e) => {
    if (!warned) process.stderr.write(`ctmon: IPFIX to ${target.host}:${target.port}: ${e.message} (still sending)\n`);
    warned = true;
  });
  // Connected once: a send to an address given each time resolves it each time, the larger part of a send's cost.
  const connected = new Promise<void>((resolve) => socket.connect(target.port, target.host, resolve));
  const send = (msg: Buffer): Promise<void> => new Promise((resolve) => socket.send(msg, () => resolve()));
  return {
    async pump(flows, _netns, index) {
      await connected;
      for await (const msg of flows.ipfix({ domain: index, templateRefreshMs: refreshSeconds * 1000 })) await send(msg);
    },
    close: () => socket.close(),
  };
}

/** conntrack -E -o timestamp's prefix: the time the event is printed, `[seconds.microseconds]` and a tab. */
function receiptStamp(): string {
  const us = Math.floor((performance.timeOrigin + performance.now()) * 1000);
  return `[${Math.floor(us / 1e6)}.${String(us % 1e6).padStart(6, '0')}]\t`;
}

interface Totals {
  records: number;
  lost: number;
}

/** The stream of one namespace, for the flow formats or (conntrack) the whole events the lines need. */
interface Pump {
  ready: Promise<FlowLogStatus>;
  run(): Promise<void>;
  /** Stops once what the kernel sent is written. */
  drainAndStop(): void;
}

function reportLoss(count: number, totals: Totals, where: string): void {
  totals.lost += count;
  process.stderr.write(`ctmon: !! ${count} records lost here${where} (${totals.lost} in total)\n`);
}

/**
 * A stop that loses nothing the kernel has sent: the stream closes once
 * nothing is queued and nothing more arrived for 50 ms, or after 2 s of a
 * stream that never goes quiet.
 */
function closeWhenQuiet(stream: { stats(): EventStats; close(): void }): void {
  const deadline = Date.now() + 2000;
  let last = -1;
  const tick = (): void => {
    const s = stream.stats();
    if ((s.queued === 0 && s.received === last) || Date.now() > deadline) return stream.close();
    last = s.received;
    setTimeout(tick, 50);
  };
  tick();
}

function flowPump(ct: Conntrack, options: FlowOptions, sink: Sink, totals: Totals, netns: string | undefined, index: number): Pump {
  const where = netns === undefined ? '' : ` in ${netns}`;
  const flows = ct.flows({ ...options, onLost: (count) => reportLoss(count, totals, where) });
  return {
    ready: flows.ready,
    async run() {
      try {
        await sink.pump(flows, netns, index);
      } finally {
        totals.records += flows.stats().delivered;
      }
    },
    drainAndStop: () => closeWhenQuiet(flows),
  };
}

function conntrackPump(ct: Conntrack, events: EventOptions, settings: FlowSettings, out: LineWriter, totals: Totals, netns: string | undefined): Pump {
  // progname= as conntrack -E prints it: the requester named as each event is read.
  const stream = ct.events({ ...events, processes: true });
  const where = netns === undefined ? '' : ` in ${netns}`;
  return {
    ready: stream.ready.then(() => prepareFlowLog(ct, settings, events.filter)),
    async run() {
      for await (const ev of stream) {
        if (stdoutClosed()) break;
        if (ev.type === 'overrun') reportLoss(ev.lost, totals, where);
        else {
          totals.records++;
          const progname = ev.process ? { progname: ev.process.name } : {};
          await out.line(receiptStamp() + conntrackLine(ev.entry, { event: ev.type, extended: true, portid: ev.portid, ...progname }));
        }
      }
    },
    drainAndStop: () => closeWhenQuiet(stream),
  };
}

const FLAG_OF = { accounting: '--accounting', timestamps: '--timestamps', keepEvents: '--keep-events' } as const;

function formatOf(args: ParsedArgs): { format: LogFormat; collector?: { host: string; port: number } } {
  const ipfix = stringArg(args, 'ipfix');
  const format = (stringArg(args, 'format') ?? (ipfix === undefined ? 'ndjson' : 'ipfix')) as LogFormat;
  if (!FORMATS.includes(format)) throw new UsageError(`--format must be one of ${FORMATS.join(', ')}, got '${format}'`);
  if (format === 'ipfix' && ipfix === undefined) throw new UsageError('--format ipfix needs --ipfix HOST:PORT (the collector)');
  if (format !== 'ipfix' && ipfix !== undefined) throw new UsageError(`--ipfix sends IPFIX: it does not go with --format ${format}`);
  return format === 'ipfix' ? { format, collector: parseCollector(ipfix!) } : { format };
}

export async function run(args: ParsedArgs): Promise<number> {
  if (args._.length) throw new UsageError(`unexpected argument '${args._[0]}'`);
  const names = listArg(args, 'netns') ?? [];
  if (new Set(names).size !== names.length) throw new UsageError('each --netns may be given once');
  const { format, collector } = formatOf(args);
  if (format === 'conntrack' && names.length > 1) throw new UsageError('--format conntrack logs one namespace: its lines cannot say which they came from (run one ctmon log per namespace, or use NDJSON)');
  const refresh = numberArg(args, 'template-refresh') ?? 10;
  if (!(refresh > 0)) throw new UsageError('--template-refresh must be a number of seconds above 0');
  let filter: Filter;
  try {
    filter = filterFromArgs(args);
  } catch (e) {
    throw namedByFlag(e, args);
  }
  const types: ('start' | 'end')[] = args.start === true ? ['start', 'end'] : ['end'];
  const settings: FlowSettings = {};
  if (args.accounting === true) settings.accounting = true;
  if (args.timestamps === true) settings.timestamps = true;
  if (args['keep-events'] === true) settings.keepEvents = true;
  const bufferBytes = numberArg(args, 'buffer') ?? FLOW_BUFFER_BYTES;

  const out = new LineWriter();
  const slots = names.length ? names : [undefined];
  const sink = collector ? ipfixSink(collector, refresh) : ndjsonSink(slots.length > 1);
  const totals: Totals = { records: 0, lost: 0 };
  const stop = untilInterrupted();
  const handles: Conntrack[] = [];
  // Totals once logging began: a run that failed to start logged nothing worth a count.
  let logging = false;
  // conntrack lines are written at least every 100 ms, so a quiet log still shows each promptly.
  const flusher = setInterval(() => void out.flush(), 100);
  try {
    const pumps: Pump[] = [];
    for (const [i, netns] of slots.entries()) {
      const ct = await Conntrack.open(netns === undefined ? {} : { netns });
      const twin = handles.findIndex((h) => sameNamespace(h.namespaceId, ct.namespaceId));
      handles.push(ct);
      if (twin >= 0) throw new UsageError(`--netns ${netns} is the namespace ${names[twin]} names: each may be given once`);
      try {
        pumps.push(format === 'conntrack'
          ? conntrackPump(ct, { types: types.map((t): EventType => (t === 'start' ? 'new' : 'destroy')), filter, bufferBytes }, settings, out, totals, netns)
          : flowPump(ct, { types, filter, bufferBytes, ...settings }, sink, totals, netns, i));
      } catch (e) {
        throw namedByFlag(e, args);
      }
    }
    for (const [i, p] of pumps.entries()) {
      const status = await p.ready;
      const where = slots[i] === undefined ? '' : ` in ${slots[i]}`;
      for (const n of flowLogNotices(status, (setting) => FLAG_OF[setting])) process.stderr.write(`ctmon: note${where}: ${n}\n`);
    }
    logging = true;
    // IPFIX has no field for a namespace: each is an Observation Domain, numbered in --netns order.
    if (collector && names.length > 1) process.stderr.write(`ctmon: IPFIX observation domains: ${names.map((n, i) => `${i} ${n}`).join(', ')}\n`);
    process.stderr.write(`ctmon: logging ${types.join(' and ')} of flows${slots[0] === undefined ? '' : ` in ${names.join(', ')}`} as ${format} (SIGTERM or Ctrl-C to stop)\n`);
    void stop.promise.then(() => pumps.forEach((p) => p.drainAndStop()));
    await Promise.all(pumps.map((p) => p.run()));
  } finally {
    clearInterval(flusher);
    stop.cancel();
    await out.flush();
    sink.close();
    for (const ct of handles) ct.close();
    if (logging) process.stderr.write(`ctmon: ${totals.records} records logged, ${totals.lost} lost\n`);
  }
  return 0;
}
