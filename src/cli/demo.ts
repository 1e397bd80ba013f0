/**
 * ctmon demo: a throwaway namespace with real traffic, live events, a
 * partly filled table, the doctor, and a targeted delete of one source's
 * flows; the namespace is removed at the end, on error, on Ctrl-C and when
 * the terminal closes.
 */
import { execFile, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { promisify } from 'node:util';
import { Conntrack } from '../conntrack.js';
import { diagnose } from '../doctor.js';
import { ConntrackError } from '../errors.js';
import type { EntryEvent } from '../events.js';
import { COMMON_OPTIONS, numberArg, stringArg, UsageError, type OptionSpec, type ParsedArgs } from './args.js';
import { conntrackLine } from './format.js';

export const options: OptionSpec[] = [
  { name: 'netns', type: 'string', placeholder: 'NAME', help: 'name of the throwaway namespace to create (default ctmon-demo-XXXXXX); an existing one is refused, never touched' },
  { name: 'flood', type: 'number', placeholder: 'N', help: 'entries the noisy source inserts (default 3000)' },
  ...COMMON_OPTIONS.filter((o) => o.name !== 'netns'),
];
export const summary = 'Shows the whole package at work in a throwaway network namespace, then removes it.';

const exec = promisify(execFile);
const NOISY = '198.51.100.7';

const TRAFFIC = `
import net from 'node:net';
import dgram from 'node:dgram';
const server = net.createServer((s) => s.on('data', () => s.end('ok')));
await new Promise((r) => server.listen(8080, '127.0.0.1', r));
for (let i = 0; i < 10; i++) {
  await new Promise((r) => { const c = net.connect(8080, '127.0.0.1', () => c.write('hi')); c.on('data', () => c.end()); c.on('close', r); });
}
server.close();
const udp = dgram.createSocket('udp6');
await new Promise((r) => udp.bind(5353, '::1', r));
udp.on('message', (m, rinfo) => udp.send('pong', rinfo.port, rinfo.address));
for (let i = 0; i < 3; i++) {
  const c = dgram.createSocket('udp6');
  await new Promise((r) => { c.on('message', () => { c.close(); r(); }); c.send('ping', 5353, '::1'); });
}
udp.close();
`;

function say(s = ''): void {
  process.stdout.write(`${s}\n`);
}

export async function run(args: ParsedArgs): Promise<number> {
  if (args._.length) throw new UsageError(`unexpected argument '${args._[0]}'`);
  if (process.getuid?.() !== 0) {
    throw new ConntrackError('EPERM', 'demo', 'demo: needs root to create a network namespace: run `sudo npx ctmon demo`');
  }
  const flood = numberArg(args, 'flood') ?? 3000;
  const ns = stringArg(args, 'netns') ?? `ctmon-demo-${randomBytes(3).toString('hex')}`;
  if (!/^[A-Za-z0-9_.-]{1,64}$/.test(ns) || ns.startsWith('.')) throw new UsageError(`--netns needs a namespace name (letters, digits, . _ -), got '${ns}'`);
  if (existsSync(`/run/netns/${ns}`)) throw new UsageError(`namespace ${ns} exists: demo creates and removes its own, give a new name`);
  let removed = false;
  const removeNamespace = (): void => {
    if (removed) return;
    removed = true;
    spawnSync('ip', ['netns', 'delete', ns]);
  };
  const onSignal = (sig: NodeJS.Signals): void => {
    removeNamespace();
    process.stderr.write(`\nctmon demo: interrupted, namespace ${ns} removed\n`);
    process.exit(128 + (sig === 'SIGINT' ? 2 : sig === 'SIGHUP' ? 1 : 15));
  };
  // A closed terminal (SIGHUP) must not leave the namespace behind either.
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  process.once('SIGHUP', onSignal);
  process.once('exit', removeNamespace);
  let ct: Conntrack | undefined;
  try {
    say(`1. creating network namespace ${ns} (lo up, nftables rule so loopback traffic is tracked)`);
    await exec('ip', ['netns', 'add', ns]);
    await exec('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
    await exec('ip', ['netns', 'exec', ns, 'nft', 'add table inet demo; add chain inet demo out { type filter hook output priority 0; }; add rule inet demo out ct state new counter']);
    ct = await Conntrack.open({ netns: ns });

    say('2. listening for events, then making real TCP and UDP traffic inside the namespace');
    const stream = ct.events({ types: ['new', 'destroy'] });
    await stream.ready;
    const shown: EntryEvent[] = [];
    const collector = (async () => {
      for await (const ev of stream) if (ev.type !== 'overrun' && shown.length < 1000) shown.push(ev);
    })();
    await exec('ip', ['netns', 'exec', ns, process.execPath, '--input-type=module', '-e', TRAFFIC]);
    await ct.flush(); // ends the flows now rather than after their timeouts, so DESTROY events show
    const deadline = Date.now() + 3000;
    while (shown.filter((e) => e.type === 'destroy').length < 13 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    const sample = [...shown.filter((e) => e.type === 'new').slice(0, 4), ...shown.filter((e) => e.type === 'destroy').slice(0, 3)];
    for (const ev of sample) say(`   ${conntrackLine(ev.entry, { event: ev.type })}`);
    say(`   ... ${shown.filter((e) => e.type === 'new').length} NEW and ${shown.filter((e) => e.type === 'destroy').length} DESTROY events, ${stream.stats().dropped} lost`);
    stream.close();
    await collector;

    say(`3. filling part of the table: ${flood} unassured entries from ${NOISY} (a flood), 500 from other hosts`);
    const creates: Promise<void>[] = [];
    for (let i = 0; i < flood; i++) {
      creates.push(ct.create({ protocol: 'tcp', original: { src: NOISY, dst: '192.0.2.10', sport: 1024 + (i % 60000), dport: 80 + Math.floor(i / 60000) }, timeout: 300, state: 'SYN_SENT' }));
      if (creates.length >= 256) await Promise.all(creates.splice(0));
    }
    for (let i = 0; i < 500; i++) {
      creates.push(ct.create({ protocol: 'udp', original: { src: `203.0.113.${1 + (i % 50)}`, dst: '192.0.2.53', sport: 2000 + i, dport: 53 }, timeout: 60, status: ['SEEN_REPLY', 'ASSURED'] }));
    }
    await Promise.all(creates);
    const stats = await ct.stats();
    say(`   table: ${stats.count} entries of ${stats.max}`);

    say('4. ctmon doctor on this namespace:');
    const d = await diagnose(ct);
    for (const f of d.findings.filter((x) => x.severity !== 'ok')) {
      say(`   [${f.severity.toUpperCase()}] ${f.title}: ${f.detail}`);
      if (f.fix[0]) say(`      fix: ${f.fix[0]}`);
    }
    say(`   verdict: ${d.status} (exit code ${d.exitCode})`);

    say(`5. deleting every flow of ${NOISY} (conntrack -D --orig-src ${NOISY}):`);
    const r = await ct.deleteBySource(NOISY);
    say(`   matched ${r.matched}, deleted ${r.deleted}, already gone ${r.alreadyGone}, failed ${r.failed.length}`);
    say(`   left: ${await ct.count()} entries, ${await ct.count({ src: NOISY })} from ${NOISY}`);
  } finally {
    ct?.close();
    removeNamespace();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    process.off('SIGHUP', onSignal);
    process.off('exit', removeNamespace);
    say(`6. namespace ${ns} removed`);
  }
  return 0;
}
