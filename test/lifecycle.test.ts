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
  'during a bulk delete': `const ct = await Conntrack.open({ netns: NS }); ct.deleteWhere({ family: 'ipv4' }, { dryRun: true }); setImmediate(exit);`,
  'uncaught error with everything open': `const ct = await Conntrack.open({ netns: NS }); const s = ct.events(); await s.ready; ct.dump().next(); process.exitCode = 0; setTimeout(() => { process.removeAllListeners('uncaughtException'); process.on('uncaughtException', () => process.exit(0)); throw new Error('boom'); }, 20);`,
};

describePrivileged('process exit at every lifecycle stage', () => {
  let ns: Netns;

  beforeAll(() => {
    ns = Netns.create();
    const lines: string[] = [];
    for (let i = 0; i < 20000; i++) lines.push(`-I -p udp -s 10.1.${i >> 8}.${i & 255} -d 10.2.0.1 --sport 1 --dport 53 -t 300`);
    ns.restore(lines);
  });
  afterAll(() => ns.destroy());

  for (const [stage, body] of Object.entries(STAGES)) {
    it(stage, () => {
      const code = `import(${JSON.stringify(entry)}).then(async ({ Conntrack }) => {
        const NS = ${JSON.stringify(ns.name)};
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
