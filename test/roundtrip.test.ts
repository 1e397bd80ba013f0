/**
 * What list() returns passes back, as it is, to every call that takes a
 * flow: update({ ...e, change }), update(e), delete(e) then create(e), in
 * the shapes users write (spread, passed whole, concurrent), on every kind
 * of entry, with the conntrack CLI in the same namespace as the oracle. And
 * the kernel's rules these lean on, each checked for real: CTA_ID ignored on
 * an update, flags that can only be set, FIXED_TIMEOUT, EXPECTED refused on
 * create, a NATed entry's reply tuple.
 */
import { expect, it } from 'vitest';
import { ConntrackError, type Entry } from '../src/index.js';
import { describePrivileged, itNeeds, useNamespace, waitFor, type Netns } from './helpers/netns.js';
import { enableLabels, NAT_TO, useLabelConf } from './helpers/tables.js';

/** `conntrack -L -o labels` with the timeout masked, sorted after masking. */
function table(ns: Netns, ...args: string[]): string[] {
  return ns.list('-o', 'labels', ...args).map((l) => l.replace(/^(\S+\s+\d+\s+)\d+/, '$1T')).sort();
}

/** One of every kind the CLI can insert: protocols, IPv6, zones of both directions or one, SCTP tags, labels, flags. */
const KINDS = [
  '-I -p tcp -s 10.9.0.1 -d 10.9.9.9 --sport 1000 --dport 80 --state ESTABLISHED -u SEEN_REPLY,ASSURED -m 3 -t 300 --label-add web',
  '-I -p udp -s 10.9.0.2 -d 10.9.9.9 --sport 1000 --dport 53 -m 0 -t 300',
  '-I -p icmp -s 10.9.0.3 -d 10.9.9.9 --icmp-type 8 --icmp-code 0 --icmp-id 7 -t 300',
  '-I -p tcp -s 2001:db8::9:4 -d 2001:db8::9:9 --sport 1000 --dport 443 --state SYN_SENT -t 300 --label-add blue,quarantine',
  '-I -p icmpv6 -s 2001:db8::9:5 -d 2001:db8::9:9 --icmpv6-type 128 --icmpv6-code 0 --icmpv6-id 3 -t 300',
  '-I -p sctp -s 10.9.0.6 -d 10.9.9.9 --sport 5000 --dport 9 --state ESTABLISHED --orig-vtag 17 --reply-vtag 18 -t 300',
  '-I -p gre -s 10.9.0.7 -d 10.9.9.9 --srckey 5 --dstkey 6 -t 300',
  '-I -p udp -s 10.9.0.8 -d 10.9.9.9 --sport 1 --dport 2 -w 3 -t 300',
  '-I -p udp -s 10.9.0.9 -d 10.9.9.9 --sport 1 --dport 2 --orig-zone 4 -t 300',
  '-I -p udp -s 10.9.0.10 -d 10.9.9.9 --sport 1 --dport 2 --reply-zone 5 -u ASSURED -t 300',
  '-I -p udplite -s 10.9.0.11 -d 10.9.9.9 --sport 1 --dport 2 -t 300',
];

describePrivileged('an Entry passes back to update() and create()', () => {
  const fx = useNamespace('each', 'ctrt');
  useLabelConf();

  const load = (): void => {
    enableLabels(fx.ns);
    // conntrack -R cannot load --label-add lines (it crashes on the second): one by one.
    for (const line of KINDS) fx.ns.conntrack(...line.split(' '));
  };

  it('update({ ...e, mark: 7 }) changes the mark of every kind of entry, as conntrack -L shows; update(e) writes e back', async () => {
    load();
    const before = table(fx.ns);
    const entries = await fx.ct.list();
    expect(entries).toHaveLength(KINDS.length);
    for (const e of entries) await fx.ct.update({ ...e, mark: 7 });
    expect(table(fx.ns)).toEqual(before.map((l) => l.replace(/mark=\d+/, 'mark=7')).sort());
    // Passed whole, each entry is written back as it was read: its mark again.
    for (const e of entries) await fx.ct.update(e);
    expect(table(fx.ns)).toEqual(before);
    // Concurrently, as users map over list(): every update lands once.
    await Promise.all((await fx.ct.list()).map((e) => fx.ct.update({ ...e, mark: (e.mark ?? 0) + 100 })));
    expect((await fx.ct.list()).map((e) => e.mark).sort()).toEqual(entries.map((e) => (e.mark ?? 0) + 100).sort());
  });

  it('delete(e) then create(e) recreates every kind of entry, NATed ones from their reply tuple, as conntrack -L showed it', async () => {
    load();
    fx.ns.natTraffic(`${NAT_TO[0]}:7777`);
    const before = table(fx.ns);
    const entries = await fx.ct.list();
    expect(entries.filter((e) => e.status.includes('SRC_NAT') || e.status.includes('DST_NAT'))).toHaveLength(2);
    const fields = (e: Entry): unknown => [e.original, e.reply, e.state, e.status, e.mark, e.zone, e.labels, e.vtag];
    const byTuple = (xs: Entry[]): unknown[] => xs.map(fields).sort((a, b) => JSON.stringify(a).localeCompare(JSON.stringify(b)));
    await Promise.all(entries.map((e) => fx.ct.delete(e)));
    expect(await fx.ct.count()).toBe(0);
    await Promise.all(entries.map((e) => fx.ct.create(e)));
    expect(table(fx.ns)).toEqual(before);
    // Field by field, status flags included: the NAT the kernel set up again, SEEN_REPLY and ASSURED kept.
    expect(byTuple(await fx.ct.list())).toEqual(byTuple(entries));
    for (const e of await fx.ct.list()) expect(Math.abs(e.timeout - entries.find((x) => x.original.src === e.original.src && x.protocol === e.protocol)!.timeout)).toBeLessThanOrEqual(2);
  });

  it('an Entry passed back writes what moved since it was read: mark, timeout, TCP state; key and change touch nothing else', async () => {
    fx.ns.conntrack('-I', '-p', 'tcp', '-s', '10.9.7.1', '-d', '10.9.9.9', '--sport', '1', '--dport', '80', '--state', 'ESTABLISHED', '-t', '300', '-m', '1');
    const [e] = await fx.ct.list({ src: '10.9.7.1' });
    fx.ns.conntrack('-U', '-f', 'ipv4', '-s', '10.9.7.1', '-p', 'tcp', '--state', 'FIN_WAIT', '-t', '50', '-m', '2');
    // The key and one change: the mark only; the state and timeout the entry moved to stay.
    await fx.ct.update({ protocol: e!.protocol, original: e!.original, zone: e!.zone, mark: 3 });
    expect(await fx.ct.get(e!)).toMatchObject({ state: 'FIN_WAIT', mark: 3, timeout: expect.toSatisfy((t: number) => t <= 50) });
    // The Entry spread with a change: what it carries is written back where the entry differs now.
    await fx.ct.update({ ...e!, mark: 4 });
    const now = await fx.ct.get(e!);
    expect(now).toMatchObject({ state: 'ESTABLISHED', mark: 4 });
    expect(now!.timeout).toBeGreaterThanOrEqual(e!.timeout - 1);
  });

  itNeeds(['procSys'], 'create(entry) starts counters afresh', async () => {
    await fx.ct.setAccounting(true);
    fx.ns.ping('127.0.0.1');
    const [e] = await fx.ct.list({ protocol: 'icmp' });
    expect(e!.counters!.original.packets).toBeGreaterThan(0);
    await fx.ct.delete(e!);
    await fx.ct.create(e!);
    expect((await fx.ct.get(e!))!.counters).toEqual({ original: { packets: 0, bytes: 0 }, reply: { packets: 0, bytes: 0 } });
  });

  it("an id pins the flow: a newer flow on the same tuple is neither updated nor deleted (the kernel ignores CTA_ID on an update: the check is ours)", async () => {
    fx.ns.conntrack('-I', '-p', 'udp', '-s', '10.9.1.1', '-d', '10.9.9.9', '--sport', '1', '--dport', '2', '-t', '300', '-m', '1');
    const [old] = await fx.ct.list({ src: '10.9.1.1' });
    await fx.ct.delete(old!);
    // The kernel reuses a freed entry's memory and the id hashes the address with the tuple, so a new flow on the
    // same tuple can get the old id back: until it does not, give that one up and take the slot with a filler.
    let now: Entry | undefined;
    for (let filler = 2; filler < 40; filler++) {
      fx.ns.conntrack('-I', '-p', 'udp', '-s', '10.9.1.1', '-d', '10.9.9.9', '--sport', '1', '--dport', '2', '-t', '300', '-m', '2');
      [now] = await fx.ct.list({ src: '10.9.1.1' });
      if (now!.id !== old!.id) break;
      fx.ns.conntrack('-D', '-s', '10.9.1.1');
      fx.ns.conntrack('-I', '-p', 'udp', '-s', `10.9.1.${filler}`, '-d', '10.9.9.9', '--sport', '1', '--dport', '2', '-t', '300');
    }
    expect(now!.id).not.toBe(old!.id);
    const err = (await fx.ct.update({ ...old!, mark: 7 }).catch((e: unknown) => e)) as ConntrackError;
    expect(err).toBeInstanceOf(ConntrackError);
    expect(err.code).toBe('ENOENT');
    expect(err.message).toContain(`a newer flow (id ${now!.id}) holds its tuple`);
    expect(await fx.ct.delete(old!)).toBe(false);
    expect(table(fx.ns, '-s', '10.9.1.1')[0]).toContain('mark=2 ');
    // conntrack -U -i makes the same check in user space (its dump is compared with the id).
    expect(fx.ns.conntrackStatus('-U', '-s', '10.9.1.1', '-m', '7', '-i', String(old!.id)).stderr).toContain('0 flow entries have been updated');
    expect(table(fx.ns, '-s', '10.9.1.1')[0]).toContain('mark=2 ');
    await fx.ct.update({ ...now!, mark: 7 });
    expect(table(fx.ns, '-s', '10.9.1.1')[0]).toContain('mark=7 ');
  });

  it('flags only set: an Entry read before the kernel set ASSURED passes back without EBUSY, and the flag stays', async () => {
    fx.ns.conntrack('-I', '-p', 'udp', '-s', '10.9.2.1', '-d', '10.9.9.9', '--sport', '1', '--dport', '2', '-t', '300');
    const [e] = await fx.ct.list({ src: '10.9.2.1' });
    expect(e!.status).not.toContain('ASSURED');
    fx.ns.conntrack('-U', '-s', '10.9.2.1', '-u', 'ASSURED');
    // The kernel refuses (EBUSY) a status that would clear ASSURED, as e's status as read would.
    await fx.ct.update({ ...e!, mark: 9 });
    expect(table(fx.ns, '-s', '10.9.2.1')[0]).toMatch(/\[ASSURED\] mark=9 /);
    // Flags the kernel keeps for itself are ignored in an update, as the kernel ignores them.
    await fx.ct.update({ ...e!, status: ['SRC_NAT', 'CONFIRMED'] });
    expect((await fx.ct.get(e!))!.status).toEqual(['ASSURED', 'CONFIRMED']);
  });

  it('only what differs is written: an update that would change nothing sends nothing (no UPDATE event)', async () => {
    const key = { protocol: 'udp' as const, original: { src: '10.9.3.1', dst: '10.9.9.9', sport: 1, dport: 2 } };
    const stream = fx.ct.events({ types: ['new', 'update'], filter: { src: '10.9.3.1' } });
    try {
      await stream.ready;
      // Created while someone listens: the kernel reports this entry's changes (an entry created unheard stays silent).
      fx.ns.conntrack('-I', '-p', 'udp', '-s', '10.9.3.1', '-d', '10.9.9.9', '--sport', '1', '--dport', '2', '-t', '300', '-m', '4');
      const it = stream[Symbol.asyncIterator]();
      expect((await it.next()).value).toMatchObject({ type: 'new', entry: { mark: 4 } });
      await fx.ct.update({ ...key, mark: 4 });
      await fx.ct.update({ ...key, mark: 5 });
      expect((await it.next()).value).toMatchObject({ type: 'update', entry: { mark: 5 } });
      await fx.ct.update({ ...key, mark: 5, status: ['CONFIRMED'] });
      await fx.ct.update({ ...key, mark: 6 });
      expect((await it.next()).value).toMatchObject({ type: 'update', entry: { mark: 6 } });
    } finally {
      stream.close();
    }
  });

  it('FIXED_TIMEOUT: the kernel refuses a timeout change (EPERM, as for conntrack -U -t); nothing else is written', async () => {
    fx.ns.conntrack('-I', '-p', 'udp', '-s', '10.9.4.1', '-d', '10.9.9.9', '--sport', '1', '--dport', '2', '-t', '300', '-u', 'FIXED_TIMEOUT');
    expect(fx.ns.conntrackStatus('-U', '-s', '10.9.4.1', '-t', '100').stderr).toContain('Operation failed');
    const [e] = await fx.ct.list({ src: '10.9.4.1' });
    expect(e!.status).toContain('FIXED_TIMEOUT');
    const err = (await fx.ct.update({ ...e!, timeout: 100, mark: 7 }).catch((x: unknown) => x)) as ConntrackError;
    expect(err).toMatchObject({ code: 'EPERM', message: expect.stringContaining('FIXED_TIMEOUT') });
    expect(err.message).toContain('leave timeout out');
    expect((await fx.ct.get(e!))!.mark).toBe(0);
    const { timeout: _timeout, ...rest } = e!;
    await fx.ct.update({ ...rest, mark: 7 });
    expect((await fx.ct.get(e!))!.mark).toBe(7);
  });

  it('create: EXPECTED and DYING are the kernel\'s (conntrack -I -u EXPECTED fails EBUSY), SEEN_REPLY and ASSURED are set', async () => {
    expect(fx.ns.conntrackStatus('-I', '-p', 'udp', '-s', '10.9.5.1', '-d', '10.9.9.9', '--sport', '1', '--dport', '2', '-t', '300', '-u', 'EXPECTED').stderr).toContain('busy');
    const original = { src: '10.9.5.1', dst: '10.9.9.9', sport: 1, dport: 2 };
    await fx.ct.create({ protocol: 'udp', original, timeout: 300, status: ['EXPECTED', 'DYING', 'SEEN_REPLY', 'ASSURED'] });
    expect((await fx.ct.get({ protocol: 'udp', original }))!.status).toEqual(['SEEN_REPLY', 'ASSURED', 'CONFIRMED']);
  });

  it('an SCTP Entry carries its tags: a state change from it keeps them; a mark change leaves the state', async () => {
    load();
    const [e] = await fx.ct.list({ protocol: 'sctp' });
    await fx.ct.update({ ...e!, mark: 1 });
    await fx.ct.update({ ...e!, state: 'SHUTDOWN_SENT' });
    expect(await fx.ct.get(e!)).toMatchObject({ state: 'SHUTDOWN_SENT', vtag: e!.vtag, mark: 0 });
  });

  it('a field in no Entry and no spec is refused; the read-only ones are accepted; family must match', async () => {
    load();
    const [e] = await fx.ct.list({ src: '10.9.0.2' });
    const bad = [
      () => fx.ct.update({ ...e!, marks: 7 } as never),
      () => fx.ct.create({ ...e!, nats: {} } as never),
      () => fx.ct.get({ ...e!, zome: 2 } as never),
      () => fx.ct.delete({ ...e!, zome: 2 } as never),
      () => fx.ct.update({ ...e!, family: 'ipv6' }),
      () => fx.ct.update({ ...e!, nat: { src: '10.0.0.1' } } as never),
      () => fx.ct.update({ ...e!, id: -1 }),
    ];
    for (const call of bad) {
      const err = (await call().catch((x: unknown) => x)) as ConntrackError;
      expect(err).toBeInstanceOf(ConntrackError);
      expect(err.code).toBe('ERR_INVALID_ARG');
    }
    expect(await fx.ct.get({ ...e!, use: 99, counters: { original: { packets: 1, bytes: 1 }, reply: { packets: 0, bytes: 0 } }, helper: 'ftp' })).toMatchObject({ id: e!.id });
    expect(await fx.ct.count()).toBe(KINDS.length);
  });

  it('deleted while an update reads it, or never there: ENOENT', async () => {
    const key = { protocol: 'udp' as const, original: { src: '10.9.6.1', dst: '10.9.9.9', sport: 1, dport: 2 } };
    await expect(fx.ct.update({ ...key, mark: 1 })).rejects.toMatchObject({ code: 'ENOENT', message: 'update: no such conntrack entry to update (ENOENT)' });
    await fx.ct.create({ ...key, timeout: 300 });
    const racing = Array.from({ length: 50 }, (_, i) => fx.ct.update({ ...key, mark: i + 1 }).then(() => 'ok', (x: ConntrackError) => x.code));
    await fx.ct.delete(key);
    const results = await Promise.all(racing);
    expect(results.every((r) => r === 'ok' || r === 'ENOENT')).toBe(true);
    await waitFor(async () => ((await fx.ct.count()) === 0 ? true : undefined));
  });
});
