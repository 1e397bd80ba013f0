/**
 * conntrack/testing where its users run it, measured with podman: the
 * sample project examples/testing (its own package.json on the packed
 * tarball, node:test files) installed offline from the tarball, run on this
 * machine and in containers with each set of capabilities README's
 * "In containers" table lists; /run/netns shared into a container; the
 * exporter image scripts/image.sh builds from this checkout, serving
 * /metrics with NET_ADMIN only; and this project's own suite in a
 * capabilities-only container. The Debian 12 image they run in is built
 * here (scripts/containers/debian-image.sh, a no-op once built).
 */
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { describePrivileged, Netns, requirePrivileged } from '../helpers/netns.js';

const root = fileURLToPath(new URL('../../', import.meta.url));
const hasPodman = spawnSync('podman', ['--version']).status === 0;
/** Every container: no network but its own namespace with lo, removed on exit. */
const RUN = ['run', '--rm', '--network', 'none'];
const CAPS = {
  privileged: ['--privileged'],
  netAdminSysAdmin: ['--cap-add', 'NET_ADMIN', '--cap-add', 'SYS_ADMIN'],
  netAdmin: ['--cap-add', 'NET_ADMIN'],
  none: [],
} as const;

/** README's GitHub Actions job in a container: its `options` and the command of its last step. */
function readmeContainerJob(): { options: string[]; test: string } {
  const readme = readFileSync(join(root, 'README.md'), 'utf8');
  const block = /^## In containers$[\s\S]*?```yaml\n([\s\S]*?)```/m.exec(readme)?.[1];
  if (!block) throw new Error("README's In containers section has no yaml block");
  const job = (parse(block) as { jobs: Record<string, { container?: { options: string }; steps: { run?: string }[] }> }).jobs['in-a-container']!;
  return { options: job.container!.options.split(' '), test: job.steps.at(-1)!.run! };
}

interface Probe {
  privileges: { ok: boolean; missing: string[]; uid: number; procSysWritable: boolean; kernelLogReadable: boolean };
  /** createTestNamespace(): 'created', or its rejection. */
  namespace: 'created' | { code: string; message: string };
  /** createTestNamespace({ accounting: true }): a sysctl write in the new namespace. */
  accounting: 'created' | { code: string; message: string };
  /** Conntrack.open() in the container's own namespace, then count(). */
  ownCount: number | { code: string; message: string };
  /** Conntrack.open({ netns: argv[2] }).count(), when a name is given. */
  named?: number | { code: string; message: string };
}

/** What a container may do, asked through the installed package (the file sits in the sample project). */
const PROBE = `
import { Conntrack } from 'conntrack';
import { createTestNamespace, privileges } from 'conntrack/testing';
const failure = (e) => ({ code: e.code, message: e.message });
async function tryNamespace(options) {
  try { await (await createTestNamespace(options)).close(); return 'created'; } catch (e) { return failure(e); }
}
async function count(options) {
  try { const ct = await Conntrack.open(options); try { return await ct.count(); } finally { ct.close(); } } catch (e) { return failure(e); }
}
const out = { privileges: privileges(), namespace: await tryNamespace(), accounting: await tryNamespace({ accounting: true }), ownCount: await count({}) };
if (process.argv[2]) out.named = await count({ netns: process.argv[2] });
console.log(JSON.stringify(out));
`;

function sh(cmd: string, args: string[], options: { cwd?: string; env?: NodeJS.ProcessEnv; timeout?: number } = {}): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 1 << 26, cwd: root, ...options });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.status ?? r.signal}:\n${r.stderr}\n${r.stdout}`);
  return r.stdout;
}

/** node:test's closing counts (its TAP summary lines). */
function nodeTestCounts(out: string): { pass: number; fail: number; tests: number } {
  const n = (k: string): number => Number(new RegExp(`^# ${k} (\\d+)$`, 'm').exec(out)?.[1] ?? NaN);
  return { pass: n('pass'), fail: n('fail'), tests: n('tests') };
}

/** The sample's three tests ran and passed. */
function expectSamplePassed(r: SpawnSyncReturns<string>): void {
  expect(r.status, r.stdout + r.stderr).toBe(0);
  expect(nodeTestCounts(r.stdout)).toEqual({ pass: 3, fail: 0, tests: 3 });
}

function describeContainers(name: string, fn: () => void): void {
  if (hasPodman) describePrivileged(name, fn);
  else if (requirePrivileged) {
    describe(name, () => it('has podman', () => expect.fail('CONNTRACK_REQUIRE_PRIVILEGED=1 but podman is not installed (sudo bash scripts/setup.sh installs it)')));
  } else describe.skip(`${name} (skipped: podman is not installed; sudo bash scripts/setup.sh installs it)`, fn);
}

describeContainers('conntrack/testing in containers', () => {
  let image: string;
  let work: string;
  let tarball: string;
  let app: string;
  const timings: Record<string, number> = {};

  function timed<T>(what: string, f: () => T): T {
    const t = Date.now();
    try {
      return f();
    } finally {
      timings[what] = (timings[what] ?? 0) + (Date.now() - t) / 1000;
    }
  }

  function podman(args: string[], what = 'sample containers', timeout = 300_000): SpawnSyncReturns<string> {
    return timed(what, () => spawnSync('podman', args, { encoding: 'utf8', maxBuffer: 1 << 26, timeout }));
  }

  /** `node --test` of the sample project in a container with `caps` (and `wrap` before node, e.g. unshare). */
  function sampleIn(caps: readonly string[], wrap: string[] = []): SpawnSyncReturns<string> {
    return podman([...RUN, ...caps, '-v', `${app}:/app:ro`, '-w', '/app', image, ...wrap, 'node', '--test']);
  }

  function probeIn(caps: readonly string[], extra: string[] = [], wrap: string[] = []): Probe {
    const r = podman([...RUN, ...caps, ...extra, '-v', `${app}:/app:ro`, '-w', '/app', image, ...wrap, 'node', 'probe.mjs']);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    return JSON.parse(r.stdout) as Probe;
  }

  beforeAll(() => {
    image = timed('debian image', () => sh('bash', ['scripts/containers/debian-image.sh'], { timeout: 900_000 }).trim());
    work = mkdtempSync(join(tmpdir(), 'ctcontainers-'));
    // prepack's steps but the x64 prebuild only (package.test.ts packs both and runs arm64): the addon these containers load.
    timed('pack', () => {
      sh('npm', ['run', '--silent', 'build:ts'], { timeout: 600_000 });
      sh(process.execPath, ['scripts/prebuild.mjs', 'x64'], { timeout: 600_000 });
      sh('npm', ['pack', '--ignore-scripts', '--silent', '--pack-destination', work]);
    });
    tarball = join(work, readdirSync(work).find((f) => f.endsWith('.tgz'))!);
    app = join(work, 'app');
    cpSync(join(root, 'examples', 'testing'), app, { recursive: true });
    cpSync(tarball, join(app, 'conntrack.tgz'));
    writeFileSync(join(app, 'probe.mjs'), PROBE);
    const cache = join(work, 'npm-cache');
    timed('install', () => {
      sh('bash', ['scripts/containers/npm-cache.sh', tarball, cache], { timeout: 300_000 });
      sh('npm', ['install', '--offline', '--cache', cache, '--no-audit', '--no-fund', '--loglevel=error'], { cwd: app, timeout: 300_000 });
    });
  }, 1_800_000);

  afterAll(() => {
    if (work) rmSync(work, { recursive: true, force: true });
    process.stdout.write(`containers.test.ts wall time by step (s): ${JSON.stringify(Object.fromEntries(Object.entries(timings).map(([k, v]) => [k, Math.round(v)])))}\n`);
  });

  it('the sample project passes under node:test on this machine', () => {
    const r = spawnSync(process.execPath, ['--test'], { cwd: app, encoding: 'utf8' });
    expectSamplePassed(r);
  });

  it("--privileged, as README's GitHub Actions job runs it: passes; /proc/sys writable, /dev/kmsg readable", () => {
    const job = readmeContainerJob();
    expect(job.options).toEqual(CAPS.privileged);
    const r = podman([...RUN, ...job.options, '-v', `${app}:/app:ro`, '-w', '/app', image, 'sh', '-c', job.test]);
    expectSamplePassed(r);
    const p = probeIn(CAPS.privileged);
    expect(p.privileges).toMatchObject({ ok: true, missing: [], uid: 0, procSysWritable: true, kernelLogReadable: true });
    expect(p.ownCount).toBe(0);
    expect(p.namespace).toBe('created');
    expect(p.accounting).toBe('created');
  });

  it('--cap-add NET_ADMIN --cap-add SYS_ADMIN: passes; /proc/sys read-only (a sysctl write says so, naming the flags) and no /dev/kmsg', () => {
    const r = sampleIn(CAPS.netAdminSysAdmin);
    expectSamplePassed(r);
    const p = probeIn(CAPS.netAdminSysAdmin);
    expect(p.privileges).toMatchObject({ ok: true, missing: [], uid: 0, procSysWritable: false, kernelLogReadable: false });
    expect(p.ownCount).toBe(0);
    expect(p.namespace).toBe('created');
    expect(p.accounting).toMatchObject({ code: 'EROFS' });
    const message = (p.accounting as { message: string }).message;
    for (const flag of ['--privileged', '--security-opt systempaths=unconfined', '--security-opt unmask=/proc/sys']) expect(message).toContain(flag);
  });

  it("podman's default set has no NET_RAW: ping does not start without --cap-add NET_RAW (the sample above needed none)", () => {
    const ping = ['ping', '-c', '1', '-W', '1', '-q', '127.0.0.1'];
    const without = podman([...RUN, ...CAPS.netAdminSysAdmin, image, ...ping]);
    expect(without.status).not.toBe(0);
    expect(without.stderr).toMatch(/operation not permitted/i);
    const withRaw = podman([...RUN, ...CAPS.netAdminSysAdmin, '--cap-add', 'NET_RAW', image, ...ping]);
    expect(withRaw.status, withRaw.stderr).toBe(0);
  });

  it("podman's --security-opt unmask=/proc/sys makes /proc/sys writable with the two capabilities", () => {
    const p = probeIn(CAPS.netAdminSysAdmin, ['--security-opt', 'unmask=/proc/sys']);
    expect(p.privileges).toMatchObject({ ok: true, procSysWritable: true });
    expect(p.accounting).toBe('created');
  });

  it('--cap-add NET_ADMIN only: the own namespace works; privileges() names CAP_SYS_ADMIN, the test skips with it, createTestNamespace rejects naming it', () => {
    const p = probeIn(CAPS.netAdmin);
    expect(p.privileges).toMatchObject({ ok: false, missing: ['CAP_SYS_ADMIN'], uid: 0 });
    expect(p.ownCount).toBe(0);
    expect(p.namespace).toMatchObject({ code: 'EPERM' });
    const message = (p.namespace as { message: string }).message;
    expect(message).toContain('CAP_SYS_ADMIN');
    expect(message).not.toContain('CAP_NET_ADMIN');
    expect(message).not.toMatch(/run as root/);
    const r = sampleIn(CAPS.netAdmin);
    expect(r.status, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toContain('# SKIP needs CAP_SYS_ADMIN');
    expect(nodeTestCounts(r.stdout)).toMatchObject({ pass: 0, fail: 0 });
  });

  it('no capability added: privileges() names both, the own namespace refuses, naming CAP_NET_ADMIN', () => {
    const p = probeIn(CAPS.none);
    expect(p.privileges).toMatchObject({ ok: false, missing: ['CAP_NET_ADMIN', 'CAP_SYS_ADMIN'], uid: 0 });
    expect(p.namespace).toMatchObject({ code: 'EPERM' });
    expect(p.ownCount).toMatchObject({ code: 'EPERM' });
    expect((p.ownCount as { message: string }).message).toContain('CAP_NET_ADMIN');
    expect((p.ownCount as { message: string }).message).not.toMatch(/run as root/);
  });

  it('unshare --user --map-root-user --net: every capability there; the sample passes with NET_ADMIN only, and with no capability added', () => {
    const unshare = ['unshare', '--user', '--map-root-user', '--net'];
    for (const caps of [CAPS.netAdmin, CAPS.none]) {
      const r = sampleIn(caps, unshare);
      expectSamplePassed(r);
      const p = probeIn(caps, [], unshare);
      expect(p.privileges).toMatchObject({ ok: true, missing: [] });
      expect(p.namespace).toBe('created');
      expect(p.ownCount).toBe(0);
    }
  });

  it('/run/netns shared with rslave: a namespace the host adds after the container started opens there (with SYS_ADMIN); without rslave it is an empty file', () => {
    const setups = { rslave: [...CAPS.netAdminSysAdmin, '-v', '/run/netns:/run/netns:rslave'], plain: [...CAPS.netAdminSysAdmin, '-v', '/run/netns:/run/netns'], netAdminOnly: [...CAPS.netAdmin, '-v', '/run/netns:/run/netns:rslave'] };
    const started: Record<string, string> = {};
    try {
      for (const [setup, flags] of Object.entries(setups)) {
        const r = podman(['run', '-d', '--rm', '--network', 'none', ...flags, '-v', `${app}:/app:ro`, '-w', '/app', image, 'sleep', 'infinity']);
        expect(r.status, r.stderr).toBe(0);
        started[setup] = r.stdout.trim();
      }
      const ns = Netns.create();
      try {
        ns.exec('conntrack', ['-I', '-p', 'udp', '-s', '192.0.2.1', '-d', '192.0.2.2', '--sport', '1', '--dport', '2', '-t', '60']);
        const named = (setup: string): Probe['named'] => {
          const r = podman(['exec', '-w', '/app', started[setup]!, 'node', 'probe.mjs', ns.name]);
          expect(r.status, r.stderr).toBe(0);
          return (JSON.parse(r.stdout) as Probe).named;
        };
        expect(named('rslave')).toBe(1);
        expect(named('plain')).toMatchObject({ code: 'EINVAL', message: expect.stringContaining('is not a network namespace') });
        expect(named('netAdminOnly')).toMatchObject({ code: 'EPERM', message: expect.stringContaining('CAP_SYS_ADMIN') });
      } finally {
        ns.destroy();
      }
    } finally {
      for (const id of Object.values(started)) podman(['rm', '-f', '-t', '0', id]);
    }
  });

  describe('the exporter image from this checkout', () => {
    const tag = `localhost/ctmon-test:${process.pid}`;
    afterAll(() => void podman(['rmi', '-f', tag]));

    it('scripts/image.sh builds it (offline npm install of the packed tarball, the local Debian image as its base)', () => {
      timed('exporter image', () => sh('bash', ['scripts/image.sh', tag], { env: { ...process.env, CONNTRACK_TARBALL: tarball, BASE_IMAGE: image, BUILD_NETWORK: 'none', CONTAINER_ENGINE: 'podman' }, timeout: 900_000 }));
      const inspect = sh('podman', ['image', 'inspect', '--format', '{{json .Config.Entrypoint}} {{json .Config.Cmd}}', tag]);
      expect(inspect.trim()).toBe('["ctmon"] ["exporter","--listen","0.0.0.0:9466"]');
    }, 900_000);

    it('run with --cap-add NET_ADMIN only, it serves /metrics for its namespace', async () => {
      const r = podman(['run', '-d', '--rm', '--network', 'none', ...CAPS.netAdmin, tag, 'exporter', '--listen', '127.0.0.1:9466'], 'exporter image');
      expect(r.status, r.stderr).toBe(0);
      const id = r.stdout.trim();
      try {
        const fetchMetrics = "fetch('http://127.0.0.1:9466/metrics').then(async (r) => console.log(r.status + '\\n' + await r.text()), (e) => console.log('no answer: ' + e.cause?.code))";
        let out = '';
        const deadline = Date.now() + 30_000;
        while (Date.now() < deadline) {
          out = podman(['exec', id, 'node', '-e', fetchMetrics], 'exporter image').stdout;
          if (out.startsWith('200\n')) break;
          await new Promise((resolve) => setTimeout(resolve, 200)); // poll with a deadline: the server's start is not an event we can wait on from outside
        }
        expect(out).toMatch(/^200\n/);
        expect(out).toMatch(/^conntrack_entries\{netns="self"\} 0$/m);
        expect(out).toMatch(/^conntrack_entries_limit\{netns="self"\} \d+$/m);
      } finally {
        podman(['rm', '-f', '-t', '0', id]);
      }
    });
  });

  it('this project\'s own tests in a capabilities-only container (NET_ADMIN and SYS_ADMIN, read-only /proc/sys, no /dev/kmsg): skips with reasons, fails nothing', () => {
    const files = ['test/conntrack.test.ts', 'test/doctor.test.ts', 'test/hazards.test.ts', 'test/testing.test.ts', 'test/lifecycle.test.ts'];
    const reporter = join(work, 'reporter.mjs');
    writeFileSync(reporter, SKIP_REPORTER);
    const r = podman([...RUN, ...CAPS.netAdminSysAdmin, '-v', `${root}:${root}`, '-v', `${work}:${work}:ro`, '-w', root, '-e', 'CONNTRACK_REQUIRE_PRIVILEGED=0', image,
      'node', 'node_modules/vitest/vitest.mjs', 'run', '--reporter', reporter, ...files], 'own suite', 1_800_000);
    const lines = r.stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as { name: string; state: string; reason?: string });
    process.stdout.write(`own suite in a NET_ADMIN+SYS_ADMIN container: ${lines.filter((l) => l.state === 'passed').length} passed, ${lines.filter((l) => l.state === 'skipped').length} skipped:\n${lines.filter((l) => l.state === 'skipped').map((l) => `  ${l.name}: ${l.reason}`).join('\n')}\n`);
    expect(lines.filter((l) => l.state === 'failed'), r.stdout + r.stderr).toEqual([]);
    expect(r.status, r.stderr).toBe(0);
    expect(lines.filter((l) => l.state === 'skipped' && !l.reason)).toEqual([]);
    expect(lines.some((l) => l.state === 'skipped')).toBe(true);
    expect(lines.filter((l) => l.state === 'passed').length).toBeGreaterThan(50);
  }, 1_800_000);
});

/** A vitest reporter printing one JSON line per test: its state and, when skipped, why (ctx.skip's note, or a "(skipped: ...)" suite title). */
const SKIP_REPORTER = `
export default class {
  onTestRunEnd(modules) {
    for (const mod of modules) {
      if (mod.state() === 'failed' && [...mod.children.allTests()].length === 0) console.log(JSON.stringify({ name: mod.moduleId, state: 'failed', reason: String(mod.errors().map((e) => e.message)) }));
      for (const test of mod.children.allTests()) {
        const result = test.result();
        let reason = result.note;
        for (let s = test.parent; !reason && s && s.type === 'suite'; s = s.parent) reason = /\\(skipped: (.*)\\)$/.exec(s.name)?.[1];
        console.log(JSON.stringify({ name: test.fullName, state: result.state, reason, errors: result.errors?.map((e) => e.message) }));
      }
    }
  }
}
`;
