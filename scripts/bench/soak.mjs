// Soak: for SOAK_SECONDS (default 600) real traffic in a namespace, an event
// stream with a slow consumer, dumps and targeted deletions in a loop, and
// handles and streams opened and closed; samples RSS, V8 heap, open fds and
// threads every second and fails when they grow beyond the bounds below after
// warm-up. Run with --expose-gc (the npm script does) so heap samples follow a GC.
import { spawn, execFileSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { Conntrack } from '../../dist/index.js';
import { createNetns } from './lib.mjs';

const SECONDS = Number(process.env.SOAK_SECONDS ?? 600);
const WARMUP = Math.max(5, Math.round(SECONDS * 0.2));
// Growth allowed between the first post-warm-up sample and the end.
const BOUNDS = { rssMiB: 48, heapMiB: 16, fds: 4, threads: 2 };

const ns = createNetns('ctsoak');
execFileSync('ip', ['netns', 'exec', ns.name, 'nft', 'add table inet soak; add chain inet soak out { type filter hook output priority 0; }; add rule inet soak out ct state new counter']);
const deadline = Date.now() + SECONDS * 1000;

// Traffic: TCP connections and UDP exchanges over loopback, as fast as a loop of awaits allows.
const traffic = spawn('ip', ['netns', 'exec', ns.name, process.execPath, '--input-type=module', '-e', `
  import net from 'node:net'; import dgram from 'node:dgram';
  const end = ${deadline};
  const server = net.createServer((s) => s.on('data', () => s.end('y'))).listen(9000, '127.0.0.1');
  const udp = dgram.createSocket('udp4'); udp.bind(9001, '127.0.0.1'); udp.on('message', (m, r) => udp.send('p', r.port, r.address));
  await new Promise((r) => setTimeout(r, 100));
  let n = 0;
  while (Date.now() < end) {
    await new Promise((r) => { const c = net.connect(9000, '127.0.0.1', () => c.write('x')); c.on('data', () => c.end()); c.on('close', r); c.on('error', r); });
    const u = dgram.createSocket('udp4');
    await new Promise((r) => { u.on('message', () => { u.close(); r(); }); u.send('q', 9001, '127.0.0.1'); setTimeout(() => { try { u.close(); } catch {} r(); }, 50); });
    n++;
  }
  server.close(); udp.close(); process.stdout.write(String(n));
`], { stdio: ['ignore', 'pipe', 'inherit'] });
let connections = '';
traffic.stdout.on('data', (d) => (connections += d));
const trafficDone = new Promise((r) => traffic.on('exit', r));

const ct = await Conntrack.open({ netns: ns.name });
const counters = { events: 0, lost: 0, dumps: 0, dumped: 0, deleted: 0, handles: 0, streams: 0, created: 0 };

// A slow consumer on a bounded queue.
const stream = ct.events({ queueLimit: 20000 });
const consumer = (async () => {
  for await (const ev of stream) {
    if (ev.type === 'overrun') counters.lost += ev.lost;
    else if (++counters.events % 50 === 0) await new Promise((r) => setTimeout(r, 5)); // ~10k events/s: slower than the traffic
  }
})();

// Dumps, deletes, inserts and handle churn in a loop.
const worker = (async () => {
  let i = 0;
  while (Date.now() < deadline) {
    for await (const _ of ct.dump()) counters.dumped++;
    counters.dumps++;
    for (let k = 0; k < 50; k++) {
      await ct.create({ protocol: 'udp', original: { src: `10.66.${i & 255}.${k}`, dst: '10.67.0.1', sport: 1000 + k, dport: 53 }, timeout: 120 });
      counters.created++;
    }
    counters.deleted += (await ct.deleteBySource(`10.66.${i & 255}.0/24`)).deleted;
    counters.deleted += (await ct.deleteWhere({ protocol: 'udp', dport: 9001 })).deleted;
    const h = await Conntrack.open({ netns: ns.name });
    await h.stats();
    const s = h.events();
    await s.ready;
    if (i % 2) s.close();
    h.close();
    counters.handles++;
    counters.streams++;
    i++;
    await new Promise((r) => setTimeout(r, 50));
  }
})();

const samples = [];
const sample = () => {
  globalThis.gc?.();
  const m = process.memoryUsage();
  samples.push({
    t: samples.length,
    rssMiB: m.rss / 2 ** 20,
    heapMiB: m.heapUsed / 2 ** 20,
    fds: readdirSync('/proc/self/fd').length,
    threads: readdirSync('/proc/self/task').length,
  });
};
const sampler = setInterval(sample, 1000);
await worker;
clearInterval(sampler);
sample();
stream.close();
await consumer;
ct.close();
await trafficDone;
ns.destroy();

const after = samples.filter((s) => s.t >= WARMUP);
const first = after[0] ?? samples[0];
const last = samples.at(-1);
const peak = (k) => Math.max(...after.map((s) => s[k]));
const growth = { rssMiB: last.rssMiB - first.rssMiB, heapMiB: last.heapMiB - first.heapMiB, fds: last.fds - first.fds, threads: last.threads - first.threads };
const f = (x) => x.toFixed(1);
console.log(`soak: ${SECONDS} s (warm-up ${WARMUP} s), ${connections || '?'} TCP+UDP exchanges, ${counters.events} events consumed (+${counters.lost} lost to the slow consumer, reported), ${counters.dumps} dumps (${counters.dumped} entries), ${counters.created} created, ${counters.deleted} deleted, ${counters.handles} handles and ${counters.streams} streams opened and closed`);
console.log(`            after warm-up   end       peak      growth   bound`);
for (const k of ['rssMiB', 'heapMiB', 'fds', 'threads']) {
  console.log(`${k.padEnd(12)}${f(first[k]).padStart(12)}${f(last[k]).padStart(10)}${f(peak(k)).padStart(10)}${f(growth[k]).padStart(10)}${String(BOUNDS[k]).padStart(8)}`);
}
const failed = Object.keys(BOUNDS).filter((k) => growth[k] > BOUNDS[k]);
if (failed.length) {
  console.log(`FAIL: grew beyond bounds: ${failed.join(', ')}`);
  process.exit(1);
}
console.log('PASS: no growth beyond bounds after warm-up');
