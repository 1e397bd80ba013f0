/**
 * The expectation table on a real kernel: the ftp helper assigned by an
 * nftables `ct helper` rule, a small FTP-like exchange on loopback (a USER
 * line, then PORT), and the expectation the kernel's helper creates, next to
 * `conntrack -L expect` and `conntrack -E expect` in the same namespace.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { afterEach, beforeEach, expect, it } from 'vitest';
import { expectationLine } from '../src/cli/format.js';
import type { Entry, Expectation } from '../src/index.js';
import { CTMON, collectLines } from './helpers/cli.js';
import { ftpExchange, ftpHelper } from './helpers/ftp.js';
import { describePrivileged, useNamespace, waitFor } from './helpers/netns.js';

/** Lines without their leading timeout (which ticks between two reads). */
const untimed = (lines: string[]): string[] => lines.map((l) => l.replace(/^(\s*(?:\[\w+\]\s+)?)\d+ /, '$1T ')).sort();

describePrivileged('the expectation table against conntrack -L/-E expect', () => {
  const fx = useNamespace('each', 'ctexpect');
  let ftp: ChildProcess[] = [];
  beforeEach(() => ftpHelper(fx.ns));
  afterEach(() => {
    for (const p of ftp) p.kill('SIGKILL');
    ftp = [];
  });
  const cliExpect = (...args: string[]): string[] => fx.ns.conntrack('-L', 'expect', ...args).split('\n').filter(Boolean);

  it('lists and gets what the kernel\'s ftp helper expects, printed as conntrack prints it', async () => {
    ftp.push(await ftpExchange(fx.ns, 51210));
    const list = await waitFor(async () => {
      const l = await fx.ct.expectations.list();
      return l.length ? l : undefined;
    }, 5000, 'the expectation');
    expect(list).toHaveLength(1);
    const x = list[0]!;
    expect(x).toMatchObject({
      family: 'ipv4', protocol: 'tcp', helper: 'ftp', class: 0, zone: 0, flags: [], masterProtocol: 'tcp',
      tuple: { src: expect.stringMatching(/^127\.0\.0\.\d+$/), dst: '127.0.0.1', sport: 0, dport: 51210 },
      mask: { src: '255.255.255.255', dst: '255.255.255.255', sport: 0, dport: 65535 },
      master: { src: '127.0.0.1', dst: expect.stringMatching(/^127\.0\.0\.\d+$/), dport: 21 },
    });
    expect(x.timeout).toBeGreaterThan(250);
    expect(untimed(list.map((e) => expectationLine(e)))).toEqual(untimed(cliExpect()));
    // ctmon as an operator types it.
    const r = spawnCtmon(['list', 'expect', '--netns', fx.ns.name]);
    expect(untimed((await r).split('\n').filter(Boolean))).toEqual(untimed(cliExpect()));
    expect(await fx.ct.expectations.get(x)).toMatchObject({ id: x.id, helper: 'ftp' });
    expect(await fx.ct.expectations.get({ protocol: 'tcp', tuple: { ...x.tuple, dport: 1 } })).toBeNull();
    expect(await fx.ct.expectations.list({ family: 'ipv6' })).toEqual([]);
  });

  it('create on a live master, delete one, flush the rest; conntrack -L expect agrees at each step', async () => {
    ftp.push(await ftpExchange(fx.ns, 51210));
    const master = await waitFor(async () => (await fx.ct.list({ protocol: 'tcp', dport: 21 }))[0], 5000, 'the master entry');
    await fx.ct.expectations.create({
      master, protocol: 'tcp', tuple: { src: '127.0.0.1', dst: '127.0.0.1', sport: 0, dport: 40000 },
      mask: { src: '255.255.255.255', dst: '255.255.255.255', sport: 0, dport: 65535 }, timeout: 120,
    });
    const after = await fx.ct.expectations.list();
    // The ftp helper allows one expectation per master (max_expected 1): the new one replaced the helper's.
    expect(after.map((e) => e.tuple.dport)).toEqual([40000]);
    expect(untimed(after.map((e) => expectationLine(e)))).toEqual(untimed(cliExpect()));
    ftp.push(await ftpExchange(fx.ns, 51211)); // a second master with its own expectation
    await waitFor(() => (cliExpect().length === 2 ? true : undefined), 5000, 'the second expectation');
    await expect(fx.ct.expectations.create({ master, protocol: 'tcp', tuple: { src: '127.0.0.1', dst: '127.0.0.1', sport: 0, dport: 40000 }, timeout: 120 }))
      .rejects.toMatchObject({ code: 'EEXIST' });
    const gone: Entry = { ...master, original: { ...master.original, sport: 1 } };
    await expect(fx.ct.expectations.create({ master: gone, protocol: 'tcp', tuple: { src: '127.0.0.1', dst: '127.0.0.1', sport: 0, dport: 40001 }, timeout: 120 }))
      .rejects.toMatchObject({ code: 'ENOENT', message: expect.stringContaining('master') });

    const created = after.find((e) => e.tuple.dport === 40000)!;
    expect(await fx.ct.expectations.delete(created)).toBe(true);
    expect(await fx.ct.expectations.delete(created)).toBe(false);
    expect(cliExpect().join('\n')).not.toContain('dport=40000');
    expect(cliExpect().join('\n')).toContain('dport=51211');
    await fx.ct.expectations.flush();
    expect(cliExpect()).toEqual([]);
    expect(await fx.ct.expectations.list()).toEqual([]);
  });

  it('expectation events as conntrack -E expect prints them, from ctmon watch expect and expectationEvents()', async () => {
    // The kernel reports a master's expectations only if someone listened when the master was
    // created (its event extension): subscribe first, then make the master.
    const api = fx.ct.expectationEvents();
    const seen: Expectation[] = [];
    const reading = (async () => {
      for await (const ev of api) if (ev.type !== 'overrun') seen.push(ev.expectation);
    })();
    await api.ready;
    const cli = collectLines('ip', ['netns', 'exec', fx.ns.name, 'conntrack', '-E', 'expect']);
    const ours = collectLines(process.execPath, [CTMON, 'watch', 'expect', '--netns', fx.ns.name]);
    try {
      ftp.push(await ftpExchange(fx.ns, 51210));
      const master = await waitFor(async () => (await fx.ct.list({ protocol: 'tcp', dport: 21 }))[0], 5000, 'the master entry');
      // Neither listener says when it is subscribed: create and delete a probe until both print it.
      const probe = { master, protocol: 'tcp' as const, tuple: { src: '127.0.0.1', dst: '127.0.0.1', sport: 0, dport: 1 }, timeout: 60 };
      await waitFor(async () => {
        await fx.ct.expectations.create(probe).catch(() => undefined);
        await fx.ct.expectations.delete({ protocol: 'tcp', tuple: probe.tuple });
        const ok = (l: string[]): boolean => l.some((x) => x.includes('[DESTROY]') && x.includes('dport=1 '));
        return ok(cli.lines) && ok(ours.lines) ? true : undefined;
      }, 10_000, 'both listeners to subscribe');
      const start = { cli: cli.lines.length, ours: ours.lines.length, api: seen.length };
      ftp.push(await ftpExchange(fx.ns, 52000)); // a second master: its PORT makes a new expectation
      await fx.ct.expectations.flush(); // and every expectation ends
      // Probe lines still in flight when the loop ended are not part of what is compared.
      const noProbe = (l: string[]): string[] => l.filter((x) => !x.includes(' dport=1 mask'));
      const done = (l: string[]): string[] | undefined => (l.filter((x) => x.includes('[DESTROY]')).length >= 2 && l.some((x) => x.includes('[NEW]')) ? l : undefined);
      const theirs = await waitFor(() => done(noProbe(cli.lines.slice(start.cli))), 10_000, 'conntrack -E expect');
      const mine = await waitFor(() => done(noProbe(ours.lines.slice(start.ours))), 10_000, 'ctmon watch expect');
      expect(untimed(mine)).toEqual(untimed(theirs));
      expect(mine.join('\n')).toContain('dport=52000');
      const apiLines = (): string[] => noProbe(seen.slice(start.api).map((x) => expectationLine(x)));
      await waitFor(() => (apiLines().length >= theirs.length ? true : undefined), 5000, 'expectationEvents()');
      expect(untimed(apiLines())).toEqual(untimed(theirs.map((l) => l.replace(/^\s*\[\w+\]\s+/, ''))));
    } finally {
      cli.kill();
      ours.kill();
      api.close();
      await reading;
    }
  });

  it('arguments are checked before anything reaches the kernel', async () => {
    expect(() => fx.ct.expectationEvents({ types: ['new' as never] })).toThrow(/expect-new/);
    expect(() => fx.ct.expectationEvents({ filter: { src: '10.0.0.1' } } as never)).toThrow(/filter applies to entries/);
    expect(() => fx.ct.events({ types: ['expect-new' as never] })).toThrow(/come from ct.expectationEvents/);
    await expect(fx.ct.expectations.create({ master: { protocol: 'tcp', original: { src: '10.0.0.1', dst: '10.0.0.2', sport: 1, dport: 21 } }, protocol: 'tcp', tuple: { src: '::1', dst: '::1', sport: 0, dport: 1 }, timeout: 5 }))
      .rejects.toMatchObject({ code: 'ERR_INVALID_ARG', message: expect.stringContaining('same family') });
    await expect(fx.ct.expectations.get({ protocol: 'tcp', tuple: { src: 'x', dst: '10.0.0.1', sport: 1, dport: 2 } })).rejects.toMatchObject({ code: 'ERR_INVALID_ARG' });
  });
});


async function spawnCtmon(args: string[]): Promise<string> {
  const p = spawn(process.execPath, [CTMON, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  p.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  const code = await new Promise<number | null>((r) => p.on('exit', r));
  expect(code).toBe(0);
  return out;
}
