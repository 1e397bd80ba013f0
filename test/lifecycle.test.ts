/**
 * A process may exit at any point of the handle's life: after open, in the
 * middle of a dump, while an event read is pending, during a bulk delete.
 * Each must end with exit code 0, no signal and nothing on stderr (the
 * environment cleanup hooks stop threads and close sockets).
 */
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describePrivileged, Netns } from './helpers/netns.js';

const entry = fileURLToPath(new URL('../dist/index.js', import.meta.url));

const STAGES: Record<string, string> = {
  'after open': `await Conntrack.open({ netns: NS }); exit();`,
  'mid-dump': `const ct = await Conntrack.open({ netns: NS }); let n = 0; for await (const _ of ct.dump()) if (++n === 3000) exit();`,
  'mid-dump, natural end without close': `const ct = await Conntrack.open({ netns: NS }); const it = ct.dump(); await it.next();`,
  'pending event read': `const ct = await Conntrack.open({ netns: NS }); const s = ct.events(); await s.ready; s.next(); setTimeout(exit, 50);`,
  'event stream left open': `const ct = await Conntrack.open({ netns: NS }); const s = ct.events(); await s.ready;`,
  'live table mid-dump': `const ct = await Conntrack.open({ netns: NS }); ct.liveTable({ entries: true }); setTimeout(exit, 10);`,
  'live table left open': `const ct = await Conntrack.open({ netns: NS }); const t = ct.liveTable(); await t.ready;`,
  'during a bulk delete': `const ct = await Conntrack.open({ netns: NS }); ct.deleteWhere({ family: 'ipv4' }, { dryRun: true, all: true }); setImmediate(exit);`,
  'uncaught error with everything open': `const ct = await Conntrack.open({ netns: NS }); const s = ct.events(); await s.ready; ct.dump().next(); process.exitCode = 0; setTimeout(() => { process.removeAllListeners('uncaughtException'); process.on('uncaughtException', () => process.exit(0)); throw new Error('boom'); }, 20);`,
};

/** A namespace holding 20,000 UDP entries for the describe block, so a dump has something to be in the middle of. */
function useLoadedNamespace(): { readonly ns: Netns } {
  const fx = {} as { ns: Netns };
  beforeAll(() => {
    fx.ns = Netns.create();
    const lines: string[] = [];
    for (let i = 0; i < 20000; i++) lines.push(`-I -p udp -s 10.1.${i >> 8}.${i & 255} -d 10.2.0.1 --sport 1 --dport 53 -t 300`);
    fx.ns.restore(lines);
  });
  afterAll(() => fx.ns?.destroy());
  return fx;
}

describePrivileged('process exit at every lifecycle stage', () => {
  const loaded = useLoadedNamespace();

  for (const [stage, body] of Object.entries(STAGES)) {
    it(stage, () => {
      const code = `import(${JSON.stringify(entry)}).then(async ({ Conntrack }) => {
        const NS = ${JSON.stringify(loaded.ns.name)};
        const exit = () => process.exit(0);
        ${body}
      })`;
      const r = spawnSync(process.execPath, ['-e', code], { encoding: 'utf8', timeout: 20_000 });
      expect(r.signal).toBeNull();
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
    });
  }
});

/**
 * As classic-level tests its lifecycle: the package inside a worker_threads
 * Worker terminated mid-dump and mid-stream, and a handle, a cursor and an
 * event stream dropped without close() and garbage-collected. Each in a child
 * process (--expose-gc), which then checks that its sockets and threads are
 * back to where they were, and exits cleanly.
 */
describePrivileged('workers and garbage collection', () => {
  const loaded = useLoadedNamespace();

  /** Runs `body` in a child with --expose-gc; it prints JSON with the counts it checked. */
  function child(body: string): { status: number | null; signal: string | null; stderr: string; out: Record<string, number> } {
    const code = `
      import { once } from 'node:events';
      import { readdirSync, readlinkSync } from 'node:fs';
      import { Worker } from 'node:worker_threads';
      const ENTRY = ${JSON.stringify(entry)};
      const NS = ${JSON.stringify(loaded.ns.name)};
      const { Conntrack } = await import(ENTRY);
      const sockets = () => readdirSync('/proc/self/fd').filter((f) => { try { return readlinkSync('/proc/self/fd/' + f).startsWith('socket:'); } catch { return false; } }).length;
      const threads = () => readdirSync('/proc/self/task').length;
      const settle = async (check) => { const end = Date.now() + 10000; while (!check() && Date.now() < end) { globalThis.gc(); await new Promise((r) => setTimeout(r, 20)); } };
      // Warm up: the addon and libuv's pool threads exist before the baseline.
      { const ct = await Conntrack.open({ netns: NS }); await ct.count(); await Promise.all([1, 2, 3, 4].map(() => ct.stats())); ct.close(); }
      const base = { sockets: sockets(), threads: threads() };
      ${body}
      await settle(() => sockets() <= base.sockets && threads() <= base.threads);
      console.log(JSON.stringify({ sockets: sockets() - base.sockets, threads: threads() - base.threads }));
    `;
    const r = spawnSync(process.execPath, ['--expose-gc', '--input-type=module', '-e', code], { encoding: 'utf8', timeout: 60_000 });
    let out: Record<string, number> = {};
    try {
      out = JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}');
    } catch {
      out = {};
    }
    return { status: r.status, signal: r.signal, stderr: r.stderr, out };
  }

  /** A clean exit, nothing on stderr, and sockets and threads back to the baseline. */
  function expectNothingLeft(r: ReturnType<typeof child>): void {
    expect(r.stderr).toBe('');
    expect(r.signal).toBeNull();
    expect(r.status).toBe(0);
    expect(r.out).toEqual({ sockets: 0, threads: 0 });
  }

  const workerAt = (stage: string): string => `
      const w = new Worker(\`
        const { parentPort, workerData } = require('node:worker_threads');
        import(workerData.entry).then(async ({ Conntrack }) => {
          const ct = await Conntrack.open({ netns: workerData.ns });
          if (workerData.stage === 'table') {
            ct.liveTable({ entries: true });
            await new Promise((r) => setTimeout(r, 5));
            parentPort.postMessage('ready');
          } else if (workerData.stage === 'dump') {
            let n = 0;
            for await (const _ of ct.dump()) if (++n === 3000) { parentPort.postMessage('ready'); await new Promise(() => {}); }
          } else {
            const s = ct.events();
            await s.ready;
            s.next();
            const d = ct.dump()[Symbol.asyncIterator]();
            await d.next();
            parentPort.postMessage('ready');
          }
        });\`, { eval: true, execArgv: [], workerData: { entry: ENTRY, ns: NS, stage: ${JSON.stringify(stage)} } });
      await once(w, 'message');
      await w.terminate();`;

  it('a Worker terminated mid-dump: no crash, its socket and threads gone', () => {
    const r = child(workerAt('dump'));
    expectNothingLeft(r);
  });

  it('a Worker terminated mid-stream, with a dump in progress too: no crash, nothing left', () => {
    const r = child(workerAt('stream'));
    expectNothingLeft(r);
  });

  it('a Worker terminated while its live table dumps: no crash, nothing left', () => {
    const r = child(workerAt('table'));
    expectNothingLeft(r);
  });

  /** A Worker that posts 'ready' once open, then loops over every kind of call until it is terminated. */
  const BUSY_WORKER = `
    const { parentPort, workerData } = require('node:worker_threads');
    import(workerData.entry).then(async ({ Conntrack }) => {
      const ct = await Conntrack.open({ netns: workerData.ns });
      parentPort.postMessage('ready');
      for (;;) {
        await ct.count();
        const t = ct.liveTable({ entries: true });
        await t.ready;
        await t.close();
        let n = 0;
        for await (const _ of ct.dump()) if (++n === 500) break;
        const s = ct.events();
        await s.ready;
        await s.close();
        await Promise.all([ct.stats(), ct.count({ protocol: 'udp' })]);
      }
    });`;
  /** Module code that terminates a busy Worker at each delay in turn. */
  const terminateBusyWorkers = (entryPath: string, ns: string): string => `
      for (const delayMs of [0, 1, 2, 3, 5, 8, 13, 21, 34, 55]) {
        const w = new Worker(${JSON.stringify(BUSY_WORKER)}, { eval: true, execArgv: [], workerData: { entry: ${JSON.stringify(entryPath)}, ns: ${JSON.stringify(ns)} } });
        await once(w, 'message');
        await new Promise((r) => setTimeout(r, delayMs));
        await w.terminate();
      }`;

  // The moment terminate() lands decides which N-API calls fail: spread over
  // the phases of a loop that makes every kind of call (a failed promise
  // creation once handed JS an uninitialised value: SIGSEGV in 1 of 3 runs).
  it('Workers terminated at moments spread over a loop of every kind of call: no crash, nothing left', () => {
    const r = child(terminateBusyWorkers(entry, loaded.ns.name));
    expectNothingLeft(r);
  });

  // Node dlcloses a Worker's addons as the Worker exits: with no other thread
  // holding the library (the main thread never imports it here), a reader
  // thread still ending on its own ran on unmapped code (SIGSEGV at its pc).
  it('Workers alone load the addon and are terminated mid-work: no thread outlives its code', () => {
    const code = `
      import { once } from 'node:events';
      import { Worker } from 'node:worker_threads';
      ${terminateBusyWorkers(entry, loaded.ns.name)}
      // The threads left ending on their own get the time to run into unmapped code.
      await new Promise((r) => setTimeout(r, 200));
      console.log('done');`;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', code], { encoding: 'utf8', timeout: 60_000 });
    expect(r.stderr).toBe('');
    expect(r.signal).toBeNull();
    expect(r.status).toBe(0);
    expect(r.stdout.trim()).toBe('done');
  });

  it('live tables closed mid-dump and mid-resync settle, and one dropped without close() is collected: sockets and threads freed', () => {
    const r = child(`
      await (async () => {
        const ct = await Conntrack.open({ netns: NS });
        const a = ct.liveTable();
        await new Promise((r) => setTimeout(r, 5));
        a.close();
        await a.ready;
        const b = ct.liveTable({ entries: true });
        await b.ready;
        const resync = b.resync();
        await new Promise((r) => setTimeout(r, 5));
        b.close();
        await resync;
        ct.close();
        const dropped = await Conntrack.open({ netns: NS });
        await dropped.liveTable({ entries: true }).ready;
      })();`);
    expectNothingLeft(r);
  });

  it('a handle, a cursor mid-dump and an event stream dropped without close() are collected: sockets and threads freed', () => {
    const r = child(`
      await (async () => {
        const ct = await Conntrack.open({ netns: NS });
        const it = ct.dump()[Symbol.asyncIterator]();
        await it.next();
        const s = ct.events();
        await s.ready;
      })();`);
    expectNothingLeft(r);
  });
});
