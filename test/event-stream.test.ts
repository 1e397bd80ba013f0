/**
 * An event stream never leaves a promise pending: every next() settles, in
 * call order, with the next event; close(), return(), throw(), an abort and
 * the handle's close() settle every pending call; two readers of one stream
 * share its events, each seen once; a loss or a native error rejects exactly
 * one call. Real events (ct.create/ct.delete) in a namespace per test.
 * The generated interleavings are in event-stream-model.test.ts.
 */
import { spawn, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';
import { ConntrackError, type Conntrack, type ConntrackEvent, type ConntrackEventStream } from '../src/index.js';
import { describePrivileged, useNamespace, waitFor } from './helpers/netns.js';
import { sockets, threads } from './helpers/resources.js';

/** UDP entries with source ports `from`..`from+n-1`: one NEW event each. */
async function createEntries(ct: Conntrack, from: number, n: number): Promise<void> {
  for (let i = 0; i < n; i++) {
    await ct.create({ protocol: 'udp', original: { src: '10.20.0.1', dst: '10.20.0.2', sport: from + i, dport: 53 }, timeout: 300 });
  }
}

/** What a settled next() gave, short: 'new:1000', 'overrun:3', 'done'. */
function label(r: IteratorResult<ConntrackEvent, undefined>): string {
  if (r.done) return 'done';
  const ev = r.value;
  return ev.type === 'overrun' ? `overrun:${ev.lost}` : `${ev.type}:${ev.entry.original.sport}`;
}

const PENDING = Symbol('pending');


/** The promise's outcome if it settles within `ms`, else PENDING: a call that never settles fails the test instead of hanging it. */
async function within<T>(p: Promise<T>, ms = 3000): Promise<T | typeof PENDING> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<typeof PENDING>((r) => (timer = setTimeout(() => r(PENDING), ms)));
  try {
    return await Promise.race([p, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** Labels of calls that all settle within the deadline; a pending one reads 'pending'. */
async function labels(calls: Promise<IteratorResult<ConntrackEvent, undefined>>[]): Promise<string[]> {
  return Promise.all(calls.map(async (p) => {
    const r = await within(p);
    return r === PENDING ? 'pending' : label(r);
  }));
}

async function ready(stream: ConntrackEventStream): Promise<ConntrackEventStream> {
  await stream.ready;
  return stream;
}

const entry = fileURLToPath(new URL('../dist/index.js', import.meta.url));

describePrivileged('an event stream never leaves a promise pending', () => {
  const fx = useNamespace('each', 'ctstream');

  it('two next() calls in flight settle in call order with the next two events; stats count what was handed over', async () => {
    const s = await ready(fx.ct.events());
    const first = s.next();
    const second = s.next();
    await createEntries(fx.ct, 1000, 3);
    expect(await labels([first, second])).toEqual(['new:1000', 'new:1001']);
    const third = s.next();
    expect(await labels([third])).toEqual(['new:1002']);
    expect(s.stats()).toMatchObject({ received: 3, delivered: 3, queued: 0 });
    s.close();
  });

  it('every call made before the events arrive gets one of them, in order, and the calls left over end with close()', async () => {
    const s = await ready(fx.ct.events());
    const calls = Array.from({ length: 8 }, () => s.next());
    await createEntries(fx.ct, 2000, 5);
    expect(await labels(calls.slice(0, 5))).toEqual([2000, 2001, 2002, 2003, 2004].map((p) => `new:${p}`));
    s.close();
    expect(await labels(calls.slice(5))).toEqual(['done', 'done', 'done']);
    expect(await labels([s.next()])).toEqual(['done']);
  });

  it('two for await loops over one stream together see every event exactly once, and both end on close()', async () => {
    const s = await ready(fx.ct.events());
    const seen: number[][] = [[], []];
    const N = 40;
    let total = 0;
    const loop = async (i: number): Promise<void> => {
      for await (const ev of s) {
        if (ev.type === 'new') seen[i]!.push(ev.entry.original.sport!);
        if (++total === N) s.close();
      }
    };
    const loops = Promise.all([loop(0), loop(1)]);
    await createEntries(fx.ct, 3000, N);
    expect(await within(loops)).not.toBe(PENDING);
    const all = [...seen[0]!, ...seen[1]!].sort((a, b) => a - b);
    expect(all).toEqual(Array.from({ length: N }, (_, i) => 3000 + i));
    // Each loop sees its share in kernel order, and both got some.
    for (const part of seen) {
      expect(part).toEqual([...part].sort((a, b) => a - b));
      expect(part.length).toBeGreaterThan(0);
    }
  });

  it('Promise.race([s.next(), timeout]) in a loop: the calls that lost the race still get the next events, in order', async () => {
    const s = await ready(fx.ct.events());
    const orphans: Promise<IteratorResult<ConntrackEvent, undefined>>[] = [];
    for (let i = 0; i < 5; i++) {
      const call = s.next();
      const r = await Promise.race([call, new Promise<'timeout'>((res) => setTimeout(() => res('timeout'), 5))]);
      expect(r).toBe('timeout');
      orphans.push(call);
    }
    await createEntries(fx.ct, 4000, 6);
    expect(await labels(orphans)).toEqual([4000, 4001, 4002, 4003, 4004].map((p) => `new:${p}`));
    expect(await labels([s.next()])).toEqual(['new:4005']);
    expect(s.stats()).toMatchObject({ delivered: 6, queued: 0 });
    s.close();
  });

  for (const [how, end] of [
    ['close()', (s: ConntrackEventStream) => s.close()],
    ['return()', (s: ConntrackEventStream) => s.return()],
    ['throw(err)', (s: ConntrackEventStream) => s.throw(new Error('stop')).catch(() => undefined)],
    ['the signal', (_s: ConntrackEventStream, ac: AbortController) => ac.abort()],
    ["the handle's close()", (_s: ConntrackEventStream, _ac: AbortController, ct: Conntrack) => ct.close()],
    ['await using', (s: ConntrackEventStream) => s[Symbol.asyncDispose]()],
  ] as const) {
    it(`${how} closes the socket, stops the thread and settles every pending call with { done: true }, and later calls too`, async () => {
      const before = { sockets: sockets(), threads: threads() };
      const ac = new AbortController();
      const s = await ready(fx.ct.events({ signal: ac.signal }));
      expect(sockets()).toBe(before.sockets + 1);
      expect(threads()).toBe(before.threads + 1);
      const calls = [s.next(), s.next(), s.next()];
      await end(s, ac, fx.ct);
      expect(await labels([...calls, s.next()])).toEqual(['done', 'done', 'done', 'done']);
      expect(s.closed).toBe(true);
      expect({ sockets: sockets(), threads: threads() }).toEqual(how === "the handle's close()" ? { sockets: before.sockets - 1, threads: before.threads } : before);
    });
  }

  it('await using ends the stream at the end of its block', async () => {
    let calls: Promise<IteratorResult<ConntrackEvent, undefined>>[] = [];
    let kept: ConntrackEventStream | undefined;
    {
      await using s = await ready(fx.ct.events());
      kept = s;
      calls = [s.next(), s.next()];
    }
    expect(kept.closed).toBe(true);
    expect(await labels(calls)).toEqual(['done', 'done']);
  });

  it('break in one of two loops ends the stream for both: the other loop ends too', async () => {
    const s = await ready(fx.ct.events());
    const got: string[] = [];
    const breaker = (async () => {
      for await (const ev of s) {
        got.push(label({ done: false, value: ev }));
        break;
      }
    })();
    const other = (async () => {
      for await (const ev of s) got.push(label({ done: false, value: ev }));
      got.push('other ended');
    })();
    const before = { sockets: sockets(), threads: threads() };
    await createEntries(fx.ct, 6000, 1);
    expect(await within(Promise.all([breaker, other]))).not.toBe(PENDING);
    expect(got).toEqual(['new:6000', 'other ended']);
    expect(s.closed).toBe(true);
    expect({ sockets: sockets(), threads: threads() }).toEqual({ sockets: before.sockets - 1, threads: before.threads - 1 });
  });

  it('return() resolves { done: true } and ends the stream', async () => {
    const s = await ready(fx.ct.events());
    const pending = s.next();
    expect(await s.return()).toEqual({ done: true, value: undefined });
    expect(await labels([pending])).toEqual(['done']);
  });

  it('throw(err) ends the stream, settles the pending calls with { done: true } and rejects with err, as the async iterator protocol says', async () => {
    const s = await ready(fx.ct.events());
    const calls = [s.next(), s.next()];
    const err = new Error('caller gave up');
    await expect(s.throw(err)).rejects.toBe(err);
    expect(await labels(calls)).toEqual(['done', 'done']);
    expect(s.closed).toBe(true);
    // yield* delegates a throw to the stream: the outer generator ends with the same error.
    const inner = await ready(fx.ct.events());
    const outer = (async function* () {
      yield* inner;
    })();
    const step = outer.next();
    await createEntries(fx.ct, 5000, 1);
    expect(label((await step) as IteratorResult<ConntrackEvent, undefined>)).toBe('new:5000');
    await expect(outer.throw(err)).rejects.toBe(err);
    expect(inner.closed).toBe(true);
  });

  for (const method of ['events', 'expectationEvents'] as const) {
    it(`${method}({ signal }) with an already aborted signal returns a closed stream`, async () => {
      const ac = new AbortController();
      ac.abort();
      const s = fx.ct[method]({ signal: ac.signal });
      expect(s.closed).toBe(true);
      await expect(s.ready).resolves.toBeUndefined();
      expect(await within(s.next())).toEqual({ done: true, value: undefined });
      // The handle does not keep it: closing the handle afterwards is fine.
      fx.ct.close();
    });
  }

  it("onOverrun: 'throw': exactly one pending call rejects with ENOBUFS, the others settle { done: true }", async () => {
    const s = await ready(fx.ct.events({ types: ['new'], queueLimit: 1, onOverrun: 'throw' }));
    const calls = [s.next(), s.next(), s.next(), s.next()];
    const lines: string[] = [];
    for (let i = 0; i < 50; i++) lines.push(`-I -p udp -s 10.21.0.${i} -d 10.21.1.1 --sport 1 --dport 2 -t 300`);
    fx.ns.restore(lines); // the event loop is blocked: the queue of 1 overflows
    const outcomes = await Promise.all(calls.map((p) => within(p.then(label, (e: unknown) => e))));
    expect(outcomes[0]).toMatch(/^new:/);
    expect(outcomes[1]).toBeInstanceOf(ConntrackError);
    expect(outcomes[1]).toMatchObject({ code: 'ENOBUFS', lost: 49 });
    expect(outcomes.slice(2)).toEqual(['done', 'done']);
    expect(s.closed).toBe(true);
  });

  it('a native error (the stream cannot get a file descriptor): exactly one pending call rejects, the others settle { done: true }', () => {
    // In a child: it uses up its own file descriptors first.
    const code = `
      import { openSync, closeSync } from 'node:fs';
      const { Conntrack } = await import(${JSON.stringify(entry)});
      const ct = await Conntrack.open({ netns: ${JSON.stringify(fx.ns.name)} });
      // One stream first: the sanitizer build checks each C++ type once, and needs spare descriptors to do it.
      const warm = ct.events();
      await warm.ready;
      warm.close();
      const fillers = [];
      try { for (;;) fillers.push(openSync('/dev/null', 'r')); } catch {}
      const s = ct.events();
      const calls = [s.next(), s.next(), s.next()];
      const out = await Promise.all(calls.map((p) => p.then((r) => (r.done ? 'done' : 'event'), (e) => e.code + ':' + e.op + ':' + e.message)));
      const ready = await s.ready.then(() => 'resolved', (e) => e.code);
      for (const fd of fillers) closeSync(fd);
      console.log(JSON.stringify({ out, ready, closed: s.closed }));
      process.exit(0);`;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', code], { encoding: 'utf8', timeout: 20_000 });
    expect(r.stderr).toBe('');
    expect(JSON.parse(r.stdout)).toEqual({ out: [expect.stringMatching(/^EMFILE:events:events: .*raise its limit \(ulimit -n/), 'done', 'done'], ready: 'EMFILE', closed: true });
  });

  it('a waiting call keeps the process alive and its stream from garbage collection: a for await loop in a function nothing else references gets the next event', async () => {
    // The native side holds the stream weakly; only its waiting call may keep it, and after the timer nothing else keeps the process.
    const code = `
      const { Conntrack } = await import(${JSON.stringify(entry)});
      async function watch() {
        const ct = await Conntrack.open({ netns: ${JSON.stringify(fx.ns.name)} });
        const s = ct.events();
        await s.ready;
        setTimeout(() => { for (let i = 0; i < 5; i++) globalThis.gc(); console.log('collected'); }, 50);
        for await (const ev of s) { console.log('got ' + ev.type); break; }
        ct.close();
      }
      watch();`;
    const child = spawn(process.execPath, ['--expose-gc', '--input-type=module', '-e', code], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const exited = new Promise<number | null>((r) => child.on('exit', r));
    try {
      await waitFor(() => (out.includes('collected') || child.exitCode !== null ? true : undefined), 10_000, 'the child to collect garbage');
      fx.ns.conntrack('-I', '-p', 'udp', '-s', '10.22.0.1', '-d', '10.22.0.2', '--sport', '1', '--dport', '2', '-t', '30');
      expect(await within(exited, 10_000)).toBe(0);
    } finally {
      child.kill('SIGKILL');
    }
    expect(err).toBe('');
    expect(out).toBe('collected\ngot new\n');
  });
});
