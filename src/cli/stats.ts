/** ctmon stats: count, max, fill, buckets, per-CPU counters and the timeouts that matter. */
import { counterTotals, type Conntrack, type CounterTotals } from '../conntrack.js';
import { bucketsFor, kernelVersion } from '../doctor.js';
import { STATS_COUNTERS } from '../stats-counters.js';
import { COMMON_OPTIONS, type OptionSpec, type ParsedArgs } from './args.js';
import { toJson } from './format.js';
import { write } from './output.js';

export const options: OptionSpec[] = [...COMMON_OPTIONS, { name: 'json', type: 'boolean', help: 'print JSON' }];
export const summary = 'Table size against its limit, hash buckets, per-CPU drop/insert/invalid counters and timeouts (conntrack -S, -C and sysctl in one).';

const TIMEOUTS = [
  'tcp_timeout_established', 'tcp_timeout_syn_sent', 'tcp_timeout_syn_recv', 'tcp_timeout_time_wait', 'tcp_timeout_close_wait',
  'tcp_timeout_fin_wait', 'udp_timeout', 'udp_timeout_stream', 'icmp_timeout', 'generic_timeout',
];

export async function run(ct: Conntrack, args: ParsedArgs): Promise<number> {
  const stats = await ct.stats();
  const read = (name: string): Promise<number | undefined> => ct.readSysctl(name).then(Number, () => undefined);
  const timeouts: Record<string, number | undefined> = {};
  await Promise.all(TIMEOUTS.map(async (t) => (timeouts[t] = await read(`nf_conntrack_${t}`))));
  const [acct, timestamp] = await Promise.all([read('nf_conntrack_acct'), read('nf_conntrack_timestamp')]);
  const totals = counterTotals(stats);
  const fill = stats.max ? stats.count / stats.max : 0;
  if (args.json) {
    await write(toJson({ ...stats, fill, totals, timeouts, accounting: acct === 1, timestamps: timestamp === 1 }, true) + '\n');
    return 0;
  }
  const out: string[] = [];
  out.push(`namespace       ${ct.netns ?? '(this process)'}`);
  out.push(`entries         ${stats.count} of ${stats.max} (${(fill * 100).toFixed(1)}% full)`);
  const { major, minor } = kernelVersion();
  out.push(`hash buckets    ${stats.buckets} (Linux ${major}.${minor} sizes ${bucketsFor(stats.max, major, minor)} for this max; see ctmon doctor)`);
  out.push(`accounting      ${acct === 1 ? 'on' : 'off'}    timestamps ${timestamp === 1 ? 'on' : 'off'}`);
  out.push('');
  out.push(['cpu'.padStart(5), ...STATS_COUNTERS.map((c) => c.cli.padStart(15))].join(''));
  const row = (label: string, c: CounterTotals): string => [label.padStart(5), ...STATS_COUNTERS.map(({ key }) => String(c[key]).padStart(15))].join('');
  for (const c of stats.perCpu) out.push(row(String(c.cpu), c));
  out.push(row('all', totals));
  out.push('');
  out.push('timeouts (s)');
  for (const t of TIMEOUTS) if (timeouts[t] !== undefined) out.push(`  ${t.padEnd(26)} ${timeouts[t]}`);
  await write(out.join('\n') + '\n');
  return 0;
}
