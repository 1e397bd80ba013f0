/** ctmon flush: conntrack -F, refused without --yes. */
import type { Conntrack } from '../conntrack.js';
import type { Family } from '../entry.js';
import { COMMON_OPTIONS, FAMILIES, UsageError, type OptionSpec, type ParsedArgs } from './args.js';
import { write } from './output.js';

export const options: OptionSpec[] = [
  ...COMMON_OPTIONS,
  { name: 'family', short: 'f', type: 'string', placeholder: 'FAMILY', choices: FAMILIES, help: 'only ipv4 or ipv6 entries' },
  { name: 'yes', short: 'y', type: 'boolean', help: 'really flush (required)' },
];
export const summary = 'Removes every entry of the table (or of one family). Established connections lose their state.';

export async function run(ct: Conntrack, args: ParsedArgs): Promise<number> {
  // Always, not only on a terminal: a script or a cron job flushing by accident is worse.
  if (!args.yes) {
    throw new UsageError('flush removes every entry and breaks stateful rules for live connections: add --yes to confirm');
  }
  const before = await ct.count();
  const family = args.family as Family | undefined;
  await ct.flush(family === undefined ? {} : { family });
  const after = await ct.count();
  await write(`flushed ${before - after} entries${family ? ` (${family})` : ''}; ${after} left\n`);
  return 0;
}
