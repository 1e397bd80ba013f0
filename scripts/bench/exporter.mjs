// Benchmark: `ctmon exporter` on 250k and 1M entries, against the per-scrape
// dump an exporter without a live table needs (`conntrack -L`, and our own
// fastest dump, on the same table in the same run). Prints ratios.
//  - median scrape (GET /metrics) as a share of one `conntrack -L`;
//  - the exporter's CPU while `conntrack -R` inserts 250k entries it follows
//    through NEW events, per event, and its events received;
//  - its RSS with every entry counted;
//  - hostile clients (BENCH_HOSTILE_ENTRIES entries, default 3001): RSS idle,
//    under 40 connections each pipelining 500 `GET /metrics` and never
//    reading (BENCH_PIPELINE_CONNECTIONS, BENCH_PIPELINE_REQUESTS), and 3 s
//    after they disconnect; a normal scrape's time meanwhile against one at
//    rest; and 40 parallel scrapes, which must all report one reading of
//    conntrack_stat_insert_total.
// BENCH_SIZES= (empty) runs the hostile-client part alone.
// nf_conntrack_max is host-wide: raised in the initial namespace for the 1M
// table and restored on exit.
import { connect } from 'node:net';
import { Conntrack } from '../../dist/index.js';
import { createNetns, fill, fmt, liveCount, median, raiseMax, report, restoreMax, rssMiB, scrape, startExporter, tableLines, timeAsync, timeCli, until, cpuSeconds } from './lib.mjs';

const SIZES = (process.env.BENCH_SIZES ?? '250000,1000000').split(',').filter(Boolean).map(Number);
const HOSTILE_ENTRIES = Number(process.env.BENCH_HOSTILE_ENTRIES ?? 3001);
const PIPE_CONNECTIONS = Number(process.env.BENCH_PIPELINE_CONNECTIONS ?? 40);
const PIPE_REQUESTS = Number(process.env.BENCH_PIPELINE_REQUESTS ?? 500);
const SCRAPES = Number(process.env.BENCH_SCRAPES ?? 20);
const rows = [['measure', 'reference', 'ours', 'ours / reference']];
for (const size of SIZES) {
  raiseMax(size);
  const ns = createNetns();
  const exporter = await startExporter(ns.name);
  try {
    // Follow a load through events: the exporter's CPU while conntrack -R inserts `size` entries.
    const perSource = 250;
    const lines = tableLines(Math.ceil(size / perSource), perSource).slice(0, size);
    const cpu0 = cpuSeconds(exporter.proc.pid);
    const fillSecs = fill(ns.name, lines);
    await until(async () => liveCount(await scrape(exporter.port)) === size, 'the exporter to count the load');
    const cpu = cpuSeconds(exporter.proc.pid) - cpu0;
    const text = await scrape(exporter.port);
    const events = Number(/^conntrack_events_total\{[^}]*type="new"\} (\d+)$/m.exec(text)[1]);
    const lost = Number(/^conntrack_events_lost_total\{[^}]*\} (\d+)$/m.exec(text)[1]);
    const resyncs = Number(/^conntrack_exporter_resyncs_total\{[^}]*\} (\d+)$/m.exec(text)[1]);
    console.log(`${size}: conntrack -R ${fmt(fillSecs)}; exporter got ${events} NEW events, lost ${lost}, resyncs ${resyncs}`);
    rows.push([`${size}: exporter CPU following the -R load`, `-R itself ${fmt(fillSecs)}`, `${fmt(cpu)} (${((cpu / size) * 1e6).toFixed(1)} us/entry)`, '']);

    // Scrapes against a dump per scrape.
    const cliL = median(Array.from({ length: 3 }, () => timeCli(ns.name, ['-L'])));
    const ct = await Conntrack.open({ netns: ns.name });
    const dumps = [];
    for (let i = 0; i < 3; i++) dumps.push((await timeAsync(async () => { let n = 0; for await (const _ of ct.dump()) n++; return n; })).secs);
    const ourDump = median(dumps);
    ct.close();
    const scrapes = [];
    for (let i = 0; i < SCRAPES; i++) scrapes.push((await timeAsync(() => scrape(exporter.port))).secs);
    const s = median(scrapes);
    rows.push([`${size}: median scrape vs conntrack -L`, fmt(cliL), fmt(s), `${((s / cliL) * 100).toFixed(2)} %`]);
    rows.push([`${size}: median scrape vs our own full dump`, fmt(ourDump), fmt(s), `${((s / ourDump) * 100).toFixed(2)} %`]);
    rows.push([`${size}: exporter RSS with every entry counted`, '', `${rssMiB(exporter.proc.pid).toFixed(0)} MiB`, `${((rssMiB(exporter.proc.pid) * 1048576) / size).toFixed(0)} B/entry`]);
  } finally {
    exporter.proc.kill('SIGTERM');
    await new Promise((r) => exporter.proc.once('exit', r));
    ns.destroy();
    restoreMax();
  }
}

/** Connections that each send `requests` pipelined GET /metrics at once and never read. */
async function pipelineFlood(port, connections, requests) {
  const burst = Buffer.from('GET /metrics HTTP/1.1\r\nHost: bench\r\n\r\n'.repeat(requests));
  const sockets = await Promise.all(Array.from({ length: connections }, () => new Promise((resolve, reject) => {
    const s = connect(port, '127.0.0.1', () => {
      s.pause(); // never read: the responses back up into the exporter
      s.write(burst);
      resolve(s);
    });
    s.on('error', reject);
  })));
  return { sent: burst.length * connections, close: () => { for (const s of sockets) s.destroy(); } };
}

/** Samples the exporter's RSS every 100 ms while `during` runs; returns the peak (MiB) and `during`'s value. */
async function peakRss(pid, during) {
  let peak = rssMiB(pid);
  const timer = setInterval(() => { try { peak = Math.max(peak, rssMiB(pid)); } catch { /* exited */ } }, 100);
  try {
    const value = await during();
    return { peak: Math.max(peak, rssMiB(pid)), value };
  } finally {
    clearInterval(timer);
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const insertTotal = (text) => Number(/^conntrack_stat_insert_total\{[^}]*\} (\d+)$/m.exec(text)?.[1] ?? NaN);

async function hostileClients() {
  const ns = createNetns();
  const exporter = await startExporter(ns.name);
  try {
    fill(ns.name, tableLines(Math.ceil(HOSTILE_ENTRIES / 250), 250).slice(0, HOSTILE_ENTRIES));
    await until(async () => liveCount(await scrape(exporter.port)) === HOSTILE_ENTRIES, 'the exporter to count the table');
    const body = await scrape(exporter.port);
    const rest = [];
    for (let i = 0; i < SCRAPES; i++) rest.push((await timeAsync(() => scrape(exporter.port))).secs);
    await sleep(2000);
    const idle = rssMiB(exporter.proc.pid);
    const flood = await peakRss(exporter.proc.pid, async () => {
      const f = await pipelineFlood(exporter.port, PIPE_CONNECTIONS, PIPE_REQUESTS);
      await sleep(3000);
      const during = [];
      for (let i = 0; i < 5; i++) during.push((await timeAsync(() => scrape(exporter.port))).secs);
      await sleep(2000);
      return { f, scrape: median(during) };
    });
    flood.value.f.close();
    await sleep(3000);
    const after = rssMiB(exporter.proc.pid);
    const what = `${PIPE_CONNECTIONS} x ${PIPE_REQUESTS} pipelined, unread (${(flood.value.f.sent / 1048576).toFixed(1)} MiB sent; body ${(body.length / 1024).toFixed(1)} KiB)`;
    rows.push([`${what}: RSS idle -> peak`, `${idle.toFixed(0)} MiB`, `${flood.peak.toFixed(0)} MiB`, `+${(flood.peak - idle).toFixed(0)} MiB`]);
    rows.push([`${what}: RSS 3 s after they disconnect`, `${idle.toFixed(0)} MiB`, `${after.toFixed(0)} MiB`, `+${(after - idle).toFixed(0)} MiB`]);
    rows.push(['a normal scrape meanwhile vs at rest', fmt(median(rest)), fmt(flood.value.scrape), `${(flood.value.scrape / median(rest)).toFixed(1)}x`]);
    const texts = await Promise.all(Array.from({ length: 40 }, () => scrape(exporter.port)));
    const values = texts.map(insertTotal);
    const truth = insertTotal(await scrape(exporter.port));
    const off = values.filter((v) => v !== truth).length;
    rows.push(['40 parallel scrapes: conntrack_stat_insert_total other than one reading', `${truth}`, `${off} of 40${off ? ` (max ${Math.max(...values)})` : ''}`, '']);
  } finally {
    exporter.proc.kill('SIGTERM');
    await new Promise((r) => exporter.proc.once('exit', r));
    ns.destroy();
  }
}
await hostileClients();
report(rows);
