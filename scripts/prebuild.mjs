#!/usr/bin/env node
/**
 * Builds the prebuilt addons every packed tarball carries (run by `prepack`):
 * prebuilds/linux-x64/conntrack.glibc.node and
 * prebuilds/linux-arm64/conntrack.glibc.node, arm64 cross-compiled with
 * Debian's g++-aarch64-linux-gnu against the arm64 -dev packages
 * (scripts/setup.sh installs both). Each binary is stripped and checked by
 * scripts/abi-floor.mjs; any missing piece fails the pack, loudly, rather
 * than shipping a tarball without its binaries.
 *
 *   node scripts/prebuild.mjs [x64] [arm64]     (default: both)
 */
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, realpathSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { checkAbiFloor, TARGETS } from './abi-floor.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

/** npm hands its bundled node-gyp to scripts; run by hand, the same one found next to npm. */
function nodeGyp() {
  const fromNpm = process.env.npm_config_node_gyp;
  if (fromNpm) return [process.execPath, fromNpm];
  const npmCli = realpathSync(execFileSync('sh', ['-c', 'command -v npm'], { encoding: 'utf8' }).trim());
  return [process.execPath, join(dirname(npmCli), '..', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js')];
}

function run(cmd, args, env) {
  execFileSync(cmd, args, { cwd: root, env, stdio: ['ignore', 'ignore', 'inherit'] });
}

function need(tool, hint) {
  try {
    execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' });
  } catch {
    throw new Error(`prebuild: '${tool}' not found; ${hint}`);
  }
}

function build(arch) {
  const target = TARGETS[arch];
  if (!target) throw new Error(`prebuild: unknown arch '${arch}' (one of ${Object.keys(TARGETS).join(', ')})`);
  const hint = 'run `sudo bash scripts/setup.sh`, which installs the compilers and the -dev packages for both architectures';
  need(target.cxx, hint);
  need(target.strip, hint);
  const env = {
    ...process.env,
    CC: target.cc,
    CXX: target.cxx,
    // Only the target architecture's .pc files: the host's would link the wrong libmnl.
    PKG_CONFIG_LIBDIR: `/usr/lib/${target.triplet}/pkgconfig:/usr/share/pkgconfig`,
  };
  const [cmd, ...pre] = nodeGyp();
  // Node's own headers (N-API is the same on every arch) where they were installed with it, never a download.
  const prefix = dirname(dirname(process.execPath));
  const nodedir = process.env.npm_config_nodedir ?? (existsSync(join(prefix, 'include', 'node', 'node_api.h')) ? prefix : undefined);
  run(cmd, [...pre, 'rebuild', `--arch=${arch}`, '--jobs=max', ...(nodedir ? [`--nodedir=${nodedir}`] : [])], env);
  const out = join(root, 'prebuilds', `linux-${arch}`);
  rmSync(out, { recursive: true, force: true });
  mkdirSync(out, { recursive: true });
  const file = join(out, 'conntrack.glibc.node');
  copyFileSync(join(root, 'build', 'Release', 'conntrack.node'), file);
  run(target.strip, ['--strip-unneeded', file], env);
  const floor = checkAbiFloor(file, arch);
  process.stderr.write(`prebuild: ${file.slice(root.length + 1)} (glibc >= ${floor.glibc}, libstdc++ >= ${floor.glibcxx})\n`);
}

const wanted = process.argv.slice(2).length ? process.argv.slice(2) : ['arm64', 'x64'];
// The host's own architecture last, so build/Release is left as a native build for tests.
for (const arch of wanted.sort((a, b) => (a === process.arch) - (b === process.arch))) build(arch);
