/**
 * ctmon's command table: the one description of every command and option,
 * from which ctmon parses argv and prints --help, and from which
 * `ctmon completion` and the man page (scripts/man.mjs) are generated.
 */
import type { Conntrack } from '../conntrack.js';
import { optionLabel, type OptionSpec, type ParsedArgs } from './args.js';
import * as completion from './completion.js';
import * as del from './delete.js';
import * as demo from './demo.js';
import * as doctor from './doctor.js';
import * as exporter from './exporter.js';
import * as flush from './flush.js';
import * as list from './list.js';
import * as log from './log.js';
import * as stats from './stats.js';
import * as top from './top.js';
import * as update from './update.js';
import * as watch from './watch.js';

export interface Command {
  name: string;
  summary: string;
  options: OptionSpec[];
  /** Operands after the options, as the synopsis shows them. */
  operands?: string;
  /** More to say in --help and the man page: examples, what the output means. */
  notes?: string[];
  /** Commands on a table get a handle opened in --netns; the others run alone. */
  run: { withHandle: (ct: Conntrack, args: ParsedArgs) => Promise<number> } | { alone: (args: ParsedArgs) => Promise<number> };
}

/** A command module may export `notes` for its help. */
function notesOf(m: object): { notes?: string[] } {
  return 'notes' in m ? { notes: m.notes as string[] } : {};
}

export const COMMANDS: readonly Command[] = [
  { name: 'stats', summary: stats.summary, options: stats.options, ...notesOf(stats), run: { withHandle: stats.run } },
  { name: 'list', summary: list.summary, options: list.options, operands: 'conntrack|expect', ...notesOf(list), run: { withHandle: list.run } },
  { name: 'watch', summary: watch.summary, options: watch.options, operands: 'conntrack|expect', ...notesOf(watch), run: { withHandle: watch.run } },
  { name: 'top', summary: top.summary, options: top.options, ...notesOf(top), run: { withHandle: top.run } },
  { name: 'delete', summary: del.summary, options: del.options, ...notesOf(del), run: { withHandle: del.run } },
  { name: 'update', summary: update.summary, options: update.options, ...notesOf(update), run: { withHandle: update.run } },
  { name: 'flush', summary: flush.summary, options: flush.options, ...notesOf(flush), run: { withHandle: flush.run } },
  { name: 'doctor', summary: doctor.summary, options: doctor.options, ...notesOf(doctor), run: { withHandle: doctor.run } },
  { name: 'log', summary: log.summary, options: log.options, notes: log.notes, run: { alone: log.run } },
  { name: 'exporter', summary: exporter.summary, options: exporter.options, notes: exporter.notes, run: { alone: exporter.run } },
  { name: 'demo', summary: demo.summary, options: demo.options, run: { alone: demo.run } },
  {
    name: 'completion',
    summary: completion.summary,
    options: completion.options,
    operands: 'bash|zsh|fish',
    notes: completion.notes,
    run: { alone: (args) => completion.run(args, COMMANDS) },
  },
];

export const GLOBAL_OPTIONS: OptionSpec[] = [
  { name: 'help', short: 'h', type: 'boolean', help: 'show the commands, or a command\'s options with COMMAND --help' },
  { name: 'version', short: 'V', type: 'boolean', help: 'print the version' },
];

export const EXIT_CODES: [number, string][] = [
  [0, 'success; doctor: healthy (or nothing at or above --fail-on)'],
  [1, 'an error; doctor: warnings'],
  [2, 'doctor: critical findings'],
  [64, 'usage error: unknown option, bad value'],
  [66, 'no such network namespace'],
  [69, 'exporter: cannot listen on the --listen address'],
  [77, 'permission denied: run as root or with CAP_NET_ADMIN'],
];

export function findCommand(name: string): Command | undefined {
  return COMMANDS.find((c) => c.name === name);
}

export function synopsis(c: Command): string {
  return `ctmon ${c.name} [OPTIONS]${c.operands ? ` ${c.operands}` : ''}`;
}

export function commandHelp(c: Command): string {
  const width = Math.max(...c.options.map((o) => optionLabel(o).length)) + 2;
  const lines = [`usage: ${synopsis(c)}`, '', c.summary, '', 'options:'];
  for (const o of c.options) lines.push(`  ${optionLabel(o).padEnd(width)} ${o.help}`);
  if (c.notes?.length) lines.push('', ...c.notes);
  return lines.join('\n');
}

export function mainHelp(version: string): string {
  return [
    `usage: ctmon COMMAND [OPTIONS]     (ctmon COMMAND --help for its options)          ctmon ${version}`,
    '',
    'The Linux conntrack table: inspect, watch, diagnose and repair it.',
    '',
    ...COMMANDS.map((c) => `  ${c.name.padEnd(11)} ${c.summary}`),
    '',
    'Table commands take --netns NAME. Exit codes:',
    ...EXIT_CODES.map(([code, meaning]) => `  ${String(code).padEnd(4)} ${meaning}`),
  ].join('\n');
}

