/**
 * Throwaway network namespaces for integration tests: each has lo up and an
 * nftables rule (`ct state new counter`) so the kernel tracks its loopback
 * traffic; helpers make real traffic inside it and run the `conntrack` CLI
 * there as the oracle. Never touches the host namespace's table.
 */
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, it } from 'vitest';
import { Conntrack } from '../../src/index.js';
import { privileges, type ProcessPrivileges } from '../../src/testing.js';
import { dropOwnerRecord, processId, sweepStale, writeOwnerRecord } from '../../src/testing-owners.js';

export const requirePrivileged = process.env.CONNTRACK_REQUIRE_PRIVILEGED === '1';

let known: ProcessPrivileges | undefined;
/** privileges(), read once: it only reads this process's own /proc files (and opens /dev/kmsg read-only). */
function privs(): ProcessPrivileges {
  return (known ??= privileges());
}

/** What a test can need beyond the capabilities: a writable /proc/sys (sysctl writes), a readable /dev/kmsg (the kernel log). */
export type Need = 'procSys' | 'kernelLog';

/** Why tests with `needs` cannot run here, or undefined if they can. */
export function lacking(needs: readonly Need[] = []): string | undefined {
  const p = privs();
  if (p.missing.length > 0) return `needs ${p.missing.join(' and ')} (this process${p.uid === 0 ? ', uid 0,' : ''} lacks it in its effective set)`;
  if (needs.includes('procSys') && !p.procSysWritable) return 'needs a writable /proc/sys (it is mounted read-only here, as container runtimes do)';
  if (needs.includes('kernelLog') && !p.kernelLogReadable) return 'needs a readable /dev/kmsg (absent or refused here)';
  return undefined;
}

/**
 * describe() for tests that need CAP_NET_ADMIN and CAP_SYS_ADMIN (and
 * `needs`). Where they are missing the block is skipped, its title saying
 * why, unless CONNTRACK_REQUIRE_PRIVILEGED=1 (set by CI), which turns the
 * skip into a failure.
 */
export function describePrivileged(name: string, fn: () => void, needs: readonly Need[] = []): void {
  const why = lacking(needs);
  if (why === undefined) {
    describe(name, fn);
  } else if (requirePrivileged) {
    describe(name, () => {
      it('has the privileges it needs', () => {
        throw new Error(`CONNTRACK_REQUIRE_PRIVILEGED=1 but this block ${why}`);
      });
    });
  } else {
    describe.skip(`${name} (skipped: ${why})`, fn);
  }
}

/** it() for one test that needs a writable /proc/sys or a readable /dev/kmsg: skipped with the reason where missing (a failure under CONNTRACK_REQUIRE_PRIVILEGED=1). */
export function itNeeds(needs: readonly Need[], name: string, fn: () => unknown, timeout?: number): void {
  it(name, async (ctx) => {
    const why = lacking(needs);
    if (why !== undefined) {
      if (requirePrivileged) throw new Error(`CONNTRACK_REQUIRE_PRIVILEGED=1 but this test ${why}`);
      ctx.skip(why);
    }
    await fn();
  }, timeout);
}

function run(cmd: string, args: string[], input?: string): string {
  return execFileSync(cmd, args, { encoding: 'utf8', input, stdio: ['pipe', 'pipe', 'pipe'], maxBuffer: 1 << 30 });
}

export class Netns {
  readonly name: string;
  /** Every namespace this process made, so a test can check its own are gone (other processes' are not its business). */
  static readonly made = new Set<string>();

  private constructor(name: string) {
    this.name = name;
    Netns.made.add(name);
  }

  /** Prefixes whose stale namespaces this process swept already. */
  static readonly #swept = new Set<string>();

  /**
   * A stock namespace as `ip netns add` makes it (lo up): no rule uses
   * conntrack, so nothing is tracked. Its owner is recorded as
   * conntrack/testing records its own, so a killed run's namespaces are
   * swept by the next (the first namespace of each prefix sweeps).
   */
  static bare(prefix = 'cttest'): Netns {
    if (!Netns.#swept.has(prefix)) {
      Netns.#swept.add(prefix);
      sweepStale(prefix);
    }
    const name = `${prefix}-${randomBytes(4).toString('hex')}`;
    writeOwnerRecord({ name, named: true, owner: processId()!, processes: [] });
    try {
      run('ip', ['netns', 'add', name]);
    } catch (e) {
      dropOwnerRecord(name);
      throw e;
    }
    const ns = new Netns(name);
    try {
      ns.exec('ip', ['link', 'set', 'lo', 'up']);
    } catch (e) {
      ns.destroy();
      throw e;
    }
    return ns;
  }

  /** Reads a net.netfilter sysctl of this namespace. */
  sysctl(name: string): string {
    return this.exec('sysctl', ['-n', `net.netfilter.${name}`]).trim();
  }

  /** Creates a namespace with lo up and loopback traffic tracked. */
  static create(prefix = 'cttest'): Netns {
    const ns = Netns.bare(prefix);
    try {
      ns.exec('nft', ['-f', '-'], [
        'table inet cttest {',
        '  chain out { type filter hook output priority 0; ct state new counter; }',
        '  chain in { type filter hook input priority 0; ct state new counter; }',
        '}',
      ].join('\n'));
    } catch (e) {
      ns.destroy();
      throw e;
    }
    return ns;
  }

  exec(cmd: string, args: string[], input?: string): string {
    return run('ip', ['netns', 'exec', this.name, cmd, ...args], input);
  }

  /** Runs the conntrack CLI in the namespace; returns stdout. */
  conntrack(...args: string[]): string {
    return this.exec('conntrack', args);
  }

  /** conntrack CLI that may fail: returns its exit status and output. */
  conntrackStatus(...args: string[]): { status: number; stdout: string; stderr: string } {
    const r = spawnSync('ip', ['netns', 'exec', this.name, 'conntrack', ...args], { encoding: 'utf8' });
    return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
  }

  /** `conntrack -L` lines (plus any extra args), sorted. */
  list(...args: string[]): string[] {
    return this.conntrack('-L', ...args).split('\n').filter(Boolean).sort();
  }

  /**
   * Loads entries with `conntrack -R` (restore): one `-I ...` line each.
   * With allowFailures, inserts the kernel refuses (a full table) are fine.
   */
  restore(lines: string[], options: { allowFailures?: boolean } = {}): void {
    const dir = mkdtempSync(join(tmpdir(), 'ctrestore-'));
    const file = join(dir, 'entries');
    try {
      writeFileSync(file, lines.join('\n') + '\n');
      if (options.allowFailures) spawnSync('ip', ['netns', 'exec', this.name, 'conntrack', '-R', file], { stdio: 'ignore' });
      else this.exec('conntrack', ['-R', file]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }

  /** Runs a Node.js snippet inside the namespace (traffic generators) and waits for it. */
  node(code: string): string {
    return this.exec(process.execPath, ['--input-type=module', '-e', code]);
  }

  /** Starts a long-running process inside the namespace. */
  spawn(cmd: string, args: string[]): ChildProcess {
    return spawn('ip', ['netns', 'exec', this.name, cmd, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  }

  /** A TCP connection over loopback: listen, connect, exchange a byte, close both ends. Returns the client port. */
  tcpConnection(address = '127.0.0.1', port = 8080): number {
    const out = this.node(`
      import net from 'node:net';
      const server = net.createServer((s) => { s.on('data', () => s.end('y')); });
      server.listen(${port}, '${address}', () => {
        const c = net.connect(${port}, '${address}', () => c.write('x'));
        c.on('data', () => { process.stdout.write(String(c.localPort)); c.end(); });
        c.on('close', () => server.close());
      });`);
    return Number(out);
  }

  /** One UDP datagram and its answer over loopback. Returns the client port. */
  udpExchange(address = '127.0.0.1', port = 5353): number {
    const out = this.node(`
      import dgram from 'node:dgram';
      const type = '${address}'.includes(':') ? 'udp6' : 'udp4';
      const server = dgram.createSocket(type);
      server.on('message', (m, r) => server.send('pong', r.port, r.address));
      server.bind(${port}, '${address}', () => {
        const c = dgram.createSocket(type);
        c.on('message', () => { process.stdout.write(String(c.address().port)); c.close(); server.close(); });
        c.send('ping', ${port}, '${address}');
      });`);
    return Number(out);
  }

  /** Real TCP, UDP and ICMP over loopback, IPv4 and IPv6: six kernel-made entries of every kind. */
  mixedTraffic(): void {
    this.tcpConnection('127.0.0.1', 8080);
    this.tcpConnection('::1', 8081);
    this.udpExchange('127.0.0.1', 5353);
    this.udpExchange('::1', 5354);
    this.ping('127.0.0.1');
    this.ping('::1');
  }

  /**
   * Real NAT on loopback, made by the kernel: nftables DNATs a TCP connection
   * to 127.0.0.2:8080 to a server on 127.0.0.1, and SNATs a UDP datagram to
   * 127.0.0.3:5353 to `snatTo` (an address, or ADDRESS:PORT).
   */
  natTraffic(snatTo: string): void {
    this.exec('ip', ['addr', 'add', '127.0.0.2/8', 'dev', 'lo']);
    this.exec('nft', ['-f', '-'], [
      'table ip ctnat {',
      '  chain out { type nat hook output priority -100; ip daddr 127.0.0.2 tcp dport 8080 dnat to 127.0.0.1; }',
      `  chain post { type nat hook postrouting priority 100; ip daddr 127.0.0.3 udp dport 5353 snat to ${snatTo}; }`,
      '}',
    ].join('\n'));
    this.exec('ip', ['route', 'add', '127.0.0.3/32', 'dev', 'lo', 'src', '127.0.0.1']);
    this.node(`
      import net from 'node:net';
      import dgram from 'node:dgram';
      const srv = net.createServer((s) => s.end('x'));
      await new Promise((r) => srv.listen(8080, '127.0.0.1', r));
      await new Promise((r) => { const c = net.connect(8080, '127.0.0.2', () => c.write('hi')); c.on('data', () => c.end()); c.on('close', r); });
      srv.close();
      const u = dgram.createSocket('udp4');
      await new Promise((r) => u.send('q', 5353, '127.0.0.3', r));
      u.close();
    `);
  }

  /** One ICMP echo over loopback (needs ping from iputils-ping). */
  ping(address = '127.0.0.1'): void {
    this.exec('ping', ['-c', '1', '-W', '1', address]);
  }

  destroy(): void {
    spawnSync('ip', ['netns', 'delete', this.name]);
    dropOwnerRecord(this.name);
  }

  /** A new namespace under this name (`ip netns delete NAME; ip netns add NAME`, lo up): what a handle on the old one no longer sees. */
  recreate(): void {
    spawnSync('ip', ['netns', 'delete', this.name]);
    run('ip', ['netns', 'add', this.name]);
    this.exec('ip', ['link', 'set', 'lo', 'up']);
  }
}

/** Polls `check` until it returns a value other than undefined, or fails after `timeoutMs`. */
export async function waitFor<T>(check: () => T | undefined | Promise<T | undefined>, timeoutMs = 5000, what = 'condition'): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** One `conntrack -L` line parsed into its fields (the oracle's view of an entry). */
export interface CliEntry {
  protocol: string;
  protonum: number;
  timeout: number;
  state?: string;
  original: Record<string, string>;
  reply: Record<string, string>;
  flags: string[];
  fields: Record<string, string>;
}

export function parseCliLine(line: string): CliEntry {
  const tokens = line.trim().split(/\s+/);
  let i = 0;
  if (tokens[0] === 'ipv4' || tokens[0] === 'ipv6') i = 2; // -o extended
  const protocol = tokens[i++]!;
  const protonum = Number(tokens[i++]);
  const timeout = Number(tokens[i++]);
  const entry: CliEntry = { protocol, protonum, timeout, original: {}, reply: {}, flags: [], fields: {} };
  if (tokens[i] && !tokens[i]!.includes('=')) entry.state = tokens[i++];
  let tuple: 'original' | 'reply' | 'done' = 'original';
  for (; i < tokens.length; i++) {
    const t = tokens[i]!;
    if (t.startsWith('[')) {
      entry.flags.push(t.slice(1, -1));
      continue;
    }
    const eq = t.indexOf('=');
    const key = t.slice(0, eq);
    const value = t.slice(eq + 1);
    if (key === 'src' && tuple === 'original' && entry.original.src !== undefined) tuple = 'reply';
    // Tuples end where the entry-wide fields start. An `id=` right after an
    // icmp `code=` is the ICMP id of the tuple; anywhere else it is the entry id.
    const last = tuple === 'done' ? undefined : Object.keys(entry[tuple]).at(-1);
    if (['mark', 'use', 'zone', 'secctx', 'labels', 'portid'].includes(key) || (key === 'id' && last !== 'code')) tuple = 'done';
    if (tuple === 'done') entry.fields[key] = value;
    else entry[tuple][key] = value;
  }
  return entry;
}

/**
 * The fixture most tests share: a fresh namespace (Netns.create) and a handle
 * in it, for each test or for the whole describe block, both removed after.
 * Read `fx.ns` and `fx.ct` inside tests and hooks.
 */
export function useNamespace(scope: 'each' | 'all' = 'each', prefix = 'cttest'): { readonly ns: Netns; readonly ct: Conntrack } {
  const fx = {} as { ns: Netns; ct: Conntrack };
  const setup = async (): Promise<void> => {
    fx.ns = Netns.create(prefix);
    fx.ct = await Conntrack.open({ netns: fx.ns.name });
  };
  const teardown = (): void => {
    fx.ct?.close();
    fx.ns?.destroy();
  };
  if (scope === 'each') {
    beforeEach(setup);
    afterEach(teardown);
  } else {
    beforeAll(setup);
    afterAll(teardown);
  }
  return fx;
}

/** Undo steps a test registers as it goes (kill a process, close a socket), run last-first after each test. */
export function useCleanup(): (() => void)[] {
  const steps: (() => void)[] = [];
  afterEach(() => {
    for (const step of steps.splice(0).reverse()) step();
  });
  return steps;
}
