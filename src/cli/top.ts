/** ctmon top: a live terminal view of the table, refreshed every second; q or Ctrl-C quits and restores the terminal. */
import { counterTotals, type Conntrack } from '../conntrack.js';
import type { DestinationCount, LiveTable } from '../live-table.js';
import { COMMON_OPTIONS, numberArg, UsageError, type OptionSpec, type ParsedArgs } from './args.js';
import { colourEnabled, paint } from './colour.js';
import { untilInterrupted } from './common.js';

export const options: OptionSpec[] = [
  ...COMMON_OPTIONS,
  { name: 'interval', type: 'number', placeholder: 'SECONDS', help: 'seconds between refreshes (default 1)' },
  { name: 'iterations', type: 'number', placeholder: 'N', help: 'quit after this many refreshes' },
];
export const summary = 'Live view: fill bar, new/destroy rates, top sources and destinations, states. q or Ctrl-C quits.';

interface Breakdown {
  sources: [string, number][];
  destinations: [string, number][];
  states: [string, number][];
  protocols: [string, number][];
  unassured: number;
  total: number;
}

const TOP = 8;

function top<K>(m: Map<K, number>, n: number): [K, number][] {
  return [...m.entries()].sort((a, b) => b[1] - a[1]).slice(0, n);
}

/** `addr:port/proto` ([addr] for IPv6), as ss and conntrack users read a service. */
function destination(d: DestinationCount): string {
  const addr = d.dst.includes(':') ? `[${d.dst}]` : d.dst;
  return `${d.dport === undefined ? d.dst : `${addr}:${d.dport}`}/${String(d.protocol)}`;
}

/** The live table's figures as top lays them out: kept current by events, no dump per refresh. */
function breakdown(table: LiveTable): Breakdown {
  const states = new Map<string, number>();
  const protocols = new Map<string, number>();
  const bump = (m: Map<string, number>, k: string, n: number): void => void m.set(k, (m.get(k) ?? 0) + n);
  for (const c of table.counts()) {
    bump(states, c.state || String(c.protocol).toUpperCase(), c.entries);
    bump(protocols, String(c.protocol), c.entries);
  }
  const total = table.size;
  return {
    sources: table.topSources(TOP).map((s) => [s.src, s.entries]),
    destinations: table.topDestinations(TOP).map((d) => [destination(d), d.entries]),
    states: top(states, 6),
    protocols: top(protocols, 6),
    unassured: total - table.assured,
    total,
  };
}

const ESC = '\x1b[';

function bar(fraction: number, width: number, colour: boolean): string {
  const filled = Math.min(width, Math.round(fraction * width));
  return paint('#'.repeat(filled), fraction >= 0.9 ? 'red' : fraction >= 0.75 ? 'yellow' : 'green', colour) + '-'.repeat(width - filled);
}

/** Two columns side by side; each sized to its widest cell, so nothing runs into the next. */
function columns(left: string[][], right: string[][], headings: [string, string]): string[] {
  const widths = (rows: string[][]): number[] => rows.reduce((w, r) => r.map((c, i) => Math.max(w[i] ?? 0, c.length)), [] as number[]);
  const fmt = (row: string[] | undefined, w: number[]): string => (row ? row.map((c, i) => (i === 0 ? c.padEnd(w[i]!) : c.padStart(w[i]!))).join('  ') : '');
  const lw = widths(left);
  const rw = widths(right);
  const leftWidth = Math.max(headings[0].length, lw.reduce((a, b) => a + b, 0) + 2 * Math.max(0, lw.length - 1));
  const out = [`${headings[0].padEnd(leftWidth)}    ${headings[1]}`];
  for (let i = 0; i < Math.max(left.length, right.length); i++) out.push(`${fmt(left[i], lw).padEnd(leftWidth)}    ${fmt(right[i], rw)}`.trimEnd());
  return out;
}

export async function run(ct: Conntrack, args: ParsedArgs): Promise<number> {
  const interval = numberArg(args, 'interval') ?? 1;
  if (!(interval > 0)) throw new UsageError('--interval must be a positive number of seconds');
  const iterations = numberArg(args, 'iterations');
  if (iterations !== undefined && !(Number.isInteger(iterations) && iterations >= 1)) throw new UsageError('--iterations must be a whole number of refreshes, at least 1');
  const tty = process.stdout.isTTY === true;
  const colour = colourEnabled(process.stdout);
  const stdin = process.stdin;
  // A live table: its counts are current at every refresh, where a dump per refresh cost seconds at a million entries.
  const table = ct.liveTable({ top: TOP });
  const stop = untilInterrupted();
  let quit = false;
  const wake: (() => void)[] = [];
  const requestQuit = (): void => {
    quit = true;
    wake.splice(0).forEach((w) => w());
  };
  void stop.promise.then(requestQuit);
  const onKey = (d: Buffer): void => {
    const k = d.toString();
    if (k === 'q' || k === 'Q' || k === '\x03') requestQuit();
  };
  const restore = (): void => {
    if (tty) process.stdout.write(`${ESC}?25h${ESC}?1049l`);
    if (stdin.isTTY) stdin.setRawMode(false);
    stdin.off('data', onKey);
    stdin.pause();
  };
  if (tty) process.stdout.write(`${ESC}?1049h${ESC}?25l`);
  if (stdin.isTTY) stdin.setRawMode(true);
  stdin.on('data', onKey);
  stdin.resume();
  process.once('exit', restore);

  try {
    await table.ready;
    let last = Date.now();
    let seen = table.stats.events;
    let frames = 0;
    while (!quit) {
      const stats = await ct.stats();
      const now = Date.now();
      const secs = Math.max(0.001, (now - last) / 1000);
      const { events, lost } = table.stats;
      const rateNew = (events.new - seen.new) / secs;
      const rateDestroy = (events.destroy - seen.destroy) / secs;
      seen = events;
      last = now;
      const b = breakdown(table);
      const fill = stats.max ? stats.count / stats.max : 0;
      const width = Math.max(20, Math.min(60, (process.stdout.columns ?? 80) - 40));
      const lines: string[] = [];
      lines.push(`ctmon top  ${ct.netns ? `namespace ${ct.netns}` : 'this namespace'}  ${new Date().toLocaleTimeString()}${tty ? '   (q to quit)' : ''}`);
      lines.push('');
      lines.push(`table   [${bar(fill, width, colour)}] ${stats.count} / ${stats.max}  ${(fill * 100).toFixed(1)}%`);
      lines.push(`rates   new ${rateNew.toFixed(0)}/s   destroy ${rateDestroy.toFixed(0)}/s   lost events ${lost}`);
      const t = counterTotals(stats);
      lines.push(`kernel  drops ${t.drop + t.earlyDrop + t.insertFailed}   invalid ${t.invalid}   unassured ${b.unassured} of ${b.total}`);
      lines.push(`proto   ${b.protocols.map(([p, n]) => `${p} ${n}`).join('   ')}`);
      lines.push(`states  ${b.states.map(([s, n]) => `${s} ${n}`).join('   ')}`);
      lines.push('');
      const share = (n: number): string => `${((n / Math.max(1, b.total)) * 100).toFixed(1)}%`;
      lines.push(
        ...columns(
          b.sources.map(([src, n]) => [src, String(n), share(n)]),
          b.destinations.map(([dst, n]) => [dst, String(n), share(n)]),
          ['TOP SOURCES', 'TOP DESTINATIONS'],
        ),
      );
      process.stdout.write((tty ? `${ESC}H${ESC}2J` : '') + lines.join('\n') + '\n');
      if (iterations !== undefined && ++frames >= iterations) break;
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, interval * 1000);
        wake.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  } finally {
    stop.cancel();
    table.close();
    restore();
    process.off('exit', restore);
  }
  return 0;
}
