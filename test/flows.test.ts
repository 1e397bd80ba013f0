/**
 * ct.flows(): flow records from real traffic through nftables DNAT and SNAT
 * in a namespace, checked against `conntrack -L -o extended` read just
 * before each flow ends; the completeness report; losses; a 250k burst.
 */
import { execFileSync, spawn } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { Conntrack, ConntrackError, type FlowLogRecord, type FlowRecord } from '../src/index.js';
import { collectLines, ctmon, CTMON } from './helpers/cli.js';
import { describePrivileged, Netns, parseCliLine, useCleanup, useNamespace, waitFor } from './helpers/netns.js';

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

/** Whether an IPFIX message (RFC 7011 §3.1 header, then sets) holds a data set (set id 256 and up). */
function carriesData(m: Buffer): boolean {
  for (let off = 16; off + 4 <= m.length; ) {
    const id = m.readUInt16BE(off), len = m.readUInt16BE(off + 2);
    if (id >= 256) return true;
    if (len < 4) return false;
    off += len;
  }
  return false;
}

/** The bytes waiting in the receive queue of the UDP socket bound to 127.0.0.1:`port` (ss's Recv-Q), or undefined when none is bound. */
function udpReceiveQueue(port: number): number | undefined {
  const line = execFileSync('ss', ['-Huan'], { encoding: 'utf8' }).split('\n').map((l) => l.trim().split(/\s+/)).find((f) => f[3] === `127.0.0.1:${port}`);
  return line ? Number(line[1]) : undefined;
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

/** The `conntrack -L -o extended` line of the flow from `sport`, parsed. */
function cliFlow(ns: Netns, sport: number, protocol = 'tcp'): ReturnType<typeof parseCliLine> {
  const line = ns.list('-o', 'extended', '-p', protocol, '--sport', String(sport))[0];
  expect(line, `conntrack -L shows the flow from port ${sport}`).toBeDefined();
  return parseCliLine(line!);
}

/** `n` UDP entries loaded in one go (conntrack -R) and flushed: `n` flows ending at once. */
async function endAtOnce(fx: { ns: Netns; ct: Conntrack }, n: number): Promise<void> {
  const entries: string[] = [];
  for (let i = 0; i < n; i++) entries.push(`-I -p udp -s 10.7.${i >> 8}.${i & 255} -d 10.8.0.1 --sport 1 --dport 2 -t 300`);
  fx.ns.restore(entries);
  await fx.ct.flush();
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
    const flowsOf = (sport: number): FlowRecord[] => (records as FlowRecord[]).filter((r) => r.original.sport === sport);
    const [start, end] = flowsOf(natted);
    const [, plainEnd] = flowsOf(plain);
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
    // A flow begun once the logger listens, so that it reports its end (those three may not).
    const later = { protocol: 'udp' as const, original: { src: '10.0.0.1', dst: '10.0.0.2', sport: 200, dport: 53 } };
    await fx.ct.create({ ...later, timeout: 60 });
    await fx.ct.delete(later);
    const [end] = await take(flows, 1);
    expect(end).toMatchObject({ event: 'end', original: { sport: 200 } });
    for (const field of ['packets', 'bytes', 'startMs', 'endMs', 'durationMs']) expect(end).not.toHaveProperty(field);
    flows.close();
    await using kept = fx.ct.flows({ keepEvents: true, filter: { sport: 101 } });
    expect(await kept.ready).toMatchObject({ eventsMode: 1, predating: 1 });
    expect(fx.ns.sysctl('nf_conntrack_events')).toBe('1');
  });

  it('records what the queue drops as lost records, and the counts add up', async () => {
    const flows = fx.ct.flows({ queueLimit: 10 });
    await flows.ready;
    await endAtOnce(fx, 500);
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

  it('keeps a 256 MiB receive buffer by default; overlapping next() calls each get the next record, in call order', async () => {
    await using flows = fx.ct.flows();
    await flows.ready;
    // The kernel reports twice what was asked (SO_RCVBUF's bookkeeping share).
    expect(flows.bufferBytes).toBe(2 * 256 * 2 ** 20);
    const first = flows.next();
    const second = flows.next();
    for (const sport of [301, 302]) {
      const key = { protocol: 'udp' as const, original: { src: '10.0.0.1', dst: '10.0.0.2', sport, dport: 53 } };
      await fx.ct.create({ ...key, timeout: 60 });
      await fx.ct.delete(key);
    }
    const got = await Promise.all([first, second]);
    expect(got.map((r) => (r.value as FlowRecord).original.sport)).toEqual([301, 302]);
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

/** Reads NDJSON chunks until `n` lines have come; the lines. */
async function lines(chunks: AsyncIterator<string>, n: number): Promise<string[]> {
  const out: string[] = [];
  while (out.length < n) {
    const r = await chunks.next();
    if (r.done) break;
    expect(r.value.endsWith('\n')).toBe(true);
    out.push(...r.value.split('\n').slice(0, -1));
  }
  return out;
}

/** Set ids of an IPFIX message's sets (2: templates, 256 and up: data). */
function setIds(m: Buffer): number[] {
  const ids: number[] = [];
  for (let off = 16; off + 4 <= m.length; off += m.readUInt16BE(off + 2)) {
    ids.push(m.readUInt16BE(off));
    if (m.readUInt16BE(off + 2) < 4) break;
  }
  return ids;
}

describePrivileged('flows.ndjson() and flows.ipfix() (real kernel, one namespace per test)', () => {
  const fx = useNamespace();
  const cleanup = useCleanup();

  it('ndjson() writes, line for line, JSON.stringify of the records for await yields for the same real events (NATed TCP, UDP, ICMP), the fields first', async () => {
    natRules(fx.ns);
    const options = { types: ['start', 'end'] as const, accounting: true, timestamps: true };
    await using records = fx.ct.flows(options);
    await using text = fx.ct.flows(options);
    await Promise.all([records.ready, text.ready]);
    const chunks = text.ndjson({ fields: { host: 'gw-1', shard: 3 } });
    tcpThrough(fx.ns, '127.0.0.2');
    tcpThrough(fx.ns, '127.0.0.1', 10);
    fx.ns.ping('127.0.0.1');
    await fx.ct.create({ protocol: 'udp', original: { src: '10.1.0.1', dst: '10.1.0.2', sport: 5353, dport: 53 }, timeout: 60 });
    await fx.ct.flush();
    const objects = await take(records, 8);
    expect(objects.filter((r) => r.event === 'end')).toHaveLength(4);
    expect(await lines(chunks, 8)).toEqual(objects.map((r) => JSON.stringify({ host: 'gw-1', shard: 3, ...r })));
    expect(text.stats()).toMatchObject({ delivered: 8, dropped: 0 });
  });

  it('ndjson() with a queue too small: lost lines where the records were dropped, onLost hears each, and the counts add up', async () => {
    const heard: number[] = [];
    const flows = fx.ct.flows({ queueLimit: 10, onLost: (n) => heard.push(n) });
    await flows.ready;
    const chunks = flows.ndjson();
    await endAtOnce(fx, 500);
    let ended = 0;
    let lost = 0;
    await waitFor(async () => {
      const r = await chunks.next();
      for (const line of r.value!.split('\n').filter(Boolean)) {
        const rec = JSON.parse(line) as FlowLogRecord;
        if (rec.event === 'lost') lost += rec.count;
        else ended++;
      }
      return ended + lost === 500 ? true : undefined;
    }, 10_000, '500 records ended or lost');
    expect(lost).toBeGreaterThan(0);
    expect(heard.reduce((a, b) => a + b, 0)).toBe(lost);
    expect(flows.stats()).toMatchObject({ delivered: ended, dropped: lost });
    flows.close();
    expect(await chunks.next()).toEqual({ done: true, value: undefined });
  });

  it('a stream is read one way; break, close(), an abort or the handle closing end ndjson() and ipfix() loops', async () => {
    const a = fx.ct.flows();
    const chunks = a.ndjson();
    await expect(a.next()).rejects.toMatchObject({ code: 'ERR_INVALID_ARG' });
    expect(() => a.ipfix()).toThrow(/read by ndjson\(\) already/);
    const waiting = chunks.next();
    a.close();
    expect(await waiting).toEqual({ done: true, value: undefined });

    const ac = new AbortController();
    const b = fx.ct.flows({ signal: ac.signal });
    const msgs = b.ipfix({ templateRefreshMs: 60_000 });
    const first = await msgs.next();
    expect(setIds(first.value as Buffer)).toEqual([2]);
    const pending = msgs.next();
    ac.abort();
    expect(await pending).toEqual({ done: true, value: undefined });

    const c = fx.ct.flows();
    await c.ready;
    for await (const _ of c.ipfix()) break;
    expect(c.closed).toBe(true);

    expect(() => fx.ct.flows().ndjson({ fields: [] as unknown as Record<string, string> })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG', argument: 'fields' }));
    expect(() => fx.ct.flows().ndjson({ fields: { host: 'h', zone: 7 } })).toThrow(/fields.zone is a key of the records themselves/);
    expect(() => fx.ct.flows({ queueLimit: 0 })).toThrow(expect.objectContaining({ op: 'flows', argument: 'queueLimit', message: expect.stringMatching(/^flows: queueLimit must be an integer from 1 /) }));
    expect(() => fx.ct.flows({ accounting: 'yes' as unknown as boolean })).toThrow(expect.objectContaining({ argument: 'accounting' }));
    expect(() => fx.ct.flows({ signal: {} as AbortSignal })).toThrow(expect.objectContaining({ op: 'flows', argument: 'signal' }));
    await expect(Conntrack.open({ netns: '../x' })).rejects.toMatchObject({ op: 'open', argument: 'netns' });
    const e = fx.ct.flows();
    expect(() => e.ipfix({ mtu: 100 })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG', argument: 'mtu' }));
    expect(() => e.ipfix({ domain: -1 })).toThrow(/domain must be an integer/);
    expect(() => e.ipfix({ templateRefreshMs: 0 })).toThrow(/templateRefreshMs/);
    // A refused call leaves the stream to be read any way.
    const f = e.ndjson();
    e.close();
    expect(await f.next()).toEqual({ done: true, value: undefined });
    const d = fx.ct.flows();
    const more = d.ndjson()[Symbol.asyncIterator]().next();
    fx.ct.close();
    expect(await more).toEqual({ done: true, value: undefined });
  });

  it("ipfix(): templates first, every real flow's record in a data set, the templates again while no flow ends", async () => {
    await using flows = fx.ct.flows({ accounting: true, timestamps: true });
    await flows.ready;
    const msgs = flows.ipfix({ domain: 9, templateRefreshMs: 300 });
    const first = (await msgs.next()).value as Buffer;
    expect(setIds(first)).toEqual([2]);
    expect(first.readUInt32BE(12)).toBe(9);
    for (const sport of [1, 2, 3]) await fx.ct.create({ protocol: 'udp', original: { src: '10.2.0.1', dst: '10.2.0.2', sport, dport: 53 }, timeout: 60 });
    await fx.ct.flush();
    const data = (await msgs.next()).value as Buffer;
    expect(setIds(data)).toEqual([256]);
    expect(data.readUInt32BE(8)).toBe(0); // the sequence: no data record before it
    expect(flows.stats().delivered).toBe(3);
    // Nothing ends now: within a second the templates come again, alone (RFC 7011 §8.4).
    const t0 = Date.now();
    const again = (await msgs.next()).value as Buffer;
    expect(setIds(again)).toEqual([2]);
    expect(Date.now() - t0).toBeLessThan(1000);
  });

  it('a process whose only work is a waiting ndjson() loop stays alive until a flow ends, as for await over records does', async () => {
    const script = `
      import { Conntrack } from ${JSON.stringify(new URL('../dist/index.js', import.meta.url).href)};
      const ct = await Conntrack.open();
      const flows = ct.flows();
      await flows.ready;
      process.stdout.write('ready\\n');
      for await (const text of flows.ndjson()) { process.stdout.write(text); break; }
      ct.close();`;
    const child = spawn('ip', ['netns', 'exec', fx.ns.name, process.execPath, '--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    cleanup.push(() => child.kill('SIGKILL'));
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    const exited = new Promise<number | null>((r) => child.on('exit', r));
    await waitFor(() => (out.includes('ready') ? true : undefined), 10_000, 'the child to subscribe');
    await new Promise((r) => setTimeout(r, 200)); // an idle loop would have let the process end by now
    await fx.ct.create({ protocol: 'udp', original: { src: '10.3.0.1', dst: '10.3.0.2', sport: 7, dport: 53 }, timeout: 60 });
    await fx.ct.flush();
    expect(await exited).toBe(0);
    expect(JSON.parse(out.split('\n')[1]!)).toMatchObject({ event: 'end', original: { src: '10.3.0.1', sport: 7 } });
  });
});

/** `ctmon log ARGS` running in the background: its stdout lines, its stderr, and a SIGTERM stop that resolves with the exit code. */
function startLog(args: string[]): { lines: string[]; stderr: () => string; stop: () => Promise<number>; kill: () => void } {
  const p = spawn(process.execPath, [CTMON, 'log', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: string[] = [];
  let err = '';
  let buf = '';
  p.stdout.setEncoding('utf8').on('data', (d: string) => {
    buf += d;
    const parts = buf.split('\n');
    buf = parts.pop()!;
    lines.push(...parts.filter(Boolean));
  });
  p.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
  const exited = new Promise<number>((resolve) => p.on('exit', (code) => resolve(code ?? -1)));
  return {
    lines,
    stderr: () => err,
    stop: async () => {
      p.kill('SIGTERM');
      return exited;
    },
    kill: () => p.kill('SIGKILL'),
  };
}

async function logging(log: { stderr: () => string }): Promise<void> {
  await waitFor(() => (/ctmon: logging /.test(log.stderr()) ? true : undefined), 10_000, `ctmon log to subscribe (stderr: ${log.stderr()})`);
}

describePrivileged('ctmon log (real kernel)', () => {
  const fx = useNamespace();
  const cleanup = useCleanup();

  it('NDJSON: start and end records of real NATed TCP, the counters conntrack -L showed just before the end; a clean SIGTERM stop with the totals', async () => {
    natRules(fx.ns);
    const log = startLog(['--netns', fx.ns.name, '--start', '--accounting', '--timestamps', '--keep-events', '-p', 'tcp']);
    cleanup.push(log.kill);
    await logging(log);
    const port = tcpThrough(fx.ns, '127.0.0.2');
    const cli = cliFlow(fx.ns, port);
    await fx.ct.flush();
    await waitFor(() => (log.lines.length >= 2 ? true : undefined), 10_000, 'two NDJSON lines');
    expect(await log.stop()).toBe(0);
    const [start, end] = log.lines.map((l) => JSON.parse(l) as FlowRecord);
    expect(start).toMatchObject({ event: 'start', original: { sport: port, dst: '127.0.0.2' }, nat: { destination: { address: '127.0.0.1', port: 8080 }, source: { address: '127.0.0.5', port } } });
    expect(end).toMatchObject({ event: 'end', id: start!.id, packets: { original: Number(cli.original.packets), reply: Number(cli.reply.packets) }, bytes: { original: Number(cli.original.bytes), reply: Number(cli.reply.bytes) } });
    expect(end!.durationMs).toBe(end!.endMs! - end!.startMs!);
    expect(log.stderr()).toMatch(/ctmon: 2 records logged, 0 lost\n$/);
    expect(['nf_conntrack_acct', 'nf_conntrack_timestamp', 'nf_conntrack_events'].map((s) => fx.ns.sysctl(s))).toEqual(['1', '1', '1']);
  });

  it('losses: on stderr where they happen and as lost records, counted in the totals', async () => {
    const log = startLog(['--netns', fx.ns.name, '--buffer', '4096']);
    cleanup.push(log.kill);
    await logging(log);
    const lines: string[] = [];
    for (let i = 0; i < 5000; i++) lines.push(`-I -p udp -s 10.7.${i >> 8}.${i & 255} -d 10.8.0.1 --sport 1 --dport 2 -t 300`);
    fx.ns.restore(lines);
    fx.ns.conntrack('-F');
    expect(await log.stop()).toBe(0);
    const records = log.lines.map((l) => JSON.parse(l) as FlowLogRecord);
    const lost = records.filter((r) => r.event === 'lost').reduce((n, r) => n + (r as { count: number }).count, 0);
    const ended = records.filter((r) => r.event === 'end').length;
    expect(lost).toBeGreaterThan(0);
    expect(ended + lost).toBe(5000);
    expect(log.stderr()).toMatch(/ctmon: !! \d+ records lost here/);
    expect(log.stderr()).toContain(`ctmon: ${ended} records logged, ${lost} lost`);
  });

  it("README's ndjson() example writes each real flow's end as a line that names the host", async () => {
    const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
    const example = [...readme.matchAll(/```js\n([\s\S]*?)```/g)].map((m) => m[1]!).find((b) => b.includes('.ndjson('));
    expect(example).toBeDefined();
    const dir = mkdtempSync(join(tmpdir(), 'ctflows-readme-'));
    cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
    const file = join(dir, 'example.mjs');
    writeFileSync(file, example!.replace("from 'conntrack'", `from ${JSON.stringify(new URL('../dist/index.js', import.meta.url).href)}`).replaceAll("'blue'", JSON.stringify(fx.ns.name)));
    const p = spawn(process.execPath, [file], { stdio: ['ignore', 'pipe', 'pipe'] });
    cleanup.push(() => p.kill('SIGKILL'));
    let out = '';
    p.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    // Subscribed once the example's sysctl writes are done: its socket has joined the group by then.
    await waitFor(() => (fx.ns.sysctl('nf_conntrack_timestamp') === '1' ? true : undefined), 10_000, 'the example to start');
    expect(fx.ns.sysctl('nf_conntrack_acct')).toBe('1');
    fx.ns.tcpConnection('127.0.0.1', 8080);
    await fx.ct.flush();
    await waitFor(() => (out.includes('\n') ? true : undefined), 10_000, 'the example to print the flow\'s end');
    const line = JSON.parse(out.split('\n')[0]!) as FlowRecord & { host: string };
    expect(Object.keys(line)[0]).toBe('host');
    expect(line).toMatchObject({ host: hostname(), event: 'end', protocol: 'tcp' });
    expect(line).toHaveProperty('bytes');
    expect(line).toHaveProperty('durationMs');
  });

  it("README's example logs real flows as JSON lines, after saying how many flows predate it", async () => {
    const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
    const example = [...readme.matchAll(/```js\n([\s\S]*?)```/g)].map((m) => m[1]!).find((b) => b.includes('ct.flows('));
    expect(example).toBeDefined();
    const dir = mkdtempSync(join(tmpdir(), 'ctflows-readme-'));
    cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
    const file = join(dir, 'example.mjs');
    writeFileSync(file, example!.replace("from 'conntrack'", `from ${JSON.stringify(new URL('../dist/index.js', import.meta.url).href)}`).replaceAll("'blue'", JSON.stringify(fx.ns.name)));
    fx.ns.udpExchange('127.0.0.1', 5300);
    const p = spawn(process.execPath, [file], { stdio: ['ignore', 'pipe', 'pipe'] });
    cleanup.push(() => p.kill('SIGKILL'));
    let out = '';
    let err = '';
    p.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    p.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
    await waitFor(() => (err.includes('logging;') ? true : undefined), 10_000, 'the example to subscribe');
    expect(err).toMatch(/^logging; 1 flows predate the logger/);
    fx.ns.tcpConnection('127.0.0.1', 8080);
    await fx.ct.flush();
    // The UDP flow predates the example: its end may go unreported, as README says.
    const records = await waitFor(() => {
      const l = out.split('\n').filter(Boolean).map((x) => JSON.parse(x) as FlowRecord);
      return l.some((r) => r.event === 'end' && r.protocol === 'tcp') ? l : undefined;
    }, 10_000, 'the example to print the TCP flow\'s end');
    expect(records.map((r) => `${r.event} ${r.protocol}`)).toEqual(expect.arrayContaining(['start tcp', 'end tcp']));
    expect(records.find((r) => r.event === 'end' && r.protocol === 'tcp')).toHaveProperty('bytes');
  });

  it('NDJSON from two namespaces: each record names its netns', async () => {
    const other = Netns.create();
    cleanup.push(() => other.destroy());
    const log = startLog(['--netns', fx.ns.name, '--netns', other.name]);
    cleanup.push(log.kill);
    await logging(log);
    fx.ns.udpExchange('127.0.0.1', 5353);
    other.udpExchange('::1', 5354);
    fx.ns.conntrack('-F');
    other.conntrack('-F');
    await waitFor(() => (log.lines.length >= 2 ? true : undefined), 10_000, 'two NDJSON lines');
    expect(await log.stop()).toBe(0);
    const records = log.lines.map((l) => JSON.parse(l) as FlowRecord & { netns: string });
    expect(records.map((r) => `${r.netns} ${r.event} ${r.original.dport}`).sort()).toEqual([`${fx.ns.name} end 5353`, `${other.name} end 5354`].sort());
  });

  it('--format conntrack prints, byte for byte, the lines conntrack -E -o timestamp,extended prints for the same events (the receive time aside)', async () => {
    await fx.ct.setAccounting(true);
    await fx.ct.setTimestamps(true);
    const theirs = collectLines('ip', ['netns', 'exec', fx.ns.name, 'conntrack', '-E', '-e', 'NEW,DESTROY', '-o', 'timestamp,extended']);
    cleanup.push(theirs.kill);
    const ours = startLog(['--netns', fx.ns.name, '--format', 'conntrack', '--start']);
    cleanup.push(ours.kill);
    await logging(ours);
    // conntrack -E says nothing when it is subscribed: a marker entry until both printed its end.
    const marker = { protocol: 'udp' as const, original: { src: '203.0.113.1', dst: '203.0.113.2', sport: 9, dport: 9 } };
    await waitFor(async () => {
      await fx.ct.create({ ...marker, timeout: 30 }).catch(() => undefined);
      await fx.ct.delete(marker);
      return [theirs.lines, ours.lines].every((l) => l.some((x) => x.includes('[DESTROY]') && x.includes('203.0.113.1'))) ? true : undefined;
    }, 10_000, 'both to subscribe');
    const from = { theirs: theirs.lines.length, ours: ours.lines.length };
    fx.ns.tcpConnection('127.0.0.1', 8080);
    fx.ns.udpExchange('::1', 5353);
    fx.ns.ping('127.0.0.1');
    await fx.ct.flush();
    const strip = (l: string[]): string[] => l.filter((x) => !x.includes('203.0.113.'));
    const want = await waitFor(() => {
      const l = strip(theirs.lines.slice(from.theirs));
      return l.filter((x) => x.includes('[DESTROY]')).length >= 3 ? l : undefined;
    }, 10_000, 'conntrack -E to print three ends');
    const got = await waitFor(() => {
      const l = strip(ours.lines.slice(from.ours));
      return l.length >= want.length ? l : undefined;
    }, 10_000, 'ctmon log to print as many lines');
    const stamp = /^\[(\d{10})\.(\d{6})\]\t/;
    const stamps = (l: string[]): number[] => l.map((x) => {
      const m = stamp.exec(x);
      expect(m, x).not.toBeNull();
      return Number(m![1]) + Number(m![2]) / 1e6;
    });
    const [a, b] = [stamps(got), stamps(want)];
    for (let i = 0; i < a.length; i++) expect(Math.abs(a[i]! - b[i]!)).toBeLessThan(5);
    expect(got.map((x) => x.replace(stamp, ''))).toEqual(want.map((x) => x.replace(stamp, '')));
    expect(want.some((x) => x.includes('delta-time=') && x.includes('packets='))).toBe(true);
    expect(await ours.stop()).toBe(0);
  });

  it('IPFIX to a real nfcapd started after the exporter: every flow read back by nfdump with its 5-tuple, both directions\' counters, times and NAT translation', async () => {
    natRules(fx.ns);
    const port = 20000 + Math.floor(Math.random() * 40000);
    const dir = mkdtempSync(join(tmpdir(), 'ctflows-nfcapd-'));
    cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
    const log = startLog(['--netns', fx.ns.name, '--accounting', '--timestamps', '--ipfix', `127.0.0.1:${port}`, '--template-refresh', '1']);
    cleanup.push(log.kill);
    await logging(log);
    // A flow that ends while no collector listens: its record is sent and lost, as UDP export loses it.
    // A plain socket stands where nfcapd will be until that record has gone by, so the first message
    // nfcapd hears is the templates the idle exporter sends alone (data it hears first it cannot read).
    const standIn = createSocket('udp4');
    let dataSeen = false;
    standIn.on('message', (m) => (dataSeen ||= carriesData(m)));
    await new Promise<void>((resolve) => standIn.bind(port, '127.0.0.1', resolve));
    fx.ns.udpExchange('127.0.0.1', 5300);
    await fx.ct.flush();
    await waitFor(() => (dataSeen ? true : undefined), 10_000, 'the record of the flow before the collector to be sent');
    await new Promise<void>((resolve) => standIn.close(resolve));
    const nfcapd = spawn('nfcapd', ['-b', '127.0.0.1', '-p', String(port), '-w', dir], { stdio: ['ignore', 'pipe', 'pipe'] });
    let said = '';
    for (const s of [nfcapd.stdout, nfcapd.stderr]) s.setEncoding('utf8').on('data', (d: string) => (said += d));
    const collected = new Promise<void>((resolve) => nfcapd.on('exit', () => resolve()));
    cleanup.push(() => nfcapd.kill('SIGKILL'));
    // Idle, the exporter sends templates alone every second: the first message nfcapd hears teaches it them.
    await waitFor(() => (/New ipfix exporter/.test(said) ? true : undefined), 10_000, `nfcapd to hear the exporter (${said})`);
    const tcp = tcpThrough(fx.ns, '127.0.0.2');
    const udp4 = fx.ns.udpExchange('127.0.0.1', 5353);
    const udp6 = fx.ns.udpExchange('::1', 5354);
    const cli = [cliFlow(fx.ns, tcp), cliFlow(fx.ns, udp4, 'udp'), cliFlow(fx.ns, udp6, 'udp')];
    await fx.ct.flush();
    // SIGTERM: ctmon writes what the kernel has sent before it stops.
    expect(await log.stop()).toBe(0);
    expect(log.stderr()).toMatch(/ctmon: 4 records logged, 0 lost\n$/);
    // nfcapd reads in its own time, and a SIGTERM ends it without reading what still waits in its socket.
    await waitFor(() => (udpReceiveQueue(port) === 0 ? true : undefined), 10_000, 'nfcapd to read every datagram sent to it');
    nfcapd.kill('SIGTERM');
    await collected;
    const rows = execFileSync('nfdump', ['-q', '-R', dir, '-o', 'fmt:%pr|%sa|%sp|%da|%dp|%ipkt|%ibyt|%opkt|%obyt|%ts|%te|%xsa|%xsp|%xda|%xdp'], { encoding: 'utf8' })
      .split('\n').filter((l) => l.includes('|')).map((l) => l.split('|').map((f) => f.trim()));
    const want = cli.map((c) => [
      c.protocol.toUpperCase(), c.original.src!, c.original.sport!, c.original.dst!, c.original.dport!,
      c.original.packets!, c.original.bytes!, c.reply.packets!, c.reply.bytes!,
    ]);
    expect(rows.map((r) => r.slice(0, 9)).sort()).toEqual(want.sort());
    const nat = rows.find((r) => r[4] === '8080')!;
    expect(nat.slice(11)).toEqual(['127.0.0.5', String(tcp), '127.0.0.1', '8080']);
    // First and last seen as nfdump prints them, in local time to the millisecond (its %ter misprints the milliseconds).
    const time = (t: string): number => new Date(t.replace(' ', 'T')).getTime();
    for (const r of rows) expect(time(r[9]!), r.join('|')).toBeLessThanOrEqual(time(r[10]!));
    // README's nfdump line, on the same files, shows the translation.
    const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
    const nfdumpLine = /^nfdump -R .*$/m.exec(readme)![0].replace('/var/cache/nfdump', dir);
    expect(execFileSync('sh', ['-c', nfdumpLine], { encoding: 'utf8' })).toMatch(new RegExp(`127\\.0\\.0\\.5:${tcp}\\s+127\\.0\\.0\\.1:8080`));
    expect(time(nat[10]!)).toBeLessThanOrEqual(Date.now());
    expect(time(nat[9]!)).toBeGreaterThan(Date.now() - 60_000);
  });

  it('refuses --format ipfix without a collector, and --ipfix with another format', () => {
    expect(ctmon(['log', '--format', 'ipfix'])).toMatchObject({ status: 64, stderr: expect.stringMatching(/needs --ipfix HOST:PORT/) });
    expect(ctmon(['log', '--format', 'ndjson', '--ipfix', '127.0.0.1:1'])).toMatchObject({ status: 64 });
    expect(ctmon(['log', '--ipfix', 'nowhere'])).toMatchObject({ status: 64, stderr: expect.stringMatching(/HOST:PORT/) });
  });

  it('several namespaces: refused for --format conntrack and when two --netns name one namespace; IPFIX says which domain is which', async () => {
    const other = Netns.create();
    cleanup.push(() => other.destroy());
    const conntrack = ctmon(['log', '--netns', fx.ns.name, '--netns', other.name, '--format', 'conntrack']);
    expect(conntrack).toMatchObject({ status: 64, stderr: expect.stringMatching(/--format conntrack logs one namespace/) });
    const twice = ctmon(['log', '--netns', fx.ns.name, '--netns', `/run/netns/${fx.ns.name}`]);
    expect(twice).toMatchObject({ status: 64, stderr: expect.stringContaining(`--netns /run/netns/${fx.ns.name} is the namespace ${fx.ns.name} names`) });
    expect(twice.stderr).not.toMatch(/records logged/);
    const log = startLog(['--netns', fx.ns.name, '--netns', other.name, '--ipfix', '127.0.0.1:9']);
    cleanup.push(log.kill);
    await logging(log);
    expect(await log.stop()).toBe(0);
    expect(log.stderr()).toContain(`ctmon: IPFIX observation domains: 0 ${fx.ns.name}, 1 ${other.name}\n`);
  });

  it('a log that cannot start says why and prints no totals; its notes name its own flags', async () => {
    const missing = ctmon(['log', '--netns', `${fx.ns.name}-missing`]);
    expect(missing.status).not.toBe(0);
    expect(missing.stderr).toMatch(/ENOENT/);
    expect(missing.stderr).not.toMatch(/records logged/);
    await fx.ct.setAccounting(false);
    await fx.ct.create({ protocol: 'udp', original: { src: '10.0.0.1', dst: '10.0.0.2', sport: 9, dport: 53 }, timeout: 60 });
    const log = startLog(['--netns', fx.ns.name]);
    cleanup.push(log.kill);
    await logging(log);
    expect(await log.stop()).toBe(0);
    const notes = log.stderr().split('\n').filter((l) => l.startsWith('ctmon: note'));
    expect(notes).toEqual([
      expect.stringContaining('(--accounting, or sysctl -w net.netfilter.nf_conntrack_acct=1)'),
      expect.stringContaining('(--timestamps, or sysctl'),
      expect.stringMatching(/1 flow predates the logger .*--keep-events sets 1/),
    ]);
    expect(log.stderr()).not.toMatch(/accounting: true|keepEvents/);
  });
});
