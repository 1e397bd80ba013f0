// Shared pieces of the benchmarks: a throwaway namespace, a table filler
// (conntrack -R), and timers for the reference CLI and for our calls.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, openSync, closeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export function createNetns(prefix = 'ctbench') {
  const name = `${prefix}-${randomBytes(3).toString('hex')}`;
  execFileSync('ip', ['netns', 'add', name]);
  execFileSync('ip', ['-n', name, 'link', 'set', 'lo', 'up']);
  const destroy = () => spawnSync('ip', ['netns', 'delete', name]);
  process.once('exit', destroy);
  for (const sig of ['SIGINT', 'SIGTERM']) process.once(sig, () => { destroy(); process.exit(130); });
  return { name, destroy };
}

/** Source address number s (0..999): sources 0-499 in 10.1.0.0/16, 500-999 in 10.2.0.0/16. */
export function sourceAddress(s) {
  const half = s >= 500 ? 2 : 1;
  const i = s % 500;
  return `10.${half}.${i >> 8}.${i & 255}`;
}

/** `conntrack -R` lines: `sources` x `perSource` TCP entries. */
export function tableLines(sources = 1000, perSource = 250) {
  const lines = [];
  for (let s = 0; s < sources; s++) {
    const src = sourceAddress(s);
    for (let j = 0; j < perSource; j++) {
      lines.push(`-I -p tcp -s ${src} -d 172.16.${j >> 8}.${j & 255} --sport ${1024 + s} --dport 80 --state ESTABLISHED -u ASSURED -t 3600 -m ${j & 7}`);
    }
  }
  return lines;
}

/** Loads lines with `conntrack -R` in the namespace; returns seconds taken. */
export function fill(netns, lines) {
  const dir = mkdtempSync(join(tmpdir(), 'ctfill-'));
  const file = join(dir, 'entries');
  writeFileSync(file, lines.join('\n') + '\n');
  const t0 = process.hrtime.bigint();
  execFileSync('ip', ['netns', 'exec', netns, 'conntrack', '-R', file], { stdio: ['ignore', 'ignore', 'pipe'] });
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  rmSync(dir, { recursive: true, force: true });
  return secs;
}

/** Runs the conntrack CLI in the namespace with stdout to /dev/null; returns seconds. */
export function timeCli(netns, args) {
  const devnull = openSync('/dev/null', 'w');
  const t0 = process.hrtime.bigint();
  const r = spawnSync('ip', ['netns', 'exec', netns, 'conntrack', ...args], { stdio: ['ignore', devnull, 'ignore'] });
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  closeSync(devnull);
  if (r.status !== 0 && r.status !== 1) throw new Error(`conntrack ${args.join(' ')} exited ${r.status}`);
  return secs;
}

export async function timeAsync(fn) {
  const t0 = process.hrtime.bigint();
  const value = await fn();
  return { secs: Number(process.hrtime.bigint() - t0) / 1e9, value };
}

export function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

export function fmt(secs) {
  return secs < 0.01 ? `${(secs * 1e3).toFixed(3)} ms` : `${secs.toFixed(3)} s`;
}

export function ratio(reference, ours) {
  return `${(reference / ours).toFixed(2)}x`;
}

export function report(rows) {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => String(r[i] ?? '').length)) + 2);
  for (const r of rows) console.log(r.map((c, i) => String(c).padEnd(widths[i])).join('').trimEnd());
}

const CTMON = fileURLToPath(new URL('../../dist/cli/ctmon.js', import.meta.url));
const MAX_PATH = '/proc/sys/net/netfilter/nf_conntrack_max';
const originalMax = readFileSync(MAX_PATH, 'utf8').trim();
process.once('exit', () => restoreMax());

/** nf_conntrack_max is host-wide: raised in the initial namespace for a table of `size` (restoreMax() and exit put it back). */
export function raiseMax(size) {
  // Headroom: the limit is host-wide, and other namespaces hold entries too.
  if (size > Number(originalMax) * 0.9) writeMax(Math.ceil(size * 1.3));
}

export function restoreMax() {
  try {
    if (readFileSync(MAX_PATH, 'utf8').trim() !== originalMax) writeMax(originalMax);
  } catch { /* best effort */ }
}

function writeMax(v) {
  const r = spawnSync('sysctl', ['-qw', `net.netfilter.nf_conntrack_max=${v}`], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`sysctl nf_conntrack_max=${v}: ${r.stderr}`);
}

/** utime+stime of a process in seconds. */
export function cpuSeconds(pid) {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const rest = f.slice(f.lastIndexOf(')') + 2).split(' ');
  return (Number(rest[11]) + Number(rest[12])) / 100; // USER_HZ 100
}
export function rssMiB(pid) {
  const kb = Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))[1]);
  return kb / 1024;
}

export async function startExporter(netns) {
  const proc = spawn(process.execPath, [CTMON, 'exporter', '--netns', netns, '--listen', '127.0.0.1:0', '--doctor', '0', '--resync', '0'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  proc.stderr.on('data', (d) => (err += d));
  for (let i = 0; i < 200; i++) {
    const m = /serving http:\/\/127\.0\.0\.1:(\d+)\/metrics/.exec(err);
    if (m) return { proc, port: Number(m[1]) };
    if (proc.exitCode !== null) throw new Error(err);
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`exporter did not start: ${err}`);
}

export async function scrape(port) {
  const r = await fetch(`http://127.0.0.1:${port}/metrics`);
  return r.text();
}

/** Sum of conntrack_entries_by_state in a scrape: what the live table counts. */
export function liveCount(text) {
  let n = 0;
  for (const m of text.matchAll(/^conntrack_entries_by_state\{[^}]*\} (\d+)$/gm)) n += Number(m[1]);
  return n;
}

export async function until(check, what, timeoutMs = 600_000) {
  const t0 = Date.now();
  for (;;) {
    if (await check()) return;
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
