/** Pieces shared by ctmon's commands. */
import { ConntrackError } from '../errors.js';
import { stringArg, UsageError, type ParsedArgs } from './args.js';
import { labelMap } from '../labels.js';
import { CONNTRACK_OUTPUT_OPTIONS, OUTPUT_FORMATS, type ConntrackLineOptions, type ConntrackOutputOption, type OutputFormat } from './format.js';

/** sysexits.h: what a script calling ctmon can tell apart. */
export const EXIT = { ok: 0, error: 1, usage: 64, noInput: 66, unavailable: 69, noPermission: 77 } as const;

/**
 * -o FORMAT[,OPTION...], or --json meaning -o json. conntrack's line options
 * (extended, id, labels) imply the conntrack format, as `conntrack -o id` does.
 */
export function outputStyle(args: ParsedArgs, fallback: OutputFormat): { format: OutputFormat; line: ConntrackLineOptions } {
  const words = (stringArg(args, 'output') ?? (args.json ? 'json' : fallback)).split(',').map((w) => w.trim()).filter(Boolean);
  const formats = words.filter((w) => (OUTPUT_FORMATS as readonly string[]).includes(w)) as OutputFormat[];
  const options = words.filter((w) => (CONNTRACK_OUTPUT_OPTIONS as readonly string[]).includes(w)) as ConntrackOutputOption[];
  const unknown = words.find((w) => !formats.includes(w as OutputFormat) && !options.includes(w as ConntrackOutputOption));
  if (unknown !== undefined || formats.length > 1 || words.length === 0) {
    throw new UsageError(`-o must be one of ${OUTPUT_FORMATS.join(', ')}, optionally with ${CONNTRACK_OUTPUT_OPTIONS.join(', ')} (comma-separated), got '${words.join(',')}'`);
  }
  const format = formats[0] ?? 'conntrack';
  if (options.length && format !== 'conntrack') throw new UsageError(`-o ${options.join(',')} applies to the conntrack format, not ${format}`);
  const line: ConntrackLineOptions = {};
  if (options.includes('extended')) line.extended = true;
  if (options.includes('id') || args.id === true) line.id = true;
  if (options.includes('labels')) line.labels = labelMap();
  return { format, line };
}

/** -o FORMAT, or --json meaning -o json (one JSON array; ndjson is one object per line). */
export function outputFormat(args: ParsedArgs, fallback: OutputFormat): OutputFormat {
  return outputStyle(args, fallback).format;
}

/**
 * Runs a bulk call that refuses (ConntrackError argument 'all') a filter
 * selecting every entry of the table or of a family. Without --yes the
 * refusal becomes a usage error that says how many entries that is and
 * names --yes; `call(true, true)` counts them in a dry run.
 */
export async function confirmedSweep<T extends { matched: number }>(call: (all: boolean, dryRun: boolean) => Promise<T>, yes: boolean, verb: string, ct: { count(): Promise<number> }): Promise<T> {
  try {
    return await call(yes, false);
  } catch (e) {
    if (yes || !(e instanceof ConntrackError) || e.code !== 'ERR_INVALID_ARG' || e.argument !== 'all') throw e;
    const { matched } = await call(true, true);
    const total = await ct.count();
    const scope = matched === total ? 'every entry of the table' : 'every entry of an address family';
    throw new UsageError(`this filter selects ${scope}, ${matched} now: add --yes to ${verb} them all`);
  }
}

/** Maps an error to one line on stderr and an exit code; never a stack trace. */
export function reportError(e: unknown): number {
  if (e instanceof UsageError) {
    process.stderr.write(`ctmon: ${e.message} (see ctmon --help)\n`);
    return EXIT.usage;
  }
  if (e instanceof ConntrackError) {
    process.stderr.write(`ctmon: ${e.message}\n`);
    if (e.code === 'EPERM' || e.code === 'EACCES') return EXIT.noPermission;
    if (e.code === 'ERR_INVALID_ARG' || e.code === 'EINVAL') return EXIT.usage;
    if (e.op === 'open' && e.code === 'ENOENT') return EXIT.noInput;
    return EXIT.error;
  }
  process.stderr.write(`ctmon: ${e instanceof Error ? e.message : String(e)}\n`);
  return EXIT.error;
}

/**
 * Resolves on the first of SIGINT, SIGTERM or SIGHUP, removing its handlers.
 * SIGHUP (the terminal closed) stops a command as Ctrl-C does, so it ends
 * cleanly (a JSON array closed, the totals printed); a daemon passes
 * `onHangup` instead, which SIGHUP calls every time, stopping nothing.
 */
export function untilInterrupted(onHangup?: () => void): { promise: Promise<string>; cancel: () => void } {
  let done: (s: string) => void = () => undefined;
  const promise = new Promise<string>((resolve) => (done = resolve));
  const onInt = (): void => done('SIGINT');
  const onTerm = (): void => done('SIGTERM');
  const onHup = onHangup ?? ((): void => done('SIGHUP'));
  process.once('SIGINT', onInt);
  process.once('SIGTERM', onTerm);
  process.on('SIGHUP', onHup);
  return {
    promise,
    cancel: () => {
      process.off('SIGINT', onInt);
      process.off('SIGTERM', onTerm);
      process.off('SIGHUP', onHup);
    },
  };
}
