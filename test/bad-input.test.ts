/**
 * Every public method with wrong types, out-of-range numbers, malformed
 * addresses and CIDRs, closed handles, and close() racing a dump or an event
 * read: always a ConntrackError or a TypeError, never a crash or a hang.
 */
import { expect, it } from 'vitest';
import { Conntrack, ConntrackError } from '../src/index.js';
import { describePrivileged, useNamespace } from './helpers/netns.js';

async function outcome(fn: () => unknown): Promise<unknown> {
  try {
    return await fn();
  } catch (e) {
    return e;
  }
}

function expectTypedError(e: unknown, what: string): void {
  const ok = e instanceof ConntrackError || e instanceof TypeError;
  expect(ok, `${what}: got ${e instanceof Error ? `${e.name}: ${e.message}` : JSON.stringify(e)}`).toBe(true);
}

const BAD_ADDRESSES = ['', ' ', '1.2.3', '1.2.3.4.5', '256.1.1.1', '01.2.3.4', '1.2.3.4/', '1.2.3.4/33', '1.2.3.4/-1', '::/129', ':::1', '1::2::3', 'g::1', 'fe80::1%eth0', '10.0.0.0/8/8', 'localhost', '1.2.3.4 ', '\0', 'a'.repeat(5000)];
const BAD_NUMBERS = [-1, 1.5, NaN, Infinity, 2 ** 32, '80', null, {}, [], true, 65536];
const WRONG_TYPES = [null, 0, 'x', true, Symbol('s'), () => 1, [], new Date()];

describePrivileged('bad input matrix', () => {
  const tcp = { protocol: 'tcp' as const, original: { src: '10.0.0.1', dst: '10.0.0.2', sport: 1, dport: 2 }, timeout: 60 };

  const fx = useNamespace('all');

  it('Conntrack.open with wrong options', async () => {
    for (const o of [null, 5, 'x', { netns: 5 }, { netns: '' }, { netns: '..' }, { netns: 'a\0b' }, { netns: '/nonexistent/x' }, { netns: '/dev/null' }, { netns: '/proc/self/ns/pid' }]) {
      expectTypedError(await outcome(() => Conntrack.open(o as never)), `open(${String(JSON.stringify(o))})`);
    }
  });

  it('filters: malformed addresses, ports, states, marks, zones, unknown keys, wrong types', async () => {
    const filters: unknown[] = [
      ...BAD_ADDRESSES.map((src) => ({ src })),
      ...BAD_ADDRESSES.map((dst) => ({ dst: [dst] })),
      { src: [] }, { src: [5] }, { src: {} },
      ...BAD_NUMBERS.map((sport) => ({ sport })),
      ...BAD_NUMBERS.map((dport) => ({ dport: [80, dport] })),
      ...BAD_NUMBERS.map((zone) => ({ zone })),
      ...BAD_NUMBERS.filter((n) => n !== 65536).map((mark) => ({ mark })),
      { mark: { value: 1 } }, { mark: { value: 3, mask: 1 } }, { mark: { value: -1, mask: 1 } },
      { state: 'NOPE' }, { state: [] }, { state: [1] }, { status: 'NOPE' }, { status: [null] },
      { protocol: 'tcpx' }, { protocol: 256 }, { protocol: -1 }, { protocol: null },
      { family: 'ipv5' }, { family: 4 }, { family: 'ipv4', src: '2001:db8::1' },
      { bogus: 1 }, 'x', 5, [], () => 1, {},
    ];
    expectTypedError(await outcome(() => fx.ct.deleteWhere({})), 'deleteWhere({})');
    for (const f of filters.filter((x) => !(typeof x === 'object' && x !== null && !Array.isArray(x) && Object.keys(x).length === 0))) {
      const what = `filter ${String(JSON.stringify(f))?.slice(0, 80)}`;
      expectTypedError(await outcome(() => fx.ct.list(f as never)), `list ${what}`);
      expectTypedError(await outcome(() => fx.ct.count(f as never)), `count ${what}`);
      expectTypedError(await outcome(() => fx.ct.dump(f as never)), `dump ${what}`);
      expectTypedError(await outcome(() => fx.ct.events({ filter: f as never })), `events ${what}`);
      expectTypedError(await outcome(() => fx.ct.deleteWhere(f as never)), `deleteWhere ${what}`);
    }
  });

  it('create, update, get, delete with malformed specs', async () => {
    const specs: unknown[] = [
      ...WRONG_TYPES,
      {}, { ...tcp, protocol: 'nope' }, { ...tcp, timeout: -1 }, { ...tcp, timeout: 2 ** 32 }, { ...tcp, timeout: '5' },
      ...BAD_ADDRESSES.map((src) => ({ ...tcp, original: { ...tcp.original, src } })),
      ...BAD_NUMBERS.map((sport) => ({ ...tcp, original: { ...tcp.original, sport } })),
      { ...tcp, original: null }, { ...tcp, original: 'x' }, { ...tcp, reply: 5 }, { ...tcp, reply: { src: '2001:db8::1', dst: '2001:db8::2', sport: 1, dport: 2 } },
      { ...tcp, state: 'NOPE' }, { ...tcp, state: 3 }, { ...tcp, status: 'ASSURED' }, { ...tcp, status: ['NOPE'] },
      { ...tcp, mark: -1 }, { ...tcp, zone: 65536 }, { ...tcp, protocol: 'udp', state: 'ESTABLISHED' },
      { protocol: 'icmp', original: { src: '10.0.0.1', dst: '10.0.0.2' }, timeout: 5 },
      { protocol: 'icmp', original: { src: '10.0.0.1', dst: '10.0.0.2', icmp: { type: 300, code: 0, id: 1 } }, timeout: 5 },
      { protocol: 'icmpv6', original: { src: '10.0.0.1', dst: '10.0.0.2', icmp: { type: 128, code: 0, id: 1 } }, timeout: 5 },
      { protocol: 'gre', original: { src: '10.0.0.1', dst: '10.0.0.2', sport: 1, dport: 2 }, timeout: 5 },
    ];
    for (const s of specs) {
      const what = String(JSON.stringify(s))?.slice(0, 100);
      expectTypedError(await outcome(() => fx.ct.create(s as never)), `create ${what}`);
      expectTypedError(await outcome(() => fx.ct.update(s as never)), `update ${what}`);
    }
    const queries: unknown[] = [...WRONG_TYPES, {}, { protocol: 'tcp', original: { src: '1.1.1.1', dst: '2.2.2.2' } }, { protocol: 'tcp', src: '1.1.1.1', dst: '2.2.2.2', sport: 1, dport: 2 }, { protocol: 'tcp', original: { src: '1.1.1.1', dst: '2.2.2.2', sport: 1, dport: 2 }, zone: -1 }, { protocol: 'tcp', original: { src: '1.1.1.1', dst: '2.2.2.2', sport: 1, dport: 2 }, id: -5 }];
    for (const q of queries) {
      expectTypedError(await outcome(() => fx.ct.get(q as never)), `get ${String(JSON.stringify(q))}`);
      expectTypedError(await outcome(() => fx.ct.delete(q as never)), `delete ${String(JSON.stringify(q))}`);
    }
    expect(fx.ns.list()).toEqual([]);
  });

  it('flush, deleteBySource, events, sysctl with wrong arguments', async () => {
    for (const o of [null, 'x', 5, { family: 'ipv5' }]) expectTypedError(await outcome(() => fx.ct.flush(o as never)), `flush ${JSON.stringify(o)}`);
    for (const src of [undefined, null, 5, {}, [], [5], ...BAD_ADDRESSES]) {
      expectTypedError(await outcome(() => fx.ct.deleteBySource(src as never)), `deleteBySource ${String(JSON.stringify(src))?.slice(0, 40)}`);
    }
    for (const o of [null, 'x', { direction: 'up' }, { zone: -1 }, { family: 'x' }, { protocol: 'x' }, { signal: {} }]) {
      expectTypedError(await outcome(() => fx.ct.deleteBySource('10.0.0.1', o as never)), `deleteBySource opts ${JSON.stringify(o)}`);
    }
    for (const o of [null, 5, { types: 'new' }, { types: [] }, { types: ['x'] }, { bufferBytes: -1 }, { bufferBytes: 'x' }, { queueLimit: 0 }, { queueLimit: 1.5 }, { onOverrun: 'x' }, { signal: 5 }]) {
      expectTypedError(await outcome(() => fx.ct.events(o as never)), `events ${JSON.stringify(o)}`);
    }
    for (const n of [null, '', '../../etc/passwd', 'nf_conntrack_max/../x', 5]) {
      expectTypedError(await outcome(() => fx.ct.readSysctl(n as never)), `readSysctl ${JSON.stringify(n)}`);
      expectTypedError(await outcome(() => fx.ct.writeSysctl(n as never, 1)), `writeSysctl ${JSON.stringify(n)}`);
    }
    expectTypedError(await outcome(() => fx.ct.writeSysctl('nf_conntrack_acct', {} as never)), 'writeSysctl value');
    expectTypedError(await outcome(() => fx.ct.writeSysctl('nf_conntrack_max', 5)), 'writeSysctl of a global from a namespace');
  });

  it('close() racing a dump and an event read; every call on a closed handle', async () => {
    const lines: string[] = [];
    for (let i = 0; i < 20000; i++) lines.push(`-I -p udp -s 10.1.${i >> 8}.${i & 255} -d 10.2.0.1 --sport 1 --dport 53 -t 300`);
    fx.ns.restore(lines);
    for (let round = 0; round < 20; round++) {
      const h = await Conntrack.open({ netns: fx.ns.name });
      const stream = h.events();
      const pendingEvent = stream.next();
      const dumping = (async () => {
        let n = 0;
        for await (const _ of h.dump()) if (++n === 100 + round * 50) h.close();
        return n;
      })();
      const listing = outcome(() => h.list());
      const result = await outcome(() => dumping);
      if (typeof result !== 'number') expectTypedError(result, 'dump after close');
      const listed = await listing;
      if (!Array.isArray(listed)) expectTypedError(listed, 'list racing close');
      expect((await pendingEvent).done).toBe(true);
      for (const call of [() => h.list(), () => h.count(), () => h.stats(), () => h.get({ protocol: 'tcp', original: { src: '1.1.1.1', dst: '2.2.2.2', sport: 1, dport: 2 } }), () => h.create(tcp), () => h.flush(), () => h.deleteBySource('10.0.0.1'), () => h.events(), () => h.readSysctl('nf_conntrack_acct')]) {
        const e = await outcome(call);
        expect(e).toBeInstanceOf(ConntrackError);
        expect((e as ConntrackError).code).toBe('EBADF');
      }
      h.close(); // idempotent
    }
    expect(await fx.ct.count()).toBe(20000);
  });
});
