/**
 * The pure parts of conntrack/testing, without root: fill()'s plan (every
 * entry distinct, within the options, refused beyond them), the owner
 * records' notion of a live process, and waitForEvent over a plain async
 * iterable (deadline message, end of stream, nothing lost to a deadline),
 * and exec()'s program runner in this process's own namespace (what a
 * timeout and a missing cwd are reported as).
 */
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { constants } from 'node:os';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ConntrackError } from '../../src/errors.js';
import { waitForEvent } from '../../src/testing.js';
import { planFill } from '../../src/testing-fill.js';
import { alive, processId, processStart } from '../../src/testing-owners.js';
import { programRunner, type WorkerRequest } from '../../src/testing-worker.js';

const seed = process.env.CONNTRACK_PBT_SEED === undefined ? Date.now() : Number(process.env.CONNTRACK_PBT_SEED);

/** A stream fed by hand: push() delivers an event, end() finishes it. */
function feed<T>(): { stream: AsyncIterable<T>; push(v: T): void; end(): void } {
  const queue: IteratorResult<T>[] = [];
  const waiting: ((r: IteratorResult<T>) => void)[] = [];
  const deliver = (r: IteratorResult<T>): void => {
    const w = waiting.shift();
    if (w) w(r);
    else queue.push(r);
  };
  const iterator: AsyncIterator<T> = { next: () => (queue.length > 0 ? Promise.resolve(queue.shift()!) : new Promise((r) => waiting.push(r))) };
  return { stream: { [Symbol.asyncIterator]: () => iterator }, push: (v) => deliver({ value: v, done: false }), end: () => deliver({ value: undefined, done: true }) };
}

describe('planFill', () => {
  it('count distinct tuples, each within src, sport and dport (fast-check)', () => {
    console.log(`planFill property: seed ${seed}`);
    fc.assert(
      fc.property(
        fc.integer({ min: 16, max: 32 }),
        fc.integer({ min: 1, max: 65535 }),
        fc.integer({ min: 0, max: 40 }),
        fc.integer({ min: 1, max: 65535 }),
        fc.integer({ min: 0, max: 3 }),
        fc.integer({ min: 1, max: 600 }),
        (len, sLo, sWidth, dLo, dWidth, wanted) => {
          const sport: [number, number] = [sLo, Math.min(65535, sLo + sWidth)];
          const dport: [number, number] = [dLo, Math.min(65535, dLo + dWidth)];
          const capacity = 2 ** (32 - len) * (sport[1] - sport[0] + 1) * (dport[1] - dport[0] + 1);
          const count = Math.min(wanted, capacity);
          const plan = planFill(count, { src: `172.16.0.0/${len}`, sport, dport, protocol: 'udp' });
          expect(plan.capacity).toBe(BigInt(capacity));
          const seen = new Set<string>();
          for (let i = 0; i < count; i++) {
            const { original: o, protocol, timeout, state } = plan.spec(i);
            expect({ protocol, timeout, state }).toEqual({ protocol: 'udp', timeout: 600, state: undefined });
            const [a, b, c, d] = o!.src.split('.').map(Number) as [number, number, number, number];
            expect(a === 172 && b >= 16 && ((b - 16) * 65536 + c * 256 + d) < 2 ** (32 - len)).toBe(true);
            expect(o!.sport! >= sport[0] && o!.sport! <= sport[1] && o!.dport! >= dport[0] && o!.dport! <= dport[1]).toBe(true);
            seen.add(`${o!.src} ${o!.sport} ${o!.dport}`);
          }
          expect(seen.size).toBe(count);
          if (count === capacity) expect(() => planFill(count + 1, { src: `172.16.0.0/${len}`, sport, dport })).toThrow(/do not fit/);
        },
      ),
      { seed, numRuns: 100 },
    );
  });

  it('defaults: TCP ESTABLISHED from 10.0.0.0/8 to 192.0.2.1:80; IPv6 when an address says so; a mark and a state as given', () => {
    expect(planFill(1).spec(0)).toEqual({ protocol: 'tcp', original: { src: '10.0.0.0', dst: '192.0.2.1', sport: 1024, dport: 80 }, timeout: 600, state: 'ESTABLISHED' });
    expect(planFill(3, { src: '2001:db8::/126', dst: '2001:db8::ff', mark: 7, state: 'SYN_SENT' }).spec(2)).toEqual({
      protocol: 'tcp', original: { src: '2001:db8::2', dst: '2001:db8::ff', sport: 1024, dport: 80 }, timeout: 600, state: 'SYN_SENT', mark: 7,
    });
    expect(planFill(1, { dst: 'fd00::9' }).spec(0).original).toMatchObject({ src: 'fd00::', dst: 'fd00::9' });
  });

  it('refuses what it cannot make, naming the option', () => {
    const refused = (count: unknown, o: unknown): ConntrackError => {
      try {
        planFill(count, o);
      } catch (e) {
        return e as ConntrackError;
      }
      throw new Error('not refused');
    };
    expect(refused(-1, {})).toMatchObject({ code: 'ERR_INVALID_ARG', argument: 'count' });
    expect(refused(2, { src: '10.0.0.1', sport: 5, dport: 5 })).toMatchObject({ argument: 'count', message: expect.stringContaining('do not fit in 1') });
    expect(refused(1, { protocol: 'icmp' })).toMatchObject({ argument: 'protocol' });
    expect(refused(1, { src: '10.0.0.0/8', dst: '::1' })).toMatchObject({ argument: 'dst' });
    expect(refused(1, { sport: [10, 5] })).toMatchObject({ argument: 'sport[1]' });
    expect(refused(1, { dport: 0 })).toMatchObject({ argument: 'dport' });
    expect(refused(1, { colour: 'red' })).toMatchObject({ code: 'ERR_INVALID_ARG', message: expect.stringContaining('colour') });
  });
});

describe('owner records', () => {
  it('a process is alive while its pid names the same start time; an exited one is not', () => {
    const me = processId()!;
    expect(alive(me)).toBe(true);
    expect(alive({ pid: me.pid, start: `${me.start}1` })).toBe(false);
    const done = spawnSync(process.execPath, ['-e', 'console.log(process.pid)'], { encoding: 'utf8' });
    expect(processStart(Number(done.stdout))).toBeUndefined();
  });
});

describe('waitForEvent', () => {
  it('resolves the first event the predicate accepts, consuming those before it', async () => {
    const f = feed<number>();
    for (const n of [1, 3, 4, 5]) f.push(n);
    expect(await waitForEvent(f.stream, (n) => n % 2 === 0, { timeoutMs: 1000 })).toBe(4);
    expect(await waitForEvent(f.stream, () => true, { timeoutMs: 1000 })).toBe(5);
  });

  it('at the deadline: ETIMEDOUT naming it and what was seen; an event arriving later goes to the next call', async () => {
    const f = feed<{ type: string }>();
    for (let i = 0; i < 7; i++) f.push({ type: `e${i}` });
    const e = (await waitForEvent(f.stream, (x) => x.type === 'never', { timeoutMs: 30 }).catch((x: unknown) => x)) as ConntrackError;
    expect(e).toBeInstanceOf(ConntrackError);
    expect(e).toMatchObject({ code: 'ETIMEDOUT', op: 'waitForEvent' });
    expect(e.message).toBe('waitForEvent: no matching event within the deadline of 30 ms; saw 7 event(s), the last 5: e2; e3; e4; e5; e6');
    f.push({ type: 'late' });
    expect(await waitForEvent(f.stream, () => true, { timeoutMs: 1000 })).toEqual({ type: 'late' });
  });

  it('a stream that ends first: ENODATA; bad arguments: ERR_INVALID_ARG before anything is read', async () => {
    const f = feed<number>();
    f.push(1);
    f.end();
    await expect(waitForEvent(f.stream, (n) => n > 1, { timeoutMs: 1000 })).rejects.toMatchObject({ code: 'ENODATA', message: expect.stringContaining('saw 1 event') });
    await expect(waitForEvent({} as AsyncIterable<number>, () => true, { timeoutMs: 1 })).rejects.toMatchObject({ argument: 'stream' });
    await expect(waitForEvent(f.stream, 5 as never, { timeoutMs: 1 })).rejects.toMatchObject({ argument: 'predicate' });
    await expect(waitForEvent(f.stream, () => true, { timeoutMs: 0 })).rejects.toMatchObject({ code: 'ERR_INVALID_ARG' });
  });
});

describe('exec()\'s program runner', () => {
  const runner = programRunner(spawn, constants, () => undefined, fs);
  const run = (file: string, args: string[], options: Extract<WorkerRequest, { op: 'exec' }>['options'] = {}) => runner.exec({ id: 1, op: 'exec', file, args, options });

  it('a program its timeout killed: timedOut, code 137, and stderr ends saying so', async () => {
    expect(await run('sh', ['-c', 'printf partial >&2; exec sleep 30'], { timeoutMs: 50 })).toEqual({
      stdout: '', stderr: 'partial\nexec: sh was killed (SIGKILL) at its timeout of 50 ms\n', code: 137, timedOut: true,
    });
    // A program that ends by itself, killed or not, did not time out.
    expect(await run('sh', ['-c', 'echo out; exit 3'], { timeoutMs: 10_000 })).toEqual({ stdout: 'out\n', stderr: '', code: 3, timedOut: false });
    expect(await run('sh', ['-c', 'kill -9 $$'])).toMatchObject({ code: 137, timedOut: false, stderr: '' });
  });

  it('a cwd that is missing or no directory is named as such, not taken for a missing program', async () => {
    const missing = `/nonexistent-${process.pid}/dir`;
    await expect(run('true', [], { cwd: missing })).rejects.toMatchObject({ code: 'ENOENT', message: `cwd "${missing}" does not exist (ENOENT): cannot run true there` });
    await expect(run('true', [], { cwd: '/etc/passwd' })).rejects.toMatchObject({ code: 'ENOTDIR', message: expect.stringContaining('cwd "/etc/passwd" is not a directory') });
    await expect(run(`/nonexistent-${process.pid}/program`, [], { cwd: '/' })).rejects.toMatchObject({ code: 'ENOENT', message: expect.stringMatching(/^cannot run \/nonexistent-\d+\/program: spawn/) });
    expect(await run('pwd', [], { cwd: '/tmp' })).toMatchObject({ stdout: '/tmp\n', code: 0 });
  });
});
