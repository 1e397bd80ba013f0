/** ctmon watch: live events like conntrack -E, with every loss counted on stderr. */
import type { Conntrack } from '../conntrack.js';
import type { ConntrackEvent, ConntrackEventStream, EventType, ExpectationStreamEvent, OverrunEvent } from '../events.js';
import { COMMON_OPTIONS, FILTER_OPTIONS, filterFromArgs, listArg, numberArg, UsageError, type OptionSpec, type ParsedArgs } from './args.js';
import { outputStyle, untilInterrupted } from './common.js';
import { eventLine, expectationLine, FLAGS_LEGEND, JSON_NOTE, OUTPUT_OPTION, tableHeader, toJson, type OutputFormat } from './format.js';
import { LineWriter, stdoutClosed } from './output.js';

/** --buffer as the streams' bufferBytes option, absent when not given. */
function bufferOption(args: ParsedArgs): { bufferBytes?: number } {
  const bytes = numberArg(args, 'buffer');
  return bytes === undefined ? {} : { bufferBytes: bytes };
}

export const options: OptionSpec[] = [
  ...COMMON_OPTIONS,
  ...FILTER_OPTIONS,
  { name: 'event', short: 'e', type: 'list', placeholder: 'TYPE', choices: ['new', 'update', 'destroy'], help: 'event types: new,update,destroy (default all)' },
  OUTPUT_OPTION,
  { name: 'json', type: 'boolean', help: 'same as -o json: one JSON array, closed when watch stops' },
  { name: 'count', short: 'c', type: 'number', placeholder: 'N', help: 'exit after this many events' },
  { name: 'buffer', type: 'number', placeholder: 'BYTES', help: 'socket receive buffer in bytes' },
];
export const notes = [FLAGS_LEGEND, JSON_NOTE, 'Lost events are counted on stderr (!! N events lost), never hidden.'];
export const summary = 'Prints conntrack events as they happen; lost events are reported, never hidden.';

export async function run(ct: Conntrack, args: ParsedArgs): Promise<number> {
  if (args._[0] === 'expect') return watchExpectations(ct, args);
  const { format, line } = outputStyle(args, 'table');
  const types = (listArg(args, 'event') ?? ['new', 'update', 'destroy']).map((t) => t.toLowerCase());
  for (const t of types) if (!['new', 'update', 'destroy'].includes(t)) throw new UsageError(`-e takes new, update, destroy; got '${t}'`);
  const limit = numberArg(args, 'count');
  const ac = new AbortController();
  const stop = untilInterrupted();
  void stop.promise.then(() => ac.abort());
  const stream = ct.events({
    types: types as EventType[],
    filter: filterFromArgs(args),
    signal: ac.signal,
    // conntrack -E's progname=: resolved as each event is read, before a short-lived requester exits.
    processes: format === 'conntrack',
    ...bufferOption(args),
  });
  // One write: whoever waits for "watching" sees the legend with it.
  const legend = format === 'table' ? `ctmon: ${FLAGS_LEGEND}\n` : '';
  return pump(stream, format, limit, stop, `${legend}ctmon: watching ${types.join(', ')} events${ct.netns ? ` in ${ct.netns}` : ''} (Ctrl-C to stop)\n`,
    format === 'table' ? `${'EVENT'.padEnd(8)} ${tableHeader()}` : undefined, (ev) => eventLine(ev, format, line));
}

/** watch expect: expectation events as conntrack -E expect prints them (or JSON). */
async function watchExpectations(ct: Conntrack, args: ParsedArgs): Promise<number> {
  const { format } = outputStyle(args, 'conntrack');
  const types = (listArg(args, 'event') ?? ['new', 'destroy']).map((t) => t.toLowerCase());
  for (const t of types) if (!['new', 'destroy'].includes(t)) throw new UsageError(`-e with expect takes new, destroy; got '${t}'`);
  const limit = numberArg(args, 'count');
  const ac = new AbortController();
  const stop = untilInterrupted();
  void stop.promise.then(() => ac.abort());
  const stream = ct.expectationEvents({
    types: types.map((t) => (t === 'new' ? 'expect-new' : 'expect-destroy')),
    signal: ac.signal,
    ...bufferOption(args),
  });
  return pump(stream, format, limit, stop, `ctmon: watching expectation ${types.join(', ')} events${ct.netns ? ` in ${ct.netns}` : ''} (Ctrl-C to stop)\n`,
    undefined, (ev) => (format === 'json' || format === 'ndjson' ? toJson(ev) : expectationLine(ev.expectation, { event: ev.type === 'expect-new' ? 'new' : 'destroy' })));
}

/**
 * Prints a stream's events until it ends, Ctrl-C, -c N or a closed stdout:
 * losses on stderr where they happen, a JSON array closed at the end, and
 * the totals last. `watching` goes to stderr once subscribed.
 */
async function pump<S extends ConntrackEvent | ExpectationStreamEvent>(
  stream: ConntrackEventStream<S>,
  format: OutputFormat,
  limit: number | undefined,
  stop: { cancel: () => void },
  watching: string,
  header: string | undefined,
  render: (ev: Exclude<S, OverrunEvent>) => string,
): Promise<number> {
  const out = new LineWriter();
  let lost = 0;
  let n = 0;
  // Flush at least every 100 ms so a quiet stream still shows each event promptly.
  const flusher = setInterval(() => void out.flush(), 100);
  try {
    await stream.ready;
    process.stderr.write(watching);
    if (header !== undefined) await out.line(header);
    if (format === 'json') await out.line('[');
    for await (const ev of stream) {
      if (stdoutClosed()) break;
      if (ev.type === 'overrun') {
        const gone = (ev as OverrunEvent).lost;
        lost += gone;
        await out.flush();
        process.stderr.write(`ctmon: !! ${gone} events lost here (${lost} in total)\n`);
        continue;
      }
      await out.line((format === 'json' && n > 0 ? ',' : '') + render(ev as Exclude<S, OverrunEvent>));
      if (++n === limit) break;
    }
  } finally {
    clearInterval(flusher);
    stop.cancel();
    if (format === 'json') await out.line(']');
    await out.flush();
    const s = stream.stats();
    stream.close();
    process.stderr.write(`ctmon: ${s.delivered} events shown, ${s.dropped} lost\n`);
  }
  return 0;
}
