// Benchmark: a 250k-entry namespace; full dump to Entry objects,
// a filtered dump by exact source, count() and stats(), each against the
// conntrack CLI on the same table in the same run. Prints ratios (>1 = ours faster).
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Conntrack } from '../../dist/index.js';
import { createNetns, fill, fmt, median, ratio, report, sourceAddress, tableLines, timeAsync, timeCli } from './lib.mjs';

const N_SOURCES = Number(process.env.BENCH_SOURCES ?? 1000);
const PER_SOURCE = Number(process.env.BENCH_PER_SOURCE ?? 250);
const RUNS = Number(process.env.BENCH_RUNS ?? 3);

if (process.argv[2] === '--stream-child') {
  // Child: stream the whole table with a slow consumer; the parent reads our peak RSS.
  const ct = await Conntrack.open({ netns: process.argv[3] });
  let n = 0;
  for await (const _ of ct.dump()) {
    if (++n % 1000 === 0) await new Promise((r) => setTimeout(r, 1));
  }
  ct.close();
  process.stdout.write(JSON.stringify({ n, maxRssKiB: process.resourceUsage().maxRSS }));
  process.exit(0);
}

const ns = createNetns();
const total = N_SOURCES * PER_SOURCE;
console.log(`filling ${total} entries with conntrack -R: ${fmt(fill(ns.name, tableLines(N_SOURCES, PER_SOURCE)))}`);
const ct = await Conntrack.open({ netns: ns.name });
const rows = [['measure', 'conntrack CLI', 'ours', 'ratio (CLI/ours)']];

// Full dump to objects.
const cliFull = median(Array.from({ length: RUNS }, () => timeCli(ns.name, ['-L'])));
const ours = [];
let listed = 0;
for (let i = 0; i < RUNS; i++) {
  const { secs, value } = await timeAsync(() => ct.list());
  listed = value.length;
  ours.push(secs);
}
if (listed !== total) throw new Error(`list() returned ${listed}, expected ${total}`);
rows.push([`full dump (${total}) -> Entry[]`, fmt(cliFull), fmt(median(ours)), ratio(cliFull, median(ours))]);

const streamed = [];
for (let i = 0; i < RUNS; i++) {
  streamed.push((await timeAsync(async () => { let n = 0; for await (const _ of ct.dump()) n++; return n; })).secs);
}
rows.push(['full dump, for await', fmt(cliFull), fmt(median(streamed)), ratio(cliFull, median(streamed))]);

// Filtered by one exact source (250 entries).
const addr = sourceAddress(Math.floor(N_SOURCES / 3));
const cliSrc = median(Array.from({ length: RUNS }, () => timeCli(ns.name, ['-L', '-s', addr])));
const oursSrc = [];
for (let i = 0; i < RUNS; i++) {
  const { secs, value } = await timeAsync(() => ct.list({ src: addr }));
  if (value.length !== PER_SOURCE) throw new Error(`filtered list returned ${value.length}`);
  oursSrc.push(secs);
}
rows.push([`dump -s ${addr} (${PER_SOURCE})`, fmt(cliSrc), fmt(median(oursSrc)), ratio(cliSrc, median(oursSrc))]);

// count() and stats(): average of many calls.
const cliCount = median(Array.from({ length: RUNS }, () => timeCli(ns.name, ['-C'])));
const CALLS = 1000;
let t = await timeAsync(async () => { for (let i = 0; i < CALLS; i++) await ct.count(); });
const countSecs = t.secs / CALLS;
rows.push(['count()', fmt(cliCount), fmt(countSecs), ratio(cliCount, countSecs)]);
const cliStats = median(Array.from({ length: RUNS }, () => timeCli(ns.name, ['-S'])));
t = await timeAsync(async () => { for (let i = 0; i < CALLS; i++) await ct.stats(); });
const statsSecs = t.secs / CALLS;
rows.push(['stats()', fmt(cliStats), fmt(statsSecs), ratio(cliStats, statsSecs)]);
ct.close();

// Peak RSS of a slow streaming consumer (separate process so the list() above does not count).
const child = spawnSync(process.execPath, [fileURLToPath(import.meta.url), '--stream-child', ns.name], { encoding: 'utf8' });
const { n, maxRssKiB } = JSON.parse(child.stdout);
const base = spawnSync(process.execPath, ['-e', `import('${new URL('../../dist/index.js', import.meta.url)}').then(()=>process.stdout.write(String(process.resourceUsage().maxRSS)))`], { encoding: 'utf8' });
rows.push([`slow streaming consumer (${n})`, '', `peak RSS ${(maxRssKiB / 1024).toFixed(1)} MiB`, `(baseline ${(Number(base.stdout) / 1024).toFixed(1)} MiB)`]);
console.log(`list() peak RSS of this process: ${(process.resourceUsage().maxRSS / 1024).toFixed(1)} MiB`);
report(rows);
ns.destroy();
