/**
 * One event stream driven by plain commands, for the model-based stream test
 * (test/event-stream-model.test.ts): next() calls by id, each one's outcome
 * within a deadline, the ways a stream ends, and its stats. The same driver
 * runs in the test's own thread (streamDriver) or inside a worker_threads
 * Worker (workerDriver, with this file as the worker's script), answering
 * the same commands over messages. Plain JavaScript because a Worker loads
 * it without the test runner's TypeScript transform.
 */
import { once } from 'node:events';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';

/** A next() result as the model compares it: 'new:1234' (entry events: the original source port; expectations: the expected destination port), an overrun, done, or a rejection. */
function summarise(r) {
  if (r.done) return { kind: 'done' };
  const ev = r.value;
  if (ev.type === 'overrun') return { kind: 'overrun', lost: ev.lost };
  const port = 'expectation' in ev ? ev.expectation.tuple.dport : ev.entry.original.sport;
  return { kind: 'event', key: `${ev.type}:${port}` };
}

function rejection(e) {
  return { kind: 'error', code: e?.code ?? String(e), lost: e?.lost };
}

/** The commands over `stream`, opened from handle `ct` with `ac.signal`. Every method returns a promise, as the Worker's do. */
export function streamDriver(ct, stream, ac) {
  const calls = new Map();
  let ids = 0;
  return {
    async next() {
      const id = ids++;
      calls.set(id, stream.next().then(summarise, rejection));
      return id;
    },
    /** The call's outcome if it settles within `ms`, else { kind: 'pending' } (the call stays tracked). */
    async outcome(id, ms) {
      let timer;
      const late = new Promise((resolve) => (timer = setTimeout(() => resolve({ kind: 'pending' }), ms)));
      try {
        const o = await Promise.race([calls.get(id), late]);
        if (o.kind !== 'pending') calls.delete(id);
        return o;
      } finally {
        clearTimeout(timer);
      }
    },
    /** Ends the stream one way; return() and throw() report what their promise gave. */
    async end(how) {
      switch (how) {
        case 'close': stream.close(); return {};
        case 'abort': ac.abort(); return {};
        case 'handle': ct.close(); return {};
        case 'return': return { returned: await stream.return() };
        case 'throw': {
          const err = new Error('the consumer gave up');
          return { rejectedWithIt: await stream.throw(err).then(() => false, (e) => e === err) };
        }
        default: throw new Error(`unknown way to end: ${how}`);
      }
    },
    async stats() {
      return { ...stream.stats(), closed: stream.closed };
    },
  };
}

/**
 * A stream opened inside a new Worker (package entry `entry`, namespace
 * `netns`, `table` 'entries' or 'expectations', stream `options`), driven
 * over messages. `terminate()` ends the Worker wherever it is; `errors`
 * collects what the Worker threw.
 */
export async function workerDriver(entry, netns, table, options) {
  const worker = new Worker(new URL(import.meta.url), { execArgv: [], workerData: { role: 'stream-driver', entry, netns, table, options } });
  const errors = [];
  worker.on('error', (e) => errors.push(e));
  const replies = new Map();
  let ids = 0;
  worker.on('message', (m) => {
    replies.get(m.id)?.(m);
    replies.delete(m.id);
  });
  const [first] = await once(worker, 'message');
  if (first.error) throw new Error(`the worker could not open its stream: ${first.error}`);
  const call = (method, ...args) => new Promise((resolve, reject) => {
    const id = ids++;
    replies.set(id, (m) => (m.error ? reject(new Error(m.error)) : resolve(m.value)));
    worker.postMessage({ id, method, args });
  });
  return {
    driver: {
      next: () => call('next'),
      outcome: (id, ms) => call('outcome', id, ms),
      end: (how) => call('end', how),
      stats: () => call('stats'),
    },
    errors,
    terminate: () => worker.terminate(),
  };
}

async function serveInWorker() {
  const { entry, netns, table, options } = workerData;
  let driver;
  try {
    const { Conntrack } = await import(entry);
    const ct = await Conntrack.open({ netns });
    const ac = new AbortController();
    const stream = table === 'entries' ? ct.events({ ...options, signal: ac.signal }) : ct.expectationEvents({ ...options, signal: ac.signal });
    await stream.ready;
    driver = streamDriver(ct, stream, ac);
  } catch (e) {
    parentPort.postMessage({ error: String(e) });
    return;
  }
  parentPort.on('message', async ({ id, method, args }) => {
    try {
      parentPort.postMessage({ id, value: await driver[method](...args) });
    } catch (e) {
      parentPort.postMessage({ id, error: String(e) });
    }
  });
  parentPort.postMessage({ ready: true });
}

if (!isMainThread && workerData?.role === 'stream-driver') await serveInWorker();
