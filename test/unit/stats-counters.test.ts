import { expect, it } from 'vitest';
import { STAT_METRICS, METRIC_NAMES } from '../../src/prometheus.js';
import { counterTotals, STATS_COUNTERS, type CounterTotals } from '../../src/stats-counters.js';

it('one table: keys, conntrack -S names and metrics are distinct, and every metric is defined', () => {
  for (const field of ['key', 'cli', 'metric'] as const) expect(new Set(STATS_COUNTERS.map((c) => c[field])).size).toBe(STATS_COUNTERS.length);
  for (const c of STATS_COUNTERS) {
    expect(c.metric).toMatch(/^conntrack_stat_[a-z_]+_total$/);
    expect(STAT_METRICS[c.key]).toBe(c.metric);
    expect(METRIC_NAMES).toContain(c.metric);
  }
});

it('METRIC_NAMES is what the definitions register, each once', () => {
  expect(new Set(METRIC_NAMES).size).toBe(METRIC_NAMES.length);
  expect(METRIC_NAMES).toContain('conntrack_entries');
  expect(METRIC_NAMES).toContain('conntrack_doctor_finding');
});

it('counterTotals adds every counter over the CPUs, and gives zeros for none', () => {
  const cpu = (n: number): CounterTotals => Object.fromEntries(STATS_COUNTERS.map((c, i) => [c.key, n * (i + 1)])) as CounterTotals;
  const total = counterTotals({ perCpu: [cpu(1), cpu(2), cpu(3)] });
  STATS_COUNTERS.forEach((c, i) => expect(total[c.key]).toBe(6 * (i + 1)));
  expect(Object.values(counterTotals({ perCpu: [] }))).toEqual(STATS_COUNTERS.map(() => 0));
});
