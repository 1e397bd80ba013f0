#!/usr/bin/env node
/**
 * ctmon: the conntrack table from the command line, built only on the
 * package's public API. Commands and options live in commands.ts.
 */
import { createRequire } from 'node:module';
import { Conntrack } from '../conntrack.js';
import { namedByFlag, parseArgs, stringArg, UsageError } from './args.js';
import { COMMANDS, commandHelp, findCommand, GLOBAL_OPTIONS, mainHelp } from './commands.js';
import { EXIT, reportError } from './common.js';

const { version } = createRequire(import.meta.url)('../../package.json') as { version: string };

async function main(argv: string[]): Promise<number> {
  const first = argv.findIndex((a) => !a.startsWith('-'));
  if (first !== 0) {
    // Only global options before the command: ctmon --help, ctmon -V.
    const globals = parseArgs(first < 0 ? argv : argv.slice(0, first), GLOBAL_OPTIONS);
    if (globals.version) {
      process.stdout.write(`ctmon (conntrack) ${version}\n`);
      return EXIT.ok;
    }
    if (first < 0) {
      process.stdout.write(mainHelp(version) + '\n');
      return globals.help ? EXIT.ok : EXIT.usage;
    }
    argv = argv.slice(first);
  }
  const [name, ...rest] = argv as [string, ...string[]];
  if (name === 'help') {
    const c = rest[0] === undefined ? undefined : findCommand(rest[0]);
    process.stdout.write((c ? commandHelp(c) : mainHelp(version)) + '\n');
    return EXIT.ok;
  }
  const cmd = findCommand(name);
  if (!cmd) throw new UsageError(`unknown command '${name}' (one of ${COMMANDS.map((c) => c.name).join(', ')})`);
  const args = parseArgs(rest, cmd.options);
  if (args.help) {
    process.stdout.write(commandHelp(cmd) + '\n');
    return EXIT.ok;
  }
  if ('alone' in cmd.run) return cmd.run.alone(args);
  const operands = cmd.operands?.split('|') ?? [];
  if (args._.length > 1 || (args._.length === 1 && !operands.includes(args._[0]!))) {
    throw new UsageError(`unexpected argument '${args._.at(-1)}'${operands.length ? ` (${cmd.name} takes ${operands.join(' or ')})` : ''}`);
  }
  const netns = stringArg(args, 'netns');
  const ct = await Conntrack.open(netns === undefined ? {} : { netns });
  try {
    return await cmd.run.withHandle(ct, args);
  } catch (e) {
    throw namedByFlag(e, args);
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
