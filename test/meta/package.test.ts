/**
 * What users get from `npm install conntrack`: prebuildify the addon, pack
 * the package, install the tarball into an empty directory with no compiler
 * on PATH (only node), and run the README's example through ESM import and
 * require(), plus the ctmon binary.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describePrivileged, Netns } from '../helpers/netns.js';

const root = fileURLToPath(new URL('../../', import.meta.url));
const npmCli = join(dirname(execFileSync('readlink', ['-f', execFileSync('which', ['npm'], { encoding: 'utf8' }).trim()], { encoding: 'utf8' }).trim()), 'npm-cli.js');

describePrivileged('the packed package, installed without a compiler', () => {
  let work: string;
  let app: string;
  let ns: Netns;
  let env: NodeJS.ProcessEnv;

  beforeAll(() => {
    work = mkdtempSync(join(tmpdir(), 'ctpack-'));
    execFileSync('npm', ['run', 'prebuildify'], { cwd: root, stdio: 'ignore' });
    const tarball = execFileSync('npm', ['pack', '--pack-destination', work, '--silent'], { cwd: root, encoding: 'utf8' }).trim().split('\n').pop()!;
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
    const r = spawnSync(process.execPath, [npmCli, 'install', '--no-audit', '--no-fund', join(work, tarball)], { cwd: app, env, encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    ns = Netns.create();
  }, 300_000);

  afterAll(() => {
    ns?.destroy();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('installed the prebuilt binary, compiled nothing', () => {
    const pkg = join(app, 'node_modules', 'conntrack');
    // Tagged glibc: a musl host does not load it and builds from source instead.
    expect(readdirSync(join(pkg, 'prebuilds', 'linux-x64'))).toEqual(['conntrack.glibc.node']);
    expect(existsSync(join(pkg, 'build'))).toBe(false);
    expect(spawnSync('cc', ['--version'], { env }).error).toBeDefined();
  });

  it("runs the README's example through import", () => {
    writeFileSync(join(app, 'example.mjs'), `
      import { Conntrack } from 'conntrack';
      const ct = await Conntrack.open({ netns: ${JSON.stringify(ns.name)} });
      try {
        await ct.create({ protocol: 'tcp', original: { src: '192.0.2.7', dst: '10.0.0.1', sport: 4000, dport: 443 }, timeout: 60, state: 'ESTABLISHED' });
        const { count, max, buckets, perCpu } = await ct.stats();
        const listed = [];
        for await (const e of ct.dump({ protocol: 'tcp', state: 'ESTABLISHED', src: '192.0.2.0/24' })) listed.push(e.original.src);
        const r = await ct.deleteBySource(['192.0.2.7', '2001:db8:bad::/48']);
        console.log(JSON.stringify({ count, listed, r, stats: max > 0 && buckets > 0 && perCpu.length > 0 }));
      } finally {
        ct.close();
      }
    `);
    const r = spawnSync(process.execPath, ['example.mjs'], { cwd: app, env, encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expect(JSON.parse(r.stdout)).toEqual({ count: 1, listed: ['192.0.2.7'], r: { matched: 1, deleted: 1, alreadyGone: 0, failed: [] }, stats: true });
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
});
