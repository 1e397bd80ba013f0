// Benchmark: events during a 250k `conntrack -R` load and a 250k
// `conntrack -F`, our stream (default options) beside `conntrack -E` in the
// same namespace and run; rates, CPU per event, and peak RSS with a slow consumer.
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Conntrack } from '../../dist/index.js';
import { createNetns, report, tableLines } from './lib.mjs';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const TOTAL = Number(process.env.BENCH_EVENTS ?? 250000);
const TICK = 100; // USER_HZ

function cpuSeconds(pid) {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(f[11]) + Number(f[12])) / TICK;
}

function cliListener(ns, event) {
  const p = spawn('ip', ['netns', 'exec', ns, 'conntrack', '-E', '-e', event], { stdio: ['ignore', 'pipe', 'pipe'] });
  let lines = 0;
  let enobufs = 0;
  p.stdout.on('data', (b) => { for (let i = 0; i < b.length; i++) if (b[i] === 10) lines++; });
  p.stderr.on('data', (b) => { enobufs += (b.toString().match(/ENOBUFS/g) ?? []).length; });
  return { proc: p, get lines() { return lines; }, get enobufs() { return enobufs; } };
}

function runAsync(cmd, args) {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { stdio: 'ignore' });
    p.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`${cmd} ${args.join(' ')} exited ${code}`))));
  });
}

async function waitQuiet(getCount, quietMs = 1500) {
  let last = -1;
  let since = Date.now();
  for (;;) {
    const n = getCount();
    if (n !== last) { last = n; since = Date.now(); }
    if (Date.now() - since > quietMs) return n;
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function scenario(ct, ns, type, action) {
  const cli = cliListener(ns, type.toUpperCase());
  const stream = ct.events({ types: [type] });
  await stream.ready;
  await new Promise((r) => setTimeout(r, 300)); // conntrack -E has no readiness signal
  let ours = 0;
  let lost = 0;
  let first = 0;
  let last = 0;
  const consumer = (async () => {
    for await (const ev of stream) {
      if (ev.type === 'overrun') lost += ev.lost;
      else {
        if (!ours) first = performance.now();
        ours++;
        last = performance.now();
      }
    }
  })();
  const cpu0 = process.cpuUsage();
  const cliCpu0 = cpuSeconds(cli.proc.pid);
  await action();
  await waitQuiet(() => ours + lost + cli.lines);
  const cpu = process.cpuUsage(cpu0);
  const cliCpu = cpuSeconds(cli.proc.pid) - cliCpu0;
  stream.close();
  await consumer;
  cli.proc.kill();
  return { ours, lost, cli: cli.lines, cliEnobufs: cli.enobufs, rate: ours / ((last - first) / 1000), cpuPerEvent: (cpu.user + cpu.system) / 1e6 / ours, cliCpuPerEvent: cliCpu / Math.max(1, cli.lines) };
}

if (process.argv[2] === '--slow-child') {
  // A consumer 10x slower than the producer: RSS must stay bounded by queueLimit.
  const ct = await Conntrack.open({ netns: process.argv[3] });
  const queueLimit = Number(process.argv[4]);
  const s = ct.events({ types: ['new'], queueLimit });
  await s.ready;
  process.stdout.write('ready\n');
  let n = 0;
  let lost = 0;
  const deadline = Date.now() + 15000;
  for await (const ev of s) {
    if (ev.type === 'overrun') lost += ev.lost; else n++;
    if (n % 100 === 0) await new Promise((r) => setTimeout(r, 1)); // ~10x slower than conntrack -R
    if (n + lost >= Number(process.argv[5]) || Date.now() > deadline) break;
  }
  process.stdout.write(JSON.stringify({ n, lost, maxRssKiB: process.resourceUsage().maxRSS }) + '\n');
  process.exit(0);
}

const ns = createNetns();
const ct = await Conntrack.open({ netns: ns.name });
const dir = mkdtempSync(join(tmpdir(), 'ctev-'));
const file = join(dir, 'entries');
writeFileSync(file, tableLines(1000, TOTAL / 1000).join('\n') + '\n');

const load = await scenario(ct, ns.name, 'new', () => runAsync('ip', ['netns', 'exec', ns.name, 'conntrack', '-R', file]));
const flush = await scenario(ct, ns.name, 'destroy', () => runAsync('ip', ['netns', 'exec', ns.name, 'conntrack', '-F']));

// Slow consumer, separate process.
spawnSync('ip', ['netns', 'exec', ns.name, 'conntrack', '-F']);
const slowRows = [];
for (const queueLimit of [10000, 100000]) {
  const child = spawn(process.execPath, [fileURLToPath(import.meta.url), '--slow-child', ns.name, String(queueLimit), String(TOTAL)], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.on('data', (d) => { out += d; });
  await new Promise((r) => { const t = setInterval(() => { if (out.includes('ready')) { clearInterval(t); r(); } }, 20); });
  // Listen for the exit first: the child may stop at its deadline before the load ends.
  const exited = new Promise((r) => child.on('exit', r));
  await runAsync('ip', ['netns', 'exec', ns.name, 'conntrack', '-R', file]);
  await exited;
  const res = JSON.parse(out.split('\n')[1]);
  slowRows.push([`slow consumer, queueLimit ${queueLimit}`, `delivered ${res.n}`, `lost ${res.lost}`, `peak RSS ${(res.maxRssKiB / 1024).toFixed(1)} MiB`]);
  spawnSync('ip', ['netns', 'exec', ns.name, 'conntrack', '-F']);
}
ct.close();

report([
  ['scenario', 'conntrack -E', 'ours', 'ratio (ours/CLI)'],
  [`NEW during -R of ${TOTAL}`, `${load.cli} (${load.cliEnobufs} ENOBUFS)`, `${load.ours} (+${load.lost} lost)`, `${(load.ours / Math.max(1, load.cli)).toFixed(2)}x`],
  [`DESTROY during -F of ${TOTAL}`, `${flush.cli} (${flush.cliEnobufs} ENOBUFS)`, `${flush.ours} (+${flush.lost} lost)`, `${(flush.ours / Math.max(1, flush.cli)).toFixed(2)}x`],
  ['NEW rate (events/s)', '', Math.round(load.rate), ''],
  ['CPU per NEW event', `${(load.cliCpuPerEvent * 1e6).toFixed(2)} us`, `${(load.cpuPerEvent * 1e6).toFixed(2)} us`, `${(load.cpuPerEvent / load.cliCpuPerEvent).toFixed(2)}x`],
  ['CPU per DESTROY event', `${(flush.cliCpuPerEvent * 1e6).toFixed(2)} us`, `${(flush.cpuPerEvent * 1e6).toFixed(2)} us`, `${(flush.cpuPerEvent / flush.cliCpuPerEvent).toFixed(2)}x`],
  ...slowRows,
]);
ns.destroy();
