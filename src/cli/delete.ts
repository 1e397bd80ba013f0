/** ctmon delete: targeted deletion by source (deleteBySource) or by any filter (deleteWhere). */
import type { DeleteResult } from '../index.js';
import type { Conntrack } from '../conntrack.js';
import type { Direction, Filter } from '../filter.js';
import { COMMON_OPTIONS, FILTER_OPTIONS, filterFromArgs, UsageError, type OptionSpec, type ParsedArgs } from './args.js';
import { untilInterrupted } from './common.js';
import { conntrackLine, toJson } from './format.js';
import { write } from './output.js';

export const options: OptionSpec[] = [
  ...COMMON_OPTIONS,
  ...FILTER_OPTIONS,
  { name: 'direction', type: 'string', placeholder: 'DIR', choices: ['original', 'reply', 'either'], help: "with --src: which tuple's source, original (default), reply or either" },
  { name: 'dry-run', short: 'n', type: 'boolean', help: 'count what would be deleted, delete nothing' },
  { name: 'yes', short: 'y', type: 'boolean', help: 'confirm a filter that selects every entry (e.g. --src 0.0.0.0/0 --src ::/0)' },
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
  // The library refuses a match-everything filter unless told `all`: --yes is how an operator says it.
  const all = args.yes === true;
  let result: DeleteResult;
  try {
    if (filter.src && direction !== undefined) {
      const { src, ...rest } = filter;
      const others = Object.keys(rest).filter((k) => !['family', 'zone', 'protocol'].includes(k));
      if (others.length) throw new UsageError(`--direction combines only with --family, --zone and --proto, not --${others[0]}`);
      result = await ct.deleteBySource(src, {
        direction, dryRun, all, signal: ac.signal,
        ...(rest.family !== undefined ? { family: rest.family } : {}),
        ...(rest.zone !== undefined ? { zone: rest.zone } : {}),
        ...(rest.protocol !== undefined ? { protocol: rest.protocol } : {}),
      });
    } else {
      result = await ct.deleteWhere(filter, { dryRun, all, signal: ac.signal });
    }
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
