/**
 * ct.updateWhere() and `ctmon update`: conntrack -U with filters, on the
 * bulk deletes' streaming path. Counts, dry runs, the whole-family guard,
 * cancellation, entries that vanish meanwhile, the updated entries, bad
 * changes; ctmon's lines and counts beside conntrack -U's on twin entries.
 */
import { spawn } from 'node:child_process';
import { beforeEach, expect, it } from 'vitest';
import { ConntrackError } from '../src/index.js';
import { ctmon } from './helpers/cli.js';
import { describePrivileged, useNamespace } from './helpers/netns.js';

/** 5000 entries: 4000 UDP from 10.30.0.0/20 (mark = i % 16, half in zone 2), 1000 TCP from 2001:db8:30::/64. */
function tableLines(): string[] {
  const lines: string[] = [];
  for (let i = 0; i < 4000; i++) lines.push(`-I -p udp -s 10.30.${i >> 8}.${i & 255} -d 192.0.2.1 --sport ${1000 + (i % 7)} --dport 53 -t 600 -m ${i % 16}${i % 2 ? ' -w 2' : ''}`);
  for (let i = 0; i < 1000; i++) lines.push(`-I -p tcp -s 2001:db8:30::${(i + 1).toString(16)} -d 2001:db8:ff::1 --sport 4000 --dport 443 --state ESTABLISHED -t 600`);
  return lines;
}

describePrivileged('updateWhere() on a 5000-entry namespace', () => {
  const lines = tableLines();
  const fx = useNamespace('all', 'ctupw');
  beforeEach(async () => {
    await fx.ct.flush();
    fx.ns.restore(lines);
    expect(await fx.ct.count()).toBe(5000);
  });

  it('changes exactly the matching entries, zoned ones too, and leaves those that already are what it asks', async () => {
    const r = await fx.ct.updateWhere({ src: '10.30.0.0/22' }, { mark: 5 });
    // 1024 sources; one in 16 already has mark 5.
    expect(r).toEqual({ matched: 1024, updated: 1024 - 64, alreadyGone: 0, failed: [] });
    expect(await fx.ct.count({ mark: 5 })).toBe(1024 + (4000 - 1024) / 16);
    expect(await fx.ct.count({ src: '10.30.0.0/22', mark: 5, zone: 2 })).toBe(512);
    // Again: nothing differs, nothing is sent.
    expect(await fx.ct.updateWhere({ src: '10.30.0.0/22' }, { mark: 5 })).toMatchObject({ matched: 1024, updated: 0 });
    // Under a mask, as -U -m VALUE/MASK: the low nibble cleared, then 0x30 XORed in.
    await fx.ct.updateWhere({ src: '10.30.4.0/24' }, { mark: { value: 0x30, mask: 0x0f } });
    expect((await fx.ct.list({ src: '10.30.4.0/24' })).every((e) => e.mark === 0x30)).toBe(true);
    const tcp = await fx.ct.updateWhere({ protocol: 'tcp', dport: 443 }, { timeout: 30, status: ['ASSURED'], labelsAdd: [] });
    expect(tcp).toMatchObject({ matched: 1000, updated: 1000 });
    const e = (await fx.ct.list({ protocol: 'tcp' }))[0]!;
    expect(e.timeout).toBeLessThanOrEqual(30);
    expect(e.status).toContain('ASSURED');
  });

  it('dryRun counts what the filter selects and changes nothing; entries: true returns the updated entries as left', async () => {
    expect(await fx.ct.updateWhere({ src: '10.30.1.0/24' }, { mark: 9 }, { dryRun: true })).toEqual({ matched: 256, updated: 0, alreadyGone: 0, failed: [] });
    expect(await fx.ct.count({ mark: 9 })).toBe(250);
    const r = await fx.ct.updateWhere({ src: '10.30.1.0/24' }, { mark: 9, timeout: 100 }, { entries: true });
    expect(r.updated).toBe(256);
    expect(r.entries).toHaveLength(256);
    const now = new Map((await fx.ct.list({ src: '10.30.1.0/24' })).map((x) => [`${x.original.src}|${x.zone}`, x]));
    for (const x of r.entries!) {
      const live = now.get(`${x.original.src}|${x.zone}`)!;
      expect({ ...x, timeout: 0, use: 0 }).toEqual({ ...live, timeout: 0, use: 0 });
      expect(x.timeout).toBe(100);
    }
  });

  it('a filter that selects every entry of the table or of a family needs all: true', async () => {
    for (const filter of [{}, { src: '0.0.0.0/0' }, { family: 'ipv6' as const }, { src: ['::/0', '10.0.0.0/8'] }, { status: 'CONFIRMED' as const }]) {
      const err = (await fx.ct.updateWhere(filter, { mark: 1 }).catch((x: unknown) => x)) as ConntrackError;
      expect(err, JSON.stringify(filter)).toMatchObject({ code: 'ERR_INVALID_ARG', argument: 'all' });
      expect(err.message).toContain('pass { all: true } to update them all');
    }
    expect(await fx.ct.count({ mark: 1 })).toBe(250);
    expect(await fx.ct.updateWhere({ src: '0.0.0.0/0' }, { mark: 1 }, { all: true })).toMatchObject({ matched: 4000, updated: 4000 - 250 });
  });

  it('bad changes and options are refused before anything is sent', async () => {
    const bad: [unknown, unknown, unknown][] = [
      [{ src: '10.30.0.1' }, {}, {}],
      [{ src: '10.30.0.1' }, { mark: -1 }, {}],
      [{ src: '10.30.0.1' }, { timeout: 0 }, {}],
      [{ src: '10.30.0.1' }, { status: ['SRC_NAT'] }, {}],
      [{ src: '10.30.0.1' }, { status: ['CONFIRMED'] }, {}],
      [{ src: '10.30.0.1' }, { protocol: 'udp', mark: 1 }, {}],
      [{ src: '10.30.0.1' }, { labels: [], labelsAdd: [1] }, {}],
      [{ src: '10.30.0.1' }, { labelsAdd: ['no-such-label'] }, {}],
      [{ src: '10.30.0.1' }, { mark: 1 }, { direction: 'reply' }],
      [{ src: '10.30.0.1' }, { mark: 1 }, { entries: 'yes' }],
      [{ src: 'localhost' }, { mark: 1 }, {}],
      [undefined, { mark: 1 }, {}],
      [{ src: '10.30.0.1' }, null, {}],
    ];
    for (const [filter, changes, options] of bad) {
      const err = await fx.ct.updateWhere(filter as never, changes as never, options as never).then(() => undefined, (x: unknown) => x);
      expect(err, JSON.stringify([filter, changes, options])).toBeInstanceOf(ConntrackError);
      expect((err as ConntrackError).code).toBe('ERR_INVALID_ARG');
    }
    expect(await fx.ct.count({ mark: 1 })).toBe(250);
  });

  it('an abort rejects with ECANCELED; entries flushed meanwhile end as alreadyGone, and the totals add up', async () => {
    const ac = new AbortController();
    ac.abort();
    await expect(fx.ct.updateWhere({ src: '10.30.0.0/16' }, { mark: 3 }, { signal: ac.signal })).rejects.toMatchObject({ code: 'ECANCELED' });
    const flusher = spawn('ip', ['netns', 'exec', fx.ns.name, 'conntrack', '-F'], { stdio: 'ignore' });
    const flushed = new Promise((res) => flusher.on('exit', res));
    const r = await fx.ct.updateWhere({ family: 'ipv4' }, { timeout: 1000 }, { all: true });
    await flushed;
    expect(r.failed).toEqual([]);
    expect(r.updated + r.alreadyGone).toBe(r.matched);
  });

  it('ctmon update prints what conntrack -U prints for twin entries, and its count; --dry-run; --yes', async () => {
    fx.ns.restore([
      '-I -p tcp -s 10.31.0.1 -d 10.31.9.9 --sport 1 --dport 80 --state ESTABLISHED -t 300 -m 1',
      '-I -p tcp -s 10.31.1.1 -d 10.31.9.9 --sport 1 --dport 80 --state ESTABLISHED -t 300 -m 1',
      '-I -p udp -s 10.31.0.2 -d 10.31.9.9 --sport 1 --dport 53 -t 300 -m 2',
      '-I -p udp -s 10.31.1.2 -d 10.31.9.9 --sport 1 --dport 53 -t 300 -m 2',
    ]);
    const twin = (l: string): string => l.replace(/^(\S+\s+\d+\s+)\d+/, '$1T').replace(/10\.31\.[01]\./g, '10.31.X.');
    for (const change of [['-m', '9'], ['-u', 'ASSURED', '-m', '0x10/0xf0'], ['-t', '120'], ['-u', 'SEEN_REPLY']]) {
      const ours = ctmon(['update', '--netns', fx.ns.name, '-s', '10.31.0.0/24', ...change]);
      const theirs = fx.ns.conntrackStatus('-U', '-s', '10.31.1.0/24', ...change);
      expect(ours.status, ours.stderr).toBe(0);
      const n = /(\d+) flow entries have been updated/.exec(theirs.stderr)![1];
      // Each updated entry as conntrack -L now shows it. conntrack 1.4.7 prints only the last one it
      // updated, read back by a get (which holds one more reference: use=2).
      const printed = ours.stdout.split('\n').filter(Boolean).map(twin).sort();
      expect(printed).toHaveLength(Number(n));
      expect(fx.ns.list('-s', '10.31.0.0/24').map(twin)).toEqual(expect.arrayContaining(printed));
      const last = theirs.stdout.split('\n').filter(Boolean);
      expect(last).toHaveLength(1);
      expect(printed).toContain(twin(last[0]!).replace(' use=2', ' use=1'));
      expect(ours.stderr).toMatch(new RegExp(`^ctmon: ${n} flow entries have been updated \\(matched 2, unchanged ${2 - Number(n)}, already gone 0, failed 0\\)\\n$`));
      expect(fx.ns.list('-s', '10.31.0.0/24').map(twin)).toEqual(fx.ns.list('-s', '10.31.1.0/24').map(twin));
    }
    const dry = ctmon(['update', '--netns', fx.ns.name, '-s', '10.31.0.0/24', '-m', '77', '--dry-run']);
    expect([dry.status, dry.stdout, dry.stderr]).toEqual([0, '', 'ctmon: 2 flow entries match; nothing was updated (dry run)\n']);
    const json = JSON.parse(ctmon(['update', '--netns', fx.ns.name, '-s', '10.31.0.1', '-m', '78', '--json']).stdout) as { updated: number; entries: { mark: number }[] };
    expect(json).toMatchObject({ matched: 1, updated: 1, alreadyGone: 0, failed: [], entries: [{ mark: 78 }] });
    for (const args of [['-m', '5'], ['-s', '0.0.0.0/0', '-m', '5'], ['--orig-src', '::/0', '-t', '60']]) {
      const r = ctmon(['update', '--netns', fx.ns.name, ...args]);
      expect(r.status).toBe(64);
      expect(r.stderr).toMatch(/^ctmon: this filter selects every entry of (the table|an address family), \d+ now: add --yes to update them all \(see ctmon --help\)\n$/);
    }
    expect(await fx.ct.count({ mark: 5 })).toBe(250);
    expect(ctmon(['update', '--netns', fx.ns.name, '-s', '::/0', '-m', '5', '--yes', '-o', 'ndjson']).stdout.split('\n').filter(Boolean)).toHaveLength(1000);
    expect(ctmon(['update', '--netns', fx.ns.name, '-s', '10.31.0.1'])).toMatchObject({ status: 64, stderr: expect.stringContaining('update needs a change') });
    expect(ctmon(['update', '--netns', fx.ns.name, '--orig-src', 'localhost', '-m', '1'])).toMatchObject({ status: 64, stderr: "ctmon: --orig-src: 'localhost' is not an IPv4 or IPv6 address (see ctmon --help)\n" });
    expect(ctmon(['update', '--netns', fx.ns.name, '-s', '10.31.0.1', '-t', '0'])).toMatchObject({ status: 64, stderr: 'ctmon: -t must be an integer from 1 to 4294967295, got 0 (see ctmon --help)\n' });
    expect(ctmon(['update', '--netns', fx.ns.name, '-s', '10.31.0.1', '-u', 'SRC_NAT'])).toMatchObject({ status: 64 });
  });
});
