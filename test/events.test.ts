import { spawnSync, type ChildProcess } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';
import { Conntrack, ConntrackError, type ConntrackEvent, type ConntrackEventStream, type EntryEvent } from '../src/index.js';
import { describePrivileged, itNeeds, Netns, parseCliLine, waitFor, useNamespace } from './helpers/netns.js';
import { threads } from './helpers/resources.js';

/** `conntrack -E -o id` running in the namespace, collecting its lines. */
class CliEvents {
  readonly lines: string[] = [];
  private readonly proc: ChildProcess;
  private buffered = '';

  constructor(ns: Netns, args: string[] = []) {
    this.proc = ns.spawn('conntrack', ['-E', '-o', 'id', ...args]);
    this.proc.stdout!.setEncoding('utf8');
    this.proc.stdout!.on('data', (chunk: string) => {
      this.buffered += chunk;
      const parts = this.buffered.split('\n');
      this.buffered = parts.pop()!;
      this.lines.push(...parts.filter(Boolean));
    });
  }

  stop(): void {
    this.proc.kill();
  }
}

interface Seen {
  type: string;
  protocol: string;
  src: string;
  dst: string;
  id: string;
}

function fromCli(line: string): Seen {
  const m = /^\s*\[(NEW|UPDATE|DESTROY)\]\s+(.*)$/.exec(line)!;
  const e = parseCliLine(m[2]!);
  return { type: m[1]!.toLowerCase(), protocol: e.protocol, src: e.original.src!, dst: e.original.dst!, id: e.fields.id! };
}

function fromOurs(ev: EntryEvent): Seen {
  return { type: ev.type, protocol: String(ev.entry.protocol), src: ev.entry.original.src, dst: ev.entry.original.dst, id: String(ev.entry.id) };
}

const MARKER = { protocol: 'udp' as const, original: { src: '203.0.113.1', dst: '203.0.113.2', sport: 9, dport: 9 }, timeout: 30 };

/** Waits until the CLI listener demonstrably receives events (it has no readiness signal). */
async function syncCli(ct: Conntrack, cli: CliEvents): Promise<void> {
  await waitFor(async () => {
    await ct.create(MARKER).catch(() => undefined);
    await ct.delete({ protocol: 'udp', original: MARKER.original });
    return cli.lines.some((l) => l.includes('203.0.113.1')) ? true : undefined;
  }, 10_000, 'conntrack -E to subscribe');
}

async function collect(stream: ConntrackEventStream, until: (events: ConntrackEvent[]) => boolean, timeoutMs = 10_000): Promise<ConntrackEvent[]> {
  const events: ConntrackEvent[] = [];
  const timer = setTimeout(() => stream.close(), timeoutMs);
  try {
    for await (const ev of stream) {
      events.push(ev);
      if (until(events)) break;
    }
  } finally {
    clearTimeout(timer);
  }
  return events;
}

function openFds(): number {
  return readdirSync('/proc/self/fd').length;
}

describePrivileged('ct.events() (real kernel, one namespace per test)', () => {
  const fx = useNamespace();

  it('real TCP, UDP and ICMP traffic: NEW then DESTROY for the same tuple and id, in the order conntrack -E prints', async () => {
    const cli = new CliEvents(fx.ns);
    try {
      await syncCli(fx.ct, cli);
      const stream = fx.ct.events();
      await stream.ready;
      const cliStart = cli.lines.length;
      fx.ns.tcpConnection('127.0.0.1', 8080);
      fx.ns.udpExchange('::1', 5353);
      fx.ns.ping('127.0.0.1');
      await fx.ct.flush();
      const ours = (await collect(stream, (evs) => evs.filter((e) => e.type === 'destroy').length >= 3)) as EntryEvent[];
      stream.close();
      const theirs = await waitFor(() => {
        // The sync marker's own events may still trickle in: they are not part of the comparison.
        const lines = cli.lines.slice(cliStart).filter((l) => !l.includes('203.0.113.')).map(fromCli);
        return lines.filter((l) => l.type === 'destroy').length >= 3 ? lines : undefined;
      }, 10_000, 'conntrack -E to print the destroy events');
      expect(JSON.stringify(ours.map(fromOurs), null, 1)).toEqual(JSON.stringify(theirs, null, 1));
      for (const proto of ['tcp', 'udp', 'icmp']) {
        const news = ours.filter((e) => e.type === 'new' && e.entry.protocol === proto);
        const destroys = ours.filter((e) => e.type === 'destroy' && e.entry.protocol === proto);
        expect(news, proto).toHaveLength(1);
        expect(destroys, proto).toHaveLength(1);
        expect(destroys[0]!.entry.id).toBe(news[0]!.entry.id);
        expect(destroys[0]!.entry.original).toEqual(news[0]!.entry.original);
        expect(ours.indexOf(news[0]!)).toBeLessThan(ours.indexOf(destroys[0]!));
      }
      expect(ours.some((e) => e.type === 'update')).toBe(true);
    } finally {
      cli.stop();
    }
  });

  itNeeds(['procSys'], 'DESTROY events carry counters and timestamps once switched on', async () => {
    await fx.ct.setAccounting(true);
    await fx.ct.setTimestamps(true);
    const stream = fx.ct.events({ types: ['destroy'] });
    await stream.ready;
    fx.ns.udpExchange('127.0.0.1', 5400);
    await fx.ct.flush();
    const [ev] = (await collect(stream, (e) => e.length >= 1)) as EntryEvent[];
    expect(ev!.type).toBe('destroy');
    expect(ev!.entry.counters).toEqual({ original: { packets: 1, bytes: 32 }, reply: { packets: 1, bytes: 32 } });
    expect(ev!.entry.timestamp!.stop).toBeGreaterThanOrEqual(ev!.entry.timestamp!.start);
    // The flush came from this process: the event names our port, and processOf() finds us.
    expect(ev!.portid).toBeGreaterThan(0);
    expect(await fx.ct.processOf(ev!.portid)).toEqual({ pid: process.pid, name: 'node' });
    expect(await fx.ct.processOf(0xfffffff0)).toBeUndefined();
  });

  it('a source CIDR filter delivers only matching events; types: [destroy] never delivers NEW', async () => {
    const filtered = fx.ct.events({ filter: { src: '10.5.0.0/16' } });
    const destroys = fx.ct.events({ types: ['destroy'] });
    await Promise.all([filtered.ready, destroys.ready]);
    for (let i = 0; i < 20; i++) {
      const src = i % 2 ? `10.5.${i}.1` : `10.6.${i}.1`;
      await fx.ct.create({ protocol: 'tcp', original: { src, dst: '10.9.9.9', sport: 1000 + i, dport: 80 }, timeout: 60 });
    }
    await fx.ct.flush();
    const got = (await collect(filtered, (e) => e.filter((x) => x.type === 'destroy').length >= 10)) as EntryEvent[];
    expect(got.filter((e) => e.type === 'new')).toHaveLength(10);
    expect(got.every((e) => e.entry.original.src.startsWith('10.5.'))).toBe(true);
    const d = (await collect(destroys, (e) => e.length >= 20)) as EntryEvent[];
    expect(d).toHaveLength(20);
    expect(d.every((e) => e.type === 'destroy')).toBe(true);
    expect(filtered.stats().received).toBe(20);
  });

  it('a flood with a sleeping consumer reports overruns whose counts add up exactly', async () => {
    const N = 30000;
    const stream = fx.ct.events({ types: ['new'], bufferBytes: 256 * 1024, queueLimit: 2000 });
    await stream.ready;
    const lines: string[] = [];
    for (let i = 0; i < N; i++) lines.push(`-I -p udp -s 10.7.${i >> 8}.${i & 255} -d 10.8.0.1 --sport 1 --dport 2 -t 300`);
    fx.ns.restore(lines); // blocks the event loop: the consumer is asleep for the whole flood
    let delivered = 0;
    let lost = 0;
    let overruns = 0;
    const timer = setTimeout(() => stream.close(), 20_000);
    for await (const ev of stream) {
      if (ev.type === 'overrun') {
        overruns++;
        lost += ev.lost;
      } else delivered++;
      if (delivered + lost >= N) break;
    }
    clearTimeout(timer);
    expect(overruns).toBeGreaterThan(0);
    expect(lost).toBeGreaterThan(0);
    expect(delivered + lost).toBe(N);
    const s = stream.stats();
    expect(s.delivered).toBe(delivered);
    expect(s.dropped).toBe(lost);
    expect(s.overruns).toBe(overruns);
    expect(s.received + (s.dropped - (s.received - s.delivered - s.queued))).toBe(N);
    expect(delivered).toBeLessThanOrEqual(2000 + 1024); // the queue limit held while the consumer slept
  });

  it("onOverrun: 'throw' rejects with ConntrackError ENOBUFS carrying the count", async () => {
    const stream = fx.ct.events({ types: ['new'], bufferBytes: 64 * 1024, queueLimit: 10, onOverrun: 'throw' });
    await stream.ready;
    const lines: string[] = [];
    for (let i = 0; i < 2000; i++) lines.push(`-I -p udp -s 10.7.${i >> 8}.${i & 255} -d 10.8.0.1 --sport 1 --dport 2 -t 300`);
    fx.ns.restore(lines);
    const err = await collect(stream, () => false).then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(ConntrackError);
    expect((err as ConntrackError).code).toBe('ENOBUFS');
    expect((err as ConntrackError & { lost: number }).lost).toBeGreaterThan(0);
    expect(stream.closed).toBe(true);
  });

  it('close mid-stream, abort and break free the socket and thread: no fd growth over 1000 cycles', async () => {
    const before = { fds: openFds(), threads: threads() };
    for (let i = 0; i < 1000; i++) {
      const mode = i % 3;
      if (mode === 0) {
        const s = fx.ct.events();
        await s.ready;
        s.close();
      } else if (mode === 1) {
        const ac = new AbortController();
        const s = fx.ct.events({ signal: ac.signal });
        await s.ready;
        const pending = s.next();
        ac.abort();
        expect((await pending).done).toBe(true);
      } else {
        const s = fx.ct.events();
        await s.ready;
        await fx.ct.create({ ...MARKER, original: { ...MARKER.original, sport: 1000 + (i % 50000) } });
        for await (const ev of s) {
          expect(ev.type).toBe('new');
          break;
        }
        expect(s.closed).toBe(true);
        await fx.ct.flush();
      }
    }
    // A stopped thread leaves /proc/self/task a moment after it is told: wait for the bounds, with a deadline, then assert them.
    await waitFor(() => (openFds() <= before.fds + 2 && threads() <= before.threads ? true : undefined), 5000, 'fds and threads to return').catch(() => undefined);
    expect(openFds()).toBeLessThanOrEqual(before.fds + 2);
    expect(threads()).toBeLessThanOrEqual(before.threads);
  });

  it('a process with an open stream exits cleanly (exit code 0)', () => {
    const entry = fileURLToPath(new URL('../dist/index.js', import.meta.url));
    const code = `import(${JSON.stringify(entry)}).then(async ({ Conntrack }) => {
      const ct = await Conntrack.open({ netns: ${JSON.stringify(fx.ns.name)} });
      const s = ct.events();
      await s.ready;
      const it = s[Symbol.asyncIterator]();
      const p = it.next();
      await ct.create({ protocol: 'udp', original: { src: '10.0.0.1', dst: '10.0.0.2', sport: 1, dport: 2 }, timeout: 30 });
      await p;
      process.stdout.write('got event');
    })`;
    const r = spawnSync(process.execPath, ['-e', code], { encoding: 'utf8', timeout: 10_000 });
    expect(r.stdout).toBe('got event');
    expect(r.status).toBe(0);
  });

  it('rejects bad options with ConntrackError', () => {
    expect(() => fx.ct.events({ types: ['bogus' as never] })).toThrow(ConntrackError);
    expect(() => fx.ct.events({ types: [] })).toThrow(ConntrackError);
    expect(() => fx.ct.events({ queueLimit: 0 })).toThrow(ConntrackError);
    expect(() => fx.ct.events({ bufferBytes: -1 })).toThrow(ConntrackError);
    expect(() => fx.ct.events({ filter: { src: '10.0.0.0/40' } })).toThrow(ConntrackError);
    expect(() => fx.ct.events({ onOverrun: 'explode' as never })).toThrow(ConntrackError);
  });
});
