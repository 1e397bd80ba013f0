import { spawn, spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { expect, it } from 'vitest';
import type { Conntrack } from '../src/index.js';
import { collectLines, ctmon, CTMON, Tmux } from './helpers/cli.js';
import { describePrivileged, itNeeds, Netns, waitFor, useNamespace } from './helpers/netns.js';

function namespaces(prefix: string): string[] {
  try {
    return readdirSync('/run/netns').filter((n) => n.startsWith(prefix));
  } catch {
    return [];
  }
}

/** Runs a listener and collects its stdout lines as they arrive. */

/**
 * Neither conntrack -E nor ctmon watch says when it is subscribed: create and
 * remove a marker entry until both have printed its DESTROY.
 */
async function untilBothSubscribed(ct: Conntrack, ...listeners: { lines: string[] }[]): Promise<void> {
  const original = { src: '203.0.113.1', dst: '203.0.113.2', sport: 9, dport: 9 };
  await waitFor(async () => {
    await ct.create({ protocol: 'udp', original, timeout: 30 }).catch(() => undefined);
    await ct.delete({ protocol: 'udp', original });
    const seen = (l: string[]): boolean => l.some((x) => x.includes('203.0.113.1') && x.includes('DESTROY'));
    return listeners.every((x) => seen(x.lines)) ? true : undefined;
  }, 10_000, 'both listeners to subscribe');
}

/**
 * conntrack -E beside `ctmon watch -o conntrack` in one namespace, both
 * subscribed; theirs() and mine() are the lines each printed since then.
 */
async function besideConntrackE(ns: Netns, ct: Conntrack): Promise<{ theirs: () => string[]; mine: () => string[]; kill: () => void }> {
  const cli = collectLines('ip', ['netns', 'exec', ns.name, 'conntrack', '-E']);
  const ours = collectLines(process.execPath, [CTMON, 'watch', '--netns', ns.name, '-o', 'conntrack']);
  const kill = (): void => {
    cli.kill();
    ours.kill();
  };
  try {
    await untilBothSubscribed(ct, cli, ours);
  } catch (e) {
    kill();
    throw e;
  }
  const start = { cli: cli.lines.length, ours: ours.lines.length };
  return { theirs: () => cli.lines.slice(start.cli), mine: () => ours.lines.slice(start.ours), kill };
}

describePrivileged('ctmon (real kernel, one namespace per test)', () => {
  const fx = useNamespace();

  /**
   * ctmon's lines must equal the CLI's character for character, except the
   * timeout (third field), which may tick by a second between the two reads.
   */
  function expectSameAsCli(ours: string[], theirs: string[]): void {
    const split = (l: string): { rest: string; timeout: number } => {
      const f = l.split(' ').filter(Boolean);
      const timeout = Number(f[2]);
      return { rest: l.replace(/^(\S+\s+\S+\s+)\d+ /, '$1T '), timeout };
    };
    const r = ctmon(ours);
    const cli = fx.ns.conntrack(...theirs).split('\n').filter(Boolean).map(split).sort((a, b) => a.rest.localeCompare(b.rest));
    expect(r.status).toBe(0);
    const mine = r.stdout.split('\n').filter(Boolean).map(split).sort((a, b) => a.rest.localeCompare(b.rest));
    expect(mine.map((m) => m.rest)).toEqual(cli.map((c) => c.rest));
    mine.forEach((m, i) => expect(Math.abs(m.timeout - cli[i]!.timeout), m.rest).toBeLessThanOrEqual(1));
    expect(cli.length).toBeGreaterThan(0);
  }

  itNeeds(['procSys'], 'list -o conntrack prints exactly what conntrack -L prints, tcp/udp/icmp, IPv4 and IPv6', async () => {
    await fx.ct.setAccounting(true);
    fx.ns.mixedTraffic();
    await fx.ct.create({ protocol: 'tcp', original: { src: '10.0.0.1', dst: '10.0.0.2', sport: 1, dport: 2 }, timeout: 500, mark: 5, zone: 3, state: 'ESTABLISHED', status: ['ASSURED', 'SEEN_REPLY'] });
    await fx.ct.create({ protocol: 'sctp', original: { src: '2001:db8::1', dst: '2001:db8::2', sport: 7, dport: 9 }, timeout: 500, state: 'ESTABLISHED' });
    expectSameAsCli(['list', '--netns', fx.ns.name, '-o', 'conntrack'], ['-L']);
    expectSameAsCli(['list', '--netns', fx.ns.name, '-o', 'conntrack', '--id'], ['-L', '-o', 'id']);
    expectSameAsCli(['list', '--netns', fx.ns.name, '-o', 'conntrack', '-p', 'udp', '-f', 'ipv6'], ['-L', '-p', 'udp', '-f', 'ipv6']);
  });

  it('list -o json, ndjson and table; a closed pipe exits quietly', async () => {
    const lines: string[] = [];
    for (let i = 0; i < 5000; i++) lines.push(`-I -p udp -s 10.1.${i >> 8}.${i & 255} -d 10.2.0.1 --sport 1 --dport 53 -t 300`);
    fx.ns.restore(lines);
    const json = JSON.parse(ctmon(['list', '--netns', fx.ns.name, '-o', 'json']).stdout);
    expect(json).toHaveLength(5000);
    expect(json[0]).toMatchObject({ family: 'ipv4', protocol: 'udp' });
    const nd = ctmon(['list', '--netns', fx.ns.name, '-o', 'ndjson', '-s', '10.1.0.0/24']).stdout.trim().split('\n');
    expect(nd).toHaveLength(256);
    expect(nd.every((l) => JSON.parse(l).original.src.startsWith('10.1.0.'))).toBe(true);
    const table = ctmon(['list', '--netns', fx.ns.name, '-s', '10.1.0.7']);
    expect(table.stdout).toMatch(/^PROTO\s+SOURCE\s+DESTINATION/);
    expect(table.stdout).toContain('10.1.0.7:1');
    const piped = spawnSync('sh', ['-c', `${process.execPath} ${CTMON} list --netns ${fx.ns.name} -o conntrack | head -n 1`], { encoding: 'utf8' });
    expect(piped.status).toBe(0);
    expect(piped.stdout.trim().split('\n')).toHaveLength(1);
    expect(piped.stderr).not.toMatch(/Error|EPIPE|at /);
  });

  it('stats, delete and flush', async () => {
    for (let i = 0; i < 40; i++) await fx.ct.create({ protocol: 'udp', original: { src: i < 30 ? '10.9.9.9' : `10.8.0.${i}`, dst: '10.0.0.1', sport: 1000 + i, dport: 53 }, timeout: 300 });
    const stats = JSON.parse(ctmon(['stats', '--netns', fx.ns.name, '--json']).stdout);
    expect(stats).toMatchObject({ count: 40, max: expect.any(Number), buckets: expect.any(Number) });
    expect(stats.timeouts.tcp_timeout_established).toBe(432000);
    expect(ctmon(['stats', '--netns', fx.ns.name]).stdout).toMatch(/entries\s+40 of \d+/);
    const dry = ctmon(['delete', '--netns', fx.ns.name, '--src', '10.9.9.9', '--dry-run']);
    expect(dry.stdout).toBe('would delete 30, deleted 0, already gone 0, failed 0\n');
    const del = ctmon(['delete', '--netns', fx.ns.name, '--src', '10.9.9.9']);
    expect(del.stdout).toBe('matched 30, deleted 30, already gone 0, failed 0\n');
    expect(fx.ns.list()).toHaveLength(10);
    expect(ctmon(['delete', '--netns', fx.ns.name]).status).toBe(64);
    const flush = ctmon(['flush', '--netns', fx.ns.name, '--yes']);
    expect(flush.stdout).toBe('flushed 10 entries; 0 left\n');
    expect(fx.ns.list()).toEqual([]);
  });

  itNeeds(['procSys'], 'doctor: a healthy namespace exits 0', async () => {
    fx.ns.exec('sysctl', ['-qw', 'net.netfilter.nf_conntrack_tcp_timeout_established=3600']);
    fx.ns.tcpConnection('127.0.0.1', 8080);
    const r = ctmon(['doctor', '--netns', fx.ns.name]);
    expect(r.stdout).toContain('HEALTHY');
    expect(r.status).toBe(0);
  });

  it('watch shows events under a terminal and exits cleanly on Ctrl-C', async () => {
    const t = new Tmux(`${process.execPath} ${CTMON} watch --netns ${fx.ns.name} -o conntrack`);
    try {
      await waitFor(() => (t.capture().includes('watching') ? true : undefined), 10_000, 'watch to start');
      await fx.ct.create({ protocol: 'udp', original: { src: '10.4.4.4', dst: '10.5.5.5', sport: 11, dport: 22 }, timeout: 60 });
      await fx.ct.flush();
      await waitFor(() => (t.capture().includes('[DESTROY] udp      17') ? true : undefined), 10_000, 'events on screen');
      expect(t.capture()).toContain('[NEW] udp      17 60 src=10.4.4.4 dst=10.5.5.5 sport=11 dport=22 [UNREPLIED]');
      t.keys('C-c');
      const screen = await waitFor(() => { const s = t.capture(); return s.includes('EXIT:') ? s : undefined; }, 10_000, 'watch to exit');
      expect(screen).toContain('EXIT:0');
      expect(screen).toMatch(/2 events shown, 0 lost/);
    } finally {
      t.kill();
    }
  });

  it('watch -o conntrack prints exactly what conntrack -E prints for real traffic', async () => {
    const w = await besideConntrackE(fx.ns, fx.ct);
    try {
      fx.ns.ping('127.0.0.1');
      fx.ns.tcpConnection('127.0.0.1', 8080);
      fx.ns.udpExchange('::1', 5353);
      await fx.ct.flush();
      const strip = (l: string[]): string[] => l.filter((x) => !x.includes('203.0.113.'));
      const theirs = await waitFor(() => {
        const l = strip(w.theirs());
        return l.filter((x) => x.startsWith('[DESTROY]')).length >= 3 ? l : undefined;
      }, 10_000, 'conntrack -E to print the flush');
      const mine = await waitFor(() => {
        const l = strip(w.mine());
        return l.length >= theirs.length ? l : undefined;
      }, 10_000, 'ctmon watch to print as many lines');
      expect(mine).toEqual(theirs);
      expect(theirs.some((l) => l.includes('[USERSPACE] portid='))).toBe(true);
    } finally {
      w.kill();
    }
  });

  it('watch -o conntrack names short-lived requesters (progname=) on every line, as conntrack -E does', async () => {
    const w = await besideConntrackE(fx.ns, fx.ct);
    try {
      // Each conntrack process exits right after its request: the name must be taken while it lives.
      for (let i = 0; i < 8; i++) fx.ns.conntrack('-I', '-p', 'udp', '-s', '198.51.100.1', '-d', '198.51.100.2', '--sport', String(100 + i), '--dport', '53', '-t', '60');
      for (let i = 0; i < 4; i++) fx.ns.conntrack('-D', '-p', 'udp', '-s', '198.51.100.1', '--sport', String(100 + i));
      fx.ns.conntrack('-F');
      const wanted = 8 + 4 + 4;
      const theirs = await waitFor(() => {
        const l = w.theirs().filter((x) => x.includes('198.51.100.'));
        return l.length >= wanted ? l : undefined;
      }, 10_000, 'conntrack -E to print every event');
      const mine = await waitFor(() => {
        const l = w.mine().filter((x) => x.includes('198.51.100.'));
        return l.length >= wanted ? l : undefined;
      }, 10_000, 'ctmon watch to print every event');
      // Both race the requester's exit (conntrack -E prints no progname= on
      // some lines): the lines agree but for the name, names agree where both
      // found one, and we find at least as many.
      const bare = (l: string): string => l.replace(/ progname=\S+$/, '');
      expect(mine.map(bare)).toEqual(theirs.map(bare));
      theirs.forEach((l, i) => {
        if (l.includes('progname=') && mine[i]!.includes('progname=')) expect(mine[i]).toBe(l);
      });
      const named = mine.filter((l) => /\[USERSPACE\] portid=\d+ progname=conntrack$/.test(l)).length;
      console.log(`progname= on ${named} of ${mine.length} lines (conntrack -E: ${theirs.filter((l) => l.includes('progname=')).length})`);
      // How many names win the race with the requester's exit depends on the machine's load (a loaded CI
      // machine found 1 of 16, the ASan build under load 0 of 16): that is a figure for a benchmark; the
      // test asks that names are found at all, so further requesters run until one is named.
      let sport = 1000;
      const isNamed = (l: string): boolean => /\[USERSPACE\] portid=\d+ progname=conntrack$/.test(l);
      await waitFor(() => {
        if (w.mine().some(isNamed)) return true;
        fx.ns.conntrack('-I', '-p', 'udp', '-s', '198.51.100.1', '-d', '198.51.100.2', '--sport', String(sport++), '--dport', '53', '-t', '60');
        return undefined;
      }, 30_000, 'a requester named by progname='); // fails the test when none ever is
    } finally {
      w.kill();
    }
  });

  it('top shows the numbers and quits on q, restoring the terminal', async () => {
    for (let i = 0; i < 50; i++) await fx.ct.create({ protocol: 'tcp', original: { src: '10.9.9.9', dst: '10.0.0.1', sport: 1000 + i, dport: 443 }, timeout: 300 });
    const t = new Tmux(`${process.execPath} ${CTMON} top --netns ${fx.ns.name}`);
    try {
      const screen = await waitFor(() => { const s = t.capture(); return /10\.9\.9\.9\s+50\s+100\.0%/.test(s) ? s : undefined; }, 10_000, 'top to render');
      expect(screen).toMatch(/table\s+\[.*\] 50 \/ \d+/);
      expect(screen).toMatch(/10\.0\.0\.1:443\/tcp\s+50/);
      expect(screen).toContain('NONE 50');
      expect(t.alternateOn()).toBe(true);
      t.keys('q');
      const after = await waitFor(() => { const s = t.capture(); return s.includes('EXIT:') ? s : undefined; }, 10_000, 'top to quit');
      expect(after).toContain('EXIT:0');
      expect(t.alternateOn()).toBe(false);
    } finally {
      t.kill();
    }
  });

  it('top into a pipe: no escape codes unless FORCE_COLOR, and columns that never run into each other', async () => {
    const long = '2001:db8:aaaa:bbbb:cccc:dddd:eeee:1';
    for (let i = 0; i < 30; i++) await fx.ct.create({ protocol: 'tcp', original: { src: long, dst: '2001:db8::2', sport: 1000 + i, dport: 443 }, timeout: 300 });
    for (let i = 0; i < 3; i++) await fx.ct.create({ protocol: 'udp', original: { src: '10.0.0.9', dst: '10.0.0.1', sport: 1000 + i, dport: 5353 }, timeout: 300 });
    const plain = ctmon(['top', '--netns', fx.ns.name, '--iterations', '1'], { env: { FORCE_COLOR: undefined, NO_COLOR: undefined } });
    expect(plain.status, plain.stderr).toBe(0);
    expect(plain.stdout).not.toContain('\x1b');
    // Every cell stands apart: source, count, share, then the port column.
    expect(plain.stdout).toMatch(new RegExp(`^${long.replace(/\./g, '\\.')}\\s+30\\s+90\\.9%\\s{4,}\\[2001:db8::2\\]:443/tcp\\s+30\\s+90\\.9%$`, 'm'));
    expect(plain.stdout).toMatch(/^10\.0\.0\.9\s+3\s+9\.1%\s{4,}10\.0\.0\.1:5353\/udp\s+3\s+9\.1%$/m);
    expect(plain.stdout).toMatch(/^states\s+NONE 30\s+UDP 3$/m);
    expect(plain.stdout).toMatch(/^proto\s+tcp 30\s+udp 3$/m);
    expect(plain.stdout).not.toContain('q to quit');
    expect(ctmon(['top', '--netns', fx.ns.name, '--iterations', '0'])).toMatchObject({ status: 64, stderr: expect.stringMatching(/--iterations must be a whole number/) });
    const forced = ctmon(['top', '--netns', fx.ns.name, '--iterations', '1'], { env: { FORCE_COLOR: '1' } });
    expect(forced.stdout).toContain('\x1b[32m');
    const none = ctmon(['top', '--netns', fx.ns.name, '--iterations', '1'], { env: { FORCE_COLOR: '0', NO_COLOR: '1' } });
    expect(none.stdout).not.toContain('\x1b');
  });

  it('watch -o json is one JSON array, closed when watch stops; the table has its FLAGS legend', async () => {
    const p = spawn(process.execPath, [CTMON, 'watch', '--netns', fx.ns.name, '-o', 'json', '-c', '2', '-e', 'new'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stdout.on('data', (d: Buffer) => (out += d));
    p.stderr.on('data', (d: Buffer) => (err += d));
    const exited = new Promise<number | null>((resolve) => p.on('exit', resolve));
    await waitFor(() => (err.includes('watching') ? true : undefined), 10_000, 'watch to subscribe');
    await fx.ct.create({ protocol: 'udp', original: { src: '10.7.0.1', dst: '10.7.0.2', sport: 1, dport: 2 }, timeout: 30 });
    await fx.ct.create({ protocol: 'udp', original: { src: '10.7.0.3', dst: '10.7.0.4', sport: 1, dport: 2 }, timeout: 30 });
    expect(await exited).toBe(0);
    const events = JSON.parse(out) as { type: string; entry: { original: { src: string } } }[];
    expect(events.map((e) => [e.type, e.entry.original.src])).toEqual([['new', '10.7.0.1'], ['new', '10.7.0.3']]);
    const nd = ctmon(['list', '--netns', fx.ns.name, '-o', 'ndjson']).stdout.trim().split('\n').map((l) => JSON.parse(l));
    expect(nd).toHaveLength(2);
    const table = spawn(process.execPath, [CTMON, 'watch', '--netns', fx.ns.name, '-c', '1'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let terr = '';
    table.stderr.on('data', (d: Buffer) => (terr += d));
    const tExit = new Promise<number | null>((resolve) => table.on('exit', resolve));
    await waitFor(() => (terr.includes('watching') ? true : undefined), 10_000, 'watch to subscribe');
    expect(terr).toContain('FLAGS: A assured, U unreplied');
    await fx.ct.flush();
    expect(await tExit).toBe(0);
  });

  it('flush refuses without --yes also when stdin is not a terminal', async () => {
    await fx.ct.create({ protocol: 'udp', original: { src: '10.4.4.4', dst: '10.5.5.5', sport: 11, dport: 22 }, timeout: 60 });
    const r = ctmon(['flush', '--netns', fx.ns.name], { input: '' });
    expect(r.status).toBe(64);
    expect(r.stderr).toMatch(/add --yes to confirm/);
    expect(fx.ns.list()).toHaveLength(1);
    expect(ctmon(['flush', '--netns', fx.ns.name, '-y']).status).toBe(0);
    expect(fx.ns.list()).toHaveLength(0);
  });

  it('demo --netns refuses an existing namespace and leaves it alone', () => {
    const r = ctmon(['demo', '--netns', fx.ns.name]);
    expect(r.status).toBe(64);
    expect(r.stderr).toMatch(new RegExp(`namespace ${fx.ns.name} exists`));
    expect(namespaces(fx.ns.name)).toEqual([fx.ns.name]);
  });

  it('top follows the table between refreshes: new entries show in its sources and its new/s rate', async () => {
    const p = spawn(process.execPath, [CTMON, 'top', '--netns', fx.ns.name, '--interval', '0.5', '--iterations', '6'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    const exited = new Promise<number | null>((r) => p.on('exit', r));
    await waitFor(() => (out.includes('TOP SOURCES') ? true : undefined), 10_000, 'the first frame');
    for (let i = 0; i < 20; i++) await fx.ct.create({ protocol: 'udp', original: { src: '10.5.5.5', dst: '10.0.0.1', sport: 2000 + i, dport: 53 }, timeout: 300 });
    expect(await exited).toBe(0);
    const frames = out.split('ctmon top').slice(1);
    expect(frames[0]).not.toContain('10.5.5.5');
    expect(frames.at(-1)).toMatch(/^10\.5\.5\.5\s+20\s+100\.0%\s{4,}10\.0\.0\.1:53\/udp\s+20\s+100\.0%$/m);
    expect(frames.some((f) => /rates\s+new [1-9]\d*\/s/.test(f))).toBe(true);
  });

  it('top exits cleanly on SIGINT too', async () => {
    const t = new Tmux(`${process.execPath} ${CTMON} top --netns ${fx.ns.name}`);
    try {
      await waitFor(() => (t.capture().includes('TOP SOURCES') ? true : undefined), 10_000, 'top to render');
      t.keys('C-c');
      const after = await waitFor(() => { const s = t.capture(); return s.includes('EXIT:') ? s : undefined; }, 10_000, 'top to quit');
      expect(after).toContain('EXIT:0');
      expect(t.alternateOn()).toBe(false);
    } finally {
      t.kill();
    }
  });

  it('bad input: one line on stderr, usage/permission exit codes, never a stack trace', () => {
    const cases: [string[], number, RegExp][] = [
      [['list', '--bogus'], 64, /unknown option --bogus/],
      [['frobnicate'], 64, /unknown command 'frobnicate'/],
      [['list', '--netns', fx.ns.name, '-s', '10.0.0.300'], 64, /'10.0.0.300' is not an IPv4 or IPv6 address/],
      [['list', '--netns', fx.ns.name, '--dport', '70000'], 64, /dport must be an integer from 0 to 65535/],
      [['list', '--netns', `${fx.ns.name}-missing`], 66, /not found .*ip netns add/],
      [['watch', '--netns', fx.ns.name, '-e', 'explode'], 64, /-e takes new, update, destroy/],
      [['list', '-o', 'yaml', '--netns', fx.ns.name], 64, /-o must be one of/],
    ];
    for (const [args, code, message] of cases) {
      const r = ctmon(args);
      expect(r.status, args.join(' ')).toBe(code);
      expect(r.stderr).toMatch(message);
      expect(r.stderr.trim().split('\n'), r.stderr).toHaveLength(1);
      expect(r.stderr).not.toMatch(/\n\s+at /);
    }
    const notRoot = ctmon(['stats'], { uid: 65534 });
    expect(notRoot.status).toBe(77);
    expect(notRoot.stderr).toMatch(/needs CAP_NET_ADMIN/);
    expect(notRoot.stderr.trim().split('\n')).toHaveLength(1);
  });

  it('flush refuses on a terminal without --yes', async () => {
    await fx.ct.create({ protocol: 'udp', original: { src: '10.4.4.4', dst: '10.5.5.5', sport: 11, dport: 22 }, timeout: 60 });
    const t = new Tmux(`${process.execPath} ${CTMON} flush --netns ${fx.ns.name}`);
    try {
      const screen = await waitFor(() => { const s = t.capture(); return s.includes('EXIT:') ? s : undefined; }, 10_000, 'flush to exit');
      expect(screen).toContain('add --yes to confirm');
      expect(screen).toContain('EXIT:64');
      expect(fx.ns.list()).toHaveLength(1);
    } finally {
      t.kill();
    }
  });
});

describePrivileged('ctmon demo', () => {
  it('runs to the end and leaves no namespace behind', () => {
    const before = namespaces('ctmon-demo-');
    const r = ctmon(['demo']);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/\[NEW\] tcp/);
    expect(r.stdout).toMatch(/\[DESTROY\] /);
    expect(r.stdout).toMatch(/one source holds .* of the table/);
    expect(r.stdout).toMatch(/matched 3000, deleted 3000, already gone 0, failed 0/);
    expect(r.stdout).toMatch(/left: 500 entries, 0 from 198\.51\.100\.7/);
    expect(namespaces('ctmon-demo-')).toEqual(before);
  });

  it('removes its namespace when interrupted', async () => {
    const before = namespaces('ctmon-demo-');
    const t = new Tmux(`${process.execPath} ${CTMON} demo --flood 200000`);
    try {
      await waitFor(() => (t.capture().includes('3. filling') ? true : undefined), 20_000, 'demo to start filling');
      t.keys('C-c');
      const screen = await waitFor(() => { const s = t.capture(); return s.includes('EXIT:') ? s : undefined; }, 20_000, 'demo to exit');
      expect(screen).toContain('EXIT:130');
      expect(screen).toContain('removed');
      expect(namespaces('ctmon-demo-')).toEqual(before);
    } finally {
      t.kill();
    }
  });
});
