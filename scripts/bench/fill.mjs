// conntrack/testing's fill() beside `conntrack -R` loading the same entries
// (one -I line each), each in a namespace of its own, in the same run:
// entries/s and the ratio. BENCH_FILL entries (default 100000), BENCH_RUNS runs (median).
import { createTestNamespace } from '../../dist/testing.js';
import { planFill } from '../../dist/testing-fill.js';
import { fill as restore, fmt, median, ratio, report, timeAsync } from './lib.mjs';

const N = Number(process.env.BENCH_FILL ?? 100_000);
const RUNS = Number(process.env.BENCH_RUNS ?? 3);
const options = { src: '10.0.0.0/8', dport: [80, 89], mark: 3 };
const plan = planFill(N, options);
const lines = Array.from({ length: N }, (_, i) => {
  const { original: o, state, timeout, mark } = plan.spec(i);
  return `-I -p tcp -s ${o.src} -d ${o.dst} --sport ${o.sport} --dport ${o.dport} --state ${state} -t ${timeout} -m ${mark}`;
});

const theirs = await createTestNamespace({ prefix: 'ctbench', track: false });
const ours = await createTestNamespace({ prefix: 'ctbench', track: false });
try {
  const cli = [];
  const mine = [];
  for (let i = 0; i < RUNS; i++) {
    await theirs.conntrack.flush();
    await ours.conntrack.flush();
    cli.push(restore(theirs.netns, lines));
    const { secs } = await timeAsync(() => ours.fill(N, options));
    mine.push(secs);
    const [a, b] = [await theirs.conntrack.count(), await ours.conntrack.count()];
    if (a !== N || b !== N) throw new Error(`counts ${a} (conntrack -R) and ${b} (fill), wanted ${N}`);
  }
  const rate = (s) => `${Math.round(N / s).toLocaleString('en')} entries/s`;
  report([
    ['measure', 'conntrack -R', 'fill()', 'ratio (CLI/ours)'],
    [`${N.toLocaleString('en')} TCP entries`, fmt(median(cli)), fmt(median(mine)), ratio(median(cli), median(mine))],
    ['rate', rate(median(cli)), rate(median(mine)), ''],
  ]);
} finally {
  await theirs.close();
  await ours.close();
}
