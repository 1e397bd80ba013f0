/**
 * ct.flows(): flow records from real traffic through nftables DNAT and SNAT
 * in a namespace, checked against `conntrack -L -o extended` read just
 * before each flow ends; the completeness report; losses; a 250k burst.
 */
import { expect, it } from 'vitest';
import { ConntrackError, type FlowLogRecord, type FlowRecord } from '../src/index.js';
import { describePrivileged, parseCliLine, useNamespace, waitFor, type Netns } from './helpers/netns.js';

/**
 * DNAT 127.0.0.2:8080 → 127.0.0.1:8080 (output hook) and SNAT of what goes
 * to 127.0.0.1:8080 after DNAT → 127.0.0.5 (postrouting): one connection, both NATs.
 */
export function natRules(ns: Netns): void {
  ns.exec('ip', ['addr', 'add', '127.0.0.2/8', 'dev', 'lo']);
  ns.exec('nft', ['-f', '-'], [
    'table ip ctflows {',
    '  chain out { type nat hook output priority -100; ip daddr 127.0.0.2 tcp dport 8080 dnat to 127.0.0.1; }',
    '  chain post { type nat hook postrouting priority 100; ip daddr 127.0.0.1 tcp dport 8080 ct status dnat snat to 127.0.0.5; }',
    '}',
  ].join('\n'));
}

/** A TCP exchange to `address`:8080 (a server on 127.0.0.1:8080), closed both ways; returns the client port. */
export function tcpThrough(ns: Netns, address: string, bytes = 1000): number {
  return Number(ns.node(`
    import net from 'node:net';
    const srv = net.createServer((s) => { let n = 0; s.on('data', (d) => { n += d.length; if (n >= ${bytes}) s.end('y'.repeat(${bytes} * 2)); }); });
    await new Promise((r) => srv.listen(8080, '127.0.0.1', r));
    let port = 0;
    await new Promise((r) => { const c = net.connect(8080, '${address}', () => { port = c.localPort; c.write('x'.repeat(${bytes})); }); c.on('data', () => undefined); c.on('end', () => c.end()); c.on('close', r); });
    srv.close();
    process.stdout.write(String(port));`));
}

/** The `conntrack -L -o extended` line of the TCP flow from `sport`, parsed. */
function cliFlow(ns: Netns, sport: number): ReturnType<typeof parseCliLine> {
  const line = ns.list('-o', 'extended', '-p', 'tcp', '--sport', String(sport))[0];
  expect(line, `conntrack -L shows the flow from port ${sport}`).toBeDefined();
  return parseCliLine(line!);
}

async function take(stream: AsyncIterator<FlowLogRecord>, n: number): Promise<FlowLogRecord[]> {
  const out: FlowLogRecord[] = [];
  while (out.length < n) {
    const r = await stream.next();
    if (r.done) break;
    out.push(r.value);
  }
  return out;
}

describePrivileged('ct.flows() (real kernel, one namespace per test)', () => {
  const fx = useNamespace();

  it('start and end records of real TCP through DNAT and SNAT: NAT fields, counters equal to conntrack -L just before the end, ordered timestamps, plain JSON', async () => {
    natRules(fx.ns);
    await using flows = fx.ct.flows({ types: ['start', 'end'], accounting: true, timestamps: true, filter: { protocol: 'tcp' } });
    const status = await flows.ready;
    expect(status).toMatchObject({ accounting: true, timestamps: true, predating: 0, notices: [] });
    const before = Date.now();
    const natted = tcpThrough(fx.ns, '127.0.0.2');
    const plain = tcpThrough(fx.ns, '127.0.0.1', 10);
    const cli = [cliFlow(fx.ns, natted), cliFlow(fx.ns, plain)];
    await fx.ct.flush();
    const records = await take(flows, 4);
    const after = Date.now();
    expect(records.map((r) => r.event)).toEqual(['start', 'start', 'end', 'end']);
    const [start, , end, plainEnd] = records as FlowRecord[];
    expect(start!.id).toBe(end!.id);
    expect(start!.original).toEqual({ src: '127.0.0.1', dst: '127.0.0.2', sport: natted, dport: 8080 });
    expect(start!.reply).toEqual({ src: '127.0.0.1', dst: '127.0.0.5', sport: 8080, dport: natted });
    // Where the packets really went (DNAT), and the source they left with (SNAT: the port kept).
    const nat = { destination: { address: '127.0.0.1', port: 8080 }, source: { address: '127.0.0.5', port: natted } };
    expect(start!.nat).toEqual(nat);
    expect(end!.nat).toEqual(nat);
    expect(plainEnd!.nat).toBeUndefined();
    for (const [i, r] of [end!, plainEnd!].entries()) {
      const c = cli[i]!;
      expect(r.packets).toEqual({ original: Number(c.original.packets), reply: Number(c.reply.packets) });
      expect(r.bytes).toEqual({ original: Number(c.original.bytes), reply: Number(c.reply.bytes) });
      expect(r.state).toBe(c.state);
      expect(r.zone).toBe(0);
      expect(r.startMs! - before).toBeGreaterThanOrEqual(-1);
      expect(r.startMs!).toBeLessThanOrEqual(r.endMs!);
      expect(r.endMs!).toBeLessThanOrEqual(after);
      expect(r.durationMs).toBe(r.endMs! - r.startMs!);
    }
    expect(end!.bytes!.original).toBeGreaterThan(1000);
    expect(end!.startMs!).toBeLessThanOrEqual(plainEnd!.startMs!);
    // The kernel sends timestamps and counters only when the flow ends.
    expect(start).not.toHaveProperty('startMs');
    expect(start).not.toHaveProperty('bytes');
    for (const r of records) expect(JSON.parse(JSON.stringify(r))).toEqual(r);
  });

  it('reports, once subscribed, how many flows predate it, and what the namespace does not record', async () => {
    await fx.ct.setAccounting(false);
    await fx.ct.setTimestamps(false);
    for (let i = 0; i < 3; i++) await fx.ct.create({ protocol: 'udp', original: { src: '10.0.0.1', dst: '10.0.0.2', sport: 100 + i, dport: 53 }, timeout: 60 });
    const flows = fx.ct.flows();
    const status = await flows.ready;
    expect(status).toMatchObject({ accounting: false, timestamps: false, eventsMode: 2, predating: 3 });
    expect(status.notices).toHaveLength(3);
    expect(status.notices[2]).toMatch(/^3 flows predate the logger/);
    flows.close();
    await using kept = fx.ct.flows({ keepEvents: true, filter: { sport: 101 } });
    expect(await kept.ready).toMatchObject({ eventsMode: 1, predating: 1 });
    expect(fx.ns.sysctl('nf_conntrack_events')).toBe('1');
  });

  it('records what the queue drops as lost records, and the counts add up', async () => {
    const flows = fx.ct.flows({ queueLimit: 10 });
    await flows.ready;
    const lines: string[] = [];
    for (let i = 0; i < 500; i++) lines.push(`-I -p udp -s 10.7.${i >> 8}.${i & 255} -d 10.8.0.1 --sport 1 --dport 2 -t 300`);
    fx.ns.restore(lines);
    await fx.ct.flush();
    let ended = 0;
    let lost = 0;
    await waitFor(async () => {
      const r = await flows.next();
      if (r.value?.event === 'lost') lost += r.value.count;
      else if (r.value?.event === 'end') ended++;
      return ended + lost === 500 ? true : undefined;
    }, 10_000, '500 records ended or lost');
    expect(lost).toBeGreaterThan(0);
    expect(flows.stats().dropped).toBe(lost);
    flows.close();
    expect(await flows.next()).toEqual({ done: true, value: undefined });
  });

  it('ends on close(), an abort, asyncDispose or the handle closing; refuses unknown options and types', async () => {
    const ac = new AbortController();
    const a = fx.ct.flows({ signal: ac.signal });
    const pending = a.next();
    ac.abort();
    expect(await pending).toEqual({ done: true, value: undefined });
    const b = fx.ct.flows();
    await b[Symbol.asyncDispose]();
    expect(b.closed).toBe(true);
    expect(() => fx.ct.flows({ types: ['destroy' as 'end'] })).toThrow(ConntrackError);
    expect(() => fx.ct.flows({ types: [] })).toThrow(/non-empty/);
    expect(() => fx.ct.flows({ colour: 1 } as object)).toThrow(/unknown option field/);
    expect(() => fx.ct.flows({ accounting: 'yes' as unknown as boolean })).toThrow(/true or false/);
    const c = fx.ct.flows();
    const waiting = c.next();
    fx.ct.close();
    expect(await waiting).toEqual({ done: true, value: undefined });
  });

  it('a burst of 250,000 flows ending at once: 250,000 end records, none lost, at the default options', async () => {
    const N = 250_000;
    const lines: string[] = [];
    for (let i = 0; i < N; i++) lines.push(`-I -p udp -s 10.${(i >> 16) + 1}.${(i >> 8) & 255}.${i & 255} -d 10.200.0.1 --sport 1000 --dport 53 -t 600`);
    const flows = fx.ct.flows();
    await flows.ready;
    fx.ns.restore(lines);
    const flushed = fx.ct.flush();
    let ended = 0;
    let lost = 0;
    for await (const r of flows) {
      if (r.event === 'lost') lost += r.count;
      else ended++;
      if (ended + lost === N) break;
    }
    await flushed;
    expect({ ended, lost }).toEqual({ ended: N, lost: 0 });
  }, 120_000);
});
