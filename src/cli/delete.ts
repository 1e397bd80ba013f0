/** ctmon delete: targeted deletion by source (deleteBySource) or by any filter (deleteWhere). */
import type { DeleteResult } from '../index.js';
import type { Conntrack } from '../conntrack.js';
import type { Direction, Filter } from '../filter.js';
import { COMMON_OPTIONS, FILTER_OPTIONS, filterFromArgs, UsageError, type OptionSpec, type ParsedArgs } from './args.js';
import { confirmedSweep, untilInterrupted } from './common.js';
import { conntrackLine, toJson } from './format.js';
import { write } from './output.js';

export const options: OptionSpec[] = [
  ...COMMON_OPTIONS,
  ...FILTER_OPTIONS,
  { name: 'direction', type: 'string', placeholder: 'DIR', choices: ['original', 'reply', 'either'], help: "with --src: which tuple's source, original (default), reply or either" },
  { name: 'dry-run', short: 'n', type: 'boolean', help: 'count what would be deleted, delete nothing' },
  { name: 'yes', short: 'y', type: 'boolean', help: 'confirm a filter that selects every entry of the table or of a family (e.g. --src 0.0.0.0/0)' },
  { name: 'json', type: 'boolean', help: 'print the result as JSON' },
];
export const summary = 'Deletes exactly the matching entries (conntrack -D --orig-src for many addresses at once) and says how many matched, were deleted, and were already gone.';

export async function run(ct: Conntrack, args: ParsedArgs): Promise<number> {
  const filter: Filter = filterFromArgs(args);
  if (Object.keys(filter).length === 0) throw new UsageError('delete needs a filter (e.g. --src 10.0.0.0/8); to remove everything use ctmon flush');
  const direction = args.direction as Direction | undefined;
  if (direction !== undefined && !filter.src) throw new UsageError('--direction needs --src');
  const ac = new AbortController();
  const stop = untilInterrupted();
  void stop.promise.then(() => ac.abort());
  const dryRun = args['dry-run'] === true;
  if (filter.src && direction !== undefined) {
    const others = Object.keys(filter).filter((k) => !['src', 'family', 'zone', 'protocol'].includes(k));
    if (others.length) throw new UsageError(`--direction combines only with --family, --zone and --proto, not --${others[0]}`);
  }
  // The library refuses a filter that sweeps a whole family unless told `all`: --yes is how an operator says it.
  const call = (all: boolean, count: boolean): Promise<DeleteResult> => {
    const options = { dryRun: dryRun || count, all, signal: ac.signal };
    if (filter.src && direction !== undefined) {
      return ct.deleteBySource(filter.src, {
        ...options, direction,
        ...(filter.family !== undefined ? { family: filter.family } : {}),
        ...(filter.zone !== undefined ? { zone: filter.zone } : {}),
        ...(filter.protocol !== undefined ? { protocol: filter.protocol } : {}),
      });
    }
    return ct.deleteWhere(filter, options);
  };
  let result: DeleteResult;
  try {
    result = await confirmedSweep(call, args.yes === true, 'delete', ct);
  } finally {
    stop.cancel();
  }
  if (args.json) {
    await write(toJson({ ...result, failed: result.failed.map((f) => ({ entry: f.entry, code: f.error.code, message: f.error.message })) }, true) + '\n');
  } else {
    await write(`${dryRun ? 'would delete' : 'matched'} ${result.matched}, deleted ${result.deleted}, already gone ${result.alreadyGone}, failed ${result.failed.length}\n`);
    for (const f of result.failed) process.stderr.write(`ctmon: could not delete (${f.error.code}): ${conntrackLine(f.entry)}\n`);
  }
  return result.failed.length ? 1 : 0;
}
