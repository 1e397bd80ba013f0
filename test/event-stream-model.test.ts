/**
 * Model-based test of event streams (fast-check `commands`): random
 * interleavings of next() (awaited, or left pending as a lost
 * Promise.race leaves it), return(), throw(), close(), an abort, the
 * handle's close(), stats() and real kernel events (ct.create/update/delete,
 * ct.expectations.create/delete on ftp masters), with queue limits small
 * enough to overflow for real, checked against a plain queue model: the
 * calls settle in call order with the generated events in kernel order,
 * each overrun accounts for the events it replaces, every call settles once
 * the stream ends, and delivered + lost = generated, in the model and in
 * stats(). For events() and expectationEvents(), in this thread and inside
 * a Worker that is terminated mid-run.
 *
 * CONNTRACK_MBT_RUNS runs per stream kind (default 200; an eighth of it, at
 * least 10, in Workers). Each run picks its seed unless CONNTRACK_MBT_SEED
 * is set; a failure prints the seed and path, and CONNTRACK_MBT_SEED plus
 * CONNTRACK_MBT_PATH (with CONNTRACK_MBT_COMMANDS, the replayPath it prints) replay it.
 */
import type { ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { Conntrack, type Entry } from '../src/index.js';
import { ftpExchange, ftpHelper } from './helpers/ftp.js';
import { describePrivileged, useNamespace, waitFor } from './helpers/netns.js';
import { sockets, threads } from './helpers/resources.js';
import { streamDriver, workerDriver, type EndHow, type Outcome, type StreamDriver } from './helpers/stream-driver.mjs';

const RUNS = Number(process.env.CONNTRACK_MBT_RUNS ?? 200);
const WORKER_RUNS = Math.max(10, Math.round(RUNS / 8));
const SEED = process.env.CONNTRACK_MBT_SEED === undefined ? Math.floor(Math.random() * 0x7fffffff) : Number(process.env.CONNTRACK_MBT_SEED);
const PATH = process.env.CONNTRACK_MBT_PATH;
/** fast-check's replayPath of the shrunk command list (printed in the counterexample): with the seed and path, replays exactly. */
const REPLAY_COMMANDS = process.env.CONNTRACK_MBT_COMMANDS;
const ENTRY = fileURLToPath(new URL('../dist/index.js', import.meta.url));
/** How long a call that must settle may take before it counts as never settling. */
const MUST_SETTLE_MS = 5000;

type Table = 'entries' | 'expectations';
interface GenOp { kind: 'add' | 'change' | 'remove'; pick: number }

/** The namespace side: makes one real kernel event per op and says which key the stream will show for it. */
interface World {
  readonly table: Table;
  readonly netns: string;
  make(op: GenOp): Promise<string>;
  /** Removes what a run left, before the next run subscribes. */
  reset(): Promise<void>;
}

interface StreamOptions { queueLimit: number; onOverrun: 'report' | 'throw' }

interface Model {
  readonly options: StreamOptions;
  readonly inWorker: boolean;
  /** Keys of the events made while the stream listened, in kernel order. */
  generated: string[];
  /** How many of them settled calls have accounted for, delivered or lost. */
  accounted: number;
  delivered: number;
  lost: number;
  overruns: number;
  /** Calls made and not yet checked, oldest first. */
  calls: number[];
  /** The stream was ended (by the test, or by a loss under onOverrun: 'throw'). */
  ended: boolean;
  /** A call settled done or rejected: every later call must settle done. */
  over: boolean;
  terminated: boolean;
}

interface Real {
  driver: StreamDriver;
  world: World;
  terminate?: () => Promise<number>;
}

type Cmd = fc.AsyncCommand<Model, Real, false>;

/** What the runs exercised, summed over a property: each must happen, or the model tested too little. */
const seen = { runs: 0, events: 0, calls: 0, overruns: 0, rejections: 0, endedWhilePending: 0, pendingGotEvent: 0, terminatedWhilePending: 0 };

const describeModel = (m: Model): string =>
  `generated ${m.generated.length}, accounted ${m.accounted} (delivered ${m.delivered}, lost ${m.lost} in ${m.overruns} overruns), ${m.calls.length} calls unchecked, ended ${m.ended}, options ${JSON.stringify(m.options)}`;

/** Checks one settled call against the model, in call order. */
function account(m: Model, o: Outcome): void {
  const where = describeModel(m);
  if (o.kind === 'pending') throw new Error(`a next() call that must settle is still pending after ${MUST_SETTLE_MS} ms: ${where}`);
  if (o.kind === 'done') {
    expect(m.ended, `done while the stream is open: ${where}`).toBe(true);
    m.over = true;
    return;
  }
  expect(m.over, `${JSON.stringify(o)} after a call settled done or rejected: ${where}`).toBe(false);
  if (o.kind === 'event') {
    expect(o.key, `the next event in kernel order: ${where}`).toBe(m.generated[m.accounted]);
    m.accounted++;
    m.delivered++;
    return;
  }
  // A loss: reported as an overrun, or the one rejection under onOverrun: 'throw'.
  if (o.kind === 'error') {
    expect(m.options.onOverrun, `a rejection: ${where}`).toBe('throw');
    expect(o.code).toBe('ENOBUFS');
    m.ended = m.over = true;
    seen.rejections++;
  } else {
    expect(m.options.onOverrun, `an overrun event: ${where}`).toBe('report');
    seen.overruns++;
  }
  const lost = o.lost ?? 0;
  expect(lost, `an overrun's count: ${where}`).toBeGreaterThanOrEqual(1);
  expect(lost, `an overrun's count: ${where}`).toBeLessThanOrEqual(m.generated.length - m.accounted);
  m.accounted += lost;
  m.lost += lost;
  m.overruns++;
}

/** A call is sure to settle once the stream ended, or while events it may get are still unaccounted. */
const canSettle = (m: Model): boolean => m.ended || m.accounted < m.generated.length;

async function settleOldest(m: Model, r: Real): Promise<void> {
  const o = await r.driver.outcome(m.calls[0]!, MUST_SETTLE_MS);
  if (o.kind !== 'pending') m.calls.shift();
  account(m, o);
}

async function call(m: Model, r: Real): Promise<void> {
  seen.calls++;
  m.calls.push(await r.driver.next());
}

class Generate implements Cmd {
  constructor(readonly ops: GenOp[]) {}
  check = (m: Readonly<Model>): boolean => !m.terminated;
  async run(m: Model, r: Real): Promise<void> {
    for (const op of this.ops) {
      const key = await r.world.make(op);
      if (!m.ended) m.generated.push(key);
      seen.events++;
    }
  }
  toString = (): string => `generate(${this.ops.map((o) => `${o.kind}#${o.pick}`).join(',')})`;
}

/** next() left pending, as an abandoned Promise.race([s.next(), timeout]) leaves it. */
class NextPending implements Cmd {
  check = (m: Readonly<Model>): boolean => !m.terminated;
  run = call;
  toString = (): string => 'next (pending)';
}

class NextAwaited implements Cmd {
  check = (m: Readonly<Model>): boolean => !m.terminated && m.calls.length === 0 && canSettle(m);
  async run(m: Model, r: Real): Promise<void> {
    await call(m, r);
    await settleOldest(m, r);
  }
  toString = (): string => 'await next()';
}

class AwaitOldest implements Cmd {
  check = (m: Readonly<Model>): boolean => !m.terminated && m.calls.length > 0 && canSettle(m);
  async run(m: Model, r: Real): Promise<void> {
    const delivered = m.delivered;
    await settleOldest(m, r);
    if (m.delivered > delivered) seen.pendingGotEvent++;
  }
  toString = (): string => 'await the oldest pending call';
}

/** Reads until every generated event is accounted for: delivered + lost = generated, in stats() too. */
class Drain implements Cmd {
  check = (m: Readonly<Model>): boolean => !m.terminated && !m.ended && m.calls.length === 0;
  async run(m: Model, r: Real): Promise<void> {
    while (!m.ended && m.accounted < m.generated.length) {
      await call(m, r);
      await settleOldest(m, r);
    }
    if (m.ended) return;
    expect(m.delivered + m.lost).toBe(m.generated.length);
    const s = await r.driver.stats();
    expect({ received: s.received, delivered: s.delivered, dropped: s.dropped, overruns: s.overruns, queued: s.queued, closed: s.closed }, describeModel(m))
      .toEqual({ received: m.generated.length, delivered: m.delivered, dropped: m.lost, overruns: m.overruns, queued: 0, closed: false });
  }
  toString = (): string => 'drain';
}

class Stats implements Cmd {
  check = (m: Readonly<Model>): boolean => !m.terminated && m.calls.length === 0;
  async run(m: Model, r: Real): Promise<void> {
    const s = await r.driver.stats();
    const where = describeModel(m);
    expect(s.delivered, where).toBe(m.delivered);
    expect(s.closed, where).toBe(m.ended);
    if (m.ended) return;
    expect(s.overruns, where).toBeGreaterThanOrEqual(m.overruns);
    expect(s.dropped, where).toBeGreaterThanOrEqual(m.lost);
    expect(s.received, where).toBeLessThanOrEqual(m.generated.length);
  }
  toString = (): string => 'stats';
}

/** close(), return(), throw(), an abort or the handle's close(): every call settles, later ones done at once. */
class End implements Cmd {
  constructor(readonly how: EndHow) {}
  check = (m: Readonly<Model>): boolean => !m.terminated;
  async run(m: Model, r: Real): Promise<void> {
    const res = await r.driver.end(this.how);
    if (this.how === 'return') expect(res.returned).toEqual({ done: true, value: undefined });
    if (this.how === 'throw') expect(res.rejectedWithIt).toBe(true);
    m.ended = true;
    if (m.calls.length > 0) seen.endedWhilePending++;
    while (m.calls.length > 0) await settleOldest(m, r);
    const later = await r.driver.next();
    expect(await r.driver.outcome(later, MUST_SETTLE_MS)).toEqual({ kind: 'done' });
    m.over = true;
    const s = await r.driver.stats();
    expect(s.closed).toBe(true);
    expect(s.delivered).toBe(m.delivered);
  }
  toString = (): string => `end by ${this.how}`;
}

/** Terminates the Worker holding the stream, whatever is pending. */
class Terminate implements Cmd {
  check = (m: Readonly<Model>): boolean => m.inWorker && !m.terminated;
  async run(m: Model, r: Real): Promise<void> {
    await r.terminate!();
    if (m.calls.length > 0) seen.terminatedWhilePending++;
    m.terminated = m.ended = true;
    m.calls = [];
  }
  toString = (): string => 'terminate the worker';
}

const genOpArb = fc.record({ kind: fc.constantFrom('add', 'change', 'remove'), pick: fc.nat(7) }) as fc.Arbitrary<GenOp>;

function commandsArb(inWorker: boolean): fc.Arbitrary<Iterable<Cmd>> {
  const generate = fc.array(genOpArb, { minLength: 1, maxLength: 5 }).map((ops) => new Generate(ops));
  const arbs: fc.Arbitrary<Cmd>[] = [
    generate, generate, generate,
    fc.constant(new NextPending()), fc.constant(new NextPending()), fc.constant(new NextPending()),
    fc.constant(new AwaitOldest()), fc.constant(new AwaitOldest()),
    fc.constant(new NextAwaited()), fc.constant(new NextAwaited()),
    fc.constant(new Drain()),
    fc.constant(new Stats()),
    fc.constantFrom<EndHow>('close', 'return', 'throw', 'abort', 'handle').map((how) => new End(how)),
  ];
  if (inWorker) arbs.push(fc.constant(new Terminate()));
  return fc.commands(arbs, { maxCommands: 40, size: 'medium', ...(REPLAY_COMMANDS ? { replayPath: REPLAY_COMMANDS } : {}) });
}

const optionsArb: fc.Arbitrary<StreamOptions> = fc.record({
  queueLimit: fc.constantFrom(1, 2, 3, 8, 262144),
  onOverrun: fc.constantFrom<'report' | 'throw'>('report', 'report', 'throw'),
});

/** A stream in this thread: its own handle (so ending by the handle's close() leaves the world's alone). */
async function localReal(world: World, options: StreamOptions): Promise<Real & { dispose(): void }> {
  const ct = await Conntrack.open({ netns: world.netns });
  const ac = new AbortController();
  const stream = world.table === 'entries' ? ct.events({ ...options, signal: ac.signal }) : ct.expectationEvents({ ...options, signal: ac.signal });
  await stream.ready;
  return { driver: streamDriver(ct, stream as never, ac), world, dispose: () => ct.close() };
}

/** Runs the model against one kind of stream; with inWorker, each run's stream lives in a Worker that is terminated by the end of the run. */
async function check(world: World, inWorker: boolean, numRuns: number): Promise<void> {
  const workerErrors: unknown[] = [];
  for (const k of Object.keys(seen) as (keyof typeof seen)[]) seen[k] = 0;
  const property = fc.asyncProperty(optionsArb, commandsArb(inWorker), async (options, cmds) => {
    seen.runs++;
    const m: Model = { options, inWorker, generated: [], accounted: 0, delivered: 0, lost: 0, overruns: 0, calls: [], ended: false, over: false, terminated: false };
    let real: Real;
    let dispose: () => unknown;
    if (inWorker) {
      const w = await workerDriver(ENTRY, world.netns, world.table, { ...options });
      real = { driver: w.driver, world, terminate: w.terminate };
      dispose = async () => {
        await w.terminate();
        workerErrors.push(...w.errors);
      };
    } else {
      const l = await localReal(world, options);
      real = l;
      dispose = l.dispose;
    }
    try {
      await fc.asyncModelRun(() => ({ model: m, real }), cmds);
      // The end of every local run: everything accounted for, then every call settles.
      if (!inWorker && !m.ended) await new Drain().run(m, real);
      if (!inWorker) await new End('close').run(m, real);
    } finally {
      await dispose();
      await world.reset();
    }
  });
  const details = await fc.check(property, { numRuns, seed: SEED, ...(PATH ? { path: PATH } : {}) });
  if (details.failed) {
    throw new Error(`replay with CONNTRACK_MBT_SEED=${details.seed} CONNTRACK_MBT_PATH=${details.counterexamplePath ?? ''} CONNTRACK_MBT_COMMANDS=<the replayPath in the counterexample below>\n${fc.defaultReportMessage(details)}`, { cause: details.errorInstance });
  }
  expect(workerErrors).toEqual([]);
  console.info(`${world.table}${inWorker ? ' in Workers' : ''}: ${numRuns} runs, seed ${SEED}, exercised ${JSON.stringify(seen)}`);
  const wanted = inWorker ? ['terminatedWhilePending'] : ['overruns', 'rejections', 'endedWhilePending', 'pendingGotEvent'];
  for (const k of wanted) expect(seen[k as keyof typeof seen], `runs that exercised ${k}: ${JSON.stringify(seen)}`).toBeGreaterThan(0);
}


/** Runs the Worker variant and checks that the terminated Workers left no socket or thread behind. */
async function checkInWorkers(world: World): Promise<void> {
  // The thread pool and this process's own sockets exist before the baseline.
  await Promise.all([1, 2, 3, 4].map(() => world.reset()));
  const base = { sockets: sockets(), threads: threads() };
  await check(world, true, WORKER_RUNS);
  const back = await waitFor(() => (sockets() <= base.sockets && threads() <= base.threads ? true : undefined), 10_000, 'sockets and threads to return after the Workers').catch(() => false);
  expect(back ? base : { sockets: sockets(), threads: threads() }).toEqual(base);
}

/** The two tests each kind of stream gets: runs in this thread, and runs in Workers. */
function modelTests(world: World): void {
  it(`${RUNS} runs in this thread`, async () => {
    await check(world, false, RUNS);
  }, 600_000);

  it(`${WORKER_RUNS} runs inside Workers, each terminated by the end of its run: no crash, sockets and threads back`, async () => {
    await checkInWorkers(world);
  }, 600_000);
}

describePrivileged('events(): random interleavings against a queue model', () => {
  const fx = useNamespace('all', 'ctmbt');
  let port = 0;
  let mark = 0;
  let live: Entry['original'][] = [];
  const world: World = {
    table: 'entries',
    get netns() {
      return fx.ns.name;
    },
    async make(op) {
      if (op.kind === 'add' || live.length === 0) {
        const original = { src: '10.30.0.1', dst: '10.30.0.2', sport: 1024 + (port++ % 60000), dport: 53 };
        await fx.ct.create({ protocol: 'udp', original, timeout: 600 });
        live.push(original);
        return `new:${original.sport}`;
      }
      const i = op.pick % live.length;
      const original = live[i]!;
      if (op.kind === 'change') {
        // A new mark each time: update() writes only what differs, and an update that changes nothing sends no event.
        await fx.ct.update({ protocol: 'udp', original, mark: ++mark });
        return `update:${original.sport}`;
      }
      await fx.ct.delete({ protocol: 'udp', original });
      live.splice(i, 1);
      return `destroy:${original.sport}`;
    },
    async reset() {
      await fx.ct.flush();
      live = [];
    },
  };

  modelTests(world);
});

describePrivileged('expectationEvents(): random interleavings against a queue model', () => {
  const fx = useNamespace('all', 'ctmbtx');
  const MASTERS = 3;
  let ftp: ChildProcess[] = [];
  let masters: Entry[] = [];
  /** The expected destination port of each master's live expectation, or undefined. */
  let live: (number | undefined)[] = [];
  let port = 0;

  beforeAll(async () => {
    ftpHelper(fx.ns);
    // The kernel reports a master's expectations only if someone listened when the master was created.
    const keeper = fx.ct.expectationEvents();
    await keeper.ready;
    for (let i = 0; i < MASTERS; i++) ftp.push(await ftpExchange(fx.ns, 51210 + i));
    keeper.close();
    masters = await waitFor(async () => {
      const l = await fx.ct.list({ protocol: 'tcp', dport: 21 });
      return l.length === MASTERS ? l : undefined;
    }, 10_000, 'the ftp masters');
    await fx.ct.expectations.flush();
    live = masters.map(() => undefined);
  });
  afterAll(() => {
    for (const p of ftp) p.kill('SIGKILL');
    ftp = [];
  });

  const tuple = (dport: number) => ({ src: '127.0.0.1', dst: '127.0.0.1', sport: 0, dport });
  const world: World = {
    table: 'expectations',
    get netns() {
      return fx.ns.name;
    },
    async make(op) {
      const free = live.flatMap((d, i) => (d === undefined ? [i] : []));
      const held = live.flatMap((d, i) => (d === undefined ? [] : [i]));
      if (held.length === 0 || (op.kind !== 'remove' && free.length > 0)) {
        const i = free[op.pick % free.length]!;
        const dport = 1024 + (port++ % 50000);
        await fx.ct.expectations.create({ master: masters[i]!, protocol: 'tcp', tuple: tuple(dport), timeout: 600 });
        live[i] = dport;
        return `expect-new:${dport}`;
      }
      const i = held[op.pick % held.length]!;
      const dport = live[i]!;
      expect(await fx.ct.expectations.delete({ protocol: 'tcp', tuple: tuple(dport) })).toBe(true);
      live[i] = undefined;
      return `expect-destroy:${dport}`;
    },
    async reset() {
      await fx.ct.expectations.flush();
      live = masters.map(() => undefined);
    },
  };

  modelTests(world);
});
