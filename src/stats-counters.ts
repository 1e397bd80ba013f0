/**
 * The kernel's per-CPU conntrack counters (`conntrack -S`), one row each:
 * the key in stats() results, the name `conntrack -S` and `ctmon stats`
 * print, the Prometheus metric and its help. native/stats.h lists the same
 * keys for the conversion; the two are compared at load.
 */
import { addon } from './native.js';

export const STATS_COUNTERS = [
  { key: 'found', cli: 'found', metric: 'conntrack_stat_found_total', help: 'Lookups that found an existing entry' },
  { key: 'invalid', cli: 'invalid', metric: 'conntrack_stat_invalid_total', help: 'Packets conntrack could not track (INVALID)' },
  { key: 'insert', cli: 'insert', metric: 'conntrack_stat_insert_total', help: 'Entries inserted' },
  { key: 'insertFailed', cli: 'insert_failed', metric: 'conntrack_stat_insert_failed_total', help: 'Entries that could not be inserted (clash or full table)' },
  { key: 'drop', cli: 'drop', metric: 'conntrack_stat_drop_total', help: 'Packets dropped because an entry could not be created (table full)' },
  { key: 'earlyDrop', cli: 'early_drop', metric: 'conntrack_stat_early_drop_total', help: 'Unassured entries evicted to make room for new ones' },
  { key: 'error', cli: 'error', metric: 'conntrack_stat_error_total', help: 'ICMP errors referring to no known entry' },
  { key: 'searchRestart', cli: 'search_restart', metric: 'conntrack_stat_search_restart_total', help: 'Hash table lookups restarted (resize or concurrent change)' },
  { key: 'clashResolve', cli: 'clash_resolve', metric: 'conntrack_stat_clash_resolve_total', help: 'Insert clashes resolved' },
  { key: 'chainTooLong', cli: 'chaintoolong', metric: 'conntrack_stat_chain_too_long_total', help: 'Inserts refused because the hash chain was too long' },
] as const;

/** A counter's key in stats() results. */
export type CounterKey = (typeof STATS_COUNTERS)[number]['key'];

/** The per-CPU counters summed, as `conntrack -S` names them. */
export type CounterTotals = Record<CounterKey, number>;

const nativeKeys = addon.STATS_COUNTERS.join(',');
const ourKeys = STATS_COUNTERS.map((c) => c.key).join(',');
if (nativeKeys !== ourKeys) throw new Error(`conntrack: the addon's stats counters (${nativeKeys}) are not src/stats-counters.ts's (${ourKeys}): rebuild the addon`);

/** Sums the per-CPU counters of a stats() result, in `conntrack -S` order. */
export function counterTotals(stats: { readonly perCpu: readonly CounterTotals[] }): CounterTotals {
  const t = Object.fromEntries(STATS_COUNTERS.map((c) => [c.key, 0])) as CounterTotals;
  for (const cpu of stats.perCpu) for (const { key } of STATS_COUNTERS) t[key] += cpu[key];
  return t;
}
