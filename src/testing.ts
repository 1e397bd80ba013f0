/**
 * `conntrack/testing`: fixtures for the tests of code that uses this
 * package, with no test-runner dependency (node:test, vitest, jest, mocha
 * alike). A TestNamespace is a throwaway network namespace held by a Worker
 * thread that moved into it (src/testing-worker.ts): named under /run/netns
 * where `ip netns attach` can, anonymous (a /proc path) where it cannot, so
 * it needs neither `ip netns` nor mount rights nor NET_RAW. Who made it is
 * recorded (src/testing-owners.ts) so a killed run's leftovers are swept by
 * the next one.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { Worker } from 'node:worker_threads';
import { capabilityAdvice, missingCapabilities, NEEDED_CAPABILITIES } from './capabilities.js';
import { checkBoolean, checkKnownKeys, checkOptions, checkUint, describe, own } from './check.js';
import { Conntrack, createMany } from './conntrack.js';
import { ConntrackError, wrapNative } from './errors.js';
import type { FlowKey } from './flow.js';
import { addonPath } from './native.js';
import { planFill, type FillOptions } from './testing-fill.js';
import { deleteNamedNetns, dropOwnerRecord, processId, sweepStale, writeOwnerRecord, type OwnerRecord, type ProcessId } from './testing-owners.js';
import { WORKER_SOURCE, type FlowPorts, type WorkerCall, type WorkerMessage } from './testing-worker.js';

export { privileges, type ProcessPrivileges, type Capability } from './capabilities.js';
export type { FillOptions, PortRange } from './testing-fill.js';

export interface TestNamespaceOptions {
  /** The namespace's name is `${prefix}-` and 8 hex digits; stale namespaces of this prefix are swept first. Default 'cttest'. */
  prefix?: string | undefined;
  /** Add the nftables rule (`ct state new counter`, output and input) that makes the namespace track its traffic. Default true. */
  track?: boolean | undefined;
  /** nf_conntrack_acct=1: entries carry packet and byte counters. Default false. */
  accounting?: boolean | undefined;
  /** nf_conntrack_timestamp=1: entries carry their start (and end) time. Default false. */
  timestamps?: boolean | undefined;
}

export interface ExecOptions {
  /** Written to the program's stdin (then closed). */
  input?: string | undefined;
  cwd?: string | undefined;
  /** The program's whole environment (default: this process's). */
  env?: Record<string, string> | undefined;
  /**
   * SIGKILL the program (and what it left running in the background) after
   * this many milliseconds: its result then has `timedOut: true`, `code`
   * 137 and a last line of `stderr` naming the timeout.
   */
  timeoutMs?: number | undefined;
}

export interface ExecResult {
  stdout: string;
  /** What the program wrote to stderr; after a timeout, a line saying it was killed at it. */
  stderr: string;
  /** The exit status; 128 + the signal number when a signal ended it. */
  code: number;
  /** Whether `timeoutMs` ended the program (SIGKILL). */
  timedOut: boolean;
}

export interface TcpFlowOptions {
  /** Connections to make, one after another in groups of 64. */
  count: number;
  /** The server's port on 127.0.0.1. Default: one the kernel picks. */
  port?: number | undefined;
  /** Bytes each client sends before closing. Default 1. */
  bytes?: number | undefined;
}

export interface UdpFlowOptions {
  /** Clients, each with its own socket: one datagram and its answer. */
  count: number;
  /** The server's port on 127.0.0.1. Default: one the kernel picks. */
  port?: number | undefined;
}

const OPTION_KEYS = new Set(['prefix', 'track', 'accounting', 'timestamps']);
const EXEC_KEYS = new Set(['input', 'cwd', 'env', 'timeoutMs']);
const TCP_KEYS = new Set(['count', 'port', 'bytes']);
const UDP_KEYS = new Set(['count', 'port']);
/** Entries per batch create: enough to amortise a pool job, few enough to keep memory flat. */
const FILL_CHUNK = 8192;
const TRACK_RULES = [
  'table inet conntrack_testing {',
  '  chain out { type filter hook output priority 0; ct state new counter; }',
  '  chain in { type filter hook input priority 0; ct state new counter; }',
  '}',
].join('\n');

/** The Worker that holds a namespace: requests by id, processes it started kept in the owner record. */
class NamespaceThread {
  readonly #worker: Worker;
  readonly #pending = new Map<number, { resolve(v: unknown): void; reject(e: Error): void }>();
  #nextId = 1;
  #gone: Error | undefined;
  /** Set by stop(): the thread stays ref'd until it has exited. */
  #stopping = false;
  readonly ready: Promise<string>;
  onProcess: (pid: number, running: boolean) => void = () => undefined;

  constructor() {
    this.#worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { addonPath } });
    this.ready = new Promise((resolve, reject) => {
      this.#worker.on('message', (m: WorkerMessage) => {
        if (m.type === 'ready') resolve(m.path);
        else if (m.type === 'failed') reject(Object.assign(new Error(m.message), { errno: m.errno }));
        else this.#onMessage(m);
      });
      this.#worker.on('error', (e) => this.#fail(e, reject));
      this.#worker.on('exit', (code) => this.#fail(new Error(`the namespace's thread exited (code ${code})`), reject));
    });
    // Held while it starts and while a request is pending, no longer: a forgotten namespace does not hang the run.
    void this.ready.then(() => this.#unrefIfIdle(), () => undefined);
  }

  #onMessage(m: WorkerMessage): void {
    if (m.type === 'spawned' || m.type === 'exited') return this.onProcess(m.pid, m.type === 'spawned');
    if (m.type !== 'result' && m.type !== 'error') return;
    const p = this.#pending.get(m.id);
    this.#pending.delete(m.id);
    this.#unrefIfIdle();
    if (m.type === 'result') p?.resolve(m.value);
    else p?.reject(Object.assign(new Error(m.message), m.code === undefined ? {} : { code: m.code }));
  }

  #fail(e: Error, rejectReady: (e: Error) => void): void {
    this.#gone ??= e;
    rejectReady(e);
    for (const p of this.#pending.values()) p.reject(e);
    this.#pending.clear();
  }

  /** Lets the loop end without the thread once nothing is asked of it; never while stop() waits for it to exit (that await would never settle). */
  #unrefIfIdle(): void {
    if (this.#pending.size === 0 && !this.#stopping) this.#worker.unref();
  }

  /** One request, answered by id. */
  request<T>(r: WorkerCall): Promise<T> {
    if (this.#gone) return Promise.reject(this.#gone);
    const id = this.#nextId++;
    this.#worker.ref();
    this.#worker.postMessage({ ...r, id });
    return new Promise((resolve, reject) => this.#pending.set(id, { resolve: resolve as (v: unknown) => void, reject }));
  }

  /** Kills what the thread started, then ends it: what is still pending, and what is asked after, rejects with `closed`. */
  async stop(closed: Error): Promise<void> {
    // Held from here to the exit: a request answered meanwhile must not unref it, or the loop could end first and stop() never settle.
    this.#stopping = true;
    this.#worker.ref();
    if (!this.#gone) await this.request({ op: 'shutdown' }).catch(() => undefined);
    this.#gone ??= closed;
    for (const p of this.#pending.values()) p.reject(closed);
    this.#pending.clear();
    await this.#worker.terminate();
  }
}

/** A throwaway network namespace; see createTestNamespace(). */
export class TestNamespace implements AsyncDisposable {
  /** The namespace's name: under /run/netns when `netns` equals it, else only the record's. */
  readonly name: string;
  /** What `Conntrack.open({ netns })` and `ctmon --netns` take: the name, or an absolute /proc path while this object lives. */
  readonly netns: string;
  /** An open handle in the namespace (closed by close()). */
  readonly conntrack: Conntrack;
  readonly #thread: NamespaceThread;
  readonly #record: OwnerRecord;
  #closing: Promise<void> | undefined;

  /** @internal use createTestNamespace() */
  constructor(parts: { name: string; netns: string; conntrack: Conntrack; thread: NamespaceThread; record: OwnerRecord }) {
    this.name = parts.name;
    this.netns = parts.netns;
    this.conntrack = parts.conntrack;
    this.#thread = parts.thread;
    this.#record = parts.record;
  }

  get closed(): boolean {
    return this.#closing !== undefined;
  }

  #check(op: string): void {
    if (this.#closing) throw new ConntrackError('EBADF', op, `${op}: the test namespace ${this.name} was closed (EBADF)`);
  }

  /** Runs `file` inside the namespace (not through a shell) and waits for it; a non-zero exit is a result, not a rejection. */
  async exec(file: string, args: readonly string[] = [], options: ExecOptions = {}): Promise<ExecResult> {
    const op = 'exec';
    this.#check(op);
    if (typeof file !== 'string' || file.length === 0) throw ConntrackError.invalid(op, `file must be a program name or path, got ${describe(file)}`, 'file');
    if (!Array.isArray(args) || !args.every((a) => typeof a === 'string')) throw ConntrackError.invalid(op, 'args must be an array of strings', 'args');
    const o = checkOptions(options, op);
    checkKnownKeys(o, EXEC_KEYS, op, 'option');
    const input = own(o, 'input');
    if (input !== undefined && typeof input !== 'string') throw ConntrackError.invalid(op, 'input must be a string', 'input');
    const cwd = own(o, 'cwd');
    if (cwd !== undefined && typeof cwd !== 'string') throw ConntrackError.invalid(op, 'cwd must be a string', 'cwd');
    const env = own(o, 'env');
    if (env !== undefined && (typeof env !== 'object' || env === null || !Object.values(env).every((v) => typeof v === 'string'))) {
      throw ConntrackError.invalid(op, 'env must be an object of strings', 'env');
    }
    const timeoutMs = own(o, 'timeoutMs') === undefined ? undefined : checkUint(own(o, 'timeoutMs'), 2 ** 31 - 1, op, 'timeoutMs', 1);
    const opts: ExecOptions = {};
    if (input !== undefined) opts.input = input;
    if (cwd !== undefined) opts.cwd = cwd;
    if (env !== undefined) opts.env = { ...(env as Record<string, string>) };
    if (timeoutMs !== undefined) opts.timeoutMs = timeoutMs;
    try {
      return await this.#thread.request<ExecResult>({ op: 'exec', file, args: [...args], options: opts });
    } catch (e) {
      // spawn's (ENOENT, EACCES...) or the cwd's, as the worker names it; a message naming none is EIO.
      const code = (e as { code?: string }).code ?? 'EIO';
      throw new ConntrackError(code, op, `${op}: ${(e as Error).message}`, { cause: e });
    }
  }

  /** `count` real TCP connections over 127.0.0.1, each closed at both ends when this resolves: their keys. */
  tcpFlows(options: TcpFlowOptions): Promise<FlowKey[]> {
    return this.#flows('tcpFlows', 'tcp', options);
  }

  /** `count` UDP clients over 127.0.0.1, each one datagram answered by the server: their keys. */
  udpFlows(options: UdpFlowOptions): Promise<FlowKey[]> {
    return this.#flows('udpFlows', 'udp', options);
  }

  /** Both kinds of flow: the options checked (`bytes` is TCP's), the worker's ports made into keys. */
  async #flows(op: string, protocol: 'tcp' | 'udp', options: unknown): Promise<FlowKey[]> {
    this.#check(op);
    const o = checkOptions(options, op);
    checkKnownKeys(o, protocol === 'tcp' ? TCP_KEYS : UDP_KEYS, op, 'option');
    const count = checkUint(own(o, 'count'), 100_000, op, 'count', 1);
    const port = own(o, 'port') === undefined ? 0 : checkUint(own(o, 'port'), 65535, op, 'port', 1);
    const bytes = own(o, 'bytes') === undefined ? 1 : checkUint(own(o, 'bytes'), 1 << 30, op, 'bytes');
    let flows: FlowPorts[];
    try {
      flows = await this.#thread.request<FlowPorts[]>(protocol === 'tcp' ? { op: 'tcp', count, port, bytes } : { op: 'udp', count, port });
    } catch (e) {
      throw new ConntrackError((e as { code?: string }).code ?? 'EIO', op, `${op}: ${(e as Error).message}`, { cause: e });
    }
    return flows.map((f) => ({ protocol, original: { src: '127.0.0.1', dst: '127.0.0.1', sport: f.sport, dport: f.dport } }));
  }

  /**
   * Creates `count` distinct entries (see FillOptions for how they spread),
   * in batches without an ACK each. Resolves with the number created;
   * rejects on the first refusal (EEXIST: one is there already; ENOMEM: the table is full).
   */
  async fill(count: number, options: FillOptions = {}): Promise<number> {
    this.#check('fill');
    const plan = planFill(count, options);
    // Two chunks in flight: one encoded while the kernel takes the other.
    let next = 0;
    const lane = async (): Promise<void> => {
      while (next < plan.count) {
        const first = next;
        const chunk = Array.from({ length: Math.min(FILL_CHUNK, plan.count - first) }, (_, i) => plan.spec(first + i));
        next += chunk.length;
        const [refused] = await createMany(this.conntrack, chunk, 'fill');
        if (refused) {
          const e = ConntrackError.fromErrno(refused.errno, 'fill');
          const t = chunk[refused.index]!.original!;
          throw new ConntrackError(e.code, 'fill', `fill: the kernel refused entry ${first + refused.index} (${t.src}:${t.sport} -> ${t.dst}:${t.dport}): ${e.message}`, { cause: e });
        }
      }
    };
    await Promise.all([lane(), lane()]);
    return plan.count;
  }

  /** Removes the namespace: closes the handle, kills what exec() started, ends the thread, unmounts the name, drops the record. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.conntrack.close();
      await this.#thread.stop(Object.assign(new Error(`the test namespace ${this.name} was closed (EBADF)`), { code: 'EBADF' }));
      if (this.netns === this.name) deleteNamedNetns(this.name);
      dropOwnerRecord(this.#record.name);
    })();
    return this.#closing;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

function checkNamespaceOptions(options: unknown): Required<TestNamespaceOptions> {
  const op = 'createTestNamespace';
  const o = checkOptions(options, op);
  checkKnownKeys(o, OPTION_KEYS, op, 'option');
  const prefix = own(o, 'prefix') ?? 'cttest';
  if (typeof prefix !== 'string' || !/^[A-Za-z0-9_.][A-Za-z0-9_.-]{0,31}$/.test(prefix)) {
    throw ConntrackError.invalid(op, `prefix must be 1-32 letters, digits, '.', '_' or '-' (not first), got ${describe(prefix)}`, 'prefix');
  }
  return {
    prefix,
    track: checkBoolean(own(o, 'track'), op, 'track') ?? true,
    accounting: checkBoolean(own(o, 'accounting'), op, 'accounting') ?? false,
    timestamps: checkBoolean(own(o, 'timestamps'), op, 'timestamps') ?? false,
  };
}

/** Mounts the thread's namespace under /run/netns/NAME; false where that cannot be done (no `ip`, no mount rights, no /run/netns). */
function attachName(name: string, threadPath: string): boolean {
  const tid = /\/task\/(\d+)\//.exec(threadPath)?.[1];
  if (tid === undefined) return false;
  const r = spawnSync('ip', ['netns', 'attach', name, tid], { stdio: 'ignore' });
  return r.status === 0;
}

/** Prepares the namespace from inside: the tracking rule and the sysctls asked for. */
async function configure(ns: TestNamespace, o: Required<TestNamespaceOptions>): Promise<void> {
  if (o.track) {
    const r = await ns.exec('nft', ['-f', '-'], { input: TRACK_RULES }).catch((e: Error) => ({ code: -1, stderr: e.message }));
    if (r.code !== 0) {
      throw new ConntrackError('ENOENT', 'createTestNamespace', `createTestNamespace: adding the rule that makes the namespace track its traffic failed (nft: ${r.stderr.trim()}): install nftables, or pass track: false`);
    }
  }
  if (o.accounting) await ns.conntrack.writeSysctl('nf_conntrack_acct', 1);
  if (o.timestamps) await ns.conntrack.writeSysctl('nf_conntrack_timestamp', 1);
}

/**
 * A fresh network namespace with lo up and, unless `track: false`, its
 * traffic tracked. Rejects with a ConntrackError naming CAP_SYS_ADMIN (or
 * CAP_NET_ADMIN) where the process lacks it. Stale namespaces of `prefix`
 * whose creator is gone are removed first.
 */
export async function createTestNamespace(options: TestNamespaceOptions = {}): Promise<TestNamespace> {
  const op = 'createTestNamespace';
  const o = checkNamespaceOptions(options);
  const missing = missingCapabilities(NEEDED_CAPABILITIES);
  if (missing.length > 0) throw new ConntrackError('EPERM', op, `${op}: ${capabilityAdvice(NEEDED_CAPABILITIES, 'a test namespace')}`);
  sweepStale(o.prefix);
  const name = `${o.prefix}-${randomBytes(4).toString('hex')}`;
  const record: OwnerRecord = { name, named: true, owner: processId()!, processes: [] };
  writeOwnerRecord(record); // before the mount exists: a kill in between leaves a record the sweep removes
  const thread = new NamespaceThread();
  let ns: TestNamespace | undefined;
  try {
    const path = await thread.ready.catch((e: unknown) => {
      throw wrapNative(e, op, { EPERM: capabilityAdvice(['CAP_SYS_ADMIN'], 'creating a network namespace') });
    });
    const named = attachName(name, path);
    if (!named) writeOwnerRecord(Object.assign(record, { named: false }));
    const netns = named ? name : path;
    const conntrack = await Conntrack.open({ netns });
    ns = new TestNamespace({ name, netns, conntrack, thread, record });
    thread.onProcess = (pid, running) => {
      const id: ProcessId | undefined = running ? processId(pid) : undefined;
      record.processes = record.processes.filter((p) => p.pid !== pid).concat(id ? [id] : []);
      writeOwnerRecord(record);
    };
    await configure(ns, o);
    return ns;
  } catch (e) {
    if (ns) await ns.close();
    else {
      await thread.stop(new Error('createTestNamespace failed'));
      deleteNamedNetns(name);
      dropOwnerRecord(name);
    }
    throw e;
  }
}

export interface WaitForEventOptions {
  /** Reject after this many milliseconds without a match. */
  timeoutMs: number;
}

/** A short account of an event for the deadline's message: type and tuple where it has them. */
function summarize(event: unknown): string {
  const e = event as { type?: unknown; entry?: { protocol?: unknown; original?: { src?: unknown; dst?: unknown; sport?: unknown; dport?: unknown } } };
  const t = e?.entry?.original;
  if (typeof e?.type === 'string' && t) return `${e.type} ${String(e.entry?.protocol)} ${String(t.src)}:${String(t.sport ?? '')} -> ${String(t.dst)}:${String(t.dport ?? '')}`;
  if (typeof e?.type === 'string') return `${e.type}${'lost' in (e as object) ? ` (${String((e as { lost: unknown }).lost)} lost)` : ''}`;
  return describe(event);
}

/** Each stream's iterator, and a read a deadline left pending: the next waitForEvent() on the stream takes its event first, so none is lost. */
const iterators = new WeakMap<object, AsyncIterator<unknown>>();
const unread = new WeakMap<object, Promise<IteratorResult<unknown>>>();

/**
 * The first event of `stream` that `predicate` accepts (the events before it
 * are consumed). Rejects (ETIMEDOUT) after `timeoutMs` with the deadline and
 * the events seen meanwhile, or (ENODATA) if the stream ends first. The
 * stream stays open either way, and an event that arrives after a deadline
 * goes to the next waitForEvent() on it. A type guard as `predicate`
 * (`(e): e is EntryEvent => ...`) narrows what resolves; a boolean one
 * resolves the stream's event type.
 */
export function waitForEvent<E, S extends E>(stream: AsyncIterable<E>, predicate: (event: E) => event is S, options: WaitForEventOptions): Promise<S>;
export function waitForEvent<E>(stream: AsyncIterable<E>, predicate: (event: E) => boolean, options: WaitForEventOptions): Promise<E>;
export async function waitForEvent<E>(stream: AsyncIterable<E>, predicate: (event: E) => boolean, options: WaitForEventOptions): Promise<E> {
  const op = 'waitForEvent';
  if (stream === null || typeof (stream as { [Symbol.asyncIterator]?: unknown })?.[Symbol.asyncIterator] !== 'function') throw ConntrackError.invalid(op, 'stream must be an async iterable (ct.events())', 'stream');
  if (typeof predicate !== 'function') throw ConntrackError.invalid(op, 'predicate must be a function', 'predicate');
  const timeoutMs = checkUint(own(checkOptions(options, op), 'timeoutMs'), 2 ** 31 - 1, op, 'timeoutMs', 1);
  const iterator = (iterators.get(stream) as AsyncIterator<E> | undefined) ?? stream[Symbol.asyncIterator]();
  iterators.set(stream, iterator);
  const seen: string[] = [];
  let count = 0;
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      const shown = seen.length === 0 ? 'no events' : `${count} event(s), the last ${seen.length}: ${seen.join('; ')}`;
      reject(new ConntrackError('ETIMEDOUT', op, `${op}: no matching event within the deadline of ${timeoutMs} ms; saw ${shown}`));
    }, timeoutMs);
  });
  try {
    for (;;) {
      const read = (unread.get(iterator) as Promise<IteratorResult<E>> | undefined) ?? iterator.next();
      unread.set(iterator, read);
      const r = await Promise.race([read, deadline]);
      unread.delete(iterator);
      if (r.done) throw new ConntrackError('ENODATA', op, `${op}: the stream ended before a matching event (saw ${count} event(s))`);
      if (predicate(r.value)) return r.value;
      count++;
      seen.push(summarize(r.value));
      if (seen.length > 5) seen.shift();
    }
  } finally {
    clearTimeout(timer);
  }
}
