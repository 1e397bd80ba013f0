// Benchmark on a 250k-entry namespace (1000 sources x 250 entries):
// one source, 100 sources, and a /16 holding half the table, each against the
// conntrack CLI on the same table in the same run. Ratios > 1: ours faster.
import { Conntrack } from '../../dist/index.js';
import { createNetns, fill, fmt, median, ratio, report, sourceAddress, tableLines, timeAsync, timeCli } from './lib.mjs';

const RUNS = Number(process.env.BENCH_RUNS ?? 3);
const ns = createNetns();
const all = tableLines(1000, 250);
const linesOf = (s) => all.slice(s * 250, s * 250 + 250);
fill(ns.name, all);
const ct = await Conntrack.open({ netns: ns.name });
const rows = [['measure', 'conntrack CLI', 'ours', 'ratio (CLI/ours)']];

// One source, 250 entries: different sources for CLI and ours, refilled after each run.
const cli1 = [];
const ours1 = [];
for (let i = 0; i < RUNS; i++) {
  const a = 10 + i * 2;
  const b = 11 + i * 2;
  cli1.push(timeCli(ns.name, ['-D', '-s', sourceAddress(a)]));
  const { secs, value } = await timeAsync(() => ct.deleteBySource(sourceAddress(b)));
  if (value.deleted !== 250) throw new Error(`deleted ${value.deleted}`);
  ours1.push(secs);
  fill(ns.name, [...linesOf(a), ...linesOf(b)]);
}
rows.push(['-D -s ADDR (250 entries)', fmt(median(cli1)), fmt(median(ours1)), ratio(median(cli1), median(ours1))]);

// 100 sources (25k entries): a loop of conntrack -D -s against one call of ours.
const cliSources = Array.from({ length: 100 }, (_, i) => 100 + i);
const ourSources = Array.from({ length: 100 }, (_, i) => 300 + i);
const loop = await timeAsync(async () => { for (const s of cliSources) timeCli(ns.name, ['-D', '-s', sourceAddress(s)]); });
const ours100 = await timeAsync(() => ct.deleteBySource(ourSources.map(sourceAddress)));
if (ours100.value.deleted !== 25000) throw new Error(`deleted ${ours100.value.deleted}`);
rows.push(['100 sources: loop of -D -s', fmt(loop.secs), fmt(ours100.secs), ratio(loop.secs, ours100.secs)]);
fill(ns.name, [...cliSources, ...ourSources].flatMap(linesOf));

// The same 100 sources by flushing everything and reloading what should stay.
const keep = all.filter((_, idx) => !ourSources.includes(Math.floor(idx / 250)));
const flushReload = await timeAsync(async () => { timeCli(ns.name, ['-F']); fill(ns.name, keep); });
rows.push(['100 sources: -F and -R reload', fmt(flushReload.secs), fmt(ours100.secs), ratio(flushReload.secs, ours100.secs)]);
timeCli(ns.name, ['-F']);
fill(ns.name, all);

// A /16 holding half the table, against flushing the whole table.
const flushes = [];
const halves = [];
for (let i = 0; i < RUNS; i++) {
  flushes.push(timeCli(ns.name, ['-F']));
  fill(ns.name, all);
  const { secs, value } = await timeAsync(() => ct.deleteBySource('10.1.0.0/16'));
  if (value.deleted !== 125000) throw new Error(`deleted ${value.deleted}`);
  halves.push(secs);
  fill(ns.name, all.slice(0, 125000));
}
rows.push(['/16 = 125k entries vs -F of 250k', fmt(median(flushes)), fmt(median(halves)), ratio(median(flushes), median(halves))]);
ct.close();
report(rows);
ns.destroy();
