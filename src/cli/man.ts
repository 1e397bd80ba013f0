/**
 * The ctmon(1) man page, generated from the command table (commands.ts) by
 * scripts/man.mjs, so it says what --help says.
 */
import { optionLabel } from './args.js';
import { COMMANDS, EXIT_CODES, GLOBAL_OPTIONS, synopsis } from './commands.js';

/** roff text: backslashes and minus signs escaped, no line starting with a control character. */
function roff(s: string): string {
  return s.replace(/\\/g, '\\e').replace(/-/g, '\\-').replace(/^([.'])/gm, '\\&$1');
}

export function manPage(version: string, date: string): string {
  const out = [
    `.TH CTMON 1 "${date}" "conntrack ${version}" "User Commands"`,
    '.SH NAME',
    'ctmon \\- inspect, watch, diagnose and repair the Linux conntrack table',
    '.SH SYNOPSIS',
    '.B ctmon',
    '.I COMMAND',
    '[\\fIOPTIONS\\fR]',
    '.SH DESCRIPTION',
    roff(
      'ctmon reads and changes the kernel\'s connection-tracking table (nf_conntrack) over netlink, in this or any network namespace. ' +
        'It prints what the conntrack(8) tool prints (-o conntrack), and diagnoses a full table ("nf_conntrack: table full, dropping packet"). ' +
        'JSON output writes 64-bit counters and timestamps as strings; -o json is one JSON array, -o ndjson one object per line.',
    ),
    '.SH GLOBAL OPTIONS',
  ];
  for (const o of GLOBAL_OPTIONS) out.push('.TP', `.B ${roff(optionLabel(o))}`, roff(o.help));
  out.push('.SH COMMANDS');
  for (const c of COMMANDS) {
    out.push('.SS ' + roff(synopsis(c)), roff(c.summary));
    for (const o of c.options) out.push('.TP', `.B ${roff(optionLabel(o))}`, roff(o.help));
    if (c.notes?.length) out.push('.PP', '.nf', ...c.notes.map(roff), '.fi');
  }
  out.push('.SH EXIT STATUS');
  for (const [code, meaning] of EXIT_CODES) out.push('.TP', `.B ${code}`, roff(meaning));
  out.push(
    '.SH ENVIRONMENT',
    '.TP',
    '.B NO_COLOR',
    'no colour, also on a terminal',
    '.TP',
    '.B FORCE_COLOR',
    roff('colour also into a pipe (0 turns it off); takes precedence over NO_COLOR'),
    '.SH SEE ALSO',
    '.BR conntrack (8),',
    '.BR nft (8),',
    '.BR ip-netns (8),',
    '.BR sysctl (8)',
    '',
  );
  return out.join('\n');
}
