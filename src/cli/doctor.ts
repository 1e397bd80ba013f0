/** ctmon doctor: the seeds' checklist; exit 0 healthy, 1 warnings, 2 critical (for cron and health checks). */
import type { Conntrack } from '../conntrack.js';
import { diagnose, type Severity } from '../doctor.js';
import { COMMON_OPTIONS, type OptionSpec, type ParsedArgs } from './args.js';
import { toJson } from './format.js';
import { write } from './output.js';

export const options: OptionSpec[] = [
  ...COMMON_OPTIONS,
  { name: 'json', type: 'boolean', help: 'print the diagnosis as JSON' },
  { name: 'sample', type: 'number', placeholder: 'N', help: 'read at most this many entries for the per-source checks' },
];
export const summary = 'Diagnoses a full or filling conntrack table: fill and drops, max vs memory, buckets, timeouts, unassured floods, heavy sources, INVALID traffic. Exit code 0 healthy, 1 warnings, 2 critical.';

const MARK: Record<Severity, string> = { ok: 'OK  ', info: 'INFO', warning: 'WARN', critical: 'CRIT' };

export async function run(ct: Conntrack, args: ParsedArgs): Promise<number> {
  const d = await diagnose(ct, args.sample !== undefined ? { sampleLimit: args.sample as number } : {});
  if (args.json) {
    await write(toJson(d, true) + '\n');
    return d.exitCode;
  }
  const lines = [`conntrack doctor${ct.netns ? ` (namespace ${ct.netns})` : ''}: ${d.status.toUpperCase()}`, ''];
  for (const f of d.findings) {
    lines.push(`[${MARK[f.severity]}] ${f.title}`);
    lines.push(`       ${f.detail}`);
    for (const c of f.fix) lines.push(`       fix: ${c}`);
  }
  await write(lines.join('\n') + '\n');
  return d.exitCode;
}
