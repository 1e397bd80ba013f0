/**
 * ctmon doctor on real namespaces, each scenario built for real and checked
 * for its verdict, exit code and fix commands: a stock namespace, light
 * traffic with the kernel's default timeouts, a UDP flood on port 53, a SYN
 * flood from three sources, a table filled to the max with drops now and
 * then only in the past, and the kernel's own "table full" message.
 */
import { spawn, spawnSync } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { release } from 'node:os';
import { expect, it } from 'vitest';
import { Conntrack, defaultTimeouts, diagnose, type Diagnosis, type Finding } from '../src/index.js';
import { readKernelLog } from '../src/kernel-log.js';
import { CTMON, ctmon } from './helpers/cli.js';
import { describePrivileged, itNeeds, Netns, useNamespace, waitFor } from './helpers/netns.js';

/** `ctmon doctor --json` as an operator runs it. */
function doctor(ns: Netns, ...extra: string[]): { status: number; d: Diagnosis } {
  const r = ctmon(['doctor', '--netns', ns.name, '--json', ...extra]);
  expect(r.stderr).toBe('');
  return { status: r.status, d: JSON.parse(r.stdout) as Diagnosis };
}

function finding(d: Diagnosis, id: string): Finding {
  const f = d.findings.find((x) => x.id === id);
  expect(f, `finding ${id} in ${d.findings.map((x) => x.id).join(', ')}`).toBeDefined();
  return f!;
}

/** conntrack -R lines for `n` entries built by `line(i)`. */
function lines(n: number, line: (i: number) => string): string[] {
  return Array.from({ length: n }, (_, i) => line(i));
}
/** A sysctl of the test runner's namespace, read only: tests never change the host. */
async function hostSysctl(name: string): Promise<string> {
  const h = await Conntrack.open(); // the test runner's own namespace
  try {
    return await h.readSysctl(name);
  } finally {
    h.close();
  }
}

const addr = (i: number): string => `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`;

describePrivileged('ctmon doctor (real namespaces)', () => {
  // Every scenario but the stock one: a namespace that tracks loopback traffic, and a handle in it.
  const fx = useNamespace();

  it('a stock namespace: healthy, exit 0, and says conntrack is inactive there', () => {
    const ns = Netns.bare(); // as `ip netns add` leaves it: no rule uses conntrack
    try {
      const { status, d } = doctor(ns);
      expect(status).toBe(0);
      expect(d.status).toBe('healthy');
      expect(d.facts.active).toBe(false);
      expect(finding(d, 'inactive').severity).toBe('info');
      expect(d.findings.find((f) => f.id === 'fill')).toBeUndefined(); // never "table has room" where nothing is tracked
      const text = ctmon(['doctor', '--netns', ns.name]);
      expect(text.status).toBe(0);
      expect(text.stdout).toContain('conntrack is inactive in this namespace');
      expect(text.stdout).toContain(`ip netns exec ${ns.name} nft`);
    } finally {
      ns.destroy();
    }
  });

  it('tracking on, light traffic, the kernel\'s default timeouts: healthy, exit 0; the long established timeout is info', () => {
    const { ns } = fx;
    ns.tcpConnection();
    ns.udpExchange();
    // A fresh namespace has the kernel's defaults: the table the doctor compares with is this kernel's.
    const major = Number(release().split('.')[0]);
    for (const [name, value] of Object.entries(defaultTimeouts(major))) expect(Number(ns.sysctl(name)), name).toBe(value);
    const { status, d } = doctor(ns, '--interval', '0.2');
    expect(status).toBe(0);
    expect(d.facts.active).toBe(true);
    expect(finding(d, 'fill').severity).toBe('ok');
    const est = finding(d, 'tcp-established-timeout');
    expect(est.severity).toBe('info');
    expect(est.title).toContain('(the kernel default)');
    expect(d.facts.timeouts.nf_conntrack_tcp_timeout_established).toEqual({ value: 432000, default: 432000 });
    expect(d.facts.rates.intervalSeconds).toBeGreaterThanOrEqual(0.2);
    // Nothing overflowed here: no table-full line is counted against this namespace.
    expect(d.facts.kernelLog.thisNamespace ?? 0).toBe(0);
    expect(d.findings.find((f) => f.id === 'kernel-log')).toBeUndefined();
    expect(d.facts.memory.entryBytes).toBeGreaterThan(0);
    // One consistent pair of values, sized as this kernel's documentation says.
    expect(d.facts.advice.buckets).toBe(d.facts.kernel.major > 5 || (d.facts.kernel.major === 5 && d.facts.kernel.minor >= 15) ? d.facts.advice.max : d.facts.advice.max / 4);
    expect(d.findings.find((f) => f.id === 'buckets')).toBeUndefined();
  });

  itNeeds(['procSys'], 'a UDP flood on port 53 from many sources: names the UDP timeouts and notrack, with exact commands; --fix --yes applies them here only', async () => {
    const { ns, ct } = fx;
    const { max } = await ct.stats();
    const n = Math.ceil(max * 0.55);
    ns.restore(lines(n, (i) => `-I -p udp -s ${addr(i % 5000 + 1)} -d 192.0.2.53 --sport ${1024 + Math.floor(i / 5000)} --dport 53 -t 30`));
    const { status, d } = doctor(ns);
    expect(status).toBe(1);
    const udp = finding(d, 'udp');
    expect(udp.severity).toBe('warning');
    expect(udp.title).toContain('UDP to 192.0.2.53:53 fills the table');
    expect(udp.detail).toMatch(/each lives 30 s .*nf_conntrack_udp_timeout\) or 120 s once a stream/);
    const fix = udp.fix.join('\n');
    expect(fix).toContain(`ip netns exec ${ns.name} sysctl -w net.netfilter.nf_conntrack_udp_timeout=10`);
    expect(fix).toContain(`ip netns exec ${ns.name} sysctl -w net.netfilter.nf_conntrack_udp_timeout_stream=60`);
    expect(fix).toMatch(/hook prerouting priority raw; .*add rule inet ctmon_notrack pre udp dport 53 notrack/);
    expect(fix).toContain(`ip netns exec ${ns.name} iptables -t raw -A PREROUTING -p udp --dport 53 -j CT --notrack`);
    // A per-namespace fix is never persisted into the host's /etc/sysctl.d.
    expect(fix).not.toMatch(/>> \/etc\/sysctl\.d/);
    expect(d.facts.table.udp).toBe(n);

    // The notrack rule the doctor prints is valid nftables, and works: new DNS traffic is no longer tracked.
    const rule = udp.fix.find((c) => c.includes('add table inet ctmon_notrack'))!;
    const nftScript = /nft '(.*)'$/.exec(rule)![1]!;
    ns.exec('nft', [nftScript]);
    const before = (await ct.stats()).count;
    ns.udpExchange('127.0.0.1', 53);
    expect((await ct.stats()).count).toBe(before);

    const hostUdp = await hostSysctl('nf_conntrack_udp_timeout');
    const applied = ctmon(['doctor', '--netns', ns.name, '--fix', '--yes']);
    expect(applied.stdout).toContain('changed net.netfilter.nf_conntrack_udp_timeout: 30 -> 10');
    expect(applied.stdout).toContain('changed net.netfilter.nf_conntrack_udp_timeout_stream: 120 -> 60');
    expect(ns.sysctl('nf_conntrack_udp_timeout')).toBe('10');
    expect(await hostSysctl('nf_conntrack_udp_timeout')).toBe(hostUdp);
  });

  it('a SYN flood from 3 sources: the unassured share, the sources and the syn_sent timeout', async () => {
    const { ns, ct } = fx;
    const { max } = await ct.stats();
    const sources = ['198.51.100.1', '198.51.100.2', '203.0.113.9'];
    const n = Math.ceil(max * 0.55);
    ns.restore(lines(n, (i) => `-I -p tcp -s ${sources[i % 3]} -d ${addr(i)} --sport ${1024 + (i % 60000)} --dport 443 --state SYN_SENT -t 120`));
    const { status, d } = doctor(ns, '--interval', '0.5');
    expect(status).toBe(1);
    const u = finding(d, 'unassured');
    expect(u.severity).toBe('warning');
    expect(u.title).toMatch(/^half-open TCP handshakes are 100\.0% of the table/);
    for (const s of sources) expect(u.detail).toContain(s);
    expect(u.detail).toContain('each kept 120 s (nf_conntrack_tcp_timeout_syn_sent)');
    expect(u.fix).toContain(`ip netns exec ${ns.name} sysctl -w net.netfilter.nf_conntrack_tcp_timeout_syn_sent=30`);
    const top = finding(d, 'top-sources');
    expect(top.title).toBe('3 sources hold 100.0% of the table');
    // --fail-on critical: warnings alone exit 0; --ignore drops findings from the verdict.
    expect(doctor(ns, '--interval', '0.1', '--fail-on', 'critical').status).toBe(0);
    const ignored = doctor(ns, '--interval', '0.1', '--ignore', 'unassured,top-sources,tcp-established-timeout,max-low');
    expect(ignored.d.ignored.sort()).toEqual(['max-low', 'tcp-established-timeout', 'top-sources', 'unassured']);
    expect(ignored.status).toBe(0);
    // --fix prints the commands, one per line, nothing else.
    const fix = ctmon(['doctor', '--netns', ns.name, '--interval', '0.1', '--fix']);
    expect(fix.stdout.split('\n')).toContain(`ip netns exec ${ns.name} conntrack -D --orig-src 198.51.100.1`);
  });

  /** Real packets of new flows (UDP to ever new ports on loopback) until killed. */
  function newFlows(ns: Netns): ReturnType<Netns['spawn']> {
    return ns.spawn(process.execPath, ['-e', `
      const s = require('node:dgram').createSocket('udp4');
      let port = 0;
      setInterval(() => { for (let i = 0; i < 100; i++) s.send('x', 1 + (port++ % 60000), '127.0.0.1'); }, 5);
      setTimeout(() => process.exit(0), 60000);`]);
  }

  /** ctmon doctor --json run asynchronously, so the test's own work goes on meanwhile. */
  function doctorAsync(ns: Netns, ...extra: string[]): Promise<{ status: number | null; d: Diagnosis }> {
    return new Promise((resolve) => {
      const child = spawn(process.execPath, [CTMON, 'doctor', '--netns', ns.name, '--json', ...extra], { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      child.stdout.on('data', (c: Buffer) => (out += c));
      child.on('exit', (status) => resolve({ status, d: JSON.parse(out) as Diagnosis }));
    });
  }

  it('a table filled to the max: critical (exit 2) with every cause; drops now under real traffic, then only in the past', async () => {
    const { ns, ct } = fx;
    const { max } = await ct.stats();
    const sources = ['192.0.2.66', '192.0.2.77', '198.51.100.1'];
    ns.restore(lines(max, (i) => `-I -p tcp -s ${sources[i % 3]} -d ${addr(i)} --sport 40000 --dport 80 --state SYN_SENT -t 600`), { allowFailures: true });

    // Drops now: real packets of new flows arrive while the doctor samples; each evicts an unassured entry (early_drop).
    const traffic = newFlows(ns);
    let now: { status: number | null; d: Diagnosis };
    try {
      now = await doctorAsync(ns, '--interval', '1');
    } finally {
      traffic.kill();
    }
    await new Promise((r) => traffic.once('exit', r));
    expect(now.status).toBe(2);
    expect(now.d.facts.rates.earlyDrop).toBeGreaterThan(0);
    const full = finding(now.d, 'table-full');
    expect(full.severity).toBe('critical');
    expect(full.detail).toContain('dropping now');
    expect(full.detail).toContain('host-wide: run these on the host');
    expect(full.fix).toContain(`sysctl -w net.netfilter.nf_conntrack_max=${now.d.facts.advice.max}`);
    expect(full.fix).toContain(`echo 'options nf_conntrack hashsize=${now.d.facts.advice.buckets}' > /etc/modprobe.d/nf_conntrack.conf   # buckets persist as a module option`);
    expect(full.detail).toMatch(/at most \d+ MiB when full: \d+ bytes per entry/);
    for (const id of ['unassured', 'top-sources', 'tcp-established-timeout']) expect(finding(now.d, id).severity).toBe('critical');

    // Then no new flows: the table is still full, but nothing drops now.
    const still = doctor(ns, '--interval', '1');
    expect(still.status).toBe(2);
    expect(finding(still.d, 'table-full').detail).toContain('no drops in the last');
    expect(still.d.facts.rates.drop + still.d.facts.rates.earlyDrop).toBe(0);

    // Drops only in the past: empty most of the table; totals remain, the rates are 0.
    await ct.deleteWhere({ src: ['192.0.2.66', '192.0.2.77'] });
    const past = doctor(ns, '--interval', '0.5');
    expect(past.d.facts.fill).toBeLessThan(0.5);
    expect(finding(past.d, 'drops-past').severity).toBe('info');
    expect(past.d.findings.find((f) => f.id === 'drops-now' || f.id === 'table-full')).toBeUndefined();
    expect(past.d.facts.totals.earlyDrop).toBeGreaterThan(0);
  });

  itNeeds(['kernelLog'], 'a table full of assured flows: packets dropped now, and the kernel\'s own "table full" line for this namespace', async () => {
    const { ns, ct } = fx;
    const { max } = await ct.stats();
    // Assured entries cannot be early-dropped: a new flow's packet is dropped, and the kernel logs it.
    ns.restore(lines(max, (i) => `-I -p tcp -s 192.0.2.${1 + (i % 200)} -d ${addr(i)} --sport 40000 --dport 80 --state ESTABLISHED -u ASSURED,SEEN_REPLY -t 600`), { allowFailures: true });
    const traffic = newFlows(ns);
    let now: { status: number | null; d: Diagnosis };
    try {
      // The line is rate-limited (10 per 5 s, shared by all network messages): wait for one for this namespace.
      const st = statSync(`/run/netns/${ns.name}`);
      const log = await waitFor(async () => {
        const r = await readKernelLog({ inode: st.ino, sinceMs: st.ctimeMs - 1000 });
        return (r.thisNamespace ?? r.tableFull) > 0 ? r : undefined;
      }, 20_000, 'the kernel to log "table full"');
      now = await doctorAsync(ns, '--interval', '1');
      expect(now.status).toBe(2);
      expect(now.d.facts.rates.drop).toBeGreaterThan(0);
      expect(finding(now.d, 'table-full').detail).toMatch(/dropping now: drop \d/);
      if (log.thisNamespace !== null) {
        // This kernel names the namespace in the line: counted here, critical while it drops.
        expect(now.d.facts.kernelLog.attributed).toBe(true);
        const k = finding(now.d, 'kernel-log');
        expect(k.severity).toBe('critical');
        expect(k.title).toMatch(/for this namespace$/);
        expect(k.fix[0]).toBe(`dmesg -T | grep 'table full in netns ${st.ino}'`);
      } else {
        // An older kernel's line names no namespace: host-wide, never counted against this one.
        expect(now.d.facts.kernelLog.attributed).toBe(false);
        expect(now.d.findings.find((f) => f.id.startsWith('kernel-log'))).toBeUndefined();
      }
      // Another namespace's doctor: those lines are context (the log line, facts.kernelLog), never a finding.
      const other = Netns.bare();
      try {
        const { status, d } = doctor(other, '--interval', '0.1');
        expect(status).toBe(0);
        expect(d.facts.kernelLog.tableFull).toBeGreaterThan(0);
        expect(d.facts.kernelLog.thisNamespace ?? 0).toBe(0);
        expect(d.findings.filter((f) => f.id.startsWith('kernel-log'))).toEqual([]);
        const text = ctmon(['doctor', '--netns', other.name, '--interval', '0.1']).stdout;
        expect(text).toMatch(log.thisNamespace !== null ? /"table full" messages in the kernel log \(kmsg, host-wide\): 0 for this namespace, \d+ for other namespaces \(context only\)/ : /they name no namespace, so are context only here/);
      } finally {
        other.destroy();
      }
    } finally {
      traffic.kill();
    }
  });

  /**
   * ctmon doctor in a mount namespace where /dev/kmsg is on a nodev mount (open fails EACCES), or absent as
   * in a container, and no dmesg is on PATH.
   */
  function doctorWithoutKernelLog(ns: Netns, ...extra: string[]): { status: number | null; stdout: string; stderr: string } {
    const script = '{ [ ! -e /dev/kmsg ] || { mount --bind /dev/kmsg /dev/kmsg && mount -o remount,bind,nodev /dev/kmsg; }; } && exec env PATH=/nonexistent "$0" "$@"';
    const r = spawnSync('unshare', ['-m', '--propagation', 'private', 'sh', '-c', script, process.execPath, CTMON, 'doctor', '--netns', ns.name, '--interval', '0.1', ...extra], { encoding: 'utf8' });
    return { status: r.status, stdout: r.stdout, stderr: r.stderr };
  }

  it('without a readable /dev/kmsg or dmesg: one info finding says where the evidence went missing, no error', () => {
    const ns = Netns.bare();
    try {
      const json = doctorWithoutKernelLog(ns, '--json');
      expect(json.stderr).toBe('');
      expect(json.status).toBe(0);
      const d = JSON.parse(json.stdout) as Diagnosis;
      expect(d.facts.kernelLog.source).toBe('unavailable');
      const k = finding(d, 'kernel-log-unavailable');
      expect(k.severity).toBe('info');
      expect(k.detail).toMatch(/^\/dev\/kmsg (cannot be opened \(EACCES: .*\)|does not exist here); no dmesg program is installed\. /);
      const text = doctorWithoutKernelLog(ns);
      expect(text.status).toBe(0);
      expect(text.stdout.split('\n').filter((l) => /kernel log|kmsg/i.test(l) && !l.startsWith('       ')).length).toBe(1);
      expect(text.stdout).toContain('[INFO] the kernel log cannot be read here');
    } finally {
      ns.destroy();
    }
  });

  it('the initial namespace is told by identity: still "initial" where /proc/sys is read-only, never for another namespace', () => {
    const ns = Netns.bare();
    try {
      // As a container runtime mounts it: nf_conntrack_max is not writable, yet this is the host's namespace.
      const probe = `
        const { Conntrack } = await import(${JSON.stringify(new URL('../dist/index.js', import.meta.url).href)});
        const { isInitialNamespace } = await import(${JSON.stringify(new URL('../dist/initial-namespace.js', import.meta.url).href)});
        const own = await Conntrack.open();
        const other = await Conntrack.open({ netns: ${JSON.stringify(ns.name)} });
        console.log(JSON.stringify({ writable: await own.sysctlWritable('nf_conntrack_max'), own: await isInitialNamespace(own.namespaceId), other: await isInitialNamespace(other.namespaceId) }));
        own.close(); other.close();`;
      const script = 'mount --bind /proc/sys /proc/sys && mount -o remount,bind,ro /proc/sys && exec "$0" "$@"';
      const r = spawnSync('unshare', ['-m', '--propagation', 'private', 'sh', '-c', script, process.execPath, '--input-type=module', '-e', probe], { encoding: 'utf8' });
      expect(r.stderr).toBe('');
      expect(JSON.parse(r.stdout)).toEqual({ writable: false, own: true, other: false });
    } finally {
      ns.destroy();
    }
  });

  itNeeds(['kernelLog'], '--fix --yes on a namespace deleted and created again mid-run: says so, exits 2, writes nothing, and reads the kernel log for the namespace it held', async () => {
    const ns = Netns.bare();
    try {
      const heldInode = statSync(`/run/netns/${ns.name}`).ino;
      const proc = spawn(process.execPath, [CTMON, 'doctor', '--netns', ns.name, '--fix', '--yes', '--json', '--interval', '3'], { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      let err = '';
      proc.stdout!.on('data', (d: Buffer) => (out += d.toString()));
      proc.stderr!.on('data', (d: Buffer) => (err += d.toString()));
      const exited = new Promise<number | null>((resolve) => proc.on('exit', (code) => resolve(code)));
      // Once the doctor holds the namespace (an fd on its nsfs inode), replace it under its name.
      await waitFor(() => {
        try {
          return readdirSync(`/proc/${proc.pid}/fd`).some((fd) => statSync(`/proc/${proc.pid}/fd/${fd}`).ino === heldInode) ? true : undefined;
        } catch {
          return undefined;
        }
      }, 10_000, 'the doctor to open the namespace');
      ns.recreate();
      expect(await exited).toBe(2);
      const d = JSON.parse(out) as Diagnosis;
      expect(d.facts.namespace).toMatchObject({ name: ns.name, inode: heldInode, now: 'replaced' });
      expect(finding(d, 'namespace-changed').severity).toBe('critical');
      expect(d.findings.flatMap((f) => f.changes)).toEqual([]);
      expect(err).not.toMatch(/changed net\.netfilter/);
      expect(err).toContain('nothing to change');
      // The namespace there now was not touched.
      expect(ns.sysctl('nf_conntrack_tcp_timeout_established')).toBe(String(defaultTimeouts(Number(release().split('.')[0])).nf_conntrack_tcp_timeout_established));
    } finally {
      ns.destroy();
    }
  });

  it('bad options are refused before anything is read', async () => {
    const { ns, ct } = fx;
    await expect(diagnose(ct, { intervalSeconds: 0 })).rejects.toMatchObject({ code: 'ERR_INVALID_ARG' });
    await expect(diagnose(ct, { failOn: 'info' as 'warning' })).rejects.toThrow(/failOn must be 'warning' or 'critical'/);
    await expect(diagnose(ct, { ignore: 'udp' as unknown as string[] })).rejects.toThrow(/ignore must be an array/);
    await expect(diagnose(ct, { bogus: 1 } as never)).rejects.toThrow(/unknown option field/);
    const r = ctmon(['doctor', '--netns', ns.name, '--yes']);
    expect(r.status).toBe(64);
    expect(r.stderr).toMatch(/--yes applies fixes: use it with --fix/);
  });
});
