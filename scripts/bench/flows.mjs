// Benchmark: flow logging on a burst of BENCH_FLOWS (250,000) flows ending
// at once (`conntrack -R` then `conntrack -F` in one namespace, accounting
// and timestamps on). Records delivered and CPU per record of `ctmon log`
// (NDJSON and IPFIX, default options), ulogd2 (NFCT -> JSON, as Debian ships
// it, with an 8 MiB buffer growing to 64 MiB), `conntrack -E -e DESTROY -o
// timestamp,extended -b 64MiB`, and a raw libmnl reader that decodes nothing
// (raw-reader.c, built here); ratios to the raw reader.
import { execFileSync, spawn } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createNetns } from './lib.mjs';

const N = Number(process.env.BENCH_FLOWS ?? 250000);
const TICK = 100; // USER_HZ
const here = (p) => fileURLToPath(new URL(p, import.meta.url));
const CTMON = here('../../dist/cli/ctmon.js');
const work = mkdtempSync(join(tmpdir(), 'ctbench-flows-'));
process.once('exit', () => rmSync(work, { recursive: true, force: true }));

function cpuSeconds(pid) {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(f[11]) + Number(f[12])) / TICK;
}

/** Resolves once the process's CPU time has not moved for `quietMs`: it has taken in all it will. */
async function cpuQuiet(pid, quietMs = 1000, capMs = 120_000) {
  let last = -1;
  let since = Date.now();
  const start = Date.now();
  for (;;) {
    const c = cpuSeconds(pid);
    if (c !== last) [last, since] = [c, Date.now()];
    if (Date.now() - since >= quietMs || Date.now() - start > capMs) return c;
    await new Promise((r) => setTimeout(r, 100));
  }
}

function launch(cmd, args) {
  const proc = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const out = { proc, stdout: '', stderr: '', lines: 0, exited: new Promise((r) => proc.on('exit', r)) };
  proc.stdout.on('data', (b) => {
    for (let i = 0; i < b.length; i++) if (b[i] === 10) out.lines++;
    if (out.stdout.length < 4096) out.stdout += b.toString();
  });
  proc.stderr.on('data', (b) => (out.stderr += b.toString()));
  return out;
}

async function until(check, what, ms = 15000) {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** One contender: subscribe, load the table (its NEW events make every entry report its end), flush, wait until it is idle, stop. */
async function measure(ns, file, name, start) {
  const c = await start();
  const pid = c.run.proc.pid;
  execFileSync('ip', ['netns', 'exec', ns, 'conntrack', '-R', file], { stdio: 'ignore' });
  const cpu0 = cpuSeconds(pid);
  const t0 = performance.now();
  execFileSync('ip', ['netns', 'exec', ns, 'conntrack', '-F'], { stdio: 'ignore' });
  const cpu1 = await cpuQuiet(pid);
  const wall = (performance.now() - t0) / 1000 - 1; // less the quiet second
  c.run.proc.kill('SIGTERM');
  await c.run.exited;
  const delivered = await c.delivered();
  const cpu = cpu1 - cpu0;
  const r = { name, delivered, pct: (100 * delivered) / N, cpu, usPerRecord: delivered ? (cpu * 1e6) / delivered : NaN, wall, ...(c.extra?.() ?? {}) };
  console.log(`${name.padEnd(34)} ${String(delivered).padStart(7)}/${N} (${r.pct.toFixed(1).padStart(5)}%)  CPU ${cpu.toFixed(2)} s  ${r.usPerRecord.toFixed(2)} µs/record${r.note ? `  ${r.note}` : ''}`);
  return r;
}

function ctmonTotals(stderr) {
  const m = /ctmon: (\d+) records logged, (\d+) lost/.exec(stderr);
  if (!m) throw new Error(`ctmon log printed no totals: ${stderr}`);
  return { logged: Number(m[1]), lost: Number(m[2]) };
}

const contenders = {
  'raw libmnl reader (C, no decoding)': (ns, bin) => async () => {
    const run = launch('ip', ['netns', 'exec', ns, bin, 'destroy']);
    await until(() => run.stderr.includes('ready'), 'raw reader');
    return { run, delivered: async () => Number(run.stdout.trim().split(' ')[0]) };
  },
  'ctmon log (NDJSON)': (ns) => async () => {
    const run = launch(process.execPath, [CTMON, 'log', '--netns', ns]);
    await until(() => run.stderr.includes('ctmon: logging'), 'ctmon log');
    return { run, delivered: async () => ctmonTotals(run.stderr).logged, extra: () => ({ note: `${run.lines} lines, ${ctmonTotals(run.stderr).lost} lost` }) };
  },
  'ctmon log (IPFIX)': (ns) => async () => {
    const sock = createSocket('udp4');
    let received = 0;
    sock.on('message', (m) => (received += m.length));
    await new Promise((r) => sock.bind(0, '127.0.0.1', r));
    const run = launch(process.execPath, [CTMON, 'log', '--netns', ns, '--ipfix', `127.0.0.1:${sock.address().port}`]);
    await until(() => run.stderr.includes('ctmon: logging'), 'ctmon log');
    return {
      run,
      delivered: async () => {
        sock.close();
        return ctmonTotals(run.stderr).logged;
      },
      extra: () => ({ note: `${(received / 2 ** 20).toFixed(1)} MiB of IPFIX reached the bench's socket (its default receive buffer drops the rest; ctmon counts what it sent)` }),
    };
  },
  'ulogd2 (NFCT -> JSON)': (ns) => async () => {
    const json = join(work, 'ulogd.json');
    const conf = join(work, 'ulogd.conf');
    const lib = '/usr/lib/x86_64-linux-gnu/ulogd';
    writeFileSync(conf, [
      '[global]', `logfile="${join(work, 'ulogd.log')}"`, 'loglevel=5',
      `plugin="${lib}/ulogd_inpflow_NFCT.so"`, `plugin="${lib}/ulogd_filter_IP2STR.so"`, `plugin="${lib}/ulogd_output_JSON.so"`,
      'stack=ct1:NFCT,ip2str1:IP2STR,json1:JSON',
      '[ct1]', 'netlink_socket_buffer_size=8388608', 'netlink_socket_buffer_maxsize=67108864', 'hash_enable=0', 'event_mask=0x00000004',
      '[json1]', 'sync=1', `file="${json}"`, '',
    ].join('\n'));
    rmSync(json, { force: true });
    const run = launch('ip', ['netns', 'exec', ns, 'ulogd', '-c', conf]);
    await sleep(1000); // ulogd says nothing when it is subscribed
    if (run.proc.exitCode !== null) throw new Error(`ulogd exited: ${run.stderr} ${readFileSync(join(work, 'ulogd.log'), 'utf8')}`);
    return { run, delivered: async () => readFileSync(json, 'utf8').split('\n').filter(Boolean).length };
  },
  'conntrack -E -e DESTROY -b 64MiB': (ns) => async () => {
    const run = launch('ip', ['netns', 'exec', ns, 'conntrack', '-E', '-e', 'DESTROY', '-o', 'timestamp,extended', '-b', String(64 << 20)]);
    await sleep(500); // conntrack -E says nothing when it is subscribed
    return { run, delivered: async () => run.lines, extra: () => ({ note: (run.stderr.match(/ENOBUFS/g) ?? []).length ? 'ENOBUFS reported' : '' }) };
  },
};

const bin = join(work, 'raw-reader');
execFileSync('cc', ['-O2', '-o', bin, here('./raw-reader.c'), '-lmnl']);
const { name: ns } = createNetns();
for (const s of ['nf_conntrack_acct', 'nf_conntrack_timestamp']) execFileSync('ip', ['netns', 'exec', ns, 'sysctl', '-qw', `net.netfilter.${s}=1`]);
const file = join(work, 'entries');
const lines = [];
for (let i = 0; i < N; i++) lines.push(`-I -p udp -s 10.${(i >> 16) + 1}.${(i >> 8) & 255}.${i & 255} -d 10.200.0.1 --sport 1000 --dport 53 -t 600`);
writeFileSync(file, lines.join('\n') + '\n');

console.log(`flows: ${N} flows ending at once (conntrack -R, then -F), accounting and timestamps on; one run each\n`);
const results = {};
const only = process.env.BENCH_ONLY ? new RegExp(process.env.BENCH_ONLY) : undefined;
for (const [name, make] of Object.entries(contenders)) if (!only || only.test(name)) results[name] = await measure(ns, file, name, make(ns, bin));

if (only) process.exit(0);
const raw = results['raw libmnl reader (C, no decoding)'];
const nd = results['ctmon log (NDJSON)'];
const ipfix = results['ctmon log (IPFIX)'];
console.log('\nratios:');
console.log(`  CPU per record, ctmon NDJSON / raw reader:  ${(nd.usPerRecord / raw.usPerRecord).toFixed(2)}x (goal <= 2)`);
console.log(`  CPU per record, ctmon IPFIX / ctmon NDJSON: ${(ipfix.usPerRecord / nd.usPerRecord).toFixed(2)}x (goal <= 1)`);
for (const name of ['ulogd2 (NFCT -> JSON)', 'conntrack -E -e DESTROY -b 64MiB']) {
  const r = results[name];
  console.log(`  delivered, ctmon NDJSON / ${name}: ${(nd.delivered / r.delivered).toFixed(2)}x; CPU per record ${(nd.usPerRecord / r.usPerRecord).toFixed(2)}x`);
}
