/**
 * conntrack/testing against the real kernel: the namespaces it makes, the
 * flows it makes in them (counted by `conntrack -C`), fill() against
 * `conntrack -C`/`-L` over generated options, what close() and a SIGKILL
 * leave behind, and the refusals where a capability is missing. Child
 * processes run the built package (dist/), as a user's test would.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConntrackError } from '../src/index.js';
import { createTestNamespace, privileges, waitForEvent, type FillOptions, type TestNamespace } from '../src/testing.js';
import { alive, ownersDir, processStart, type OwnerRecord } from '../src/testing-owners.js';
import { CTMON } from './helpers/cli.js';
import { describePrivileged, itNeeds, parseCliLine, waitFor } from './helpers/netns.js';

const TESTING = fileURLToPath(new URL('../dist/testing.js', import.meta.url));
const runs = Number(process.env.CONNTRACK_PBT_RUNS ?? 20);
const seed = process.env.CONNTRACK_PBT_SEED === undefined ? Date.now() : Number(process.env.CONNTRACK_PBT_SEED);

/** Every thread of every process whose network namespace is `inode` (what would keep it alive). */
function holders(inode: number): string[] {
  const out: string[] = [];
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    let tasks: string[];
    try {
      tasks = readdirSync(`/proc/${pid}/task`);
    } catch {
      continue;
    }
    for (const tid of tasks) {
      try {
        if (readlinkSync(`/proc/${pid}/task/${tid}/ns/net`) === `net:[${inode}]`) out.push(`${pid}/${tid}`);
      } catch {
        // gone meanwhile
      }
    }
  }
  return out;
}

function record(name: string): OwnerRecord | undefined {
  try {
    return JSON.parse(readFileSync(join(ownersDir(), `${name}.json`), 'utf8')) as OwnerRecord;
  } catch {
    return undefined;
  }
}

/** A node child running `code` (an ES module importing `conntrack/testing` as T); resolves its first stdout line, parsed. */
function child(code: string, env: NodeJS.ProcessEnv = process.env): { first: Promise<Record<string, unknown>>; proc: ReturnType<typeof spawn> } {
  const proc = spawn(process.execPath, ['--input-type=module', '-e', `import * as T from ${JSON.stringify(TESTING)};\n${code}`], { env, stdio: ['pipe', 'pipe', 'pipe'] });
  let err = '';
  proc.stderr!.on('data', (b: Buffer) => (err += b.toString()));
  const first = new Promise<Record<string, unknown>>((resolve, reject) => {
    let out = '';
    proc.stdout!.on('data', (b: Buffer) => {
      out += b.toString();
      const nl = out.indexOf('\n');
      if (nl >= 0) resolve(JSON.parse(out.slice(0, nl)) as Record<string, unknown>);
    });
    proc.on('close', (c) => reject(new Error(`child exited ${c} before a line: ${err}`)));
  });
  return { first, proc };
}

describePrivileged('conntrack/testing', () => {
  it('privileges() says what the kernel says: every capability present, uid, /proc/sys and /dev/kmsg', () => {
    const p = privileges();
    expect(p).toEqual({ ok: true, missing: [], uid: process.getuid!(), procSysWritable: expect.any(Boolean), kernelLogReadable: expect.any(Boolean) });
  });

  it('tcpFlows({ count: 5 }) and udpFlows({ count: 3 }) in a fresh namespace: conntrack -C says 8, and -L has each key', async () => {
    await using ns = await createTestNamespace();
    expect(ns.name).toMatch(/^cttest-[0-9a-f]{8}$/);
    expect(ns.netns).toBe(ns.name); // ip netns attach works here: named under /run/netns
    const tcp = await ns.tcpFlows({ count: 5 });
    const udp = await ns.udpFlows({ count: 3 });
    expect((await ns.exec('conntrack', ['-C'])).stdout.trim()).toBe('8');
    const listed = (await ns.exec('conntrack', ['-L'])).stdout.split('\n').filter(Boolean).map(parseCliLine);
    for (const key of [...tcp, ...udp]) {
      const o = key.original;
      expect(listed.some((e) => e.protocol === key.protocol && e.original.sport === String(o.sport) && e.original.dport === String(o.dport)), JSON.stringify(key)).toBe(true);
    }
    expect(await ns.conntrack.count()).toBe(8);
    for (const key of tcp) expect((await ns.conntrack.get(key))?.state).toBe('TIME_WAIT');
  });

  itNeeds(['procSys'], 'track: false tracks nothing; accounting and timestamps are set in the namespace only', async () => {
    await using quiet = await createTestNamespace({ track: false });
    await quiet.tcpFlows({ count: 2 });
    expect(await quiet.conntrack.count()).toBe(0);
    await using counted = await createTestNamespace({ accounting: true, timestamps: true });
    expect(await counted.conntrack.readSysctl('nf_conntrack_acct')).toBe('1');
    expect(await counted.conntrack.readSysctl('nf_conntrack_timestamp')).toBe('1');
    const [key] = await counted.tcpFlows({ count: 1, bytes: 1000 });
    const entry = await counted.conntrack.get(key!);
    expect(entry?.counters?.original.bytes).toBeGreaterThan(1000);
  });

  it('exec: what a program leaves running in the background dies on its timeout and at close()', async () => {
    const running = (tag: string): boolean => readdirSync('/proc').some((pid) => {
      try {
        return /^\d+$/.test(pid) && readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(tag);
      } catch {
        return false;
      }
    });
    // Durations no other run uses: what this test looks for in /proc is its own.
    const [first, second] = [`1231.${process.pid}`, `1232.${process.pid}`];
    const ns = await createTestNamespace({ track: false });
    // A shell that exits at once, its background child holding the output pipe: the timeout ends both.
    const timed = await ns.exec('sh', ['-c', `sleep ${first} & echo started`], { timeoutMs: 300 });
    expect(timed).toMatchObject({ stdout: 'started\n', timedOut: true });
    expect(running(first)).toBe(false);
    // No timeout: the call waits on the daemon, and close() ends it (and settles).
    const daemon = ns.exec('sh', ['-c', `sleep ${second} & echo started`]).catch((e: unknown) => e);
    await waitFor(() => (running(second) ? true : undefined), 5000, 'the background sleep to start');
    await ns.close();
    await daemon;
    expect(running(second)).toBe(false);
  });

  it('close() while flows are being made settles, also as the last thing a process awaits; what was pending rejects EBADF', () => {
    // A request answered while close() waits for the thread to exit once unref'd it, and the loop ended first.
    const script = `import * as T from ${JSON.stringify(TESTING)};
      const outcomes = new Set();
      const outcome = (p) => p.then(() => 'done', (e) => e.code + ': ' + e.message.replace(/cttest-[0-9a-f]+/, 'NS'));
      for (let i = 0; i < 20; i++) {
        const ns = await T.createTestNamespace({ track: false });
        const pending = [ns.tcpFlows({ count: 5 }), ns.udpFlows({ count: 5 }), ns.fill(2000), ns.conntrack.count({ protocol: 'tcp' })].map(outcome);
        await ns.close();
        for (const o of await Promise.all(pending)) outcomes.add(o);
      }
      console.log('closed 20');
      console.log([...outcomes].sort().join('\\n'));`;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 60_000 });
    // 13: node's exit code for a top-level await that never settled.
    expect({ status: r.status, stderr: r.stderr }).toEqual({ status: 0, stderr: '' });
    const [closed, ...outcomes] = r.stdout.trim().split('\n');
    expect(closed).toBe('closed 20');
    // A flow may be made before close() reaches it; nothing ends any other way than EBADF naming what was closed.
    const allowed = ['done', 'EBADF: tcpFlows: the test namespace NS was closed (EBADF)', 'EBADF: udpFlows: the test namespace NS was closed (EBADF)', 'EBADF: fill: the handle was closed (EBADF)', 'EBADF: count: the handle was closed (EBADF)'];
    expect(outcomes.filter((o) => !allowed.includes(o))).toEqual([]);
    expect(outcomes).toContain('EBADF: count: the handle was closed (EBADF)');
  });

  it('exec: exit codes and output as the program gave them; a timeout says so; a missing program or cwd is a ConntrackError naming it', async () => {
    await using ns = await createTestNamespace({ track: false });
    expect(await ns.exec('sh', ['-c', 'cat; echo err >&2; exit 3'], { input: 'in' })).toEqual({ stdout: 'in', stderr: 'err\n', code: 3, timedOut: false });
    expect(await ns.exec('sleep', ['10'], { timeoutMs: 50 })).toEqual({ stdout: '', stderr: 'exec: sleep was killed (SIGKILL) at its timeout of 50 ms\n', code: 137, timedOut: true });
    await expect(ns.exec('/nonexistent/program')).rejects.toMatchObject({ name: 'ConntrackError', op: 'exec', code: 'ENOENT', message: expect.stringContaining('/nonexistent/program') });
    await expect(ns.exec('true', [], { cwd: '/nonexistent/dir' })).rejects.toMatchObject({
      name: 'ConntrackError', op: 'exec', code: 'ENOENT', message: 'exec: cwd "/nonexistent/dir" does not exist (ENOENT): cannot run true there',
    });
  });

  it('close() leaves no process, thread, namespace or record; the handle is closed and calls say so', async () => {
    const ns = await createTestNamespace();
    const inode = statSync(ns.netns.startsWith('/') ? ns.netns : `/run/netns/${ns.netns}`).ino;
    const sleeping = ns.exec('sleep', ['1000']);
    await expect.poll(() => record(ns.name)?.processes.length).toBe(1);
    const pid = record(ns.name)!.processes[0]!.pid;
    expect(holders(inode).length).toBeGreaterThanOrEqual(2); // the thread and the sleep
    await ns.close();
    expect((await sleeping).code).toBe(137);
    expect(processStart(pid)).toBeUndefined();
    expect(holders(inode)).toEqual([]);
    expect(existsSync(`/run/netns/${ns.name}`)).toBe(false);
    expect(record(ns.name)).toBeUndefined();
    expect(ns.conntrack.closed).toBe(true);
    await expect(ns.tcpFlows({ count: 1 })).rejects.toMatchObject({ code: 'EBADF' });
    await ns.close(); // again: nothing to do
  });

  it('without ip on PATH: an anonymous namespace, a /proc path that ctmon --netns and Conntrack.open take, gone with its owner', async () => {
    const { first, proc } = child(`
      const ns = await T.createTestNamespace({ prefix: 'cttestanon', track: false });
      await ns.fill(3, { src: '10.9.0.0/24' });
      console.log(JSON.stringify({ netns: ns.netns }));
      process.stdin.on('end', async () => { await ns.close(); process.exit(0); }).resume();`, { ...process.env, PATH: '/nonexistent' });
    const { netns } = (await first) as { netns: string };
    try {
      expect(netns).toMatch(/^\/proc\/\d+\/task\/\d+\/ns\/net$/);
      const r = spawnSync(process.execPath, [CTMON, 'list', '--netns', netns, '-o', 'json'], { encoding: 'utf8' });
      expect(r.status, r.stderr).toBe(0);
      expect((JSON.parse(r.stdout) as { original: { src: string } }[]).map((e) => e.original.src).sort()).toEqual(['10.9.0.0', '10.9.0.1', '10.9.0.2']);
    } finally {
      proc.stdin!.end();
      await new Promise((r) => proc.on('close', r));
    }
    expect(existsSync(netns)).toBe(false);
  });

  it('a run killed with SIGKILL: the next createTestNamespace with its prefix removes its namespace and the processes it started', async () => {
    const { first, proc } = child(`
      const { readFileSync } = await import('node:fs');
      const ns = await T.createTestNamespace({ prefix: 'cttestkill' });
      void ns.exec('sleep', ['1000']);
      const rec = () => JSON.parse(readFileSync('${ownersDir()}/' + ns.name + '.json', 'utf8'));
      while (rec().processes.length === 0) await new Promise((r) => setTimeout(r, 10));
      console.log(JSON.stringify({ name: ns.name, netns: ns.netns, sleep: rec().processes[0] }));
      setInterval(() => {}, 1000);`);
    const stale = (await first) as { name: string; netns: string; sleep: { pid: number; start: string } };
    proc.kill('SIGKILL');
    await new Promise((r) => proc.on('close', r));
    expect(alive(stale.sleep)).toBe(true); // what a killed run leaves: its process inside, and its name if it had one
    expect(record(stale.name)).toBeDefined();
    await using next = await createTestNamespace({ prefix: 'cttestkill' });
    expect(next.name).not.toBe(stale.name);
    await expect.poll(() => alive(stale.sleep)).toBe(false); // SIGKILLed by the sweep
    expect(existsSync(`/run/netns/${stale.name}`)).toBe(false);
    expect(record(stale.name)).toBeUndefined();
  });

  it("another run's namespace whose owner lives is left alone", async () => {
    await using mine = await createTestNamespace({ prefix: 'cttestlive' });
    await using other = await createTestNamespace({ prefix: 'cttestlive' });
    expect(existsSync(mine.netns.startsWith('/') ? mine.netns : `/run/netns/${mine.netns}`)).toBe(true);
    expect(other.name).not.toBe(mine.name);
  });

  it('without CAP_SYS_ADMIN: privileges() names it and createTestNamespace rejects with a ConntrackError naming it', () => {
    const code = `
      const p = T.privileges();
      try { await T.createTestNamespace(); console.log(JSON.stringify({ p, created: true })); }
      catch (e) { console.log(JSON.stringify({ p, name: e.name, code: e.code, message: e.message })); }`;
    const r = spawnSync('setpriv', ['--bounding-set=-sys_admin', '--inh-caps=-sys_admin', process.execPath, '--input-type=module', '-e', `import * as T from ${JSON.stringify(TESTING)};\n${code}`], { encoding: 'utf8' });
    expect(r.stderr).toBe('');
    const out = JSON.parse(r.stdout) as { p: { ok: boolean; missing: string[]; uid: number }; name: string; code: string; message: string };
    expect(out.p).toMatchObject({ ok: false, missing: ['CAP_SYS_ADMIN'], uid: 0 });
    expect(out).toMatchObject({ name: 'ConntrackError', code: 'EPERM' });
    expect(out.message).toContain('CAP_SYS_ADMIN');
    expect(out.message).not.toContain('run as root');
  });

  it('a read-only /proc/sys and no /dev/kmsg, as in a container: privileges() says so, and accounting: true fails naming the mount and the flags', () => {
    const code = `
      const p = T.privileges();
      const e = await T.createTestNamespace({ accounting: true }).then(() => undefined, (x) => x);
      const plain = await T.createTestNamespace();
      await plain.close();
      console.log(JSON.stringify({ p, code: e?.code, message: e?.message }));`;
    const script = `import * as T from ${JSON.stringify(TESTING)};\n${code}`;
    // What container runtimes do (HINTS): /proc/sys bound read-only; a socket over /dev/kmsg, so opening it fails.
    const sock = join(ownersDir(), `kmsg-${process.pid}.sock`);
    spawnSync('python3', ['-c', `import socket; socket.socket(socket.AF_UNIX).bind(${JSON.stringify(sock)})`]);
    try {
      const r = spawnSync('unshare', ['-m', '--propagation', 'private', 'sh', '-c',
        // In a container /dev/kmsg is already absent: nothing to cover there.
        'mount --bind /proc/sys /proc/sys && mount -o remount,bind,ro /proc/sys && { [ ! -e /dev/kmsg ] || mount --bind "$1" /dev/kmsg; } && shift && exec "$@"',
        'sh', sock, process.execPath, '--input-type=module', '-e', script], { encoding: 'utf8' });
      expect(r.stderr).toBe('');
      const out = JSON.parse(r.stdout) as { p: Record<string, unknown>; code: string; message: string };
      expect(out.p).toMatchObject({ ok: true, missing: [], procSysWritable: false, kernelLogReadable: false });
      expect(out.code).toBe('EROFS');
      for (const flag of ['read-only', '--privileged', 'systempaths=unconfined', 'unmask=/proc/sys']) expect(out.message).toContain(flag);
    } finally {
      rmSync(sock, { force: true });
    }
  });

  describe('waitForEvent', () => {
    let ns: TestNamespace;
    beforeAll(async () => {
      ns = await createTestNamespace();
    });
    afterAll(() => ns?.close());

    it('the first matching event of real traffic; the deadline named with what was seen; nothing lost to a deadline', async () => {
      await using stream = ns.conntrack.events();
      const quiet = await waitForEvent(stream, () => true, { timeoutMs: 100 }).catch((e: unknown) => e);
      expect(quiet).toBeInstanceOf(ConntrackError);
      expect(quiet).toMatchObject({ code: 'ETIMEDOUT', message: 'waitForEvent: no matching event within the deadline of 100 ms; saw no events' });
      const [key] = await ns.udpFlows({ count: 1 });
      // The read left pending by the deadline above hands its event to this call.
      const ev = await waitForEvent(stream, (e) => e.type === 'new', { timeoutMs: 5000 });
      expect(ev.type === 'new' && ev.entry.original.sport).toBe(key!.original.sport);
      await ns.tcpFlows({ count: 1 });
      const missed = await waitForEvent(stream, (e) => e.type === 'new' && e.entry.protocol === 'sctp', { timeoutMs: 300 }).catch((e: Error) => e);
      expect((missed as Error).message).toMatch(/^waitForEvent: no matching event within the deadline of 300 ms; saw \d+ event\(s\), the last 5: .*(new|update) tcp 127\.0\.0\.1:\d+ -> 127\.0\.0\.1:\d+/);
    });
  });

  describe('fill', () => {
    let ns: TestNamespace;
    beforeAll(async () => {
      ns = await createTestNamespace({ track: false });
    });
    afterAll(() => ns?.close());

    const options = fc.record(
      {
        protocol: fc.constantFrom('tcp' as const, 'udp' as const),
        src: fc.tuple(fc.integer({ min: 0, max: 255 }), fc.integer({ min: 22, max: 32 })).map(([b, len]) => `10.${b}.0.0/${len}`),
        dst: fc.integer({ min: 1, max: 254 }).map((d) => `192.0.2.${d}`),
        sport: fc.oneof(fc.integer({ min: 1, max: 65535 }), fc.tuple(fc.integer({ min: 1, max: 60000 }), fc.integer({ min: 0, max: 50 })).map(([a, w]) => [a, a + w] as [number, number])),
        dport: fc.oneof(fc.integer({ min: 1, max: 65535 }), fc.tuple(fc.integer({ min: 1, max: 65000 }), fc.integer({ min: 0, max: 5 })).map(([a, w]) => [a, a + w] as [number, number])),
        timeout: fc.integer({ min: 60, max: 100_000 }),
        mark: fc.integer({ min: 0, max: 2 ** 32 - 1 }),
      },
      { requiredKeys: [] },
    );

    it('count distinct entries within the options, as conntrack -C and -L see them (fast-check against the CLI)', async () => {
      console.log(`fill property: seed ${seed}, ${runs} runs (CONNTRACK_PBT_SEED, CONNTRACK_PBT_RUNS)`);
      await fc.assert(
        fc.asyncProperty(options, fc.integer({ min: 1, max: 400 }), async (o: FillOptions, wanted) => {
          await ns.conntrack.flush();
          const range = (r: FillOptions['sport'], d: [number, number]): [number, number] => (r === undefined ? d : typeof r === 'number' ? [r, r] : [r[0], r[1]]);
          const [sLo, sHi] = range(o.sport, [1024, 65535]);
          const [dLo, dHi] = range(o.dport, [80, 80]);
          const hosts = 2 ** (32 - Number(o.src?.split('/')[1] ?? 8));
          const count = Math.min(wanted, hosts * (sHi - sLo + 1) * (dHi - dLo + 1));
          expect(await ns.fill(count, o)).toBe(count);
          expect((await ns.exec('conntrack', ['-C'])).stdout.trim()).toBe(String(count));
          const lines = (await ns.exec('conntrack', ['-L'])).stdout.split('\n').filter(Boolean).map(parseCliLine);
          expect(lines).toHaveLength(count);
          const tuples = new Set(lines.map((e) => `${e.original.src} ${e.original.sport} ${e.original.dport}`));
          expect(tuples.size).toBe(count);
          const base = (o.src ?? '10.0.0.0/8').split('/')[0]!.split('.').map(Number);
          for (const e of lines) {
            expect(e.protocol).toBe(o.protocol ?? 'tcp');
            expect(e.original.dst).toBe(o.dst ?? '192.0.2.1');
            const a = e.original.src!.split('.').map(Number);
            const offset = ((a[0]! - base[0]!) * 2 ** 24 + (a[1]! - base[1]!) * 2 ** 16 + (a[2]! - base[2]!) * 256 + (a[3]! - base[3]!));
            expect(offset >= 0 && offset < hosts, e.original.src).toBe(true);
            expect(Number(e.original.sport)).toBeGreaterThanOrEqual(sLo);
            expect(Number(e.original.sport)).toBeLessThanOrEqual(sHi);
            expect(Number(e.original.dport)).toBeGreaterThanOrEqual(dLo);
            expect(Number(e.original.dport)).toBeLessThanOrEqual(dHi);
            expect(Number(e.fields.mark ?? 0)).toBe(o.mark ?? 0);
            if ((o.protocol ?? 'tcp') === 'tcp') expect(e.state).toBe('ESTABLISHED');
            expect(e.timeout).toBeLessThanOrEqual(o.timeout ?? 600);
          }
        }),
        { numRuns: runs, seed },
      );
    }, 300_000);

    it('more entries than the options allow is refused before anything is created; an entry already there is EEXIST naming it', async () => {
      await ns.conntrack.flush();
      await expect(ns.fill(5, { src: '10.1.1.1', sport: 7, dport: [1, 4] })).rejects.toMatchObject({ code: 'ERR_INVALID_ARG', argument: 'count' });
      expect(await ns.conntrack.count()).toBe(0);
      await ns.fill(2, { src: '10.1.1.0/31' });
      await expect(ns.fill(3, { src: '10.1.1.0/30' })).rejects.toMatchObject({ code: 'EEXIST', message: expect.stringContaining('10.1.1.0') });
    });
  });
});

