/**
 * ctmon doctor: the table-full checklist on evidence. Exit 0 healthy, 1
 * warnings (with --fail-on warning, the default), 2 critical: for cron and
 * health checks. --fix prints the commands for the handle's namespace;
 * --fix --yes applies its per-namespace sysctls (host-wide ones only with --host).
 */
import { Conntrack } from '../conntrack.js';
import { diagnose, type Diagnosis, type Severity, type SysctlChange } from '../doctor.js';
import { COMMON_OPTIONS, listArg, numberArg, stringArg, UsageError, type OptionSpec, type ParsedArgs } from './args.js';
import { colourEnabled, paint, type Colour } from './colour.js';
import { toJson } from './format.js';
import { write } from './output.js';

export const options: OptionSpec[] = [
  ...COMMON_OPTIONS,
  { name: 'interval', type: 'number', placeholder: 'SECONDS', help: 'sample the kernel counters this far apart for the rates (default 1)' },
  { name: 'fail-on', type: 'string', placeholder: 'LEVEL', choices: ['warning', 'critical'], help: 'lowest severity that makes the exit code non-zero: warning (default) or critical' },
  { name: 'ignore', type: 'list', placeholder: 'ID', help: 'leave these finding ids out of the verdict (repeatable, comma-separated)' },
  { name: 'fix', type: 'boolean', help: 'print the commands that fix the findings, for this namespace' },
  { name: 'yes', short: 'y', type: 'boolean', help: 'with --fix: apply the per-namespace sysctl changes and print old and new values' },
  { name: 'host', type: 'boolean', help: 'with --fix --yes: also apply host-wide settings (nf_conntrack_max, buckets) in the initial namespace' },
  { name: 'json', type: 'boolean', help: 'print the diagnosis as JSON (facts.rates, facts.kernelLog, facts.table, findings[].fix and .changes)' },
  { name: 'sample', type: 'number', placeholder: 'N', help: 'read at most this many entries for the table breakdown' },
];
export const summary = 'Diagnoses a full or filling conntrack table on evidence: drop rates now, the kernel log, what fills the table, timeouts against the kernel defaults, max and buckets priced in memory. Exit 0 healthy, 1 warnings, 2 critical.';
export const notes = [
  'Finding ids: inactive, fill, table-full, table-filling, drops-now, drops-past, kernel-log, kernel-log-unavailable, max-low, buckets,',
  'tcp-established-timeout, timeouts-raised, tcp-be-liberal, udp, unassured, time-wait, top-sources, top-destinations, invalid, hash-contention,',
  'namespace-changed.',
];

const MARK: Record<Severity, [string, Colour | undefined]> = { ok: ['OK  ', 'green'], info: ['INFO', undefined], warning: ['WARN', 'yellow'], critical: ['CRIT', 'red'] };

function report(d: Diagnosis, netns: string | undefined, colour: boolean): string {
  const f = d.facts;
  const r = f.rates;
  const lines = [`conntrack doctor${netns ? ` (namespace ${netns})` : ''}: ${d.status.toUpperCase()}`, ''];
  lines.push(`  table     ${f.count} of ${f.max} entries (${(f.fill * 100).toFixed(1)}%), ${f.buckets} buckets, Linux ${f.kernel.major}.${f.kernel.minor}`);
  lines.push(`  now       drop ${r.drop.toFixed(1)}/s, early_drop ${r.earlyDrop.toFixed(1)}/s, insert_failed ${r.insertFailed.toFixed(1)}/s, invalid ${r.invalid.toFixed(1)}/s, search_restart ${r.searchRestart.toFixed(1)}/s (over ${r.intervalSeconds.toFixed(1)} s)`);
  // Unreadable, the log is one finding (kernel-log-unavailable), not a second line here.
  if (f.kernelLog.source !== 'unavailable') lines.push(`  log       ${logLine(f.kernelLog)}`);
  if (f.memory.entryBytes !== null) lines.push(`  memory    ${f.memory.entryBytes} bytes per entry (nf_conntrack slab); advised max ${f.advice.max} with ${f.advice.buckets} buckets`);
  lines.push('');
  for (const x of d.findings) {
    const [mark, c] = MARK[x.severity];
    lines.push(`[${c ? paint(mark, c, colour) : mark}] ${x.title}`);
    lines.push(`       ${x.detail}`);
    for (const cmd of x.fix) lines.push(`       fix: ${cmd}`);
  }
  if (d.ignored.length) lines.push('', `ignored: ${d.ignored.join(', ')}`);
  return lines.join('\n');
}

/** The kernel log's table-full lines: this namespace's, and other namespaces' as context (never a finding). */
function logLine(k: Diagnosis['facts']['kernelLog']): string {
  const total = `${k.tableFull} "table full" messages in the kernel log (${k.source}, host-wide)`;
  if (k.thisNamespace !== null) return `${total}: ${k.thisNamespace} for this namespace${k.tableFull > k.thisNamespace ? `, ${k.tableFull - k.thisNamespace} for other namespaces (context only)` : ''}`;
  return `${total}${k.attributed || k.tableFull === 0 ? '' : ': they name no namespace, so are context only here'}`;
}

/** The fix commands, once each, in the order the findings give them. */
function fixCommands(d: Diagnosis): string[] {
  return [...new Set(d.findings.flatMap((f) => f.fix))];
}

/**
 * Applies the findings' sysctl changes; host-wide ones only with --host, in
 * the initial namespace. Each write goes to the namespace the handle holds:
 * before each, the name must still name it, else nothing more is written
 * (`refused`), as the namespace diagnosed is gone.
 */
async function applyChanges(ct: Conntrack, d: Diagnosis, host: boolean): Promise<{ out: string[]; refused: boolean }> {
  const seen = new Map<string, SysctlChange>();
  for (const f of d.findings) for (const c of f.changes) seen.set(c.name, c);
  const out: string[] = [];
  let hostHandle: Conntrack | undefined;
  try {
    for (const c of seen.values()) {
      const now = await ct.namespaceState();
      if (now.state !== 'same') {
        out.push(`not changed: namespace ${ct.netns} was deleted${now.state === 'replaced' ? ` and created again (inode ${ct.namespaceId.inode} -> ${now.current.inode})` : ''} after the diagnosis; nothing is written to the namespace that is gone. Run ctmon doctor again.`);
        return { out, refused: true };
      }
      if (c.scope === 'host' && !host) {
        out.push(`skipped net.netfilter.${c.name} = ${c.value}: host-wide, add --host to change it in the initial namespace`);
        continue;
      }
      let target = ct;
      if (c.scope === 'host' && !d.facts.namespace.initial) {
        // Host-wide settings are written where they are writable: this process's namespace, if it is the initial one.
        hostHandle ??= await Conntrack.open();
        if (!(await hostHandle.sysctlWritable(c.name))) {
          out.push(`skipped net.netfilter.${c.name} = ${c.value}: host-wide, and this process is not in the initial namespace; run ctmon doctor --fix --yes --host there`);
          continue;
        }
        target = hostHandle;
      }
      const old = await target.readSysctl(c.name);
      await target.writeSysctl(c.name, c.value);
      out.push(`changed net.netfilter.${c.name}: ${old} -> ${c.value}${c.scope === 'host' ? ' (host-wide)' : ''}`);
    }
  } finally {
    hostHandle?.close();
  }
  return { out, refused: false };
}

export async function run(ct: Conntrack, args: ParsedArgs): Promise<number> {
  const failOn = stringArg(args, 'fail-on');
  if (failOn !== undefined && failOn !== 'warning' && failOn !== 'critical') throw new UsageError(`--fail-on takes warning or critical, got '${failOn}'`);
  if (args.yes && !args.fix) throw new UsageError('--yes applies fixes: use it with --fix');
  if (args.host && !args.yes) throw new UsageError('--host applies host-wide fixes: use it with --fix --yes');
  const intervalSeconds = numberArg(args, 'interval');
  const sampleLimit = numberArg(args, 'sample');
  const ignore = listArg(args, 'ignore');
  const d = await diagnose(ct, {
    ...(intervalSeconds !== undefined ? { intervalSeconds } : {}),
    ...(sampleLimit !== undefined ? { sampleLimit } : {}),
    ...(failOn !== undefined ? { failOn } : {}),
    ...(ignore !== undefined ? { ignore } : {}),
  });
  if (args.json) await write(toJson(d, true) + '\n');
  else if (args.fix && !args.yes) {
    const cmds = fixCommands(d);
    await write(cmds.length ? cmds.join('\n') + '\n' : `# nothing to fix (${d.status})\n`);
  } else await write(report(d, ct.netns, colourEnabled(process.stdout)) + '\n');
  if (args.fix && args.yes) {
    const applied = await applyChanges(ct, d, args.host === true);
    const text = (applied.out.length ? applied.out.join('\n') : 'nothing to change') + '\n';
    // With --json, stdout stays one JSON document.
    if (args.json) process.stderr.write(text);
    else await write(text);
    if (applied.refused) return 2;
  }
  return d.exitCode;
}
