/**
 * The thread that holds a TestNamespace: a Worker that moves itself into a
 * new network namespace (native/unshare.cc), so its sockets and the
 * programs it spawns live there while the rest of the process stays put. It
 * serves requests from src/testing.ts: run a program, make loopback flows,
 * shut down (killing what it started). The namespace lives as long as this
 * thread, or its /run/netns mount.
 *
 * `workerMain` runs from its source text (`new Worker(..., { eval: true })`),
 * so it must not close over anything of this module: everything it uses it
 * requires itself.
 */
import type { ExecResult } from './testing.js';

/** What src/testing.ts asks of the worker. */
export type WorkerRequest =
  | { id: number; op: 'exec'; file: string; args: string[]; options: { input?: string; cwd?: string; env?: Record<string, string>; timeoutMs?: number } }
  | { id: number; op: 'tcp'; count: number; port: number; bytes: number }
  | { id: number; op: 'udp'; count: number; port: number }
  | { id: number; op: 'shutdown' };

/** A request before the thread's owner numbers it. */
export type WorkerCall<R = WorkerRequest> = R extends WorkerRequest ? Omit<R, 'id'> : never;

/** What it says back: a request's result, or news of a process it started or that ended. */
export type WorkerMessage =
  | { type: 'ready'; path: string }
  | { type: 'failed'; message: string; errno: number | undefined }
  | { type: 'result'; id: number; value: unknown }
  | { type: 'error'; id: number; message: string; code: string | undefined }
  | { type: 'spawned'; pid: number }
  | { type: 'exited'; pid: number };

/** The data a worker starts with. */
export interface WorkerData {
  addonPath: string;
}

/** A client port of a finished loopback flow. */
export interface FlowPorts {
  sport: number;
  dport: number;
}

/** An error with the errno name it stands for, which the thread's owner reports as the ConntrackError's code. */
function codedError(message: string, code: string | undefined): Error & { code?: string } {
  return Object.assign(new Error(message), code === undefined ? {} : { code });
}

/**
 * Why `cwd` cannot be a program's working directory, or undefined when it
 * can: spawn() says only ENOENT for a missing one, as for a missing program.
 */
function cwdProblem(fs: typeof import('node:fs'), cwd: string): Error | undefined {
  try {
    if (fs.statSync(cwd).isDirectory()) return undefined;
    return codedError(`cwd ${JSON.stringify(cwd)} is not a directory (ENOTDIR)`, 'ENOTDIR');
  } catch (e) {
    const code = (e as { code?: string }).code ?? 'ENOENT';
    const what = code === 'ENOENT' ? 'does not exist' : 'cannot be entered';
    return codedError(`cwd ${JSON.stringify(cwd)} ${what} (${code})`, code);
  }
}

/** The programs a worker runs (its `exec` requests) and the kill of those still running at shutdown. */
export function programRunner(
  spawn: typeof import('node:child_process').spawn,
  constants: typeof import('node:os').constants,
  post: (m: WorkerMessage) => void,
  fs: typeof import('node:fs'),
): { exec(r: Extract<WorkerRequest, { op: 'exec' }>): Promise<ExecResult>; shutdown(): Promise<void> } {
  const children = new Set<import('node:child_process').ChildProcess>();
  // Each program leads a process group of its own (detached: setsid), so what it leaves running in
  // the background (`sh -c 'daemon &'`) dies with it: on a timeout and at shutdown. True if it was killed.
  const killGroup = (c: import('node:child_process').ChildProcess): boolean => {
    try {
      process.kill(-c.pid!, 'SIGKILL');
      return true;
    } catch {
      return false; // the group is gone already
    }
  };

  function exec(r: Extract<WorkerRequest, { op: 'exec' }>): Promise<ExecResult> {
    const { cwd, timeoutMs } = r.options;
    const badCwd = cwd === undefined ? undefined : cwdProblem(fs, cwd);
    if (badCwd) return Promise.reject(codedError(`${badCwd.message}: cannot run ${r.file} there`, (badCwd as { code?: string }).code));
    return new Promise((resolve, reject) => {
      const child = spawn(r.file, r.args, { cwd: r.options.cwd, env: r.options.env ?? process.env, stdio: ['pipe', 'pipe', 'pipe'], detached: true });
      const out: Buffer[] = [];
      const err: Buffer[] = [];
      child.stdout.on('data', (b: Buffer) => out.push(b));
      child.stderr.on('data', (b: Buffer) => err.push(b));
      child.stdin.on('error', () => undefined); // a program that never reads its input
      child.stdin.end(r.options.input ?? '');
      let timedOut = false;
      const timer = timeoutMs === undefined ? undefined : setTimeout(() => (timedOut = killGroup(child)), timeoutMs);
      child.on('spawn', () => {
        children.add(child);
        post({ type: 'spawned', pid: child.pid! });
      });
      child.on('error', (e) => {
        clearTimeout(timer);
        reject(codedError(`cannot run ${r.file}: ${e.message}`, (e as { code?: string }).code));
      });
      child.on('close', (code, signal) => {
        clearTimeout(timer);
        children.delete(child);
        post({ type: 'exited', pid: child.pid! });
        const signo = signal === null ? 0 : (constants.signals as Record<string, number>)[signal] ?? 0;
        let stderr = Buffer.concat(err).toString('utf8');
        // Said where a failed test prints it: 137 alone does not tell a timeout from a crash.
        if (timedOut) stderr += `${stderr === '' || stderr.endsWith('\n') ? '' : '\n'}exec: ${r.file} was killed (SIGKILL) at its timeout of ${timeoutMs} ms\n`;
        resolve({ stdout: Buffer.concat(out).toString('utf8'), stderr, code: code ?? 128 + signo, timedOut });
      });
    });
  }


  async function shutdown(): Promise<void> {
    const exits = [...children].map((c) => new Promise((r) => c.once('close', r)));
    for (const c of children) killGroup(c);
    await Promise.all(exits);
  }

  return { exec, shutdown };
}

/** Real loopback flows made from inside the worker's namespace: a server and its clients. */
export function loopbackFlows(
  net: typeof import('node:net'),
  dgram: typeof import('node:dgram'),
): { tcp(count: number, listenPort: number, bytes: number): Promise<FlowPorts[]>; udp(count: number, listenPort: number): Promise<FlowPorts[]> } {
  // Each connection: connect, send `bytes`, half-close; the server reads to the end and closes.
  // Resolves once both ends of every connection are closed, so each entry is final.
  async function tcp(count: number, listenPort: number, bytes: number): Promise<FlowPorts[]> {
    const serverClosed: Promise<void>[] = [];
    const server = net.createServer((s) => {
      serverClosed.push(new Promise((r) => s.on('close', () => r())));
      s.on('error', () => undefined);
      s.resume();
      s.on('end', () => s.end());
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(listenPort, '127.0.0.1', () => resolve());
    });
    const dport = (server.address() as import('node:net').AddressInfo).port;
    const payload = Buffer.alloc(bytes, 120);
    const one = (): Promise<FlowPorts> =>
      new Promise((resolve, reject) => {
        const c = net.connect(dport, '127.0.0.1', () => c.end(payload));
        let sport = 0;
        c.on('connect', () => (sport = c.localPort!));
        c.resume();
        c.on('error', reject);
        c.on('close', () => resolve({ sport, dport }));
      });
    try {
      const flows: FlowPorts[] = [];
      for (let i = 0; i < count; i += 64) flows.push(...(await Promise.all(Array.from({ length: Math.min(64, count - i) }, one))));
      await Promise.all(serverClosed);
      return flows;
    } finally {
      server.close();
    }
  }

  // Each client: its own socket, one datagram until the server's answer arrives (loopback drops nothing, but a lost one is resent).
  async function udp(count: number, listenPort: number): Promise<FlowPorts[]> {
    const server = dgram.createSocket('udp4');
    server.on('message', (m, from) => server.send(m, from.port, from.address));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.bind(listenPort, '127.0.0.1', () => resolve());
    });
    const dport = server.address().port;
    const one = (): Promise<FlowPorts> =>
      new Promise((resolve, reject) => {
        const c = dgram.createSocket('udp4');
        const send = (): void => c.send('x', dport, '127.0.0.1');
        const resend = setInterval(send, 200);
        c.on('error', (e) => {
          clearInterval(resend);
          c.close();
          reject(e);
        });
        c.on('message', () => {
          clearInterval(resend);
          const sport = c.address().port;
          c.close(() => resolve({ sport, dport }));
        });
        c.bind(0, '127.0.0.1', send);
      });
    try {
      const flows: FlowPorts[] = [];
      for (let i = 0; i < count; i += 64) flows.push(...(await Promise.all(Array.from({ length: Math.min(64, count - i) }, one))));
      return flows;
    } finally {
      server.close();
    }
  }

  return { tcp, udp };
}

export function workerMain(): void {
  // Whether eval'd code is CommonJS or a module follows the process's flags (--input-type=module): take require from node:module either way.
  const { workerData: data } = process.getBuiltinModule('node:worker_threads');
  const require = process.getBuiltinModule('node:module').createRequire((data as WorkerData).addonPath);
  const { parentPort, workerData } = require('node:worker_threads') as typeof import('node:worker_threads');
  const { spawn } = require('node:child_process') as typeof import('node:child_process');
  const port = parentPort!;
  const post = (m: WorkerMessage): void => port.postMessage(m);
  const { exec, shutdown } = programRunner(spawn, (require('node:os') as typeof import('node:os')).constants, post, require('node:fs') as typeof import('node:fs'));
  const { tcp, udp } = loopbackFlows(require('node:net') as typeof import('node:net'), require('node:dgram') as typeof import('node:dgram'));

  const addon = require((workerData as WorkerData).addonPath) as { unshareThreadNetns(): string };
  try {
    post({ type: 'ready', path: addon.unshareThreadNetns() });
  } catch (e) {
    const err = e as { message: string; errno?: number };
    post({ type: 'failed', message: err.message, errno: err.errno });
    return;
  }

  async function serve(r: WorkerRequest): Promise<unknown> {
    switch (r.op) {
      case 'exec':
        return exec(r);
      case 'tcp':
        return tcp(r.count, r.port, r.bytes);
      case 'udp':
        return udp(r.count, r.port);
      case 'shutdown':
        return shutdown();
    }
  }

  port.on('message', (r: WorkerRequest) => {
    serve(r).then(
      (value) => post({ type: 'result', id: r.id, value }),
      (e: unknown) => post({ type: 'error', id: r.id, message: e instanceof Error ? e.message : String(e), code: (e as { code?: string } | undefined)?.code }),
    );
  });
}

/**
 * The worker's source (`new Worker(WORKER_SOURCE, { eval: true })`): the
 * functions above as text, then workerMain called. None may close over this
 * module: each gets what it uses as arguments or requires it itself.
 */
export const WORKER_SOURCE = [codedError, cwdProblem, programRunner, loopbackFlows].map(String).join('\n') + `\n(${String(workerMain)})()`;
