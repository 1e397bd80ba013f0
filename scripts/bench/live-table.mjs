// Benchmark: ct.liveTable() on 250k and 1M entries, each figure beside its
// reference in the same run (ratios):
//  - RSS growth per entry of a process from before the table to `ready`
//    (every entry counted), tally mode and `entries: true`;
//  - `ready` (subscribe + full dump into the table) against our fastest full
//    dump (ct.dump() iterated: ct.count() reads the kernel's counter instead),
//    best of 4 and of 3, taken in turns in one process;
//  - CPU per followed event while `conntrack -R` loads 250k entries, against
//    flows.mjs's raw libmnl reader (raw-reader.c, built here) on the same burst;
//  - `ctmon exporter`'s RSS with every entry counted, after following the load
//    (at rest: 3 s after the last event).
// Each of ours runs in a child process of its own (--expose-gc), so one
// measure's heap is not another's. nf_conntrack_max is host-wide: raised in
// the initial namespace for the 1M table and restored on exit.
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { Conntrack } from '../../dist/index.js';
import { cpuSeconds, createNetns, fill, fmt, liveCount, raiseMax, report, restoreMax, rssMiB, scrape, startExporter, tableLines, until } from './lib.mjs';

const SIZES = (process.env.BENCH_SIZES ?? '250000,1000000').split(',').filter(Boolean).map(Number);
const FOLLOW = Number(process.env.BENCH_FOLLOW ?? 250000);
const SELF = fileURLToPath(import.meta.url);

const rssBytes = () => Number(/VmRSS:\s+(\d+)/.exec(readFileSync('/proc/self/status', 'utf8'))[1]) * 1024;
const cpuNow = () => { const u = process.cpuUsage(); return (u.user + u.system) / 1e6; };
const settleHeap = async () => { for (let i = 0; i < 3; i++) { globalThis.gc(); await new Promise((r) => setTimeout(r, 50)); } };

/** Children: one measure each, one JSON line out. */
async function child([what, netns, mode, want]) {
  const ct = await Conntrack.open({ netns });
  const entries = mode === 'entries';
  await ct.count(); // the addon and the pool warm, as before any real use
  await settleHeap();
  const rss0 = rssBytes();
  const t0 = performance.now();
  const table = ct.liveTable({ entries, resyncSeconds: 0 });
  await table.ready;
  const ready = (performance.now() - t0) / 1000;
  if (what === 'ready') {
    await settleHeap();
    const perEntry = (rssBytes() - rss0) / table.size;
    const size = table.size;
    table.close();
    // Then our fastest full dump and ready again, taken in turns in this one process: a busy machine slows both alike.
    const dumps = [];
    const readies = [ready];
    for (let i = 0; i < 3; i++) {
      let t = performance.now();
      for await (const _ of ct.dump());
      dumps.push((performance.now() - t) / 1000);
      t = performance.now();
      const again = ct.liveTable({ entries, resyncSeconds: 0 });
      await again.ready;
      readies.push((performance.now() - t) / 1000);
      again.close();
    }
    return { ready: Math.min(...readies), dump: Math.min(...dumps), size, perEntry };
  }
  // follow: the parent loads the table now; CPU from here until every entry is counted.
  process.stdout.write('ready\n');
  const cpu0 = cpuNow();
  await new Promise((resolve) => { const t = setInterval(() => { if (table.size >= Number(want)) { clearInterval(t); resolve(); } }, 20); });
  const cpu = cpuNow() - cpu0;
  const s = table.stats;
  await settleHeap();
  return { cpu, size: table.size, events: s.events.new + s.events.update + s.events.destroy, lost: s.lost, resyncs: s.resyncs, perEntry: (rssBytes() - rss0) / table.size };
}

if (process.argv[2] === '--child') {
  process.stdout.write(JSON.stringify(await child(process.argv.slice(3))) + '\n');
  process.exit(0);
}

/** Starts `cmd`; resolves its first line ('ready') and, later, its last. */
function started(cmd, args) {
  const proc = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'inherit'] });
  const lines = [];
  const rl = createInterface({ input: proc.stdout });
  const first = new Promise((resolve, reject) => {
    rl.on('line', (l) => { lines.push(l); if (lines.length === 1) resolve(l); });
    proc.once('exit', (code) => reject(new Error(`${cmd} exited ${code} before it was ready`)));
  });
  const last = new Promise((resolve) => proc.once('exit', () => resolve(lines.at(-1))));
  first.catch(() => undefined);
  return { proc, ready: first, done: last };
}

function runChild(args) {
  const out = execFileSync(process.execPath, ['--expose-gc', SELF, '--child', ...args], { encoding: 'utf8', maxBuffer: 1 << 20 });
  return JSON.parse(out.trim().split('\n').at(-1));
}

/** flows.mjs's raw libmnl reader (raw-reader.c): counts NEW messages, decodes nothing; prints its count on SIGTERM. */
function buildRawReader() {
  const dir = mkdtempSync(join(tmpdir(), 'ctraw-'));
  const bin = join(dir, 'raw-reader');
  execFileSync('cc', ['-O2', '-o', bin, fileURLToPath(new URL('./raw-reader.c', import.meta.url)), '-lmnl']);
  process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
  return bin;
}

/** The raw reader in `netns` (64 MiB buffer, as our stream's): resolves once it has joined the group. */
async function startRawReader(bin, netns) {
  const proc = spawn('ip', ['netns', 'exec', netns, bin, 'new', String(64 << 20)], { stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  let out = '';
  proc.stderr.on('data', (d) => (err += d));
  proc.stdout.on('data', (d) => (out += d));
  await until(() => err.includes('ready'), 'the raw reader');
  const exited = new Promise((r) => proc.once('exit', r));
  return {
    /** Its CPU seconds once it has counted `want` messages (or nothing more came for 5 s), then its count. */
    async finish(want) {
      let last = -1;
      for (let quiet = 0; quiet < 50; quiet++) {
        const cpu = cpuSeconds(proc.pid);
        if (cpu !== last) { last = cpu; quiet = 0; }
        await new Promise((r) => setTimeout(r, 100));
      }
      proc.kill('SIGTERM');
      await exited;
      const [messages, enobufs] = out.trim().split(' ').map(Number);
      return { cpu: last, messages, enobufs, want };
    },
  };
}

const raw = buildRawReader();
const rows = [['measure', 'reference', 'ours', 'ours / reference', 'target']];
for (const size of SIZES) {
  raiseMax(size);
  const ns = createNetns();
  const exporter = await startExporter(ns.name);
  try {
    const lines = tableLines(Math.ceil(size / 250), 250).slice(0, size);
    // Follow the load: the exporter always, and at FOLLOW entries the raw reader and a table of each mode beside it.
    const followers = [];
    if (size === FOLLOW) {
      const reader = await startRawReader(raw, ns.name);
      const tables = ['tally', 'entries'].map((mode) => started(process.execPath, ['--expose-gc', SELF, '--child', 'follow', ns.name, mode, String(size)]));
      await Promise.all(tables.map((t) => t.ready));
      followers.push(reader, ...tables);
    }
    const cpu0 = cpuSeconds(exporter.proc.pid);
    const fillSecs = fill(ns.name, lines);
    await until(async () => liveCount(await scrape(exporter.port)) === size, 'the exporter to count the load');
    const exporterCpu = cpuSeconds(exporter.proc.pid) - cpu0;
    console.log(`${size}: conntrack -R ${fmt(fillSecs)}`);
    if (followers.length) {
      const { cpu: rawCpu, messages: rawMessages, enobufs: rawEnobufs } = await followers[0].finish(size);
      const rawPer = rawCpu / rawMessages;
      console.log(`${size}: raw reader got ${rawMessages} messages (${rawEnobufs} ENOBUFS)`);
      for (const [i, mode] of ['tally', 'entries'].entries()) {
        const r = JSON.parse(await followers[i + 1].done);
        console.log(`${size}: ${mode} table followed ${r.events} events, lost ${r.lost}, resyncs ${r.resyncs}`);
        const per = r.cpu / r.events;
        rows.push([`${size}: CPU per followed event, ${mode}`, `raw libmnl ${(rawPer * 1e6).toFixed(2)} us`, `${(per * 1e6).toFixed(2)} us`, `${(per / rawPer).toFixed(2)}x`, '<= 1.5x']);
      }
      rows.push([`${size}: CPU per followed event, ctmon exporter`, `raw libmnl ${(rawPer * 1e6).toFixed(2)} us`, `${((exporterCpu / size) * 1e6).toFixed(2)} us`, `${(exporterCpu / size / rawPer).toFixed(2)}x`, '']);
    }
    // At rest: the table gives the heap back after a second without events.
    await new Promise((r) => setTimeout(r, 3000));
    const rss = rssMiB(exporter.proc.pid);
    rows.push([`${size}: ctmon exporter RSS, every entry counted`, '', `${rss.toFixed(0)} MiB`, `${((rss * 1048576) / size).toFixed(0)} B/entry`, size >= 1e6 ? '<= 110 MiB' : '']);
    exporter.proc.kill('SIGTERM');
    await new Promise((r) => exporter.proc.once('exit', r));

    // On the loaded table: RSS per entry and ready in each mode, beside our fastest dump.
    for (const mode of ['tally', 'entries']) {
      const r = runChild(['ready', ns.name, mode]);
      if (r.size !== size) throw new Error(`${mode} table counted ${r.size} of ${size}`);
      rows.push([`${size}: RSS growth per entry to ready, ${mode}`, '', `${r.perEntry.toFixed(0)} B`, '', mode === 'tally' ? '<= 64 B' : '<= 160 B']);
      rows.push([`${size}: ready, ${mode}, vs our fastest dump`, `for await ct.dump() ${fmt(r.dump)}`, fmt(r.ready), `${(r.ready / r.dump).toFixed(2)}x`, size >= 1e6 ? '<= 1.2x' : '']);
    }
  } finally {
    if (exporter.proc.exitCode === null) exporter.proc.kill('SIGTERM');
    ns.destroy();
    restoreMax();
  }
}
report(rows);
