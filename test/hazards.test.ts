/**
 * Nothing a caller passes can hang the process, widen a delete, or leak:
 * one regression test per finding of the adversarial audit, and a seeded
 * randomized fuzz of every public method (CONNTRACK_FUZZ_CALLS, default
 * 5000; CONNTRACK_FUZZ_SEED replays a run).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readlinkSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterEach, expect, it } from 'vitest';
import { Conntrack, ConntrackError, type Filter } from '../src/index.js';
import { CTMON } from './helpers/cli.js';
import { describePrivileged, itNeeds, useNamespace } from './helpers/netns.js';

const CALLS = Number(process.env.CONNTRACK_FUZZ_CALLS ?? 5000);
const FUZZ_SEED = process.env.CONNTRACK_FUZZ_SEED === undefined ? undefined : Number(process.env.CONNTRACK_FUZZ_SEED);

/** Open fds of this process that refer to a network namespace. */
function netnsFds(): number {
  let n = 0;
  for (const fd of readdirSync('/proc/self/fd')) {
    try {
      const link = readlinkSync(`/proc/self/fd/${fd}`);
      if (link.startsWith('net:[') || link.startsWith('/run/netns/')) n++;
    } catch {
      // closed while we looked
    }
  }
  return n;
}

function allFds(): number {
  return readdirSync('/proc/self/fd').length;
}

function threads(): number {
  return readdirSync('/proc/self/task').length;
}

async function settle(p: Promise<unknown>): Promise<unknown> {
  return p.then(() => undefined, (e: unknown) => e);
}

/** The caller's own error: must come back unchanged, never wrapped. */
class CallerError extends Error {}

describePrivileged('hazards: bad input never hangs, widens a delete or leaks', () => {
  const fx = useNamespace('each', 'cthaz');
  afterEach(() => {
    for (const k of ['family', 'direction', 'dryRun']) delete (Object.prototype as Record<string, unknown>)[k];
  });

  const load = (): void => {
    const lines: string[] = [];
    for (let i = 0; i < 20; i++) lines.push(`-I -p udp -s 10.1.0.${i} -d 10.2.0.1 --sport 1000 --dport 53 -t 300`);
    for (let i = 0; i < 10; i++) lines.push(`-I -p tcp -s 2001:db8::${i + 1} -d 2001:db8:1::1 --sport 1000 --dport 443 --state ESTABLISHED -t 300`);
    fx.ns.restore(lines);
  };

  it('a FIFO, a device or a relative path as netns: refused at once, the event loop never blocked', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ctfifo-'));
    try {
      const fifo = join(dir, 'fifo');
      execFileSync('mkfifo', [fifo]);
      let ticks = 0;
      const timer = setInterval(() => ticks++, 1);
      for (const netns of [fifo, '/dev/zero', '/dev/null', dir, '/proc/self/ns/mnt']) {
        const err = await settle(Conntrack.open({ netns }));
        expect(err, netns).toBeInstanceOf(ConntrackError);
        expect((err as ConntrackError).code, netns).toBe('EINVAL');
      }
      const before = ticks;
      await new Promise((r) => setTimeout(r, 20));
      clearInterval(timer);
      expect(ticks).toBeGreaterThan(before);
      for (const netns of ['a/b', '../x', './blue']) {
        const err = (await settle(Conntrack.open({ netns }))) as ConntrackError;
        expect(err.code).toBe('ERR_INVALID_ARG');
        expect(err.message).toContain('absolute path');
      }
      const r = spawnSync(process.execPath, [CTMON, 'stats', '--netns', fifo], { encoding: 'utf8', timeout: 10_000 });
      expect(r.status).toBe(64);
      expect(r.stderr).toContain('is not a network namespace');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a filter that selects every entry, or every entry of a family, is refused unless all: true, whatever its syntax', async () => {
    load();
    for (const call of [
      () => fx.ct.deleteWhere({ mark: { value: 0, mask: 0 } }),
      () => fx.ct.deleteBySource(['0.0.0.0/0', '::/0']),
      () => fx.ct.deleteWhere({ src: ['0.0.0.0/0', '::/0'] }),
      () => fx.ct.deleteWhere({ status: 'CONFIRMED' }),
      // A /0 selects every entry of its family (here the 20 IPv4 ones).
      () => fx.ct.deleteBySource('0.0.0.0/0'),
      () => fx.ct.deleteBySource(['0.0.0.0/0', '2001:db8::/32']),
      () => fx.ct.deleteWhere({ src: '0.0.0.0/0' }),
      () => fx.ct.deleteWhere({ dst: '0.0.0.0/0', family: 'ipv4' }),
      () => fx.ct.deleteWhere({ family: 'ipv4' }),
      () => fx.ct.deleteBySource('0.0.0.0/0', { dryRun: true }),
      () => fx.ct.updateWhere({ src: '0.0.0.0/0' }, { mark: 1 }),
      () => fx.ct.updateWhere({}, { mark: 1 }),
    ]) {
      const err = (await settle(call())) as ConntrackError;
      expect(err).toBeInstanceOf(ConntrackError);
      expect(err).toMatchObject({ code: 'ERR_INVALID_ARG', argument: 'all' });
      expect(err.message).toContain('all: true');
    }
    expect(await fx.ct.count()).toBe(30);
    expect(await fx.ct.count({ mark: 1 })).toBe(0);
    for (const [args, scope] of [
      [['--src', '0.0.0.0/0', '--src', '::/0'], 'every entry of the table, 30 now'],
      [['--src', '0.0.0.0/0'], 'every entry of an address family, 20 now'],
      [['-s', '0.0.0.0/0', '--direction', 'either'], 'every entry of an address family, 20 now'],
      [['-f', 'ipv6'], 'every entry of an address family, 10 now'],
    ] as const) {
      const cli = spawnSync(process.execPath, [CTMON, 'delete', '--netns', fx.ns.name, ...args], { encoding: 'utf8' });
      expect(cli.status, cli.stderr).toBe(64);
      // A CLI user is told the flag to add, and how many entries that is; not the library's option.
      expect(cli.stderr).toBe(`ctmon: this filter selects ${scope}: add --yes to delete them all (see ctmon --help)\n`);
    }
    expect(await fx.ct.count()).toBe(30);
    expect(await fx.ct.deleteBySource('0.0.0.0/0', { all: true })).toMatchObject({ matched: 20, deleted: 20 });
    expect(await fx.ct.deleteWhere({ mark: { value: 0, mask: 0 } }, { all: true })).toMatchObject({ matched: 10, deleted: 10 });
  });

  itNeeds(['procSys'], 'messages say what the rules are: timeouts from 1, a NAT target written IP:PORT, a refused sysctl value, the flag typed', async () => {
    const message = async (p: Promise<unknown>): Promise<string> => ((await settle(p)) as ConntrackError).message;
    const original = { src: '10.0.0.1', dst: '10.0.0.2', sport: 1, dport: 2 };
    expect(await message(fx.ct.create({ protocol: 'udp', original, timeout: 0 }))).toBe('create: timeout must be an integer from 1 to 4294967295, got 0');
    expect(await message(fx.ct.update({ protocol: 'udp', original, timeout: 0 }))).toBe('update: timeout must be an integer from 1 to 4294967295, got 0');
    expect(await message(fx.ct.create({ protocol: 'tcp', original, timeout: 9, nat: { dst: '127.0.0.1:8080' } })))
      .toBe("create: nat.dst: write { address: '127.0.0.1', port: 8080 }, not '127.0.0.1:8080' (an address with a port is an object here)");
    expect(await message(fx.ct.create({ protocol: 'tcp', original: { ...original, src: '2001:db8::1', dst: '2001:db8::2' }, timeout: 9, nat: { src: '[2001:db8::9]:80' } })))
      .toContain("write { address: '2001:db8::9', port: 80 }");
    const sysctl = (await settle(fx.ct.writeSysctl('nf_conntrack_tcp_timeout_established', 'abc'))) as ConntrackError;
    expect(sysctl).toMatchObject({ code: 'EINVAL' });
    expect(sysctl.message).toBe('writeSysctl: the kernel refused "abc" for nf_conntrack_tcp_timeout_established: it takes a whole number of seconds (it holds 432000 now) (EINVAL)');
    expect(await message(fx.ct.writeSysctl('nf_conntrack_acct', 5))).toContain('refused "5" for nf_conntrack_acct: it takes 0 or 1');
    // ctmon names the flag as it was typed, never the library's argument path.
    for (const [args, expected] of [
      [['-s', 'localhost'], "-s: 'localhost' is not an IPv4 or IPv6 address"],
      [['--src', '10.0.0.1', '--src', 'example.org'], "--src: 'example.org' is not an IPv4 or IPv6 address"],
      [['--orig-dst', '10.0.0.0/40'], "--orig-dst: '10.0.0.0/40' has an invalid prefix length (0-32 for IPv4)"],
      [['-r', 'gateway'], "-r: 'gateway' is not an IPv4 or IPv6 address"],
      [['-p', 'bogus'], '-p "bogus" is unknown (one of'],
      [['--state', 'NOPE'], '--state "NOPE" is unknown'],
      [['-w', '70000'], '-w must be an integer from 0 to 65535, got 70000'],
      [['-l', 'no-such-label'], '-l: unknown label "no-such-label"'],
    ] as const) {
      const r = spawnSync(process.execPath, [CTMON, 'list', '--netns', fx.ns.name, ...args], { encoding: 'utf8' });
      expect(r.status, r.stderr).toBe(64);
      expect(r.stderr).toContain(`ctmon: ${expected}`);
      expect(r.stderr).not.toMatch(/dump: |src\[0\]/);
    }
  });

  it('a polluted Object.prototype neither redirects a flush nor widens or defuses a delete', async () => {
    load();
    Object.assign(Object.prototype, { direction: 'either', dryRun: true });
    const r = await fx.ct.deleteBySource('10.2.0.1');
    // 10.2.0.1 is every entry's reply source: with `direction` inherited all 20 would go.
    expect(r.matched).toBe(0);
    expect((await fx.ct.deleteBySource('10.1.0.1')).deleted).toBe(1);
    delete (Object.prototype as Record<string, unknown>).direction;
    delete (Object.prototype as Record<string, unknown>).dryRun;
    Object.assign(Object.prototype, { family: 'ipv6' });
    await fx.ct.flush();
    expect(fx.ns.list()).toEqual([]);
  });

  it('events: inherited names are no event types', async () => {
    for (const t of ['toString', '__proto__', 'constructor', 'hasOwnProperty']) {
      expect(() => fx.ct.events({ types: [t as never] })).toThrow(ConntrackError);
    }
  });

  it('close() releases the namespace fd at once, also with work in flight', async () => {
    const base = netnsFds();
    const handles = await Promise.all(Array.from({ length: 50 }, () => Conntrack.open({ netns: fx.ns.name })));
    expect(netnsFds()).toBe(base + 50);
    for (const h of handles) h.close();
    expect(netnsFds()).toBe(base);

    load();
    const pending: Promise<unknown>[] = [];
    for (let round = 0; round < 30; round++) {
      const h = await Conntrack.open({ netns: fx.ns.name });
      const it = h.dump()[Symbol.asyncIterator]();
      const stream = h.events();
      pending.push(
        settle(h.list()), settle(it.next()), settle(h.count({ protocol: 'udp' })), settle(h.deleteBySource('192.0.2.1')),
        settle(h.deleteWhere({ dport: 9 })), settle(stream.next()), settle(h.stats()), settle(h.readSysctl('nf_conntrack_max')),
      );
      h.close();
    }
    const results = await Promise.all(pending);
    for (const r of results) if (r !== undefined) expect(r).toBeInstanceOf(ConntrackError);
    // In-flight jobs hold the namespace only until they return.
    const deadline = Date.now() + 5000;
    while (netnsFds() !== base && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    expect(netnsFds()).toBe(base);
  });

  it('smaller findings: SCTP state updates, a throwing getter, timeouts', async () => {
    await fx.ct.create({ protocol: 'sctp', original: { src: '10.7.0.1', dst: '10.7.0.2', sport: 5, dport: 6 }, state: 'ESTABLISHED', timeout: 100 });
    const key = { protocol: 'sctp' as const, original: { src: '10.7.0.1', dst: '10.7.0.2', sport: 5, dport: 6 } };
    await fx.ct.update({ ...key, timeout: 50 });
    expect((await fx.ct.get(key))?.state).toBe('ESTABLISHED');
    // A state without tags: the entry's own tags go with it (here the 0s create() sent), never reset.
    await fx.ct.update({ ...key, state: 'CLOSED' });
    expect(await fx.ct.get(key)).toMatchObject({ state: 'CLOSED', vtag: { original: 0, reply: 0 } });

    const mine = new CallerError('mine');
    const options = Object.defineProperty({}, 'dryRun', { get: () => { throw mine; }, enumerable: true });
    expect(await settle(fx.ct.deleteBySource('10.0.0.1', options))).toBe(mine);
    expect(await settle(fx.ct.deleteWhere({ get src(): string { throw mine; } } as Filter))).toBe(mine);

    const zero = (await settle(fx.ct.create({ protocol: 'udp', original: { src: '10.0.0.1', dst: '10.0.0.2', sport: 1, dport: 2 }, timeout: 0 }))) as ConntrackError;
    expect(zero.code).toBe('ERR_INVALID_ARG');
    expect(((await settle(fx.ct.list({ status: [] }))) as ConntrackError).code).toBe('ERR_INVALID_ARG');
  });

  it(`randomized API fuzz: ${CALLS} hostile calls, only ConntrackErrors or the caller's own, no hang, no leak`, async () => {
    load();
    const poison = new CallerError('poison');
    const hostile = fc.oneof(
      { depthSize: 'small' },
      fc.anything({ maxDepth: 2 }),
      fc.constantFrom(NaN, Infinity, -Infinity, -1, 2 ** 32, 2 ** 53, 1.5, 0, 65536, '', 'a\0b', 'x'.repeat(65536)),
      fc.bigInt(),
      fc.constantFrom('10.1.0.1', '0.0.0.0/0', '::/0', '2001:db8::/32', '10.0.0.0/33', '::ffff:10.1.0.1', '1.2.3.4/', '::1%lo', 'tcp', 'udp', 'icmp', 'gre', 'ipv4', 'ipv6', 'ESTABLISHED', 'ASSURED', 'new', 'toString', '__proto__'),
      // Hostile objects are made at call time (materialize): fast-check itself must not trip over them.
      fc.constantFrom('%NULLPROTO%', '%PROXY%', '%GETTER%', '%SPARSE%', '%CTOR%'),
    );
    const materialize = (v: unknown, depth = 0): unknown => {
      switch (v) {
        case '%NULLPROTO%': return Object.assign(Object.create(null) as object, { src: '10.1.0.1' });
        case '%PROXY%': return new Proxy({}, { get: () => { throw poison; }, ownKeys: () => { throw poison; }, has: () => { throw poison; }, getOwnPropertyDescriptor: () => { throw poison; } });
        case '%GETTER%': return Object.defineProperty({}, 'src', { get: () => { throw poison; }, enumerable: true });
        // eslint-disable-next-line no-sparse-arrays
        case '%SPARSE%': return [, '10.1.0.1'];
        case '%CTOR%': return Object.defineProperty(['10.1.0.1'], 'constructor', { value: 7 });
      }
      if (depth > 3 || typeof v !== 'object' || v === null) return v;
      if (Array.isArray(v)) return v.map((x) => materialize(x, depth + 1));
      if (Object.getPrototypeOf(v) !== Object.prototype) return v;
      return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, materialize(x, depth + 1)]));
    };
    const filterArb = fc.oneof(hostile, fc.dictionary(
      fc.constantFrom('family', 'protocol', 'src', 'dst', 'sport', 'dport', 'state', 'status', 'mark', 'zone', 'origZone', 'replyZone', 'bogus'),
      hostile, { maxKeys: 4 },
    ));
    const keyArb = fc.oneof(hostile, fc.record({
      protocol: hostile, original: fc.oneof(hostile, fc.dictionary(fc.constantFrom('src', 'dst', 'sport', 'dport', 'icmp', 'srcKey', 'dstKey', 'zone'), hostile, { maxKeys: 5 })),
      zone: hostile, id: hostile, timeout: hostile, state: hostile, status: hostile, mark: hostile,
    }, { requiredKeys: [] }));
    const call = fc.oneof(
      fc.tuple(fc.constant('list'), filterArb), fc.tuple(fc.constant('count'), filterArb), fc.tuple(fc.constant('dump'), filterArb),
      fc.tuple(fc.constant('get'), keyArb), fc.tuple(fc.constant('create'), keyArb), fc.tuple(fc.constant('update'), keyArb),
      fc.tuple(fc.constant('delete'), keyArb), fc.tuple(fc.constant('flush'), hostile),
      fc.tuple(fc.constant('deleteBySource'), hostile, hostile), fc.tuple(fc.constant('deleteWhere'), filterArb, hostile),
      fc.tuple(fc.constant('events'), fc.oneof(hostile, fc.record({ types: hostile, filter: filterArb, bufferBytes: hostile, queueLimit: hostile, processes: hostile, onOverrun: hostile }, { requiredKeys: [] }))),
      fc.tuple(fc.constant('readSysctl'), hostile), fc.tuple(fc.constant('processOf'), hostile), fc.tuple(fc.constant('open'), hostile),
    );
    // Warm up what the first calls allocate once (thread pool, sockets) before taking the baseline.
    await fx.ct.list();
    await fx.ct.count({ protocol: 'udp' });
    const base = { fds: allFds(), netns: netnsFds(), threads: threads(), rss: process.memoryUsage().rss };
    let n = 0;
    const unexpected: string[] = [];
    await fc.assert(fc.asyncProperty(call, async ([method, rawA, rawB]) => {
      n++;
      const a = materialize(rawA);
      const b = materialize(rawB);
      const target = fx.ct as unknown as Record<string, (...args: unknown[]) => unknown>;
      const run = async (): Promise<void> => {
        if (method === 'open') {
          (await Conntrack.open(a as never)).close();
        } else if (method === 'dump') {
          const it = (fx.ct.dump(a as Filter))[Symbol.asyncIterator]();
          await it.next();
          await it.return?.();
        } else if (method === 'events') {
          const s = fx.ct.events(a as never);
          await s.ready.catch(() => undefined);
          s.close();
        } else {
          await target[method]!.call(fx.ct, a, b);
        }
      };
      let timer: NodeJS.Timeout | undefined;
      const deadline = new Promise<'hung'>((r) => (timer = setTimeout(() => r('hung'), 5000)));
      const outcome = await Promise.race([run().then(() => undefined, (e: unknown) => e), deadline]);
      clearTimeout(timer);
      if (outcome === 'hung') unexpected.push(`${method} hung`);
      else if (outcome !== undefined && !(outcome instanceof ConntrackError) && outcome !== poison) {
        unexpected.push(`${method}: ${String(outcome)}`);
      }
      // Keep the table from running dry so deletes keep having something to match.
      if (n % 500 === 0) {
        fx.ns.conntrack('-F');
        load();
      }
      expect(unexpected).toEqual([]);
    }), { numRuns: CALLS, ...(FUZZ_SEED !== undefined ? { seed: FUZZ_SEED } : {}) });
    expect(n).toBe(CALLS);
    const deadline = Date.now() + 5000;
    // The handle keeps up to 4 idle request sockets (native/handle.cc): the pool may have grown to its bound.
    const POOL = 4;
    while ((allFds() > base.fds + POOL || netnsFds() > base.netns) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    expect(allFds()).toBeLessThanOrEqual(base.fds + POOL);
    expect(netnsFds()).toBe(base.netns);
    expect(threads()).toBeLessThanOrEqual(base.threads + 2);
    expect(process.memoryUsage().rss - base.rss).toBeLessThan(256 << 20);
  }, 600_000);
});
