// Benchmark of the bulk update on a 250k-entry namespace (1000 sources x 250
// entries): updateWhere against `conntrack -U` with the same filter and
// change, on the same table in the same run. Ratios > 1: ours faster.
// conntrack -U updates and reads back each entry in turn (two requests with
// an ACK each) inside its dump callback: with more than a few hundred matches
// the kernel's dump outruns it and conntrack 1.4.7 stops with ENOBUFS (-U
// takes no -b), which the table says. updateWhere sends its updates in
// batches while the dump is still being read.
import { spawnSync } from 'node:child_process';
import { Conntrack } from '../../dist/index.js';
import { createNetns, fill, fmt, median, ratio, report, sourceAddress, tableLines, timeAsync, timeCli } from './lib.mjs';

const RUNS = Number(process.env.BENCH_RUNS ?? 3);
const ns = createNetns();
fill(ns.name, tableLines(1000, 250));
const ct = await Conntrack.open({ netns: ns.name });
const rows = [['measure', 'conntrack CLI', 'ours', 'ratio (CLI/ours)']];

// One source (250 entries): a fresh mark each run, so every entry changes.
const cli1 = [];
const ours1 = [];
for (let i = 0; i < RUNS; i++) {
  cli1.push(timeCli(ns.name, ['-U', '-s', sourceAddress(10 + i), '-m', String(100 + i)]));
  const { secs, value } = await timeAsync(() => ct.updateWhere({ src: sourceAddress(20 + i) }, { mark: 100 + i }));
  if (value.updated !== 250) throw new Error(`updated ${value.updated}`);
  ours1.push(secs);
}
rows.push(['-U -s ADDR -m (250 entries)', fmt(median(cli1)), fmt(median(ours1)), ratio(median(cli1), median(ours1))]);

/** conntrack -U, timed; what it says when it gives up. */
function cliUpdate(args) {
  const t0 = process.hrtime.bigint();
  const r = spawnSync('ip', ['netns', 'exec', ns.name, 'conntrack', '-U', ...args], { encoding: 'utf8', maxBuffer: 1 << 28 });
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  const failed = /Operation failed: (.*)/.exec(r.stderr)?.[1];
  return failed ? `fails: ${failed}` : fmt(secs);
}

// Half the table (a /16, 125k entries), mark and timeout.
const cliHalf = cliUpdate(['-s', '10.1.0.0/16', '-m', '200', '-t', '1800']);
const oursHalf = [];
for (let i = 0; i < RUNS; i++) {
  const { secs, value } = await timeAsync(() => ct.updateWhere({ src: '10.2.0.0/16' }, { mark: 200 + i, timeout: 1800 + i }));
  if (value.updated !== 125000) throw new Error(`updated ${value.updated}`);
  oursHalf.push(secs);
}
rows.push(['-U -s /16 -m -t (125k entries)', cliHalf, fmt(median(oursHalf)), `${Math.round(125000 / median(oursHalf) / 1000)}k updates/s`]);

// The same again: nothing differs, so nothing is sent (conntrack -U skips unchanged entries too): a dump's cost.
const same = await timeAsync(() => ct.updateWhere({ src: '10.2.0.0/16' }, { mark: 200 + RUNS - 1 }));
if (same.value.updated !== 0) throw new Error(`updated ${same.value.updated}`);
const dump = await timeAsync(() => ct.count({ src: '10.2.0.0/16' }));
rows.push(['-U -s /16, nothing to change', '-', fmt(same.secs), `count() of the /16: ${fmt(dump.secs)}`]);
ct.close();
report(rows);
ns.destroy();
