/**
 * ctmon update: conntrack -U with filters (updateWhere). -m, -u, -t,
 * --label-add and --label-del say what to change, as conntrack -U spells
 * them; the other filter flags of list select the entries.
 */
import type { Conntrack } from '../conntrack.js';
import type { UpdateChanges } from '../flow.js';
import type { UpdateResult } from '../bulk-update.js';
import { COMMON_OPTIONS, FILTER_OPTIONS, filterFromArgs, labelNumbers, listArg, markFromArgs, numberArg, stringArg, UsageError, type OptionSpec, type ParsedArgs } from './args.js';
import { confirmedSweep, outputStyle, untilInterrupted } from './common.js';
import { conntrackLine, OUTPUT_OPTION, tableHeader, tableRow, toJson } from './format.js';
import { LineWriter, write } from './output.js';

/** What -m and -u mean in list (filters) they mean here as changes, as in conntrack -U. */
const CHANGE_FLAGS = new Set(['mark', 'status']);

export const options: OptionSpec[] = [
  ...COMMON_OPTIONS,
  ...FILTER_OPTIONS.filter((o) => !CHANGE_FLAGS.has(o.name)),
  { name: 'mark', short: 'm', type: 'string', placeholder: 'MARK[/MASK]', help: 'set the mark; with /MASK only the bits under the mask: cleared, then MARK XORed in' },
  { name: 'status', short: 'u', type: 'list', placeholder: 'FLAG', choices: ['SEEN_REPLY', 'ASSURED', 'FIXED_TIMEOUT', 'HELPER'], help: 'status flags to set (kept with the others; the kernel never clears one)' },
  { name: 'timeout', short: 't', type: 'number', placeholder: 'SECONDS', help: 'set the timeout (at least 1 second)' },
  { name: 'label-add', type: 'list', placeholder: 'LABEL', help: 'labels to set, keeping the others: names from /etc/xtables/connlabel.conf or bit numbers' },
  { name: 'label-del', type: 'optional', placeholder: 'LABEL', help: 'labels to clear, keeping the others; alone, clears every label' },
  { name: 'dry-run', short: 'n', type: 'boolean', help: 'count the matching entries, change nothing' },
  { name: 'yes', short: 'y', type: 'boolean', help: 'confirm a filter that selects every entry of the table or of a family (e.g. --src 0.0.0.0/0, or none)' },
  { ...OUTPUT_OPTION, help: "how to print the updated entries: conntrack (default: the line conntrack prints), table, json, ndjson; conntrack's extended, id, labels (comma-separated)" },
  { name: 'json', type: 'boolean', help: 'print the result as JSON: counts, failures and the updated entries' },
];
export const summary = 'Changes the mark, status flags, timeout or labels of the matching entries (conntrack -U with filters), printing each entry it changed.';
export const notes = [
  'As conntrack -U: -m, -u, -t, --label-add and --label-del are the changes; -l, --state and the other filters select.',
  'An entry that already is what the change asks is left alone and not printed (conntrack -U skips it too).',
  'Without a filter, or with one that selects every entry of a family (--src 0.0.0.0/0), it needs --yes.',
];

/** The changes the flags ask for; the library checks their values. */
function changesFromArgs(a: ParsedArgs): UpdateChanges {
  const c: UpdateChanges = {};
  const mark = markFromArgs(a);
  if (mark !== undefined) c.mark = mark;
  // Names as typed, upper-cased: the library checks them and says which is unknown.
  const status = listArg(a, 'status')?.map((s) => s.toUpperCase());
  if (status) c.status = status as UpdateChanges['status'] & string[];
  const timeout = numberArg(a, 'timeout');
  const add = listArg(a, 'label-add');
  if (timeout !== undefined) c.timeout = timeout;
  if (add) c.labelsAdd = labelNumbers(add);
  const del = stringArg(a, 'label-del');
  if (del !== undefined) {
    if (del === '') c.labels = []; // conntrack --label-del alone: every label
    else c.labelsDelete = labelNumbers(del.split(',').filter(Boolean));
  }
  if (Object.keys(c).length === 0) throw new UsageError('update needs a change: -m MARK[/MASK], -u FLAG, -t SECONDS, --label-add LABEL or --label-del [LABEL]');
  return c;
}

export async function run(ct: Conntrack, args: ParsedArgs): Promise<number> {
  const filter = filterFromArgs({ ...args, mark: undefined, status: undefined });
  const changes = changesFromArgs(args);
  const { format, line } = outputStyle(args, 'conntrack');
  const dryRun = args['dry-run'] === true;
  const ac = new AbortController();
  const stop = untilInterrupted();
  void stop.promise.then(() => ac.abort());
  let result: UpdateResult;
  try {
    result = await confirmedSweep(
      (all, count) => ct.updateWhere(filter, changes, { all, dryRun: dryRun || count, signal: ac.signal, entries: !count }),
      args.yes === true, 'update', ct,
    );
  } finally {
    stop.cancel();
  }
  const entries = result.entries ?? [];
  if (args.json) {
    const failed = result.failed.map((f) => ({ entry: f.entry, code: f.error.code, message: f.error.message }));
    await write(toJson({ ...result, entries, failed }, true) + '\n');
  } else {
    const out = new LineWriter();
    if (format === 'table' && entries.length) await out.line(tableHeader());
    if (format === 'json') await out.line(toJson(entries));
    else for (const e of entries) await out.line(format === 'ndjson' ? toJson(e) : format === 'table' ? tableRow(e) : conntrackLine(e, line));
    await out.flush();
    const reasons = new Map<string, string>();
    for (const f of result.failed) {
      process.stderr.write(`ctmon: could not update (${f.error.code}): ${conntrackLine(f.entry)}\n`);
      reasons.set(f.error.code, f.error.message);
    }
    for (const [code, message] of reasons) process.stderr.write(`ctmon: ${code}: ${message}\n`);
    const unchanged = result.matched - result.updated - result.alreadyGone - result.failed.length;
    process.stderr.write(dryRun
      ? `ctmon: ${result.matched} flow entries match; nothing was updated (dry run)\n`
      : `ctmon: ${result.updated} flow entries have been updated (matched ${result.matched}, unchanged ${unchanged}, already gone ${result.alreadyGone}, failed ${result.failed.length})\n`);
  }
  return result.failed.length ? 1 : 0;
}
