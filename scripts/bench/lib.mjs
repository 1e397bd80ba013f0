// Shared pieces of the benchmarks: a throwaway namespace, a table filler
// (conntrack -R), and timers for the reference CLI and for our calls.
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync, openSync, closeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

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
