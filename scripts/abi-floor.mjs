#!/usr/bin/env node
/**
 * The oldest system a prebuilt addon loads on, read from its ELF symbol
 * versions, and the limits README promises: glibc 2.17 and libstdc++ of GCC 6
 * (GLIBCXX_3.4.22), below Node 20's own floor (glibc 2.28), so wherever Node
 * runs the prebuild loads. native/compat.h keeps the newer versions out.
 *
 *   node scripts/abi-floor.mjs FILE ARCH
 */
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export const TARGETS = {
  x64: { triplet: 'x86_64-linux-gnu', cc: 'gcc', cxx: 'g++', strip: 'strip', objdump: 'objdump', machine: 'x86-64' },
  arm64: {
    triplet: 'aarch64-linux-gnu',
    cc: 'aarch64-linux-gnu-gcc',
    cxx: 'aarch64-linux-gnu-g++',
    strip: 'aarch64-linux-gnu-strip',
    objdump: 'aarch64-linux-gnu-objdump',
    machine: 'aarch64',
  },
};

export const LIMITS = { glibc: '2.17', glibcxx: '3.4.22' };
/** Shared libraries a prebuild may need: the C and C++ runtimes and the two netfilter libraries. */
export const ALLOWED_NEEDED = ['libnetfilter_conntrack.so.3', 'libmnl.so.0', 'libstdc++.so.6', 'libgcc_s.so.1', 'libm.so.6', 'libc.so.6'];

function compare(a, b) {
  const x = a.split('.').map(Number);
  const y = b.split('.').map(Number);
  for (let i = 0; i < Math.max(x.length, y.length); i++) if ((x[i] ?? 0) !== (y[i] ?? 0)) return (x[i] ?? 0) - (y[i] ?? 0);
  return 0;
}

function highest(versions) {
  return versions.sort(compare).at(-1) ?? '0';
}

/** Returns { glibc, glibcxx, needed, machine }; throws when a limit is exceeded. */
export function checkAbiFloor(file, arch) {
  const target = TARGETS[arch];
  const headers = execFileSync(target.objdump, ['-p', file], { encoding: 'utf8' });
  const dynsym = execFileSync(target.objdump, ['-T', file], { encoding: 'utf8' });
  const machine = /file format elf64-(\S+)/.exec(headers)?.[1] ?? '?';
  const want = arch === 'x64' ? 'x86-64' : 'littleaarch64';
  const needed = [...headers.matchAll(/NEEDED\s+(\S+)/g)].map((m) => m[1]);
  const glibc = highest([...dynsym.matchAll(/\(GLIBC_([\d.]+)\)/g)].map((m) => m[1]));
  const glibcxx = highest([...dynsym.matchAll(/\(GLIBCXX_([\d.]+)\)/g)].map((m) => m[1]));
  const problems = [];
  if (machine !== want) problems.push(`built for elf64-${machine}, not ${want}`);
  if (compare(glibc, LIMITS.glibc) > 0) problems.push(`needs glibc ${glibc} (limit ${LIMITS.glibc})`);
  if (compare(glibcxx, LIMITS.glibcxx) > 0) problems.push(`needs GLIBCXX_${glibcxx} (limit ${LIMITS.glibcxx})`);
  for (const n of needed) if (!ALLOWED_NEEDED.includes(n)) problems.push(`links ${n}`);
  if (problems.length) {
    const offenders = dynsym.split('\n').filter((l) => /\((GLIBC|GLIBCXX)_/.test(l) && problems.some((p) => l.includes(p.split(' ')[1] ?? '\0')));
    throw new Error(`${file}: ${problems.join('; ')}${offenders.length ? `\n${offenders.join('\n')}` : ''}`);
  }
  return { glibc, glibcxx, needed, machine };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const [file, arch = process.arch] = process.argv.slice(2);
  if (!file) {
    process.stderr.write('usage: node scripts/abi-floor.mjs FILE [x64|arm64]\n');
    process.exit(64);
  }
  process.stdout.write(JSON.stringify(checkAbiFloor(file, arch)) + '\n');
}
