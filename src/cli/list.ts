/** ctmon list: streams the table (filtered like conntrack -L) as a table, conntrack lines, JSON or NDJSON. */
import type { Conntrack } from '../conntrack.js';
import { entryToJSON } from '../entry.js';
import { COMMON_OPTIONS, FILTER_OPTIONS, filterFromArgs, type OptionSpec, type ParsedArgs } from './args.js';
import { outputStyle } from './common.js';
import { conntrackLine, expectationLine, FLAGS_LEGEND, JSON_NOTE, OUTPUT_OPTION, tableHeader, tableRow, toJson } from './format.js';
import { LineWriter, stdoutClosed } from './output.js';

export const options: OptionSpec[] = [
  ...COMMON_OPTIONS,
  ...FILTER_OPTIONS,
  OUTPUT_OPTION,
  { name: 'json', type: 'boolean', help: 'same as -o json' },
  { name: 'id', type: 'boolean', help: 'with -o conntrack: append id= like conntrack -o id' },
  { name: 'zero', short: 'z', type: 'boolean', help: 'reset the counters of the listed entries as they are read (conntrack -L -z)' },
];
export const notes = [
  'list expect: the expectation table, as conntrack -L expect prints it (-o conntrack, the default there), or -o json/ndjson.',
  FLAGS_LEGEND, JSON_NOTE,
];
export const summary = 'Lists conntrack entries, streaming: a 250k-entry table never sits in memory at once.';

export async function run(ct: Conntrack, args: ParsedArgs): Promise<number> {
  if (args._[0] === 'expect') return listExpectations(ct, args);
  const { format, line } = outputStyle(args, 'table');
  const filter = filterFromArgs(args);
  const out = new LineWriter();
  let n = 0;
  if (format === 'table') await out.line(tableHeader());
  if (format === 'json') await out.line('[');
  for await (const e of ct.dump(filter, { zeroCounters: args.zero === true })) {
    if (stdoutClosed()) break;
    switch (format) {
      case 'conntrack':
        await out.line(conntrackLine(e, line));
        break;
      case 'json':
        await out.line((n ? ',' : '') + toJson(entryToJSON(e)));
        break;
      case 'ndjson':
        await out.line(toJson(entryToJSON(e)));
        break;
      default:
        await out.line(tableRow(e));
    }
    n++;
  }
  if (format === 'json') await out.line(']');
  await out.flush();
  if (format === 'table' || format === 'conntrack') process.stderr.write(`ctmon: ${n} entries\n`);
  return 0;
}

async function listExpectations(ct: Conntrack, args: ParsedArgs): Promise<number> {
  const { format } = outputStyle(args, 'conntrack');
  const family = args.family as 'ipv4' | 'ipv6' | undefined;
  const list = await ct.expectations.list(family ? { family } : {});
  const out = new LineWriter();
  if (format === 'json') await out.line(toJson(list));
  else for (const x of list) await out.line(format === 'ndjson' ? toJson(x) : expectationLine(x));
  await out.flush();
  if (format === 'conntrack' || format === 'table') process.stderr.write(`ctmon: ${list.length} expectations\n`);
  return 0;
}
