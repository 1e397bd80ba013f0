#!/usr/bin/env node
/**
 * ctmon: the conntrack table from the command line, built only on the
 * package's public API.
 */
import type { Conntrack } from '../conntrack.js';
import { parseArgs, usage, UsageError, type OptionSpec, type ParsedArgs } from './args.js';
import { EXIT, openHandle, reportError } from './common.js';
import * as del from './delete.js';
import * as demo from './demo.js';
import * as doctor from './doctor.js';
import * as flush from './flush.js';
import * as list from './list.js';
import * as stats from './stats.js';
import * as top from './top.js';
import * as watch from './watch.js';

interface Command {
  options: OptionSpec[];
  summary: string;
  synopsis: string;
  run: (ct: Conntrack, args: ParsedArgs) => Promise<number>;
}

const COMMANDS: Record<string, Command> = {
  stats: { ...stats, synopsis: 'stats [--netns NAME] [--json]' },
  list: { ...list, synopsis: 'list [-s ADDR|CIDR] [-d ...] [-p PROTO] [--sport N] [--dport N] [--state S] [-m MARK[/MASK]] [-w ZONE] [-f ipv4|ipv6] [-o table|conntrack|json|ndjson]' },
  watch: { ...watch, synopsis: 'watch [-e new,update,destroy] [filter flags] [-o table|conntrack|ndjson]' },
  top: { ...top, synopsis: 'top [--netns NAME] [--interval S]' },
  delete: { ...del, synopsis: 'delete --src ADDR|CIDR [--src ...] [--direction original|reply|either] [filter flags] [--dry-run]' },
  flush: { ...flush, synopsis: 'flush [--family ipv4|ipv6] --yes' },
  doctor: { ...doctor, synopsis: 'doctor [--netns NAME] [--json]' },
};

function mainHelp(): string {
  return [
    'usage: ctmon COMMAND [options]     (ctmon COMMAND --help for its options)',
    '',
    'The Linux conntrack table: inspect, watch, diagnose and repair it.',
    '',
    ...Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(8)} ${c.summary}`),
    `  ${'demo'.padEnd(8)} ${demo.summary}`,
    '',
    'Every command takes --netns NAME. Exit codes: 0 ok, 1 error, 64 usage, 66 no such namespace, 77 permission (run as root / CAP_NET_ADMIN); doctor: 0 healthy, 1 warnings, 2 critical.',
  ].join('\n');
}

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(mainHelp() + '\n');
    return name ? EXIT.ok : EXIT.usage;
  }
  if (name === '--version' || name === '-V') {
    process.stdout.write('ctmon (conntrack) 0.1.0\n');
    return EXIT.ok;
  }
  if (name === 'demo') {
    const args = parseArgs(rest, demo.options);
    if (args.help) {
      process.stdout.write(usage('demo [--flood N]', demo.summary, demo.options) + '\n');
      return EXIT.ok;
    }
    return demo.runDemo(args);
  }
  const cmd = COMMANDS[name];
  if (!cmd) throw new UsageError(`unknown command '${name}' (one of ${[...Object.keys(COMMANDS), 'demo'].join(', ')})`);
  const args = parseArgs(rest, cmd.options);
  if (args.help) {
    process.stdout.write(usage(cmd.synopsis, cmd.summary, cmd.options) + '\n');
    return EXIT.ok;
  }
  if (args._.length) throw new UsageError(`unexpected argument '${args._[0]}'`);
  const ct = await openHandle(args);
  try {
    return await cmd.run(ct, args);
  } finally {
    ct.close();
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    process.exitCode = reportError(e);
  },
);
