/**
 * Compares our Entry objects with `conntrack -L -o id` lines, field for field.
 */
import { expect } from 'vitest';
import type { Entry, Tuple } from '../../src/index.js';
import { parseCliLine, type CliEntry } from './netns.js';

function tupleFields(t: Tuple, counters?: { packets: number; bytes: number }): Record<string, string> {
  const out: Record<string, string> = { src: t.src, dst: t.dst };
  if (t.sport !== undefined) out.sport = String(t.sport);
  if (t.dport !== undefined) out.dport = String(t.dport);
  if (t.icmp) {
    out.type = String(t.icmp.type);
    out.code = String(t.icmp.code);
    out.id = String(t.icmp.id);
  }
  if (counters) {
    out.packets = String(counters.packets);
    out.bytes = String(counters.bytes);
  }
  return out;
}

/** Asserts that `entry` is what the CLI printed in `cli`; timeouts may differ by the seconds between the two reads. */
/**
 * `use` is the kernel's reference count: a get() holds one more reference
 * while it answers than a dump does, so it is compared for dumps only.
 */
export function expectSameEntry(entry: Entry, cli: CliEntry, options: { compareUse?: boolean } = {}): void {
  expect(typeof entry.protocol === 'number' ? 'unknown' : entry.protocol).toBe(cli.protocol);
  expect(entry.original.src === cli.original.src, 'orig src').toBe(true);
  expect(tupleFields(entry.original, entry.counters?.original)).toEqual(cli.original);
  expect(tupleFields(entry.reply, entry.counters?.reply)).toEqual(cli.reply);
  expect(entry.state).toBe(cli.state);
  expect(Math.abs(entry.timeout - cli.timeout)).toBeLessThanOrEqual(2);
  const flags: string[] = [];
  if (!entry.status.includes('SEEN_REPLY')) flags.push('UNREPLIED');
  if (entry.status.includes('ASSURED')) flags.push('ASSURED');
  expect(cli.flags.filter((f) => f === 'UNREPLIED' || f === 'ASSURED').sort()).toEqual(flags.sort());
  expect(String(entry.mark)).toBe(cli.fields.mark);
  expect(entry.zone === 0 ? undefined : String(entry.zone)).toBe(cli.fields.zone);
  if (options.compareUse !== false) expect(String(entry.use)).toBe(cli.fields.use);
  if (cli.fields.id !== undefined) expect(String(entry.id)).toBe(cli.fields.id);
}

/** Matches each CLI line to our entry with the same id and compares them; the sets must be equal. */
export function expectSameTable(entries: Entry[], cliLines: string[]): void {
  const cli = cliLines.map(parseCliLine);
  expect(entries.length).toBe(cli.length);
  const byId = new Map(entries.map((e) => [String(e.id), e]));
  for (const c of cli) {
    const e = byId.get(c.fields.id!);
    expect(e, `entry with id ${c.fields.id} (${JSON.stringify(c)})`).toBeDefined();
    expectSameEntry(e!, c);
  }
}
